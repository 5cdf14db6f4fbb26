//! Human renderings of the daemon's answers (tables and detail blocks);
//! `--json` prints the answers themselves instead.

use idprov_proto::admin::{
    Alert, AuditEntry, DeviceKeyView, DeviceStatus, DeviceView, PendingView,
};
use idprov_proto::x509::{CertificateView, CrlInfo, RegistryCaView};
use idprovctl::output::{Table, fields, joined, opt_time, time};

pub fn status(s: DeviceStatus) -> &'static str {
    match s {
        DeviceStatus::Active => "active",
        DeviceStatus::Revoked => "revoked",
        DeviceStatus::Rejected => "rejected",
    }
}

fn mac(m: Option<&idprov_proto::MacAddr>) -> String {
    m.map_or_else(|| "-".to_string(), |m| m.to_string())
}

pub fn pending_table(items: &[PendingView]) -> Table {
    let mut t = Table::new(&[
        "DEVICE ID",
        "REV",
        "CODE",
        "SOURCE",
        "LAST SEEN",
        "ATTEMPTS",
        "FLAGS",
        "OOB MATCH",
    ]);
    for p in items {
        t.row(vec![
            p.device_id.to_string(),
            p.revision.to_string(),
            p.verification_code.clone(),
            p.source.clone(),
            time(p.last_seen),
            p.attempts.to_string(),
            joined(&p.flags),
            match &p.oob_hold {
                Some(h) => format!(
                    "{} (held by {})",
                    h.matched_by.as_str(),
                    h.held_by.join(",")
                ),
                None => "-".into(),
            },
        ]);
    }
    t
}

pub fn pending(p: &PendingView) -> std::io::Result<()> {
    fields(&[
        ("device id", p.device_id.to_string()),
        ("revision", p.revision.to_string()),
        ("verification code", p.verification_code.clone()),
        ("key fingerprint", p.key_fingerprint.clone()),
        ("mac", mac(p.mac.as_ref())),
        ("source", p.source.clone()),
        ("first seen", time(p.first_seen)),
        ("last seen", time(p.last_seen)),
        ("attempts", p.attempts.to_string()),
        ("flags", joined(&p.flags)),
        (
            "oob list",
            match &p.oob_hold {
                Some(h) => h.to_string(),
                None => "not listed (no OOB entry matched)".into(),
            },
        ),
    ])
}

pub fn devices_table(items: &[DeviceView]) -> Table {
    let mut t = Table::new(&[
        "DEVICE ID",
        "STATUS",
        "REV",
        "KEYS",
        "MAC",
        "ADMITTED BY",
        "LAST ISSUED",
        "FLAGS",
    ]);
    for d in items {
        t.row(vec![
            d.device_id.to_string(),
            status(d.status).to_string(),
            d.revision.to_string(),
            d.keys.len().to_string(),
            mac(d.mac.as_ref()),
            d.admitted_by.clone(),
            opt_time(d.last_issued_at),
            joined(&d.flags),
        ]);
    }
    t
}

pub fn device(d: &DeviceView) -> std::io::Result<()> {
    fields(&[
        ("device id", d.device_id.to_string()),
        ("status", status(d.status).to_string()),
        ("revision", d.revision.to_string()),
        ("mac", mac(d.mac.as_ref())),
        ("admitted by", d.admitted_by.clone()),
        ("created", time(d.created_at)),
        ("last issued", opt_time(d.last_issued_at)),
        ("tokens issued", d.tokens_issued.to_string()),
        ("flags", joined(&d.flags)),
        (
            "keys",
            joined(&d.keys.iter().map(|k| k.kid.clone()).collect::<Vec<_>>()),
        ),
    ])
}

pub fn keys(keys: &[DeviceKeyView]) -> Table {
    let mut t = Table::new(&["KID", "FORMAT", "ADDED", "EXPIRES"]);
    for k in keys {
        t.row(vec![
            k.kid.clone(),
            format!("{:?}", k.key_format),
            time(k.added_at),
            opt_time(k.expires_at),
        ]);
    }
    t
}

pub fn certs(list: &[CertificateView]) -> Table {
    let mut t = Table::new(&["SERIAL", "KID", "NOT BEFORE", "NOT AFTER", "REVOKED"]);
    for c in list {
        t.row(vec![
            c.serial.clone(),
            c.kid.clone(),
            time(c.not_before),
            time(c.not_after),
            opt_time(c.revoked_at),
        ]);
    }
    t
}

pub fn cert(c: &CertificateView) -> std::io::Result<()> {
    fields(&[
        ("serial", c.serial.clone()),
        ("device id", c.device_id.to_string()),
        ("kid", c.kid.clone()),
        ("issued", time(c.issued_at)),
        ("not before", time(c.not_before)),
        ("not after", time(c.not_after)),
        ("revoked", opt_time(c.revoked_at)),
        (
            "revocation reason",
            c.revocation_reason.clone().unwrap_or_else(|| "-".into()),
        ),
    ])
}

pub fn registry_cas(list: &[RegistryCaView]) -> Table {
    let mut t = Table::new(&["FINGERPRINT", "NOT AFTER", "ADDED BY", "SUBJECT"]);
    for c in list {
        t.row(vec![
            c.fingerprint.clone(),
            time(c.not_after),
            c.added_by.clone(),
            c.subject.clone(),
        ]);
    }
    t
}

pub fn crl(i: &CrlInfo) -> std::io::Result<()> {
    fields(&[
        ("number", i.number.to_string()),
        ("this update", time(i.this_update)),
        ("next update", time(i.next_update)),
        ("revoked serials", i.revoked.to_string()),
        ("size (DER bytes)", i.der_bytes.to_string()),
    ])
}

pub fn alerts(items: &[Alert]) -> Table {
    let mut t = Table::new(&["ID", "AT", "KIND", "PAUSED", "INSTANCE", "DETAIL"]);
    for a in items {
        t.row(vec![
            a.id.to_string(),
            time(a.at),
            a.kind.as_str().to_string(),
            if a.paused { "yes" } else { "no" }.to_string(),
            a.instance.clone(),
            a.detail.clone(),
        ]);
    }
    t
}

pub fn audit(items: &[AuditEntry]) -> Table {
    let mut t = Table::new(&["SEQ", "AT", "ACTOR", "ACTION", "TARGET", "DETAIL"]);
    for e in items {
        t.row(vec![
            e.seq.to_string(),
            time(e.at),
            e.actor.clone(),
            e.action.clone(),
            e.target.clone().unwrap_or_else(|| "-".into()),
            e.detail.clone(),
        ]);
    }
    t
}
