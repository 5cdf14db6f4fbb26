//! The store's health: after a lost connection (or a database that went
//! away) the store answers `StoreError::Unavailable` at once — a 503 with
//! Retry-After — until `recover` has proved a round trip works again. The
//! daemon's recovery task calls `recover` with backoff, so the daemon comes
//! back by itself when the database does.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use idprovd_core::Error;
use idprovd_core::storage::{StoreHealth, StoreStatus};
use idprovd_core::store::StoreError;

use super::{PgStore, Pool};

pub(crate) struct Shared {
    /// `None` only while the store is being dropped.
    pool: Option<Pool>,
    failed: Mutex<Option<String>>,
    io_errors: AtomicU64,
    recoveries: AtomicU64,
}

impl Shared {
    pub(crate) fn new(pool: Pool) -> Shared {
        Shared {
            pool: Some(pool),
            failed: Mutex::new(None),
            io_errors: AtomicU64::new(0),
            recoveries: AtomicU64::new(0),
        }
    }

    pub(crate) fn pool(&self) -> Result<&Pool, StoreError> {
        self.pool
            .as_ref()
            .ok_or_else(|| StoreError::Unavailable("the store is closing".into()))
    }

    pub(crate) fn failure(&self) -> Option<String> {
        self.failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Mark the store unavailable for `reason`; returns the error to report.
    pub(crate) fn failed(&self, reason: String) -> StoreError {
        let mut failed = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
        if failed.is_none() {
            self.io_errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %reason, "database unavailable: refusing work until it reconnects");
            *failed = Some(reason.clone());
        }
        StoreError::Unavailable(reason)
    }

    /// Note a lost connection in an operation's error.
    pub(crate) fn watch(&self, e: Error) -> Error {
        match e {
            Error::Store(StoreError::Unavailable(reason)) => Error::Store(self.failed(reason)),
            other => other,
        }
    }
}

impl Drop for Shared {
    /// The driver's connections block on their own runtime when closed,
    /// which panics on an async thread — and the last handle on the store
    /// may well be dropped on one. So the pool is closed on a thread of its
    /// own.
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            let closing = std::thread::Builder::new()
                .name("idprov-pg-close".into())
                .spawn(move || drop(pool));
            if let Err(e) = closing {
                tracing::warn!(error = %e, "could not close the database connections");
            }
        }
    }
}

impl PgStore {
    pub(crate) fn status(&self) -> StoreStatus {
        StoreStatus {
            health: match self.shared.failure() {
                None => StoreHealth::Ok,
                Some(reason) => StoreHealth::Unavailable { reason },
            },
            io_errors: self.shared.io_errors.load(Ordering::Relaxed),
            recoveries: self.shared.recoveries.load(Ordering::Relaxed),
            pool: Some(self.pool_status()),
        }
    }

    /// Try one round trip on a fresh connection; healthy again if it works.
    pub(crate) fn recover(&self) -> StoreHealth {
        if self.shared.failure().is_none() {
            return StoreHealth::Ok;
        }
        // Idle connections from before the outage are dead but do not know
        // it until used: a failed probe drops its connection (the pool
        // sees it closed), so try until a fresh one answers or none opens.
        let pool = match self.shared.pool() {
            Ok(p) => p,
            Err(e) => {
                return StoreHealth::Unavailable {
                    reason: e.to_string(),
                };
            }
        };
        let mut probe = Err(String::new());
        for _ in 0..=pool.max_size() {
            probe = match pool.get() {
                Err(e) => Err(e.to_string()),
                Ok(mut c) => c
                    .simple_query("SELECT 1")
                    .map(drop)
                    .map_err(|e| e.to_string()),
            };
            if probe.is_ok() || pool.state().connections == 0 {
                break;
            }
        }
        match probe {
            Ok(()) => {
                *self
                    .shared
                    .failed
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = None;
                self.shared.recoveries.fetch_add(1, Ordering::Relaxed);
                tracing::info!(store = %self.location, "database reachable again; serving");
                StoreHealth::Ok
            }
            Err(reason) => {
                tracing::warn!(store = %self.location, error = %reason, "database still unreachable");
                *self
                    .shared
                    .failed
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(reason.clone());
                StoreHealth::Unavailable { reason }
            }
        }
    }
}
