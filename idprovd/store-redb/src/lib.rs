//! The redb store. Every acknowledged change is committed with
//! `Durability::Immediate` before the answer leaves (security rule 5); the
//! request path runs its whole decision in one write transaction so a crash
//! leaves either all of it or none of it.
//!
//! Values are JSON (small, debuggable, schema-tolerant); keys are device ids,
//! so lists page by id with a range scan.

mod apply;
mod audit;
mod backup;
#[cfg(test)]
mod conformance;
mod health;
mod identity;
mod oob_import;
mod view;
mod x509;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition, WriteTransaction,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use idprovd_core::storage::StoreView;
use idprovd_core::store::{DeviceRecord, OobRecord, PendingRecord, StoreError, TokenRecord};

// Every table must also be listed in `backup.rs`: a backup refuses a store
// with a table it does not know rather than silently leave it out.
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
pub(crate) const OOB: TableDefinition<&str, &[u8]> = TableDefinition::new("oob");
/// MAC (normalised) → device id, for OOB entries that name a MAC.
pub(crate) const OOB_MAC: TableDefinition<&str, &str> = TableDefinition::new("oob_mac");
pub(crate) const DEVICES: TableDefinition<&str, &[u8]> = TableDefinition::new("devices");
pub(crate) const PENDING: TableDefinition<&str, &[u8]> = TableDefinition::new("pending");
/// `device_id \n jti` → expiry of the proof's memory.
pub(crate) const REPLAY: TableDefinition<&str, i64> = TableDefinition::new("replay");
pub(crate) const REPLAY_EXP: TableDefinition<(i64, &str), ()> = TableDefinition::new("replay_exp");
/// Token jti → [`TokenRecord`] (invariant I2: every token is recorded).
pub(crate) const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("tokens");
pub(crate) const TOKENS_EXP: TableDefinition<(i64, &str), ()> = TableDefinition::new("tokens_exp");
pub(crate) const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");

const SCHEMA_KEY: &str = "schema";
const SCHEMA: &[u8] = b"idprov-store/1";
const DAEMON_ID_KEY: &str = "daemon_id";
pub(crate) const CLOCK_KEY: &str = "clock_high_water";
pub(crate) const PROVISIONING_KEY: &str = "provisioning";
/// The stored rules and windows (`idprovd_core::policy::PolicyRecord`).
pub(crate) const POLICY_KEY: &str = "policy";
/// The store file in the data dir (named in core: the data dir rules need it).
pub const STORE_FILE: &str = idprovd_core::pki::STORE_FILE;

pub use health::StoreErrorOf;

/// This backend's error: a redb failure, or one of the storage interface's
/// errors (`StoreError`) it detected itself. Converted to `StoreError` (and
/// the core's `Error`) at the interface.
#[derive(Debug)]
pub struct DbError(pub StoreError);

impl From<StoreError> for DbError {
    fn from(e: StoreError) -> Self {
        DbError(e)
    }
}

impl From<DbError> for StoreError {
    fn from(e: DbError) -> Self {
        e.0
    }
}

impl From<DbError> for idprovd_core::Error {
    fn from(e: DbError) -> Self {
        idprovd_core::Error::Store(e.0)
    }
}

// I/O errors make the store unavailable (and reopened), damage is damage:
// see `health::classify`.
macro_rules! db_err {
    ($($t:ty),*) => {$(
        impl From<$t> for DbError {
            fn from(e: $t) -> Self { DbError(health::classify(e.into())) }
        }
    )*};
}
db_err!(
    redb::Error,
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError,
    redb::SetDurabilityError
);

/// Results inside this backend.
pub type StoreResult<T> = Result<T, DbError>;

/// A backend result as the storage interface reports it.
pub(crate) fn out<T>(r: StoreResult<T>) -> idprovd_core::store::StoreResult<T> {
    r.map_err(StoreError::from)
}

/// The daemon's one handle on its database. Cheap to clone.
#[derive(Clone)]
pub struct RedbStore {
    shared: Arc<health::Shared>,
    path: PathBuf,
    /// Durable commit latency, exported as `idprov_store_commit_seconds`.
    commit_seconds: prometheus_client::metrics::histogram::Histogram,
    /// Bytes of redb's page cache (`store.cache_size`), also on a reopen.
    cache_size: usize,
}

