//! Admin calls of the X.509 lifecycle (docs/x509.md): device keys,
//! certificates, revocation, re-provisioning, registry CAs and the CRL.

use idprov_proto::DeviceId;
use idprov_proto::admin::paths::DEVICES;
use idprov_proto::admin::{DecisionRequest, DeviceView};
use idprov_proto::x509::{
    AdminKeyAddRequest, CertificateView, CrlInfo, KeysResponse, RegistryCaAddRequest,
    RegistryCaView, ReprovisionRequest, admin_paths,
};
use reqwest::Method;

use super::{AdminClient, AdminError};

/// Key thumbprints and serials are base64url / hex: keep only those
/// characters, so nothing can leave the path segment.
fn segment(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        .collect()
}

impl AdminClient {
    pub async fn key_add(
        &self,
        id: &DeviceId,
        req: &AdminKeyAddRequest,
    ) -> Result<KeysResponse, AdminError> {
        self.call(
            Method::POST,
            &format!("{DEVICES}/{id}/keys"),
            None,
            Some(req),
        )
        .await
    }

    /// Remove a key: it never comes back, and its certificates are revoked.
    pub async fn key_remove(&self, id: &DeviceId, kid: &str) -> Result<KeysResponse, AdminError> {
        self.call::<(), _>(
            Method::DELETE,
            &format!("{DEVICES}/{id}/keys/{}", segment(kid)),
            None,
            None,
        )
        .await
    }

    /// Revoke a key (as compromised): like remove, audited as a revocation.
    pub async fn key_revoke(
        &self,
        id: &DeviceId,
        kid: &str,
        reason: Option<String>,
    ) -> Result<KeysResponse, AdminError> {
        let body = DecisionRequest {
            revision: None,
            reason,
        };
        self.call(
            Method::POST,
            &format!("{DEVICES}/{id}/keys/{}/revoke", segment(kid)),
            None,
            Some(&body),
        )
        .await
    }

    pub async fn device_certificates(
        &self,
        id: &DeviceId,
    ) -> Result<Vec<CertificateView>, AdminError> {
        self.call::<(), _>(
            Method::GET,
            &format!("{DEVICES}/{id}/certificates"),
            None,
            None,
        )
        .await
    }

    pub async fn certificate(&self, serial: &str) -> Result<CertificateView, AdminError> {
        self.call::<(), _>(
            Method::GET,
            &format!("{}/{}", admin_paths::CERTIFICATES, segment(serial)),
            None,
            None,
        )
        .await
    }

    pub async fn certificate_revoke(
        &self,
        serial: &str,
        reason: Option<String>,
    ) -> Result<CertificateView, AdminError> {
        let body = DecisionRequest {
            revision: None,
            reason,
        };
        self.call(
            Method::POST,
            &format!("{}/{}/revoke", admin_paths::CERTIFICATES, segment(serial)),
            None,
            Some(&body),
        )
        .await
    }

    /// After a factory reset: retire every key and certificate of the
    /// device and bind it to `req.public_key`.
    pub async fn reprovision(
        &self,
        id: &DeviceId,
        req: &ReprovisionRequest,
    ) -> Result<DeviceView, AdminError> {
        self.call(
            Method::POST,
            &format!("{DEVICES}/{id}/reprovision"),
            None,
            Some(req),
        )
        .await
    }

    pub async fn registry_cas(&self) -> Result<Vec<RegistryCaView>, AdminError> {
        self.call::<(), _>(Method::GET, admin_paths::REGISTRY_CAS, None, None)
            .await
    }

    pub async fn registry_ca_add(&self, pem: &str) -> Result<RegistryCaView, AdminError> {
        let body = RegistryCaAddRequest {
            pem: pem.to_string(),
        };
        self.call(Method::POST, admin_paths::REGISTRY_CAS, None, Some(&body))
            .await
    }

    pub async fn registry_ca_remove(&self, fingerprint: &str) -> Result<(), AdminError> {
        self.send::<()>(
            Method::DELETE,
            &format!("{}/{}", admin_paths::REGISTRY_CAS, segment(fingerprint)),
            None,
            None,
        )
        .await
        .map(drop)
    }

    pub async fn crl_info(&self) -> Result<CrlInfo, AdminError> {
        self.call::<(), _>(Method::GET, admin_paths::CRL, None, None)
            .await
    }
}
