//! Device public keys in the four PEM formats of the OOB list (PKIX
//! `PUBLIC KEY`, PKCS#1 `RSA PUBLIC KEY`, and both in a `CERTIFICATE`):
//! `PublicKey::from_pem`, which the daemon runs on every provision, OOB
//! upsert, import chunk and added key, and idprov-oob on every row.
//!
//! Input: one selector byte (the declared format: none or one of four),
//! then the PEM text.
#![no_main]

use idprov_proto::{KeyFormat, PublicKey};
use libfuzzer_sys::fuzz_target;

const DECLARED: [Option<KeyFormat>; 5] = [
    None,
    Some(KeyFormat::RSA_PEM),
    Some(KeyFormat::RSA_X509_PEM),
    Some(KeyFormat::ES256_PEM),
    Some(KeyFormat::ES256_X509_PEM),
];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let Ok(pem) = std::str::from_utf8(rest) else {
        return;
    };
    let declared = DECLARED[usize::from(sel) % DECLARED.len()];
    let Ok(key) = PublicKey::from_pem(pem, declared) else {
        return;
    };
    // A key that parsed is self-consistent: its stored PEM parses to the
    // same key, its SPKI alone gives the same thumbprint, and the declared
    // format (when given) is the one found.
    if let Some(d) = declared {
        assert_eq!(key.format(), d);
    }
    let again = PublicKey::from_pem(key.pem(), Some(key.format()));
    assert!(again.is_ok(), "stored PEM does not parse again: {again:?}");
    if let Ok(again) = again {
        assert_eq!(again.thumbprint(), key.thumbprint());
    }
    let spki = PublicKey::from_spki_der(key.spki_der(), key.format().is_x509());
    assert!(spki.is_ok(), "SPKI does not parse again: {spki:?}");
    if let Ok(spki) = spki {
        assert_eq!(spki.thumbprint(), key.thumbprint());
    }
    let _ = key.verification_code();
    let _ = key.short_fingerprint();
});
