//! The rule "after an I/O error, reopen the store", paced: while the store
//! reports [`StoreHealth::Unavailable`] this task asks it to recover after
//! 1 s, then 2, 4, 8, 16 and every 30 s, until it is healthy again. The
//! backend does the reopening (under its own lock, so requests never race
//! it); this task only decides when.

use std::sync::Weak;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::storage::{Store, StoreHealth};

/// How often a healthy store's status is looked at (cheap: no I/O).
const CHECK_EVERY: Duration = Duration::from_millis(250);
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(30);

/// Until `shutdown`: reopen the store with backoff whenever it failed on
/// I/O. Holds the store weakly, so it never delays a clean close.
pub async fn store_recovery(store: Weak<dyn Store>, shutdown: CancellationToken) {
    let mut backoff = FIRST_RETRY;
    let mut wait = CHECK_EVERY;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        let Some(s) = store.upgrade() else { return };
        if s.status().health == StoreHealth::Ok {
            backoff = FIRST_RETRY;
            wait = CHECK_EVERY;
            continue;
        }
        if wait == CHECK_EVERY {
            // Just noticed: give the cause a moment before the first try.
            wait = backoff;
            continue;
        }
        let health = tokio::task::spawn_blocking(move || s.recover()).await;
        match health {
            Ok(StoreHealth::Ok) => {
                backoff = FIRST_RETRY;
                wait = CHECK_EVERY;
            }
            Ok(StoreHealth::Unavailable { reason }) => {
                backoff = (backoff * 2).min(MAX_RETRY);
                wait = backoff;
                tracing::warn!(error = %reason, retry_in_secs = wait.as_secs(), "store still unavailable");
            }
            Err(e) => {
                backoff = (backoff * 2).min(MAX_RETRY);
                wait = backoff;
                tracing::error!(error = %e, "store recovery task failed");
            }
        }
    }
}
