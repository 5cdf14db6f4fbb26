//! A throwaway PostgreSQL cluster for tests (feature `testing`): `initdb`
//! and `pg_ctl` from the distribution's packages in a temporary directory,
//! listening only on a Unix socket in that directory, run as the
//! unprivileged `postgres` user when the tests run as root (PostgreSQL
//! refuses root), and stopped (`pg_ctl stop`) when dropped. Never a system
//! service. Starting fails loudly: a test that needs PostgreSQL fails, it
//! does not skip.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use idprovd_core::config::PostgresConfig;

/// A running cluster; stopped on drop.
pub struct TestCluster {
    bin: PathBuf,
    root: tempfile::TempDir,
    run_as: Option<String>,
    next_db: AtomicU32,
    pid: u32,
}

impl std::fmt::Debug for TestCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCluster")
            .field("root", &self.root.path())
            .field("pid", &self.pid)
            .finish()
    }
}

/// The newest `/usr/lib/postgresql/*/bin` that has `initdb`.
fn find_bin() -> Result<PathBuf, String> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| {
            format!("/usr/lib/postgresql: {e} (install the postgresql package; .ci/run does)")
        })?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, b)| b).ok_or_else(|| {
        "no /usr/lib/postgresql/*/bin/initdb (install the postgresql package)".into()
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .is_some_and(|s| s.trim() == "0")
}

impl TestCluster {
    /// initdb + pg_ctl start; an error says why PostgreSQL could not start.
    pub fn start() -> Result<TestCluster, String> {
        let bin = find_bin()?;
        let root = tempfile::Builder::new()
            .prefix("idprov-pg-")
            .tempdir()
            .map_err(|e| format!("temporary directory: {e}"))?;
        let run_as = is_root().then(|| "postgres".to_string());
        let data = root.path().join("data");
        let sock = root.path().join("sock");
        std::fs::create_dir(&sock).map_err(|e| format!("{}: {e}", sock.display()))?;
        if let Some(user) = &run_as {
            use std::os::unix::fs::PermissionsExt;
            // The unprivileged user must reach its directories.
            std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755))
                .map_err(|e| format!("chmod {}: {e}", root.path().display()))?;
            let out = Command::new("chown")
                .arg(user)
                .arg(&sock)
                .arg(root.path())
                .output()
                .map_err(|e| format!("chown: {e}"))?;
            if !out.status.success() {
                return Err(format!("chown: {}", String::from_utf8_lossy(&out.stderr)));
            }
        }
        let mut cluster = TestCluster {
            bin,
            root,
            run_as,
            next_db: AtomicU32::new(0),
            pid: 0,
        };
        cluster.run(
            "initdb",
            &[
                "-D",
                path(&data),
                "-U",
                "idprov",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-instructions",
            ],
        )?;
        cluster.restart()?;
        Ok(cluster)
    }

    /// Run one of PostgreSQL's programs (as the cluster's user).
    fn run(&self, program: &str, args: &[&str]) -> Result<(), String> {
        let exe = self.bin.join(program);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.arg("-u").arg(user).arg("--").arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        let out = cmd
            .args(args)
            .current_dir(self.root.path())
            .output()
            .map_err(|e| format!("{}: {e}", exe.display()))?;
        if !out.status.success() {
            let log =
                std::fs::read_to_string(self.root.path().join("postgres.log")).unwrap_or_default();
            return Err(format!(
                "{program} failed: {}{}\n{log}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    }

    /// The postmaster's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn socket_dir(&self) -> PathBuf {
        self.root.path().join("sock")
    }

    /// A connection string for database `db` (superuser `idprov`, trust).
    pub fn url(&self, db: &str) -> String {
        format!(
            "host={} user=idprov dbname={db}",
            self.socket_dir().display()
        )
    }

    /// A store configuration for database `db`.
    pub fn config(&self, db: &str) -> PostgresConfig {
        PostgresConfig {
            url: self.url(db),
            pool_size: 8,
            ..PostgresConfig::default()
        }
    }

    /// Create a new, empty database; returns its name.
    pub fn create_db(&self) -> Result<String, String> {
        let name = format!("idprov_{}", self.next_db.fetch_add(1, Ordering::Relaxed));
        self.sql(&format!("CREATE DATABASE {name}"))?;
        Ok(name)
    }

    /// A store configuration on a new, empty schema of database `postgres`
    /// (much cheaper than a database: for suites that want many stores).
    pub fn fresh_schema(&self) -> Result<PostgresConfig, String> {
        let name = format!("s_{}", self.next_db.fetch_add(1, Ordering::Relaxed));
        self.sql(&format!("CREATE SCHEMA {name}"))?;
        Ok(PostgresConfig {
            url: format!("{} options='-c search_path={name}'", self.url("postgres")),
            pool_size: 4,
            ..PostgresConfig::default()
        })
    }

    /// Run SQL on the `postgres` database.
    pub fn sql(&self, sql: &str) -> Result<(), String> {
        self.sql_in("postgres", sql)
    }

    /// Run SQL on database `db` (tests that tamper with a store).
    pub fn sql_in(&self, db: &str, sql: &str) -> Result<(), String> {
        let mut c = postgres::Client::connect(&self.url(db), postgres::NoTls)
            .map_err(|e| format!("connecting to the test cluster: {e}"))?;
        c.batch_execute(sql).map_err(|e| format!("{sql}: {e}"))
    }

    /// Stop the server (fast shutdown: connections are cut).
    pub fn stop(&self) -> Result<(), String> {
        let data = self.root.path().join("data");
        self.run("pg_ctl", &["-D", path(&data), "-m", "fast", "-w", "stop"])
    }

    /// Start the server (again, after [`TestCluster::stop`]).
    pub fn restart(&mut self) -> Result<(), String> {
        let data = self.root.path().join("data");
        let log = self.root.path().join("postgres.log");
        let opts = format!(
            "-c listen_addresses='' -k {} -c max_connections=200 -c shared_buffers=32MB",
            path(&self.socket_dir())
        );
        self.run(
            "pg_ctl",
            &[
                "-D",
                path(&data),
                "-l",
                path(&log),
                "-w",
                "-t",
                "60",
                "-o",
                &opts,
                "start",
            ],
        )?;
        let pidfile = std::fs::read_to_string(data.join("postmaster.pid"))
            .map_err(|e| format!("postmaster.pid: {e}"))?;
        self.pid = pidfile
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .ok_or("postmaster.pid has no pid")?;
        Ok(())
    }
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap_or("")
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            // Already stopped (a test stopped it) is fine; anything else is
            // worth a line in the test output.
            if !e.contains("Is server running?") {
                eprintln!("stopping the test PostgreSQL cluster: {e}");
            }
        }
    }
}
