//! The unit of work and what every use case shares: the store, the clock,
//! the event stream to administrators and the metrics. Use cases that need
//! nothing else take a [`Core`]; a decision runs through
//! [`Core::transact`] (see `storage.rs`, "decide, then apply").

use std::sync::{Arc, Weak};

use idprov_proto::admin::AdminEvent;
use tokio::sync::broadcast;

use crate::clock::Clock;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::storage::{SharedStore, Store, StoreView, Unit};

/// Shared infrastructure of the use cases. Cheap to clone.
#[derive(Clone)]
pub struct Core {
    pub clock: Arc<dyn Clock>,
    pub store: SharedStore,
    pub events: broadcast::Sender<AdminEvent>,
    pub metrics: Arc<Metrics>,
}

/// A [`Core`] that does not keep the store open (for background tasks that
/// must not delay a clean shutdown).
#[derive(Clone)]
pub struct WeakCore {
    clock: Arc<dyn Clock>,
    store: Weak<dyn Store>,
    events: broadcast::Sender<AdminEvent>,
    metrics: Arc<Metrics>,
}

impl Core {
    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// The unit of work: run decision `f` (reads through the view, writes
    /// recorded in the unit) and apply what it recorded in one durable
    /// transaction, off the async threads; then publish the unit's events.
    /// `f` may run again if the store retries, so it has no other effects.
    pub async fn transact<T: Send + 'static>(
        &self,
        f: impl FnMut(&dyn StoreView, &mut Unit) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let (out, events) = self.transact_unpublished(f).await?;
        self.publish(events);
        Ok(out)
    }

    /// [`Core::transact`] that returns the committed unit's events instead
    /// of publishing them (for a caller that needs what the store assigned,
    /// such as an audit sequence number).
    pub async fn transact_unpublished<T: Send + 'static>(
        &self,
        f: impl FnMut(&dyn StoreView, &mut Unit) -> Result<T, Error> + Send + 'static,
    ) -> Result<(T, Vec<AdminEvent>), Error> {
        let store = self.store.clone();
        blocking(move || store.transact_with(f)).await
    }

    /// Read from one consistent snapshot, off the async threads.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn StoreView) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let store = self.store.clone();
        blocking(move || store.read_with(f)).await
    }

    /// A store operation of its own (bulk import staging), off the async
    /// threads.
    pub async fn with_store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let store = self.store.clone();
        blocking(move || f(store.as_ref())).await
    }

    pub fn publish(&self, events: Vec<AdminEvent>) {
        for e in events {
            // No subscribers is fine.
            let _ = self.events.send(e);
        }
    }

    /// Read the counts the gauges and `/readyz` report, in one snapshot.
    pub async fn store_snapshot(&self) -> Result<crate::metrics::StoreSnapshot, String> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            store
                .read_with(|v| {
                    let p = v.provisioning()?;
                    Ok(crate::metrics::StoreSnapshot {
                        pending: v.pending_count()?,
                        devices: v.device_count()?,
                        oob_entries: v.oob_count()?,
                        paused: p.paused,
                        pause_reason: p.reason,
                    })
                })
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| format!("store task failed: {e}"))?
    }

    pub fn downgrade(&self) -> WeakCore {
        WeakCore {
            clock: self.clock.clone(),
            store: Arc::downgrade(&self.store),
            events: self.events.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

impl WeakCore {
    /// The core again, unless the store was closed.
    pub fn upgrade(&self) -> Option<Core> {
        Some(Core {
            clock: self.clock.clone(),
            store: self.store.upgrade()?,
            events: self.events.clone(),
            metrics: self.metrics.clone(),
        })
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }
}

/// Run store work on the blocking pool; a task that died is an internal
/// error, never a panic of the handler.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        tracing::error!(error = %e, "store task failed");
        Error::internal("the daemon could not complete the request", e)
    })?
}
