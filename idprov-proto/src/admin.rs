//! The admin protocol under `/idprov/v1/admin/`. Every call carries
//! `Authorization: Bearer <admin token>`; see `docs/protocol.md`.

use serde::{Deserialize, Serialize};

use crate::ids::{DeviceId, MacAddr};
use crate::keys::KeyFormat;
use crate::secret::Secret;

pub mod paths {
    pub const PREFIX: &str = "/idprov/v1/admin";
    pub const WHOAMI: &str = "/idprov/v1/admin/whoami";
    pub const OOB: &str = "/idprov/v1/admin/oob";
    pub const PENDING: &str = "/idprov/v1/admin/pending";
    pub const DEVICES: &str = "/idprov/v1/admin/devices";
    pub const PROVISIONING: &str = "/idprov/v1/admin/provisioning";
    pub const AUDIT: &str = "/idprov/v1/admin/audit";
    pub const EVENTS: &str = "/idprov/v1/admin/events";
    /// `GET`: a consistent backup of the daemon (tar, secret: holds the CA
    /// and signing keys).
    pub const BACKUP: &str = "/idprov/v1/admin/backup";
    /// `GET`: security alerts raised since the daemon started, newest last.
    pub const ALERTS: &str = "/idprov/v1/admin/alerts";
    /// `GET`: the clock against its high-water mark ([`super::ClockState`]).
    pub const CLOCK: &str = "/idprov/v1/admin/clock";
    /// `POST`: accept the current clock, lowering the high-water mark to it.
    pub const CLOCK_ACCEPT: &str = "/idprov/v1/admin/clock/accept";
    /// Auto-approval rules: `GET`, `PUT` (all), `POST` (add); `/{name}`:
    /// `PUT`, `DELETE?revision=N`; `/{name}/move`: `POST`.
    pub const RULES: &str = "/idprov/v1/admin/rules";
    /// `POST`: what a rule (or the policy) would decide among pending devices.
    pub const RULES_DRY_RUN: &str = "/idprov/v1/admin/rules/dry-run";
    /// Enrollment windows: `GET`, `POST` (open); `/{id}`: `DELETE` (close).
    pub const WINDOWS: &str = "/idprov/v1/admin/windows";
}

/// Largest page a list call returns.
pub const MAX_PAGE: usize = 1000;
/// Most entries one `POST /admin/oob` may carry.
pub const MAX_OOB_BATCH: usize = 10_000;

/// Query of every list call: keyset paging by device id (or sequence for the
/// audit log) plus a case-insensitive substring filter.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ListQuery {
    /// Return entries strictly after this key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// Substring filter on id, MAC, fingerprint, source address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub q: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `after` to get the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// Number of entries in the collection (ignoring the filter).
    pub total: u64,
}

/// One OOB entry as an administrator writes it. At least one of
/// `public_key`, `mac`, `secret` is given; every one given must match.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OobEntryInput {
    pub device_id: DeviceId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_format: Option<KeyFormat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "Secret::serialize_exposed_opt"
    )]
    pub secret: Option<Secret>,
    /// The verifier of the device's setup code (`spake2+p256$argon2id$…`,
    /// as `idprov-oob generate --setup-codes` writes it); never the code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup_verifier: Option<String>,
    /// Unix seconds after which the entry no longer admits the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// `POST /admin/oob`: upsert many entries in one transaction.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OobUpsertRequest {
    #[serde(deserialize_with = "crate::json::vec_of_objects")]
    pub entries: Vec<OobEntryInput>,
    /// Allow changing the key/MAC/secret of an existing entry.
    #[serde(default)]
    pub replace: bool,
    /// Compute and return the difference without storing anything.
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct OobUpsertResult {
    pub added: Vec<DeviceId>,
    pub changed: Vec<DeviceId>,
    pub unchanged: u64,
    pub dry_run: bool,
}

/// An OOB entry as the daemon stores it. Secrets are stored as salted hashes
/// and never returned.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OobEntryView {
    pub device_id: DeviceId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_format: Option<KeyFormat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_fingerprint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
    pub has_secret: bool,
    pub secret_consumed: bool,
    /// The entry has a setup code (its verifier is never returned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup_code: Option<SetupCodeState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Where an entry's setup code stands.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct SetupCodeState {
    /// A device was admitted with it; it admits no one again.
    pub consumed: bool,
    /// Exchanges started with it that did not end in an admission.
    pub failures: u32,
    /// Too many failures: it is refused until replaced.
    pub locked: bool,
}

