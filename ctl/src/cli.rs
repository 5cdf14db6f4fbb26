//! The `idprovctl` command line, defined in the library so that
//! `cargo xtask dist-docs` generates completions and man pages from it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use idprov_proto::DeviceId;

/// `0.1.0 (abc1234)`: the crate version and the git revision of the build.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("IDPROV_GIT_REV"), ")");

/// Exit codes: the numbers every idprov tool shares (docs/operations.md).
pub use idprov_admin_client::exit;

#[derive(Parser, Debug)]
#[command(
    name = "idprovctl",
    version = VERSION,
    about = "Administer a running idprovd from scripts: pending devices, approvals, \
             devices, keys, certificates, provisioning, alerts, audit",
    after_help = "Exit codes: 0 ok, 1 refused or failed (not found, stale revision, \
                  invalid token), 2 usage, 3 no or invalid profile, 5 daemon unreachable.\n\
                  OOB lists: idprov-oob. Backups: idprovd backup.",
    after_long_help = AFTER_LONG_HELP,
)]
pub struct Cli {
    /// Administrator profile (TOML) written by idprovd. Default:
    /// $IDPROV_PROFILE, ~/.config/idprov/profile.toml, then the daemon's
    /// data directory.
    #[arg(long, global = true, env = "IDPROV_PROFILE", value_hint = clap::ValueHint::FilePath)]
    pub profile: Option<PathBuf>,
    /// Print the daemon's answer as JSON (one document on standard output).
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

const AFTER_LONG_HELP: &str = "\
Examples:
  idprovctl pending list
  idprovctl approve stranger-1            # approves the revision it reads
  idprovctl approve stranger-1 --revision 3   # refused if it changed since
  idprovctl --json devices list | jq -r '.[].device_id'
  idprovctl devices revoke sensor-7 --reason 'stolen'
  idprovctl provisioning pause --reason 'maintenance'

Exit codes: 0 ok, 1 refused or failed (not found, stale revision, invalid
token), 2 usage, 3 no or invalid profile, 5 daemon unreachable.

OOB lists are managed with idprov-oob, backups with idprovd backup.";

/// Approve or reject one pending device.
#[derive(Args, Debug)]
pub struct Decision {
    /// The pending device's ID.
    pub id: DeviceId,
    /// Decide only if the request is still at this revision (as shown by
    /// `pending list`); default: the revision read just before deciding.
    #[arg(long)]
    pub revision: Option<u64>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Who the profile authenticates as, and which daemon answers.
    Whoami,
    /// Devices waiting for a decision.
    Pending {
        #[command(subcommand)]
        command: PendingCommand,
    },
    /// Admit a pending device (revision-safe: refused if it changed).
    Approve {
        #[command(flatten)]
        decision: Decision,
    },
    /// Refuse a pending device (revision-safe: refused if it changed).
    Reject {
        #[command(flatten)]
        decision: Decision,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Admitted devices.
    Devices {
        #[command(subcommand)]
        command: DevicesCommand,
    },
    /// A device's keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Issued X.509 certificates.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// CAs that X.509-wrapped device keys must chain to.
    RegistryCas {
        #[command(subcommand)]
        command: RegistryCaCommand,
    },
    /// The certificate revocation list's number, times and size.
    Crl,
    /// The provisioning switch (pause and resume).
    Provisioning {
        #[command(subcommand)]
        command: ProvisioningCommand,
    },
    /// Security alerts raised since the daemon started.
    Alerts,
    /// Auto-approval rules: list, add, replace, delete, move, dry-run.
    Rules {
        #[command(subcommand)]
        command: crate::cli_policy::RulesCommand,
    },
    /// Enrollment windows: open, close, list.
    Window {
        #[command(subcommand)]
        command: crate::cli_policy::WindowCommand,
    },
    /// The hash-chained audit log, oldest first.
    Audit {
        /// Only entries after this sequence number.
        #[arg(long)]
        after: Option<u64>,
        /// At most this many entries (1-1000).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1000))]
        limit: u64,
        /// Only entries that contain this text.
        #[arg(long, short)]
        query: Option<String>,
    },
    /// Follow the daemon's event stream (one JSON object a line) until
    /// interrupted or the daemon goes away.
    Events,
}

#[derive(Subcommand, Debug)]
pub enum PendingCommand {
    /// List pending devices.
    List {
        /// Only devices whose ID, MAC, fingerprint or address contains this text.
        #[arg(long, short)]
        query: Option<String>,
    },
    /// Show one pending device (verification code, flags, revision).
    Show {
        /// The pending device's ID.
        id: DeviceId,
    },
}

#[derive(Subcommand, Debug)]
pub enum DevicesCommand {
    /// List admitted devices.
    List {
        /// Only devices whose ID, MAC or fingerprint contains this text.
        #[arg(long, short)]
        query: Option<String>,
    },
    /// Show one device.
    Show {
        /// The device's ID.
        id: DeviceId,
    },
    /// Revoke a device: its tokens and certificates stop working.
    Revoke {
        /// The device's ID.
        id: DeviceId,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: Option<String>,
        /// Revoke only if the device is still at this revision.
        #[arg(long)]
        revision: Option<u64>,
    },
    /// Delete a device record (it must provision again).
    Remove {
        /// The device's ID.
        id: DeviceId,
    },
    /// After a factory reset: retire every key and certificate of the
    /// device and bind it to a new key.
    Reprovision {
        /// The device's ID.
        id: DeviceId,
        /// The new public key (PEM file).
        #[arg(long, value_hint = clap::ValueHint::FilePath)]
        key: PathBuf,
        /// Why (required; recorded in the audit log).
        #[arg(long)]
        reason: String,
        /// Replace the recorded MAC address.
        #[arg(long)]
        mac: Option<idprov_proto::MacAddr>,
        /// Only if the device is still at this revision.
        #[arg(long)]
        revision: Option<u64>,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// List a device's keys.
    List {
        /// The device's ID.
        id: DeviceId,
    },
    /// Add a key to a device.
    Add {
        /// The device's ID.
        id: DeviceId,
        /// The public key (PEM file).
        #[arg(long, value_hint = clap::ValueHint::FilePath)]
        key: PathBuf,
        /// When the key stops being accepted, e.g. 2027-01-01T00:00:00Z.
        #[arg(long)]
        expires: Option<humantime::Timestamp>,
        /// Only if the device is still at this revision.
        #[arg(long)]
        revision: Option<u64>,
    },
    /// Remove a key: it never comes back, and its certificates are revoked.
    Remove {
        /// The device's ID.
        id: DeviceId,
        /// The key's thumbprint (KID column of `keys list`; base64url, so
        /// it may begin with `-`).
        #[arg(allow_hyphen_values = true)]
        kid: String,
    },
    /// Revoke a key as compromised (like remove, audited as a revocation).
    Revoke {
        /// The device's ID.
        id: DeviceId,
        /// The key's thumbprint (KID column of `keys list`; base64url, so
        /// it may begin with `-`).
        #[arg(allow_hyphen_values = true)]
        kid: String,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum CertsCommand {
    /// List a device's certificates.
    List {
        /// The device's ID.
        id: DeviceId,
    },
    /// Show one certificate; --pem prints only the certificate.
    Show {
        /// Serial number (hex).
        serial: String,
        /// Print the certificate as PEM.
        #[arg(long, conflicts_with = "json")]
        pem: bool,
    },
    /// Revoke one certificate (it goes on the CRL).
    Revoke {
        /// Serial number (hex).
        serial: String,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum RegistryCaCommand {
    /// List the registered CAs.
    List,
    /// Register a CA certificate (PEM file).
    Add {
        /// The CA certificate (PEM file).
        #[arg(value_hint = clap::ValueHint::FilePath)]
        file: PathBuf,
    },
    /// Remove a registered CA by its fingerprint.
    Remove {
        /// SHA-256 fingerprint (hex), as `registry-cas list` shows it.
        fingerprint: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum ProvisioningCommand {
    /// Show whether provisioning is paused.
    Status,
    /// Pause provisioning: every provision and renew answers
    /// `provisioning_paused` until resumed.
    Pause {
        /// Why (shown to other administrators and audited).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Resume provisioning.
    Resume,
}

/// The clap command, for completions and man pages.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key thumbprint is base64url: one in 32 begins with `-`, which must
    /// still be read as the KID, not as an option.
    #[test]
    fn a_kid_may_begin_with_a_hyphen() {
        for verb in ["remove", "revoke"] {
            let parsed = Cli::try_parse_from([
                "idprovctl",
                "keys",
                verb,
                "sensor-1",
                "-B9BtF_S4duTpKB2f1no9FX_Rm-NvFyPcR-P5G4DI9U",
            ]);
            assert!(parsed.is_ok(), "{verb}: {:?}", parsed.err());
        }
        let parsed = Cli::try_parse_from([
            "idprovctl",
            "keys",
            "revoke",
            "sensor-1",
            "-B9BtF_S4duTpKB2f1no9FX_Rm-NvFyPcR-P5G4DI9U",
            "--reason",
            "leaked",
        ]);
        let Ok(Cli {
            command:
                Command::Keys {
                    command: KeysCommand::Revoke { kid, reason, .. },
                },
            ..
        }) = parsed
        else {
            panic!("not parsed as keys revoke: {parsed:?}");
        };
        assert!(kid.starts_with("-B9"));
        assert_eq!(reason.as_deref(), Some("leaked"));
    }
}
