//! Flags on provisioning requests (flow 7, F14): signs that a device is not
//! what it claims, shown on the pending and device records and in the audit
//! log.
//!
//! | flag | raised when |
//! |---|---|
//! | `repeat_provision` | a provisioned device asks again while its last token is still valid |
//! | `key_reused` | the presented key is held by another device ID (device or pending) |
//! | `mac_reused` | the claimed MAC belongs to another device ID (device, pending or OOB entry) |
//! | `mac_mismatch` | the claimed MAC differs from the one the kernel's neighbour table shows for the peer |
//! | `mac_suspicious` | the claimed MAC is locally administered, multicast or all zeros |
//! | `proof_failures` | the device ID or the source address had repeated refused proofs recently |
//!
//! Every flag is recorded. A request raising one of the flags listed in
//! `flags.hold` is never admitted automatically: an OOB match becomes a
//! pending request carrying its flags, which an administrator approves or
//! rejects. By default every flag holds but `repeat_provision` (only a
//! known device raises it) and `mac_suspicious`: locally administered MACs
//! are common on honest devices (randomised MACs, containers, virtual NICs),
//! so that one is shown, not acted on, unless an administrator lists it. A known device presenting one of its registered
//! keys is authenticated by that key and still served; its flags are
//! recorded for the administrator.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use idprov_proto::MacAddr;

use tokio::time::Instant;

pub use crate::config::FlagConfig;

pub use idprov_proto::policy::Flag;

/// One raised flag and why, for the audit entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Raised {
    pub flag: Flag,
    pub detail: String,
}

/// What the request path knows before its transaction.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The MAC the neighbour table shows for the peer (on-link IPv4 only).
    pub neighbour_mac: Option<MacAddr>,
    /// Recent refused proofs for this device ID or from this address.
    pub recent_failures: u32,
}

pub fn suspicious(mac: MacAddr) -> Option<&'static str> {
    if mac.0 == [0; 6] {
        Some("all zeros")
    } else if mac.is_multicast() {
        Some("a multicast address")
    } else if mac.is_locally_administered() {
        Some("locally administered")
    } else {
        None
    }
}

/// How an OOB match authenticated the request, as far as holding goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchedBy {
    /// The key the OOB list holds for this device ID.
    ListedKey,
    /// A MAC or a one-time secret, without a listed key.
    MacOrSecret,
}

/// Do these flags keep an OOB match from being admitted?
///
/// A request that proved possession of the key its OOB entry lists is
/// authenticated by that key: a MAC also seen under another ID (several
/// services behind one gateway or host, each listed with its own key) or
/// differing from the neighbour table does not stop it — it is admitted
/// and the MAC flags are recorded. A match by MAC alone or by a secret has
/// nothing stronger than the MAC to go on, so there they hold as listed.
pub fn holds(cfg: &FlagConfig, flags: &[Raised], by: MatchedBy) -> bool {
    !holding(cfg, flags, by).is_empty()
}

/// The flags that keep an OOB match from being admitted (see [`holds`]),
/// each once, for the pending view's "held by".
pub fn holding(cfg: &FlagConfig, flags: &[Raised], by: MatchedBy) -> Vec<Flag> {
    let mut out: Vec<Flag> = Vec::new();
    for f in flags {
        let applies =
            cfg.hold.contains(&f.flag) && !(by == MatchedBy::ListedKey && f.flag.is_mac_based());
        if applies && !out.contains(&f.flag) {
            out.push(f.flag);
        }
    }
    out
}