/// A device waiting for a decision.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PendingView {
    pub device_id: DeviceId,
    pub key_format: KeyFormat,
    /// Full RFC 7638 thumbprint of the key.
    pub key_fingerprint: String,
    pub public_key: String,
    pub verification_code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
    /// Address the last request came from.
    pub source: String,
    pub first_seen: i64,
    pub last_seen: i64,
    pub attempts: u64,
    #[serde(default)]
    pub flags: Vec<String>,
    /// Set when the device is on the OOB list but a flag held it here:
    /// how it matched its entry and which flags hold it. Absent for a
    /// device the list does not name. (Boxed: it is rare, and every admin
    /// event is as large as its largest variant.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oob_hold: Option<Box<OobHold>>,
    /// Pass back with approve/reject; a mismatch is a conflict.
    pub revision: u64,
}

/// What a listed device's request matched in its OOB entry.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OobMatch {
    Key,
    Mac,
    Secret,
    SetupCode,
}

impl OobMatch {
    pub fn as_str(self) -> &'static str {
        match self {
            OobMatch::Key => "key",
            OobMatch::Mac => "mac",
            OobMatch::Secret => "secret",
            OobMatch::SetupCode => "setup_code",
        }
    }
}

/// Why a device the OOB list names waits for an administrator anyway.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OobHold {
    pub matched_by: OobMatch,
    /// The flags that hold it (those of `hold` in the daemon's flag
    /// configuration that applied to this match).
    pub held_by: Vec<String>,
}

impl std::fmt::Display for OobHold {
    /// "matched its OOB entry by key, held by flag mac_reused", the line the
    /// TUI and idprovctl show.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = if self.held_by.len() == 1 { "" } else { "s" };
        write!(
            f,
            "matched its OOB entry by {}, held by flag{s} {}",
            self.matched_by.as_str(),
            self.held_by.join(", ")
        )
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DeviceStatus {
    Active,
    Revoked,
    Rejected,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeviceKeyView {
    pub kid: String,
    pub key_format: KeyFormat,
    pub public_key: String,
    pub added_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeviceView {
    pub device_id: DeviceId,
    pub status: DeviceStatus,
    pub keys: Vec<DeviceKeyView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
    /// How it was admitted: `oob_key`, `oob_mac`, `oob_secret`, `admin:<name>`.
    pub admitted_by: String,
    pub created_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_issued_at: Option<i64>,
    pub tokens_issued: u64,
    #[serde(default)]
    pub flags: Vec<String>,
    pub revision: u64,
}

/// Body of approve / reject / revoke.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    /// The revision the administrator saw. Required for pending decisions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProvisioningState {
    pub paused: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WhoAmI {
    pub name: String,
    pub daemon_id: String,
}

/// One entry of the append-only, hash-chained audit log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditEntry {
    pub seq: u64,
    pub at: i64,
    /// `admin:<name>`, `device:<id>` or `daemon`.
    pub actor: String,
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub detail: String,
    /// Hex SHA-256 of the previous entry (zeros for the first).
    pub prev_hash: String,
    /// Hex SHA-256 over this entry's fields and `prev_hash`.
    pub hash: String,
}

/// What raised a security alert.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// Another `_idprov._tcp` instance on a network the daemon advertises on.
    RogueAdvertiser,
    /// The daemon's own instance name answered with other addresses, port,
    /// host or TXT records.
    OwnNameSpoofed,
    /// A goodbye (TTL 0) for the daemon's own records that it did not send.
    RogueGoodbye,
    /// The daemon's clock is behind the highest time it recorded (it was
    /// ahead and has been corrected, or it went back): provisioning is
    /// refused until it catches up or an administrator accepts it.
    ClockRegressed,
    /// A setup code reached `setup_code.max_failures` exchanges without an
    /// admission and is locked. `instance` is the device ID.
    SetupCodeLocked,
    /// A setup-code exchange was not confirmed: a wrong code, or a relay
    /// (a rogue server forwarding a device's exchange to this daemon).
    /// `instance` is the device ID, `addresses` the source.
    SetupCodeUnconfirmed,
    /// `policy.window_max_failed_proofs` refused proofs while an
    /// enrollment window was open: the window was closed (never pauses).
    WindowProofFailures,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::RogueAdvertiser => "rogue_advertiser",
            AlertKind::OwnNameSpoofed => "own_name_spoofed",
            AlertKind::RogueGoodbye => "rogue_goodbye",
            AlertKind::ClockRegressed => "clock_regressed",
            AlertKind::SetupCodeLocked => "setup_code_locked",
            AlertKind::SetupCodeUnconfirmed => "setup_code_unconfirmed",
            AlertKind::WindowProofFailures => "window_proof_failures",
        }
    }
}

