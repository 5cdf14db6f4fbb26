//! The stable error codes of both APIs. Codes never change meaning; new ones
//! may be added. Unauthenticated callers get one code per class (security.md,
//! "Error model"): the precise reason goes to the log and the audit trail.
//!
//! A code this build does not know (sent by a newer daemon) reads as
//! [`ErrorCode::Unknown`], so an [`ErrorBody`] always parses; the protocol
//! says to treat such a code by its HTTP status.

use serde::{Deserialize, Serialize};

/// A code of the error model (protocol.md, "Errors"). New codes may be added
/// in later versions: match with a wildcard arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The request is malformed: JSON, a field, a device ID, a key. 400.
    BadRequest,
    /// The body is larger than the configured limit. 413.
    PayloadTooLarge,
    /// The proof of possession was refused, whatever the reason. 401.
    InvalidProof,
    /// The daemon token was refused (unknown, expired, revoked, forged). 401.
    InvalidToken,
    /// The daemon will not issue credentials to this device (rejected,
    /// revoked, or its key/MAC/secret does not match the OOB list). 403.
    Refused,
    /// Too many requests; see `Retry-After`. 429.
    RateLimited,
    /// A pending device polled before the time it was given. 429.
    SlowDown,
    /// The pending queue is full; try again later. 503.
    PendingFull,
    /// Provisioning is paused by an administrator or an alert. 503.
    ProvisioningPaused,
    /// The server's clock went backwards; it refuses to issue. 503.
    ClockRegressed,
    /// A bounded cache is full (e.g. the replay cache); try later. 503.
    Busy,
    /// The daemon's store failed on I/O (disk full, device error) and
    /// refuses writes until it recovers by itself; see `Retry-After`. 503.
    Unavailable,
    /// Admin API: no or bad credentials. 401.
    Unauthorized,
    /// No such resource. 404.
    NotFound,
    /// Method not allowed on this path. 405.
    MethodNotAllowed,
    /// Someone else changed the record first (revision mismatch). 409.
    Conflict,
    /// Content-Type is not application/json. 415.
    UnsupportedMediaType,
    /// The request took longer than allowed. 408.
    Timeout,
    /// The daemon failed (storage I/O). 500. Never caused by input.
    Internal,
    /// Setup codes: this daemon holds no usable setup code for the device
    /// (none, already used, or locked after too many failures). 403.
    SetupCodeRefused,
    /// Setup codes: key confirmation failed, or the exchange is unknown,
    /// expired or continued on another TLS connection. 403.
    SetupCodeMismatch,
    /// A code this build does not know, from a newer peer. Read only, never
    /// sent by the daemon: judge the answer by its HTTP status. Serialized as
    /// `unknown`; the original code is not kept. 500 when one must be chosen.
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::InvalidProof | ErrorCode::InvalidToken | ErrorCode::Unauthorized => 401,
            ErrorCode::Refused | ErrorCode::SetupCodeRefused | ErrorCode::SetupCodeMismatch => 403,
            ErrorCode::RateLimited | ErrorCode::SlowDown => 429,
            ErrorCode::PendingFull
            | ErrorCode::ProvisioningPaused
            | ErrorCode::ClockRegressed
            | ErrorCode::Busy
            | ErrorCode::Unavailable => 503,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::Conflict => 409,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::Timeout => 408,
            ErrorCode::Internal | ErrorCode::Unknown => 500,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::InvalidProof => "invalid_proof",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::Refused => "refused",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::SlowDown => "slow_down",
            ErrorCode::PendingFull => "pending_full",
            ErrorCode::ProvisioningPaused => "provisioning_paused",
            ErrorCode::ClockRegressed => "clock_regressed",
            ErrorCode::SetupCodeRefused => "setup_code_refused",
            ErrorCode::SetupCodeMismatch => "setup_code_mismatch",
            ErrorCode::Busy => "busy",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::Conflict => "conflict",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Internal => "internal",
            ErrorCode::Unknown => "unknown",
        }
    }
}

