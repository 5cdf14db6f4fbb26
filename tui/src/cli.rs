//! The `idprov-tui` command line, defined in the library so that
//! `cargo xtask dist-docs` can generate completions and man pages from it.

use std::path::PathBuf;

use clap::Parser;

/// `0.1.0 (abc1234)`: the crate version and the git revision of the build.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("IDPROV_GIT_REV"), ")");

/// Terminal UI for idprovd administrators: approve pending devices, watch
/// the fleet, respond to alerts. Press ? inside for the keys.
#[derive(Parser, Debug)]
#[command(
    name = "idprov-tui",
    version = VERSION,
    after_help = "Exit codes: 0 after quitting, 1 on an error (unreadable or invalid \
                  profile, terminal failure), 2 bad command line."
)]
pub struct Cli {
    /// Administrator profile (TOML) written by `idprovd admin add` or on the
    /// daemon's first start. Default: $IDPROV_PROFILE,
    /// ~/.config/idprov/profile.toml, then the daemon's data dir.
    #[arg(long, value_name = "FILE")]
    pub profile: Option<PathBuf>,
}

/// The clap command, for completions and man pages.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}