/// The daemon's clock against the persisted high-water mark (the highest
/// time a provision or renewal recorded).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClockState {
    pub now: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high_water: Option<i64>,
    /// `now` is more than the tolerance (5 s) behind `high_water`:
    /// provisioning and renewal answer `503 clock_regressed`.
    pub regressed: bool,
}

/// A security alert (flow 7). Every alert is also an audit entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Alert {
    /// Increasing from 1 within one run of the daemon.
    pub id: u64,
    pub at: i64,
    pub kind: AlertKind,
    /// The DNS-SD instance (full name) seen.
    pub instance: String,
    /// Addresses the advertisement named.
    #[serde(default)]
    pub addresses: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// TXT `id` and `ca` of the advertisement, if it had them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daemon_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_fingerprint: Option<String>,
    pub detail: String,
    /// Provisioning was paused because of this alert.
    pub paused: bool,
    /// Sequence number of the audit entry that records it.
    pub audit_seq: u64,
}

/// `GET /admin/alerts`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AlertList {
    pub items: Vec<Alert>,
}

/// Server-sent events of `GET /admin/events` (`event:` is the variant name,
/// `data:` the JSON).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AdminEvent {
    PendingUpserted {
        pending: PendingView,
    },
    PendingRemoved {
        device_id: DeviceId,
    },
    DeviceUpserted {
        device: DeviceView,
    },
    DeviceRemoved {
        device_id: DeviceId,
    },
    OobChanged {
        count: u64,
    },
    Audit {
        entry: AuditEntry,
    },
    Provisioning {
        state: ProvisioningState,
    },
    /// A security alert (a rogue DNS-SD advertiser; see [`Alert`]).
    Alert {
        alert: Alert,
    },
    /// An enrollment window opened, admitted a device or closed.
    Window {
        window: crate::policy::WindowView,
    },
    /// The stored auto-approval rules changed (reload `GET /admin/rules`).
    RulesChanged {
        revision: u64,
    },
    /// The subscriber fell behind and missed events: reload the lists.
    Lagged {
        missed: u64,
    },
}

impl AdminEvent {
    pub fn name(&self) -> &'static str {
        match self {
            AdminEvent::PendingUpserted { .. } => "pending_upserted",
            AdminEvent::PendingRemoved { .. } => "pending_removed",
            AdminEvent::DeviceUpserted { .. } => "device_upserted",
            AdminEvent::DeviceRemoved { .. } => "device_removed",
            AdminEvent::OobChanged { .. } => "oob_changed",
            AdminEvent::Audit { .. } => "audit",
            AdminEvent::Provisioning { .. } => "provisioning",
            AdminEvent::Alert { .. } => "alert",
            AdminEvent::Window { .. } => "window",
            AdminEvent::RulesChanged { .. } => "rules_changed",
            AdminEvent::Lagged { .. } => "lagged",
        }
    }
}

/// The administrator profile file written by `idprovd admin add` and on
/// first start; read by the TUI and oob-tool. TOML, mode 0600.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminProfile {
    pub name: String,
    /// `https://host:port`
    pub server: String,
    /// `Bearer` token: `idpa.<name>.<secret>`.
    #[serde(serialize_with = "Secret::serialize_exposed")]
    pub token: Secret,
    /// The daemon CA certificate (PEM) the client pins.
    pub ca_cert: String,
    pub ca_fingerprint: String,
}
