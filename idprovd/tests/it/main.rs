//! The daemon binary's integration tests, one test binary (`--test it`):
//! the command line, operations commands, the audit tools and the example
//! configuration.

mod audit_cli;
mod cli;
mod clock_cli;
mod config_errors;
mod config_example;
mod key_material;
mod ops_cli;
mod policy_config;
mod shutdown;
mod store_damage;
