//! Exponential backoff with jitter and a cap, and the randomness for jitter.
//!
//! A thousand devices that lost the daemon at the same moment must not come
//! back at the same moment: every wait is spread by a random factor.

use std::time::Duration;

/// A uniformly random fraction in `[0, 1)`.
pub(crate) fn random_fraction() -> f64 {
    let mut b = [0u8; 8];
    // Jitter needs no secrecy; if the system RNG fails we lose only spread.
    let _ = aws_lc_rs::rand::fill(&mut b);
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

/// Backoff policy: `base * 2^attempt`, capped, then multiplied by a random
/// factor in `[1 - jitter, 1]` ("equal jitter" keeps a floor so a hint from
/// the server is never undercut by much).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
    /// Fraction of the delay that is randomised, 0.0–1.0.
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(500),
            cap: Duration::from_secs(60),
            jitter: 0.5,
        }
    }
}

impl Backoff {
    /// The un-jittered delay before retry number `attempt` (0-based).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.min(30));
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The delay before retry number `attempt`, with jitter.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.jittered(self.ceiling(attempt))
    }

    /// `d` reduced by a random part of up to `jitter * d`.
    pub fn jittered(&self, d: Duration) -> Duration {
        let j = self.jitter.clamp(0.0, 1.0);
        d.mul_f64(1.0 - j * random_fraction())
    }

    /// The wait after an answer that carried a server hint: never shorter
    /// than the hint (the daemon answers `slow_down` to early pollers), at
    /// least our own backoff, spread upward by jitter so devices that were
    /// told the same hint do not return in lockstep. The result is capped at
    /// `max(hint, cap)` plus the jitter, so an absurd hint cannot make the
    /// device wait for days.
    pub fn after_hint(&self, hint: Duration, attempt: u32, max_hint: Duration) -> Duration {
        let hint = hint.min(max_hint);
        let own = self.ceiling(attempt);
        let base = hint.max(own);
        let spread = base.mul_f64(self.jitter.clamp(0.0, 1.0) * 0.2 * random_fraction());
        base + spread
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_then_caps() {
        let b = Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
            jitter: 0.0,
        };
        assert_eq!(b.delay(0), Duration::from_millis(100));
        assert_eq!(b.delay(1), Duration::from_millis(200));
        assert_eq!(b.delay(3), Duration::from_millis(800));
        assert_eq!(b.delay(4), Duration::from_secs(1));
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn jitter_stays_in_range_and_varies() {
        let b = Backoff {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(10),
            jitter: 0.5,
        };
        let samples: Vec<Duration> = (0..200).map(|_| b.delay(0)).collect();
        assert!(
            samples
                .iter()
                .all(|d| *d >= Duration::from_millis(500) && *d <= Duration::from_secs(1))
        );
        let distinct: std::collections::HashSet<_> = samples.iter().collect();
        assert!(distinct.len() > 100, "jitter must spread the delays");
    }

    #[test]
    fn hint_is_a_floor_and_is_bounded() {
        let b = Backoff::default();
        let max = Duration::from_secs(300);
        for attempt in 0..10 {
            let d = b.after_hint(Duration::from_secs(5), attempt, max);
            assert!(d >= Duration::from_secs(5));
            assert!(d <= Duration::from_secs(5).max(b.cap).mul_f64(1.1));
        }
        let huge = b.after_hint(Duration::from_secs(10_000_000), 0, max);
        assert!(huge <= max.mul_f64(1.1));
    }
}
