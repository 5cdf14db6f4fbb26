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
    pub(crate) pool: Pool,
    failed: Mutex<Option<String>>,
    io_errors: AtomicU64,
    recoveries: AtomicU64,
}

impl Shared {
    pub(crate) fn new(pool: Pool) -> Shared {
        Shared {
            pool,
            failed: Mutex::new(None),
            io_errors: AtomicU64::new(0),
            recoveries: AtomicU64::new(0),
        }
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

impl PgStore {
    pub(crate) fn status(&self) -> StoreStatus {
        StoreStatus {
            health: match self.shared.failure() {
                None => StoreHealth::Ok,
                Some(reason) => StoreHealth::Unavailable { reason },
            },
            io_errors: self.shared.io_errors.load(Ordering::Relaxed),
            recoveries: self.shared.recoveries.load(Ordering::Relaxed),
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
        let mut probe = Err(String::new());
        for _ in 0..=self.shared.pool.max_size() {
            probe = match self.shared.pool.get() {
                Err(e) => Err(e.to_string()),
                Ok(mut c) => c
                    .simple_query("SELECT 1")
                    .map(drop)
                    .map_err(|e| e.to_string()),
            };
            if probe.is_ok() || self.shared.pool.state().connections == 0 {
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
