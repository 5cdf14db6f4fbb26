//! Several daemons on one site: opening the configured store (redb in the
//! data dir, or the site's PostgreSQL database), and carrying the changes
//! the other daemons commit onto this daemon's admin event stream.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use idprov_proto::admin::AdminEvent;
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::config::{StoreBackend, StoreConfig};
use crate::pki::Pki;
use crate::storage::SharedStore;
use crate::store::{PgStore, RedbStore};

/// How often the events table is read for the other daemons' changes: a
/// TUI on any daemon shows a change made on another within a second.
const FOLLOW_EVERY: Duration = Duration::from_millis(250);
/// Most events read per poll (the rest on the next, at once).
const FOLLOW_BATCH: usize = 500;
/// Events older than this are deleted (every daemon read them long since).
const KEEP_EVENTS: Duration = Duration::from_secs(3600);
const PURGE_EVERY: Duration = Duration::from_secs(300);

/// The opened store.
pub struct Opened {
    pub store: SharedStore,
    /// Durable commit latency (`idprov_store_commit_seconds`).
    pub commits: Histogram,
    /// The site database, when the backend is PostgreSQL.
    pub site: Option<PgStore>,
}

/// Open the configured backend. Blocking.
pub fn open_store(cfg: &StoreConfig, dir: &Path, pki: &Pki) -> Result<Opened> {
    let id = &pki.identity.daemon_id;
    Ok(match cfg.backend {
        StoreBackend::Redb => {
            let redb = RedbStore::open_cached(dir, id, pki.created, cfg.cache_size)?;
            Opened {
                commits: redb.commit_histogram(),
                store: Arc::new(redb),
                site: None,
            }
        }
        StoreBackend::Postgres => {
            let pg = PgStore::open(&cfg.postgres, id, pki.created)?;
            tracing::info!(store = pg.location(), site = %id, "store: PostgreSQL");
            Opened {
                commits: pg.commit_histogram(),
                store: Arc::new(pg.clone()),
                site: Some(pg),
            }
        }
    })
}

/// Until `shutdown`: publish on `events` what the site's other daemons
/// committed, in commit order.
pub async fn follow_events(
    pg: PgStore,
    events: broadcast::Sender<AdminEvent>,
    shutdown: CancellationToken,
) {
    let mut cursor = None;
    let mut last_purge = tokio::time::Instant::now();
    loop {
        let store = pg.clone();
        let at = cursor;
        let polled = tokio::task::spawn_blocking(move || match at {
            // Follow from now: older changes are in the store already.
            None => store.event_cursor().map(|c| (c, Vec::new(), false)),
            Some(c) => store
                .events_after(c, FOLLOW_BATCH)
                .map(|f| (f.cursor, f.events, f.more)),
        })
        .await;
        let mut more = false;
        match polled {
            Ok(Ok((c, list, m))) => {
                cursor = Some(c);
                more = m;
                for e in list {
                    // No subscribers is fine.
                    let _ = events.send(e);
                }
            }
            // The store's own health shows a lost database; keep trying.
            Ok(Err(e)) => tracing::debug!(error = %e, "reading the site's events"),
            Err(e) => tracing::warn!(error = %e, "site event task failed"),
        }
        if last_purge.elapsed() >= PURGE_EVERY {
            last_purge = tokio::time::Instant::now();
            let store = pg.clone();
            match tokio::task::spawn_blocking(move || store.purge_events(KEEP_EVENTS)).await {
                Ok(Ok(n)) if n > 0 => tracing::debug!(purged = n, "old site events deleted"),
                Ok(Err(e)) => tracing::debug!(error = %e, "purging old site events"),
                _ => {}
            }
        }
        if more {
            continue;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(FOLLOW_EVERY) => {}
        }
    }
}
