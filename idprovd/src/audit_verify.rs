//! `idprovd audit verify`: check the audit log's hash chain and name the
//! first broken entry.
//!
//! While the daemon runs, redb's lock keeps everyone else out of the store,
//! so the chain is read through the admin API, page by page; on a stopped
//! daemon the store file is read directly. Either way the entries are
//! checked as a stream (constant memory): each entry's hash must cover its
//! own fields and the previous entry's hash, and sequence numbers must run
//! on without a gap from 1.
//!
//! On the PostgreSQL backend the database is shared by the site's daemons
//! and read on a snapshot, so the chain is read from it directly whether
//! daemons run or not ([`verify_site`]).
//!
//! What the chain cannot show: entries cut off the end (the last entry
//! hashes nothing after it). Compare `head_hash` with a value recorded
//! earlier (a backup manifest, a log line) to catch that.

use std::path::Path;

use idprov_proto::admin::{AuditEntry, ListQuery, MAX_PAGE};
use serde::Serialize;

use crate::store::{GENESIS_HASH, STORE_FILE, StoreError, audit_hash};

/// The result of a check.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ChainReport {
    /// Entries checked (up to and including the first broken one).
    pub entries: u64,
    /// Seq and hash of the last good entry.
    pub last_good_seq: u64,
    pub head_hash: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broken: Option<Broken>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Broken {
    pub seq: u64,
    pub reason: String,
}

impl ChainReport {
    pub fn is_intact(&self) -> bool {
        self.broken.is_none()
    }
}

/// A streaming chain check.
pub struct Verifier {
    report: ChainReport,
    expected_seq: u64,
}

impl Default for Verifier {
    fn default() -> Self {
        Verifier {
            report: ChainReport {
                entries: 0,
                last_good_seq: 0,
                head_hash: GENESIS_HASH.to_string(),
                broken: None,
            },
            expected_seq: 1,
        }
    }
}

impl Verifier {
    /// Check the next entry; false once the chain is broken (stop feeding).
    pub fn push(&mut self, e: &AuditEntry) -> bool {
        if self.report.broken.is_some() {
            return false;
        }
        self.report.entries += 1;
        let reason = if e.seq != self.expected_seq {
            Some(format!(
                "sequence gap: expected entry {}, found {} (entries removed or reordered)",
                self.expected_seq, e.seq
            ))
        } else if e.prev_hash != self.report.head_hash {
            Some(format!(
                "prev_hash does not match the hash of entry {} (an entry before it was changed, removed or inserted)",
                self.report.last_good_seq
            ))
        } else if audit_hash(e) != e.hash {
            Some("its hash does not match its contents (the entry was edited)".to_string())
        } else {
            None
        };
        if let Some(reason) = reason {
            self.report.broken = Some(Broken { seq: e.seq, reason });
            return false;
        }
        self.report.last_good_seq = e.seq;
        self.report.head_hash = e.hash.clone();
        self.expected_seq = e.seq.saturating_add(1);
        true
    }

    pub fn finish(self) -> ChainReport {
        self.report
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("the daemon is running (its store is locked); verify through the admin API instead")]
    Running,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("audit entry {key} cannot be read: {message}")]
    Unreadable { key: u64, message: String },
    #[error(transparent)]
    Admin(#[from] idprov_admin_client::AdminError),
    #[error("the daemon sent an audit page that does not continue after entry {0}")]
    Paging(u64),
}

/// Check the store of a stopped daemon in `data_dir`.
pub fn verify_dir(data_dir: &Path) -> Result<ChainReport, VerifyError> {
    let path = data_dir.join(STORE_FILE);
    if !path.exists() {
        return Err(StoreError::Missing(path).into());
    }
    let mut v = Verifier::default();
    let mut unreadable = None;
    idprovd_store_redb::read_audit_offline(data_dir, |key, bytes| {
        let e: AuditEntry = match serde_json::from_slice(bytes) {
            Ok(e) => e,
            Err(err) => {
                unreadable = Some(VerifyError::Unreadable {
                    key,
                    message: err.to_string(),
                });
                return false;
            }
        };
        // The table key is the seq; an entry moved under another key is a
        // break too.
        if e.seq != key {
            v.push(&AuditEntry {
                seq: key,
                hash: String::new(),
                ..e
            });
            return false;
        }
        v.push(&e)
    })
    .map_err(|e| match e {
        StoreError::Locked(_) => VerifyError::Running,
        other => VerifyError::Store(other),
    })?;
    if let Some(e) = unreadable {
        return Err(e);
    }
    Ok(v.finish())
}

