//! `idprovctl`, the administrators' scripting command line. The library
//! holds the command line definition (for completions and man pages) and
//! the output helpers; the binary runs the commands.

pub mod cli;
pub mod cli_policy;
pub mod output;
