//! Watching for rogue provisioning servers (flow 7, F14; security rule 10).
//!
//! The daemon browses `_idprov._tcp` with the same mDNS responder, on the
//! same interfaces, that it advertises with (mdns.rs). Three things raise an
//! alert:
//! - another instance of the service (unless its TXT `id` or `ca` is listed
//!   in `monitor.allow`, for a deliberate second daemon);
//! - the daemon's own instance name resolving to anything but what it
//!   advertises (another address, port, host or TXT record);
//! - a goodbye for its own records that it did not send.
//!
//! An alert is logged, audited, kept for `GET /admin/alerts`, published as
//! an `alert` event, and by default (`monitor.on_rogue = "pause"`) pauses
//! provisioning through the persisted switch, so nothing is issued until an
//! administrator has looked and resumed it. The daemon then re-announces its
//! own records, so devices' caches hold the genuine ones again.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use idprov_proto::admin::{AdminEvent, Alert, AlertKind, ProvisioningState};
use idprov_proto::{SERVICE_TYPE, dnssd};
use mdns_sd::{ResolvedService, ServiceDaemon, ServiceEvent};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::Daemon;
use crate::daemon::draft;
use crate::error::Error;
use crate::storage::Change;

/// Alerts kept in memory for the admin API (all are in the audit log).
const KEEP: usize = 256;
/// The same advertisement is reported once per this period.
const REPEAT_AFTER: Duration = Duration::from_secs(60);
/// How long after our own withdrawal a goodbye for our name is ours.
const OWN_GOODBYE_GRACE: Duration = Duration::from_secs(5);

/// `[monitor]` configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MonitorConfig {
    /// Browse for other advertisers (needs `mdns.enabled`).
    pub enabled: bool,
    /// `pause` provisioning on an alert (until an administrator resumes it),
    /// or only `alert`.
    pub on_rogue: OnRogue,
    /// Daemon ids or CA fingerprints of other daemons that may advertise on
    /// the same networks (they are logged, not alerted on).
    pub allow: Vec<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnRogue {
    Pause,
    Alert,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            enabled: true,
            on_rogue: OnRogue::Pause,
            allow: Vec::new(),
        }
    }
}

/// What the daemon itself advertises, kept up to date by the advertiser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnRecord {
    pub fullname: String,
    pub host: String,
    pub addresses: Vec<IpAddr>,
    pub port: u16,
    pub daemon_id: String,
    pub ca_fingerprint: String,
}

/// Shared between the advertiser (writes) and the monitor (reads).
#[derive(Default)]
pub struct OwnAdvert {
    record: Mutex<Option<OwnRecord>>,
    withdrawn_at: Mutex<Option<Instant>>,
    /// The monitor asks the advertiser to announce its records again.
    pub reannounce: Notify,
}

impl OwnAdvert {
    pub fn registered(&self, r: OwnRecord) {
        if let Ok(mut g) = self.record.lock() {
            *g = Some(r);
        }
    }

    /// Called just before the advertiser sends its own goodbye.
    pub fn withdrawing(&self) {
        if let Ok(mut g) = self.withdrawn_at.lock() {
            *g = Some(Instant::now());
        }
    }

    fn current(&self) -> Option<OwnRecord> {
        self.record.lock().ok().and_then(|g| g.clone())
    }

    fn recently_withdrawn(&self) -> bool {
        self.withdrawn_at
            .lock()
            .ok()
            .and_then(|g| *g)
            .is_some_and(|t| t.elapsed() < OWN_GOODBYE_GRACE)
    }
}

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

