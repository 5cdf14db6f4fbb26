//! DNS-SD advertising of `_idprov._tcp.local.` (feature F1).
//!
//! The record carries explicit IPv4 addresses (a resolver may otherwise hand
//! devices only an IPv6 link-local address, useless without its scope) and
//! TXT records for the protocol version, the API path, the CA fingerprint and
//! the daemon id ([`idprov_proto::dnssd`]). The advertiser re-registers when
//! the addresses of its interfaces change, and withdraws the record (mDNS
//! goodbye) when the daemon shuts down.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result};
use idprov_proto::{API_PATH, PROTOCOL_VERSION, SERVICE_TYPE, dnssd};
use mdns_sd::{IfKind, ServiceDaemon, ServiceInfo};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use idprovd_core::config::{MdnsConfig, MdnsOverrides};

/// How often interface addresses are compared with what is advertised.
const ADDRESS_POLL: Duration = Duration::from_secs(2);
/// How long a goodbye may take at shutdown.
const WITHDRAW_TIMEOUT: Duration = Duration::from_secs(2);

/// What the advertisement says about the daemon.
#[derive(Debug, Clone)]
pub struct Advert {
    pub listen: SocketAddr,
    pub daemon_id: String,
    pub ca_fingerprint: String,
}

/// Start advertising; the task withdraws the record and ends when `shutdown`
/// is cancelled. Returns `None` when mDNS is disabled, else the task and the
/// responder (the rogue-advertiser monitor browses with it). What is
/// advertised is kept in `own`, and a notification on `own.reannounce`
/// announces the records again (monitor.rs).
pub fn spawn(
    cfg: &MdnsConfig,
    advert: Advert,
    own: std::sync::Arc<crate::monitor::OwnAdvert>,
    shutdown: CancellationToken,
) -> Result<Option<(JoinHandle<()>, ServiceDaemon)>> {
    if !cfg.enabled {
        return Ok(None);
    }
    let mdns = ServiceDaemon::new().context("starting the mDNS responder")?;
    if !cfg.interfaces.is_empty() {
        mdns.disable_interface(IfKind::All)
            .context("mDNS: selecting interfaces")?;
        for name in &cfg.interfaces {
            mdns.enable_interface(IfKind::Name(name.clone()))
                .with_context(|| format!("mDNS: enabling interface {name}"))?;
        }
    }
    let host = host_name();
    let instance = cfg
        .instance_name
        .clone()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| host.clone());
    // The SRV target: the instance's own label when one is configured, so two
    // daemons on one machine (or one namespace host) never merge addresses.
    let target = format!(
        "{}.local.",
        dns_label(if cfg.instance_name.is_some() {
            &instance
        } else {
            &host
        })
    );
    let interfaces = cfg.interfaces.clone();
    let responder = mdns.clone();
    let task = tokio::spawn(async move {
        let mut current: Vec<IpAddr> = Vec::new();
        let mut registered: Option<String> = None;
        let mut announced_once = false;
        let mut announced: Option<ServiceInfo> = None;
        let mut tick = tokio::time::interval(ADDRESS_POLL);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
                _ = own.reannounce.notified() => {
                    if let Some(info) = announced.clone() {
                        tracing::info!(instance = info.get_fullname(), "mDNS: announcing again after an alert");
                        if let Err(e) = mdns.register(info) {
                            tracing::warn!(error = %e, "mDNS: re-announce failed");
                        }
                    }
                    continue;
                }
            }
            let addrs = addresses(&interfaces, advert.listen);
            if addrs == current && registered.is_some() {
                continue;
            }
            if addrs.is_empty() {
                if registered.is_some() {
                    tracing::warn!("mDNS: no IPv4 address left to advertise; withdrawing");
                }
                own.withdrawing();
                withdraw(&mdns, registered.take()).await;
                announced = None;
                current = addrs;
                continue;
            }
            match service(&instance, &target, &addrs, &advert) {
                Ok(mut info) => {
                    // The first registration probes for a name conflict (another
                    // daemon with the same instance name). A re-announcement of
                    // our own name must not: its probe would meet our own
                    // goodbye and rename us to "NAME (2)".
                    if announced_once {
                        info.set_requires_probe(false);
                    }
                    // Withdraw first so devices drop addresses that are gone.
                    if registered.is_some() {
                        own.withdrawing();
                    }
                    withdraw(&mdns, registered.take()).await;
                    let name = info.get_fullname().to_string();
                    let record = crate::monitor::OwnRecord {
                        fullname: name.clone(),
                        host: target.clone(),
                        addresses: addrs.clone(),
                        port: advert.listen.port(),
                        daemon_id: advert.daemon_id.clone(),
                        ca_fingerprint: advert.ca_fingerprint.clone(),
                    };
                    announced = Some(info.clone());
                    // Known to the monitor before any answer can come back.
                    own.registered(record);
                    match mdns.register(info) {
                        Ok(()) => {
                            tracing::info!(instance = %name, addresses = ?addrs, port = advert.listen.port(), "mDNS: advertising");
                            registered = Some(name);
                            announced_once = true;
                            current = addrs;
                        }
                        Err(e) => tracing::warn!(error = %e, "mDNS: register failed; retrying"),
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "mDNS: cannot build the service record; not advertising");
                    break;
                }
            }
        }
        own.withdrawing();
        withdraw(&mdns, registered.take()).await;
        if let Ok(rx) = mdns.shutdown() {
            let _ = tokio::time::timeout(WITHDRAW_TIMEOUT, rx.recv_async()).await;
        }
    });
    Ok(Some((task, responder)))
}

