//! The `idprovd` command line, defined here (not in the binary) so that
//! `cargo xtask` can generate shell completions and man pages from it.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::LogFormat;

/// `0.1.0 (abc1234)`: the crate version and the git revision it was built
/// from (`unknown` when built outside a git checkout).
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("IDPROV_GIT_REV"), ")");

/// Exit codes of `idprovd` (documented in docs/operations.md): the numbers
/// every idprov tool shares.
pub use idprov_admin_client::exit;

#[derive(Parser, Debug)]
#[command(
    name = "idprovd",
    version = VERSION,
    about = "idprov hub daemon: zero-touch provisioning for IoT devices on the LAN",
    after_help = "Exit codes: 0 ok, 1 failure, 2 usage, 3 invalid configuration, \
                  4 unusable data dir/store/backup, 5 daemon unreachable, \
                  6 audit chain broken."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Args, Debug)]
pub struct Global {
    /// TOML configuration file.
    #[arg(long, global = true, env = "IDPROVD_CONFIG", value_hint = clap::ValueHint::FilePath)]
    pub config: Option<PathBuf>,
    /// HTTPS listen address (default 0.0.0.0:8445).
    #[arg(long, global = true)]
    pub listen: Option<SocketAddr>,
    /// Data directory (CA, keys, store, administrators).
    #[arg(long, global = true, value_hint = clap::ValueHint::DirPath)]
    pub data_dir: Option<PathBuf>,
    /// Log format: auto (text on a terminal, else JSON), text, json.
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log filter, e.g. `info` or `idprovd=debug` (RUST_LOG wins).
    #[arg(long, global = true)]
    pub log_level: Option<String>,
    /// Do not advertise the daemon by DNS-SD (same as mdns.enabled = false).
    #[arg(long, global = true)]
    pub no_mdns: bool,
    /// Prometheus metrics listen address (default 127.0.0.1:9445).
    #[arg(long, global = true)]
    pub metrics_listen: Option<SocketAddr>,
    /// Do not serve metrics (same as metrics.enabled = false).
    #[arg(long, global = true, conflicts_with = "metrics_listen")]
    pub no_metrics: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the daemon (the default).
    Run,
    /// Load and check the configuration, print the effective values.
    CheckConfig {
        /// Print JSON instead of TOML.
        #[arg(long)]
        json: bool,
    },
    /// The daemon's certificate authority.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Administrator credentials (work while the daemon runs).
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Save a consistent backup of the running daemon (keys included: keep
    /// it secret). Made by the daemon through its admin API.
    Backup {
        /// Where to write the backup (mode 0600; replaced atomically).
        #[arg(long, value_hint = clap::ValueHint::FilePath)]
        out: PathBuf,
        /// Administrator profile (default: the data dir's admin.profile).
        #[arg(long, value_hint = clap::ValueHint::FilePath)]
        profile: Option<PathBuf>,
        /// Daemon URL, e.g. https://127.0.0.1:8445 (default: the profile's).
        #[arg(long)]
        server: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The daemon's clock against its persisted high-water mark, through
    /// the admin API of the running daemon.
    Clock {
        #[command(subcommand)]
        command: ClockCommand,
        /// Administrator profile (default: the data dir's admin.profile).
        #[arg(long, global = true, value_hint = clap::ValueHint::FilePath)]
        profile: Option<PathBuf>,
        /// Print the result as JSON.
        #[arg(long, global = true)]
        json: bool,
    },
    /// The tamper-evident audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Restore a backup into the data dir (--data-dir). The daemon must be
    /// stopped; a non-empty data dir is refused without --force.
    Restore {
        /// The backup file.
        #[arg(value_hint = clap::ValueHint::FilePath)]
        file: PathBuf,
        /// Replace the contents of a non-empty data dir.
        #[arg(long)]
        force: bool,
        /// Only check the backup (every checksum); write nothing.
        #[arg(long)]
        check: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Check the hash chain and name the first broken entry (exit 6 if
    /// broken). Reads the store of a stopped daemon, or asks a running one
    /// through its admin API.
    Verify {
        /// Administrator profile for a running daemon (default: the data
        /// dir's admin.profile).
        #[arg(long, value_hint = clap::ValueHint::FilePath)]
        profile: Option<PathBuf>,
        /// Always use the admin API (default: the store file when the daemon
        /// is stopped, the API when it runs).
        #[arg(long)]
        online: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum ClockCommand {
    /// Show the clock, the high-water mark and whether provisioning is
    /// refused because the clock is behind it.
    Show,
    /// Accept the current clock after a corrected forward jump: lower the
    /// high-water mark to now (audited as clock_accepted). Check the time
    /// first.
    Accept,
}

#[derive(Subcommand, Debug)]
pub enum CaCommand {
    /// Print the CA fingerprint (SHA-256 of the certificate, hex).
    Fingerprint {
        /// Print the fingerprint and the certificate as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the CA certificate (PEM).
    Cert {
        /// Print the fingerprint and the certificate as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Create an administrator and write its profile (0600).
    Add {
        /// The administrator's name: 1-32 characters of a-z 0-9 _ -.
        name: String,
        /// Where to write the profile.
        #[arg(long, value_hint = clap::ValueHint::FilePath)]
        out: PathBuf,
        /// The daemon URL to put in the profile (default: from `listen`).
        #[arg(long)]
        server: Option<String>,
        /// Replace the profile file if it exists (e.g. re-creating the
        /// data dir's admin.profile).
        #[arg(long)]
        force: bool,
    },
    /// List administrators.
    List {
        /// Print the list as JSON (creation times in unix seconds).
        #[arg(long)]
        json: bool,
    },
    /// Remove an administrator; its token stops working at once. The last
    /// administrator cannot be removed.
    Remove {
        /// The administrator's name.
        name: String,
    },
}

/// The clap command, for completions and man pages.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}
