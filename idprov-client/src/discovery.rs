//! Finding the daemon by DNS-SD (`_idprov._tcp.local.`).
//!
//! Everything in an mDNS answer is unauthenticated and may come from anyone
//! on the LAN. The TXT records only help choose: with a pinned CA the client
//! takes the advertiser whose `ca` record matches and reports the others; the
//! TLS handshake against the pinned CA then decides whether it is really the
//! daemon. Trust on first use is refused when several daemons advertise.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use idprov_proto::{API_PATH, PROTOCOL_VERSION, SERVICE_TYPE, dnssd};
use mdns_sd::{ServiceDaemon, ServiceEvent};
use tokio::time::Instant;

use crate::error::Error;

/// Longest TXT value kept; anything longer is cut (hostile input).
const MAX_TXT: usize = 128;

/// One advertiser of `_idprov._tcp`, as it described itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveredDaemon {
    /// The DNS-SD instance name (e.g. `hub._idprov._tcp.local.`), escaped for
    /// display.
    pub instance: String,
    pub host: String,
    pub port: u16,
    /// IPv4 first; IPv6 link-local addresses are left out (they need a scope).
    pub addresses: Vec<IpAddr>,
    pub version: Option<String>,
    pub api_path: Option<String>,
    pub ca_fingerprint: Option<String>,
    pub daemon_id: Option<String>,
}

impl DiscoveredDaemon {
    /// `https://ADDR:PORT` for the first usable address.
    pub fn url(&self) -> Option<String> {
        self.addresses.first().map(|ip| match ip {
            IpAddr::V4(v4) => format!("https://{v4}:{}", self.port),
            IpAddr::V6(v6) => format!("https://[{v6}]:{}", self.port),
        })
    }

    /// Whether it speaks our protocol version at our API path.
    pub fn is_compatible(&self) -> bool {
        self.version.as_deref() == Some(PROTOCOL_VERSION)
            && self.api_path.as_deref().is_none_or(|p| p == API_PATH)
            && !self.addresses.is_empty()
    }

    fn summary(&self) -> String {
        format!(
            "{} at {} (ca {})",
            self.instance,
            self.url().unwrap_or_else(|| "no address".into()),
            self.ca_fingerprint
                .as_deref()
                .map(|f| &f[..f.len().min(16)])
                .unwrap_or("unknown")
        )
    }

    fn from_resolved(r: &mdns_sd::ResolvedService) -> Self {
        let txt = |key: &str| {
            r.get_property_val_str(key).map(|v| {
                idprov_proto::ids::escape_untrusted(&v.chars().take(MAX_TXT).collect::<String>())
            })
        };
        let mut addresses: Vec<IpAddr> = r
            .get_addresses()
            .iter()
            .map(|a| a.to_ip_addr())
            .filter(|ip| match ip {
                IpAddr::V4(v4) => !v4.is_unspecified() && !v4.is_multicast(),
                IpAddr::V6(v6) => !v6.is_unicast_link_local() && !v6.is_unspecified(),
            })
            .collect();
        // IPv4 first, then a stable order, so every device picks the same one.
        addresses.sort_by_key(|ip| (ip.is_ipv6(), *ip));
        DiscoveredDaemon {
            instance: idprov_proto::ids::escape_untrusted(r.get_fullname()),
            host: idprov_proto::ids::escape_untrusted(r.get_hostname()),
            port: r.get_port(),
            addresses,
            version: txt(dnssd::VERSION),
            api_path: txt(dnssd::API_PATH),
            ca_fingerprint: txt(dnssd::CA_FINGERPRINT).map(|f| f.to_ascii_lowercase()),
            daemon_id: txt(dnssd::DAEMON_ID),
        }
    }
}

/// The outcome of a browse: the daemon to use and everyone else who answered.
#[derive(Debug, Clone)]
pub struct Discovery {
    pub chosen: DiscoveredDaemon,
    /// Other advertisers (another CA, another protocol version). With a
    /// pinned CA these are at best other hubs and at worst rogue servers.
    pub others: Vec<DiscoveredDaemon>,
}

