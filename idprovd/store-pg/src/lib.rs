//! The PostgreSQL store: the storage interface on a database that several
//! daemons of one site share (one OOB list, queue, registry, audit chain).
//!
//! How a write stays correct with several daemons writing at once: every
//! write transaction runs at SERIALIZABLE and, before anything else (so
//! before its snapshot is taken), takes an EXCLUSIVE lock on the one-row
//! `site` table that holds the audit chain head, the clock high-water mark
//! and the event counter. Writers of the whole site therefore run one after
//! the other, each seeing every commit before it — the same model as redb's
//! single writer, across processes. A serialization failure (40001) or a
//! deadlock (40P01), which the lock should make impossible among writers,
//! is still retried, a bounded number of times: the decision closure may run
//! more than once (the storage interface says so). Reads run on a REPEATABLE
//! READ, READ ONLY snapshot and never wait for a writer.
//!
//! Nothing is acknowledged before its commit: `transact` returns only after
//! `COMMIT` succeeded (PostgreSQL's own durability: fsync of the WAL).

mod apply;
mod error;
mod events;
mod health;
mod migrate;
mod oob_import;
mod secret;
mod snapshot;
mod store;
mod view;

use std::sync::Arc;
use std::time::Duration;

use postgres::{IsolationLevel, NoTls, Transaction};
use r2d2_postgres::PostgresConnectionManager;

use idprovd_core::Error;
use idprovd_core::config::PostgresConfig;
use idprovd_core::storage::PoolFigures;
use idprovd_core::store::{GENESIS_HASH, StoreError};

pub use error::PgError;
pub use events::{EventCursor, FollowedEvents};
pub use migrate::{MIGRATIONS, SCHEMA_VERSION};
pub use secret::Password;
pub use snapshot::read_audit;

type Pool = r2d2::Pool<PostgresConnectionManager<NoTls>>;
type Conn = r2d2::PooledConnection<PostgresConnectionManager<NoTls>>;

/// Most times one decision is tried when the database reports a
/// serialization failure or a deadlock.
const MAX_ATTEMPTS: u32 = 8;

