//! What each daemon record looks like to a [`List`](crate::list::List): its
//! key and the text the filter searches.

use idprov_proto::DeviceId;
use idprov_proto::admin::{AuditEntry, DeviceStatus, DeviceView, OobEntryView, PendingView};

use crate::alerts::{Alert, AlertKey};
use crate::list::Row;

impl Row for PendingView {
    type Key = DeviceId;
    fn key(&self) -> &DeviceId {
        &self.device_id
    }
    fn order(a: &DeviceId, b: &DeviceId) -> std::cmp::Ordering {
        crate::text::natural_cmp(a.as_str(), b.as_str())
    }
    fn haystack(&self) -> String {
        let mut s = format!(
            "{} {} {} {} {} {}",
            self.device_id,
            self.mac.map(|m| m.to_string()).unwrap_or_default(),
            self.key_format.as_str(),
            self.key_fingerprint,
            self.verification_code,
            self.source,
        );
        for f in &self.flags {
            s.push(' ');
            s.push_str(f);
        }
        s
    }
}

pub fn status_str(s: DeviceStatus) -> &'static str {
    match s {
        DeviceStatus::Active => "active",
        DeviceStatus::Revoked => "revoked",
        DeviceStatus::Rejected => "rejected",
    }
}

impl Row for DeviceView {
    type Key = DeviceId;
    fn key(&self) -> &DeviceId {
        &self.device_id
    }
    fn order(a: &DeviceId, b: &DeviceId) -> std::cmp::Ordering {
        crate::text::natural_cmp(a.as_str(), b.as_str())
    }
    fn haystack(&self) -> String {
        let mut s = format!(
            "{} {} {} {}",
            self.device_id,
            status_str(self.status),
            self.mac.map(|m| m.to_string()).unwrap_or_default(),
            self.admitted_by,
        );
        for k in &self.keys {
            s.push(' ');
            s.push_str(&k.kid);
        }
        for f in &self.flags {
            s.push(' ');
            s.push_str(f);
        }
        s
    }
}

impl Row for OobEntryView {
    type Key = DeviceId;
    fn key(&self) -> &DeviceId {
        &self.device_id
    }
    fn order(a: &DeviceId, b: &DeviceId) -> std::cmp::Ordering {
        crate::text::natural_cmp(a.as_str(), b.as_str())
    }
    fn haystack(&self) -> String {
        format!(
            "{} {} {} {} {}",
            self.device_id,
            self.mac.map(|m| m.to_string()).unwrap_or_default(),
            self.key_fingerprint.as_deref().unwrap_or(""),
            if self.has_secret { "secret" } else { "" },
            self.note.as_deref().unwrap_or(""),
        )
    }
}

impl Row for AuditEntry {
    type Key = u64;
    fn key(&self) -> &u64 {
        &self.seq
    }
    fn haystack(&self) -> String {
        format!(
            "{} {} {} {} {}",
            self.actor,
            self.action,
            self.target.as_deref().unwrap_or(""),
            self.source.as_deref().unwrap_or(""),
            self.detail,
        )
    }
}

impl Row for Alert {
    type Key = AlertKey;
    fn key(&self) -> &AlertKey {
        &self.key
    }
    fn haystack(&self) -> String {
        format!(
            "{} {} {}",
            self.key.kind(),
            self.key.subject(),
            self.flags.join(" ")
        )
    }
}
