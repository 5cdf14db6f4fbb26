//! Operations figures against the real release binary, with a large store:
//! start-to-ready time (until systemd's READY=1), the cost of a `/metrics`
//! scrape, backup time and size, restore time, and SIGTERM-to-exit.
//!
//!   CARGO_TARGET_DIR=/work/target-bench cargo build --release -p idprovd -p idprov-tests
//!   /work/target-bench/release/bench_ops [--devices 100000] [--runs 5]
//!
//! The store is filled directly through the idprovd library (the daemon
//! stopped): each device with its own P-256 key, the OOB entry it was
//! admitted by, one live token record and one audit entry, as a hub that
//! provisioned that many devices would hold.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use idprov_proto::admin::DeviceStatus;
use idprov_proto::{DeviceId, PublicKey};
use idprovd::store::{AuditDraft, DeviceRecord, KeyRecord, OobRecord, RedbStore, TokenRecord};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 100_000)]
    devices: usize,
    /// Cold starts to time (the median is reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Scrapes of /metrics to time.
    #[arg(long, default_value_t = 500)]
    scrapes: usize,
    /// The idprovd binary (default: next to this one).
    #[arg(long)]
    idprovd: Option<PathBuf>,
    /// OOB entries (each with its own key) not yet provisioned, besides the
    /// devices' own.
    #[arg(long, default_value_t = 0)]
    pending_oob: usize,
    /// Only fill a new data dir here (for `bench_throughput --prefilled`)
    /// and exit.
    #[arg(long)]
    fill_only: Option<PathBuf>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let bin = match &args.idprovd {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("exe dir")?
            .join("idprovd"),
    };
    let tmp = tempfile::tempdir()?;
    let dir = match &args.fill_only {
        Some(d) if d.exists() => bail!("{} exists", d.display()),
        Some(d) => d.clone(),
        None => tmp.path().join("data"),
    };

    // Initialise the data dir with the real binary, then stop it.
    let d = Daemon::start(&bin, &dir, tmp.path())?;
    d.stop()?;
    let t = Instant::now();
    fill(&dir, args.devices, args.pending_oob)?;
    println!(
        "filled the store with {} devices and {} pending OOB entries in {:.1}s; idprov.redb is {:.1} MiB",
        args.devices,
        args.pending_oob,
        t.elapsed().as_secs_f64(),
        mib(std::fs::metadata(dir.join("idprov.redb"))?.len())
    );
    if args.fill_only.is_some() {
        return Ok(());
    }

    // The integrity check every open does (redb's check of every committed
    // page), A/B against a plain open of the same file, the daemon stopped.
    let file = dir.join("idprov.redb");
    let (mut plain, mut checked) = (Vec::new(), Vec::new());
    for _ in 0..args.runs {
        let t = Instant::now();
        drop(redb::Database::open(&file)?);
        plain.push(t.elapsed());
        let t = Instant::now();
        drop(
            redb::Database::builder()
                .set_check_integrity_on_open(true)
                .open(&file)?,
        );
        checked.push(t.elapsed());
    }
    println!(
        "opening the store ({} runs, alternating): plain median {:.1} ms, with the integrity check median {:.1} ms",
        args.runs,
        ms(median(&mut plain)),
        ms(median(&mut checked))
    );

    // Start to READY=1, after a clean stop each time.
    let mut starts = Vec::new();
    let mut stops = Vec::new();
    for _ in 0..args.runs {
        let d = Daemon::start(&bin, &dir, tmp.path())?;
        starts.push(d.ready_after);
        let t = Instant::now();
        d.stop()?;
        stops.push(t.elapsed());
    }
    println!(
        "start to READY=1 ({} runs): median {:.0} ms, min {:.0} ms, max {:.0} ms",
        args.runs,
        ms(median(&mut starts)),
        ms(*starts.iter().min().context("runs")?),
        ms(*starts.iter().max().context("runs")?)
    );
    println!(
        "SIGTERM to exit (idle): median {:.0} ms",
        ms(median(&mut stops))
    );

    // After a kill -9: redb recovers the store first.
    let d = Daemon::start(&bin, &dir, tmp.path())?;
    d.kill();
    let d = Daemon::start(&bin, &dir, tmp.path())?;
    println!(
        "start to READY=1 after kill -9 (store recovery): {:.0} ms",
        ms(d.ready_after)
    );

    // /metrics: wall time per scrape over one keep-alive connection, and the
    // daemon's CPU per scrape.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = idprov_tests::pinned_client(&std::fs::read_to_string(dir.join("ca.pem"))?);
    let url = d.metrics_url.clone();
    let body = rt.block_on(async { client.get(&url).send().await?.text().await })?;
    if !body.contains(&format!("idprov_devices {}", args.devices)) {
        bail!("the scrape does not show {} devices:\n{body}", args.devices);
    }
    let cpu0 = cpu_ms(d.child.id())?;
    let mut lat = Vec::with_capacity(args.scrapes);
    for _ in 0..args.scrapes {
        let t = Instant::now();
        rt.block_on(async { client.get(&url).send().await?.bytes().await })?;
        lat.push(t.elapsed());
    }
    let cpu = cpu_ms(d.child.id())? - cpu0;
    lat.sort();
    println!(
        "/metrics scrape ({} B): p50 {:.2} ms, p99 {:.2} ms wall; {:.2} ms daemon CPU per scrape",
        body.len(),
        ms(lat[lat.len() / 2]),
        ms(lat[lat.len() * 99 / 100]),
        cpu / args.scrapes as f64
    );

    // Backup through the daemon, with the CLI as an operator runs it.
    let file = tmp.path().join("backup.tar");
    let cpu0 = cpu_ms(d.child.id())?;
    let t = Instant::now();
    let out = Command::new(&bin)
        .args(["--no-mdns", "--data-dir"])
        .arg(&dir)
        .args(["backup", "--server", &d.url, "--out"])
        .arg(&file)
        .output()?;
    let backup_wall = t.elapsed();
    let backup_cpu = cpu_ms(d.child.id())? - cpu0;
    if !out.status.success() {
        bail!("backup: {}", String::from_utf8_lossy(&out.stderr));
    }
    println!(
        "backup ({} devices): {:.2} s wall (download and full verify included), {:.2} s daemon CPU, {:.1} MiB",
        args.devices,
        backup_wall.as_secs_f64(),
        backup_cpu / 1000.0,
        mib(std::fs::metadata(&file)?.len())
    );
    d.stop()?;

    let restored = tmp.path().join("restored");
    let t = Instant::now();
    let out = Command::new(&bin)
        .args(["--no-mdns", "--data-dir"])
        .arg(&restored)
        .arg("restore")
        .arg(&file)
        .output()?;
    if !out.status.success() {
        bail!("restore: {}", String::from_utf8_lossy(&out.stderr));
    }
    println!("restore: {:.2} s", t.elapsed().as_secs_f64());
    let d = Daemon::start(&bin, &restored, tmp.path())?;
    println!(
        "restored daemon start to READY=1: {:.0} ms",
        ms(d.ready_after)
    );
    d.stop()?;
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// utime + stime of a process, in milliseconds.
fn cpu_ms(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat.rsplit_once(')').context("stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    // USER_HZ is 100 on Linux.
    Ok(ticks * 10.0)
}

/// Write `n` provisioned devices, then `pending` OOB entries of devices not
/// yet seen, straight into the stopped daemon's store.
fn fill(dir: &Path, n: usize, pending: usize) -> Result<()> {
    let identity: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("identity.json"))?)?;
    let daemon_id = identity["daemon_id"].as_str().context("daemon_id")?;
    let store = RedbStore::open(dir, daemon_id, false)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    const BATCH: usize = 5000;
    let new_keys = |range: std::ops::Range<usize>| -> Result<Vec<PublicKey>> {
        range
            .map(|_| {
                let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
                Ok(PublicKey::from_pem(&kp.public_key_pem(), None)?)
            })
            .collect()
    };
    let mut i = 0;
    while i < n + pending {
        let end = (i + BATCH).min(n + pending);
        let keys = new_keys(i..end)?;
        store.write(|tx| -> Result<(), idprovd::store::StoreError> {
            for (j, key) in (i..end).zip(&keys) {
                let id: DeviceId = format!("sensor-{j:07}")
                    .parse()
                    .map_err(|e| idprovd::store::StoreError::Record(format!("{e}")))?;
                let mac = format!(
                    "02:00:{:02x}:{:02x}:{:02x}:{:02x}",
                    (j >> 24) & 0xff,
                    (j >> 16) & 0xff,
                    (j >> 8) & 0xff,
                    j & 0xff
                )
                .parse()
                .ok();
                tx.put_oob(&OobRecord {
                    device_id: id.clone(),
                    public_key: Some(key.pem().to_string()),
                    key_format: Some(key.format()),
                    kid: Some(key.thumbprint().to_string()),
                    mac,
                    secret_hash: None,
                    secret_salt: None,
                    secret_consumed_at: None,
                    setup: None,
                    expires_at: None,
                    note: None,
                    created_at: now,
                    updated_at: now,
                    secret_plain_for_compare: None,
                })?;
                if j >= n {
                    continue;
                }
                let epoch: u64 = rand::random();
                tx.put_device(
                    id.as_str(),
                    &DeviceRecord {
                        device_id: id.clone(),
                        status: DeviceStatus::Active,
                        epoch,
                        keys: vec![KeyRecord {
                            kid: key.thumbprint().to_string(),
                            format: key.format(),
                            pem: key.pem().to_string(),
                            added_at: now,
                            expires_at: None,
                        }],
                        mac,
                        admitted_by: "oob_key".into(),
                        created_at: now,
                        last_issued_at: Some(now),
                        tokens_issued: 1,
                        flags: Vec::new(),
                        revision: 1,
                        status_reason: None,
                    },
                )?;
                tx.put_token(&TokenRecord {
                    jti: idprov_tests::random_jti(),
                    device_id: id.clone(),
                    device_epoch: epoch,
                    kid: key.thumbprint().to_string(),
                    issued_at: now,
                    expires_at: now + 30 * 86400,
                })?;
                tx.append_audit(AuditDraft {
                    at: now,
                    actor: "daemon".into(),
                    action: "device_admitted".into(),
                    target: Some(id.to_string()),
                    source: Some("192.168.10.20".into()),
                    detail: format!("admitted by oob_key, key {}", key.thumbprint()),
                })?;
            }
            Ok(())
        })?;
        i = end;
    }
    Ok(())
}

