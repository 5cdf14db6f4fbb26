//! Admin API v1 handlers. Every route authenticates the administrator first
//! ([`AdminAuth`]); the event stream is routed apart because it must not run
//! under the request time limit.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequestParts, Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::{Stream, StreamExt};
use http::StatusCode;
use http::request::Parts;
use idprov_proto::admin::{
    AdminEvent, DecisionRequest, ListQuery, OobUpsertRequest, ProvisioningState, WhoAmI, paths,
};
use idprov_proto::{DeviceId, ErrorCode};
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use super::ConnInfo;
use super::error::ApiError;
use super::extract::{JsonBody, Query};
use crate::Daemon;
use crate::admin_ops::Actor;

pub fn routes() -> Router<Arc<Daemon>> {
    Router::new()
        .route(paths::WHOAMI, get(whoami))
        .route(paths::OOB, get(oob_list).post(oob_upsert))
        .route(
            &format!("{}/{{id}}", paths::OOB),
            axum::routing::delete(oob_remove),
        )
        .route(paths::PENDING, get(pending_list))
        .route(&format!("{}/{{id}}/approve", paths::PENDING), post(approve))
        .route(&format!("{}/{{id}}/reject", paths::PENDING), post(reject))
        .route(paths::DEVICES, get(device_list))
        .route(
            &format!("{}/{{id}}", paths::DEVICES),
            get(device_get).delete(device_remove),
        )
        .route(
            &format!("{}/{{id}}/revoke", paths::DEVICES),
            post(device_revoke),
        )
        .route(paths::PROVISIONING, get(provisioning).put(set_provisioning))
        .route(paths::AUDIT, get(audit))
        .route(paths::CLOCK, get(clock))
        .route(paths::CLOCK_ACCEPT, post(clock_accept))
}

pub fn stream_routes() -> Router<Arc<Daemon>> {
    Router::new().route(paths::EVENTS, get(events))
}

/// An authenticated administrator.
pub struct AdminAuth(pub Actor);

impl FromRequestParts<Arc<Daemon>> for AdminAuth {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, d: &Arc<Daemon>) -> Result<Self, ApiError> {
        let source = parts
            .extensions
            .get::<ConnInfo>()
            .map(|c| c.peer.ip().to_string())
            .unwrap_or_default();
        let token = parts
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token)
            .ok_or_else(ApiError::unauthorized)?;
        match d.admins.authenticate(token) {
            Some(name) => Ok(AdminAuth(Actor { name, source })),
            None => {
                tracing::warn!(%source, "admin authentication failed");
                Err(ApiError::unauthorized())
            }
        }
    }
}

/// The token of an `Authorization` value, parsed exactly as
/// docs/protocol.md says: the scheme `Bearer` (case-insensitive, as RFC 7235
/// makes every auth scheme), exactly one space, then the token with no
/// whitespace in or around it. Nothing is trimmed: a credential that only
/// passes once cleaned up is not the credential that was issued.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_at_checked(6)?;
    let token = rest.strip_prefix(' ')?;
    let clean = !token.is_empty() && !token.bytes().any(|b| b.is_ascii_whitespace());
    (scheme.eq_ignore_ascii_case("Bearer") && clean).then_some(token)
}

/// A device id from the path, parsed by its grammar.
fn device_id(raw: &str) -> Result<DeviceId, ApiError> {
    raw.parse()
        .map_err(|e| ApiError::bad_request(format!("device id: {e}")))
}

async fn whoami(State(d): State<Arc<Daemon>>, AdminAuth(a): AdminAuth) -> Json<WhoAmI> {
    Json(WhoAmI {
        name: a.name,
        daemon_id: d.daemon_id().to_string(),
    })
}

async fn oob_list(
    State(d): State<Arc<Daemon>>,
    AdminAuth(_): AdminAuth,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    Ok(Json(d.admin.list_oob(q).await?).into_response())
}

async fn oob_upsert(
    State(d): State<Arc<Daemon>>,
    AdminAuth(a): AdminAuth,
    JsonBody(req): JsonBody<OobUpsertRequest>,
) -> Result<Response, ApiError> {
    Ok(Json(d.admin.upsert_oob(req, a).await?).into_response())
}

