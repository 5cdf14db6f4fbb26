//! The storage interface: what the use cases need from a store, and nothing
//! about how it keeps it.
//!
//! Every change goes through one shape: a use case reads what it needs
//! through a [`StoreView`], decides, and records what to write in a [`Unit`]
//! (records to put and delete, audit entries, events). Only when the
//! decision returns `Ok` does the store apply the unit's [`Change`]s, all of
//! them in one durable transaction; applying cannot fail but on I/O. Events
//! are published only after the commit. A decision that returns `Err` has
//! written nothing.
//!
//! The decision closure may run more than once (a networked SQL backend
//! retries on a serialization conflict) and must have no side effects
//! beyond its `Unit`; reads are not assumed free (ask for what you need).
//! Within one decision, reads see the state *before* the unit: a decision
//! that must see its own writes keeps them in its own variables.

use std::fs::File;
use std::sync::Arc;

use idprov_proto::admin::{AdminEvent, AuditEntry, ProvisioningState};
use idprov_proto::error::EntryError;
use idprov_proto::oob_import::OobImportResult;
use idprov_proto::{DeviceId, MacAddr};

use std::path::PathBuf;

use crate::audit::AuditDraft;
use crate::error::Error;
use crate::policy::PolicyRecord;
use crate::records::{
    CertRecord, CrlState, DeviceRecord, OobRecord, PendingRecord, RegistryCaRecord, RetiredKey,
    TokenRecord,
};

/// A page of records: the items, the key to continue after, the total.
pub type Paged<T> = (Vec<T>, Option<String>, u64);

/// CRL entries `(serial, revoked_at, reason code)` still valid, and the
/// serials of entries whose certificate expired.
pub type CrlEntries = (Vec<(String, i64, u8)>, Vec<String>);

/// A committed import: its result, its audit entry (none for a dry run),
/// and the OOB count after it.
pub type ImportCommitted = (OobImportResult, Option<AuditEntry>, u64);

/// Reads a use case makes while it decides. Implemented by a backend's
/// read snapshot and by its write transaction (which sees the same state
/// until the unit is applied).
pub trait StoreView {
    fn device(&self, id: &str) -> StoreResult<Option<DeviceRecord>>;
    fn pending(&self, id: &str) -> StoreResult<Option<PendingRecord>>;
    fn oob(&self, id: &str) -> StoreResult<Option<OobRecord>>;
    fn token(&self, jti: &str) -> StoreResult<Option<TokenRecord>>;
    /// Which device id an OOB entry binds this MAC to, if any.
    fn oob_mac_owner(&self, mac: &str) -> StoreResult<Option<String>>;
    fn device_count(&self) -> StoreResult<u64>;
    fn pending_count(&self) -> StoreResult<u64>;
    fn oob_count(&self) -> StoreResult<u64>;
    fn provisioning(&self) -> StoreResult<ProvisioningState>;
    /// The latest time any decision was made at (security rule 9).
    fn clock_high_water(&self) -> StoreResult<Option<i64>>;
    /// Was this proof (`device_id \n jti`) seen while it is remembered?
    fn proof_seen(&self, key: &str) -> StoreResult<bool>;
    /// Proofs remembered, and of those, how many are still live at `now`.
    fn replay_count(&self) -> StoreResult<u64>;
    /// Token records kept (until they expire).
    fn token_count(&self) -> StoreResult<u64>;
    fn replay_live_count(&self, now: i64) -> StoreResult<u64>;
    /// Pending requests last seen before `cutoff`, at most `max`.
    fn stale_pending(&self, cutoff: i64, max: usize) -> StoreResult<Vec<PendingRecord>>;
    /// Device ids the identity index lists for a key or a MAC (other than
    /// `except`), at most a few; the caller checks that each still holds it.
    fn ids_with_key(&self, kid: &str, except: &str) -> StoreResult<Vec<String>>;
    fn ids_with_mac(&self, mac: &str, except: &str) -> StoreResult<Vec<String>>;

    fn cert(&self, serial: &str) -> StoreResult<Option<CertRecord>>;
    fn device_certs(&self, device: &str) -> StoreResult<Vec<CertRecord>>;
    fn retired_key(&self, kid: &str) -> StoreResult<Option<RetiredKey>>;
    fn registry_cas(&self) -> StoreResult<Vec<RegistryCaRecord>>;
    /// The stored CRL and what it is.
    fn crl(&self) -> StoreResult<Option<(Vec<u8>, CrlState)>>;
    /// The revocation generation (bumped by every revocation).
    fn revocation_version(&self) -> StoreResult<u64>;
    /// CRL entries `(serial, revoked_at, reason code)` of certificates still
    /// valid at `now`, and the serials of entries whose certificate expired.
    fn crl_entries(&self, now: i64) -> StoreResult<CrlEntries>;