struct Daemon {
    child: Child,
    ready_after: Duration,
    metrics_url: String,
    /// The HTTPS URL (the admin profile names the first start's port).
    url: String,
    /// Kept open: the daemon keeps sending status and watchdog pings.
    _sock: UnixDatagram,
}

impl Daemon {
    /// Spawn and wait for READY=1 on our own notify socket.
    fn start(bin: &Path, dir: &Path, scratch: &Path) -> Result<Daemon> {
        let sock_path = scratch.join(format!("notify-{}.sock", rand::random::<u32>()));
        let sock = UnixDatagram::bind(&sock_path)?;
        sock.set_read_timeout(Some(Duration::from_secs(300)))?;
        let t = Instant::now();
        let mut child = Command::new(bin)
            .env("NOTIFY_SOCKET", &sock_path)
            .env_remove("RUST_LOG")
            .args([
                "--no-mdns",
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
                "--log-level",
                "warn",
                "--data-dir",
            ])
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("spawn idprovd")?;
        let mut buf = [0u8; 4096];
        loop {
            let n = sock.recv(&mut buf).context("waiting for READY=1")?;
            if String::from_utf8_lossy(&buf[..n]).contains("READY=1") {
                break;
            }
        }
        let ready_after = t.elapsed();
        let stdout = child.stdout.take().context("stdout")?;
        let mut metrics_url = String::new();
        let mut url = String::new();
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            if let Some(rest) = line.split("listening on ").nth(1) {
                url = rest.trim().to_string();
            }
            if let Some(rest) = line.strip_prefix("metrics on ") {
                metrics_url = rest.trim().to_string();
                break;
            }
        }
        if metrics_url.is_empty() {
            bail!("no metrics URL announced");
        }
        Ok(Daemon {
            child,
            ready_after,
            metrics_url,
            url,
            _sock: sock,
        })
    }

    fn stop(mut self) -> Result<()> {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        let status = self.child.wait()?;
        if !status.success() {
            bail!("idprovd exited with {status}");
        }
        Ok(())
    }

    fn kill(self) {
        // Drop kills.
    }
}

impl Drop for Daemon {
    /// Never leave a daemon behind when the benchmark fails half way.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
