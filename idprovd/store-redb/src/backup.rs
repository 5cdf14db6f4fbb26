//! A consistent copy of the whole store, taken while the daemon runs.
//!
//! One read transaction is a snapshot (redb MVCC): copying every table from
//! it into a fresh database gives exactly the state of one commit, while
//! writers carry on. The copy goes into a file the caller hands over (an
//! unlinked temporary file), so nothing but this process ever opens the live
//! database file.

use std::fs::File;

use redb::{
    Database, Durability, Key, MultimapTableHandle, ReadTransaction, ReadableDatabase,
    ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle, Value, WriteTransaction,
};

use super::identity::{KEY_IDS, MAC_IDS};
use super::x509::{CERTS, CERTS_BY_DEVICE, CRL_ENTRIES, REGISTRY_CAS, RETIRED_KEYS, X509_META};
use super::{
    AUDIT, DEVICES, DbError, META, OOB, OOB_MAC, PENDING, REPLAY, REPLAY_EXP, RedbStore,
    StoreResult, TOKENS, TOKENS_EXP,
};
use idprovd_core::store::{SnapshotCounts, StoreError};

/// Import staging tables are per-session scratch space: not worth keeping.
const SKIPPED_PREFIXES: &[&str] = &["oob_staging"];

impl RedbStore {
    /// Copy every table of one snapshot into a new database in `dst` (an
    /// empty file). Refuses when the store has a table this code does not
    /// know, rather than making a backup that silently lacks it.
    pub fn snapshot_into(&self, dst: File) -> StoreResult<SnapshotCounts> {
        // Under the store's lock: a reopen waits for the copy to end.
        self.with_db(|db| snapshot_from(db, dst))
    }
}

fn snapshot_from(db: &Database, dst: File) -> StoreResult<SnapshotCounts> {
    let rx = db.begin_read()?;
    check_known_tables(&rx)?;
    let backend = redb::backends::FileBackend::new(dst).map_err(db_err)?;
    let out = Database::builder()
        .create_with_backend(backend)
        .map_err(db_err)?;
    let mut wtx = out.begin_write()?;
    // One fsync at the end is enough: the copy is worthless until the
    // archive around it is complete anyway.
    wtx.set_durability(Durability::Immediate)?;
    let counts = SnapshotCounts {
        devices: copy(&rx, &wtx, DEVICES)?,
        pending: copy(&rx, &wtx, PENDING)?,
        oob: copy(&rx, &wtx, OOB)?,
        tokens: copy(&rx, &wtx, TOKENS)?,
        audit: copy(&rx, &wtx, AUDIT)?,
        certificates: copy(&rx, &wtx, CERTS)?,
    };
    copy(&rx, &wtx, CERTS_BY_DEVICE)?;
    copy(&rx, &wtx, CRL_ENTRIES)?;
    copy(&rx, &wtx, RETIRED_KEYS)?;
    copy(&rx, &wtx, REGISTRY_CAS)?;
    copy(&rx, &wtx, X509_META)?;
    copy(&rx, &wtx, KEY_IDS)?;
    copy(&rx, &wtx, MAC_IDS)?;
    copy(&rx, &wtx, META)?;
    copy(&rx, &wtx, OOB_MAC)?;
    copy(&rx, &wtx, REPLAY)?;
    copy(&rx, &wtx, REPLAY_EXP)?;
    copy(&rx, &wtx, TOKENS_EXP)?;
    wtx.commit()?;
    drop(out);
    Ok(counts)
}

fn db_err(e: redb::DatabaseError) -> DbError {
    DbError(StoreError::Db(e.to_string()))
}

fn check_known_tables(rx: &ReadTransaction) -> StoreResult<()> {
    let known = [
        META.name(),
        OOB.name(),
        OOB_MAC.name(),
        DEVICES.name(),
        PENDING.name(),
        REPLAY.name(),
        REPLAY_EXP.name(),
        TOKENS.name(),
        TOKENS_EXP.name(),
        AUDIT.name(),
        CERTS.name(),
        CERTS_BY_DEVICE.name(),
        CRL_ENTRIES.name(),
        RETIRED_KEYS.name(),
        REGISTRY_CAS.name(),
        X509_META.name(),
        KEY_IDS.name(),
        MAC_IDS.name(),
    ];
    for t in rx.list_tables()? {
        let name = t.name();
        if !known.contains(&name) && !SKIPPED_PREFIXES.iter().any(|p| name.starts_with(p)) {
            return Err(DbError(StoreError::Db(format!(
                "the store has a table {name:?} that backups do not know; refusing an incomplete backup"
            ))));
        }
    }
    if let Some(t) = rx.list_multimap_tables()?.next() {
        return Err(DbError(StoreError::Db(format!(
            "the store has a multimap table {:?} that backups do not know",
            t.name()
        ))));
    }
    Ok(())
}

/// Copy one table; returns its length.
fn copy<K: Key + 'static, V: Value + 'static>(
    rx: &ReadTransaction,
    wtx: &WriteTransaction,
    def: TableDefinition<K, V>,
) -> StoreResult<u64> {
    let src = match rx.open_table(def) {
        Ok(t) => t,
        // Tables are all created at init, but a store from before one was
        // added simply lacks it.
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    let mut dst = wtx.open_table(def)?;
    for item in src.iter()? {
        let (k, v) = item?;
        dst.insert(k.value(), v.value())?;
    }
    Ok(src.len()?)
}
