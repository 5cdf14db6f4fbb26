//! The workspace integration tests, one test binary (`--test it`): each
//! module is one area, run through the real interfaces against daemons
//! started in this process. One binary links the daemon once.
//!
//! Run one area with a filter, e.g. `cargo test -p idprov-tests --test it
//! lan_dnssd::`.

mod admin_api;
mod client_loopback;
mod client_x509;
mod clock_accept;
mod device_api;
mod fuzz_regressions;
mod group_commit;
mod input_strict;
mod lan_dnssd;
mod lan_security;
mod lan_setup_code;
mod limits;
mod long_poll;
mod long_poll_faults;
mod no_backtrace;
mod oob_import;
mod ops;
mod pending_why;
mod pg_site;
mod policy;
mod protocol_errors;
mod protocol_examples;
mod protocol_rules;
mod python_interop;
mod readme_walkthrough;
mod security;
mod setup_code;
mod store_faults;
mod store_io;
mod x509_certs;
mod x509_crl_mtls;
mod x509_keys;
