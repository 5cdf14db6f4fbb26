//! What the fuzz targets share: the fixed keys their seeds are signed with
//! (fuzz/keys, test-only material) and the names the seeds use, so a seed
//! made by fuzz/seeds.py gets past signature checks and the fuzzer can
//! explore the claim checks behind them.

use std::sync::LazyLock;

use base64::Engine;
use idprov_proto::{DeviceId, PublicKey};
use jsonwebtoken::{Algorithm, EncodingKey};

/// The daemon id, device id and clock every seed is made for.
pub const DAEMON_ID: &str = "fuzz-daemon";
pub const DEVICE_ID: &str = "sensor-0001";
pub const NOW: i64 = 1_800_000_000;

pub const DEVICE_ES256_PUB: &str = include_str!("../keys/device-es256.pub.pem");
pub const DEVICE_RS256_PUB: &str = include_str!("../keys/device-rs256.pub.pem");
const DEVICE_ES256_KEY: &str = include_str!("../keys/device-es256.key.pem");
const DEVICE_RS256_KEY: &str = include_str!("../keys/device-rs256.key.pem");
const DAEMON_SIGNING_KEY: &str = include_str!("../keys/daemon-signing.key.pem");

/// The device's two public keys (ES256, RS256) as the daemon holds them.
pub static DEVICE_KEYS: LazyLock<[PublicKey; 2]> = LazyLock::new(|| {
    [DEVICE_ES256_PUB, DEVICE_RS256_PUB].map(|pem| match PublicKey::from_pem(pem, None) {
        Ok(k) => k,
        Err(e) => panic!("fuzz/keys: {e}"),
    })
});

pub static DEVICE: LazyLock<DeviceId> = LazyLock::new(|| match DEVICE_ID.parse() {
    Ok(d) => d,
    Err(e) => panic!("DEVICE_ID: {e}"),
});

/// The DER inside a PEM file of fuzz/keys (PKCS#8 for EC, PKCS#1 for RSA,
/// as `jsonwebtoken`'s DER constructors take them).
fn pem_der(pem: &str) -> Vec<u8> {
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    match base64::engine::general_purpose::STANDARD.decode(b64) {
        Ok(der) => der,
        Err(e) => panic!("fuzz/keys: {e}"),
    }
}

/// The daemon's token signing key, as `pki` builds it.
pub static SIGNING: LazyLock<idprovd_core::pki::SigningKey> = LazyLock::new(|| {
    match idprovd_core::pki::SigningKey::from_pkcs8(
        "fuzz-signing-key".into(),
        &pem_der(DAEMON_SIGNING_KEY),
        serde_json::Value::Null,
    ) {
        Ok(k) => k,
        Err(e) => panic!("fuzz/keys/daemon-signing: {e}"),
    }
});

/// Which private key signs a structure-aware input.
#[derive(Debug, Clone, Copy)]
pub enum Signer {
    DeviceEs256,
    DeviceRs256,
    Daemon,
}

/// A compact JWS over the fuzzer's own header and claims bytes, signed with
/// a fixed key, so the checks after the signature see arbitrary JSON.
pub fn sign_raw(header: &[u8], claims: &[u8], signer: Signer) -> Option<String> {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (pem, alg) = match signer {
        Signer::DeviceEs256 => (DEVICE_ES256_KEY, Algorithm::ES256),
        Signer::DeviceRs256 => (DEVICE_RS256_KEY, Algorithm::RS256),
        Signer::Daemon => (DAEMON_SIGNING_KEY, Algorithm::ES256),
    };
    let key = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_der(&pem_der(pem)),
        _ => EncodingKey::from_ec_der(&pem_der(pem)),
    };
    let message = format!("{}.{}", b64.encode(header), b64.encode(claims));
    let sig = jsonwebtoken::crypto::sign(message.as_bytes(), &key, alg).ok()?;
    Some(format!("{message}.{sig}"))
}

/// The token a `proof` or `token` input stands for: with selector bit 0x80
/// the rest is `header-JSON \n claims-JSON`, signed here by `signer`;
/// otherwise it is the compact JWS text itself.
pub fn token_input(sel: u8, rest: &[u8], signer: Signer) -> Option<String> {
    if sel & 0x80 != 0 {
        let at = rest.iter().position(|b| *b == b'\n')?;
        sign_raw(&rest[..at], &rest[at + 1..], signer)
    } else {
        std::str::from_utf8(rest).ok().map(str::to_owned)
    }
}
