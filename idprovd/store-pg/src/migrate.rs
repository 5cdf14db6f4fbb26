//! Versioned schema migrations, kept in the repository
//! (`idprovd/store-pg/migrations/NNNN_*.sql`) and applied at start, each in
//! its own transaction, under an advisory lock so that two daemons starting
//! at once do not both apply one. A database whose schema is newer than
//! this binary knows is refused: an older daemon must not write to it.

use idprovd_core::store::StoreError;

use super::Conn;
use super::error::store;

/// Every migration, in order: (version, SQL).
pub const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("../migrations/0001_initial.sql")),
    (2, include_str!("../migrations/0002_policy.sql")),
];

/// The schema version this binary writes.
pub const SCHEMA_VERSION: i32 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// Key of the advisory lock migrations hold ("idprov" in ASCII).
const MIGRATION_LOCK: i64 = 0x6964_7072_6f76;

pub(crate) fn migrate(conn: &mut Conn, location: &str) -> Result<(), StoreError> {
    conn.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .map_err(store)?;
    let r = migrate_locked(conn, location);
    // Also released when the connection closes.
    let _ = conn.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]);
    r
}

fn migrate_locked(conn: &mut Conn, location: &str) -> Result<(), StoreError> {
    let marker: bool = conn
        .query_one("SELECT to_regclass('idprov_schema') IS NOT NULL", &[])
        .and_then(|r| r.try_get(0))
        .map_err(store)?;
    if !marker {
        let tables: i64 = conn
            .query_one(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema()",
                &[],
            )
            .and_then(|r| r.try_get(0))
            .map_err(store)?;
        if tables > 0 {
            // Somebody else's tables: never mix ours in.
            return Err(StoreError::Foreign(location.into()));
        }
        conn.batch_execute(
            "CREATE TABLE idprov_schema (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .map_err(store)?;
    }
    let current: i32 = conn
        .query_one("SELECT coalesce(max(version), 0) FROM idprov_schema", &[])
        .and_then(|r| r.try_get(0))
        .map_err(store)?;
    if current > SCHEMA_VERSION {
        return Err(StoreError::Db(format!(
            "the database {location} has schema version {current}, newer than this idprovd knows ({SCHEMA_VERSION}); upgrade idprovd"
        )));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        let mut tx = conn.transaction().map_err(store)?;
        tx.batch_execute(sql).map_err(store)?;
        tx.execute(
            "INSERT INTO idprov_schema (version) VALUES ($1)",
            &[version],
        )
        .map_err(store)?;
        tx.commit().map_err(store)?;
        tracing::info!(store = %location, version, "applied schema migration");
    }
    Ok(())
}
