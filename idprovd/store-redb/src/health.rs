//! The store's health: the open database behind a lock, and the rule
//! "after an I/O error, reopen the database".
//!
//! A failed commit (disk full, a device error) leaves redb refusing every
//! later write ("Previous I/O error occurred") until the file is opened
//! again. So the first I/O error marks the store unavailable: writes are
//! refused with [`StoreError::Unavailable`] at once (the HTTP layer answers
//! 503), readiness and the watchdog see it, and [`RedbStore::recover`]
//! (called by the daemon with backoff) closes the handle and opens the file
//! again once the filesystem has room. Reopening runs redb's recovery and
//! integrity check: what was committed before the error is what the
//! reopened store holds.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError, RwLock};

use redb::{Database, Durability, ReadableTable};

use idprovd_core::Error;
use idprovd_core::storage::{StoreHealth, StoreStatus};
use idprovd_core::store::StoreError;

use super::{DbError, META, RedbStore, StoreResult, open_db};

/// Free space the filesystem must have before a reopen is tried: below it
/// the next commit would fail again at once.
const MIN_FREE_BYTES: u64 = 1 << 20;
const PROBE_KEY: &str = "io_probe";

/// What every clone of a store shares.
pub(crate) struct Shared {
    /// `None` only after a reopen failed: every operation is refused then.
    /// Operations hold the read lock for their whole transaction, so a
    /// reopen (the write lock) waits for them and they wait for it.
    db: RwLock<Option<Database>>,
    /// The I/O error the store is unavailable for; `None` when healthy.
    failed: Mutex<Option<String>>,
    io_errors: AtomicU64,
    recoveries: AtomicU64,
}

impl Shared {
    pub(crate) fn new(db: Database) -> Shared {
        Shared {
            db: RwLock::new(Some(db)),
            failed: Mutex::new(None),
            io_errors: AtomicU64::new(0),
            recoveries: AtomicU64::new(0),
        }
    }
}

/// Sort a redb error into the storage interface's kinds: I/O (the store
/// becomes unavailable until reopened), damage, or anything else.
pub(crate) fn classify(e: redb::Error) -> StoreError {
    match e {
        redb::Error::Io(io) => StoreError::Unavailable(io.to_string()),
        redb::Error::PreviousIo => {
            StoreError::Unavailable("an earlier write failed on I/O".to_string())
        }
        redb::Error::DatabaseClosed => StoreError::Unavailable("the store was closed".to_string()),
        redb::Error::Corrupted(m) => StoreError::Damaged(m),
        other => StoreError::Db(other.to_string()),
    }
}

/// The storage error in an operation's error, if it is one.
pub trait StoreErrorOf {
    fn store_error(&self) -> Option<&StoreError>;
}

impl StoreErrorOf for Error {
    fn store_error(&self) -> Option<&StoreError> {
        match self {
            Error::Store(e) => Some(e),
            _ => None,
        }
    }
}

impl StoreErrorOf for StoreError {
    fn store_error(&self) -> Option<&StoreError> {
        Some(self)
    }
}

impl StoreErrorOf for DbError {
    fn store_error(&self) -> Option<&StoreError> {
        Some(&self.0)
    }
}

