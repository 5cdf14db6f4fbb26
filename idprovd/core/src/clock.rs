//! The clock is a dependency (security rule 9): everything that needs the
//! time asks a [`Clock`], so tests can move time instead of sleeping.
//!
//! Wall time ([`Clock::now`]) stamps what is stored and signed; monotonic
//! time ([`Clock::instant`]) drives every timer, deadline and rate-limit
//! bucket. The monotonic time is tokio's, so `tokio::time::pause` moves it in
//! tests; [`ManualClock::advance`] moves both.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub trait Clock: Send + Sync + 'static {
    /// Unix time in seconds.
    fn now(&self) -> i64;

    /// Monotonic time for timers, deadlines and rate-limit buckets.
    fn instant(&self) -> tokio::time::Instant {
        tokio::time::Instant::now()
    }
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    }
}

/// A clock tests set and advance by hand. Clones share the same time.
///
/// Its wall time moves only by hand. Its monotonic time is tokio's plus
/// everything [`ManualClock::advance`] added, so timers keep running and a
/// test that advances the clock ages them too.
#[derive(Debug, Clone)]
pub struct ManualClock {
    wall: Arc<AtomicI64>,
    /// Nanoseconds added to tokio's time by `advance`.
    ahead: Arc<AtomicU64>,
}

impl ManualClock {
    pub fn new(start: i64) -> Self {
        ManualClock {
            wall: Arc::new(AtomicI64::new(start)),
            ahead: Arc::new(AtomicU64::new(0)),
        }
    }
    /// Starts at the system time.
    pub fn starting_now() -> Self {
        Self::new(SystemClock.now())
    }
    /// Set the wall time (a step of the system clock: monotonic time does
    /// not move).
    pub fn set(&self, t: i64) {
        self.wall.store(t, Ordering::SeqCst);
    }
    /// Let `secs` seconds pass. A negative value steps the wall time back
    /// and leaves monotonic time alone (it never goes back).
    pub fn advance(&self, secs: i64) {
        self.wall.fetch_add(secs, Ordering::SeqCst);
        if let Ok(secs) = u64::try_from(secs) {
            self.ahead
                .fetch_add(secs.saturating_mul(1_000_000_000), Ordering::SeqCst);
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> i64 {
        self.wall.load(Ordering::SeqCst)
    }

    fn instant(&self) -> tokio::time::Instant {
        tokio::time::Instant::now() + Duration::from_nanos(self.ahead.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advance_moves_wall_and_monotonic_time_and_set_only_wall_time() {
        let c = ManualClock::new(1_000);
        let t0 = c.instant();
        c.advance(30);
        assert_eq!(c.now(), 1_030);
        assert!(c.instant() - t0 >= Duration::from_secs(30));
        let t1 = c.instant();
        c.advance(-100);
        c.set(5);
        assert_eq!(c.now(), 5);
        assert!(c.instant() >= t1);
        assert!(c.instant() - t1 < Duration::from_secs(30));
    }
}
