//! `idprovctl`: the administrator's scripting command line over the admin
//! API. Parsing is in `idprovctl::cli`, each command in `commands.rs`; this
//! file maps errors to the documented exit codes.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use idprov_admin_client::AdminError;
use idprovctl::cli::{Cli, exit};

mod commands;
mod policy_cmds;
mod views;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match runtime().and_then(|rt| rt.block_on(commands::run(cli))) {
        Ok(()) => ExitCode::SUCCESS,
        // `idprovctl events | head`: the reader left; nothing more to say,
        // as with any Unix filter.
        Err(e) if e.chain().any(is_broken_pipe) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("idprovctl: error: {e:#}");
            ExitCode::from(exit_code(&e))
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// The documented exit codes (the same numbers as idprovd's).
fn exit_code(e: &anyhow::Error) -> u8 {
    e.chain()
        .find_map(|c| c.downcast_ref::<AdminError>())
        .map_or(exit::FAILURE, AdminError::exit_code)
}

fn is_broken_pipe(e: &(dyn std::error::Error + 'static)) -> bool {
    e.downcast_ref::<std::io::Error>()
        .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}
