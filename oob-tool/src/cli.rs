//! The `idprov-oob` command line, defined in the library so that
//! `cargo xtask dist-docs` can generate completions and man pages from it.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use idprov_proto::admin::MAX_OOB_BATCH;

use crate::generate::{Alg, MAX_GENERATE};
use crate::source::Format;

/// `0.1.0 (abc1234)`: the crate version and the git revision of the build.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("IDPROV_GIT_REV"), ")");

#[derive(Parser, Debug)]
#[command(
    name = "idprov-oob",
    version = VERSION,
    about = "Bulk upload, export and key generation for the idprovd OOB list",
    after_help = "Exit codes: 0 ok, 1 failure (problems in the files, a refused import), \
                  2 bad command line, 3 no or invalid administrator profile, \
                  5 the daemon could not be reached."
)]
pub struct Cli {
    /// Administrator profile (TOML) written by idprovd. Default: $IDPROV_PROFILE,
    /// ~/.config/idprov/profile.toml, then the daemon's data directory.
    #[arg(long, global = true, env = "IDPROV_PROFILE")]
    pub profile: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check files and upload them as one atomic import.
    Import {
        /// CSV, JSON or JSON Lines files; all of them form one import.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Input format (default: by file extension).
        #[arg(long, value_enum)]
        format: Option<Format>,
        /// Show what would change, store nothing.
        #[arg(long)]
        dry_run: bool,
        /// Allow changing the key, MAC or secret of existing entries.
        #[arg(long)]
        replace: bool,
        /// Remove every entry on the daemon that the files do not list.
        #[arg(long)]
        prune: bool,
        /// With --prune, accept files that list no entries at all (which
        /// empties the daemon's list).
        #[arg(long, requires = "prune")]
        allow_empty: bool,
        /// Entries per request when uploading in chunks (1-10000).
        #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=MAX_OOB_BATCH as u64))]
        chunk: u64,
        /// How many device IDs of each kind (added, changed, removed) to list.
        #[arg(long, default_value_t = 20)]
        show: usize,
        /// Print how long checking, uploading and committing took (stderr).
        #[arg(long)]
        timings: bool,
    },
    /// Check files without contacting the daemon.
    Check {
        /// CSV, JSON or JSON Lines files, checked as one import.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Input format (default: by file extension).
        #[arg(long, value_enum)]
        format: Option<Format>,
        /// Print the result as JSON (entries, problems, warnings).
        #[arg(long)]
        json: bool,
    },
    /// Write the OOB list as CSV or JSON, ready to import again.
    Export {
        /// Output file (default: standard output).
        #[arg(long, short)]
        out: Option<PathBuf>,
        /// Output format (default: by --out extension, else CSV).
        #[arg(long, value_enum)]
        format: Option<Format>,
        /// Only entries whose id, MAC or fingerprint contains this text.
        #[arg(long, short)]
        query: Option<String>,
    },
    /// Show the OOB list.
    List {
        /// One JSON array, for scripts.
        #[arg(long)]
        json: bool,
        /// Only entries whose id, MAC or fingerprint contains this text.
        #[arg(long, short)]
        query: Option<String>,
    },
    /// Remove entries by device ID.
    Remove {
        /// Device IDs of the entries to remove.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Generate key pairs for a batch of devices, and a CSV to import.
    Generate {
        /// Number of devices (at most 1,000,000 per batch).
        #[arg(value_parser = clap::value_parser!(u64).range(1..=MAX_GENERATE))]
        count: u64,
        /// Device ID prefix; IDs are PREFIX plus a zero-padded number.
        #[arg(long)]
        prefix: String,
        /// Output directory (created, mode 0700).
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum, default_value_t = Alg::Es256)]
        alg: Alg,
        /// RSA key size (with --alg rs256): 2048, 3072 or 4096.
        #[arg(long, default_value_t = 2048)]
        rsa_bits: u32,
        /// First number.
        #[arg(long, default_value_t = 1)]
        start: u64,
        /// Note written into every CSV row.
        #[arg(long)]
        note: Option<String>,
        /// Also issue a setup code per device: the CSV carries only its
        /// verifier, the codes go to setup-codes.csv (mode 0600) for labels.
        #[arg(long)]
        setup_codes: bool,
        /// No key pairs: the setup code is the only credential (needs --setup-codes).
        #[arg(long, requires = "setup_codes")]
        no_keys: bool,
        /// Argon2id memory per code derivation, KiB (devices spend it too).
        #[arg(long, default_value_t = idprov_pake::KdfParams::DEFAULT.memory_kib)]
        kdf_memory_kib: u32,
    },
}

/// The clap command, for completions and man pages.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}
