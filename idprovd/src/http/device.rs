//! Device API v1 handlers (docs/protocol.md, "Device API").

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Extension, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use idprov_proto::device::{
    InfoResponse, ProvisionRequest, ProvisionResponse, RenewRequest, TokenStatusRequest, paths,
};
use idprov_proto::{API_PATH, PROTOCOL_VERSION};

use super::ConnInfo;
use super::error::ApiError;
use super::extract::JsonBody;
use crate::Daemon;
use idprovd_core::provision::Provisioned;

pub fn routes() -> Router<Arc<Daemon>> {
    Router::new()
        .route(paths::PROVISION, post(provision))
        .route(paths::RENEW, post(renew))
        .route(paths::INFO, get(info))
        .route(paths::CA, get(ca))
        .route(paths::JWKS, get(jwks))
        .route(paths::TOKEN_STATUS, post(token_status))
        .route(paths::HEALTHZ, get(super::metrics::healthz))
}

async fn provision(
    State(d): State<Arc<Daemon>>,
    Extension(conn): Extension<ConnInfo>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<ProvisionRequest>,
) -> Result<Response, ApiError> {
    // The per-source limit ran before the body was read
    // (ratelimit::limit_sources); now the per-device one, then the decision.
    let id = req.device_id.to_string();
    d.devices.limit_device(&id)?;
    let binding = conn.channel_binding.as_ref().map(|b| &b[..]);
    let wait = prefer_wait(&headers);
    let answer = d
        .devices
        .provision_waiting(req, conn.peer, binding, wait)
        .await;
    super::ratelimit::after_request(&d, &conn, Some(&id), &answer);
    let Provisioned { answer, waited } = answer?;
    let mut r = match &answer {
        ProvisionResponse::Approved(_) => (StatusCode::OK, Json(answer)).into_response(),
        ProvisionResponse::Pending(p) => {
            let mut r = (StatusCode::ACCEPTED, Json(&answer)).into_response();
            if let Ok(v) = HeaderValue::from_str(&p.retry_after_secs.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
    };
    // RFC 7240: say that the wait was honoured, and for how long at most.
    if let Some(w) = waited
        && let Ok(v) = HeaderValue::from_str(&format!("wait={}", w.as_secs_f64().ceil()))
    {
        r.headers_mut().insert(PREFERENCE_APPLIED, v);
    }
    Ok(r)
}

const PREFERENCE_APPLIED: header::HeaderName =
    header::HeaderName::from_static("preference-applied");

/// The `wait` preference of RFC 7240 `Prefer` headers (seconds), if any:
/// `Prefer: wait=25`, possibly among other preferences or headers.
fn prefer_wait(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|pref| {
            // A preference is `token [= word] *( ";" parameter )`.
            let pref = pref.split(';').next()?.trim();
            let (name, value) = pref.split_once('=')?;
            if !name.trim().eq_ignore_ascii_case("wait") {
                return None;
            }
            value.trim().trim_matches('"').parse::<u64>().ok()
        })
        .next()
        .map(Duration::from_secs)
}

async fn renew(
    State(d): State<Arc<Daemon>>,
    Extension(conn): Extension<ConnInfo>,
    JsonBody(req): JsonBody<RenewRequest>,
) -> Result<Json<ProvisionResponse>, ApiError> {
    let binding = conn.channel_binding.as_ref().map(|b| &b[..]);
    // The device is known only once the token is verified; renewals are
    // limited per source (and a failed one costs more).
    let creds = d.devices.renew(req, conn.peer, binding).await;
    super::ratelimit::after_request(&d, &conn, None, &creds);
    let creds = creds?;
    Ok(Json(ProvisionResponse::Approved(creds)))
}

async fn info(State(d): State<Arc<Daemon>>) -> Json<InfoResponse> {
    Json(InfoResponse {
        protocol: PROTOCOL_VERSION.to_string(),
        daemon_id: d.daemon_id().to_string(),
        api_path: API_PATH.to_string(),
        ca_fingerprint: d.pki.ca_fingerprint.clone(),
        time: d.now(),
        proof_max_lifetime_secs: d.cfg.proof.max_lifetime.as_secs(),
        proof_skew_secs: d.cfg.proof.skew.as_secs(),
        token_audience: d.cfg.tokens.audience.clone(),
    })
}

async fn ca(State(d): State<Arc<Daemon>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        d.pki.ca_cert_pem.clone(),
    )
        .into_response()
}

async fn jwks(State(d): State<Arc<Daemon>>) -> Response {
    let body = serde_json::json!({ "keys": [d.pki.signing.jwk.clone()] });
    ([(header::CACHE_CONTROL, "max-age=300")], Json(body)).into_response()
}

async fn token_status(
    State(d): State<Arc<Daemon>>,
    JsonBody(req): JsonBody<TokenStatusRequest>,
) -> Result<Response, ApiError> {
    Ok(Json(d.devices.token_status(req.token).await?).into_response())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn wait_of(values: &[&str]) -> Option<u64> {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("prefer", HeaderValue::from_str(v).unwrap());
        }
        prefer_wait(&h).map(|d| d.as_secs())
    }

    #[test]
    fn the_wait_preference_is_read_as_rfc_7240_writes_it() {
        assert_eq!(wait_of(&["wait=25"]), Some(25));
        assert_eq!(wait_of(&["respond-async, Wait = 10"]), Some(10));
        assert_eq!(wait_of(&["return=minimal", "wait=\"7\"; x=y"]), Some(7));
        assert_eq!(wait_of(&["wait=-1"]), None);
        assert_eq!(wait_of(&["wait=soon"]), None);
        assert_eq!(wait_of(&["waiting=3"]), None);
        assert_eq!(wait_of(&[]), None);
    }
}