/// The JSON body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
    /// Seconds to wait before trying again (also in `Retry-After`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_secs: Option<u64>,
    /// Per-entry problems of a bulk request (admin OOB upload).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<EntryError>,
    /// The request id, also in `x-request-id`, for the logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// One problem in a bulk request: the 0-based index of the entry in the
/// request, the device id when it could be read, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryError {
    pub index: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every code but `Unknown`. The match below fails to compile when a
    /// variant is added, so this list cannot fall behind.
    const KNOWN: [ErrorCode; 21] = [
        ErrorCode::BadRequest,
        ErrorCode::PayloadTooLarge,
        ErrorCode::InvalidProof,
        ErrorCode::InvalidToken,
        ErrorCode::Refused,
        ErrorCode::RateLimited,
        ErrorCode::SlowDown,
        ErrorCode::PendingFull,
        ErrorCode::ProvisioningPaused,
        ErrorCode::ClockRegressed,
        ErrorCode::Busy,
        ErrorCode::Unavailable,
        ErrorCode::Unauthorized,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::Conflict,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::Timeout,
        ErrorCode::Internal,
        ErrorCode::SetupCodeRefused,
        ErrorCode::SetupCodeMismatch,
    ];

    fn listed(code: ErrorCode) -> bool {
        match code {
            ErrorCode::BadRequest
            | ErrorCode::PayloadTooLarge
            | ErrorCode::InvalidProof
            | ErrorCode::InvalidToken
            | ErrorCode::Refused
            | ErrorCode::RateLimited
            | ErrorCode::SlowDown
            | ErrorCode::PendingFull
            | ErrorCode::ProvisioningPaused
            | ErrorCode::ClockRegressed
            | ErrorCode::Busy
            | ErrorCode::Unavailable
            | ErrorCode::Unauthorized
            | ErrorCode::NotFound
            | ErrorCode::MethodNotAllowed
            | ErrorCode::Conflict
            | ErrorCode::UnsupportedMediaType
            | ErrorCode::Timeout
            | ErrorCode::Internal
            | ErrorCode::SetupCodeRefused
            | ErrorCode::SetupCodeMismatch => KNOWN.contains(&code),
            ErrorCode::Unknown => false,
        }
    }

    #[test]
    fn every_known_code_round_trips_unchanged() -> Result<(), serde_json::Error> {
        for code in KNOWN {
            assert!(listed(code));
            let json = serde_json::to_string(&code)?;
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(serde_json::from_str::<ErrorCode>(&json)?, code);
            assert_ne!(code.as_str(), "unknown");
        }
        // The names are the wire names, snake_case, as they always were.
        assert_eq!(
            serde_json::to_string(&ErrorCode::PendingFull)?,
            r#""pending_full""#
        );
        assert_eq!(
            serde_json::to_string(&ErrorCode::UnsupportedMediaType)?,
            r#""unsupported_media_type""#
        );
        Ok(())
    }

    #[test]
    fn an_unknown_code_reads_as_unknown() -> Result<(), serde_json::Error> {
        let body: ErrorBody = serde_json::from_str(
            r#"{"code":"quota_exceeded","message":"try another hub","retry_after_secs":30}"#,
        )?;
        assert_eq!(body.code, ErrorCode::Unknown);
        assert_eq!(body.message, "try another hub");
        assert_eq!(body.retry_after_secs, Some(30));
        assert_eq!(
            serde_json::from_str::<ErrorCode>(r#""BadRequest""#)?,
            ErrorCode::Unknown
        );
        assert_eq!(ErrorCode::Unknown.http_status(), 500);
        assert_eq!(serde_json::to_string(&ErrorCode::Unknown)?, r#""unknown""#);
        // Not a string at all is still an error.
        assert!(serde_json::from_str::<ErrorCode>("7").is_err());
        Ok(())
    }
}
