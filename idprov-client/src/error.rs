//! The client's error type. Each variant says what the device should do:
//! retry ([`Error::is_retryable`]), re-authenticate, or give up.

use std::path::PathBuf;
use std::time::Duration;

use idprov_proto::{ErrorBody, ErrorCode};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The builder was given something unusable (missing field, bad URL).
    #[error("invalid client configuration: {0}")]
    Config(String),

    /// The device key could not be read, parsed or used.
    #[error("device key: {0}")]
    Key(String),

    /// A signer (file key, TPM, secure element) failed to sign.
    #[error("signing failed: {0}")]
    Signer(String),

    /// Reading or writing the state directory failed.
    #[error("state file {path}: {source}")]
    Store {
        path: PathBuf,
        source: std::io::Error,
    },

    /// No daemon answered DNS-SD within the timeout.
    #[error("no idprov daemon found by DNS-SD within {0:?}")]
    NotFound(Duration),

    /// DNS-SD found daemons, but none with the pinned CA.
    #[error(
        "DNS-SD found {count} idprov daemon(s), none with the pinned CA {pinned}; seen: {seen}"
    )]
    NoPinnedDaemon {
        count: usize,
        pinned: String,
        seen: String,
    },

    /// Trust on first use needs exactly one daemon on the network.
    #[error(
        "trust on first use refused: {count} daemons advertise on this network ({seen}); pin one CA fingerprint"
    )]
    AmbiguousTofu { count: usize, seen: String },

    /// The mDNS responder could not be started or used.
    #[error("DNS-SD: {0}")]
    Discovery(String),

    /// The daemon's CA is not the pinned one, or its certificate does not
    /// chain to it. Never retried: this is a wrong (or rogue) server.
    #[error("daemon not trusted: {0}")]
    Untrusted(String),

    /// The daemon could not be reached (connect, TLS, timeout, reset).
    #[error("cannot reach the daemon at {server}: {message}")]
    Network { server: String, message: String },

    /// The daemon refused this device for good (rejected, revoked, or its key
    /// or MAC does not match the administrator's list). Not retried.
    #[error("the daemon refused this device: {message}")]
    Rejected { message: String },

    /// The daemon answered with another error code.
    #[error("daemon error {code} (HTTP {status}): {message}", code = body.code.as_str())]
    Api {
        status: u16,
        body: Box<ErrorBody>,
        /// From `Retry-After` or the body, when the daemon gave one.
        retry_after: Option<Duration>,
        message: String,
    },

    /// The daemon answered something this client cannot read.
    #[error("unexpected answer from the daemon (HTTP {status}): {message}")]
    Protocol { status: u16, message: String },
}

impl Error {
    /// The daemon's error code, when the daemon answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Api { body, .. } => Some(body.code),
            Error::Rejected { .. } => Some(ErrorCode::Refused),
            _ => None,
        }
    }

    /// How long the daemon asked us to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Whether trying again later may succeed. Configuration, key, trust and
    /// rejection errors never go away by waiting.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Network { .. } | Error::NotFound(_) | Error::NoPinnedDaemon { .. } => true,
            // The responder socket may come back (interface up again).
            Error::Discovery(_) => true,
            Error::Protocol { status, .. } => *status >= 500,
            Error::Api { body, .. } => matches!(
                body.code,
                ErrorCode::RateLimited
                    | ErrorCode::SlowDown
                    | ErrorCode::PendingFull
                    | ErrorCode::ProvisioningPaused
                    | ErrorCode::ClockRegressed
                    | ErrorCode::Busy
                    | ErrorCode::Timeout
                    | ErrorCode::Internal
                    // A proof can fail because our idea of the server's clock
                    // was off; the next attempt re-reads the server time.
                    | ErrorCode::InvalidProof
                    | ErrorCode::InvalidToken
            ),
            Error::Config(_)
            | Error::Key(_)
            | Error::Signer(_)
            | Error::Store { .. }
            | Error::AmbiguousTofu { .. }
            | Error::Untrusted(_)
            | Error::Rejected { .. } => false,
        }
    }

    /// A connection-level failure, after which a discovered daemon should be
    /// looked up again (it may have moved to another address or port).
    pub fn is_network(&self) -> bool {
        matches!(self, Error::Network { .. })
    }
}
