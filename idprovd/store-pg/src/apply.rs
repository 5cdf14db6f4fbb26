//! Applying a unit's changes inside the write transaction, in order, and
//! chaining its audit entries onto the site's one chain (the head lives in
//! the `site` row, which the transaction has locked).

use idprov_proto::admin::AuditEntry;
use idprovd_core::storage::Change;
use idprovd_core::store::{
    AuditDraft, CertRecord, DeviceRecord, GENESIS_HASH, OobRecord, StoreError, StoreResult,
    TokenRecord, audit_hash,
};

use super::error::encode;
use super::view::{PgView, get};

impl PgView<'_, '_> {
    /// Apply a unit's changes in order; returns the audit entries appended.
    pub(crate) fn apply(&self, changes: Vec<Change>) -> StoreResult<Vec<AuditEntry>> {
        let mut audit = Vec::new();
        for c in changes {
            match c {
                Change::PutDevice(d) => self.put_device(&d)?,
                Change::DeleteDevice(id) => {
                    self.execute("DELETE FROM devices WHERE device_id = $1", &[&id.as_str()])?;
                }
                Change::PutPending(p) => {
                    self.execute(
                        "INSERT INTO pending (device_id, last_seen, record) VALUES ($1, $2, $3)
                         ON CONFLICT (device_id) DO UPDATE SET last_seen = $2, record = $3",
                        &[&p.device_id.as_str(), &p.last_seen, &encode(&p)?],
                    )?;
                }
                Change::DeletePending(id) => {
                    self.execute("DELETE FROM pending WHERE device_id = $1", &[&id.as_str()])?;
                }
                Change::PutOob(r) => self.put_oob(&r)?,
                Change::DeleteOob(id) => self.delete_oob(id.as_str())?,
                Change::PutToken(t) => self.put_token(&t)?,
                Change::RememberProof { key, until } => {
                    self.execute(
                        "INSERT INTO replay (proof_key, until) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                        &[&key, &until],
                    )?;
                }
                Change::PurgeExpired { now, max } => {
                    let max = i64::try_from(max).unwrap_or(i64::MAX);
                    self.execute(
                        "DELETE FROM replay WHERE proof_key IN
                         (SELECT proof_key FROM replay WHERE until < $1 ORDER BY until LIMIT $2)",
                        &[&now, &max],
                    )?;
                    self.execute(
                        "DELETE FROM tokens WHERE jti IN
                         (SELECT jti FROM tokens WHERE expires_at < $1 ORDER BY expires_at LIMIT $2)",
                        &[&now, &max],
                    )?;
                }
                Change::AdvanceClock(now) => {
                    self.execute(
                        "UPDATE site SET clock_high_water = $1
                         WHERE id = 1 AND (clock_high_water IS NULL OR clock_high_water < $1)",
                        &[&now],
                    )?;
                }
                Change::AcceptClock(now) => {
                    self.execute(
                        "UPDATE site SET clock_high_water = $1 WHERE id = 1",
                        &[&now],
                    )?;
                }
                Change::SetProvisioning(s) => {
                    self.execute(
                        "UPDATE site SET provisioning = $1 WHERE id = 1",
                        &[&encode(&s)?],
                    )?;
                }
                Change::PutPolicy(p) => {
                    self.execute("UPDATE site SET policy = $1 WHERE id = 1", &[&encode(&p)?])?;
                }
                Change::NoteIdentity {
                    device_id,
                    kid,
                    mac,
                } => {
                    self.execute(
                        "INSERT INTO key_ids (kid, device_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                        &[&kid, &device_id.as_str()],
                    )?;
                    if let Some(mac) = mac {
                        self.execute(
                            "INSERT INTO mac_ids (mac, device_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                            &[&mac.to_string(), &device_id.as_str()],
                        )?;
                    }
                }
                Change::ForgetKeyHolder { kid, device_id } => {
                    self.execute(
                        "DELETE FROM key_ids WHERE kid = $1 AND device_id = $2",
                        &[&kid, &device_id],
                    )?;
                }
                Change::ForgetMacHolder { mac, device_id } => {
                    self.execute(
                        "DELETE FROM mac_ids WHERE mac = $1 AND device_id = $2",
                        &[&mac, &device_id],
                    )?;
                }
                Change::Audit(d) => audit.push(self.append_audit(d)?),
                Change::PutCert(c) => self.put_cert(&c)?,
                Change::RevokeCert { cert, code } => {
                    let at = cert.revoked_at.unwrap_or(cert.issued_at);
                    self.put_cert(&cert)?;
                    self.execute(
                        "INSERT INTO crl_entries (serial, revoked_at, not_after, reason)
                         VALUES ($1, $2, $3, $4)
                         ON CONFLICT (serial) DO UPDATE SET revoked_at = $2, not_after = $3, reason = $4",
                        &[&cert.serial, &at, &cert.not_after, &i16::from(code)],
                    )?;
                    self.execute(
                        "UPDATE site SET revocation_version = revocation_version + 1 WHERE id = 1",
                        &[],
                    )?;
                }
                Change::RetireKey { kid, record } => {
                    self.execute(
                        "INSERT INTO retired_keys (kid, record) VALUES ($1, $2)
                         ON CONFLICT (kid) DO UPDATE SET record = $2",
                        &[&kid, &encode(&record)?],
                    )?;
                }
                Change::PutRegistryCa(r) => {
                    self.execute(
                        "INSERT INTO registry_cas (fingerprint, record) VALUES ($1, $2)
                         ON CONFLICT (fingerprint) DO UPDATE SET record = $2",
                        &[&r.fingerprint, &encode(&r)?],
                    )?;
                }
                Change::DeleteRegistryCa(fp) => {
                    self.execute("DELETE FROM registry_cas WHERE fingerprint = $1", &[&fp])?;
                }
                Change::PutCrl { der, state } => {
                    self.execute(
                        "UPDATE site SET crl_der = $1, crl_state = $2 WHERE id = 1",
                        &[&der, &encode(&state)?],
                    )?;
                }
                Change::DropCrlEntries(serials) => {
                    self.execute(
                        "DELETE FROM crl_entries WHERE serial = ANY($1)",
                        &[&serials],
                    )?;
                }
            }
        }
        Ok(audit)
    }

