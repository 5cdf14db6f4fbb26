//! Verification of a device's proof of possession (security rules 1–3).
//!
//! The algorithm comes from the key the daemon holds, never from the token;
//! `iat`, `exp`, `nbf` and the lifetime are checked here (jsonwebtoken checks
//! none of them the way we need); `aud` names this daemon and the endpoint;
//! `jti` is returned so the caller can make it single-use in the same
//! transaction that acts on the proof.

use idprov_proto::device::{PROOF_TYP, ProofClaims};
use idprov_proto::{DeviceId, KeyAlg, PublicKey};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use crate::config::ProofConfig;

/// Longest compact JWS accepted (an RS256-4096 proof is ~1 KiB).
pub const MAX_PROOF_LEN: usize = 8 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedProof {
    pub jti: String,
    /// How long the daemon must remember `jti` (exp + skew).
    pub remember_until: i64,
    pub kid: Option<String>,
    /// The channel binding the proof claims (RFC 9266), decoded.
    pub cbt: Option<Vec<u8>>,
}

/// The exact reason, for logs and audit only; callers answer
/// `invalid_proof` whatever it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("proof too long")]
    TooLong,
    #[error("malformed header: {0}")]
    Header(String),
    #[error("forbidden header parameter {0}")]
    ForbiddenHeader(&'static str),
    #[error("typ is {0:?}, expected {PROOF_TYP}")]
    Typ(Option<String>),
    #[error("alg {got:?} does not fit the {want} key")]
    Alg { got: Algorithm, want: KeyAlg },
    #[error("kid does not name the presented key")]
    Kid,
    #[error("signature or claims invalid: {0}")]
    Signature(String),
    #[error("sub/iss does not name the device")]
    Subject,
    #[error("aud {0:?} is not this daemon's endpoint")]
    Audience(String),
    #[error("iat is in the future")]
    IssuedInFuture,
    #[error("expired")]
    Expired,
    #[error("nbf is in the future")]
    NotYetValid,
    #[error("exp - iat exceeds the maximum proof lifetime")]
    TooLongLived,
    #[error("jti missing or malformed")]
    Jti,
    #[error("cbt is not base64url of 32 bytes")]
    ChannelBindingMalformed,
    #[error("cbt does not match this TLS connection (relayed proof?)")]
    ChannelBindingMismatch,
    #[error("cbt missing and proof.require_channel_binding is set")]
    ChannelBindingMissing,
}

pub fn verify(
    token: &str,
    key: &PublicKey,
    device_id: &DeviceId,
    audience: &str,
    now: i64,
    cfg: &ProofConfig,
) -> Result<VerifiedProof, ProofError> {
    if token.len() > MAX_PROOF_LEN {
        return Err(ProofError::TooLong);
    }
    let header =
        jsonwebtoken::decode_header(token).map_err(|e| ProofError::Header(e.to_string()))?;
    // Keys named by the token itself are never honoured (rule 1).
    if header.jwk.is_some() {
        return Err(ProofError::ForbiddenHeader("jwk"));
    }
    if header.jku.is_some() {
        return Err(ProofError::ForbiddenHeader("jku"));
    }
    if header.x5c.is_some() {
        return Err(ProofError::ForbiddenHeader("x5c"));
    }
    if header.x5u.is_some() {
        return Err(ProofError::ForbiddenHeader("x5u"));
    }
    if header.crit.is_some() {
        return Err(ProofError::ForbiddenHeader("crit"));
    }
    if header.typ.as_deref() != Some(PROOF_TYP) {
        return Err(ProofError::Typ(header.typ));
    }
    let (alg, decoding) = match key.alg() {
        KeyAlg::ES256 => (
            Algorithm::ES256,
            DecodingKey::from_ec_der(key.verify_bytes()),
        ),
        KeyAlg::RS256 => (
            Algorithm::RS256,
            DecodingKey::from_rsa_der(key.verify_bytes()),
        ),
    };
    if header.alg != alg {
        return Err(ProofError::Alg {
            got: header.alg,
            want: key.alg(),
        });
    }
    if let Some(kid) = &header.kid
        && kid != key.thumbprint()
    {
        return Err(ProofError::Kid);
    }

    let mut v = Validation::new(alg);
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    v.leeway = 0;
    v.required_spec_claims.clear();
    let data = jsonwebtoken::decode::<ProofClaims>(token, &decoding, &v)
        .map_err(|e| ProofError::Signature(e.to_string()))?;
    let c = data.claims;

    if c.sub != device_id.as_str() || c.iss.as_deref().is_some_and(|i| i != c.sub) {
        return Err(ProofError::Subject);
    }
    if c.aud != audience {
        return Err(ProofError::Audience(c.aud.chars().take(100).collect()));
    }
    let skew = cfg.skew.as_secs() as i64;
    let max_life = cfg.max_lifetime.as_secs() as i64;
    if c.iat > now + skew {
        return Err(ProofError::IssuedInFuture);
    }
    if c.exp <= now - skew || c.exp <= c.iat {
        return Err(ProofError::Expired);
    }
    // iat and exp are the sender's i64s: `exp - iat` can overflow, and a
    // wrapped lifetime must not pass (fuzz/corpus/proof/regression-*).
    if c.exp.checked_sub(c.iat).is_none_or(|life| life > max_life) {
        return Err(ProofError::TooLongLived);
    }
    if c.nbf.is_some_and(|nbf| nbf > now + skew) {
        return Err(ProofError::NotYetValid);
    }
    let jti_ok = (16..=128).contains(&c.jti.len()) && c.jti.bytes().all(|b| b.is_ascii_graphic());
    if !jti_ok {
        return Err(ProofError::Jti);
    }
    let cbt = match &c.cbt {
        None => None,
        Some(b) => {
            use base64::Engine;
            let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(b)
                .map_err(|_| ProofError::ChannelBindingMalformed)?;
            if raw.len() != idprov_proto::device::CHANNEL_BINDING_LEN {
                return Err(ProofError::ChannelBindingMalformed);
            }
            Some(raw)
        }
    };
    Ok(VerifiedProof {
        jti: c.jti,
        remember_until: c.exp.saturating_add(skew),
        kid: header.kid,
        cbt,
    })
}

/// The `kid` a proof's header names, read without verifying anything: only
/// to choose which of the device's stored keys to verify it with (renewal
/// into a newer key). `None` when absent or unreadable; [`verify`] then
/// refuses whatever is wrong with the header.
pub fn header_kid(token: &str) -> Option<String> {
    if token.len() > MAX_PROOF_LEN {
        return None;
    }
    jsonwebtoken::decode_header(token).ok()?.kid
}

/// Channel binding (RFC 9266): a proof that names a TLS connection must have
/// come on that connection, so a rogue server cannot relay a device's proof
/// to this daemon. A proof without `cbt` is accepted unless `required`
/// (devices whose TLS stack cannot export keying material).
pub fn check_binding(
    proof: &VerifiedProof,
    connection: Option<&[u8]>,
    required: bool,
) -> Result<(), ProofError> {
    match (&proof.cbt, connection) {
        (Some(claimed), Some(actual)) => {
            if subtle::ConstantTimeEq::ct_eq(claimed.as_slice(), actual).into() {
                Ok(())
            } else {
                Err(ProofError::ChannelBindingMismatch)
            }
        }
        // The connection has no exporter (should not happen with rustls):
        // nothing can be checked, so a claim cannot be honoured.
        (Some(_), None) => Err(ProofError::ChannelBindingMismatch),
        (None, _) if required => Err(ProofError::ChannelBindingMissing),
        (None, _) => Ok(()),
    }
}
