//! The client's error type. Each variant says what the device should do:
//! retry ([`Error::is_retryable`]), re-authenticate, or give up.
//!
//! A variant's message says what failed at this level; the underlying error
//! (an I/O error, a TLS or HTTP error, the key parser's), when there is one,
//! is its [`source`](std::error::Error::source) and is not repeated in the
//! message. [`Error::report`] gives both, as one line.

use std::convert::Infallible;
use std::path::PathBuf;
use std::time::Duration;

use idprov_proto::{ErrorBody, ErrorCode, IdError};

/// An underlying error of any kind, kept as an [`Error`]'s source. Downcast
/// it (`source.downcast_ref::<std::io::Error>()`) to inspect it.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in the client. New variants may be added:
/// match with a wildcard arm, or ask [`Error::is_retryable`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The builder was given something unusable (missing field, bad URL), or
    /// the client could not set itself up with it.
    #[error("invalid client configuration: {message}")]
    Config {
        message: String,
        #[source]
        source: Option<BoxError>,
    },

    /// A device id or MAC address that does not follow the grammar (given to
    /// [`ClientBuilder::device_id`](crate::ClientBuilder::device_id), or
    /// parsed by the caller and passed on with `?`).
    #[error("{}", invalid_id_message(.0))]
    InvalidId(#[from] IdError),

    /// The device key could not be read, parsed or used.
    #[error("device key: {message}")]
    Key {
        message: String,
        #[source]
        source: Option<BoxError>,
    },

    /// A signer (file key, TPM, secure element) failed to sign.
    #[error("signing failed: {message}")]
    Signer {
        message: String,
        #[source]
        source: Option<BoxError>,
    },

    /// Reading or writing the state directory (or the key file) failed.
    #[error("cannot use {}", .path.display())]
    Store {
        path: PathBuf,
        source: std::io::Error,
    },

    /// No daemon answered DNS-SD within the timeout (feature `mdns`).
    #[error("no idprov daemon found by DNS-SD within {0:?}")]
    NotFound(Duration),

    /// DNS-SD found daemons, but none with the pinned CA (feature `mdns`).
    #[error(
        "DNS-SD found {count} idprov daemon(s), none with the pinned CA {pinned}; seen: {seen}"
    )]
    NoPinnedDaemon {
        count: usize,
        pinned: String,
        seen: String,
    },

    /// Trust on first use needs exactly one daemon on the network (feature
    /// `mdns`).
    #[error(
        "trust on first use refused: {count} daemons advertise on this network ({seen}); pin one CA fingerprint"
    )]
    AmbiguousTofu { count: usize, seen: String },

    /// The mDNS responder could not be started or used (feature `mdns`).
    #[error("DNS-SD: {message}")]
    Discovery {
        message: String,
        #[source]
        source: Option<BoxError>,
    },

    /// The daemon's CA is not the pinned one, or its certificate does not
    /// chain to it. Never retried: this is a wrong (or rogue) server.
    #[error("daemon not trusted: {message}")]
    Untrusted {
        message: String,
        #[source]
        source: Option<BoxError>,
    },

    /// The daemon could not be reached (connect, TLS, timeout, reset).
    /// `message` names the step that failed.
    #[error("cannot reach the daemon at {server}: {message}")]
    Network {
        server: String,
        message: String,
        #[source]
        source: Option<BoxError>,
    },

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
    Protocol {
        status: u16,
        message: String,
        #[source]
        source: Option<BoxError>,
    },
}

fn invalid_id_message(e: &IdError) -> &'static str {
    match e {
        IdError::Mac => "invalid MAC address",
        _ => "invalid device id",
    }
}

/// So that a [`DeviceId`](crate::DeviceId) itself is accepted wherever a
/// `TryInto<DeviceId>` is.
impl From<Infallible> for Error {
    fn from(never: Infallible) -> Self {
        match never {}
    }
}

/// Shorthands for the variants that carry a message and an optional source.
impl Error {
    pub(crate) fn config(message: impl Into<String>) -> Self {
        Error::Config {
            message: message.into(),
            source: None,
        }
    }

