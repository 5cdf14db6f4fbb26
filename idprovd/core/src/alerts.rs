//! Security alerts (flow 7, F14; security rule 10): a rogue advertiser seen
//! by the monitor (crate `idprovd`, `monitor.rs`) becomes an alert here —
//! logged, audited, kept for `GET /admin/alerts`, published as an `alert`
//! event, and by default (`monitor.on_rogue = "pause"`) provisioning is
//! paused through the persisted switch until an administrator resumes it.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use idprov_proto::admin::{AdminEvent, Alert, AlertKind, ProvisioningState};
use tokio::time::Instant;

use crate::audit::draft;
pub use crate::config::{MonitorConfig, OnRogue};
use crate::context::Core;
use crate::error::Error;
use crate::storage::Change;

/// Alerts kept in memory for the admin API (all are in the audit log).
const KEEP: usize = 256;
/// The same advertisement is reported once per this period.
const REPEAT_AFTER: Duration = Duration::from_secs(60);

/// An alert before it is numbered and recorded.
#[derive(Debug, Clone)]
pub struct AlertDraft {
    pub kind: AlertKind,
    pub instance: String,
    pub addresses: Vec<String>,
    pub port: Option<u16>,
    pub daemon_id: Option<String>,
    pub ca_fingerprint: Option<String>,
    pub detail: String,
}

/// The alerts of this run, newest last.
#[derive(Default)]
pub struct Alerts {
    list: Mutex<VecDeque<Alert>>,
    next: AtomicU64,
    last_seen: Mutex<HashMap<String, Instant>>,
    /// A regressed-clock alert was raised and the clock has not recovered
    /// since: one alert per episode (clock_check.rs).
    pub(crate) clock_alerted: std::sync::atomic::AtomicBool,
}

impl Alerts {
    pub fn list(&self) -> Vec<Alert> {
        self.list
            .lock()
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// False if the same advertisement was reported within REPEAT_AFTER.
    fn is_new(&self, a: &AlertDraft, now: Instant) -> bool {
        let key = format!("{:?}|{}|{:?}|{:?}", a.kind, a.instance, a.addresses, a.port);
        let Ok(mut m) = self.last_seen.lock() else {
            return true;
        };
        m.retain(|_, t| now.saturating_duration_since(*t) < REPEAT_AFTER);
        if m.contains_key(&key) {
            return false;
        }
        m.insert(key, now);
        true
    }

    fn push(&self, a: Alert) {
        if let Ok(mut l) = self.list.lock() {
            if l.len() == KEEP {
                l.pop_front();
            }
            l.push_back(a);
        }
    }
}

impl Alerts {
    /// Record an alert: audit, (by default) pause provisioning, publish.
    /// Returns None when the same advertisement was just reported.
    pub async fn raise(
        &self,
        core: &Core,
        cfg: &MonitorConfig,
        a: AlertDraft,
    ) -> Result<Option<Alert>, Error> {
        if !self.is_new(&a, core.clock.instant()) {
            return Ok(None);
        }
        let now = core.now();
        // A regressed clock already refuses provisioning by itself; a pause
        // would outlive the clock's correction.
        // Nor does a setup code's: a wrong guess must not stop the fleet.
        let pause = cfg.on_rogue == OnRogue::Pause
            && matches!(
                a.kind,
                AlertKind::RogueAdvertiser | AlertKind::OwnNameSpoofed | AlertKind::RogueGoodbye
            );
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let draft_alert = a.clone();
        let (paused, events) = core
            .transact_unpublished(move |v, u| {
                let a = &draft_alert;
                let detail = format!(
                    "{}: {} ({}{})",
                    a.kind.as_str(),
                    a.instance,
                    a.addresses.join(", "),
                    a.port.map(|p| format!(" port {p}")).unwrap_or_default()
                );
                u.audit(draft(
                    now,
                    "daemon",
                    "security_alert",
                    Some(&a.instance),
                    a.addresses.first().map(String::as_str),
                    format!("{detail}; {}", a.detail),
                ));
                if !pause || v.provisioning()?.paused {
                    return Ok(false);
                }
                let state = ProvisioningState {
                    paused: true,
                    reason: Some(format!(
                        "paused by alert {id} ({}); resume once checked",
                        a.kind.as_str()
                    )),
                };
                u.change(Change::SetProvisioning(state.clone()));
                u.audit(draft(
                    now,
                    "daemon",
                    "provisioning_paused",
                    None,
                    None,
                    state.reason.clone().unwrap_or_default(),
                ));
                u.event(AdminEvent::Provisioning { state });
                Ok(true)
            })
            .await?;
        // The alert names its audit entry, the first this unit appended.
        let audit_seq = events
            .iter()
            .find_map(|e| match e {
                AdminEvent::Audit { entry } => Some(entry.seq),
                _ => None,
            })
            .unwrap_or_default();
        let alert = Alert {
            id,
            at: now,
            kind: a.kind,
            instance: a.instance,
            addresses: a.addresses,
            port: a.port,
            daemon_id: a.daemon_id,
            ca_fingerprint: a.ca_fingerprint,
            detail: a.detail,
            paused,
            audit_seq,
        };
        tracing::warn!(
            alert = alert.id,
            kind = alert.kind.as_str(),
            instance = %alert.instance,
            addresses = ?alert.addresses,
            paused = alert.paused,
            "security alert: {}", alert.detail
        );
        core.metrics.alert(alert.kind.as_str());
        self.push(alert.clone());
        core.publish(events);
        core.publish(vec![AdminEvent::Alert {
            alert: alert.clone(),
        }]);
        Ok(Some(alert))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(instance: &str) -> AlertDraft {
        AlertDraft {
            kind: AlertKind::RogueAdvertiser,
            instance: instance.into(),
            addresses: vec!["10.0.0.9".into()],
            port: Some(8445),
            daemon_id: None,
            ca_fingerprint: None,
            detail: String::new(),
        }
    }

    #[test]
    fn the_same_advertisement_is_reported_once() {
        let a = Alerts::default();
        let t = Instant::now();
        assert!(a.is_new(&draft("x._idprov._tcp.local."), t));
        assert!(!a.is_new(&draft("x._idprov._tcp.local."), t));
        assert!(a.is_new(&draft("y._idprov._tcp.local."), t));
        // And again once REPEAT_AFTER has passed.
        assert!(!a.is_new(&draft("x._idprov._tcp.local."), t + REPEAT_AFTER / 2));
        assert!(a.is_new(&draft("x._idprov._tcp.local."), t + REPEAT_AFTER));
    }
}
