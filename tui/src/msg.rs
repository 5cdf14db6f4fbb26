//! What the state asks the outside world to do ([`Command`]) and what comes
//! back ([`Msg`]). The state never does I/O; `daemon.rs` turns commands into
//! admin-API calls and the answers into messages. Tests feed messages in
//! directly.

use std::time::Duration;

use idprov_proto::DeviceId;
use idprov_proto::admin::{
    AdminEvent, AuditEntry, DeviceView, OobEntryView, PendingView, ProvisioningState,
};

/// A device and the revision the administrator saw when deciding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub id: DeviceId,
    pub revision: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Load every list; the answer carries the same generation.
    Reload {
        generation: u64,
    },
    ReloadOob,
    Approve(Vec<Decision>),
    Reject(Vec<Decision>),
    Revoke(Decision),
    RemoveOob(Vec<DeviceId>),
    SetProvisioning(ProvisioningState),
    /// Load the rules, windows and the policy's dry run (policy.rs).
    ReloadPolicy,
    /// Open an enrollment window of the daemon's default length.
    OpenWindow,
    CloseWindow(u64),
}

/// Everything the daemon knows, loaded in one go.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub pending: Vec<PendingView>,
    pub devices: Vec<DeviceView>,
    pub oob: Vec<OobEntryView>,
    /// The newest entries, oldest first.
    pub audit: Vec<AuditEntry>,
    pub provisioning: Option<ProvisioningState>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Approve,
    Reject,
    Revoke,
    RemoveOob,
    Provisioning,
}

impl Verb {
    pub fn past(self) -> &'static str {
        match self {
            Verb::Approve => "approved",
            Verb::Reject => "rejected",
            Verb::Revoke => "revoked",
            Verb::RemoveOob => "removed",
            Verb::Provisioning => "changed",
        }
    }
    pub fn progressive(self) -> &'static str {
        match self {
            Verb::Approve => "approving",
            Verb::Reject => "rejecting",
            Verb::Revoke => "revoking",
            Verb::RemoveOob => "removing",
            Verb::Provisioning => "changing",
        }
    }
}

/// Why one call failed, in the terms the status line needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailKind {
    /// 409: someone changed or decided the record first.
    Conflict,
    /// 404: the record is gone.
    NotFound,
    /// The daemon could not be reached.
    Connection,
    /// Any other answer; the daemon's code.
    Other(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub id: Option<DeviceId>,
    /// The revision the command carried, if any.
    pub revision: Option<u64>,
    pub kind: FailKind,
    /// The daemon's message (untrusted: escaped when shown).
    pub message: String,
}

/// The result of one command that changes something.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub verb: Verb,
    pub requested: usize,
    /// Ids that succeeded.
    pub done: Vec<DeviceId>,
    /// Device records the daemon returned (approve, reject, revoke).
    pub devices: Vec<DeviceView>,
    pub provisioning: Option<ProvisioningState>,
    pub failures: Vec<Failure>,
}

impl Outcome {
    pub fn new(verb: Verb, requested: usize) -> Self {
        Outcome {
            verb,
            requested,
            done: Vec::new(),
            devices: Vec::new(),
            provisioning: None,
            failures: Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub enum Msg {
    /// The event stream is open (again).
    Connected,
    /// The event stream failed or dropped; the next attempt is scheduled.
    Disconnected {
        error: String,
        retry_in: Duration,
        attempt: u32,
    },
    /// The daemon refused the administrator's token (revoked, or not a
    /// token it knows): the event stream gave up, for good.
    Refused {
        error: String,
    },
    Event(AdminEvent),
    Snapshot {
        generation: u64,
        snapshot: Box<Snapshot>,
    },
    SnapshotFailed {
        generation: u64,
        error: String,
    },
    Oob(Vec<OobEntryView>),
    OobFailed(String),
    /// A bulk command has finished `done` of `total` calls.
    Progress {
        verb: Verb,
        done: usize,
        total: usize,
    },
    Done(Outcome),
    Policy(Box<crate::policy::PolicyData>),
    PolicyFailed(String),
    /// A window opened or closed (`Ok` says which), or why not.
    PolicyOp(Result<String, String>),
}
