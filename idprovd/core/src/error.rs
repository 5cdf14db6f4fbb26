//! The daemon's one error type below the HTTP layer. Every use case returns
//! it; the HTTP layer turns it into the wire error (status, stable code,
//! `Retry-After`) in exactly one place (`http::error`). Variants say what
//! went wrong in the domain's terms, never how it is sent.
//!
//! Unauthenticated callers see one answer per class (security.md, "Error
//! model"): the precise reason a proof or token was refused is logged where
//! it is decided, and the variant carries none of it.

use idprov_proto::error::EntryError;

use crate::store::StoreError;

/// Why an operation did not happen. Nothing was written when one is
/// returned: decisions are made before the change set is applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request is malformed or breaks a rule the caller can fix.
    #[error("{0}")]
    BadRequest(String),
    /// Several entries of a batch are invalid; `details` names each.
    #[error("{message}")]
    Invalid {
        message: String,
        details: Vec<EntryError>,
    },
    /// A proof of possession was refused, whatever the reason.
    #[error("the proof of possession was not accepted")]
    InvalidProof,
    /// A daemon token was refused (unknown, expired, revoked, forged).
    #[error("the token is not valid; provision again with the device key")]
    InvalidToken,
    /// A client certificate was missing, foreign or revoked.
    #[error("a valid, unrevoked client certificate issued by this daemon is required")]
    InvalidClientCert,
    /// The daemon does not issue to this device.
    #[error("this daemon does not issue credentials to this device")]
    Refused,
    /// No or bad administrator credentials.
    #[error("admin API: missing or invalid administrator credentials")]
    Unauthorized,
    #[error("{0}")]
    NotFound(String),
    /// Someone else changed the record first, or the state forbids it.
    #[error("{0}")]
    Conflict(String),
    /// An administrator paused provisioning.
    #[error("provisioning is paused by the administrator")]
    Paused,
    /// The wall clock went back past the persisted high-water mark.
    #[error("the daemon's clock went backwards; it will not issue until it is fixed")]
    ClockRegressed,
    /// A pending device asked before the time it was given.
    #[error("still pending; ask again after the time given")]
    SlowDown { retry_after: u64 },
    /// The pending queue is full.
    #[error("the queue of devices waiting for approval is full; try again later")]
    PendingFull { retry_after: u64 },
    /// A bounded resource (replay cache, import sessions, backups, event
    /// streams) is in use up to its limit.
    #[error("{message}")]
    Busy {
        message: String,
        retry_after: Option<u64>,
    },
    /// A request rate limit was exceeded.
    #[error("{message}")]
    RateLimited { message: String, retry_after: u64 },
    /// The daemon failed at something that is not the caller's fault
    /// (signing, a worker task); the message is safe to show.
    #[error("{message}")]
    Internal {
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// Storage I/O failed; the operation was not applied.
    #[error("the daemon could not complete the request")]
    Store(#[from] StoreError),
    #[error(transparent)]
    SetupCode(#[from] crate::setup_code::SetupCodeError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Error::BadRequest(message.into())
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Error::NotFound(message.into())
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Error::Conflict(message.into())
    }
    pub fn invalid(message: impl Into<String>, details: Vec<EntryError>) -> Self {
        Error::Invalid {
            message: message.into(),
            details,
        }
    }
    pub fn busy(message: impl Into<String>, retry_after: Option<u64>) -> Self {
        Error::Busy {
            message: message.into(),
            retry_after,
        }
    }
    pub fn internal(
        message: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Error::Internal {
            message: message.into(),
            source: Some(source.into()),
        }
    }
    /// Does this refusal count against the caller's failure budget (rate
    /// limits, `proof_failures` flag)? Client mistakes and refusals do;
    /// the daemon's own state (paused, busy, storage) does not.
    pub fn is_client_failure(&self) -> bool {
        matches!(
            self,
            Error::BadRequest(_)
                | Error::Invalid { .. }
                | Error::InvalidProof
                | Error::InvalidToken
                | Error::InvalidClientCert
                | Error::Refused
                | Error::SetupCode(_)
        )
    }
}

/// Longest reason an administrator may give (revocation, rejection, pause).
pub const MAX_REASON: usize = 256;

/// Check an administrator's free-text reason: at most [`MAX_REASON`] bytes,
/// no control characters (it goes into the audit log and onto terminals).
pub fn check_reason(r: Option<&str>) -> Result<(), Error> {
    if r.is_some_and(|r| r.len() > MAX_REASON || r.chars().any(char::is_control)) {
        return Err(Error::bad_request(format!(
            "reason must be at most {MAX_REASON} bytes without control characters"
        )));
    }
    Ok(())
}
