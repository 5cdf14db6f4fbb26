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
    pub dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl BenchDaemon {
    /// Start `bin` (default: `idprovd` next to the current executable) with
    /// mDNS off, metrics on port 0, rate limits off (a benchmark sends all
    /// its load from one address), and `env` on top.
    pub fn start(bin: Option<&Path>, env: &[(&str, &str)]) -> Result<BenchDaemon> {
        let bin = match bin {
            Some(p) => p.to_path_buf(),
            None => std::env::current_exe()?
                .parent()
                .context("exe dir")?
                .join("idprovd"),
        };
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().join("data");
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
        for line in lines.by_ref() {
            if let Some(u) = line?.split("listening on ").nth(1) {
                url = u.trim().to_string();
                break;
            }
        }
        // Keep reading: a closed pipe would kill the daemon's next println.
        std::thread::spawn(move || lines.for_each(drop));
        let d = BenchDaemon {
            child,
            pid,
            url,
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
