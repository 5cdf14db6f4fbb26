//! The real `idprovd` binary as an operator meets it: `--version`, JSON read
//! commands, log formats and levels, `/metrics` on its own listener, backup
//! through the running daemon, restore with its refusals and exit codes, and
//! a SIGTERM that closes the store cleanly.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_idprovd");

pub(crate) fn idprovd(dir: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.env("IDPROVD_MDNS__ENABLED", "false")
        .env_remove("RUST_LOG")
        .env_remove("IDPROVD_LISTEN")
        .env_remove("IDPROVD_CONFIG")
        .env_remove("NOTIFY_SOCKET")
        .arg("--data-dir")
        .arg(dir);
    c
}

pub(crate) fn out(c: &mut Command) -> (i32, String, String) {
    let o = c.output().expect("idprovd runs");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

pub(crate) struct Daemon {
    child: Child,
    /// `host:port` of the HTTPS listener.
    pub(crate) https: String,
    /// The HTTPS URL it announced.
    pub(crate) url: String,
    metrics: String,
    stderr: mpsc::Receiver<String>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    pub(crate) fn start(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Daemon {
        match Self::try_start(dir, extra, env) {
            Ok(d) => d,
            Err((code, stderr)) => panic!("idprovd exited with {code}: {stderr}"),
        }
    }

    /// Start, or the exit code and stderr of a daemon that refused to.
    pub(crate) fn try_start(
        dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Daemon, (i32, String)> {
        let mut c = idprovd(dir);
        c.args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            c.env(k, v);
        }
        let mut child = c.spawn().expect("spawn idprovd");
        let (tx, stderr) = mpsc::channel();
        let err = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut metrics = String::new();
        let mut https = String::new();
        let mut url = String::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline && metrics.is_empty() {
            let Some(Ok(line)) = lines.next() else { break };
            if let Some((_, rest)) = line.split_once(" listening on https://") {
                https = rest.trim().to_string();
                url = format!("https://{https}");
            }
            if let Some(rest) = line.strip_prefix("metrics on ") {
                metrics = rest.trim().to_string();
            }
        }
        std::thread::spawn(move || for _ in lines {});
        if metrics.is_empty() {
            let _ = child.kill();
            let code = child.wait().ok().and_then(|s| s.code()).unwrap_or(-1);
            let mut logs = Vec::new();
            while let Ok(l) = stderr.recv_timeout(Duration::from_secs(2)) {
                logs.push(l);
            }
            return Err((code, logs.join("\n")));
        }
        Ok(Daemon {
            child,
            https,
            url,
            metrics,
            stderr,
        })
    }

    /// SIGTERM, then the exit status and everything logged.
    pub(crate) fn terminate(self) -> (i32, Vec<String>) {
        let (code, logs, _) = self.terminate_timed(Duration::from_secs(15));
        (code, logs)
    }

    /// SIGTERM, then the exit status, everything logged and the time from
    /// the signal to the exit (which must come within `limit`).
    pub(crate) fn terminate_timed(mut self, limit: Duration) -> (i32, Vec<String>, Duration) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .expect("kill")
                .success()
        );
        let signalled = Instant::now();
        let deadline = signalled + limit;
        let code = loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                break s.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not stop within {limit:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let took = signalled.elapsed();
        // The reader thread ends at EOF.
        let mut logs = Vec::new();
        while let Ok(l) = self.stderr.recv_timeout(Duration::from_secs(2)) {
            logs.push(l);
        }
        (code, logs, took)
    }
}

/// Plain HTTP GET with std only (the metrics listener is not TLS).
fn http_get(url: &str) -> (u16, String) {
    let rest = url.strip_prefix("http://").expect("http URL");
    let (host, path) = rest.split_once('/').expect("path");
    let mut s = std::net::TcpStream::connect(host).expect("connect");
    use std::io::Write;
    write!(
        s,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read");
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    (status, body.to_string())
}

#[test]
fn version_names_the_git_revision_and_read_commands_speak_json() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("d");
    let (code, stdout, _) = out(idprovd(&dir).arg("--version"));
    assert_eq!(code, 0);
    // `idprovd 0.1.0 (0123456789ab)`, or `(unknown)` outside git.
    let rev = stdout
        .trim()
        .split_once('(')
        .and_then(|(_, r)| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("no revision in {stdout:?}"));
    assert!(
        rev == "unknown" || (rev.len() >= 7 && rev.chars().all(|c| c.is_ascii_hexdigit())),
        "{rev}"
    );

    let (code, stdout, _) = out(idprovd(&dir).args(["check-config", "--json"]));
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(v["metrics"]["listen"], "127.0.0.1:9445", "{v}");

    let (code, _, stderr) =
        out(idprovd(&dir).args(["--no-metrics", "--metrics-listen", "127.0.0.1:1"]));
    assert_eq!(code, 2, "usage error: {stderr}");
    let (code, _, stderr) = out(idprovd(&dir)
        .env("IDPROVD_METRICS__LISTEN", "nowhere")
        .arg("check-config"));
    assert_eq!(code, 3, "invalid configuration: {stderr}");
}

#[test]
fn logs_follow_format_and_level_and_sigterm_closes_the_store() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("d");

    // JSON at warn: the info "ready" line is filtered out.
    let d = Daemon::start(&dir, &["--log-format", "json", "--log-level", "warn"], &[]);
    let (code, logs) = d.terminate();
    assert_eq!(code, 0);
    assert!(
        logs.iter().all(|l| !l.contains("idprovd ready")),
        "{logs:?}"
    );

    // RUST_LOG wins over --log-level; JSON lines parse.
    let d = Daemon::start(
        &dir,
        &["--log-format", "json", "--log-level", "warn"],
        &[("RUST_LOG", "info")],
    );
    let (code, logs) = d.terminate();
    assert_eq!(code, 0);
    let ready = logs
        .iter()
        .find(|l| l.contains("idprovd ready"))
        .unwrap_or_else(|| panic!("{logs:?}"));
    let v: serde_json::Value = serde_json::from_str(ready).expect("a JSON log line");
    assert_eq!(v["level"], "INFO", "{v}");
    assert!(
        logs.iter().any(|l| l.contains("store closed")),
        "clean close logged: {logs:?}"
    );

    // Text is not JSON.
    let d = Daemon::start(&dir, &["--log-format", "text"], &[]);
    let (code, logs) = d.terminate();
    assert_eq!(code, 0);
    let ready = logs
        .iter()
        .find(|l| l.contains("idprovd ready"))
        .unwrap_or_else(|| panic!("{logs:?}"));
    assert!(
        serde_json::from_str::<serde_json::Value>(ready).is_err(),
        "{ready}"
    );

    // The store was closed cleanly: opening it needs no repair.
    assert!(!needs_repair(&dir), "the store needed repair after SIGTERM");
    // The check can tell: after kill -9 it does need one.
    let d = Daemon::start(&dir, &[], &[]);
    drop(d);
    assert!(needs_repair(&dir), "kill -9 should leave a store to repair");
}