/// How long to browse.
#[derive(Debug, Clone, Copy)]
pub struct DiscoveryOptions {
    /// Give up after this long without a usable daemon.
    pub timeout: Duration,
    /// After the first usable answer, keep listening this long to learn about
    /// other advertisers (to report them, and to refuse ambiguous TOFU).
    /// Responders answer a shared query after a random 20–120 ms (RFC 6762
    /// §6), so the default 200 ms hears the others that answered the same
    /// query, at a small cost to start-up time.
    pub linger: Duration,
}

impl Default for DiscoveryOptions {
    fn default() -> Self {
        DiscoveryOptions {
            timeout: Duration::from_secs(10),
            linger: Duration::from_millis(200),
        }
    }
}

/// Browse for daemons. With `pinned` (a CA fingerprint), choose the one that
/// advertises it; without, require exactly one compatible daemon.
pub async fn discover(pinned: Option<&str>, opts: DiscoveryOptions) -> Result<Discovery, Error> {
    let all = browse_all(pinned, opts).await?;
    choose(all, pinned, opts.timeout)
}

/// Every compatible daemon that answered, in instance-name order: a device
/// with a setup code tries each in turn, since only the one that knows its
/// code can complete the exchange (setup.rs).
pub(crate) async fn discover_candidates(
    opts: DiscoveryOptions,
) -> Result<Vec<DiscoveredDaemon>, Error> {
    let all: Vec<DiscoveredDaemon> = browse_all(None, opts)
        .await?
        .into_iter()
        .filter(DiscoveredDaemon::is_compatible)
        .collect();
    if all.is_empty() {
        return Err(Error::NotFound(opts.timeout));
    }
    Ok(all)
}

async fn browse_all(
    pinned: Option<&str>,
    opts: DiscoveryOptions,
) -> Result<Vec<DiscoveredDaemon>, Error> {
    let mdns = ServiceDaemon::new().map_err(|e| Error::Discovery {
        message: "cannot start the mDNS responder".into(),
        source: Some(e.into()),
    })?;
    let result = browse(&mdns, pinned, opts).await;
    // Stop the responder thread; nothing we registered needs withdrawing.
    let _ = mdns.shutdown();
    result
}

async fn browse(
    mdns: &ServiceDaemon,
    pinned: Option<&str>,
    opts: DiscoveryOptions,
) -> Result<Vec<DiscoveredDaemon>, Error> {
    let events = mdns.browse(SERVICE_TYPE).map_err(|e| Error::Discovery {
        message: format!("cannot browse {SERVICE_TYPE}"),
        source: Some(e.into()),
    })?;
    let start = Instant::now();
    let mut deadline = start + opts.timeout;
    let mut lingering = false;
    // Keyed by instance name: a re-announcement replaces the earlier answer.
    let mut seen: BTreeMap<String, DiscoveredDaemon> = BTreeMap::new();
    loop {
        match tokio::time::timeout_at(deadline, events.recv_async()).await {
            Err(_) => break,
            Ok(Err(e)) => {
                return Err(Error::Discovery {
                    message: "mDNS responder stopped".into(),
                    source: Some(e.into()),
                });
            }
            Ok(Ok(ServiceEvent::ServiceResolved(r))) => {
                let d = DiscoveredDaemon::from_resolved(&r);
                tracing::debug!(daemon = %d.summary(), "DNS-SD answer");
                seen.insert(d.instance.clone(), d);
                if !lingering && select(&seen, pinned).is_some() {
                    lingering = true;
                    deadline = (Instant::now() + opts.linger).min(start + opts.timeout);
                }
            }
            Ok(Ok(ServiceEvent::ServiceRemoved(_, name))) => {
                seen.remove(&idprov_proto::ids::escape_untrusted(&name));
            }
            Ok(Ok(_)) => {}
        }
    }
    Ok(seen.into_values().collect())
}

fn select<'a>(
    seen: &'a BTreeMap<String, DiscoveredDaemon>,
    pinned: Option<&str>,
) -> Option<&'a DiscoveredDaemon> {
    seen.values()
        .filter(|d| d.is_compatible())
        .find(|d| pinned.is_none_or(|fp| d.ca_fingerprint.as_deref() == Some(fp)))
}