    fn list_devices(
        &self,
        after: Option<&str>,
        limit: usize,
        keep: &dyn Fn(&DeviceRecord) -> bool,
    ) -> StoreResult<Paged<DeviceRecord>>;
    fn list_pending(
        &self,
        after: Option<&str>,
        limit: usize,
        keep: &dyn Fn(&PendingRecord) -> bool,
    ) -> StoreResult<Paged<PendingRecord>>;
    fn list_oob(
        &self,
        after: Option<&str>,
        limit: usize,
        keep: &dyn Fn(&OobRecord) -> bool,
    ) -> StoreResult<Paged<OobRecord>>;
    /// Audit entries with seq > `after`, oldest first, filtered by substring.
    fn audit_page(
        &self,
        after: u64,
        limit: usize,
        q: Option<&str>,
    ) -> StoreResult<(Vec<AuditEntry>, Option<u64>, u64)>;
    /// The whole audit chain, in order.
    fn audit_all(&self) -> StoreResult<Vec<AuditEntry>>;
    /// The stored rules and enrollment windows (policy.rs), if ever written.
    fn policy(&self) -> StoreResult<Option<PolicyRecord>>;
}

/// One write a [`Unit`] asks for. The store applies them in order.
/// Deliberately exhaustive: a new kind of change must fail to compile in
/// every backend until it is handled there.
#[derive(Debug, Clone)]
pub enum Change {
    PutDevice(DeviceRecord),
    DeleteDevice(DeviceId),
    PutPending(PendingRecord),
    DeletePending(DeviceId),
    /// Insert or replace an OOB entry (the MAC index follows).
    PutOob(OobRecord),
    DeleteOob(DeviceId),
    /// Record an issued token (invariant I2).
    PutToken(TokenRecord),
    /// Make a proof single-use until `until` (invariant I5).
    RememberProof {
        key: String,
        until: i64,
    },
    /// Forget proofs and token records that expired before `now`, at most
    /// `max` of each.
    PurgeExpired {
        now: i64,
        max: usize,
    },
    /// Raise the clock high-water mark to `now` (never lowers it).
    AdvanceClock(i64),
    /// Set the clock high-water mark to exactly this time, lowering it: an
    /// administrator accepted a corrected clock.
    AcceptClock(i64),
    SetProvisioning(ProvisioningState),
    /// Index that `device_id` used this key (and MAC).
    NoteIdentity {
        device_id: DeviceId,
        kid: String,
        mac: Option<MacAddr>,
    },
    /// Drop index entries that no longer hold (met while reading).
    ForgetKeyHolder {
        kid: String,
        device_id: String,
    },
    ForgetMacHolder {
        mac: String,
        device_id: String,
    },
    /// Append to the hash-chained audit log; the store assigns seq and hash.
    Audit(AuditDraft),
    PutCert(CertRecord),
    /// Mark the certificate (already updated in the record) revoked: the
    /// record is stored, listed on the CRL and the generation bumped.
    RevokeCert {
        cert: CertRecord,
        code: u8,
    },
    RetireKey {
        kid: String,
        record: RetiredKey,
    },
    PutRegistryCa(RegistryCaRecord),
    DeleteRegistryCa(String),
    PutCrl {
        der: Vec<u8>,
        state: CrlState,
    },
    DropCrlEntries(Vec<String>),
    /// Replace the stored rules and windows (one small record: every rule
    /// edit, window opening, admission through a window and closing).
    PutPolicy(PolicyRecord),
}

/// What one decision writes, and what it tells administrators afterwards.
#[derive(Debug, Default)]
pub struct Unit {
    changes: Vec<Change>,
    events: Vec<Announce>,
    audits: usize,
}

#[derive(Debug)]
enum Announce {
    Event(AdminEvent),
    /// The n-th audit entry of this unit, once the store has chained it.
    Audit(usize),
}

impl Unit {
    pub fn new() -> Unit {
        Unit::default()
    }

    pub fn change(&mut self, c: Change) {
        self.changes.push(c);
    }

    /// An event for administrators, published after the commit.
    pub fn event(&mut self, e: AdminEvent) {
        self.events.push(Announce::Event(e));
    }

    /// Append an audit entry, and announce it after the commit.
    pub fn audit(&mut self, draft: AuditDraft) {
        self.changes.push(Change::Audit(draft));
        self.events.push(Announce::Audit(self.audits));
        self.audits += 1;
    }