/// Check the chain of a PostgreSQL site (daemons may be running): the site
/// is the one named by `identity.json` in `data_dir`.
pub fn verify_site(
    data_dir: &Path,
    pg: &crate::config::PostgresConfig,
) -> Result<ChainReport, VerifyError> {
    let path = data_dir.join(crate::pki::IDENTITY);
    let identity: crate::pki::Identity = std::fs::read(&path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        .map_err(|e| StoreError::Db(format!("{}: {e}", path.display())))?;
    let store = crate::store::PgStore::open(pg, &identity.daemon_id, false)?;
    let mut v = Verifier::default();
    for e in idprovd_store_pg::read_audit(&store)? {
        if !v.push(&e) {
            break;
        }
    }
    Ok(v.finish())
}

/// Check the chain of a running daemon through its admin API.
pub async fn verify_online(
    client: &idprov_admin_client::AdminClient,
) -> Result<ChainReport, VerifyError> {
    let mut v = Verifier::default();
    let mut after: Option<String> = None;
    loop {
        let page = client
            .audit(&ListQuery {
                after: after.clone(),
                limit: Some(MAX_PAGE),
                q: None,
            })
            .await?;
        let mut last = None;
        for e in &page.items {
            last = Some(e.seq);
            if !v.push(e) {
                return Ok(v.finish());
            }
        }
        match page.next {
            Some(next) => {
                // A cursor that does not move would loop forever.
                if Some(next.as_str()) == after.as_deref() || last.is_none() {
                    return Err(VerifyError::Paging(last.unwrap_or(0)));
                }
                after = Some(next);
            }
            None => return Ok(v.finish()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<AuditEntry> {
        let mut prev = GENESIS_HASH.to_string();
        (1..=n)
            .map(|seq| {
                let mut e = AuditEntry {
                    seq,
                    at: 1000 + seq as i64,
                    actor: "daemon".into(),
                    action: "test".into(),
                    target: None,
                    source: None,
                    detail: format!("entry {seq}"),
                    prev_hash: prev.clone(),
                    hash: String::new(),
                };
                e.hash = audit_hash(&e);
                prev = e.hash.clone();
                e
            })
            .collect()
    }

    fn check(entries: &[AuditEntry]) -> ChainReport {
        let mut v = Verifier::default();
        for e in entries {
            if !v.push(e) {
                break;
            }
        }
        v.finish()
    }

    #[test]
    fn intact_chain() {
        let c = chain(5);
        let r = check(&c);
        assert!(r.is_intact());
        assert_eq!((r.entries, r.last_good_seq), (5, 5));
        assert_eq!(r.head_hash, c[4].hash);
        assert!(check(&[]).is_intact());
    }

    #[test]
    fn edited_entry_is_named() {
        let mut c = chain(5);
        c[2].detail = "nothing happened".into();
        let r = check(&c);
        assert_eq!(r.broken.as_ref().map(|b| b.seq), Some(3));
        assert_eq!(r.last_good_seq, 2);
    }

    #[test]
    fn rehashed_edit_breaks_the_next_entry() {
        let mut c = chain(5);
        c[2].detail = "nothing happened".into();
        c[2].hash = audit_hash(&c[2]);
        assert_eq!(check(&c).broken.map(|b| b.seq), Some(4));
    }

    #[test]
    fn removed_entry_is_a_gap() {
        let mut c = chain(5);
        c.remove(1);
        let r = check(&c);
        assert_eq!(r.broken.as_ref().map(|b| b.seq), Some(3));
        assert!(r.broken.is_some_and(|b| b.reason.contains("gap")));
    }
}
