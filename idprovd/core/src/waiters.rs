//! Pending devices waiting on an open request for their decision.
//!
//! A pending device may ask the daemon to hold its `/provision` request open
//! (`Prefer: wait=N`) instead of sleeping out `Retry-After`. The request has
//! proved possession of its key when it arrived (its proof is verified,
//! bound to the TLS connection and consumed then); the answer goes back on
//! that same request, so nothing else needs proving when it is woken.
//!
//! Waking is by device ID: one task reads the committed admin events (the
//! same stream the TUI sees) and wakes the waiters of every ID whose device
//! or pending request changed; a woken waiter re-reads the store and either
//! answers or sleeps again. Lost events (a lagging reader) wake everyone, so
//! a decision is never missed, at worst re-checked.
//!
//! Bounded: at most `pending.max_waiters` requests in all and
//! `pending.max_waiters_per_source` per source address; past either the
//! device is answered at once with `Retry-After`, as without waiting.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use idprov_proto::admin::AdminEvent;
use tokio::sync::{broadcast, watch};

/// The registry of waiting requests.
pub struct Waiters {
    max_total: usize,
    max_per_source: usize,
    inner: Mutex<Inner>,
    /// Bumped to wake every waiter (lagged events, shutdown).
    all: watch::Sender<u64>,
    closed: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct Inner {
    total: usize,
    per_source: HashMap<IpAddr, usize>,
    /// Device ID → its wake signal and how many requests wait on it.
    by_id: HashMap<String, (watch::Sender<u64>, usize)>,
}

/// One waiting request's place; dropping it frees the place.
pub struct Slot {
    waiters: Arc<Waiters>,
    id: String,
    source: IpAddr,
    mine: watch::Receiver<u64>,
    all: watch::Receiver<u64>,
}

impl Waiters {
    pub fn new(max_total: usize, max_per_source: usize) -> Arc<Waiters> {
        Arc::new(Waiters {
            max_total,
            max_per_source,
            inner: Mutex::new(Inner::default()),
            all: watch::channel(0).0,
            closed: false.into(),
        })
    }

    /// A place to wait for `id`'s decision, or `None` when a bound is
    /// reached or the daemon is stopping. Take it *before* the decision that
    /// makes the device pending, so a decision made in between is seen.
    pub fn enter(self: &Arc<Self>, id: &str, source: IpAddr) -> Option<Slot> {
        if self.is_closed() {
            return None;
        }
        let source = crate::ratelimit::source_key(source);
        let mut inner = self.lock();
        let from_source = inner.per_source.get(&source).copied().unwrap_or(0);
        if inner.total >= self.max_total || from_source >= self.max_per_source {
            return None;
        }
        inner.total += 1;
        *inner.per_source.entry(source).or_default() += 1;
        let (tx, users) = inner
            .by_id
            .entry(id.to_string())
            .or_insert_with(|| (watch::channel(0).0, 0));
        *users += 1;
        let mine = tx.subscribe();
        drop(inner);
        Some(Slot {
            waiters: self.clone(),
            id: id.to_string(),
            source,
            mine,
            all: self.all.subscribe(),
        })
    }

    /// Wake the requests waiting for `id`.
    pub fn wake(&self, id: &str) {
        if let Some((tx, _)) = self.lock().by_id.get(id) {
            tx.send_modify(|n| *n += 1);
        }
    }

    /// Wake every waiting request (they re-check and answer or wait on).
    pub fn wake_all(&self) {
        self.all.send_modify(|n| *n += 1);
    }

    /// Stop admitting waiters and wake the ones there are: the daemon is
    /// stopping, and they answer `Retry-After` at once.
    pub fn close(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        self.wake_all();
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Requests waiting now.
    pub fn count(&self) -> usize {
        self.lock().total
    }

    /// Follow the committed admin events until the channel closes, waking
    /// the waiters of the device IDs they touch.
    pub async fn follow(self: Arc<Self>, mut events: broadcast::Receiver<AdminEvent>) {
        loop {
            match events.recv().await {
                Ok(event) => {
                    if let Some(id) = touched(&event) {
                        self.wake(id);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => self.wake_all(),
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The counts stay consistent under every early return above.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The device ID whose decision an event may carry.
fn touched(event: &AdminEvent) -> Option<&str> {
    match event {
        AdminEvent::PendingRemoved { device_id } | AdminEvent::DeviceRemoved { device_id } => {
            Some(device_id.as_str())
        }
        AdminEvent::DeviceUpserted { device } => Some(device.device_id.as_str()),
        _ => None,
    }
}

impl Slot {
    /// Until `id` is touched or everyone is woken (the caller re-checks).
    pub async fn woken(&mut self) {
        tokio::select! {
            r = self.mine.changed() => { if r.is_err() { std::future::pending::<()>().await } }
            r = self.all.changed() => { if r.is_err() { std::future::pending::<()>().await } }
        }
    }

    pub fn closing(&self) -> bool {
        self.waiters.is_closed()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut inner = self.waiters.lock();
        inner.total = inner.total.saturating_sub(1);
        if let Some(n) = inner.per_source.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                inner.per_source.remove(&self.source);
            }
        }
        if let Some((_, users)) = inner.by_id.get_mut(&self.id) {
            *users -= 1;
            if *users == 0 {
                inner.by_id.remove(&self.id);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn bounds_in_all_and_per_source_and_places_are_freed() {
        let w = Waiters::new(3, 2);
        let a = w.enter("a", ip("10.0.0.1")).unwrap();
        let _b = w.enter("b", ip("10.0.0.1")).unwrap();
        assert!(w.enter("c", ip("10.0.0.1")).is_none(), "per source");
        let _c = w.enter("c", ip("10.0.0.2")).unwrap();
        assert!(w.enter("d", ip("10.0.0.3")).is_none(), "in all");
        assert_eq!(w.count(), 3);
        drop(a);
        assert_eq!(w.count(), 2);
        assert!(w.enter("d", ip("10.0.0.1")).is_some());
        // One /64 is one source.
        let w = Waiters::new(10, 1);
        let _x = w.enter("x", ip("2001:db8::1")).unwrap();
        assert!(w.enter("y", ip("2001:db8::2")).is_none());
        w.close();
        assert!(w.enter("z", ip("10.9.9.9")).is_none(), "closed");
    }

    #[tokio::test]
    async fn a_wake_before_the_wait_is_not_lost() {
        let w = Waiters::new(10, 10);
        let mut slot = w.enter("dev-1", ip("10.0.0.1")).unwrap();
        let mut other = w.enter("dev-2", ip("10.0.0.1")).unwrap();
        w.wake("dev-1");
        tokio::time::timeout(std::time::Duration::from_secs(5), slot.woken())
            .await
            .expect("woken");
        // Another ID's wake did not reach dev-2; wake_all does.
        let early = tokio::time::timeout(std::time::Duration::from_millis(20), other.woken()).await;
        assert!(early.is_err());
        w.wake_all();
        tokio::time::timeout(std::time::Duration::from_secs(5), other.woken())
            .await
            .expect("woken by all");
    }
}
