//! [`StoreView`] on one PostgreSQL transaction: a read-only snapshot, or a
//! write transaction (which sees the same state until its unit is applied,
//! since the unit is applied only after the decision).

use std::cell::{Cell, RefCell};

use postgres::types::ToSql;
use postgres::{Row, Transaction};

use idprov_proto::admin::{AuditEntry, ProvisioningState};
use idprovd_core::policy::PolicyRecord;
use idprovd_core::storage::{CrlEntries, Paged, StoreView};
use idprovd_core::store::{
    CertRecord, CrlState, DeviceRecord, OobRecord, PendingRecord, RegistryCaRecord, RetiredKey,
    StoreError, StoreResult, TokenRecord,
};

use super::error::{decode, is_conflict, store};

/// Most other ids reported per key or MAC (the flag needs one).
const MAX_OTHERS: i64 = 16;
/// Rows fetched per round trip when a Rust filter decides what a page keeps.
const BATCH: i64 = 500;

/// A transaction seen through the storage interface. Remembers whether the
/// database reported a conflict, so the runner retries the decision even
/// when the decision turned the error into its own.
pub struct PgView<'a, 't> {
    tx: RefCell<&'a mut Transaction<'t>>,
    conflict: Cell<bool>,
}

impl<'a, 't> PgView<'a, 't> {
    pub(crate) fn new(tx: &'a mut Transaction<'t>) -> Self {
        PgView {
            tx: RefCell::new(tx),
            conflict: Cell::new(false),
        }
    }

    pub(crate) fn conflicted(&self) -> bool {
        self.conflict.get()
    }

    fn err(&self, e: postgres::Error) -> StoreError {
        if is_conflict(&e) {
            self.conflict.set(true);
        }
        store(e)
    }

    pub(crate) fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<Vec<Row>> {
        let mut tx = self.tx.borrow_mut();
        tx.query(sql, params).map_err(|e| self.err(e))
    }

