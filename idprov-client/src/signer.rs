//! Who signs the device's proofs: a key file ([`KeySigner`]), or anything that
//! implements [`Signer`] (a TPM, a secure element, an HSM).

use std::io::Write;
use std::path::Path;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use base64::Engine;
use idprov_proto::keys::pem_encode;
use idprov_proto::{KeyAlg, PublicKey};
use rustls_pki_types::pem::{PemObject, SectionKind};

use crate::error::Error;

/// Signs JWS signing inputs with the device's private key.
///
/// Implement this for keys that never leave hardware. The signature must be
/// in JWS form: for ES256 the fixed 64-byte `r || s` (not DER); for RS256 a
/// PKCS#1 v1.5 SHA-256 signature. `sign` is called once per proof (at
/// provisioning and at each renewal), from an async task: keep it short or
/// make it non-blocking inside.
pub trait Signer: Send + Sync + 'static {
    /// The public half, as the daemon will see it.
    fn public_key(&self) -> &PublicKey;
    /// Sign `message` (the JWS signing input `header.claims`).
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error>;
    /// The JWS algorithm; derived from the public key.
    fn alg(&self) -> KeyAlg {
        self.public_key().alg()
    }
}

enum Inner {
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

/// A software key: EC P-256 (ES256) or RSA 2048–4096 (RS256), read from a PEM
/// file in PKCS#8 (`PRIVATE KEY`), SEC1 (`EC PRIVATE KEY`) or PKCS#1
/// (`RSA PRIVATE KEY`) form.
pub struct KeySigner {
    inner: Inner,
    public: PublicKey,
}

impl std::fmt::Debug for KeySigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySigner")
            .field("public", &self.public)
            .finish()
    }
}

impl KeySigner {
    /// Parse a private key from PEM text.
    pub fn from_pem(pem: &str) -> Result<Self, Error> {
        let (kind, der) = <(SectionKind, Vec<u8>)>::from_pem_slice(pem.as_bytes())
            .map_err(|e| Error::key_from("not a PEM private key", e))?;
        let inner = match kind {
            SectionKind::PrivateKey => {
                // PKCS#8 holds either kind; try EC first (the common case).
                match EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &der) {
                    Ok(k) => Inner::Ec(k),
                    Err(_) => Inner::Rsa(RsaKeyPair::from_pkcs8(&der).map_err(|e| {
                        Error::key_from("PKCS#8 key is neither EC P-256 nor RSA", e)
                    })?),
                }
            }
            SectionKind::EcPrivateKey => Inner::Ec(
                EcdsaKeyPair::from_private_key_der(
                    &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    &der,
                )
                .map_err(|e| Error::key_from("EC key is not a valid P-256 key", e))?,
            ),
            SectionKind::RsaPrivateKey => Inner::Rsa(
                RsaKeyPair::from_der(&der).map_err(|e| Error::key_from("RSA key rejected", e))?,
            ),
            other => {
                return Err(Error::key(format!(
                    "expected a private key PEM block, found {other:?}"
                )));
            }
        };
        let spki = match &inner {
            Inner::Ec(k) => k.public_key().as_der().map(|d| d.as_ref().to_vec()),
            Inner::Rsa(k) => k.public_key().as_der().map(|d| d.as_ref().to_vec()),
        }
        .map_err(|e| Error::key_from("cannot encode the public key", e))?;
        // The same checks the daemon applies (RSA size and exponent, P-256),
        // so a key the daemon would refuse fails here, at start.
        let public =
            PublicKey::from_spki_der(&spki, false).map_err(|e| Error::key_from("refused", e))?;
        Ok(KeySigner { inner, public })
    }

    /// A fresh EC P-256 key, returned with its PKCS#8 PEM text.
    pub fn generate_p256() -> Result<(Self, String), Error> {
        let doc = EcdsaKeyPair::generate_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &SystemRandom::new(),
        )
        .map_err(|e| Error::key_from("key generation failed", e))?;
        let pem = pem_encode("PRIVATE KEY", doc.as_ref());
        Ok((Self::from_pem(&pem)?, pem))
    }

    /// Read the key at `path`.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Store {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_pem(&text)
    }

    /// Read the key at `path`, or create a P-256 key there (mode 0600) if the
    /// file does not exist. The boolean tells whether it was created.
    pub fn load_or_generate(path: &Path) -> Result<(Self, bool), Error> {
        match std::fs::metadata(path) {
            Ok(_) => Ok((Self::load(path)?, false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let (signer, pem) = Self::generate_p256()?;
                write_new_private(path, pem.as_bytes())?;
                Ok((signer, true))
            }
            Err(source) => Err(Error::Store {
                path: path.to_path_buf(),
                source,
            }),
        }
    }
}