/// Open the store (the daemon is stopped) and report whether redb had to
/// repair it, i.e. whether it was not closed cleanly.
pub(crate) fn needs_repair(dir: &Path) -> bool {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let repaired = Arc::new(AtomicBool::new(false));
    let flag = repaired.clone();
    let db = redb::Database::builder()
        .set_repair_callback(move |_| flag.store(true, Ordering::SeqCst))
        .open(dir.join("idprov.redb"))
        .expect("store opens");
    drop(db);
    repaired.load(Ordering::SeqCst)
}

#[test]
fn backup_through_the_daemon_and_restore_with_refusals() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("d");
    let file = tmp.path().join("b.tar");

    // No data dir, so no profile: nothing is written.
    let (code, _, stderr) = out(idprovd(&dir).args(["backup", "--out"]).arg(&file));
    assert_eq!(code, 1, "{stderr}");
    assert!(!file.exists());

    let d = Daemon::start(&dir, &[], &[]);
    let (status, body) = http_get(&d.metrics.replace("/metrics", "/readyz"));
    assert_eq!(status, 200, "{body}");
    let (status, body) = http_get(&d.metrics);
    assert_eq!(status, 200);
    assert!(
        body.contains("idprov_store_commit_seconds_bucket"),
        "{body}"
    );

    let (code, stdout, stderr) = out(idprovd(&dir).args(["backup", "--json", "--out"]).arg(&file));
    assert_eq!(code, 0, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(v["manifest"]["format"], "idprov-backup/1", "{v}");
    let mode = std::fs::metadata(&file)
        .expect("backup written")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);

    // Restoring over the running daemon's dir: refused (4), even forced.
    let (code, _, stderr) = out(idprovd(&dir).args(["restore", "--force"]).arg(&file));
    assert_eq!(code, 4, "{stderr}");

    let new = tmp.path().join("new");
    let (code, _, stderr) = out(idprovd(&new).arg("restore").arg(&file));
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr) = out(idprovd(&new).arg("restore").arg(&file));
    assert_eq!(code, 4, "{stderr}");
    assert!(stderr.contains("not empty"), "{stderr}");
    let (code, stdout, stderr) = out(idprovd(&new)
        .args(["restore", "--force", "--json"])
        .arg(&file));
    assert_eq!(code, 0, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(v["checked_only"], false);
    let (code, stdout, _) = out(idprovd(&new).args(["restore", "--check"]).arg(&file));
    assert_eq!(code, 0);
    // A date a person can read, not unix seconds (issue 18 item 6).
    let at = stdout
        .split(" taken at ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .unwrap_or_default();
    assert!(at.starts_with("20") && at.ends_with('Z'), "{stdout}");

    // Same daemon, same CA.
    let (_, fp_old, _) = out(idprovd(&dir).args(["ca", "fingerprint"]));
    let (_, fp_new, _) = out(idprovd(&new).args(["ca", "fingerprint", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&fp_new).expect("JSON");
    assert_eq!(v["fingerprint_sha256"], fp_old.trim());
    for f in [
        "ca.key",
        "signing.key",
        "server.key",
        "idprov.redb",
        "admin.profile",
    ] {
        let mode = std::fs::metadata(new.join(f))
            .expect(f)
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }

    // The daemon gone: exit code 5, and the earlier backup is untouched.
    let (code, _) = d.terminate();
    assert_eq!(code, 0);
    let before = std::fs::read(&file).expect("read");
    let (code, _, stderr) = out(idprovd(&dir).args(["backup", "--out"]).arg(&file));
    assert_eq!(code, 5, "{stderr}");
    assert_eq!(std::fs::read(&file).expect("read"), before);
}

/// The systemd notify protocol, with the test as the service manager:
/// READY=1 once the HTTPS port accepts, watchdog pings with a status line,
/// STOPPING=1 on SIGTERM.
#[test]
fn speaks_sd_notify_ready_watchdog_status_stopping() {
    use std::os::unix::net::UnixDatagram;
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("d");
    let sock_path = tmp.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind notify socket");
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let sock_env = sock_path.to_str().expect("utf-8 path").to_string();
    let d = Daemon::start(
        &dir,
        &[],
        &[("NOTIFY_SOCKET", &sock_env), ("WATCHDOG_USEC", "400000")],
    );
    let mut buf = [0u8; 4096];
    let mut recv = || {
        let n = sock.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let first = recv();
    assert!(first.contains("READY=1"), "{first}");
    assert!(first.contains("STATUS=listening on 127.0.0.1:"), "{first}");
    // Ready means ready: the HTTPS port named in the status accepts.
    let addr = first
        .lines()
        .find_map(|l| l.strip_prefix("STATUS=listening on "))
        .expect("address");
    std::net::TcpStream::connect(addr.trim()).expect("HTTPS port accepts");
    // Pings at half the watchdog interval, each with the current counts.
    let started = Instant::now();
    let mut pings = 0;
    while pings < 3 {
        let m = recv();
        if m.contains("WATCHDOG=1") {
            assert!(m.contains("0 devices, 0 pending"), "{m}");
            pings += 1;
        }
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    let (code, _) = {
        let pid = d.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .expect("kill")
                .success()
        );
        let mut stopping = false;
        for _ in 0..20 {
            if recv().contains("STOPPING=1") {
                stopping = true;
                break;
            }
        }
        assert!(stopping, "STOPPING=1 sent on SIGTERM");
        d.terminate()
    };
    assert_eq!(code, 0);
}
