//! The setup-code exchange (docs/protocol.md, "Setup codes"): a device that
//! has no CA pinned proves it knows its setup code with SPAKE2+ (RFC 9383),
//! and learns the daemon's CA fingerprint from a confirmed session bound to
//! its TLS connection. Every binary field is base64url without padding.

use serde::{Deserialize, Serialize};

use crate::device::{ProvisionRequest, ProvisionResponse};
use crate::ids::DeviceId;

pub mod paths {
    /// Every setup-code path starts so.
    pub const PREFIX: &str = "/idprov/v1/setup/";
    /// Step 0: the KDF salt and cost for a device's code.
    pub const PARAMS: &str = "/idprov/v1/setup/params";
    /// Step 1: shareP in, shareV and confirmV out.
    pub const START: &str = "/idprov/v1/setup/start";
    /// Step 2: confirmP and the provisioning request in, the answer and the
    /// MACed CA out.
    pub const FINISH: &str = "/idprov/v1/setup/finish";
}

/// The SPAKE2+ Context prefix; the connection's RFC 9266 `tls-exporter`
/// value (32 bytes) follows it.
pub const CONTEXT_PREFIX: &[u8] = b"idprov setup-code v1";
/// HKDF-SHA256 info that derives, from K_shared, the key that MACs the CA.
pub const CA_MAC_INFO: &[u8] = b"idprov setup-code v1 CA";

/// `POST /idprov/v1/setup/params`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamsRequest {
    pub device_id: DeviceId,
}

/// The Argon2id salt and cost the device derives (w0, w1) with.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ParamsResponse {
    /// Always `argon2id` in this version.
    pub kdf: String,
    pub salt: String,
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

/// `POST /idprov/v1/setup/start`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    pub device_id: DeviceId,
    /// X = x·P + w0·M, uncompressed SEC1 (65 bytes).
    pub share_p: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StartResponse {
    /// Names this exchange in step 2 (16 random bytes).
    pub exchange: String,
    /// Y = y·P + w0·N, uncompressed SEC1 (65 bytes).
    pub share_v: String,
    /// HMAC(K_confirmV, shareP).
    pub confirm_v: String,
    /// For the proof in step 2 (its audience), like `GET /info`.
    pub daemon_id: String,
    /// The daemon's time (unix seconds), for the proof's `iat`.
    pub time: i64,
    pub proof_max_lifetime_secs: u64,
}

/// `POST /idprov/v1/setup/finish`, on the same TLS connection as step 1.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinishRequest {
    pub exchange: String,
    /// HMAC(K_confirmP, shareV).
    pub confirm_p: String,
    /// The device's key, proof (bound to this connection) and optional CSR,
    /// as for `POST /provision`.
    pub provision: ProvisionRequest,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FinishResponse {
    /// The daemon's CA certificate (PEM), to pin.
    pub ca_pem: String,
    /// Lower-case hex SHA-256 of the CA certificate's DER.
    pub ca_fingerprint: String,
    /// HMAC-SHA256(HKDF-Expand(K_shared, [`CA_MAC_INFO`], 32),
    /// `ca_fingerprint` as ASCII): only the party that completed the
    /// exchange can make it.
    pub ca_mac: String,
    /// The provisioning answer (approved or pending), as `/provision` gives.
    pub answer: ProvisionResponse,
}
