//! The redb backend against the store conformance suite, and the suite
//! against a store that breaks the contract (so it is known to fail).

use std::cell::Cell;
use std::collections::HashSet;
use std::fs::File;

use idprov_proto::admin::AdminEvent;
use idprov_proto::error::EntryError;
use idprov_proto::oob_import::OobImportResult;
use tempfile::TempDir;

use idprovd_core::Error;
use idprovd_core::storage::{Decide, Store, StoreView};
use idprovd_core::store::{AuditDraft, CommitOptions, OobRecord, SnapshotCounts, StoreResult};
use idprovd_core::store_conformance;

use crate::RedbStore;

/// Fresh redb stores, each in its own directory under one temporary root.
struct Fresh {
    root: TempDir,
    n: Cell<u32>,
}

impl Fresh {
    fn new() -> Fresh {
        match TempDir::new() {
            Ok(root) => Fresh {
                root,
                n: Cell::new(0),
            },
            Err(e) => panic!("temporary directory: {e}"),
        }
    }

    fn store(&self) -> RedbStore {
        self.n.set(self.n.get() + 1);
        let dir = self.root.path().join(self.n.get().to_string());
        if let Err(e) = std::fs::create_dir(&dir) {
            panic!("creating {}: {e}", dir.display());
        }
        match RedbStore::open(&dir, "conformance-daemon", true) {
            Ok(s) => s,
            Err(e) => panic!("opening a fresh redb store in {}: {e}", dir.display()),
        }
    }
}

#[test]
fn redb_store_conforms() {
    let fresh = Fresh::new();
    store_conformance::run_all(&|| Box::new(fresh.store()));
}

/// A store that commits a unit even when its decision returns `Err`.
struct CommitsFailedDecisions(RedbStore);

impl Store for CommitsFailedDecisions {
    fn read(&self, read: &mut dyn FnMut(&dyn StoreView) -> Result<(), Error>) -> Result<(), Error> {
        Store::read(&self.0, read)
    }
    fn transact(&self, decide: &mut Decide<'_>) -> Result<Vec<AdminEvent>, Error> {
        self.0.transact(&mut |v, u| {
            let _ignored = decide(v, u);
            Ok(())
        })
    }
    fn stage_oob(&self, sid: &str, records: &[OobRecord]) -> Result<(u64, Vec<EntryError>), Error> {
        Store::stage_oob(&self.0, sid, records)
    }
    fn commit_oob_import(
        &self,
        sid: &str,
        opts: CommitOptions,
        audit: &mut dyn FnMut(&OobImportResult) -> Option<AuditDraft>,
    ) -> Result<Result<idprovd_core::storage::ImportCommitted, Vec<EntryError>>, Error> {
        Store::commit_oob_import(&self.0, sid, opts, audit)
    }
    fn drop_oob_staging(&self, sid: &str) -> Result<(), Error> {
        Store::drop_oob_staging(&self.0, sid)
    }
    fn drop_stale_oob_staging(&self, live: &HashSet<String>) -> Result<usize, Error> {
        Store::drop_stale_oob_staging(&self.0, live)
    }
    fn snapshot_into(&self, dst: File) -> StoreResult<SnapshotCounts> {
        Store::snapshot_into(&self.0, dst)
    }
    fn location(&self) -> String {
        self.0.location()
    }
    fn status(&self) -> idprovd_core::storage::StoreStatus {
        Store::status(&self.0)
    }
    fn recover(&self) -> idprovd_core::storage::StoreHealth {
        Store::recover(&self.0)
    }
}

#[test]
fn suite_fails_a_store_that_commits_failed_decisions() {
    let fresh = Fresh::new();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        store_conformance::run_one("failed_decision_writes_nothing", &|| {
            Box::new(CommitsFailedDecisions(fresh.store()))
        })
    }));
    assert!(
        outcome.is_err(),
        "the suite passed a store that commits the units of failed decisions"
    );
}