    pub fn put_device(&mut self, dev: &DeviceRecord) {
        self.change(Change::PutDevice(dev.clone()));
    }

    /// Store the device and tell administrators about it.
    pub fn upsert_device(&mut self, dev: &DeviceRecord) {
        self.put_device(dev);
        self.event(AdminEvent::DeviceUpserted { device: dev.view() });
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    pub fn changes(&self) -> &[Change] {
        &self.changes
    }

    pub fn into_changes(self) -> (Vec<Change>, Committer) {
        (
            self.changes,
            Committer {
                events: self.events,
            },
        )
    }
}

/// Turns a unit's announcements into events once its audit entries exist.
#[derive(Debug)]
pub struct Committer {
    events: Vec<Announce>,
}

impl Committer {
    pub fn events(self, mut audit: Vec<AuditEntry>) -> Vec<AdminEvent> {
        let mut out = Vec::with_capacity(self.events.len());
        for a in self.events {
            match a {
                Announce::Event(e) => out.push(e),
                Announce::Audit(i) => {
                    if let Some(entry) = audit.get_mut(i) {
                        out.push(AdminEvent::Audit {
                            entry: std::mem::replace(entry, empty_entry()),
                        });
                    }
                }
            }
        }
        out
    }
}

fn empty_entry() -> AuditEntry {
    AuditEntry {
        seq: 0,
        at: 0,
        actor: String::new(),
        action: String::new(),
        target: None,
        source: None,
        detail: String::new(),
        prev_hash: String::new(),
        hash: String::new(),
    }
}

/// Each decision's outcome in a batch ([`Store::transact_batch`]), in order.
pub type BatchResults = Vec<Result<Vec<AdminEvent>, Error>>;

/// A decision: reads through the view, records its writes in the unit.
pub type Decide<'a> = dyn FnMut(&dyn StoreView, &mut Unit) -> Result<(), Error> + Send + 'a;

/// A store. Blocking: callers run it off the async threads.
pub trait Store: Send + Sync + 'static {
    /// Run `read` on one consistent snapshot.
    fn read(&self, read: &mut dyn FnMut(&dyn StoreView) -> Result<(), Error>) -> Result<(), Error>;

    /// Run `decide` and apply the unit it fills, atomically and durably.
    /// Returns the unit's events, its audit entries chained in. An `Err`
    /// from `decide` aborts with nothing written.
    fn transact(&self, decide: &mut Decide<'_>) -> Result<Vec<AdminEvent>, Error>;

    /// Group commit: run `batch`'s decisions in order and commit what they
    /// decided together. The contract every backend keeps:
    /// - each decision sees the changes of the decisions before it in the
    ///   batch that returned `Ok` (two decisions consuming one one-time
    ///   secret: the second sees it consumed);
    /// - a decision that returns `Err` writes nothing and leaves the others
    ///   alone: its slot holds its error;
    /// - `Ok(slots)`: every `Ok` slot is committed durably (its events carry
    ///   their audit entries); `Err`: nothing of the batch is committed (an
    ///   I/O error fails every decision in it, none is acknowledged).
    ///
    /// The default runs each decision in its own [`Store::transact`] (one
    /// durable commit each, which keeps the contract); a backend that can
    /// share one commit overrides it.
    fn transact_batch(&self, batch: &mut [&mut Decide<'_>]) -> Result<BatchResults, Error> {
        Ok(batch.iter_mut().map(|d| self.transact(&mut **d)).collect())
    }

    /// Bulk OOB import (see `oob_import`): stage checked entries of session
    /// `sid`; returns the entries staged so far and the refused ones.
    fn stage_oob(&self, sid: &str, records: &[OobRecord]) -> Result<(u64, Vec<EntryError>), Error>;
    /// Apply a session's staged entries and drop its staging, together with
    /// `audit` (built from the result) in the same transaction. Refused
    /// entries abort it.
    fn commit_oob_import(
        &self,
        sid: &str,
        opts: CommitOptions,
        audit: &mut dyn FnMut(&OobImportResult) -> Option<AuditDraft>,
    ) -> Result<Result<ImportCommitted, Vec<EntryError>>, Error>;
    fn drop_oob_staging(&self, sid: &str) -> Result<(), Error>;
    /// Drop staging of every session not in `live`; returns how many.
    fn drop_stale_oob_staging(
        &self,
        live: &std::collections::HashSet<String>,
    ) -> Result<usize, Error>;

    /// Copy one consistent snapshot of everything into `dst` (backups).
    fn snapshot_into(&self, dst: File) -> StoreResult<SnapshotCounts>;
    /// Where the data lives, for messages.
    fn location(&self) -> String;

    /// Whether the store takes work now, and how often it failed on I/O.
    /// Cheap and non-blocking: readiness, the watchdog and the metrics ask
    /// it on every check.
    fn status(&self) -> StoreStatus;
    /// Try to leave [`StoreHealth::Unavailable`]: reopen the database (or
    /// reconnect) once, now. Blocking; does nothing when the store is
    /// healthy. The caller paces the attempts (backoff).
    fn recover(&self) -> StoreHealth;
}

/// Whether a store takes work. The rule for every backend: after an I/O
/// error (disk full, a failed device, a lost database connection) the
/// store answers [`StoreError::Unavailable`] (not a 500) until it has
/// recovered by itself, and nothing it acknowledged before is lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreHealth {
    Ok,
    /// Failed on I/O; `reason` is the last error, for operators.
    Unavailable {
        reason: String,
    },
}

/// A store's health and its I/O failure counters (for `/metrics`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreStatus {
    pub health: StoreHealth,
    /// I/O errors that made the store unavailable.
    pub io_errors: u64,
    /// Successful recoveries (reopens, reconnects) after one.
    pub recoveries: u64,
    /// The connection pool of a networked store (none for an embedded one).
    pub pool: Option<PoolFigures>,
}

