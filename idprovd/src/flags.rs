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
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::storage::{Change, StoreView, Unit};
use crate::store::StoreResult;

pub const REPEAT_PROVISION: &str = "repeat_provision";
pub const KEY_REUSED: &str = "key_reused";
pub const MAC_REUSED: &str = "mac_reused";
pub const MAC_MISMATCH: &str = "mac_mismatch";
pub const MAC_SUSPICIOUS: &str = "mac_suspicious";
pub const PROOF_FAILURES: &str = "proof_failures";

/// `[flags]` configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FlagConfig {
    /// Flags that hold a request in pending instead of admitting it by the
    /// OOB list (the others are recorded only).
    pub hold: Vec<String>,
    /// Refused proofs for one device ID or from one address that make the
    /// next request `proof_failures`.
    pub proof_failure_threshold: u32,
    /// How long refused proofs are remembered.
    #[serde(with = "humantime_serde")]
    pub proof_failure_window: Duration,
}

impl Default for FlagConfig {
    fn default() -> Self {
        FlagConfig {
            hold: [KEY_REUSED, MAC_REUSED, MAC_MISMATCH, PROOF_FAILURES]
                .map(str::to_string)
                .to_vec(),
            proof_failure_threshold: 3,
            proof_failure_window: Duration::from_secs(600),
        }
    }
}

/// One raised flag and why, for the audit entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flag {
    pub name: &'static str,
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

/// The flags a request raises, checked inside its transaction.
pub fn check(
    v: &dyn StoreView,
    u: &mut Unit,
    cfg: &FlagConfig,
    device_id: &str,
    kid: &str,
    claimed_mac: Option<MacAddr>,
    seen: &Observed,
) -> StoreResult<Vec<Flag>> {
    let mut out = Vec::new();
    let others = others_with_key(v, u, device_id, kid)?;
    if !others.is_empty() {
        out.push(Flag {
            name: KEY_REUSED,
            detail: format!("key {kid} is also held by {}", others.join(", ")),
        });
    }
    if let Some(mac) = claimed_mac {
        let others = others_with_mac(v, u, device_id, mac)?;
        if !others.is_empty() {
            out.push(Flag {
                name: MAC_REUSED,
                detail: format!("MAC {mac} also belongs to {}", others.join(", ")),
            });
        }
        if let Some(seen_mac) = seen.neighbour_mac
            && seen_mac != mac
        {
            out.push(Flag {
                name: MAC_MISMATCH,
                detail: format!("claimed MAC {mac}, the network shows {seen_mac}"),
            });
        }
        if let Some(why) = suspicious(mac) {
            out.push(Flag {
                name: MAC_SUSPICIOUS,
                detail: format!("MAC {mac} is {why}"),
            });
        }
    }
    if cfg.proof_failure_threshold > 0 && seen.recent_failures >= cfg.proof_failure_threshold {
        out.push(Flag {
            name: PROOF_FAILURES,
            detail: format!("{} refused proofs recently", seen.recent_failures),
        });
    }
    Ok(out)
}

/// Other device IDs (devices or pending) that hold `kid` now. Index
/// entries that no longer hold are dropped with the decision's unit.
fn others_with_key(
    v: &dyn StoreView,
    u: &mut Unit,
    device_id: &str,
    kid: &str,
) -> StoreResult<Vec<String>> {
    let mut out = Vec::new();
    for other in v.ids_with_key(kid, device_id)? {
        let live = v.device(&other)?.is_some_and(|d| d.key(kid).is_some())
            || v.pending(&other)?.is_some_and(|p| p.kid == kid);
        if live {
            out.push(other);
        } else {
            u.change(Change::ForgetKeyHolder {
                kid: kid.to_string(),
                device_id: other,
            });
        }
    }
    Ok(out)
}

/// Other device IDs (devices, pending, or OOB entries) bound to `mac`.
fn others_with_mac(
    v: &dyn StoreView,
    u: &mut Unit,
    device_id: &str,
    mac: MacAddr,
) -> StoreResult<Vec<String>> {
    let m = mac.to_string();
    let mut out = Vec::new();
    for other in v.ids_with_mac(&m, device_id)? {
        let live = v.device(&other)?.is_some_and(|d| d.mac == Some(mac))
            || v.pending(&other)?.is_some_and(|p| p.mac == Some(mac));
        if live {
            out.push(other);
        } else {
            u.change(Change::ForgetMacHolder {
                mac: m.clone(),
                device_id: other,
            });
        }
    }
    if let Some(owner) = v.oob_mac_owner(&m)?
        && owner != device_id
        && !out.contains(&owner)
    {
        out.push(owner);
    }
    Ok(out)
}

fn suspicious(mac: MacAddr) -> Option<&'static str> {
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

/// Every flag name, for checking the configuration.
pub const ALL: [&str; 6] = [
    REPEAT_PROVISION,
    KEY_REUSED,
    MAC_REUSED,
    MAC_MISMATCH,
    MAC_SUSPICIOUS,
    PROOF_FAILURES,
];

impl FlagConfig {
    pub fn validate(&self) -> Result<(), String> {
        match self.hold.iter().find(|h| !ALL.contains(&h.as_str())) {
            Some(bad) => Err(format!(
                "flags.hold: unknown flag {bad:?} (known: {})",
                ALL.join(", ")
            )),
            None => Ok(()),
        }
    }
}

/// Do these flags keep an OOB match from being admitted?
pub fn holds(cfg: &FlagConfig, flags: &[Flag]) -> bool {
    flags.iter().any(|f| cfg.hold.iter().any(|h| h == f.name))
}

/// "name: detail; name: detail" for an audit entry.
pub fn describe(flags: &[Flag]) -> String {
    flags
        .iter()
        .map(|f| format!("{}: {}", f.name, f.detail))
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
        let flag = |name| {
            vec![Flag {
                name,
                detail: String::new(),
            }]
        };
        assert!(!holds(&cfg, &flag(MAC_SUSPICIOUS)));
        assert!(holds(&cfg, &flag(MAC_MISMATCH)));
        let strict = FlagConfig {
            hold: ALL.map(str::to_string).to_vec(),
            ..FlagConfig::default()
        };
        assert!(holds(&strict, &flag(MAC_SUSPICIOUS)));
        assert!(strict.validate().is_ok());
        let typo = FlagConfig {
            hold: vec!["mac_mismach".into()],
            ..FlagConfig::default()
        };
        assert!(typo.validate().is_err());
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
