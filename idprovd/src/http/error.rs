//! The one HTTP error type. Every failure becomes JSON with a stable code
//! ([`ErrorCode`]); unauthenticated callers see one code per class, and the
//! precise reason is logged (security.md, "Error model").

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode};
use idprov_proto::error::EntryError;
use idprov_proto::{ErrorBody, ErrorCode};

use crate::store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub retry_after: Option<u64>,
    pub details: Vec<EntryError>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            retry_after: None,
            details: Vec::new(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }
    /// The one answer for every refused proof, whatever the reason.
    pub fn invalid_proof() -> Self {
        Self::new(
            ErrorCode::InvalidProof,
            "the proof of possession was not accepted",
        )
    }
    pub fn invalid_token() -> Self {
        Self::new(
            ErrorCode::InvalidToken,
            "the token is not valid; provision again with the device key",
        )
    }
    pub fn refused() -> Self {
        Self::new(
            ErrorCode::Refused,
            "this daemon does not issue credentials to this device",
        )
    }
    pub fn unauthorized() -> Self {
        Self::new(
            ErrorCode::Unauthorized,
            "admin API: missing or invalid administrator credentials",
        )
    }
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, what)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }
    pub fn retry(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs.max(1));
        self
    }
    pub fn with_details(mut self, details: Vec<EntryError>) -> Self {
        self.details = details;
        self
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store operation failed");
        ApiError::new(
            ErrorCode::Internal,
            "the daemon could not complete the request",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = ErrorBody {
            code: self.code,
            message: self.message,
            retry_after_secs: self.retry_after,
            details: self.details,
            request_id: super::REQUEST_ID.try_with(Clone::clone).ok(),
        };
        let mut resp = (status, Json(body)).into_response();
        // For the request metrics (the outcome label).
        resp.extensions_mut().insert(self.code);
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            resp.headers_mut().insert(http::header::RETRY_AFTER, v);
        }
        resp
    }
}
