//! Device API v1 handlers (docs/protocol.md, "Device API").

use std::sync::Arc;

use axum::extract::{Extension, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http::{HeaderValue, StatusCode, header};
use idprov_proto::device::{
    InfoResponse, ProvisionRequest, ProvisionResponse, RenewRequest, TokenStatusRequest, paths,
};
use idprov_proto::{API_PATH, PROTOCOL_VERSION};

use super::ConnInfo;
use super::error::ApiError;
use super::extract::JsonBody;
use crate::Daemon;

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
    JsonBody(req): JsonBody<ProvisionRequest>,
) -> Result<Response, ApiError> {
    // The per-source limit ran before the body was read
    // (ratelimit::limit_sources); now the per-device one, then the decision.
    let id = req.device_id.to_string();
    d.devices.limit_device(&id)?;
    let binding = conn.channel_binding.as_ref().map(|b| &b[..]);
    let answer = d.devices.provision(req, conn.peer, binding).await;
    super::ratelimit::after_request(&d, &conn, Some(&id), &answer);
    let answer = answer?;
    Ok(match &answer {
        ProvisionResponse::Approved(_) => (StatusCode::OK, Json(answer)).into_response(),
        ProvisionResponse::Pending(p) => {
            let mut r = (StatusCode::ACCEPTED, Json(&answer)).into_response();
            if let Ok(v) = HeaderValue::from_str(&p.retry_after_secs.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
    })
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
