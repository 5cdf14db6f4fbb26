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

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use idprov_proto::admin::AlertKind;
use idprov_proto::{SERVICE_TYPE, dnssd};
use mdns_sd::{ResolvedService, ServiceDaemon, ServiceEvent};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use idprovd_core::Daemon;
pub use idprovd_core::alerts::{AlertDraft, MonitorConfig, OnRogue};

/// How long after our own withdrawal a goodbye for our name is ours.
const OWN_GOODBYE_GRACE: Duration = Duration::from_secs(5);

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
