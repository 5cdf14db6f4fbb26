//! Daemons on a PostgreSQL site for the tests: a throwaway cluster
//! (`idprovd_store_pg::testing`, stopped when dropped), a first daemon on a
//! fresh database, and more daemons joining it the documented way — a copy
//! of the first one's data dir key material (CA, signing key, identity,
//! administrators) with the same `[store]` section.

use std::path::Path;

use anyhow::{Context, Result};
use idprovd::Config;
use idprovd::config::StoreBackend;
use idprovd_store_pg::testing::TestCluster;

use crate::TestDaemon;

/// A cluster and one database of it, the site's.
pub struct PgSite {
    pub cluster: TestCluster,
    pub db: String,
}

/// Files of a data dir a joining daemon must not copy: the first daemon's
/// lock, its (unused) store file, its server certificate (each daemon
/// issues its own from the shared CA).
const NOT_COPIED: &[&str] = &[
    idprovd::pki::DATA_DIR_LOCK,
    idprovd::pki::STORE_FILE,
    idprovd::pki::SERVER_CERT,
    idprovd::pki::SERVER_KEY,
];

impl PgSite {
    /// Start a cluster and create the site's database. Fails (never skips)
    /// when PostgreSQL cannot be started.
    pub async fn start() -> Result<PgSite> {
        tokio::task::spawn_blocking(|| {
            let cluster = TestCluster::start()
                .map_err(|e| anyhow::anyhow!("PostgreSQL could not be started: {e}"))?;
            let db = cluster.create_db().map_err(|e| anyhow::anyhow!(e))?;
            Ok(PgSite { cluster, db })
        })
        .await?
    }

    /// Point a configuration at this site's database.
    pub fn configure(&self, cfg: &mut Config) {
        cfg.store.backend = StoreBackend::Postgres;
        cfg.store.postgres = self.cluster.config(&self.db);
    }

    /// The site's first daemon (creates the site in the database).
    pub async fn first(&self) -> Result<TestDaemon> {
        TestDaemon::start_with(|c| self.configure(c)).await
    }

    /// Another daemon of the site, joined from `first`'s key material; it
    /// shares `first`'s clock.
    pub async fn join(&self, first: &TestDaemon) -> Result<TestDaemon> {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().join("data");
        copy_key_material(&first.dir, &dir)?;
        let mut cfg = crate::test_config(&dir);
        self.configure(&mut cfg);
        let mut d = TestDaemon::boot(cfg, first.clock.clone()).await?;
        d.keep_tmp(tmp);
        Ok(d)
    }
}

/// Copy a data dir but for the files each daemon keeps its own.
pub fn copy_key_material(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o700))?;
    for e in std::fs::read_dir(from).with_context(|| from.display().to_string())? {
        let e = e?;
        let name = e.file_name();
        if NOT_COPIED.iter().any(|n| name == *n) || !e.file_type()?.is_file() {
            continue;
        }
        std::fs::copy(e.path(), to.join(&name))
            .with_context(|| format!("copying {}", e.path().display()))?;
    }
    Ok(())
}
