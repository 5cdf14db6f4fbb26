//! Request rate limits on the device API, per source address and per device
//! ID (GCRA buckets from `governor`), answered with `429 rate_limited` and
//! `Retry-After`.
//!
//! Every request costs one cell of both buckets; a request that fails
//! (bad proof, refused, malformed) is charged [`RateLimitConfig::failure_cost`]
//! cells in all, so a device that keeps failing is slowed down sooner than a
//! healthy one, and guessing is expensive.
//!
//! Memory is bounded: IPv6 sources are keyed by their /64 (one host can hold
//! a whole prefix), buckets that are back to full are dropped by
//! `retain_recent` on every housekeeping tick and whenever a map grows past
//! `max_tracked`, and the per-device map only sees requests that passed the
//! per-source limit.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

pub use crate::config::RateLimitConfig;
use crate::error::Error;

/// governor's time source: the daemon's clock (tokio time, which tests
/// pause, or a [`crate::ManualClock`] they advance).
#[derive(Clone)]
struct BucketClock(Arc<dyn crate::Clock>);

/// A reading of [`BucketClock`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct BucketInstant(tokio::time::Instant);

impl std::ops::Add<Nanos> for BucketInstant {
    type Output = Self;
    fn add(self, d: Nanos) -> Self {
        BucketInstant(self.0 + Duration::from(d))
    }
}

impl Reference for BucketInstant {
    fn duration_since(&self, earlier: Self) -> Nanos {
        self.0.saturating_duration_since(earlier.0).into()
    }
    fn saturating_sub(&self, d: Nanos) -> Self {
        BucketInstant(self.0.checked_sub(d.into()).unwrap_or(self.0))
    }
}

impl Clock for BucketClock {
    type Instant = BucketInstant;
    fn now(&self) -> BucketInstant {
        BucketInstant(self.0.instant())
    }
}

type Limiter<K> =
    RateLimiter<K, DefaultKeyedStateStore<K>, BucketClock, NoOpMiddleware<BucketInstant>>;

/// The limiters of one daemon.
pub struct RateLimits {
    cfg: RateLimitConfig,
    by_source: Limiter<IpAddr>,
    by_device: Limiter<String>,
    clock: BucketClock,
    /// Milliseconds since `born` of the last early clean-up.
    last_clean_ms: AtomicU64,
    born: tokio::time::Instant,
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

impl RateLimits {
    pub fn new(cfg: &RateLimitConfig, clock: Arc<dyn crate::Clock>) -> RateLimits {
        let source = Quota::per_second(nz(cfg.source_per_second)).allow_burst(nz(cfg.source_burst));
        let device = Quota::per_minute(nz(cfg.device_per_minute)).allow_burst(nz(cfg.device_burst));
        let clock = BucketClock(clock);
        RateLimits {
            cfg: cfg.clone(),
            by_source: RateLimiter::dashmap_with_clock(source, clock.clone()),
            by_device: RateLimiter::dashmap_with_clock(device, clock.clone()),
            born: clock.0.instant(),
            clock,
            last_clean_ms: AtomicU64::new(0),
        }
    }

    /// Charge one request from `source` and/or naming `device`.
    pub fn check(&self, source: Option<IpAddr>, device: Option<&str>) -> Result<(), Error> {
        if !self.cfg.enabled {
            return Ok(());
        }
        self.clean_if_large();
        if let Some(source) = source
            && let Err(not_until) = self.by_source.check_key(&source_key(source))
        {
            return Err(limited(
                not_until.wait_time_from(self.clock.now()),
                "too many requests from this address",
            ));
        }
        if let Some(id) = device
            && let Err(not_until) = self.by_device.check_key(&id.to_string())
        {
            return Err(limited(
                not_until.wait_time_from(self.clock.now()),
                "too many requests for this device",
            ));
        }
        Ok(())
    }

    /// A request failed: charge the extra cost. Whether the buckets run dry
    /// now only matters for the next request.
    pub fn charge_failure(&self, source: Option<IpAddr>, device: Option<&str>) {
        if !self.cfg.enabled || self.cfg.failure_cost <= 1 {
            return;
        }
        // GCRA charges n cells all or nothing; one at a time takes what is
        // left when fewer remain.
        if let Some(source) = source {
            let source = source_key(source);
            for _ in 1..self.cfg.failure_cost {
                if self.by_source.check_key(&source).is_err() {
                    break;
                }
            }
        }
        if let Some(id) = device {
            let id = id.to_string();
            for _ in 1..self.cfg.failure_cost {
                if self.by_device.check_key(&id).is_err() {
                    break;
                }
            }
        }
    }

