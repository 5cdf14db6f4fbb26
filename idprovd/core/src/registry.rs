//! Registry CAs (F13): CA certificates an administrator registers. While any
//! is registered, a device key that comes wrapped in an X.509 certificate
//! (RSA_X509_PEM, ES256_X509_PEM) must be issued by one of them and be
//! within its validity; self-signed wrappers are accepted only while none
//! is registered. The chain check is rustls' WebPKI client verifier, the
//! same code that checks client certificates on the TLS port.

use std::sync::Arc;
use std::time::Duration;

use idprov_proto::PublicKey;
use idprov_proto::keys::sha256_hex;
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::{CertificateDer, UnixTime};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::store::RegistryCaRecord;

/// Largest CA certificate accepted (PEM).
pub const MAX_CA_PEM: usize = 16 * 1024;
/// Most registry CAs (each is tried for every wrapped key).
pub const MAX_REGISTRY_CAS: usize = 100;

/// Parse a CA certificate an administrator uploads. `added_*` are filled by
/// the caller.
pub fn parse_ca(pem: &str) -> Result<RegistryCaRecord, String> {
    if pem.len() > MAX_CA_PEM {
        return Err(format!("certificate PEM is longer than {MAX_CA_PEM} bytes"));
    }
    let text = pem.trim();
    if text.contains("PRIVATE KEY-----") {
        return Err("a private key was given; send only the CA certificate".into());
    }
    let block = idprov_proto::pem::parse_one(text).map_err(|e| match e {
        idprov_proto::pem::PemError::NoBlock => {
            "not a PEM block (expected -----BEGIN CERTIFICATE-----)".to_string()
        }
        other => other.to_string(),
    })?;
    if block.label != "CERTIFICATE" {
        return Err("expected exactly one PEM block labelled CERTIFICATE".into());
    }
    let (tail, cert) = X509Certificate::from_der(&block.der)
        .map_err(|_| "malformed X.509 certificate".to_string())?;
    if !tail.is_empty() {
        return Err("malformed X.509 certificate".into());
    }
    let is_ca = cert
        .basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|bc| bc.value.ca);
    if !is_ca {
        return Err("the certificate is not a CA (basicConstraints CA:TRUE is missing)".into());
    }
    // WebPKI must accept it as a trust anchor, or no key could ever pass.
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(block.der.clone()))
        .map_err(|e| format!("unusable as a trust anchor: {e}"))?;
    let subject: String = cert
        .subject()
        .to_string()
        .chars()
        .filter(|c| !c.is_control())
        .take(256)
        .collect();
    Ok(RegistryCaRecord {
        fingerprint: sha256_hex(&block.der),
        subject,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        added_at: 0,
        added_by: String::new(),
        pem: idprov_proto::keys::pem_encode("CERTIFICATE", &block.der),
    })
}

/// Check an X.509-wrapped key against the registry CAs. Bare keys, and any
/// key while no CA is registered, pass. The error is for logs and admins.
pub fn check_wrapped(key: &PublicKey, cas: &[RegistryCaRecord], now: i64) -> Result<(), String> {
    let Some(der) = key.cert_der() else {
        return Ok(());
    };
    if cas.is_empty() {
        return Ok(());
    }
    let mut roots = RootCertStore::empty();
    for ca in cas {
        use rustls_pki_types::pem::PemObject;
        if let Ok(c) = CertificateDer::from_pem_slice(ca.pem.as_bytes()) {
            let _ = roots.add(c);
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| format!("registry CAs unusable: {e}"))?;
    let when = UnixTime::since_unix_epoch(Duration::from_secs(now.max(0) as u64));
    verifier
        .verify_client_cert(&CertificateDer::from(der.to_vec()), &[], when)
        .map(drop)
        .map_err(|e| format!("key certificate does not chain to a registry CA: {e}"))
}
