//! The PostgreSQL backend against the store conformance suite: every check
//! on a fresh database of one throwaway cluster.

use idprovd_core::store_conformance;

use crate::PgStore;
use crate::testing::TestCluster;

fn cluster() -> TestCluster {
    match TestCluster::start() {
        Ok(c) => c,
        Err(e) => panic!("PostgreSQL could not be started for the tests: {e}"),
    }
}

fn fresh(cluster: &TestCluster) -> PgStore {
    let cfg = match cluster.fresh_schema() {
        Ok(c) => c,
        Err(e) => panic!("creating a schema: {e}"),
    };
    match PgStore::open(&cfg, "conformance-daemon", true) {
        Ok(s) => s,
        Err(e) => panic!("opening a fresh PostgreSQL store on {}: {e}", cfg.url),
    }
}

#[test]
fn pg_store_conforms() {
    let cluster = cluster();
    store_conformance::run_all(&|| Box::new(fresh(&cluster)));
}