impl RedbStore {
    fn failure(&self) -> Option<String> {
        self.shared
            .failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_failure(&self, reason: Option<String>) {
        *self
            .shared
            .failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = reason;
    }

    fn unavailable(&self) -> DbError {
        let reason = self
            .failure()
            .unwrap_or_else(|| "the store is being reopened".to_string());
        DbError(StoreError::Unavailable(reason))
    }

    /// Run `f` on the open database (reads: a store that failed on I/O
    /// still serves what it committed until it is reopened).
    pub(crate) fn with_db<T, E>(&self, f: impl FnOnce(&Database) -> Result<T, E>) -> Result<T, E>
    where
        E: From<DbError> + StoreErrorOf,
    {
        let slot = self
            .shared
            .db
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(db) = slot.as_ref() else {
            return Err(self.unavailable().into());
        };
        let out = f(db);
        drop(slot);
        self.watch(out)
    }

    /// Run `f` on the open database to write: refused at once while the
    /// store is unavailable (redb would refuse it anyway until reopened).
    pub(crate) fn with_writable<T, E>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<DbError> + StoreErrorOf,
    {
        if self.failure().is_some() {
            return Err(self.unavailable().into());
        }
        self.with_db(f)
    }

    /// Note an I/O error in an operation's result: the store becomes
    /// unavailable until [`RedbStore::recover`] reopens it.
    fn watch<T, E: StoreErrorOf>(&self, r: Result<T, E>) -> Result<T, E> {
        if let Err(e) = &r
            && let Some(StoreError::Unavailable(reason)) = e.store_error()
        {
            let mut failed = self
                .shared
                .failed
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if failed.is_none() {
                self.shared.io_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    store = %self.path.display(),
                    error = %reason,
                    "store I/O error: refusing writes until the store is reopened"
                );
                *failed = Some(reason.clone());
            }
        }
        r
    }

    pub(crate) fn status(&self) -> StoreStatus {
        StoreStatus {
            health: match self.failure() {
                None => StoreHealth::Ok,
                Some(reason) => StoreHealth::Unavailable { reason },
            },
            io_errors: self.shared.io_errors.load(Ordering::Relaxed),
            recoveries: self.shared.recoveries.load(Ordering::Relaxed),
            pool: None,
        }
    }

    /// Close and reopen the database if it failed on I/O and the
    /// filesystem has room again; then prove a durable write works.
    pub(crate) fn recover(&self) -> StoreHealth {
        if self.failure().is_none() {
            return StoreHealth::Ok;
        }
        if let Some(short) = space_short(&self.path) {
            self.set_failure(Some(short.clone()));
            return StoreHealth::Unavailable { reason: short };
        }
        let mut slot = self
            .shared
            .db
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        // redb keeps the file locked: the old handle must be closed before
        // the file can be opened again.
        if let Some(old) = slot.take()
            && let Err(e) = old.close()
        {
            tracing::warn!(error = %e, "closing the failed store handle");
        }
        let reopened = open_db(&self.path, self.cache_size)
            .map_err(|e| e.0.to_string())
            .and_then(|db| match probe(&db) {
                Ok(()) => Ok(db),
                Err(e) => Err(e.0.to_string()),
            });
        match reopened {
            Ok(db) => {
                *slot = Some(db);
                self.set_failure(None);
                self.shared.recoveries.fetch_add(1, Ordering::Relaxed);
                tracing::info!(store = %self.path.display(), "store reopened after an I/O error; serving again");
                StoreHealth::Ok
            }
            Err(reason) => {
                tracing::warn!(store = %self.path.display(), error = %reason, "reopening the store failed; will try again");
                self.set_failure(Some(reason.clone()));
                StoreHealth::Unavailable { reason }
            }
        }
    }
}

/// A durable write: a reopened store is healthy only once one commits.
fn probe(db: &Database) -> StoreResult<()> {
    let mut tx = db.begin_write()?;
    tx.set_durability(Durability::Immediate)?;
    {
        let mut meta = tx.open_table(META)?;
        let n = meta
            .get(PROBE_KEY)?
            .and_then(|v| <[u8; 8]>::try_from(v.value()).ok())
            .map_or(0, u64::from_be_bytes);
        meta.insert(PROBE_KEY, n.wrapping_add(1).to_be_bytes().as_slice())?;
    }
    tx.commit()?;
    Ok(())
}

/// Why the filesystem holding `path` cannot take a commit now, if so.
fn space_short(path: &Path) -> Option<String> {
    let dir = path.parent()?;
    let st = rustix::fs::statvfs(dir).ok()?;
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    (free < MIN_FREE_BYTES).then(|| {
        format!(
            "no space left on the filesystem of {} ({free} bytes free)",
            dir.display()
        )
    })
}
