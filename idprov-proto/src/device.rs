//! The device protocol: provisioning, renewal, discovery metadata, and the
//! claims of the device's proof and of the daemon's token.

use serde::{Deserialize, Serialize};

use crate::ids::{DeviceId, MacAddr};
use crate::keys::KeyFormat;
use crate::secret::Secret;

pub mod paths {
    pub const PROVISION: &str = "/idprov/v1/provision";
    pub const RENEW: &str = "/idprov/v1/renew";
    pub const INFO: &str = "/idprov/v1/info";
    pub const CA: &str = "/idprov/v1/ca";
    pub const TOKEN_STATUS: &str = "/idprov/v1/token/status";
    pub const JWKS: &str = "/.well-known/jwks.json";
    pub const HEALTHZ: &str = "/healthz";
    /// Certificate revocation list of the daemon CA (DER; PEM on request).
    pub const CRL: &str = "/idprov/v1/crl";
    /// A device adds a key, signed by one of its current keys.
    pub const KEYS: &str = "/idprov/v1/keys";
    /// Renewal authenticated by the device's client certificate (mTLS).
    pub const RENEW_MTLS: &str = "/idprov/v1/renew/mtls";
}

/// `typ` header of a device's proof of possession.
pub const PROOF_TYP: &str = "idprov-proof+jwt";
/// `typ` header of a daemon-issued token (RFC 9068 access-token type).
pub const TOKEN_TYP: &str = "at+jwt";

/// The endpoint a proof is made for; part of its audience.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProofEndpoint {
    Provision,
    Renew,
    /// `POST /idprov/v1/keys` (both the current key's and the new key's proof).
    AddKey,
}

impl ProofEndpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            ProofEndpoint::Provision => "provision",
            ProofEndpoint::Renew => "renew",
            ProofEndpoint::AddKey => "add-key",
        }
    }
}

/// The exact `aud` a proof must carry: `idprov:<daemon_id>:<endpoint>`.
/// It binds the proof to one daemon and one endpoint, so a proof made for
/// another daemon (or for renewal) is useless here.
pub fn proof_audience(daemon_id: &str, endpoint: ProofEndpoint) -> String {
    format!("idprov:{daemon_id}:{}", endpoint.as_str())
}

/// `POST /idprov/v1/provision`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisionRequest {
    pub device_id: DeviceId,
    /// PEM text of the device's public key in one of the four formats.
    pub public_key: String,
    /// Optional; when given it must match the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_format: Option<KeyFormat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
    /// One-time secret from the OOB list, if the device was given one.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "Secret::serialize_exposed_opt"
    )]
    pub secret: Option<Secret>,
    /// Compact JWS signed with the device key; claims [`ProofClaims`].
    pub proof: String,
    /// Optional PKCS#10 CSR (PEM) signed by a key of this device: the answer
    /// then carries a client certificate (docs/x509.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csr: Option<String>,
}

/// `POST /idprov/v1/renew`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    /// The current, unexpired daemon token.
    pub token: String,
    /// A fresh proof made with the key the token is bound to.
    pub proof: String,
    /// Optional PKCS#10 CSR (PEM), as in [`ProvisionRequest::csr`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csr: Option<String>,
}

/// Answer of provision (200 approved / 202 pending) and renew (200).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ProvisionResponse {
    Approved(Credentials),
    Pending(PendingAnswer),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Credentials {
    pub device_id: DeviceId,
    /// The daemon token (ES256 JWT, `typ` = `at+jwt`).
    pub token: String,
    /// Unix seconds.
    pub issued_at: i64,
    pub expires_at: i64,
    /// When the device should renew (half of the lifetime), unix seconds.
    pub renew_after: i64,
    /// Thumbprint of the device key the token is bound to (`cnf.jkt`).
    pub key_id: String,
    /// The client certificate (PEM) issued for the request's CSR, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    /// The issuing CA chain (PEM, leaf's issuer first) when a certificate
    /// is present.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ca_chain: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PendingAnswer {
    pub device_id: DeviceId,
    /// Ask again after this many seconds (also in `Retry-After`).
    pub retry_after_secs: u64,
    /// The code an administrator sees next to the request.
    pub verification_code: String,
}

/// `GET /idprov/v1/info`: what a device needs before its first proof.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InfoResponse {
    pub protocol: String,
    pub daemon_id: String,
    pub api_path: String,
    /// SHA-256 of the CA certificate (DER), lower-case hex.
    pub ca_fingerprint: String,
    /// The server's clock, unix seconds, for devices without a real-time clock.
    pub time: i64,
    pub proof_max_lifetime_secs: u64,
    pub proof_skew_secs: u64,
    pub token_audience: String,
}

/// Claims of the device's proof of possession (header `typ` = [`PROOF_TYP`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProofClaims {
    /// The device ID.
    pub sub: String,
    /// [`proof_audience`] for this daemon and endpoint.
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
    /// Unique per proof, 16–128 characters.
    pub jti: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// Optional issuer; when present it must equal `sub`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Channel binding (RFC 9266): base64url (no padding) of the 32-byte TLS
    /// exporter `EXPORTER-Channel-Binding` of the connection the proof is
    /// sent on. When present the daemon requires it to match, so a proof
    /// relayed over another TLS connection is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cbt: Option<String>,
}

/// RFC 9266 exporter label and length of [`ProofClaims::cbt`].
pub const CHANNEL_BINDING_LABEL: &[u8] = b"EXPORTER-Channel-Binding";
pub const CHANNEL_BINDING_LEN: usize = 32;

/// Claims of a daemon token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TokenClaims {
    /// The daemon id.
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: String,
    pub cnf: Confirmation,
}

/// RFC 7800 confirmation: the thumbprint of the key the token is bound to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Confirmation {
    pub jkt: String,
}

/// `POST /idprov/v1/token/status`: may a hub service still honour this token?
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenStatusRequest {
    pub token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TokenStatusResponse {
    pub active: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<DeviceId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    /// Why not active: `expired`, `unknown`, `device_revoked`,
    /// `device_removed`, `key_removed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}
