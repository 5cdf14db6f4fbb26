//! Daemon tokens as presented back by devices and hub services
//! (`tokens::verify`: renewal, `POST /token/status`).
//!
//! Input: one selector byte, then either the compact JWS text, or (selector
//! bit 0x80) `header-JSON \n claims-JSON` signed with the daemon's signing
//! key, so the claim checks behind the signature get fuzzed too.
#![no_main]

use idprov_fuzz::{DAEMON_ID, NOW, SIGNING, Signer, token_input};
use idprovd_core::tokens;
use libfuzzer_sys::fuzz_target;

/// The token audience the seeds use.
const AUDIENCE: &str = "idprov-hub";

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let Some(token) = token_input(sel, rest, Signer::Daemon) else {
        return;
    };
    if let Ok(c) = tokens::verify(&SIGNING, DAEMON_ID, AUDIENCE, &token, NOW) {
        // What verify promises: ours, for this audience, not expired.
        assert_eq!(c.iss, DAEMON_ID);
        assert_eq!(c.aud, AUDIENCE);
        assert!(c.exp > NOW);
        assert!(c.nbf <= NOW + 60);
    }
});
