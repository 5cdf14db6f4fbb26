//! Daemon tokens: ES256 JWTs bound to the device key (RFC 7800 `cnf.jkt`),
//! `typ` = `at+jwt` so they can never pass for a device proof, and back.

use idprov_proto::device::{Confirmation, TOKEN_TYP, TokenClaims};
use jsonwebtoken::{Algorithm, Header, Validation};

use crate::pki::SigningKey;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("not a daemon token (typ/alg/kid)")]
    WrongKind,
    #[error("signature or claims invalid: {0}")]
    Invalid(String),
    #[error("issued by another daemon or for another audience")]
    Foreign,
    #[error("expired")]
    Expired,
    #[error("not yet valid")]
    NotYetValid,
}

#[derive(Clone)]
pub struct Issued {
    pub token: String,
    pub claims: TokenClaims,
}

pub fn issue(
    key: &SigningKey,
    daemon_id: &str,
    audience: &str,
    device_id: &str,
    jkt: &str,
    now: i64,
    lifetime_secs: i64,
) -> Result<Issued, jsonwebtoken::errors::Error> {
    let claims = TokenClaims {
        iss: daemon_id.to_string(),
        sub: device_id.to_string(),
        aud: audience.to_string(),
        iat: now,
        nbf: now,
        exp: now + lifetime_secs,
        jti: base64_id(),
        cnf: Confirmation {
            jkt: jkt.to_string(),
        },
    };
    let mut header = Header::new(Algorithm::ES256);
    header.typ = Some(TOKEN_TYP.to_string());
    header.kid = Some(key.kid.clone());
    let token = encode(key, &header, &claims)?;
    Ok(Issued { token, claims })
}

/// The compact JWS, as `jsonwebtoken::encode` builds it, but signed with the
/// key parsed once in [`SigningKey`] rather than re-parsed per token.
fn encode(
    key: &SigningKey,
    header: &Header,
    claims: &TokenClaims,
) -> Result<String, jsonwebtoken::errors::Error> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut token = b64.encode(serde_json::to_vec(header)?);
    token.push('.');
    b64.encode_string(serde_json::to_vec(claims)?, &mut token);
    let signature = key.sign(token.as_bytes()).map_err(|_| {
        jsonwebtoken::errors::Error::from(jsonwebtoken::errors::ErrorKind::InvalidEcdsaKey)
    })?;
    token.push('.');
    b64.encode_string(signature, &mut token);
    Ok(token)
}

/// Check a daemon token's signature and claims (not its store record).
pub fn verify(
    key: &SigningKey,
    daemon_id: &str,
    audience: &str,
    token: &str,
    now: i64,
) -> Result<TokenClaims, TokenError> {
    if token.len() > 8 * 1024 {
        return Err(TokenError::Malformed);
    }
    let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
    if header.alg != Algorithm::ES256
        || header.typ.as_deref() != Some(TOKEN_TYP)
        || header.kid.as_deref() != Some(key.kid.as_str())
    {
        return Err(TokenError::WrongKind);
    }
    let mut v = Validation::new(Algorithm::ES256);
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    v.required_spec_claims.clear();
    let c = jsonwebtoken::decode::<TokenClaims>(token, &key.decoding, &v)
        .map_err(|e| TokenError::Invalid(e.to_string()))?
        .claims;
    if c.iss != daemon_id || c.aud != audience {
        return Err(TokenError::Foreign);
    }
    if c.exp <= now {
        return Err(TokenError::Expired);
    }
    if c.nbf > now + 60 {
        return Err(TokenError::NotYetValid);
    }
    Ok(c)
}

/// 128 random bits, base64url.
pub fn base64_id() -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>())
}
