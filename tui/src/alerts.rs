//! The Alerts view: everything that wants an administrator's attention.
//!
//! The daemon reports three kinds of trouble: flags on pending requests and
//! on devices (repeated requests, a key or MAC shared by several IDs, a MAC
//! mismatch), security alerts it raises itself (a rogue DNS-SD advertiser,
//! live `alert` events), and the provisioning switch (shown above the list,
//! not as a row). Flag alerts are derived from those records as they change.
//!
//! Seam for daemon-raised alerts (rogue DNS-SD advertisers and the like):
//! add an [`AlertKey`] variant for the new source, turn its event into an
//! [`Alert`] in `App::apply_event`, and it is listed, filtered and counted
//! like the others — the view code matches on [`AlertKey::kind`] and
//! [`AlertKey::subject`] only.

use idprov_proto::DeviceId;
use idprov_proto::admin::{DeviceView, PendingView};
use idprov_proto::ids::escape_untrusted;

/// Identity of an alert; the Alerts list is ordered by it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum AlertKey {
    /// A pending request carries flags.
    Pending(DeviceId),
    /// A known device carries flags.
    Device(DeviceId),
    /// The daemon raised a security alert; `subject` is the advertiser's
    /// instance name, escaped.
    Security { id: u64, subject: String },
}

impl AlertKey {
    /// Short label of where the alert comes from.
    pub fn kind(&self) -> &'static str {
        match self {
            AlertKey::Pending(_) => "pending",
            AlertKey::Device(_) => "device",
            AlertKey::Security { .. } => "security",
        }
    }
    /// What the alert is about (already safe to display: a `DeviceId`).
    pub fn subject(&self) -> &str {
        match self {
            AlertKey::Pending(id) | AlertKey::Device(id) => id.as_str(),
            AlertKey::Security { subject, .. } => subject.as_str(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub key: AlertKey,
    /// Untrusted flag names, escaped when drawn.
    pub flags: Vec<String>,
    /// Unix seconds the condition was last seen.
    pub at: i64,
}

/// The alert a pending request raises, if it carries flags.
pub fn from_pending(p: &PendingView) -> Option<Alert> {
    (!p.flags.is_empty()).then(|| Alert {
        key: AlertKey::Pending(p.device_id.clone()),
        flags: p.flags.clone(),
        at: p.last_seen,
    })
}

/// The alert a device raises, if it carries flags.
pub fn from_device(d: &DeviceView) -> Option<Alert> {
    (!d.flags.is_empty()).then(|| Alert {
        key: AlertKey::Device(d.device_id.clone()),
        flags: d.flags.clone(),
        at: d.last_issued_at.unwrap_or(d.created_at),
    })
}

/// The row a daemon security alert becomes (its kind is the flag).
pub fn from_security(a: &idprov_proto::admin::Alert) -> Alert {
    Alert {
        key: AlertKey::Security {
            id: a.id,
            subject: escape_untrusted(&a.instance),
        },
        flags: vec![a.kind.as_str().to_string()],
        at: a.at,
    }
}