    pub(crate) fn config_from(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Config {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    pub(crate) fn key(message: impl Into<String>) -> Self {
        Error::Key {
            message: message.into(),
            source: None,
        }
    }

    pub(crate) fn key_from(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Key {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// An [`Error::Signer`] without an underlying error, for a
    /// [`Signer`](crate::Signer) implementation.
    pub fn signer(message: impl Into<String>) -> Self {
        Error::Signer {
            message: message.into(),
            source: None,
        }
    }

    /// An [`Error::Signer`] for a [`Signer`](crate::Signer) implementation:
    /// `message` says what failed, `source` is the hardware's own error.
    pub fn signer_from(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Signer {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    pub(crate) fn untrusted(message: impl Into<String>) -> Self {
        Error::Untrusted {
            message: message.into(),
            source: None,
        }
    }

    pub(crate) fn untrusted_from(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Untrusted {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    pub(crate) fn protocol(status: u16, message: impl Into<String>) -> Self {
        Error::Protocol {
            status,
            message: message.into(),
            source: None,
        }
    }

    pub(crate) fn protocol_from(
        status: u16,
        message: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        Error::Protocol {
            status,
            message: message.into(),
            source: Some(source.into()),
        }
    }
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
            Error::Discovery { .. } => true,
            Error::Protocol { status, .. } => *status >= 500,
            Error::Api { body, status, .. } => match body.code {
                ErrorCode::RateLimited
                | ErrorCode::SlowDown
                | ErrorCode::PendingFull
                | ErrorCode::ProvisioningPaused
                | ErrorCode::ClockRegressed
                | ErrorCode::Busy
                | ErrorCode::Unavailable
                | ErrorCode::Timeout
                | ErrorCode::Internal
                // A proof can fail because our idea of the server's clock
                // was off; the next attempt re-reads the server time.
                | ErrorCode::InvalidProof
                | ErrorCode::InvalidToken => true,
                // A code from a newer daemon: judged by its HTTP status, as
                // the protocol says.
                ErrorCode::Unknown => *status == 429 || *status >= 500,
                _ => false,
            },
            Error::Config { .. }
            | Error::InvalidId(_)
            | Error::Key { .. }
            | Error::Signer { .. }
            | Error::Store { .. }
            | Error::AmbiguousTofu { .. }
            | Error::Untrusted { .. }
            | Error::Rejected { .. } => false,
        }
    }

    /// A connection-level failure, after which a discovered daemon should be
    /// looked up again (it may have moved to another address or port).
    pub fn is_network(&self) -> bool {
        matches!(self, Error::Network { .. })
    }

    /// This error's message followed by those of its sources, `: `-separated,
    /// each said once: what to log or show a person. (`to_string()` gives
    /// this level's message only.)
    pub fn report(&self) -> String {
        let mut out = self.to_string();
        let mut next = std::error::Error::source(self);
        while let Some(cause) = next {
            let text = cause.to_string();
            // Some errors repeat their source's text in their own message.
            if !text.is_empty() && !out.ends_with(&text) {
                out.push_str(": ");
                out.push_str(&text);
            }
            next = cause.source();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn sources_are_kept_and_reported_once() {
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied");
        let e = Error::Store {
            path: "/state/credentials.json".into(),
            source: io,
        };
        assert_eq!(e.to_string(), "cannot use /state/credentials.json");
        assert!(e.source().is_some_and(|s| s.is::<std::io::Error>()));
        assert_eq!(e.report(), "cannot use /state/credentials.json: denied");

        let e = Error::key_from("not a PEM private key", std::io::Error::other("bad base64"));
        assert_eq!(e.to_string(), "device key: not a PEM private key");
        assert_eq!(e.report(), "device key: not a PEM private key: bad base64");
        assert!(!e.is_retryable());
        assert_eq!(Error::key("x").report(), "device key: x");
    }

    #[test]
    fn an_id_parse_error_converts_with_its_source() {
        fn parse(s: &str) -> Result<idprov_proto::DeviceId, Error> {
            Ok(s.parse()?)
        }
        let e = parse("-bad").err();
        assert!(matches!(e, Some(Error::InvalidId(IdError::DeviceIdChars))));
        let e = e.unwrap_or_else(|| Error::config("unreachable"));
        assert_eq!(e.to_string(), "invalid device id");
        assert!(e.source().is_some_and(|s| s.is::<IdError>()));
        assert!(
            e.report()
                .starts_with("invalid device id: device id may contain only")
        );
        assert!(!e.is_retryable());
        let mac: Result<idprov_proto::MacAddr, Error> = "zz".parse().map_err(Error::from);
        assert!(mac.is_err_and(|e| e.to_string() == "invalid MAC address"));
    }

    #[test]
    fn an_unknown_daemon_code_is_judged_by_its_status() {
        let api = |status: u16| Error::Api {
            status,
            body: Box::new(ErrorBody {
                code: ErrorCode::Unknown,
                message: "new".into(),
                retry_after_secs: None,
                details: Vec::new(),
                request_id: None,
            }),
            retry_after: None,
            message: "new".into(),
        };
        assert!(api(503).is_retryable());
        assert!(api(429).is_retryable());
        assert!(!api(400).is_retryable());
        assert!(!api(403).is_retryable());
        assert_eq!(api(503).code(), Some(ErrorCode::Unknown));
    }
}
