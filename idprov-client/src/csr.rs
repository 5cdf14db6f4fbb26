//! Client certificates (F11): a PKCS#10 CSR signed by the device key, and
//! the serial of the certificate the daemon returns.
//!
//! The CSR is built by rcgen through an adapter over [`Signer`], so a key that
//! never leaves hardware can ask for a certificate just as a key file can.
//! The CSR only proves possession of the key: the daemon writes the
//! certificate from its own policy (docs/x509.md). It names the device (CN and
//! the URI SAN `urn:idprov:device:<id>`), the only names the daemon accepts.

use std::sync::Mutex;

use idprov_proto::{DeviceId, KeyAlg};
use rcgen::{CertificateParams, DistinguishedName, DnType, SanType, SignatureAlgorithm};
use x509_parser::prelude::FromDer;

use crate::error::Error;
use crate::signer::Signer;

/// The device key, as rcgen sees a remote key. A [`Signer`] error is kept so
/// that it can be reported as it was, not as rcgen's generic "remote key error".
struct SignerKey<'a> {
    signer: &'a dyn Signer,
    failure: Mutex<Option<Error>>,
}

impl rcgen::PublicKeyData for SignerKey<'_> {
    fn der_bytes(&self) -> &[u8] {
        // EC: the uncompressed point; RSA: the PKCS#1 RSAPublicKey, which is
        // what the SPKI's BIT STRING holds.
        self.signer.public_key().verify_bytes()
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        match self.signer.alg() {
            KeyAlg::ES256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyAlg::RS256 => &rcgen::PKCS_RSA_SHA256,
        }
    }
}

impl rcgen::SigningKey for SignerKey<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let fail = |e: Error| {
            if let Ok(mut f) = self.failure.lock() {
                *f = Some(e);
            }
            rcgen::Error::RemoteKeyError
        };
        let sig = self.signer.sign(msg).map_err(fail)?;
        match self.signer.alg() {
            // Signers return JWS signatures; X.509 wants ECDSA as DER.
            KeyAlg::ES256 => ecdsa_fixed_to_der(&sig).map_err(fail),
            KeyAlg::RS256 => Ok(sig),
        }
    }
}

/// A PEM CSR for `device`, signed by `signer`.
pub(crate) fn build_csr(signer: &dyn Signer, device: &DeviceId) -> Result<String, Error> {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, device.as_str());
    p.distinguished_name = dn;
    let uri = format!("urn:idprov:device:{device}")
        .try_into()
        .map_err(|e| Error::config_from("device id does not fit a URI SAN", e))?;
    p.subject_alt_names = vec![SanType::URI(uri)];
    let key = SignerKey {
        signer,
        failure: Mutex::new(None),
    };
    let csr = p.serialize_request(&key).map_err(|e| {
        match key.failure.lock().ok().and_then(|mut f| f.take()) {
            Some(own) => own,
            None => Error::signer_from("cannot build the CSR", e),
        }
    })?;
    csr.pem()
        .map_err(|e| Error::signer_from("cannot encode the CSR", e))
}

/// The serial number of a PEM certificate, lower-case hex (as openssl, the
/// daemon's records and its CRL show it, without separators).
pub fn certificate_serial(pem: &str) -> Result<String, Error> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.trim().as_bytes())
        .map_err(|e| Error::key_from("certificate: not PEM", e))?;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&block.contents)
        .map_err(|e| Error::key_from("certificate: not an X.509 certificate", e))?;
    Ok(cert
        .raw_serial()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// `r || s` (32 bytes each) to the DER `SEQUENCE { INTEGER r, INTEGER s }`.
fn ecdsa_fixed_to_der(sig: &[u8]) -> Result<Vec<u8>, Error> {
    if sig.len() != 64 {
        return Err(Error::signer(format!(
            "ES256 signer returned {} bytes, expected 64 (r || s)",
            sig.len()
        )));
    }
    let integer = |half: &[u8]| {
        let trimmed = match half.iter().position(|&b| b != 0) {
            Some(i) => &half[i..],
            None => &half[half.len() - 1..],
        };
        let mut out = vec![0x02];
        // A leading 1 bit would make the INTEGER negative.
        let pad = trimmed[0] & 0x80 != 0;
        out.push((trimmed.len() + usize::from(pad)) as u8);
        if pad {
            out.push(0);
        }
        out.extend_from_slice(trimmed);
        out
    };
    let body = [integer(&sig[..32]), integer(&sig[32..])].concat();
    // At most 2 * 35 bytes: a one-byte length always fits.
    let mut out = vec![0x30, body.len() as u8];
    out.extend_from_slice(&body);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signer::KeySigner;
    use x509_parser::certification_request::X509CertificationRequest;

    fn check(signer: &KeySigner) -> Result<(), Error> {
        let id: DeviceId = "dev-7".parse()?;
        let pem = build_csr(signer, &id)?;
        let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
            .map_err(|e| Error::config_from("test setup", e))?;
        assert_eq!(block.label, "CERTIFICATE REQUEST");
        let (_, csr) = X509CertificationRequest::from_der(&block.contents)
            .map_err(|e| Error::config_from("test setup", e))?;
        // Signed by the device key, over the request info, and verifiable
        // as the daemon verifies it.
        let info = &csr.certification_request_info;
        assert_eq!(info.subject_pki.raw, signer.public_key().spki_der());
        let alg: &dyn aws_lc_rs::signature::VerificationAlgorithm = match signer.alg() {
            KeyAlg::ES256 => &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1,
            KeyAlg::RS256 => &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
        };
        aws_lc_rs::signature::UnparsedPublicKey::new(alg, signer.public_key().verify_bytes())
            .verify(info.raw, &csr.signature_value.data)
            .map_err(|e| Error::signer_from("CSR signature does not verify", e))?;
        assert_eq!(info.subject.to_string(), "CN=dev-7");
        Ok(())
    }

    #[test]
    fn csr_from_an_ec_key_verifies() -> Result<(), Error> {
        // Many times: about half of all ECDSA signatures need DER padding.
        let (s, _) = KeySigner::generate_p256()?;
        for _ in 0..20 {
            check(&s)?;
        }
        Ok(())
    }

    #[test]
    fn csr_from_an_rsa_key_verifies() -> Result<(), Error> {
        use aws_lc_rs::encoding::AsDer;
        let kp = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
            .map_err(|e| Error::key_from("gen", e))?;
        let der = kp.as_der().map_err(|e| Error::key_from("der", e))?;
        let pem = idprov_proto::keys::pem_encode("PRIVATE KEY", der.as_ref());
        check(&KeySigner::from_pem(&pem)?)
    }

    #[test]
    fn der_integers_are_minimal_and_positive() -> Result<(), Error> {
        let mut sig = [0u8; 64];
        sig[31] = 1; // r = 1
        sig[32] = 0x80; // s has its top bit set
        let der = ecdsa_fixed_to_der(&sig)?;
        assert_eq!(&der[..5], &[0x30, 3 + 35, 0x02, 1, 1]);
        assert_eq!(&der[5..8], &[0x02, 33, 0x00]);
        assert!(ecdsa_fixed_to_der(&[0u8; 63]).is_err());
        Ok(())
    }

    #[test]
    fn serial_of_garbage_is_an_error() {
        assert!(certificate_serial("hello").is_err());
    }
}