/// The daemon's handle on the site database. Cheap to clone.
#[derive(Clone)]
pub struct PgStore {
    shared: Arc<health::Shared>,
    /// What `location()` shows: host and database, never the password.
    location: String,
    /// This process among the site's daemons (events it wrote itself are
    /// not read back from the events table).
    origin: String,
    /// Commit latency, exported as `idprov_store_commit_seconds`.
    commit_seconds: prometheus_client::metrics::histogram::Histogram,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connect, bring the schema up to date (refusing one newer than this
    /// binary), and check the site. `site_id` is the daemon identity of the
    /// site (every daemon of a site shares it, see docs/operations.md);
    /// `create` is true only when the data dir was just initialised: an
    /// empty database is then made this site's, otherwise it is refused
    /// (a lost database is restored, never silently started empty).
    pub fn open(cfg: &PostgresConfig, site_id: &str, create: bool) -> Result<PgStore, StoreError> {
        let password = Password::from_config(cfg)?;
        let mut pg: postgres::Config = cfg
            .url
            .parse()
            .map_err(|e| StoreError::Db(format!("store.postgres.url: {e}")))?;
        if pg.get_password().is_some() {
            return Err(StoreError::Db(
                "store.postgres.url holds a password; give it by password_file or password_env instead"
                    .into(),
            ));
        }
        if let Some(p) = &password {
            pg.password(p.expose());
        }
        pg.connect_timeout(cfg.connect_timeout);
        pg.application_name("idprovd");
        let location = describe(&pg);
        let manager = PostgresConnectionManager::new(pg, NoTls);
        let pool = r2d2::Pool::builder()
            .max_size(cfg.pool_size)
            .min_idle(Some(0))
            .connection_timeout(cfg.connect_timeout)
            // A broken connection shows as `is_closed`; no test query on
            // every checkout (a round trip per request).
            .test_on_check_out(false)
            .idle_timeout(Some(Duration::from_secs(300)))
            .error_handler(Box::new(r2d2::NopErrorHandler))
            .build_unchecked(manager);
        let store = PgStore {
            shared: Arc::new(health::Shared::new(pool)),
            location,
            origin: format!("{}-{}", site_id, hex::encode(rand::random::<[u8; 6]>())),
            // Buckets from 100 µs to ~3.3 s, as redb's.
            commit_seconds: prometheus_client::metrics::histogram::Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.0, 16),
            ),
        };
        let mut conn = store.conn().map_err(|e| match e {
            StoreError::Unavailable(m) => {
                StoreError::Db(format!("cannot connect to {}: {m}", store.location))
            }
            other => other,
        })?;
        migrate::migrate(&mut conn, &store.location)?;
        store.check_site(&mut conn, site_id, create)?;
        Ok(store)
    }

    /// Where the data lives, for messages.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The commit-latency histogram (shared, not a copy).
    pub fn commit_histogram(&self) -> prometheus_client::metrics::histogram::Histogram {
        self.commit_seconds.clone()
    }

    pub fn pool_status(&self) -> PoolFigures {
        match self.shared.pool() {
            Ok(p) => {
                let s = p.state();
                PoolFigures {
                    connections: s.connections,
                    idle: s.idle_connections,
                    max: p.max_size(),
                }
            }
            Err(_) => PoolFigures {
                connections: 0,
                idle: 0,
                max: 0,
            },
        }
    }

    fn check_site(&self, conn: &mut Conn, site_id: &str, create: bool) -> Result<(), StoreError> {
        let row = conn
            .query_opt("SELECT site_id FROM site WHERE id = 1", &[])
            .map_err(error::store)?;
        match row {
            Some(r) => {
                let found: String = r.try_get(0).map_err(error::store)?;
                if found != site_id {
                    return Err(StoreError::WrongDaemon {
                        path: self.location.clone().into(),
                        found,
                        expected: site_id.to_string(),
                    });
                }
                Ok(())
            }
            None if create => {
                conn.execute(
                    "INSERT INTO site (id, site_id, audit_hash) VALUES (1, $1, $2) ON CONFLICT DO NOTHING",
                    &[&site_id, &GENESIS_HASH],
                )
                .map_err(error::store)?;
                // Another daemon may have won the insert: check again.
                self.check_site(conn, site_id, false)
            }
            None => Err(StoreError::Missing(self.location.clone().into())),
        }
    }

    /// A connection from the pool; refused at once while the store is
    /// unavailable (the recovery task brings it back).
    fn conn(&self) -> Result<Conn, StoreError> {
        if let Some(reason) = self.shared.failure() {
            return Err(StoreError::Unavailable(reason));
        }
        self.shared
            .pool()?
            .get()
            .map_err(|e| self.shared.failed(format!("no database connection: {e}")))
    }

    /// One write transaction: lock the site, run `f`, commit; retried on a
    /// serialization failure or deadlock. `f` returns a core error; a
    /// database error inside it is reported through `PgError` so the retry
    /// can see it.
    pub(crate) fn write<T>(
        &self,
        mut f: impl FnMut(&mut Transaction<'_>) -> Result<T, PgError>,
    ) -> Result<T, Error> {
        let mut attempt = 1;
        loop {
            let mut conn = self.conn()?;
            let r = (|| {
                let mut tx = conn
                    .build_transaction()
                    .isolation_level(IsolationLevel::Serializable)
                    .start()?;
                // A utility statement: the snapshot is taken after the lock.
                tx.batch_execute("LOCK TABLE site IN EXCLUSIVE MODE")?;
                let out = f(&mut tx)?;
                let started = std::time::Instant::now();
                tx.commit()?;
                self.commit_seconds.observe(started.elapsed().as_secs_f64());
                Ok(out)
            })();
            match r {
                Ok(v) => return Ok(v),
                Err(PgError::Retry(why)) if attempt < MAX_ATTEMPTS => {
                    tracing::debug!(attempt, error = %why, "store transaction conflicted; retrying");
                    attempt += 1;
                    // A short, growing pause spreads the retries apart.
                    std::thread::sleep(Duration::from_millis(u64::from(attempt) * 2));
                }
                Err(e) => return Err(self.shared.watch(e.into_core())),
            }
        }
    }

    /// One read-only snapshot.
    pub(crate) fn read_tx<T>(
        &self,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<T, PgError>,
    ) -> Result<T, Error> {
        let mut conn = self.conn()?;
        let r = (|| {
            let mut tx = conn
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()?;
            let out = f(&mut tx)?;
            tx.commit()?;
            Ok(out)
        })();
        r.map_err(|e: PgError| self.shared.watch(e.into_core()))
    }
}

/// `host/dbname (user)` for messages; the password is never shown.
fn describe(pg: &postgres::Config) -> String {
    let host = pg
        .get_hosts()
        .iter()
        .map(|h| match h {
            postgres::config::Host::Tcp(s) => s.clone(),
            postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .collect::<Vec<_>>()
        .join(",");
    format!(
        "postgresql {host}/{} (user {})",
        pg.get_dbname().unwrap_or("-"),
        pg.get_user().unwrap_or("-")
    )
}

#[cfg(feature = "testing")]
pub mod testing;

#[cfg(test)]
mod conformance;