fn service(instance: &str, target: &str, addrs: &[IpAddr], a: &Advert) -> Result<ServiceInfo> {
    let txt = [
        (dnssd::VERSION, PROTOCOL_VERSION),
        (dnssd::API_PATH, API_PATH),
        (dnssd::CA_FINGERPRINT, a.ca_fingerprint.as_str()),
        (dnssd::DAEMON_ID, a.daemon_id.as_str()),
    ];
    ServiceInfo::new(
        SERVICE_TYPE,
        instance,
        target,
        addrs,
        a.listen.port(),
        &txt[..],
    )
    .context("mDNS service record")
}

async fn withdraw(mdns: &ServiceDaemon, name: Option<String>) {
    let Some(name) = name else { return };
    match mdns.unregister(&name) {
        Ok(rx) => {
            let _ = tokio::time::timeout(WITHDRAW_TIMEOUT, rx.recv_async()).await;
            tracing::info!(instance = %name, "mDNS: withdrawn");
        }
        Err(e) => tracing::warn!(error = %e, "mDNS: unregister failed"),
    }
}

/// The IPv4 addresses to advertise, sorted: the listen address if it is a
/// specific one, else those of the chosen interfaces (loopback only when
/// nothing else has an address, or when named).
fn addresses(interfaces: &[String], listen: SocketAddr) -> Vec<IpAddr> {
    if !listen.ip().is_unspecified() {
        return vec![listen.ip()];
    }
    let all = match if_addrs::get_if_addrs() {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = %e, "mDNS: cannot list interfaces");
            return Vec::new();
        }
    };
    let v4 = all.iter().filter(|i| i.ip().is_ipv4());
    let mut out: Vec<IpAddr> = if interfaces.is_empty() {
        let outside: Vec<IpAddr> = v4
            .clone()
            .filter(|i| !i.is_loopback())
            .map(|i| i.ip())
            .collect();
        if outside.is_empty() {
            v4.map(|i| i.ip()).collect()
        } else {
            outside
        }
    } else {
        v4.filter(|i| interfaces.contains(&i.name))
            .map(|i| i.ip())
            .collect()
    };
    out.sort();
    out.dedup();
    out
}

/// The host name, from the kernel (no libc call needed).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "idprovd".to_string())
}

/// A valid DNS label: letters, digits and `-`, at most 63 characters.
fn dns_label(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(63)
        .collect();
    out = out.trim_matches('-').to_string();
    if out.is_empty() {
        "idprovd".into()
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_dns_safe() {
        assert_eq!(dns_label("hub a.b"), "hub-a-b");
        assert_eq!(dns_label("--"), "idprovd");
        assert_eq!(dns_label(&"x".repeat(100)).len(), 63);
    }

    #[test]
    fn specific_listen_address_is_advertised_alone() {
        let listen: SocketAddr = "10.1.2.3:8445".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(addresses(&[], listen), vec![listen.ip()]);
    }

    #[test]
    fn record_carries_the_txt_contract() -> Result<()> {
        let a = Advert {
            listen: "0.0.0.0:8445".parse()?,
            daemon_id: "d-1".into(),
            ca_fingerprint: "ab".repeat(32),
        };
        let ip: IpAddr = "10.0.0.1".parse()?;
        let info = service("hub", "hub.local.", &[ip], &a)?;
        assert_eq!(info.get_fullname(), "hub._idprov._tcp.local.");
        assert_eq!(info.get_property_val_str("v"), Some("1"));
        assert_eq!(info.get_property_val_str("path"), Some("/idprov/v1"));
        assert_eq!(
            info.get_property_val_str("ca"),
            Some("ab".repeat(32).as_str())
        );
        assert_eq!(info.get_property_val_str("id"), Some("d-1"));
        assert_eq!(info.get_port(), 8445);
        Ok(())
    }
}