/// The selection rule, separate from the network for testing.
pub(crate) fn choose(
    all: Vec<DiscoveredDaemon>,
    pinned: Option<&str>,
    timeout: Duration,
) -> Result<Discovery, Error> {
    if all.is_empty() {
        return Err(Error::NotFound(timeout));
    }
    let seen = || {
        all.iter()
            .map(DiscoveredDaemon::summary)
            .collect::<Vec<_>>()
            .join("; ")
    };
    let pick = match pinned {
        Some(fp) => all
            .iter()
            .position(|d| d.is_compatible() && d.ca_fingerprint.as_deref() == Some(fp))
            .ok_or_else(|| Error::NoPinnedDaemon {
                count: all.len(),
                pinned: fp.to_string(),
                seen: seen(),
            })?,
        None => {
            let compatible: Vec<usize> =
                (0..all.len()).filter(|i| all[*i].is_compatible()).collect();
            match compatible.as_slice() {
                [one] => *one,
                [] => return Err(Error::NotFound(timeout)),
                many => {
                    return Err(Error::AmbiguousTofu {
                        count: many.len(),
                        seen: seen(),
                    });
                }
            }
        }
    };
    let mut others = all;
    let chosen = others.remove(pick);
    Ok(Discovery { chosen, others })
}

/// What the client makes of DNS-SD answers (the untrusted TXT records,
/// names and addresses) and whom it then picks: the entry point of the
/// `dnssd_txt` fuzz target (docs/fuzzing.md). Not part of the API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub fn fuzz_answers(
    answers: &[mdns_sd::ResolvedService],
    pinned: Option<&str>,
) -> Result<Discovery, Error> {
    let all: Vec<DiscoveredDaemon> = answers
        .iter()
        .map(DiscoveredDaemon::from_resolved)
        .collect();
    for d in &all {
        let _ = (d.summary(), d.url(), d.is_compatible());
    }
    choose(all, pinned, Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn daemon(name: &str, ca: &str) -> DiscoveredDaemon {
        DiscoveredDaemon {
            instance: format!("{name}._idprov._tcp.local."),
            host: format!("{name}.local."),
            port: 8445,
            addresses: vec!["10.0.0.1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))],
            version: Some("1".into()),
            api_path: Some(API_PATH.into()),
            ca_fingerprint: Some(ca.into()),
            daemon_id: Some(name.into()),
        }
    }

    #[test]
    fn pinned_ca_picks_its_daemon_and_reports_the_rest() -> Result<(), Error> {
        let all = vec![
            daemon("rogue", "bb"),
            daemon("hub", "aa"),
            daemon("x", "cc"),
        ];
        let d = choose(all, Some("aa"), Duration::from_secs(1))?;
        assert_eq!(d.chosen.daemon_id.as_deref(), Some("hub"));
        assert_eq!(d.others.len(), 2);
        assert_eq!(d.chosen.url().as_deref(), Some("https://10.0.0.1:8445"));
        Ok(())
    }

    #[test]
    fn pinned_ca_absent_is_an_error_naming_what_was_seen() {
        let err = choose(
            vec![daemon("rogue", "bb")],
            Some("aa"),
            Duration::from_secs(1),
        );
        match err {
            Err(Error::NoPinnedDaemon { count, seen, .. }) => {
                assert_eq!(count, 1);
                assert!(seen.contains("rogue"));
            }
            other => panic!("expected NoPinnedDaemon, got {other:?}"),
        }
    }

    #[test]
    fn tofu_needs_exactly_one_compatible_daemon() {
        assert!(choose(vec![daemon("hub", "aa")], None, Duration::from_secs(1)).is_ok());
        assert!(matches!(
            choose(
                vec![daemon("a", "aa"), daemon("b", "bb")],
                None,
                Duration::from_secs(1)
            ),
            Err(Error::AmbiguousTofu { count: 2, .. })
        ));
        let mut old = daemon("old", "cc");
        old.version = Some("0".into());
        let d = choose(vec![old, daemon("hub", "aa")], None, Duration::from_secs(1));
        assert!(matches!(d, Ok(ref d) if d.others.len() == 1));
        assert!(matches!(
            choose(vec![], None, Duration::from_secs(1)),
            Err(Error::NotFound(_))
        ));
    }

    #[test]
    fn a_daemon_without_addresses_or_of_another_version_is_not_usable() {
        let mut d = daemon("hub", "aa");
        d.addresses.clear();
        assert!(!d.is_compatible());
        let mut d = daemon("hub", "aa");
        d.api_path = Some("/other".into());
        assert!(!d.is_compatible());
    }
}
