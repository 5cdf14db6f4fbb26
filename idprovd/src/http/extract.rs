//! Request extractors whose failures are our JSON errors, not axum's text.

use axum::extract::{FromRequest, FromRequestParts, Request};
use http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::Daemon;
use idprov_proto::ErrorCode;
use std::sync::Arc;

/// A JSON body, read up to the configured limit, parsed strictly.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Arc<Daemon>> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<Daemon>) -> Result<Self, ApiError> {
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
        // A declared length over the limit is refused before reading a byte.
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
        let read = axum::body::to_bytes(req.into_body(), limit);
        let bytes = tokio::time::timeout(state.cfg.limits.request_timeout, read)
            .await
            .map_err(|_| ApiError::new(ErrorCode::Timeout, "the request body took too long"))?
            .map_err(|_| {
                ApiError::new(
                    ErrorCode::PayloadTooLarge,
                    format!("request body larger than {limit} bytes, or broken"),
                )
            })?;
        let value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
        Ok(JsonBody(value))
    }
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
