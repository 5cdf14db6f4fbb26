//! The X.509 and key-lifecycle part of the protocol (F11–F13): device key
//! rotation, renewal over mutual TLS, and the administrator's calls for keys,
//! certificates, revocation, re-provisioning and registry CAs.
//! `docs/x509.md` describes the endpoints.

use serde::{Deserialize, Serialize};

use crate::admin::DeviceKeyView;
use crate::ids::{DeviceId, MacAddr};
use crate::keys::KeyFormat;

/// Most keys a device may hold at once (Cloud IoT Core's limit).
pub const MAX_DEVICE_KEYS: usize = 3;

/// `POST /idprov/v1/keys`: a device adds a key. `proof` is made with one of
/// its current keys (its `kid` names it), `key_proof` with the new key; both
/// for [`crate::device::ProofEndpoint::AddKey`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddKeyRequest {
    pub device_id: DeviceId,
    pub proof: String,
    /// The new public key (PEM, one of the four formats).
    pub public_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_format: Option<KeyFormat>,
    /// Proof of possession of the new key.
    pub key_proof: String,
    /// When the new key stops being accepted (unix seconds); none: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

/// Answer of add-key and of the admin key calls: the device's keys now.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KeysResponse {
    pub device_id: DeviceId,
    pub keys: Vec<DeviceKeyView>,
    pub revision: u64,
}

/// `POST /idprov/v1/renew/mtls` (the body may also be empty): renewal
/// authenticated by the client certificate. Without a CSR the certificate is
/// re-issued for the same key.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MtlsRenewRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csr: Option<String>,
}

pub mod admin_paths {
    /// `GET` a device's certificates: `{DEVICES}/{id}/certificates`.
    pub const CERTIFICATES: &str = "/idprov/v1/admin/certificates";
    pub const REGISTRY_CAS: &str = "/idprov/v1/admin/registry-cas";
    /// `GET`: CRL number, times and size.
    pub const CRL: &str = "/idprov/v1/admin/crl";
}

/// `POST /admin/devices/{id}/keys`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminKeyAddRequest {
    pub public_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_format: Option<KeyFormat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    /// The device revision the administrator saw (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
}

/// `POST /admin/devices/{id}/reprovision`: after a factory reset, retire
/// every key (and certificate) of the device and bind it to a new key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReprovisionRequest {
    pub public_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_format: Option<KeyFormat>,
    /// Replaces the recorded MAC when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
    /// Required: why (recorded in the audit log).
    pub reason: String,
}

/// One issued certificate, as the store records it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CertificateView {
    /// Lower-case hex of the serial number.
    pub serial: String,
    pub device_id: DeviceId,
    /// Thumbprint of the certified key.
    pub kid: String,
    pub issued_at: i64,
    pub not_before: i64,
    pub not_after: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_reason: Option<String>,
    pub pem: String,
}

/// A registered CA that X.509-wrapped device keys must chain to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RegistryCaView {
    /// Lower-case hex SHA-256 of the certificate DER.
    pub fingerprint: String,
    pub subject: String,
    pub not_before: i64,
    pub not_after: i64,
    pub added_at: i64,
    pub added_by: String,
    pub pem: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryCaAddRequest {
    /// One CA certificate (PEM).
    pub pem: String,
}

/// `GET /admin/crl`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CrlInfo {
    pub number: u64,
    pub this_update: i64,
    pub next_update: i64,
    /// Serials listed.
    pub revoked: u64,
    pub der_bytes: u64,
}