/// redb's page cache when none is configured (redb's own default is
/// 1 GiB, which lets the daemon's memory follow the store's size).
pub const DEFAULT_CACHE_SIZE: usize = 16 * 1024 * 1024;

impl RedbStore {
    /// Open the store in `dir`. `create` is true only when the data dir was
    /// just initialised; otherwise a missing file is an error.
    pub fn open(dir: &Path, daemon_id: &str, create: bool) -> Result<RedbStore, StoreError> {
        Self::open_cached(dir, daemon_id, create, DEFAULT_CACHE_SIZE)
    }

    /// [`RedbStore::open`] with a page cache of `cache_size` bytes.
    pub fn open_cached(
        dir: &Path,
        daemon_id: &str,
        create: bool,
        cache_size: usize,
    ) -> Result<RedbStore, StoreError> {
        Self::open_local(dir, daemon_id, create, cache_size).map_err(StoreError::from)
    }

    fn open_local(
        dir: &Path,
        daemon_id: &str,
        create: bool,
        cache_size: usize,
    ) -> StoreResult<RedbStore> {
        let path = dir.join(STORE_FILE);
        let exists = path.exists();
        if !exists && !create {
            return Err(StoreError::Missing(path).into());
        }
        let db = if exists {
            open_db(&path, cache_size)?
        } else {
            Database::builder()
                .set_cache_size(cache_size)
                .create(&path)
                .map_err(|e| open_error(&path, e))?
        };
        let store = RedbStore {
            shared: Arc::new(health::Shared::new(db)),
            path: path.clone(),
            commit_seconds: commit_histogram(),
            cache_size,
        };
        if exists {
            store.check_schema(daemon_id)?;
        } else {
            store.init(daemon_id)?;
        }
        // Stores older than the X.509 tables get them now.
        store.ensure_x509_tables()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The commit-latency histogram (shared, not a copy).
    pub fn commit_histogram(&self) -> prometheus_client::metrics::histogram::Histogram {
        self.commit_seconds.clone()
    }

    fn init(&self, daemon_id: &str) -> StoreResult<()> {
        self.with_writable(|db| Self::init_in(db, daemon_id))
    }

    fn init_in(db: &Database, daemon_id: &str) -> StoreResult<()> {
        let tx = db.begin_write()?;
        {
            let mut meta = tx.open_table(META)?;
            meta.insert(SCHEMA_KEY, SCHEMA)?;
            meta.insert(DAEMON_ID_KEY, daemon_id.as_bytes())?;
            // Create every table so readers never meet a missing one.
            tx.open_table(OOB)?;
            tx.open_table(OOB_MAC)?;
            tx.open_table(DEVICES)?;
            tx.open_table(PENDING)?;
            tx.open_table(REPLAY)?;
            tx.open_table(REPLAY_EXP)?;
            tx.open_table(TOKENS)?;
            tx.open_table(TOKENS_EXP)?;
            tx.open_table(AUDIT)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn check_schema(&self, daemon_id: &str) -> StoreResult<()> {
        let rx = self.with_db(|db| db.begin_read().map_err(DbError::from))?;
        let meta = match rx.open_table(META) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => {
                return Err(StoreError::Foreign(self.path.clone()).into());
            }
            Err(e) => return Err(e.into()),
        };
        let schema = meta.get(SCHEMA_KEY)?.map(|v| v.value().to_vec());
        if schema.as_deref() != Some(SCHEMA) {
            return Err(StoreError::Foreign(self.path.clone()).into());
        }
        let found = meta
            .get(DAEMON_ID_KEY)?
            .map(|v| String::from_utf8_lossy(v.value()).into_owned())
            .unwrap_or_default();
        if found != daemon_id {
            return Err(StoreError::WrongDaemon {
                path: self.path.clone(),
                found,
                expected: daemon_id.to_string(),
            }
            .into());
        }
        // Touch every table: a damaged tree shows up now, not mid-request.
        for t in [OOB, DEVICES, PENDING, TOKENS] {
            rx.open_table(t)?.len()?;
        }
        Ok(())
    }

    /// Run `f` in one write transaction and commit it durably if it returns
    /// Ok. An Err aborts: nothing it wrote is kept.
    pub fn write<T, E>(&self, f: impl FnOnce(&mut Tx<'_>) -> Result<T, E>) -> Result<T, E>
    where
        E: From<DbError> + health::StoreErrorOf,
    {
        self.with_writable(|db| {
            let mut wtx = db.begin_write().map_err(DbError::from)?;
            wtx.set_durability(Durability::Immediate)
                .map_err(DbError::from)?;
            let mut tx = Tx { tx: &wtx };
            let out = f(&mut tx)?;
            self.commit(wtx)?;
            Ok(out)
        })
    }

    /// Commit durably, timing it for `idprov_store_commit_seconds`.
    pub(crate) fn commit(&self, wtx: WriteTransaction) -> StoreResult<()> {
        let started = std::time::Instant::now();
        wtx.commit()?;
        self.commit_seconds.observe(started.elapsed().as_secs_f64());
        Ok(())
    }
}

/// Open an existing store file, checking every page of it first (redb's
/// integrity check: checksums and structure of every committed tree). A
/// damaged file is refused here rather than found by a request later; on
/// 100,000 devices (a 257 MiB file) the check took 187 ms against 1.6 ms
/// for a plain open (bench_ops; docs/operations.md, "Figures").
pub(crate) fn open_db(path: &Path, cache_size: usize) -> StoreResult<Database> {
    Database::builder()
        .set_check_integrity_on_open(true)
        .set_cache_size(cache_size)
        .open(path)
        .map_err(|e| open_error(path, e))
}

fn open_error(path: &Path, e: redb::DatabaseError) -> DbError {
    DbError(match e {
        redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked(path.to_path_buf()),
        // A full disk or a failing device is not damage: a later start (or
        // reopen) may succeed, so it must not read as "restore a backup".
        // (redb reports a file that is not a database as InvalidData.)
        redb::DatabaseError::Storage(redb::StorageError::Io(e))
            if e.kind() != std::io::ErrorKind::InvalidData =>
        {
            StoreError::Unavailable(format!("{}: {e}", path.display()))
        }
        other => StoreError::Corrupt {
            path: path.to_path_buf(),
            message: other.to_string(),
        },
    })
}

/// Decode a stored record; one that does not decode (a bug, or damage the
/// page checksums did not catch) is an error naming its type and key, never
/// a panic.
fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(bytes).map_err(|e| {
        let ty = std::any::type_name::<T>();
        let ty = ty.rsplit("::").next().unwrap_or(ty);
        DbError(StoreError::Record(format!("{ty} {key:?}: {e}")))
    })
}

fn encode<T: Serialize>(v: &T) -> StoreResult<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| DbError(StoreError::Record(e.to_string())))
}

/// A write transaction with typed accessors.
pub struct Tx<'a> {
    tx: &'a WriteTransaction,
}