    fn put_device(&self, d: &DeviceRecord) -> StoreResult<()> {
        let status = match encode(&d.status)? {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        };
        self.execute(
            "INSERT INTO devices (device_id, status, record) VALUES ($1, $2, $3)
             ON CONFLICT (device_id) DO UPDATE SET status = $2, record = $3",
            &[&d.device_id.as_str(), &status, &encode(d)?],
        )?;
        Ok(())
    }

    fn put_token(&self, t: &TokenRecord) -> StoreResult<()> {
        self.execute(
            "INSERT INTO tokens (jti, expires_at, record) VALUES ($1, $2, $3)
             ON CONFLICT (jti) DO UPDATE SET expires_at = $2, record = $3",
            &[&t.jti, &t.expires_at, &encode(t)?],
        )?;
        Ok(())
    }

    pub(crate) fn put_cert(&self, c: &CertRecord) -> StoreResult<()> {
        self.execute(
            "INSERT INTO certs (serial, device_id, record) VALUES ($1, $2, $3)
             ON CONFLICT (serial) DO UPDATE SET device_id = $2, record = $3",
            &[&c.serial, &c.device_id.as_str(), &encode(c)?],
        )?;
        Ok(())
    }

    /// Insert or replace an OOB entry, keeping the MAC index in step: the
    /// old MAC is released only if this entry still holds it (another entry
    /// of the same unit may have taken it over).
    pub(crate) fn put_oob(&self, rec: &OobRecord) -> StoreResult<()> {
        let id = rec.device_id.as_str();
        let old: Option<OobRecord> =
            self.record("SELECT record FROM oob WHERE device_id = $1", id)?;
        if let Some(old_mac) = old.as_ref().and_then(|o| o.mac) {
            self.release_mac(&old_mac.to_string(), id)?;
        }
        let mac = rec.mac.map(|m| m.to_string());
        if let Some(m) = &mac {
            self.execute(
                "INSERT INTO oob_mac (mac, device_id) VALUES ($1, $2)
                 ON CONFLICT (mac) DO UPDATE SET device_id = $2",
                &[m, &id],
            )?;
        }
        self.execute(
            "INSERT INTO oob (device_id, mac, record) VALUES ($1, $2, $3)
             ON CONFLICT (device_id) DO UPDATE SET mac = $2, record = $3",
            &[&id, &mac, &encode(rec)?],
        )?;
        Ok(())
    }

    pub(crate) fn delete_oob(&self, id: &str) -> StoreResult<()> {
        let old: Option<OobRecord> =
            self.record("SELECT record FROM oob WHERE device_id = $1", id)?;
        if let Some(old) = old {
            if let Some(mac) = old.mac {
                self.release_mac(&mac.to_string(), id)?;
            }
            self.execute("DELETE FROM oob WHERE device_id = $1", &[&id])?;
        }
        Ok(())
    }

    /// Drop `mac` from the index only if it still points at `id`.
    pub(crate) fn release_mac(&self, mac: &str, id: &str) -> StoreResult<()> {
        self.execute(
            "DELETE FROM oob_mac WHERE mac = $1 AND device_id = $2",
            &[&mac, &id],
        )?;
        Ok(())
    }

    /// Append to the chain: the head is read from the `site` row, which this
    /// transaction holds locked, so two daemons never fork the chain.
    pub(crate) fn append_audit(&self, d: AuditDraft) -> StoreResult<AuditEntry> {
        let row = self
            .query_opt("SELECT audit_seq, audit_hash FROM site WHERE id = 1", &[])?
            .ok_or_else(|| StoreError::Db("the site row is missing".into()))?;
        let seq: i64 = get(&row, 0)?;
        let head: String = get(&row, 1)?;
        let seq = u64::try_from(seq).unwrap_or(0) + 1;
        let prev_hash = if seq == 1 {
            GENESIS_HASH.to_string()
        } else {
            head
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
        let seq_i = i64::try_from(seq).map_err(|_| StoreError::Db("audit seq overflow".into()))?;
        self.execute(
            "INSERT INTO audit (seq, at, actor, action, target, source, detail, prev_hash, hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                &seq_i,
                &e.at,
                &e.actor,
                &e.action,
                &e.target,
                &e.source,
                &e.detail,
                &e.prev_hash,
                &e.hash,
            ],
        )?;
        self.execute(
            "UPDATE site SET audit_seq = $1, audit_hash = $2 WHERE id = 1",
            &[&seq_i, &e.hash],
        )?;
        Ok(e)
    }
}
