//! Client certificates from device CSRs (F11).
//!
//! A CSR only proves possession of a key (security rule 6): [`check_csr`]
//! parses it, insists that its signature algorithm fits the key (P-256 with
//! ECDSA-SHA256, RSA with PKCS#1 v1.5 SHA-256), verifies the signature
//! itself, and refuses names that are not the device's own. Everything else
//! the CSR asks for (CA:TRUE, key usages, other extensions) is ignored:
//! [`build_certificate`] writes the certificate from the daemon's policy
//! alone: subject CN and a URI SAN from the device id, CA:FALSE,
//! digitalSignature, clientAuth, the configured validity, a random serial
//! and the authority key identifier.

use std::time::Duration;

use idprov_proto::keys::pem_encode;
use idprov_proto::pem::PemError;
use idprov_proto::{DeviceId, KeyAlg, KeyError, PublicKey};
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose,
    SanType,
};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{
    OID_PKCS1_SHA256WITHRSA, OID_SIG_ECDSA_WITH_SHA256, OID_X509_COMMON_NAME,
};
use x509_parser::prelude::FromDer;

pub use crate::config::CertConfig;
use crate::pki::Pki;

/// Largest CSR accepted (a 4096-bit RSA CSR is about 1.7 KiB of PEM).
pub const MAX_CSR_LEN: usize = 16 * 1024;
/// Certificates start this long before the issuing moment, so a device whose
/// clock is a little behind can use its certificate at once.
const BACKDATE_SECS: i64 = 300;

/// Why a CSR was refused. Shown to the device (it is the CSR's author).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrError {
    #[error("csr is longer than {MAX_CSR_LEN} bytes")]
    TooLong,
    #[error("csr must be one PEM block labelled CERTIFICATE REQUEST")]
    NotPem,
    #[error("csr is not a valid PKCS#10 certification request")]
    Malformed,
    #[error("csr: {0}")]
    Pem(PemError),
    #[error("csr key: {0}")]
    Key(KeyError),
    #[error(
        "csr signature algorithm {0} does not fit its key: P-256 keys sign with ecdsa-with-SHA256, RSA keys with sha256WithRSAEncryption"
    )]
    Algorithm(String),
    #[error("csr signature does not verify with its own key")]
    Signature,
    #[error("csr names {0:?}, which is not this device; leave names out or use the device id")]
    ForeignName(String),
    #[error("csr key is not a registered, unexpired key of this device")]
    NotDeviceKey,
}

/// A CSR that passed every check, reduced to what policy may use.
#[derive(Debug, Clone)]
pub struct CheckedCsr {
    /// The key the CSR was signed with (the certificate certifies it).
    pub key: PublicKey,
    /// The CSR asked for CA:TRUE; overridden (logged).
    pub asked_for_ca: bool,
    /// Requested extensions that policy ignored.
    pub ignored_extensions: usize,
}

/// The URI SAN of a device certificate.
pub fn device_uri(id: &DeviceId) -> String {
    format!("urn:idprov:device:{id}")
}

