//! The device's proof of possession: `proof::verify` then `check_binding`,
//! as the daemon runs them on `POST /provision` and `/renew`.
//!
//! Input: one selector byte, then either the compact JWS text, or (selector
//! bit 0x80) `header-JSON \n claims-JSON`, which the target signs with the
//! device key so the claim checks behind the signature get fuzzed too.
//! Selector bit 0x01 picks the RS256 key, 0x02 requires channel binding.
#![no_main]

use idprov_fuzz::{DEVICE, DEVICE_KEYS, NOW, Signer, token_input};
use idprov_proto::device::{ProofEndpoint, proof_audience};
use idprovd_core::config::ProofConfig;
use idprovd_core::proof;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let rsa = sel & 0x01 != 0;
    let signer = if rsa {
        Signer::DeviceRs256
    } else {
        Signer::DeviceEs256
    };
    let Some(token) = token_input(sel, rest, signer) else {
        return;
    };
    let key = &DEVICE_KEYS[usize::from(rsa)];
    let cfg = ProofConfig {
        require_channel_binding: sel & 0x02 != 0,
        ..ProofConfig::default()
    };
    let audience = proof_audience(idprov_fuzz::DAEMON_ID, ProofEndpoint::Provision);
    if let Ok(v) = proof::verify(&token, key, &DEVICE, &audience, NOW, &cfg) {
        // What verify promises its callers.
        assert!((16..=128).contains(&v.jti.len()));
        assert!(v.remember_until >= NOW - cfg.skew.as_secs() as i64);
        if let Some(cbt) = &v.cbt {
            assert_eq!(cbt.len(), idprov_proto::device::CHANNEL_BINDING_LEN);
            assert!(proof::check_binding(&v, Some(cbt), true).is_ok());
        }
        let _ = proof::check_binding(&v, Some(&[0u8; 32]), cfg.require_channel_binding);
        let _ = proof::check_binding(&v, None, cfg.require_channel_binding);
    }
});
