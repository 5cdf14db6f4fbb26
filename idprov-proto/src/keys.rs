//! Device public keys in the four OOB formats, their checks and their
//! RFC 7638 JWK thumbprints (the `kid` of a device key).
//!
//! | format           | PEM label            | key                         |
//! |------------------|----------------------|-----------------------------|
//! | `RSA_PEM`        | `PUBLIC KEY` (or `RSA PUBLIC KEY`) | RSA 2048–4096, e = 65537 |
//! | `RSA_X509_PEM`   | `CERTIFICATE`        | the same, wrapped in X.509  |
//! | `ES256_PEM`      | `PUBLIC KEY`         | EC P-256                    |
//! | `ES256_X509_PEM` | `CERTIFICATE`        | the same, wrapped in X.509  |

use std::fmt;
use std::str::FromStr;

use crate::pem::PemError;
use aws_lc_rs::digest;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use x509_parser::prelude::*;
use x509_parser::public_key::PublicKey as ParsedKey;

/// Largest PEM text accepted for one key (a 4096-bit RSA certificate is ~2 KiB).
pub const MAX_PEM_LEN: usize = 8 * 1024;
pub const RSA_MIN_BITS: usize = 2048;
pub const RSA_MAX_BITS: usize = 4096;

/// The signature algorithm a key is bound to. The server derives it from the
/// stored key and never from a token header (security rule 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KeyAlg {
    RS256,
    ES256,
}

impl fmt::Display for KeyAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyAlg::RS256 => "RS256",
            KeyAlg::ES256 => "ES256",
        })
    }
}

/// The four public-key formats of the OOB list (Cloud IoT Core's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[allow(non_camel_case_types)]
pub enum KeyFormat {
    RSA_PEM,
    RSA_X509_PEM,
    ES256_PEM,
    ES256_X509_PEM,
}

impl KeyFormat {
    pub fn alg(self) -> KeyAlg {
        match self {
            KeyFormat::RSA_PEM | KeyFormat::RSA_X509_PEM => KeyAlg::RS256,
            KeyFormat::ES256_PEM | KeyFormat::ES256_X509_PEM => KeyAlg::ES256,
        }
    }
    pub fn is_x509(self) -> bool {
        matches!(self, KeyFormat::RSA_X509_PEM | KeyFormat::ES256_X509_PEM)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            KeyFormat::RSA_PEM => "RSA_PEM",
            KeyFormat::RSA_X509_PEM => "RSA_X509_PEM",
            KeyFormat::ES256_PEM => "ES256_PEM",
            KeyFormat::ES256_X509_PEM => "ES256_X509_PEM",
        }
    }
}

impl fmt::Display for KeyFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyFormat {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "RSA_PEM" => KeyFormat::RSA_PEM,
            "RSA_X509_PEM" => KeyFormat::RSA_X509_PEM,
            "ES256_PEM" => KeyFormat::ES256_PEM,
            "ES256_X509_PEM" => KeyFormat::ES256_X509_PEM,
            _ => return Err(KeyError::UnknownFormat),
        })
    }
}

/// Why a public key was refused. Messages never include key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("key format must be one of RSA_PEM, RSA_X509_PEM, ES256_PEM, ES256_X509_PEM")]
    UnknownFormat,
    #[error("public key PEM is longer than {MAX_PEM_LEN} bytes")]
    TooLong,
    #[error("not a PEM block (expected -----BEGIN PUBLIC KEY----- or -----BEGIN CERTIFICATE-----)")]
    NotPem,
    #[error("a private key was given where the public key belongs; send only the public half")]
    PrivateKey,
    #[error("unsupported PEM label {0:?}; expected PUBLIC KEY, RSA PUBLIC KEY or CERTIFICATE")]
    Label(String),
    #[error("more than one PEM block, or text around it; send exactly one key")]
    ExtraData,
    #[error("{0}")]
    Pem(PemError),
    #[error("malformed key encoding")]
    Malformed,
    #[error("malformed X.509 certificate")]
    MalformedCertificate,
    #[error("unsupported key type: only RSA and EC P-256 keys are accepted")]
    UnsupportedKey,
    #[error("RSA key has {0} bits; 2048 to 4096 are accepted")]
    RsaSize(usize),
    #[error("RSA public exponent must be 65537")]
    RsaExponent,
    #[error("EC key is not a valid P-256 point")]
    EcPoint,
    #[error("key is {actual} but the declared format is {declared}")]
    FormatMismatch {
        declared: KeyFormat,
        actual: KeyFormat,
    },
}

/// A parsed, checked device public key.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    format: KeyFormat,
    /// What the verifier needs: the uncompressed point (EC) or the PKCS#1
    /// RSAPublicKey DER (RSA).
    verify_bytes: Vec<u8>,
    /// SubjectPublicKeyInfo DER (identical for a bare key and its X.509 wrapper).
    spki_der: Vec<u8>,
    /// The certificate, for the X.509 formats.
    cert_der: Option<Vec<u8>>,
    thumbprint: String,
    pem: String,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("format", &self.format)
            .field("thumbprint", &self.thumbprint)
            .finish()
    }
}

