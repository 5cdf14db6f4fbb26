//! The PostgreSQL backend's side of [`storage::Store`].

use std::collections::HashSet;
use std::fs::File;

use idprov_proto::admin::AdminEvent;
use idprov_proto::error::EntryError;
use idprov_proto::oob_import::OobImportResult;

use idprovd_core::Error;
use idprovd_core::storage::{self, Decide, ImportCommitted, StoreHealth, StoreStatus, Unit};
use idprovd_core::store::{AuditDraft, CommitOptions, OobRecord, SnapshotCounts};

use super::PgStore;
use super::error::PgError;
use super::view::PgView;

impl storage::Store for PgStore {
    fn read(
        &self,
        read: &mut dyn FnMut(&dyn storage::StoreView) -> Result<(), Error>,
    ) -> Result<(), Error> {
        self.read_tx(|tx| {
            let v = PgView::new(tx);
            read(&v).map_err(|e| conflict_or(&v, e))
        })
    }

    fn transact(&self, decide: &mut Decide<'_>) -> Result<Vec<AdminEvent>, Error> {
        self.write(|tx| {
            let v = PgView::new(tx);
            let mut unit = Unit::new();
            decide(&v, &mut unit).map_err(|e| conflict_or(&v, e))?;
            let (changes, committer) = unit.into_changes();
            if changes.is_empty() {
                return Ok(committer.events(Vec::new()));
            }
            let audit = v.apply(changes).map_err(|e| conflict_or(&v, e.into()))?;
            let events = committer.events(audit);
            v.record_events(&self.origin, &events)
                .map_err(|e| conflict_or(&v, e.into()))?;
            Ok(events)
        })
    }

    fn stage_oob(&self, sid: &str, records: &[OobRecord]) -> Result<(u64, Vec<EntryError>), Error> {
        self.write(|tx| {
            let v = PgView::new(tx);
            let (staged, errors) = v
                .stage_oob(sid, records)
                .map_err(|e| conflict_or(&v, e.into()))?;
            if !errors.is_empty() {
                // Abort: a refused chunk stages nothing.
                return Err(PgError::Core(Error::Invalid {
                    message: String::new(),
                    details: errors,
                }));
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
            let v = PgView::new(tx);
            let result = match v
                .commit_oob_import(sid, opts)
                .map_err(|e| conflict_or(&v, e.into()))?
            {
                Ok(r) => r,
                Err(errors) => {
                    return Err(PgError::Core(Error::Invalid {
                        message: String::new(),
                        details: errors,
                    }));
                }
            };
            if opts.dry_run {
                return Ok(Ok((result, None, 0)));
            }
            let entry = match audit(&result) {
                Some(d) => {
                    let e = v.append_audit(d).map_err(|e| conflict_or(&v, e.into()))?;
                    v.record_events(&self.origin, &[AdminEvent::Audit { entry: e.clone() }])
                        .map_err(|e| conflict_or(&v, e.into()))?;
                    Some(e)
                }
                None => None,
            };
            let count = storage::StoreView::oob_count(&v).map_err(|e| conflict_or(&v, e.into()))?;
            Ok(Ok((result, entry, count)))
        })
        .or_else(|e| match e {
            Error::Invalid { details, .. } => Ok(Err(details)),
            other => Err(other),
        })
    }

    fn drop_oob_staging(&self, sid: &str) -> Result<(), Error> {
        self.write(|tx| {
            let v = PgView::new(tx);
            v.drop_oob_staging(sid)
                .map_err(|e| conflict_or(&v, e.into()))
        })
    }

    fn drop_stale_oob_staging(&self, live: &HashSet<String>) -> Result<usize, Error> {
        self.write(|tx| {
            let v = PgView::new(tx);
            v.drop_stale_oob_staging(live)
                .map_err(|e| conflict_or(&v, e.into()))
        })
    }

    fn snapshot_into(&self, dst: File) -> idprovd_core::store::StoreResult<SnapshotCounts> {
        self.snapshot(dst)
    }

    fn location(&self) -> String {
        self.location.clone()
    }

    fn status(&self) -> StoreStatus {
        PgStore::status(self)
    }

    fn recover(&self) -> StoreHealth {
        PgStore::recover(self)
    }
}

/// A failure inside a transaction: a retry if the database reported a
/// conflict on the way (whatever the caller made of it), else the error.
fn conflict_or(v: &PgView<'_, '_>, e: Error) -> PgError {
    if v.conflicted() {
        PgError::Retry(e.to_string())
    } else {
        PgError::Core(e)
    }
}