impl Daemon {
    /// Record an alert: audit, (by default) pause provisioning, publish.
    /// Returns None when the same advertisement was just reported.
    pub async fn raise_alert(self: &Arc<Self>, a: AlertDraft) -> Result<Option<Alert>, Error> {
        if !self.alerts.is_new(&a, self.clock.instant()) {
            return Ok(None);
        }
        let now = self.now();
        let pause = self.cfg.monitor.on_rogue == OnRogue::Pause;
        let id = self.alerts.next.fetch_add(1, Ordering::Relaxed) + 1;
        let draft_alert = a.clone();
        let (paused, events) = self
            .transact_unpublished(move |_, v, u| {
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
        self.metrics.alert(alert.kind.as_str());
        self.alerts.push(alert.clone());
        self.publish(events);
        self.publish(vec![AdminEvent::Alert {
            alert: alert.clone(),
        }]);
        Ok(Some(alert))
    }
}

/// Browse `_idprov._tcp` on `mdns` until `shutdown`.
pub fn spawn(
    d: Arc<Daemon>,
    mdns: ServiceDaemon,
    own: Arc<OwnAdvert>,
    shutdown: CancellationToken,
) {
    if !d.cfg.monitor.enabled {
        return;
    }
    tokio::spawn(async move {
        let rx = match mdns.browse(SERVICE_TYPE) {
            Ok(rx) => rx,
            Err(e) => {
                tracing::error!(error = %e, "monitor: cannot browse for other advertisers");
                return;
            }
        };
        tracing::info!("monitor: watching for other {SERVICE_TYPE} advertisers");
        loop {
            let ev = tokio::select! {
                _ = shutdown.cancelled() => break,
                ev = rx.recv_async() => match ev {
                    Ok(ev) => ev,
                    // The responder shut down.
                    Err(_) => break,
                },
            };
            let Some(draft) = judge(&d.cfg.monitor, own.current().as_ref(), &own, ev) else {
                continue;
            };
            match d.raise_alert(draft).await {
                Ok(Some(_)) => own.reannounce.notify_one(),
                Ok(None) => {}
                Err(e) => tracing::error!(error = ?e, "monitor: could not record an alert"),
            }
        }
        let _ = mdns.stop_browse(SERVICE_TYPE);
    });
}

/// Is this browse event an alert?
fn judge(
    cfg: &MonitorConfig,
    own: Option<&OwnRecord>,
    state: &OwnAdvert,
    ev: ServiceEvent,
) -> Option<AlertDraft> {
    match ev {
        // Right after our own withdrawal (an address change) caches may
        // still mix old and new records of our name: not an alert.
        ServiceEvent::ServiceResolved(r)
            if state.recently_withdrawn()
                && own.is_some_and(|o| r.get_fullname().eq_ignore_ascii_case(&o.fullname)) =>
        {
            None
        }
        ServiceEvent::ServiceResolved(r) => judge_resolved(cfg, own, &r),
        ServiceEvent::ServiceRemoved(_, fullname) => {
            let own = own?;
            if !fullname.eq_ignore_ascii_case(&own.fullname) || state.recently_withdrawn() {
                return None;
            }
            Some(AlertDraft {
                kind: AlertKind::RogueGoodbye,
                instance: fullname,
                addresses: Vec::new(),
                port: None,
                daemon_id: None,
                ca_fingerprint: None,
                detail: "someone withdrew this daemon's records (mDNS goodbye it did not send)"
                    .into(),
            })
        }
        _ => None,
    }
}

fn judge_resolved(
    cfg: &MonitorConfig,
    own: Option<&OwnRecord>,
    r: &ResolvedService,
) -> Option<AlertDraft> {
    let mut addrs: Vec<IpAddr> = r.get_addresses().iter().map(|a| a.to_ip_addr()).collect();
    addrs.sort();
    let id = r.get_property_val_str(dnssd::DAEMON_ID).map(str::to_string);
    let ca = r
        .get_property_val_str(dnssd::CA_FINGERPRINT)
        .map(str::to_string);
    let base = |kind, detail: String| AlertDraft {
        kind,
        instance: r.get_fullname().to_string(),
        addresses: addrs.iter().map(IpAddr::to_string).collect(),
        port: Some(r.get_port()),
        daemon_id: id.clone(),
        ca_fingerprint: ca.clone(),
        detail,
    };
    if let Some(own) = own
        && r.get_fullname().eq_ignore_ascii_case(&own.fullname)
    {
        let mut wrong = Vec::new();
        let foreign: Vec<String> = addrs
            .iter()
            .filter(|a| !own.addresses.contains(a))
            .map(IpAddr::to_string)
            .collect();
        if !foreign.is_empty() {
            wrong.push(format!("addresses {} are not ours", foreign.join(", ")));
        }
        if r.get_port() != own.port {
            wrong.push(format!("port {} is not ours ({})", r.get_port(), own.port));
        }
        if !r.get_hostname().eq_ignore_ascii_case(&own.host) {
            wrong.push(format!("host {} is not ours", r.get_hostname()));
        }
        if id.as_deref() != Some(own.daemon_id.as_str()) {
            wrong.push(format!("TXT id {id:?} is not ours"));
        }
        if ca.as_deref() != Some(own.ca_fingerprint.as_str()) {
            wrong.push(format!("TXT ca {ca:?} is not our CA"));
        }
        if wrong.is_empty() {
            return None;
        }
        return Some(base(
            AlertKind::OwnNameSpoofed,
            format!(
                "this daemon's instance name answered by someone else: {}",
                wrong.join("; ")
            ),
        ));
    }
    let allowed = cfg
        .allow
        .iter()
        .any(|a| Some(a.as_str()) == id.as_deref() || Some(a.as_str()) == ca.as_deref());
    if allowed {
        tracing::info!(
            instance = r.get_fullname(),
            "monitor: allowed peer daemon seen"
        );
        return None;
    }
    Some(base(
        AlertKind::RogueAdvertiser,
        format!(
            "another {SERVICE_TYPE} advertiser (daemon id {}, CA {})",
            id.as_deref().unwrap_or("none"),
            ca.as_deref().unwrap_or("none")
        ),
    ))
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

    #[test]
    fn our_goodbye_is_not_an_alert_but_another_is() {
        let own = OwnRecord {
            fullname: "hub._idprov._tcp.local.".into(),
            host: "hub.local.".into(),
            addresses: vec![IpAddr::from([10, 0, 0, 1])],
            port: 8445,
            daemon_id: "d1".into(),
            ca_fingerprint: "ab".into(),
        };
        let state = OwnAdvert::default();
        let cfg = MonitorConfig::default();
        let bye = || ServiceEvent::ServiceRemoved(SERVICE_TYPE.into(), own.fullname.clone());
        let a = judge(&cfg, Some(&own), &state, bye());
        assert_eq!(a.map(|a| a.kind), Some(AlertKind::RogueGoodbye));
        state.withdrawing();
        assert!(judge(&cfg, Some(&own), &state, bye()).is_none());
        // Another instance's goodbye is not ours to judge.
        let other =
            ServiceEvent::ServiceRemoved(SERVICE_TYPE.into(), "x._idprov._tcp.local.".into());
        assert!(judge(&cfg, Some(&own), &OwnAdvert::default(), other).is_none());
    }
}
