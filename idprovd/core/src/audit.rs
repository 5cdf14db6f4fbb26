//! The audit log's hash chain. Each entry carries the SHA-256 of the
//! previous one, so an edited or deleted entry breaks the chain at a visible
//! place; backends assign `seq` and the hashes when they append.

use idprov_proto::admin::AuditEntry;
use serde::Serialize;

pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What a caller knows of an entry; the store adds seq and hashes.
#[derive(Debug, Clone)]
pub struct AuditDraft {
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub source: Option<String>,
    pub detail: String,
}

/// The hashed form: every field but `hash`, in a fixed order.
#[derive(Serialize)]
struct Hashed<'a> {
    seq: u64,
    at: i64,
    actor: &'a str,
    action: &'a str,
    target: &'a Option<String>,
    source: &'a Option<String>,
    detail: &'a str,
    prev_hash: &'a str,
}

pub fn audit_hash(e: &AuditEntry) -> String {
    let h = Hashed {
        seq: e.seq,
        at: e.at,
        actor: &e.actor,
        action: &e.action,
        target: &e.target,
        source: &e.source,
        detail: &e.detail,
        prev_hash: &e.prev_hash,
    };
    let bytes = serde_json::to_vec(&h).unwrap_or_default();
    idprov_proto::keys::sha256_hex(&bytes)
}

/// Check a run of consecutive entries; `prev` is the hash before the first.
/// Returns the seq of the first broken entry.
pub fn verify_chain<'a>(
    prev: &str,
    entries: impl IntoIterator<Item = &'a AuditEntry>,
) -> Result<String, u64> {
    let mut prev = prev.to_string();
    for e in entries {
        if e.prev_hash != prev || audit_hash(e) != e.hash {
            return Err(e.seq);
        }
        prev = e.hash.clone();
    }
    Ok(prev)
}

/// An administrator acting, and from where (for the audit log).
#[derive(Debug, Clone)]
pub struct Actor {
    pub name: String,
    pub source: String,
}

impl Actor {
    /// How the audit log and `admitted_by` name an administrator.
    pub fn label(&self) -> String {
        format!("{}{}", crate::records::ADMIN_PREFIX, self.name)
    }
}

/// An audit draft from its parts.
pub fn draft(
    at: i64,
    actor: &str,
    action: &str,
    target: Option<&str>,
    source: Option<&str>,
    detail: String,
) -> AuditDraft {
    AuditDraft {
        at,
        actor: actor.to_string(),
        action: action.to_string(),
        target: target.map(str::to_string),
        source: source.map(str::to_string),
        detail,
    }
}
