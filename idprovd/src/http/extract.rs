//! Request extractors whose failures are our JSON errors, not axum's text.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use http::request::Parts;
use idprov_proto::ErrorCode;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::Daemon;

/// A JSON body, read up to the configured limit, parsed strictly.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Arc<Daemon>> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<Daemon>) -> Result<Self, ApiError> {
        // Admin routes authenticate before the body is read (the auth
        // extractor runs first), so only an administrator can send the
        // larger bodies a bulk OOB upload needs.
        let limit = if req
            .uri()
            .path()
            .starts_with(idprov_proto::admin::paths::PREFIX)
        {
            state.cfg.limits.max_admin_body_bytes
        } else {
            state.cfg.limits.max_body_bytes
        };
        let bytes = body_bytes(req, limit, Some(state.cfg.limits.request_timeout)).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// The raw body of a JSON request, at most `limit` bytes, read within
/// `timeout` if one is given. A declared length over the limit is refused
/// before a byte is read.
pub async fn body_bytes(
    req: Request,
    limit: usize,
    timeout: Option<Duration>,
) -> Result<Bytes, ApiError> {
    let ct = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("application/json") {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "Content-Type must be application/json",
        ));
    }
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("request body larger than {limit} bytes"),
        ));
    }
    let too_large = || {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("request body larger than {limit} bytes, or broken"),
        )
    };
    let read = axum::body::to_bytes(req.into_body(), limit);
    match timeout {
        Some(t) => tokio::time::timeout(t, read)
            .await
            .map_err(|_| ApiError::new(ErrorCode::Timeout, "the request body took too long"))?
            .map_err(|_| too_large()),
        None => read.await.map_err(|_| too_large()),
    }
}

/// Parse a JSON body into our error type. Only a JSON object is a body
/// (`idprov_proto::json`): every JSON body of both APIs comes through here.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    idprov_proto::json::from_object_slice(bytes).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// Query string, parsed into our error type.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let q = parts.uri.query().unwrap_or("");
        serde_urlencoded_from_str(q)
            .map(Query)
            .map_err(|e| ApiError::bad_request(format!("invalid query: {e}")))
    }
}

fn serde_urlencoded_from_str<T: DeserializeOwned>(q: &str) -> Result<T, String> {
    axum::extract::Query::<T>::try_from_uri(
        &format!("/?{q}")
            .parse()
            .map_err(|e: http::uri::InvalidUri| e.to_string())?,
    )
    .map(|axum::extract::Query(v)| v)
    .map_err(|e| e.body_text())
}
