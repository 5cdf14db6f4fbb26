//! How the device trusts the daemon: a CA pinned out of band (its SHA-256
//! fingerprint or the certificate itself), or trust on first use.
//!
//! DNS-SD is unauthenticated (security rule 10), so the daemon is trusted only
//! through its CA. Each daemon has its own private CA, and its server
//! certificate must chain to it with the serverAuth usage. The host name or IP
//! in the certificate is checked but a mismatch is only logged: on a LAN the
//! address the device reaches the daemon by (a DHCP lease, an mDNS answer)
//! changes, while the pinned per-daemon CA is what identifies the daemon.

use std::sync::Arc;

use idprov_proto::keys::sha256_hex;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;

use crate::error::Error;

/// What the device trusts.
#[derive(Debug, Clone)]
pub enum Trust {
    /// The lower-case hex SHA-256 of the CA certificate (DER), as idprovd
    /// prints it on first start. The certificate is fetched from the daemon
    /// (`GET /idprov/v1/ca`) and kept only if its fingerprint matches.
    CaFingerprint(String),
    /// The CA certificate itself, PEM.
    CaCertPem(String),
    /// Explicit trust on first use: the CA of the first daemon reached is
    /// pinned in the state directory and required from then on.
    TrustOnFirstUse,
    /// The device's setup code (printed on it, or typed): no CA needed. The
    /// daemon that completes the SPAKE2+ exchange over the code on the same
    /// TLS connection is the one whose CA is pinned (setup.rs); any other
    /// is refused. The code does not print.
    SetupCode(idprov_pake::SetupCode),
}

/// A CA the client has decided to trust.
#[derive(Clone)]
pub struct PinnedCa {
    der: Vec<u8>,
    fingerprint: String,
}

impl std::fmt::Debug for PinnedCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinnedCa")
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

impl PinnedCa {
    /// Parse the first certificate of a PEM text.
    pub fn from_pem(pem: &str) -> Result<Self, Error> {
        let cert = CertificateDer::pem_slice_iter(pem.as_bytes())
            .next()
            .ok_or_else(|| Error::untrusted("no certificate in the CA PEM"))?
            .map_err(|e| Error::untrusted_from("CA PEM unreadable", e))?;
        Ok(Self::from_der(cert.as_ref().to_vec()))
    }

    pub fn from_der(der: Vec<u8>) -> Self {
        let fingerprint = sha256_hex(&der);
        PinnedCa { der, fingerprint }
    }

    /// Lower-case hex SHA-256 of the DER.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    pub fn to_pem(&self) -> String {
        idprov_proto::keys::pem_encode("CERTIFICATE", &self.der)
    }

    /// A TLS configuration that accepts only servers chaining to this CA.
    pub fn tls_config(&self) -> Result<rustls::ClientConfig, Error> {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from(self.der.clone()))
            .map_err(|e| Error::untrusted_from("pinned CA is not usable", e))?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = PinnedVerifier {
            roots: Arc::new(roots),
            algs: provider.signature_verification_algorithms,
        };
        client_config(provider, Arc::new(verifier))
    }
}

/// Normalise a fingerprint given by a person: hex with optional `:`
/// separators, any case.
pub fn normalize_fingerprint(fp: &str) -> Result<String, Error> {
    let hex: String = fp
        .trim()
        .chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::config(
            "CA fingerprint must be 64 hex digits (SHA-256 of the CA certificate)",
        ));
    }
    Ok(hex)
}

/// A TLS configuration that accepts any server certificate. Used for one
/// thing only: downloading the daemon's public CA certificate, which is then
/// compared with the pinned fingerprint (or, on first use, pinned) before
/// anything is sent to the daemon.
pub(crate) fn bootstrap_tls_config() -> Result<rustls::ClientConfig, Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = AnyCert {
        algs: provider.signature_verification_algorithms,
    };
    client_config(provider, Arc::new(verifier))
}

fn client_config(
    provider: Arc<CryptoProvider>,
    verifier: Arc<dyn ServerCertVerifier>,
) -> Result<rustls::ClientConfig, Error> {
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::config_from("TLS protocol versions", e))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

#[derive(Debug)]
struct PinnedVerifier {
    roots: Arc<RootCertStore>,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        // Chain, validity period and the serverAuth usage: this is the check
        // that identifies the daemon.
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algs.all,
        )?;
        if let Err(e) = rustls::client::verify_server_name(&cert, server_name) {
            tracing::debug!(
                server = ?server_name,
                "daemon certificate does not name this address ({e}); accepted, it chains to the pinned CA"
            );
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

#[derive(Debug)]
struct AnyCert {
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_normalised() -> Result<(), Error> {
        let fp = "AB:".repeat(31) + "AB";
        assert_eq!(normalize_fingerprint(&fp)?, "ab".repeat(32));
        assert!(normalize_fingerprint("abc").is_err());
        assert!(normalize_fingerprint(&"zz".repeat(32)).is_err());
        Ok(())
    }

    #[test]
    fn garbage_ca_pem_is_an_error() {
        assert!(PinnedCa::from_pem("nothing here").is_err());
    }
}