/// A read snapshot with typed accessors.
pub struct Rx {
    tx: ReadTransaction,
}

macro_rules! json_table_writes {
    ($put:ident, $del:ident, $table:ident, $ty:ty) => {
        impl Tx<'_> {
            pub fn $put(&mut self, id: &str, rec: &$ty) -> StoreResult<()> {
                let bytes = encode(rec)?;
                self.tx.open_table($table)?.insert(id, bytes.as_slice())?;
                Ok(())
            }
            pub fn $del(&mut self, id: &str) -> StoreResult<bool> {
                Ok(self.tx.open_table($table)?.remove(id)?.is_some())
            }
        }
    };
}

json_table_writes!(put_device, delete_device, DEVICES, DeviceRecord);
json_table_writes!(put_pending, delete_pending, PENDING, PendingRecord);
json_table_writes!(put_oob_raw, delete_oob_raw, OOB, OobRecord);
json_table_writes!(put_token_raw, delete_token_raw, TOKENS, TokenRecord);

impl Tx<'_> {
    /// Insert or replace an OOB entry, keeping the MAC index in step.
    pub fn put_oob(&mut self, rec: &OobRecord) -> StoreResult<()> {
        let id = rec.device_id.as_str();
        let old = StoreView::oob(self, id)?;
        let mut macs = self.tx.open_table(OOB_MAC)?;
        if let Some(old_mac) = old.as_ref().and_then(|o| o.mac) {
            // Only our own mapping: in one batch another entry may already
            // have taken this MAC over.
            let key = old_mac.to_string();
            let ours = macs.get(key.as_str())?.is_some_and(|v| v.value() == id);
            if ours {
                macs.remove(key.as_str())?;
            }
        }
        if let Some(mac) = rec.mac {
            macs.insert(mac.to_string().as_str(), id)?;
        }
        drop(macs);
        self.put_oob_raw(id, rec)
    }

    pub fn delete_oob(&mut self, id: &str) -> StoreResult<bool> {
        if let Some(old) = StoreView::oob(self, id)? {
            if let Some(mac) = old.mac {
                let mut macs = self.tx.open_table(OOB_MAC)?;
                let key = mac.to_string();
                let ours = macs.get(key.as_str())?.is_some_and(|v| v.value() == id);
                if ours {
                    macs.remove(key.as_str())?;
                }
            }
            self.delete_oob_raw(id)?;
            return Ok(true);
        }
        Ok(false)
    }

    // ---- replay cache ----

    /// Remember a proof id until `expires`. Returns false if it was already
    /// known (a replay).
    pub fn remember_proof(&mut self, key: &str, expires: i64) -> StoreResult<bool> {
        let mut t = self.tx.open_table(REPLAY)?;
        if t.get(key)?.is_some() {
            return Ok(false);
        }
        t.insert(key, expires)?;
        self.tx.open_table(REPLAY_EXP)?.insert((expires, key), ())?;
        Ok(true)
    }

    /// Forget proof ids whose memory ended before `now`; at most `max`.
    pub fn purge_replay(&mut self, now: i64, max: usize) -> StoreResult<usize> {
        self.purge_expired(REPLAY_EXP, REPLAY, now, max)
    }

    /// Remove entries of `table` whose `(expiry, key)` index entry in `idx`
    /// is older than `now`, oldest first; at most `max`.
    fn purge_expired<V: redb::Value + 'static>(
        &mut self,
        idx: TableDefinition<(i64, &str), ()>,
        table: TableDefinition<&str, V>,
        now: i64,
        max: usize,
    ) -> StoreResult<usize> {
        let mut idx = self.tx.open_table(idx)?;
        let mut t = self.tx.open_table(table)?;
        let mut n = 0;
        while n < max {
            let Some((k, _)) = idx.first()? else { break };
            let (exp, key) = k.value();
            if exp >= now {
                break;
            }
            let key = key.to_string();
            drop(k);
            idx.remove((exp, key.as_str()))?;
            t.remove(key.as_str())?;
            n += 1;
        }
        Ok(n)
    }

    // ---- tokens ----

    pub fn put_token(&mut self, rec: &TokenRecord) -> StoreResult<()> {
        self.put_token_raw(&rec.jti, rec)?;
        self.tx
            .open_table(TOKENS_EXP)?
            .insert((rec.expires_at, rec.jti.as_str()), ())?;
        Ok(())
    }

    /// Drop records of tokens that expired before `now`; at most `max`.
    pub fn purge_tokens(&mut self, now: i64, max: usize) -> StoreResult<usize> {
        self.purge_expired(TOKENS_EXP, TOKENS, now, max)
    }

    // ---- meta ----

    pub fn set_provisioning(
        &mut self,
        state: &idprov_proto::admin::ProvisioningState,
    ) -> StoreResult<()> {
        let bytes = encode(state)?;
        self.tx
            .open_table(META)?
            .insert(PROVISIONING_KEY, bytes.as_slice())?;
        Ok(())
    }
}

/// Buckets from 100 µs to ~3.3 s: an fsync is ~1 ms on an SSD, far more on
/// an SD card (`idprov_store_commit_seconds`).
fn commit_histogram() -> prometheus_client::metrics::histogram::Histogram {
    prometheus_client::metrics::histogram::Histogram::new(
        prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.0, 16),
    )
}

/// Walk the audit table of a stopped daemon's store in `data_dir`, oldest
/// first: `visit(seq key, entry JSON)` returns false to stop. A running
/// daemon's lock is `StoreError::Locked`; a store without an audit table
/// has nothing to visit.
pub fn read_audit_offline(
    data_dir: &Path,
    mut visit: impl FnMut(u64, &[u8]) -> bool,
) -> Result<(), StoreError> {
    let path = data_dir.join(STORE_FILE);
    let db = open_db(&path, DEFAULT_CACHE_SIZE).map_err(StoreError::from)?;
    let mut read = || -> StoreResult<()> {
        let rx = db.begin_read()?;
        let table = match rx.open_table(AUDIT) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        for item in table.iter()? {
            let (k, v) = item?;
            if !visit(k.value(), v.value()) {
                break;
            }
        }
        Ok(())
    };
    read().map_err(StoreError::from)
}
