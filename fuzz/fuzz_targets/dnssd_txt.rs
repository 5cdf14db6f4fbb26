//! DNS-SD answers as the device client reads them: instance and host names,
//! addresses and the raw TXT record (decoded by mdns-sd as on the wire),
//! turned into `DiscoveredDaemon`s and chosen among, with or without a
//! pinned CA fingerprint. Anyone on the LAN can send these.
//!
//! Input: a sequence of `tag len bytes…` fields (len is one byte):
//! `P` pinned fingerprint, `N` instance name (starts an answer), `H` host,
//! `O` port (2 bytes, big-endian), `A` address (4 or 16 bytes), `T` the raw
//! TXT RDATA (length-prefixed `key=value` strings).
#![no_main]

use std::net::IpAddr;

use idprov_proto::SERVICE_TYPE;
use libfuzzer_sys::fuzz_target;
use mdns_sd::{ServiceInfo, TxtProperties, TxtProperty};

#[derive(Default)]
struct Answer {
    name: String,
    host: String,
    port: u16,
    addrs: Vec<IpAddr>,
    txt: Vec<u8>,
}

/// Most answers one input makes (a browse keeps one per instance name).
const MAX_ANSWERS: usize = 16;

fuzz_target!(|data: &[u8]| {
    let mut pinned: Option<String> = None;
    let mut answers: Vec<Answer> = Vec::new();
    let mut rest = data;
    while let [tag, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (field, next) = tail.split_at(len);
        rest = next;
        let text = || String::from_utf8_lossy(field).into_owned();
        if *tag == b'N' {
            if answers.len() == MAX_ANSWERS {
                break;
            }
            answers.push(Answer {
                name: text(),
                ..Answer::default()
            });
            continue;
        }
        if *tag == b'P' {
            pinned = Some(text());
            continue;
        }
        let Some(a) = answers.last_mut() else {
            continue;
        };
        match (*tag, field.len()) {
            (b'H', _) => a.host = text(),
            (b'O', 2) => a.port = u16::from_be_bytes([field[0], field[1]]),
            (b'A', 4) => a
                .addrs
                .push(IpAddr::from([field[0], field[1], field[2], field[3]])),
            (b'A', 16) => {
                let mut b = [0u8; 16];
                b.copy_from_slice(field);
                a.addrs.push(IpAddr::from(b));
            }
            (b'T', _) => a.txt.extend_from_slice(field),
            _ => {}
        }
    }
    let resolved: Vec<_> = answers
        .iter()
        .filter_map(|a| {
            let txt: Vec<TxtProperty> = TxtProperties::from(a.txt.as_slice())
                .iter()
                .cloned()
                .collect();
            // mdns-sd refuses some names itself; those never reach the client.
            ServiceInfo::new(SERVICE_TYPE, &a.name, &a.host, &a.addrs[..], a.port, txt)
                .ok()
                .map(ServiceInfo::as_resolved_service)
        })
        .collect();
    if let Ok(d) = idprov_client::discovery::fuzz_answers(&resolved, pinned.as_deref()) {
        // Whatever was chosen is usable and, when pinned, has that CA.
        assert!(d.chosen.is_compatible());
        assert!(d.chosen.url().is_some());
        if let Some(p) = &pinned {
            assert_eq!(d.chosen.ca_fingerprint.as_deref(), Some(p.as_str()));
        }
        assert_eq!(d.others.len() + 1, resolved.len());
    }
});