impl PublicKey {
    /// Parse one PEM block. `declared`, when given, must agree with the key.
    pub fn from_pem(pem: &str, declared: Option<KeyFormat>) -> Result<Self, KeyError> {
        if pem.len() > MAX_PEM_LEN {
            return Err(KeyError::TooLong);
        }
        let text = pem.trim();
        if text.contains("PRIVATE KEY-----") {
            return Err(KeyError::PrivateKey);
        }
        let block = crate::pem::parse_one(text).map_err(|e| match e {
            PemError::NoBlock => KeyError::NotPem,
            PemError::ExtraData => KeyError::ExtraData,
            other => KeyError::Pem(other),
        })?;
        let (spki_der, cert_der, is_x509) = match block.label.as_str() {
            "PUBLIC KEY" => (block.der.clone(), None, false),
            "RSA PUBLIC KEY" => (pkcs1_to_spki(&block.der)?, None, false),
            "CERTIFICATE" => {
                let (tail, cert) = X509Certificate::from_der(&block.der)
                    .map_err(|_| KeyError::MalformedCertificate)?;
                if !tail.is_empty() {
                    return Err(KeyError::MalformedCertificate);
                }
                (
                    cert.public_key().raw.to_vec(),
                    Some(block.der.clone()),
                    true,
                )
            }
            other => return Err(KeyError::Label(other.chars().take(40).collect())),
        };
        let mut key = Self::from_spki_der(&spki_der, is_x509)?;
        key.cert_der = cert_der;
        key.pem = format!("{}\n", text.replace("\r\n", "\n"));
        if let Some(declared) = declared
            && declared != key.format
        {
            return Err(KeyError::FormatMismatch {
                declared,
                actual: key.format,
            });
        }
        Ok(key)
    }

    /// Parse a SubjectPublicKeyInfo (DER). `x509` picks the wrapped format name.
    pub fn from_spki_der(spki: &[u8], x509: bool) -> Result<Self, KeyError> {
        let (tail, info) = SubjectPublicKeyInfo::from_der(spki).map_err(|_| KeyError::Malformed)?;
        if !tail.is_empty() {
            return Err(KeyError::Malformed);
        }
        let parsed = info.parsed().map_err(|_| KeyError::Malformed)?;
        let (format, verify_bytes, jwk) = match parsed {
            ParsedKey::RSA(rsa) => {
                let n = strip_zeros(rsa.modulus);
                let e = strip_zeros(rsa.exponent);
                let bits = bit_len(n);
                if !(RSA_MIN_BITS..=RSA_MAX_BITS).contains(&bits) {
                    return Err(KeyError::RsaSize(bits));
                }
                if e != [0x01, 0x00, 0x01] {
                    return Err(KeyError::RsaExponent);
                }
                // aws-lc checks the key as a whole (RSA_check_key).
                aws_lc_rs::rsa::PublicEncryptingKey::from_der(spki)
                    .map_err(|_| KeyError::Malformed)?;
                let jwk = format!(
                    r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
                    URL_SAFE_NO_PAD.encode(e),
                    URL_SAFE_NO_PAD.encode(n)
                );
                let format = if x509 {
                    KeyFormat::RSA_X509_PEM
                } else {
                    KeyFormat::RSA_PEM
                };
                // The PKCS#1 RSAPublicKey is the BIT STRING inside the SPKI.
                (format, info.subject_public_key.data.to_vec(), jwk)
            }
            ParsedKey::EC(point) => {
                let is_p256 = info
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.as_oid().ok())
                    .is_some_and(|oid| oid == x509_parser::oid_registry::OID_EC_P256);
                if !is_p256 {
                    return Err(KeyError::UnsupportedKey);
                }
                let data = point.data();
                if data.len() != 65 || data[0] != 0x04 {
                    return Err(KeyError::EcPoint);
                }
                aws_lc_rs::signature::ParsedPublicKey::new(
                    &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED,
                    data,
                )
                .map_err(|_| KeyError::EcPoint)?;
                let jwk = format!(
                    r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
                    URL_SAFE_NO_PAD.encode(&data[1..33]),
                    URL_SAFE_NO_PAD.encode(&data[33..65])
                );
                let format = if x509 {
                    KeyFormat::ES256_X509_PEM
                } else {
                    KeyFormat::ES256_PEM
                };
                (format, data.to_vec(), jwk)
            }
            _ => return Err(KeyError::UnsupportedKey),
        };
        let thumbprint =
            URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, jwk.as_bytes()).as_ref());
        Ok(PublicKey {
            format,
            verify_bytes,
            spki_der: spki.to_vec(),
            cert_der: None,
            thumbprint,
            pem: pem_encode("PUBLIC KEY", spki),
        })
    }

    pub fn format(&self) -> KeyFormat {
        self.format
    }
    pub fn alg(&self) -> KeyAlg {
        self.format.alg()
    }
    /// RFC 7638 JWK thumbprint (SHA-256, base64url): the key's `kid`.
    pub fn thumbprint(&self) -> &str {
        &self.thumbprint
    }
    /// The PEM text as given (normalised line endings).
    pub fn pem(&self) -> &str {
        &self.pem
    }
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }
    pub fn cert_der(&self) -> Option<&[u8]> {
        self.cert_der.as_deref()
    }
    /// EC: uncompressed point; RSA: PKCS#1 RSAPublicKey DER.
    pub fn verify_bytes(&self) -> &[u8] {
        &self.verify_bytes
    }
    /// Short human check code, see [`verification_code`].
    pub fn verification_code(&self) -> String {
        verification_code(&self.thumbprint)
    }
    /// First 16 characters of the thumbprint, for lists.
    pub fn short_fingerprint(&self) -> &str {
        &self.thumbprint[..16.min(self.thumbprint.len())]
    }
}

