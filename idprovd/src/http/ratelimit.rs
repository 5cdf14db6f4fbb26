//! The device API's request limits on the wire: the per-source bucket is
//! charged before a body is read, and a failed answer costs its sender more
//! (the buckets themselves are `crate::ratelimit`).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use idprov_proto::ErrorCode;
use idprov_proto::device::paths;

use super::ConnInfo;
use super::error::ApiError;
use crate::Daemon;

/// Middleware: the per-source limit of `/provision`, `/renew` and the
/// setup-code exchange, checked
/// before the body is read (a limited flood costs as little as possible),
/// and the failure cost charged from the answer's error code.
pub async fn limit_sources(State(d): State<Arc<Daemon>>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let limited = path == paths::PROVISION
        || path == paths::RENEW
        || path.starts_with(idprov_proto::setup::paths::PREFIX);
    let peer = req.extensions().get::<ConnInfo>().map(|c| c.peer.ip());
    let Some(peer) = peer.filter(|_| limited) else {
        return next.run(req).await;
    };
    if let Err(e) = d.devices.rate_limits.check(Some(peer), None) {
        return ApiError::from(e).into_response();
    }
    let resp = next.run(req).await;
    if resp
        .extensions()
        .get::<ErrorCode>()
        .is_some_and(|c| is_failure(*c))
    {
        d.devices.rate_limits.charge_failure(Some(peer), None);
    }
    resp
}

/// Answers that cost [`crate::ratelimit::RateLimitConfig::failure_cost`]:
/// the caller did something wrong, not something early.
pub fn is_failure(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::BadRequest
            | ErrorCode::InvalidProof
            | ErrorCode::InvalidToken
            | ErrorCode::Refused
    )
}

/// Account for a handler's answer (see `Daemon::after_failure`).
pub fn after_request<T>(
    d: &Daemon,
    conn: &ConnInfo,
    device_id: Option<&str>,
    result: &Result<T, crate::error::Error>,
) {
    if let Err(e) = result {
        d.devices.after_failure(conn.peer.ip(), device_id, e);
    }
}
