//! What the client tells the device application while it works.

use std::sync::Arc;
use std::time::Duration;

#[cfg(feature = "mdns")]
use crate::discovery::DiscoveredDaemon;

/// A state change of the client, passed to the callback given to
/// [`crate::ClientBuilder::on_event`]. New variants may be added.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// DNS-SD found the daemon. `others` are the other advertisers seen
    /// (another CA or protocol version): worth a warning, they may be rogue.
    /// Only with the `mdns` feature.
    #[cfg(feature = "mdns")]
    Discovered {
        server: String,
        daemon_id: Option<String>,
        others: Vec<DiscoveredDaemon>,
    },
    /// The client is talking to this daemon (after TLS and `/info`).
    Connected { server: String, daemon_id: String },
    /// No CA was pinned; this one was pinned on first use.
    TrustedOnFirstUse { fingerprint: String },
    /// A daemon completed the setup-code exchange: its CA is pinned.
    SetupCodeConfirmed { server: String, fingerprint: String },
    /// A daemon did not complete the setup-code exchange and is not used:
    /// `reason` says why (no code for this device there, failed key
    /// confirmation: a rogue server or a relay).
    SetupCodeRefused { server: String, reason: String },
    /// The daemon does not know the device yet; an administrator must approve
    /// it. Show `verification_code` so they can compare it.
    Pending {
        verification_code: String,
        retry_in: Duration,
    },
    /// Credentials obtained (`reused`: loaded from the state directory).
    Provisioned { expires_at: i64, reused: bool },
    /// The token was renewed.
    Renewed { expires_at: i64 },
    /// An attempt failed and will be retried.
    RetryScheduled { error: String, retry_in: Duration },
    /// The token expired or was refused; proving the key again from scratch.
    Reauthenticating { reason: String },
    /// The daemon refused the device for good; the keeper has stopped.
    Revoked { message: String },
}

pub(crate) type EventFn = Arc<dyn Fn(&Event) + Send + Sync>;

#[derive(Clone, Default)]
pub(crate) struct EventSink(Option<EventFn>);

impl EventSink {
    pub fn new(f: Option<EventFn>) -> Self {
        EventSink(f)
    }

    pub fn emit(&self, e: Event) {
        tracing::debug!(event = ?e, "idprov-client");
        if let Some(f) = &self.0 {
            f(&e);
        }
    }
}