/// A short code derived from a key thumbprint that a device can show on its
/// label or display and an administrator compares before approving:
/// `SHA-256("idprov-verify:" || thumbprint)`, first 5 bytes, as 4+4 base32
/// characters (`ABCD-EFGH`). 40 bits: enough to notice a wrong device, and
/// short enough to read aloud.
pub fn verification_code(thumbprint: &str) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(b"idprov-verify:");
    ctx.update(thumbprint.as_bytes());
    let d = ctx.finish();
    let b = d.as_ref();
    let mut bits: u64 = 0;
    for byte in &b[..5] {
        bits = (bits << 8) | u64::from(*byte);
    }
    let mut out = String::with_capacity(9);
    for i in 0..8 {
        if i == 4 {
            out.push('-');
        }
        let idx = ((bits >> (35 - 5 * i)) & 31) as usize;
        out.push(char::from(ALPHABET[idx]));
    }
    out
}

/// SHA-256 fingerprint of DER bytes as lower-case hex (the CA fingerprint).
pub fn sha256_hex(der: &[u8]) -> String {
    let d = digest::digest(&digest::SHA256, der);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

pub fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let first = b.iter().position(|x| *x != 0).unwrap_or(b.len());
    &b[first..]
}

fn bit_len(n: &[u8]) -> usize {
    match n.first() {
        None => 0,
        Some(top) => n.len() * 8 - top.leading_zeros() as usize,
    }
}

/// Wrap a PKCS#1 RSAPublicKey in a SubjectPublicKeyInfo (rsaEncryption,
/// NULL parameters). The result is then checked like any SPKI.
fn pkcs1_to_spki(pkcs1: &[u8]) -> Result<Vec<u8>, KeyError> {
    const RSA_ALGORITHM: [u8; 15] = [
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    if pkcs1.len() > MAX_PEM_LEN {
        return Err(KeyError::TooLong);
    }
    let mut bits = Vec::with_capacity(pkcs1.len() + 1);
    bits.push(0); // no unused bits
    bits.extend_from_slice(pkcs1);
    let mut body = RSA_ALGORITHM.to_vec();
    der_push(&mut body, 0x03, &bits);
    let mut spki = Vec::with_capacity(body.len() + 4);
    der_push(&mut spki, 0x30, &body);
    Ok(spki)
}

/// Append one DER TLV (definite length, short or long form).
fn der_push(out: &mut Vec<u8>, tag: u8, content: &[u8]) {
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `openssl rsa -RSAPublicKey_out` writes PKCS#1; it names the same key
    /// (same thumbprint) as the SPKI form.
    #[test]
    fn pkcs1_rsa_public_key_is_accepted() {
        use aws_lc_rs::encoding::AsDer;
        use aws_lc_rs::signature::KeyPair;
        let pair =
            aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("rsa key");
        let spki = pair.public_key().as_der().expect("spki");
        let spki_key = PublicKey::from_spki_der(spki.as_ref(), false).expect("spki parses");
        // The PKCS#1 RSAPublicKey is the BIT STRING's content.
        let pkcs1 = spki_key.verify_bytes().to_vec();
        let pem = pem_encode("RSA PUBLIC KEY", &pkcs1);
        let key = PublicKey::from_pem(&pem, Some(KeyFormat::RSA_PEM)).expect("pkcs1 parses");
        assert_eq!(key.thumbprint(), spki_key.thumbprint());
        assert_eq!(key.spki_der(), spki.as_ref());
        // Garbage after the key inside the PKCS#1 block is refused.
        let mut bad = pkcs1.clone();
        bad.push(0);
        assert!(PublicKey::from_pem(&pem_encode("RSA PUBLIC KEY", &bad), None).is_err());
    }

    #[test]
    fn code_shape() {
        let c = verification_code("abc");
        assert_eq!(c.len(), 9);
        assert_eq!(&c[4..5], "-");
    }

    #[test]
    fn rejects_private_and_garbage() {
        let pk = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert_eq!(PublicKey::from_pem(pk, None), Err(KeyError::PrivateKey));
        assert_eq!(PublicKey::from_pem("hello", None), Err(KeyError::NotPem));
        let bad = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
        assert_eq!(PublicKey::from_pem(bad, None), Err(KeyError::Malformed));
    }
}
