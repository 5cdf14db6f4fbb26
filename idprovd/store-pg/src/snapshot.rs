//! A consistent copy of the site's records, taken while daemons run: one
//! REPEATABLE READ snapshot, every table written as JSON lines
//! (`{"table": ..., "row": {...}}`) after a header line. Import staging is
//! per-session scratch and the event table is transient: neither is copied.

use std::fs::File;
use std::io::{BufWriter, Write};

use idprov_proto::admin::AuditEntry;
use idprovd_core::storage::StoreView;
use idprovd_core::store::{SnapshotCounts, StoreError, StoreResult};

use super::PgStore;
use super::view::{PgView, get};

/// The first line of a snapshot.
pub const SNAPSHOT_FORMAT: &str = "idprov-pg-snapshot/1";

/// Every table a snapshot copies, in order.
const TABLES: &[&str] = &[
    "site",
    "devices",
    "pending",
    "oob",
    "oob_mac",
    "replay",
    "tokens",
    "audit",
    "key_ids",
    "mac_ids",
    "certs",
    "crl_entries",
    "retired_keys",
    "registry_cas",
];

impl PgStore {
    pub(crate) fn snapshot(&self, dst: File) -> StoreResult<SnapshotCounts> {
        let r = self.read_tx(|tx| {
            let v = PgView::new(tx);
            let mut out = BufWriter::new(dst);
            let io = |e: std::io::Error| StoreError::Db(format!("writing the snapshot: {e}"));
            writeln!(out, "{}", serde_json::json!({ "format": SNAPSHOT_FORMAT })).map_err(io)?;
            let mut counts = SnapshotCounts::default();
            for table in TABLES {
                let rows = v.query(
                    &format!("SELECT row_to_json(t)::text FROM {table} t ORDER BY 1"),
                    &[],
                )?;
                for r in &rows {
                    let row: String = get(r, 0)?;
                    writeln!(out, "{{\"table\":\"{table}\",\"row\":{row}}}").map_err(io)?;
                }
                let n = rows.len() as u64;
                match *table {
                    "devices" => counts.devices = n,
                    "pending" => counts.pending = n,
                    "oob" => counts.oob = n,
                    "tokens" => counts.tokens = n,
                    "audit" => counts.audit = n,
                    "certs" => counts.certificates = n,
                    _ => {}
                }
            }
            out.flush().map_err(io)?;
            out.get_ref().sync_all().map_err(io)?;
            Ok(counts)
        });
        r.map_err(|e| match e {
            idprovd_core::Error::Store(s) => s,
            other => StoreError::Db(other.to_string()),
        })
    }
}

/// The whole audit chain of the site, oldest first (for `audit verify`).
pub fn read_audit(store: &PgStore) -> Result<Vec<AuditEntry>, StoreError> {
    store
        .read_tx(|tx| Ok(PgView::new(tx).audit_all()?))
        .map_err(|e| match e {
            idprovd_core::Error::Store(s) => s,
            other => StoreError::Db(other.to_string()),
        })
}
