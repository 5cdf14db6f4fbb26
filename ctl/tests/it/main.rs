//! `idprovctl`'s integration tests, one test binary (`--test it`): the real
//! binary against a real daemon (in this process, on loopback).

mod commands;
mod common;
mod policy;
