//! The redb backend's side of [`storage::Store`]: a decision runs in one
//! write transaction, then its unit's changes are applied in order and the
//! transaction is committed durably (`Durability::Immediate`).

use std::collections::HashSet;
use std::fs::File;

use idprov_proto::admin::{AdminEvent, AuditEntry};
use idprov_proto::error::EntryError;
use idprov_proto::oob_import::OobImportResult;
use redb::{Durability, ReadableDatabase, ReadableTable};

use super::identity::{KEY_IDS, MAC_IDS};
use super::x509::{CERTS, CRL_ENTRIES};
use super::{CLOCK_KEY, DbError, META, RedbStore, Rx, StoreResult, Tx, encode, out};
use idprovd_core::Error;
use idprovd_core::storage::{
    self, BatchResults, Change, Decide, ImportCommitted, StoreHealth, StoreStatus, Unit,
};
use idprovd_core::store::{AuditDraft, CommitOptions, OobRecord, SnapshotCounts};

impl Tx<'_> {
    /// Apply a unit's changes in order; returns the audit entries appended.
    pub fn apply(&mut self, changes: Vec<Change>) -> StoreResult<Vec<AuditEntry>> {
        let mut audit = Vec::new();
        for c in changes {
            match c {
                Change::PutDevice(d) => self.put_device(d.device_id.as_str(), &d)?,
                Change::DeleteDevice(id) => drop(self.delete_device(id.as_str())?),
                Change::PutPending(p) => self.put_pending(p.device_id.as_str(), &p)?,
                Change::DeletePending(id) => drop(self.delete_pending(id.as_str())?),
                Change::PutOob(r) => self.put_oob(&r)?,
                Change::DeleteOob(id) => drop(self.delete_oob(id.as_str())?),
                Change::PutToken(t) => self.put_token(&t)?,
                Change::RememberProof { key, until } => drop(self.remember_proof(&key, until)?),
                Change::PurgeExpired { now, max } => {
                    self.purge_replay(now, max)?;
                    self.purge_tokens(now, max)?;
                }
                Change::AdvanceClock(now) => self.advance_clock(now)?,
                Change::AcceptClock(now) => {
                    self.tx
                        .open_table(META)?
                        .insert(CLOCK_KEY, now.to_be_bytes().as_slice())?;
                }
                Change::SetProvisioning(s) => self.set_provisioning(&s)?,
                Change::PutPolicy(p) => {
                    let bytes = encode(&p)?;
                    self.tx
                        .open_table(META)?
                        .insert(super::POLICY_KEY, bytes.as_slice())?;
                }
                Change::NoteIdentity {
                    device_id,
                    kid,
                    mac,
                } => self.note_identity(device_id.as_str(), &kid, mac)?,
                Change::ForgetKeyHolder { kid, device_id } => {
                    self.tx
                        .open_table(KEY_IDS)?
                        .remove((kid.as_str(), device_id.as_str()))?;
                }
                Change::ForgetMacHolder { mac, device_id } => {
                    self.tx
                        .open_table(MAC_IDS)?
                        .remove((mac.as_str(), device_id.as_str()))?;
                }
                Change::Audit(d) => audit.push(self.append_audit(d)?),
                Change::PutCert(c) => self.put_cert(&c)?,
                Change::RevokeCert { cert, code } => {
                    let at = cert.revoked_at.unwrap_or(cert.issued_at);
                    let bytes = encode(&cert)?;
                    self.tx
                        .open_table(CERTS)?
                        .insert(cert.serial.as_str(), bytes.as_slice())?;
                    self.tx
                        .open_table(CRL_ENTRIES)?
                        .insert(cert.serial.as_str(), (at, cert.not_after, code))?;
                    self.bump_revocation_version()?;
                }
                Change::RetireKey { kid, record } => self.retire_key(&kid, &record)?,
                Change::PutRegistryCa(r) => self.put_registry_ca(&r)?,
                Change::DeleteRegistryCa(fp) => drop(self.delete_registry_ca(&fp)?),
                Change::PutCrl { der, state } => self.put_crl(&der, &state)?,
                Change::DropCrlEntries(serials) => {
                    let mut t = self.tx.open_table(CRL_ENTRIES)?;
                    for s in serials {
                        t.remove(s.as_str())?;
                    }
                }
            }
        }
        Ok(audit)
    }

    /// Raise the persisted clock high-water mark (never lowers it).
    fn advance_clock(&mut self, now: i64) -> StoreResult<()> {
        let mut meta = self.tx.open_table(META)?;
        let hwm = meta
            .get(CLOCK_KEY)?
            .and_then(|v| <[u8; 8]>::try_from(v.value()).ok())
            .map(i64::from_be_bytes)
            .unwrap_or(i64::MIN);
        if now > hwm {
            meta.insert(CLOCK_KEY, now.to_be_bytes().as_slice())?;
        }
        Ok(())
    }
}

