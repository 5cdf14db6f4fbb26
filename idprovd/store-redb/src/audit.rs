//! The append-only audit log. Each entry carries the SHA-256 of the previous
//! one, so an edited or deleted entry breaks the chain at a visible place.

use idprov_proto::admin::AuditEntry;
use idprovd_core::store::{AuditDraft, GENESIS_HASH, audit_hash};
use redb::ReadableTable;

use super::{AUDIT, StoreResult, Tx, decode, encode};

impl Tx<'_> {
    pub fn append_audit(&mut self, d: AuditDraft) -> StoreResult<AuditEntry> {
        let mut t = self.tx.open_table(AUDIT)?;
        let (seq, prev_hash) = match t.last()? {
            Some((k, v)) => {
                let last: AuditEntry = decode("audit", v.value())?;
                (k.value() + 1, last.hash)
            }
            None => (1, GENESIS_HASH.to_string()),
        };
        let mut e = AuditEntry {
            seq,
            at: d.at,
            actor: d.actor,
            action: d.action,
            target: d.target,
            source: d.source,
            detail: d.detail,
            prev_hash,
            hash: String::new(),
        };
        e.hash = audit_hash(&e);
        t.insert(seq, encode(&e)?.as_slice())?;
        Ok(e)
    }
}
