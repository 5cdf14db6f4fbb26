//! The one HTTP error type. Every failure becomes JSON with a stable code
//! ([`ErrorCode`]); unauthenticated callers see one code per class, and the
//! precise reason is logged (security.md, "Error model").

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode};
use idprov_proto::error::EntryError;
use idprov_proto::{ErrorBody, ErrorCode};

use crate::error::Error;
use crate::store::StoreError;
use idprovd_core::setup_code::SetupCodeError;

/// `Retry-After` while the store recovers from an I/O error: the daemon
/// tries to reopen it after 1 s, then backs off up to 30 s.
const STORE_RETRY_AFTER: u64 = 5;

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

/// The one place a domain error becomes a wire error: its stable code, its
/// message, and how long to wait before retrying.
impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        use ErrorCode as C;
        let message = e.to_string();
        match e {
            Error::BadRequest(_) => ApiError::new(C::BadRequest, message),
            Error::Invalid { details, .. } => {
                ApiError::new(C::BadRequest, message).with_details(details)
            }
            Error::InvalidProof => ApiError::new(C::InvalidProof, message),
            Error::InvalidToken | Error::InvalidClientCert => {
                ApiError::new(C::InvalidToken, message)
            }
            Error::Refused => ApiError::new(C::Refused, message),
            Error::Unauthorized => ApiError::new(C::Unauthorized, message),
            Error::NotFound(_) => ApiError::new(C::NotFound, message),
            Error::Conflict(_) => ApiError::new(C::Conflict, message),
            Error::Paused => ApiError::new(C::ProvisioningPaused, message).retry(60),
            Error::ClockRegressed => ApiError::new(C::ClockRegressed, message).retry(60),
            Error::SlowDown { retry_after } => {
                ApiError::new(C::SlowDown, message).retry(retry_after)
            }
            Error::PendingFull { retry_after } => {
                ApiError::new(C::PendingFull, message).retry(retry_after)
            }
            Error::Busy { retry_after, .. } => {
                let e = ApiError::new(C::Busy, message);
                match retry_after {
                    Some(s) => e.retry(s),
                    None => e,
                }
            }
            Error::RateLimited { retry_after, .. } => {
                ApiError::new(C::RateLimited, message).retry(retry_after)
            }
            Error::Internal { source, .. } => {
                tracing::error!(error = %message, source = ?source, "operation failed");
                ApiError::new(C::Internal, message)
            }
            Error::Store(StoreError::Unavailable(reason)) => {
                tracing::warn!(error = %reason, "store unavailable; answering 503");
                ApiError::new(
                    C::Unavailable,
                    "the daemon's store is unavailable for now (an I/O error); try again later",
                )
                .retry(STORE_RETRY_AFTER)
            }
            Error::SetupCode(s) => match s {
                SetupCodeError::Unusable => ApiError::new(C::SetupCodeRefused, message),
                SetupCodeError::Mismatch => ApiError::new(C::SetupCodeMismatch, message),
            },
            Error::Store(e) => {
                tracing::error!(error = %e, "store operation failed");
                ApiError::new(C::Internal, message)
            }
            // A variant added later: an internal error until it is mapped.
            #[allow(unreachable_patterns)]
            other => {
                tracing::error!(error = ?other, "unmapped error");
                ApiError::new(C::Internal, "the daemon could not complete the request")
            }
        }
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

/// The longest text of an answer axum made itself that is kept as the
/// message of the JSON error that replaces it.
const FOREIGN_TEXT: usize = 1024;

/// Answers that axum makes itself (an extractor's rejection, such as a path
/// segment that is not UTF-8) are text, while the protocol promises a JSON
/// error for every answer that is not 2xx: turn them into ours, keeping the
/// status and the text as the message. Our own errors pass untouched.
pub async fn json_errors(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json || !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let code = match status.as_u16() {
        401 => ErrorCode::Unauthorized,
        404 => ErrorCode::NotFound,
        405 => ErrorCode::MethodNotAllowed,
        408 => ErrorCode::Timeout,
        409 => ErrorCode::Conflict,
        413 => ErrorCode::PayloadTooLarge,
        415 => ErrorCode::UnsupportedMediaType,
        500..=599 => ErrorCode::Internal,
        _ => ErrorCode::BadRequest,
    };
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, FOREIGN_TEXT)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    tracing::debug!(status = status.as_u16(), %message, "a text answer became a JSON error");
    let mut out = ApiError::new(code, message).into_response();
    *out.status_mut() = status;
    for (name, value) in &parts.headers {
        if name != http::header::CONTENT_TYPE && name != http::header::CONTENT_LENGTH {
            out.headers_mut()
                .entry(name)
                .or_insert_with(|| value.clone());
        }
    }
    out
}