/// "name: detail; name: detail" for an audit entry.
pub fn describe(flags: &[Raised]) -> String {
    flags
        .iter()
        .map(|f| format!("{}: {}", f.flag, f.detail))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Most device IDs and addresses whose refused proofs are remembered.
const MAX_TRACKED: usize = 10_000;

/// Recent refused proofs per device ID and per source address, in memory,
/// bounded (old entries are dropped first).
pub struct FailureTracker {
    window: Duration,
    clock: Arc<dyn crate::Clock>,
    map: Mutex<HashMap<String, (u32, Instant)>>,
}

impl FailureTracker {
    pub fn new(window: Duration, clock: Arc<dyn crate::Clock>) -> FailureTracker {
        FailureTracker {
            window,
            clock,
            map: Mutex::new(HashMap::new()),
        }
    }

    pub fn record(&self, device_id: Option<&str>, source: IpAddr) {
        let Ok(mut m) = self.map.lock() else { return };
        let now = self.clock.instant();
        if m.len() + 2 > MAX_TRACKED {
            let window = self.window;
            m.retain(|_, (_, last)| now.duration_since(*last) < window);
            if m.len() + 2 > MAX_TRACKED {
                // Still full of live entries: forget the oldest half.
                let mut ages: Vec<Instant> = m.values().map(|(_, t)| *t).collect();
                ages.sort();
                let cut = ages[ages.len() / 2];
                m.retain(|_, (_, last)| *last > cut);
            }
        }
        let keys = device_id
            .map(|d| format!("id:{d}"))
            .into_iter()
            .chain([format!("ip:{source}")]);
        for k in keys {
            let e = m.entry(k).or_insert((0, now));
            if now.duration_since(e.1) >= self.window {
                *e = (0, now);
            }
            e.0 += 1;
            e.1 = now;
        }
    }

    /// The larger count of the device ID's and the address's.
    pub fn recent(&self, device_id: &str, source: IpAddr) -> u32 {
        let Ok(m) = self.map.lock() else { return 0 };
        let now = self.clock.instant();
        [format!("id:{device_id}"), format!("ip:{source}")]
            .iter()
            .filter_map(|k| m.get(k))
            .filter(|(_, last)| now.duration_since(*last) < self.window)
            .map(|(n, _)| *n)
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(s: &str) -> MacAddr {
        s.parse().unwrap_or(MacAddr([0; 6]))
    }

    #[test]
    fn suspicious_macs() {
        assert_eq!(suspicious(mac("00:00:00:00:00:00")), Some("all zeros"));
        assert_eq!(
            suspicious(mac("01:00:5e:00:00:fb")),
            Some("a multicast address")
        );
        assert_eq!(
            suspicious(mac("02:42:ac:11:00:02")),
            Some("locally administered")
        );
        assert_eq!(suspicious(mac("b8:27:eb:12:34:56")), None);
    }

    #[test]
    fn only_listed_flags_hold() {
        let cfg = FlagConfig::default();
        let flag = |flag| {
            vec![Raised {
                flag,
                detail: String::new(),
            }]
        };
        let by = MatchedBy::MacOrSecret;
        assert!(!holds(&cfg, &flag(Flag::MacSuspicious), by));
        assert!(holds(&cfg, &flag(Flag::MacMismatch), by));
        assert!(holds(&cfg, &flag(Flag::MacReused), by));
        // A listed key outweighs the MAC flags, not the others.
        let key = MatchedBy::ListedKey;
        assert!(!holds(&cfg, &flag(Flag::MacMismatch), key));
        assert!(!holds(&cfg, &flag(Flag::MacReused), key));
        assert!(holds(&cfg, &flag(Flag::KeyReused), key));
        assert!(holds(&cfg, &flag(Flag::ProofFailures), key));
        let strict = FlagConfig {
            hold: Flag::CHECKED.to_vec(),
            ..FlagConfig::default()
        };
        assert!(holds(&strict, &flag(Flag::MacSuspicious), by));
        assert!(strict.validate().is_ok());
        // A flag the request checks never raise cannot hold anything.
        let odd = FlagConfig {
            hold: vec![Flag::KeyConflict],
            ..FlagConfig::default()
        };
        assert!(odd.validate().is_err());
        // A misspelt name is refused when the configuration is read.
        let typo: Result<FlagConfig, _> = toml::from_str(r#"hold = ["mac_mismach"]"#);
        assert!(typo.is_err());
        let names: Result<FlagConfig, _> = toml::from_str(r#"hold = ["mac_suspicious"]"#);
        assert_eq!(names.map(|c| c.hold).ok(), Some(vec![Flag::MacSuspicious]));
    }

    #[test]
    fn failures_count_per_id_and_address_within_the_window() {
        let clock = crate::ManualClock::new(0);
        let t = FailureTracker::new(Duration::from_secs(60), Arc::new(clock.clone()));
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        t.record(Some("d1"), a);
        t.record(Some("d1"), b);
        t.record(None, a);
        assert_eq!(t.recent("d1", b), 2);
        assert_eq!(t.recent("d2", a), 2);
        assert_eq!(t.recent("d2", [10, 0, 0, 3].into()), 0);
        // The window is on the daemon's clock.
        clock.advance(59);
        assert_eq!(t.recent("d1", b), 2);
        clock.advance(1);
        assert_eq!(t.recent("d1", b), 0);
        let short = FailureTracker::new(Duration::ZERO, Arc::new(crate::SystemClock));
        short.record(Some("d1"), a);
        assert_eq!(short.recent("d1", a), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_window_runs_on_tokio_time_by_default() {
        let t = FailureTracker::new(Duration::from_secs(60), Arc::new(crate::SystemClock));
        let a: IpAddr = [10, 0, 0, 1].into();
        t.record(Some("d1"), a);
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(t.recent("d1", a), 1);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(t.recent("d1", a), 0);
    }
}
