//! `idprov-oob`'s integration tests, one test binary (`--test it`): the real
//! tool against a real daemon (in this process, or in a child process where
//! it must be killed).

mod bad_files;
mod cli_polish;
mod commit_lost;
mod common;
mod hostile;
mod kill;
mod round_trip;
mod setup_codes;