/// Create `path` exclusively with mode 0600, so two processes racing to create
/// a key never overwrite each other and the key is never world-readable.
fn write_new_private(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let err = |source| Error::Store {
        path: path.to_path_buf(),
        source,
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path).map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)?;
    Ok(())
}

impl Signer for KeySigner {
    fn public_key(&self) -> &PublicKey {
        &self.public
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        let rng = SystemRandom::new();
        match &self.inner {
            Inner::Ec(k) => k
                .sign(&rng, message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|e| Error::signer_from("ECDSA signing failed", e)),
            Inner::Rsa(k) => {
                let mut sig = vec![0u8; k.public_modulus_len()];
                k.sign(&signature::RSA_PKCS1_SHA256, &rng, message, &mut sig)
                    .map_err(|e| Error::signer_from("RSA signing failed", e))?;
                Ok(sig)
            }
        }
    }
}

/// Build a compact JWS: `base64url(header).base64url(claims).base64url(sig)`.
pub(crate) fn compact_jws(
    signer: &dyn Signer,
    header: &serde_json::Value,
    claims: &impl serde::Serialize,
) -> Result<String, Error> {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header =
        serde_json::to_vec(header).map_err(|e| Error::signer_from("encoding the header", e))?;
    let claims =
        serde_json::to_vec(claims).map_err(|e| Error::signer_from("encoding the claims", e))?;
    let mut out = format!("{}.{}", b64.encode(header), b64.encode(claims));
    let sig = signer.sign(out.as_bytes())?;
    out.push('.');
    out.push_str(&b64.encode(sig));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_round_trips_through_pem() -> Result<(), Error> {
        let (a, pem) = KeySigner::generate_p256()?;
        let b = KeySigner::from_pem(&pem)?;
        assert_eq!(a.public_key().thumbprint(), b.public_key().thumbprint());
        assert_eq!(a.alg(), KeyAlg::ES256);
        Ok(())
    }

    #[test]
    fn rsa_pkcs8_key_is_rs256() -> Result<(), Error> {
        let kp = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
            .map_err(|e| Error::key_from("gen", e))?;
        let der = kp.as_der().map_err(|e| Error::key_from("der", e))?;
        let pem = pem_encode("PRIVATE KEY", der.as_ref());
        let s = KeySigner::from_pem(&pem)?;
        assert_eq!(s.alg(), KeyAlg::RS256);
        assert_eq!(s.sign(b"x")?.len(), 256);
        Ok(())
    }

    #[test]
    fn public_or_garbage_pem_is_a_clear_error() {
        let (s, _) = KeySigner::generate_p256().unwrap_or_else(|e| panic!("{e}"));
        let public_pem = s.public_key().pem().to_string();
        assert!(matches!(
            KeySigner::from_pem(&public_pem),
            Err(Error::Key { .. })
        ));
        assert!(matches!(
            KeySigner::from_pem("hello"),
            Err(Error::Key { .. })
        ));
        let bad = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(matches!(KeySigner::from_pem(bad), Err(Error::Key { .. })));
    }

    #[test]
    fn load_or_generate_creates_once_with_0600() -> Result<(), Error> {
        let dir = tempfile::tempdir().map_err(|e| Error::config_from("test setup", e))?;
        let path = dir.path().join("key.pem");
        let (a, created) = KeySigner::load_or_generate(&path)?;
        assert!(created);
        let (b, created) = KeySigner::load_or_generate(&path)?;
        assert!(!created);
        assert_eq!(a.public_key().thumbprint(), b.public_key().thumbprint());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path)
                .map_err(|e| Error::config_from("test setup", e))?
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        Ok(())
    }
}