/// Parse and verify a CSR for `device`. Whether its key belongs to the
/// device is checked by the caller, inside the transaction that issues.
pub fn check_csr(pem: &str, device: &DeviceId) -> Result<CheckedCsr, CsrError> {
    if pem.len() > MAX_CSR_LEN {
        return Err(CsrError::TooLong);
    }
    let block = idprov_proto::pem::parse_one(pem).map_err(|e| match e {
        PemError::NoBlock | PemError::ExtraData => CsrError::NotPem,
        other => CsrError::Pem(other),
    })?;
    if !matches!(
        block.label.as_str(),
        "CERTIFICATE REQUEST" | "NEW CERTIFICATE REQUEST"
    ) {
        return Err(CsrError::NotPem);
    }
    let (tail, csr) =
        X509CertificationRequest::from_der(&block.der).map_err(|_| CsrError::Malformed)?;
    if !tail.is_empty() {
        return Err(CsrError::Malformed);
    }
    let info = &csr.certification_request_info;
    let key = PublicKey::from_spki_der(info.subject_pki.raw, false).map_err(CsrError::Key)?;

    // The signature algorithm must be the one the key is bound to (rule 1);
    // a P-256 key "signing" with SHA-384 or an RSA key with SHA-1 is refused.
    let alg = &csr.signature_algorithm;
    let fits = match key.alg() {
        KeyAlg::ES256 => alg.algorithm == OID_SIG_ECDSA_WITH_SHA256 && alg.parameters.is_none(),
        KeyAlg::RS256 => alg.algorithm == OID_PKCS1_SHA256WITHRSA,
    };
    if !fits {
        return Err(CsrError::Algorithm(alg.algorithm.to_id_string()));
    }
    let verifier: &dyn aws_lc_rs::signature::VerificationAlgorithm = match key.alg() {
        KeyAlg::ES256 => &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1,
        KeyAlg::RS256 => &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
    };
    aws_lc_rs::signature::UnparsedPublicKey::new(verifier, key.verify_bytes())
        .verify(info.raw, &csr.signature_value.data)
        .map_err(|_| CsrError::Signature)?;

    // Names: only the device's own, or none.
    for cn in info.subject.iter_attributes() {
        if cn.attr_type() == &OID_X509_COMMON_NAME {
            let v = cn.as_str().map_err(|_| CsrError::Malformed)?;
            if v != device.as_str() {
                return Err(CsrError::ForeignName(printable(v)));
            }
        }
    }
    let uri = device_uri(device);
    let mut asked_for_ca = false;
    let mut ignored_extensions = 0;
    if let Some(exts) = csr.requested_extensions() {
        for ext in exts {
            match ext {
                ParsedExtension::SubjectAlternativeName(san) => {
                    for name in &san.general_names {
                        match name {
                            GeneralName::URI(u) if *u == uri => {}
                            GeneralName::DNSName(d) if *d == device.as_str() => {}
                            other => {
                                return Err(CsrError::ForeignName(printable(&other.to_string())));
                            }
                        }
                    }
                }
                ParsedExtension::BasicConstraints(bc) => {
                    asked_for_ca |= bc.ca;
                    ignored_extensions += 1;
                }
                _ => ignored_extensions += 1,
            }
        }
    }
    Ok(CheckedCsr {
        key,
        asked_for_ca,
        ignored_extensions,
    })
}

/// At most 100 printable ASCII characters of a name, for the error message.
fn printable(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(100)
        .collect()
}

/// A fresh serial: 16 random bytes, positive and without a leading zero
/// byte, so its hex form is the same everywhere (openssl, the CRL, here).
pub fn random_serial() -> [u8; 16] {
    let mut s: [u8; 16] = rand::random();
    s[0] = (s[0] & 0x7f).max(1);
    s
}

/// An issued certificate.
#[derive(Clone)]
pub struct Issued {
    pub serial: String,
    pub der: Vec<u8>,
    pub pem: String,
    pub not_before: i64,
    pub not_after: i64,
}

/// Build and sign a client certificate for `key` from policy alone.
pub fn build_certificate(
    pki: &Pki,
    device: &DeviceId,
    key: &PublicKey,
    now: i64,
    lifetime: Duration,
) -> Result<Issued, String> {
    let spki = rcgen::SubjectPublicKeyInfo::from_der(key.spki_der())
        .map_err(|e| format!("device key: {e}"))?;
    let serial = random_serial();
    let not_before = now - BACKDATE_SECS;
    let not_after = now.saturating_add(lifetime.as_secs().try_into().unwrap_or(i64::MAX / 4));
    let ts = |t: i64| time::OffsetDateTime::from_unix_timestamp(t).map_err(|e| e.to_string());

    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, device.as_str());
    p.distinguished_name = dn;
    let uri = device_uri(device)
        .try_into()
        .map_err(|e| format!("device URI: {e}"))?;
    p.subject_alt_names = vec![SanType::URI(uri)];
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.use_authority_key_identifier_extension = true;
    p.not_before = ts(not_before)?;
    p.not_after = ts(not_after)?;
    p.serial_number = Some(serial.to_vec().into());

    let issuer = pki.ca_issuer().map_err(|e| e.to_string())?;
    let cert = p.signed_by(&spki, &issuer).map_err(|e| e.to_string())?;
    let der = cert.der().to_vec();
    Ok(Issued {
        serial: hex::encode(serial),
        pem: pem_encode("CERTIFICATE", &der),
        der,
        not_before,
        not_after,
    })
}

/// What the daemon reads from a presented client certificate: its serial
/// (lower-case hex, as recorded) and the thumbprint of its key.
pub fn client_cert_identity(der: &[u8]) -> Option<(String, String)> {
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
    let serial = hex::encode(cert.raw_serial());
    let key = PublicKey::from_spki_der(cert.public_key().raw, false).ok()?;
    Some((serial, key.thumbprint().to_string()))
}
