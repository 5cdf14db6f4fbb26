//! The unit of work and what every use case shares: the store, the clock,
//! the event stream to administrators and the metrics. Use cases that need
//! nothing else take a [`Core`]; a decision runs through
//! [`Core::transact`] (see `storage.rs`, "decide, then apply").

use std::sync::{Arc, Weak};

use idprov_proto::admin::AdminEvent;
use tokio::sync::broadcast;

use crate::clock::Clock;
use crate::error::Error;
use crate::group_commit::{GroupCommit, Pending, Queued};
use crate::metrics::Metrics;
use crate::storage::{SharedStore, Store, StoreView, Unit};

/// Shared infrastructure of the use cases. Cheap to clone.
#[derive(Clone)]
pub struct Core {
    pub clock: Arc<dyn Clock>,
    pub store: SharedStore,
    pub events: broadcast::Sender<AdminEvent>,
    pub metrics: Arc<Metrics>,
    /// Where decisions wait for their (shared) commit.
    pub commits: Arc<GroupCommit>,
}

/// A [`Core`] that does not keep the store open (for background tasks that
/// must not delay a clean shutdown).
#[derive(Clone)]
pub struct WeakCore {
    clock: Arc<dyn Clock>,
    store: Weak<dyn Store>,
    events: broadcast::Sender<AdminEvent>,
    metrics: Arc<Metrics>,
    commits: Arc<GroupCommit>,
}

impl Core {
    /// The core of a daemon whose store is configured by `cfg`.
    pub fn new(
        clock: Arc<dyn Clock>,
        store: SharedStore,
        metrics: Arc<Metrics>,
        cfg: &crate::config::StoreConfig,
    ) -> Core {
        let (events, _) = broadcast::channel::<AdminEvent>(4096);
        Core {
            commits: Arc::new(GroupCommit::new(
                cfg,
                metrics.store_batch_size.clone(),
                metrics.commit_queue_full.clone(),
            )),
            clock,
            store,
            events,
            metrics,
        }
    }

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
    /// such as an audit sequence number). The decision waits in the group
    /// commit's queue (group_commit.rs) and is answered after the commit of
    /// its batch.
    pub async fn transact_unpublished<T: Send + 'static>(
        &self,
        f: impl FnMut(&dyn StoreView, &mut Unit) -> Result<T, Error> + Send + 'static,
    ) -> Result<(T, Vec<AdminEvent>), Error> {
        let (job, answer) = Pending::new(f);
        if self.commits.push(Box::new(job))? == Queued::StartWriter {
            let (store, commits) = (self.store.clone(), self.commits.clone());
            // The writer's task ends when the queue is empty; it is not
            // awaited (each decision is answered through its own channel).
            drop(tokio::task::spawn_blocking(move || {
                commits.write(store.as_ref())
            }));
        }
        answer.await.map_err(|e| {
            tracing::error!(error = %e, "the writer dropped a decision");
            Error::internal("the daemon could not complete the request", e)
        })?
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
            commits: self.commits.clone(),
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
            commits: self.commits.clone(),
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
