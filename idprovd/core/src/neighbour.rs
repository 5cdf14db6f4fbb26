//! The kernel's neighbour table: which link-layer (MAC) address the network
//! shows for a peer address. A device's claimed MAC is compared with it
//! (flags.rs). Only peers on one of our own links have an entry: a routed
//! peer's packets carry the router's MAC, so no entry means "cannot tell",
//! never "mismatch".
//!
//! IPv4 comes from the ARP table in procfs, which the kernel keeps per
//! network namespace. By the time a request is read the kernel has
//! resolved the peer (it answered the peer's TCP handshake), so the entry is
//! there and complete. IPv6 neighbours are not in procfs (they need netlink)
//! and are not checked.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use idprov_proto::MacAddr;

/// `ATF_COM`: the entry is resolved.
const ATF_COM: u32 = 0x2;

/// The MAC the kernel resolved for `peer`, if it is an on-link IPv4 peer.
pub fn lookup(peer: IpAddr) -> Option<MacAddr> {
    // `/proc/net` is the namespace of the process's main thread; the
    // calling thread's own is under thread-self (they differ when a thread
    // entered another network namespace, as the LAN tests do).
    let own = Path::new("/proc/thread-self/net/arp");
    if own.exists() {
        lookup_in(own, peer)
    } else {
        lookup_in(Path::new("/proc/net/arp"), peer)
    }
}

pub fn lookup_in(table: &Path, peer: IpAddr) -> Option<MacAddr> {
    let v4 = match peer {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(v6) => v6.to_ipv4_mapped()?,
    };
    if v4.is_loopback() {
        return None;
    }
    let text = std::fs::read_to_string(table).ok()?;
    parse_arp(&text, v4)
}

fn parse_arp(text: &str, peer: Ipv4Addr) -> Option<MacAddr> {
    // IP address  HW type  Flags  HW address  Mask  Device
    for line in text.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let [ip, _hw, flags, mac, ..] = cols.as_slice() else {
            continue;
        };
        if ip.parse::<Ipv4Addr>().ok() != Some(peer) {
            continue;
        }
        let flags = u32::from_str_radix(flags.trim_start_matches("0x"), 16).unwrap_or(0);
        if flags & ATF_COM == 0 {
            continue;
        }
        match mac.parse::<MacAddr>() {
            Ok(m) if m.0 != [0; 6] => return Some(m),
            _ => continue,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str =
        "IP address       HW type     Flags       HW address            Mask     Device
10.213.0.2       0x1         0x2         6a:1f:00:aa:bb:01     *        eth0
10.213.0.3       0x1         0x0         00:00:00:00:00:00     *        eth0
10.213.0.4       0x1         0x6         6a:1f:00:aa:bb:04     *        eth0
";

    #[test]
    fn complete_entries_only() {
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap_or(Ipv4Addr::UNSPECIFIED);
        assert_eq!(
            parse_arp(TABLE, ip("10.213.0.2")).map(|m| m.to_string()),
            Some("6a:1f:00:aa:bb:01".to_string())
        );
        assert_eq!(parse_arp(TABLE, ip("10.213.0.3")), None);
        assert!(parse_arp(TABLE, ip("10.213.0.4")).is_some());
        assert_eq!(parse_arp(TABLE, ip("10.213.0.9")), None);
        assert_eq!(parse_arp("garbage\nmore garbage", ip("10.213.0.2")), None);
    }

    #[test]
    fn loopback_and_ipv6_are_not_looked_up() {
        assert_eq!(
            lookup("127.0.0.1".parse().unwrap_or(IpAddr::from([0; 4]))),
            None
        );
        assert_eq!(
            lookup("fe80::1".parse().unwrap_or(IpAddr::from([0; 4]))),
            None
        );
    }
}