    /// Drop buckets that are full again (housekeeping).
    pub fn clean(&self) {
        self.by_source.retain_recent();
        self.by_device.retain_recent();
        self.by_source.shrink_to_fit();
        self.by_device.shrink_to_fit();
    }

    /// Buckets currently held (sources, devices).
    pub fn tracked(&self) -> (usize, usize) {
        (self.by_source.len(), self.by_device.len())
    }

    fn clean_if_large(&self) {
        let max = self.cfg.max_tracked;
        if self.by_source.len() <= max && self.by_device.len() <= max {
            return;
        }
        // At most once a second: retain_recent walks the whole map.
        let now = self.clock.0.instant().duration_since(self.born).as_millis() as u64;
        let last = self.last_clean_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) < 1000
            || self
                .last_clean_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        self.clean();
    }
}

/// IPv6 sources are limited per /64; IPv4-mapped addresses as IPv4.
pub(crate) fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

fn limited(wait: Duration, message: &str) -> Error {
    // Round up: a client that waits exactly Retry-After must get through.
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    Error::RateLimited {
        message: message.to_string(),
        retry_after: secs.max(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> RateLimitConfig {
        RateLimitConfig {
            source_per_second: 1,
            source_burst: 5,
            device_per_minute: 1,
            device_burst: 3,
            ..RateLimitConfig::default()
        }
    }

    #[test]
    fn source_burst_then_429_with_retry_after() {
        let r = RateLimits::new(&cfg(), Arc::new(crate::SystemClock));
        let ip: IpAddr = "10.0.0.1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        for _ in 0..5 {
            assert!(r.check(Some(ip), None).is_ok());
        }
        let e = r.check(Some(ip), None).err();
        assert!(
            matches!(e, Some(Error::RateLimited { retry_after, .. }) if retry_after >= 1),
            "{e:?}"
        );
        // Another address is not affected.
        assert!(
            r.check(Some("10.0.0.2".parse().unwrap_or(ip)), None)
                .is_ok()
        );
    }

    #[test]
    fn buckets_refill_on_the_daemons_clock() {
        let clock = crate::ManualClock::new(0);
        let r = RateLimits::new(&cfg(), Arc::new(clock.clone()));
        let ip: IpAddr = "10.0.0.6".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        for _ in 0..5 {
            assert!(r.check(Some(ip), None).is_ok());
        }
        let e = r.check(Some(ip), None).err();
        assert!(
            matches!(e, Some(Error::RateLimited { retry_after: 1, .. })),
            "{e:?}"
        );
        clock.advance(1);
        assert!(r.check(Some(ip), None).is_ok());
        assert!(r.check(Some(ip), None).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn buckets_refill_on_tokio_time_by_default() {
        let r = RateLimits::new(&cfg(), Arc::new(crate::SystemClock));
        let ip: IpAddr = "10.0.0.7".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        for _ in 0..5 {
            assert!(r.check(Some(ip), None).is_ok());
        }
        assert!(r.check(Some(ip), None).is_err());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(r.check(Some(ip), None).is_ok());
        assert!(r.check(Some(ip), None).is_err());
    }

    #[test]
    fn failures_cost_more() {
        let r = RateLimits::new(&cfg(), Arc::new(crate::SystemClock));
        let ip: IpAddr = "10.0.0.3".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        assert!(r.check(Some(ip), Some("d1")).is_ok());
        r.charge_failure(Some(ip), Some("d1"));
        // The device's 3 cells are gone (1 + what was left of 4), and the
        // address's 5 (1 + 4): one failure costs what five successes do.
        let other: IpAddr = "10.0.0.5".parse().unwrap_or(ip);
        assert!(r.check(Some(other), Some("d1")).is_err());
        assert!(r.check(Some(ip), None).is_err());
        assert!(r.check(Some(other), Some("d2")).is_ok());
    }

    #[test]
    fn ipv6_hosts_of_one_prefix_share_a_bucket() {
        let a: IpAddr = "2001:db8::1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let b: IpAddr = "2001:db8::ffff:2"
            .parse()
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        assert_eq!(source_key(a), source_key(b));
        let m: IpAddr = "::ffff:10.1.2.3".parse().unwrap_or(a);
        assert_eq!(source_key(m), IpAddr::from([10, 1, 2, 3]));
    }

    #[test]
    fn disabled_never_limits() {
        let r = RateLimits::new(
            &RateLimitConfig {
                enabled: false,
                ..cfg()
            },
            Arc::new(crate::SystemClock),
        );
        let ip: IpAddr = "10.0.0.4".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        for _ in 0..50 {
            assert!(r.check(Some(ip), Some("x")).is_ok());
        }
    }
}