impl storage::Store for RedbStore {
    fn read(
        &self,
        read: &mut dyn FnMut(&dyn storage::StoreView) -> Result<(), Error>,
    ) -> Result<(), Error> {
        self.with_db(|db| {
            let rtx = db.begin_read().map_err(DbError::from)?;
            read(&Rx { tx: rtx })
        })
    }

    fn transact(&self, decide: &mut Decide<'_>) -> Result<Vec<AdminEvent>, Error> {
        self.transact_batch(&mut [decide])?
            .pop()
            .unwrap_or_else(|| {
                Err(Error::internal(
                    "the daemon could not complete the request",
                    "empty batch",
                ))
            })
    }

    fn transact_batch(&self, batch: &mut [&mut Decide<'_>]) -> Result<BatchResults, Error> {
        self.with_writable(|db| {
            let mut wtx = db.begin_write().map_err(DbError::from)?;
            wtx.set_durability(Durability::Immediate)
                .map_err(DbError::from)?;
            let mut tx = Tx { tx: &wtx };
            let mut slots = Vec::with_capacity(batch.len());
            let mut writes = false;
            for decide in batch.iter_mut() {
                let mut unit = Unit::new();
                // A decision's changes are applied only once it returned Ok,
                // so a refusal leaves nothing in the transaction and the
                // next decision reads what the earlier ones decided.
                match decide(&tx, &mut unit) {
                    Ok(()) => {
                        let (changes, committer) = unit.into_changes();
                        writes |= !changes.is_empty();
                        let audit = tx.apply(changes)?;
                        slots.push(Ok(committer.events(audit)));
                    }
                    // A read that failed on I/O fails the batch: the
                    // transaction is not trusted for the others either.
                    Err(Error::Store(e)) => return Err(Error::Store(e)),
                    Err(e) => slots.push(Err(e)),
                }
            }
            if writes {
                self.commit(wtx)?;
            }
            Ok(slots)
        })
    }

    fn stage_oob(&self, sid: &str, records: &[OobRecord]) -> Result<(u64, Vec<EntryError>), Error> {
        self.write(|tx| {
            let (staged, errors) = tx.stage_oob(sid, records)?;
            if !errors.is_empty() {
                // Abort: a refused chunk stages nothing.
                return Err(Error::Invalid {
                    message: String::new(),
                    details: errors,
                });
            }
            Ok((staged, Vec::new()))
        })
        .or_else(|e| match e {
            Error::Invalid { details, .. } => Ok((0, details)),
            other => Err(other),
        })
    }

    fn commit_oob_import(
        &self,
        sid: &str,
        opts: CommitOptions,
        audit: &mut dyn FnMut(&OobImportResult) -> Option<AuditDraft>,
    ) -> Result<Result<ImportCommitted, Vec<EntryError>>, Error> {
        self.write(|tx| {
            let result = match tx.commit_oob_import(sid, opts)? {
                Ok(r) => r,
                Err(errors) => {
                    return Err(Error::Invalid {
                        message: String::new(),
                        details: errors,
                    });
                }
            };
            if opts.dry_run {
                return Ok(Ok((result, None, 0)));
            }
            let entry = match audit(&result) {
                Some(d) => Some(tx.append_audit(d)?),
                None => None,
            };
            let count = storage::StoreView::oob_count(&*tx)?;
            Ok(Ok((result, entry, count)))
        })
        .or_else(|e| match e {
            Error::Invalid { details, .. } => Ok(Err(details)),
            other => Err(other),
        })
    }

    fn drop_oob_staging(&self, sid: &str) -> Result<(), Error> {
        self.write(|tx| Ok(tx.drop_oob_staging(sid)?))
    }

    fn drop_stale_oob_staging(&self, live: &HashSet<String>) -> Result<usize, Error> {
        self.write(|tx| Ok(tx.drop_stale_oob_staging(live)?))
    }

    fn snapshot_into(&self, dst: File) -> idprovd_core::store::StoreResult<SnapshotCounts> {
        out(RedbStore::snapshot_into(self, dst))
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn status(&self) -> StoreStatus {
        RedbStore::status(self)
    }

    fn recover(&self) -> StoreHealth {
        RedbStore::recover(self)
    }
}
