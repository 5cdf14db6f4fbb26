//! Shared by the benchmark binaries: the real idprovd binary started on
//! 127.0.0.1:0 with a data dir of its own, and /proc readings of it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// A running idprovd process; killed when dropped.
pub struct BenchDaemon {
    child: Child,
    pub pid: u32,
    pub url: String,
    /// `http://…/metrics` of this daemon.
    pub metrics_url: String,
    pub dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl BenchDaemon {
    /// Start `bin` (default: `idprovd` next to the current executable) with
    /// mDNS off, metrics on port 0, rate limits off (a benchmark sends all
    /// its load from one address), and `env` on top.
    pub fn start(bin: Option<&Path>, env: &[(&str, &str)]) -> Result<BenchDaemon> {
        Self::start_from(bin, env, None)
    }

    /// [`BenchDaemon::start`] on a copy of the data dir `prefilled` (its
    /// admin profile names a stale port; [`BenchDaemon::admin_profile`]
    /// points it here).
    pub fn start_from(
        bin: Option<&Path>,
        env: &[(&str, &str)],
        prefilled: Option<&Path>,
    ) -> Result<BenchDaemon> {
        let bin = match bin {
            Some(p) => p.to_path_buf(),
            None => std::env::current_exe()?
                .parent()
                .context("exe dir")?
                .join("idprovd"),
        };
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().join("data");
        if let Some(from) = prefilled {
            let out = Command::new("cp").arg("-a").arg(from).arg(&dir).output()?;
            if !out.status.success() {
                bail!(
                    "copying {}: {}",
                    from.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        let mut cmd = Command::new(&bin);
        cmd.args([
            "--listen",
            "127.0.0.1:0",
            "--log-level",
            "warn",
            "--log-format",
            "json",
        ])
        .arg("--data-dir")
        .arg(&dir)
        .env("IDPROVD_MDNS__ENABLED", "false")
        .env("IDPROVD_METRICS__LISTEN", "127.0.0.1:0")
        .env("IDPROVD_RATE_LIMIT__ENABLED", "false")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stdout = child.stdout.take().context("stdout")?;
        let pid = child.id();
        let mut lines = BufReader::new(stdout).lines();
        let mut url = String::new();
        let mut metrics_url = String::new();
        // The metrics address is announced after the HTTPS one.
        for line in lines.by_ref() {
            let line = line?;
            if let Some(u) = line.split("listening on ").nth(1) {
                url = u.trim().to_string();
            }
            if let Some(m) = line.strip_prefix("metrics on ") {
                metrics_url = m.trim().to_string();
                break;
            }
        }
        // Keep reading: a closed pipe would kill the daemon's next println.
        std::thread::spawn(move || lines.for_each(drop));
        let d = BenchDaemon {
            child,
            pid,
            url,
            metrics_url,
            dir,
            _tmp: tmp,
        };
        if d.url.is_empty() {
            bail!("daemon did not start");
        }
        Ok(d)
    }

    /// The first administrator's profile, pointed at this run's address.
    pub fn admin_profile(&self) -> Result<idprov_proto::admin::AdminProfile> {
        let (_, mut profile) =
            idprov_admin_client::load_profile(Some(&self.dir.join("admin.profile")))?;
        profile.server = self.url.clone();
        Ok(profile)
    }
}

impl Drop for BenchDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A field of /proc/PID/status in KiB (e.g. `VmRSS:`).
pub fn proc_status(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// utime + stime of a process, in seconds.
pub fn cpu_secs(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = s.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// The `p` quantile of sorted latencies, in milliseconds.
pub fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// The failed requests of a timed phase: how many, and the first error.
#[derive(Default)]
pub struct Failures {
    count: std::sync::atomic::AtomicUsize,
    first: std::sync::Mutex<Option<String>>,
}

impl Failures {
    /// Note the outcome of a request started at `started`; a success adds
    /// its latency to `lat`.
    pub fn note(&self, lat: &mut Vec<Duration>, started: std::time::Instant, r: Result<()>) {
        match r {
            Ok(()) => lat.push(started.elapsed()),
            Err(e) => {
                self.count
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if let Ok(mut f) = self.first.lock() {
                    f.get_or_insert_with(|| e.to_string());
                }
            }
        }
    }

    pub fn count(&self) -> usize {
        self.count.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn first(&self) -> Option<String> {
        self.first.lock().ok().and_then(|f| f.clone())
    }
}

/// The latencies the request loops `tasks` return, together and sorted.
pub async fn latencies(
    tasks: Vec<tokio::task::JoinHandle<Vec<Duration>>>,
) -> Result<Vec<Duration>> {
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await?);
    }
    lat.sort();
    Ok(lat)
}

/// A client that makes a full TLS handshake for every request.
pub fn fresh_tls_client(ca: &str) -> Result<reqwest::Client> {
    use rustls_pki_types::pem::PemObject;
    use std::sync::Arc;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(c.context("CA certificate")?)?;
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.resumption = rustls::client::Resumption::disabled();
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .pool_max_idle_per_host(0)
        .http1_only()
        .build()?)
}