    pub(crate) fn query_opt(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> StoreResult<Option<Row>> {
        let mut tx = self.tx.borrow_mut();
        tx.query_opt(sql, params).map_err(|e| self.err(e))
    }

    pub(crate) fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<u64> {
        let mut tx = self.tx.borrow_mut();
        tx.execute(sql, params).map_err(|e| self.err(e))
    }

    pub(crate) fn count(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<u64> {
        let rows = self.query(sql, params)?;
        let n: i64 = get(rows.first().ok_or_else(|| no_row(sql))?, 0)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// The `record` (column 0) of the row `sql` finds, decoded.
    pub(crate) fn record<T: serde::de::DeserializeOwned>(
        &self,
        sql: &str,
        key: &str,
    ) -> StoreResult<Option<T>> {
        match self.query_opt(sql, &[&key])? {
            None => Ok(None),
            Some(r) => Ok(Some(decode(key, get(&r, 0)?)?)),
        }
    }

    fn records<T: serde::de::DeserializeOwned>(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> StoreResult<Vec<T>> {
        self.query(sql, params)?
            .iter()
            .map(|r| decode(sql, get(r, 0)?))
            .collect()
    }

    /// Keyset paging over `table` (key column `key`, record column
    /// `record`): rows with key > `after`, filtered, at most `limit`.
    fn page<T: serde::de::DeserializeOwned>(
        &self,
        table: &str,
        after: Option<&str>,
        limit: usize,
        keep: &dyn Fn(&T) -> bool,
    ) -> StoreResult<Paged<T>> {
        let total = self.count(&format!("SELECT count(*) FROM {table}"), &[])?;
        let sql = format!(
            "SELECT device_id, record FROM {table} WHERE device_id > $1 ORDER BY device_id LIMIT $2"
        );
        let mut cursor = after.unwrap_or("").to_string();
        let mut out = Vec::new();
        let mut last = None;
        loop {
            let rows = self.query(&sql, &[&cursor, &BATCH])?;
            let fetched = rows.len();
            for r in rows {
                let key: String = get(&r, 0)?;
                let rec: T = decode(&key, get(&r, 1)?)?;
                if keep(&rec) {
                    if out.len() == limit {
                        // A further match exists: there is a next page.
                        return Ok((out, last, total));
                    }
                    out.push(rec);
                    last = Some(key.clone());
                }
                cursor = key;
            }
            if (fetched as i64) < BATCH {
                return Ok((out, None, total));
            }
        }
    }

    fn site<T: postgres::types::FromSqlOwned>(&self, column: &str) -> StoreResult<Option<T>> {
        let sql = format!("SELECT {column} FROM site WHERE id = 1");
        match self.query_opt(&sql, &[])? {
            Some(r) => get(&r, 0),
            None => Ok(None),
        }
    }

    fn ids(
        &self,
        table: &str,
        column: &str,
        value: &str,
        except: &str,
    ) -> StoreResult<Vec<String>> {
        let sql = format!(
            "SELECT device_id FROM {table} WHERE {column} = $1 AND device_id <> $2 ORDER BY device_id LIMIT $3"
        );
        self.query(&sql, &[&value, &except, &MAX_OTHERS])?
            .iter()
            .map(|r| get(r, 0))
            .collect()
    }
}

/// Column `i` of a row; a type mismatch is an error, never a panic.
pub(crate) fn get<T: postgres::types::FromSqlOwned>(r: &Row, i: usize) -> StoreResult<T> {
    r.try_get(i).map_err(store)
}

fn no_row(sql: &str) -> StoreError {
    StoreError::Db(format!("no row from {sql}"))
}

pub(crate) fn audit_entry(r: &Row) -> StoreResult<AuditEntry> {
    let seq: i64 = get(r, 0)?;
    Ok(AuditEntry {
        seq: u64::try_from(seq).map_err(|_| StoreError::Record(format!("audit seq {seq}")))?,
        at: get(r, 1)?,
        actor: get(r, 2)?,
        action: get(r, 3)?,
        target: get(r, 4)?,
        source: get(r, 5)?,
        detail: get(r, 6)?,
        prev_hash: get(r, 7)?,
        hash: get(r, 8)?,
    })
}

pub(crate) const AUDIT_COLUMNS: &str =
    "seq, at, actor, action, target, source, detail, prev_hash, hash";

fn audit_matches(e: &AuditEntry, q: Option<&str>) -> bool {
    q.is_none_or(|q| {
        let q = q.to_lowercase();
        [
            Some(&e.actor),
            Some(&e.action),
            Some(&e.detail),
            e.target.as_ref(),
            e.source.as_ref(),
        ]
        .into_iter()
        .flatten()
        .any(|s| s.to_lowercase().contains(&q))
    })
}

impl StoreView for PgView<'_, '_> {
    fn device(&self, id: &str) -> StoreResult<Option<DeviceRecord>> {
        self.record("SELECT record FROM devices WHERE device_id = $1", id)
    }
    fn pending(&self, id: &str) -> StoreResult<Option<PendingRecord>> {
        self.record("SELECT record FROM pending WHERE device_id = $1", id)
    }
    fn oob(&self, id: &str) -> StoreResult<Option<OobRecord>> {
        self.record("SELECT record FROM oob WHERE device_id = $1", id)
    }
    fn token(&self, jti: &str) -> StoreResult<Option<TokenRecord>> {
        self.record("SELECT record FROM tokens WHERE jti = $1", jti)
    }
    fn oob_mac_owner(&self, mac: &str) -> StoreResult<Option<String>> {
        match self.query_opt("SELECT device_id FROM oob_mac WHERE mac = $1", &[&mac])? {
            Some(r) => Ok(Some(get(&r, 0)?)),
            None => Ok(None),
        }
    }
    fn device_count(&self) -> StoreResult<u64> {
        self.count("SELECT count(*) FROM devices", &[])
    }
    fn pending_count(&self) -> StoreResult<u64> {
        self.count("SELECT count(*) FROM pending", &[])
    }
    fn oob_count(&self) -> StoreResult<u64> {
        self.count("SELECT count(*) FROM oob", &[])
    }
    fn provisioning(&self) -> StoreResult<ProvisioningState> {
        match self.site::<serde_json::Value>("provisioning")? {
            Some(v) => decode("provisioning", v),
            None => Ok(ProvisioningState {
                paused: false,
                reason: None,
            }),
        }
    }
    fn policy(&self) -> StoreResult<Option<PolicyRecord>> {
        match self.site::<serde_json::Value>("policy")? {
            Some(v) => decode("policy", v).map(Some),
            None => Ok(None),
        }
    }
    fn clock_high_water(&self) -> StoreResult<Option<i64>> {
        self.site("clock_high_water")
    }
    fn proof_seen(&self, key: &str) -> StoreResult<bool> {
        Ok(self
            .query_opt("SELECT 1 FROM replay WHERE proof_key = $1", &[&key])?
            .is_some())
    }
    fn replay_count(&self) -> StoreResult<u64> {
        self.count("SELECT count(*) FROM replay", &[])
    }
    fn token_count(&self) -> StoreResult<u64> {
        self.count("SELECT count(*) FROM tokens", &[])
    }
    fn replay_live_count(&self, now: i64) -> StoreResult<u64> {
        self.count("SELECT count(*) FROM replay WHERE until >= $1", &[&now])
    }
    fn stale_pending(&self, cutoff: i64, max: usize) -> StoreResult<Vec<PendingRecord>> {
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        self.records(
            "SELECT record FROM pending WHERE last_seen < $1 ORDER BY device_id LIMIT $2",
            &[&cutoff, &max],
        )
    }
    fn ids_with_key(&self, kid: &str, except: &str) -> StoreResult<Vec<String>> {
        self.ids("key_ids", "kid", kid, except)
    }
    fn ids_with_mac(&self, mac: &str, except: &str) -> StoreResult<Vec<String>> {
        self.ids("mac_ids", "mac", mac, except)
    }
    fn cert(&self, serial: &str) -> StoreResult<Option<CertRecord>> {
        self.record("SELECT record FROM certs WHERE serial = $1", serial)
    }
    fn device_certs(&self, device: &str) -> StoreResult<Vec<CertRecord>> {
        self.records(
            "SELECT record FROM certs WHERE device_id = $1 ORDER BY serial",
            &[&device],
        )
    }
    fn retired_key(&self, kid: &str) -> StoreResult<Option<RetiredKey>> {
        self.record("SELECT record FROM retired_keys WHERE kid = $1", kid)
    }
    fn registry_cas(&self) -> StoreResult<Vec<RegistryCaRecord>> {
        self.records("SELECT record FROM registry_cas ORDER BY fingerprint", &[])
    }
    fn crl(&self) -> StoreResult<Option<(Vec<u8>, CrlState)>> {
        let Some(r) = self.query_opt("SELECT crl_der, crl_state FROM site WHERE id = 1", &[])?
        else {
            return Ok(None);
        };
        let der: Option<Vec<u8>> = get(&r, 0)?;
        let state: Option<serde_json::Value> = get(&r, 1)?;
        let state: Option<CrlState> = state.map(|v| decode("crl_state", v)).transpose()?;
        Ok(der.zip(state))
    }
    fn revocation_version(&self) -> StoreResult<u64> {
        let v: Option<i64> = self.site("revocation_version")?;
        Ok(v.map_or(0, |v| u64::try_from(v).unwrap_or(0)))
    }
    fn crl_entries(&self, now: i64) -> StoreResult<CrlEntries> {
        let mut out = Vec::new();
        let mut expired = Vec::new();
        for r in self.query(
            "SELECT serial, revoked_at, not_after, reason FROM crl_entries ORDER BY serial",
            &[],
        )? {
            let serial: String = get(&r, 0)?;
            let not_after: i64 = get(&r, 2)?;
            if not_after < now {
                expired.push(serial);
            } else {
                let code: i16 = get(&r, 3)?;
                let code = u8::try_from(code)
                    .map_err(|_| StoreError::Record(format!("CRL reason of {serial}")))?;
                out.push((serial, get(&r, 1)?, code));
            }
        }
        Ok((out, expired))
    }
    fn list_devices(
        &self,
        after: Option<&str>,
        limit: usize,
        keep: &dyn Fn(&DeviceRecord) -> bool,
    ) -> StoreResult<Paged<DeviceRecord>> {
        self.page("devices", after, limit, keep)
    }
    fn list_pending(
        &self,
        after: Option<&str>,
        limit: usize,
        keep: &dyn Fn(&PendingRecord) -> bool,
    ) -> StoreResult<Paged<PendingRecord>> {
        self.page("pending", after, limit, keep)
    }
    fn list_oob(
        &self,
        after: Option<&str>,
        limit: usize,
        keep: &dyn Fn(&OobRecord) -> bool,
    ) -> StoreResult<Paged<OobRecord>> {
        self.page("oob", after, limit, keep)
    }
    fn audit_page(
        &self,
        after: u64,
        limit: usize,
        q: Option<&str>,
    ) -> StoreResult<(Vec<AuditEntry>, Option<u64>, u64)> {
        let total = self.count("SELECT count(*) FROM audit", &[])?;
        let sql = format!("SELECT {AUDIT_COLUMNS} FROM audit WHERE seq > $1 ORDER BY seq LIMIT $2");
        let mut cursor = i64::try_from(after).unwrap_or(i64::MAX);
        let mut out = Vec::new();
        let mut last = None;
        loop {
            let rows = self.query(&sql, &[&cursor, &BATCH])?;
            let fetched = rows.len();
            for r in rows {
                let e = audit_entry(&r)?;
                cursor = i64::try_from(e.seq).unwrap_or(i64::MAX);
                if audit_matches(&e, q) {
                    if out.len() == limit {
                        return Ok((out, last, total));
                    }
                    last = Some(e.seq);
                    out.push(e);
                }
            }
            if (fetched as i64) < BATCH {
                return Ok((out, None, total));
            }
        }
    }
    fn audit_all(&self) -> StoreResult<Vec<AuditEntry>> {
        self.query(
            &format!("SELECT {AUDIT_COLUMNS} FROM audit ORDER BY seq"),
            &[],
        )?
        .iter()
        .map(audit_entry)
        .collect()
    }
}