async fn oob_remove(
    State(d): State<Arc<Daemon>>,
    AdminAuth(a): AdminAuth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    d.admin.remove_oob(device_id(&id)?, a).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn pending_list(
    State(d): State<Arc<Daemon>>,
    AdminAuth(_): AdminAuth,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    Ok(Json(d.admin.list_pending(q).await?).into_response())
}

async fn approve(
    State(d): State<Arc<Daemon>>,
    AdminAuth(a): AdminAuth,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<DecisionRequest>,
) -> Result<Response, ApiError> {
    Ok(Json(d.admin.approve(device_id(&id)?, req.revision, a).await?).into_response())
}

async fn reject(
    State(d): State<Arc<Daemon>>,
    AdminAuth(a): AdminAuth,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<DecisionRequest>,
) -> Result<Response, ApiError> {
    Ok(Json(
        d.admin
            .reject(device_id(&id)?, req.revision, req.reason, a)
            .await?,
    )
    .into_response())
}

async fn device_list(
    State(d): State<Arc<Daemon>>,
    AdminAuth(_): AdminAuth,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    Ok(Json(d.admin.list_devices(q).await?).into_response())
}

async fn device_get(
    State(d): State<Arc<Daemon>>,
    AdminAuth(_): AdminAuth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(d.admin.get_device(device_id(&id)?).await?).into_response())
}

async fn device_revoke(
    State(d): State<Arc<Daemon>>,
    AdminAuth(a): AdminAuth,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<DecisionRequest>,
) -> Result<Response, ApiError> {
    Ok(Json(
        d.admin
            .revoke_device(device_id(&id)?, req.revision, req.reason, a)
            .await?,
    )
    .into_response())
}

async fn device_remove(
    State(d): State<Arc<Daemon>>,
    AdminAuth(a): AdminAuth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    d.admin.remove_device(device_id(&id)?, a).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn provisioning(
    State(d): State<Arc<Daemon>>,
    AdminAuth(_): AdminAuth,
) -> Result<Response, ApiError> {
    Ok(Json(d.admin.provisioning_state().await?).into_response())
}

async fn set_provisioning(
    State(d): State<Arc<Daemon>>,
    AdminAuth(a): AdminAuth,
    JsonBody(req): JsonBody<ProvisioningState>,
) -> Result<Response, ApiError> {
    Ok(Json(d.admin.set_provisioning(req, a).await?).into_response())
}

async fn clock(
    State(d): State<Arc<Daemon>>,
    AdminAuth(_): AdminAuth,
) -> Result<Response, ApiError> {
    Ok(Json(d.clock_state().await?).into_response())
}

async fn clock_accept(
    State(d): State<Arc<Daemon>>,
    AdminAuth(a): AdminAuth,
) -> Result<Response, ApiError> {
    Ok(Json(d.accept_clock(a).await?).into_response())
}

async fn audit(
    State(d): State<Arc<Daemon>>,
    AdminAuth(_): AdminAuth,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    Ok(Json(d.admin.audit_page(q).await?).into_response())
}

/// Server-sent events: `event: <name>` and `data: <AdminEvent JSON>`.
/// A subscriber that falls behind gets a `lagged` event and should reload.
async fn events(
    State(d): State<Arc<Daemon>>,
    AdminAuth(a): AdminAuth,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let permit =
        d.event_streams.clone().try_acquire_owned().map_err(|_| {
            ApiError::new(ErrorCode::Busy, "too many event streams are open").retry(10)
        })?;
    tracing::info!(admin = %a.name, "event stream opened");
    let rx = d.events.subscribe();
    let stream = BroadcastStream::new(rx)
        .take_until(d.shutdown.clone().cancelled_owned())
        .map(move |item| {
            let _held = &permit; // released when the stream is dropped
            let ev = match item {
                Ok(ev) => ev,
                Err(BroadcastStreamRecvError::Lagged(n)) => AdminEvent::Lagged { missed: n },
            };
            let data = serde_json::to_string(&ev).unwrap_or_else(|_| "{}".into());
            Ok(Event::default().event(ev.name()).data(data))
        });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