/// A networked store's connection pool, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolFigures {
    /// Connections open now (in use and idle).
    pub connections: u32,
    pub idle: u32,
    /// The most the pool opens.
    pub max: u32,
}

/// A shared handle on a store.
pub type SharedStore = Arc<dyn Store>;

impl dyn Store {
    /// [`Store::read`] returning what `f` returns.
    pub fn read_with<T>(
        &self,
        f: impl FnOnce(&dyn StoreView) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut f = Some(f);
        let mut out = None;
        self.read(&mut |v| {
            if let Some(f) = f.take() {
                out = Some(f(v)?);
            }
            Ok(())
        })?;
        out.ok_or_else(|| {
            Error::internal(
                "the daemon could not complete the request",
                "read did not run",
            )
        })
    }

    /// [`Store::transact`] returning what `decide` returns, with the events.
    pub fn transact_with<T: Send>(
        &self,
        mut decide: impl FnMut(&dyn StoreView, &mut Unit) -> Result<T, Error> + Send,
    ) -> Result<(T, Vec<AdminEvent>), Error> {
        let mut out = None;
        let events = self.transact(&mut |v, u| {
            out = Some(decide(v, u)?);
            Ok(())
        })?;
        out.map(|o| (o, events)).ok_or_else(|| {
            Error::internal(
                "the daemon could not complete the request",
                "decision did not run",
            )
        })
    }
}

/// Why the store failed. Nothing of the operation was applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("another idprovd is already using {0}; stop it or pick another data dir")]
    Locked(PathBuf),
    #[error(
        "{0} is not an idprov store (missing or foreign schema marker); refusing to use it. Move it away or restore a backup"
    )]
    Foreign(PathBuf),
    #[error("{path} belongs to daemon {found}, but this data dir is daemon {expected}")]
    WrongDaemon {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error(
        "{path} cannot be opened: {message}. The database may be corrupt; restore a backup (idprovd never starts empty over it)"
    )]
    Corrupt { path: PathBuf, message: String },
    #[error(
        "the data dir was initialised but {0} is missing; restore it from a backup (idprovd never starts empty over a lost store)"
    )]
    Missing(PathBuf),
    #[error("storage error: {0}")]
    Db(String),
    /// An I/O error (disk full, device error, lost connection): the store
    /// takes no work until it has recovered (reopened) by itself.
    #[error(
        "the store is unavailable after an I/O error ({0}); it recovers by itself once the cause is gone"
    )]
    Unavailable(String),
    /// A page or record of the store failed its checksum or structure check
    /// while the daemon ran: the file was damaged under it.
    #[error("the store is damaged: {0}; stop the daemon and restore a backup")]
    Damaged(String),
    #[error("stored record {0} is not valid")]
    Record(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// What a snapshot holds.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct SnapshotCounts {
    pub devices: u64,
    pub pending: u64,
    pub oob: u64,
    pub tokens: u64,
    pub audit: u64,
    #[serde(default)]
    pub certificates: u64,
}

/// What a commit does besides the upserts.
#[derive(Debug, Clone, Copy)]
pub struct CommitOptions {
    pub replace: bool,
    pub prune: bool,
    pub dry_run: bool,
    pub expected_entries: u64,
    pub now: i64,
}
