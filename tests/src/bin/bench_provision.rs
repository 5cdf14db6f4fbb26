//! Benchmark of the device API against the real release binary.
//!
//!   cargo build --release -p idprovd -p idprov-tests
//!   target/release/bench_provision [--devices 2000] [--concurrency 32] [--seconds 10]
//!
//! Prints: idle RSS of the daemon; provisioning of pre-approved devices with
//! a fresh TLS connection per request (full handshakes, no resumption) and
//! an ES256 proof; renewals over keep-alive connections. For each: requests
//! per second (wall), per second of daemon CPU, p50/p99 latency, errors.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Parser;
use idprov_proto::admin::{MAX_OOB_BATCH, OobUpsertRequest};
use idprov_proto::device::{ProofEndpoint, paths};
use idprov_tests::bench::{
    BenchDaemon, Failures, cpu_secs, fresh_tls_client, latencies, pct, proc_status,
};
use idprov_tests::{DeviceKey, oob_entry, post_json};

#[derive(Parser)]
struct Args {
    /// Pre-approved devices (each provisions once per round).
    #[arg(long, default_value_t = 2000)]
    devices: usize,
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Length of each timed phase.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// The idprovd binary (default: next to this one).
    #[arg(long)]
    idprovd: Option<std::path::PathBuf>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    let proc = BenchDaemon::start(
        args.idprovd.as_deref(),
        &[("IDPROVD_TOKENS__LIFETIME", "1h")],
    )?;
    let (pid, url) = (proc.pid, proc.url.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_rss = proc_status(pid, "VmRSS:").unwrap_or(0);

    let profile = proc.admin_profile()?;
    let admin = idprov_admin_client::AdminClient::new(&profile)?;
    let ca = profile.ca_cert.clone();
    let info: idprov_proto::device::InfoResponse = idprov_tests::pinned_client(&ca)
        .get(format!("{url}{}", paths::INFO))
        .send()
        .await?
        .json()
        .await?;

    eprintln!("generating and listing {} device keys...", args.devices);
    let keys: Vec<(String, DeviceKey)> = (0..args.devices)
        .map(|i| (format!("bench-{i:06}"), DeviceKey::es256()))
        .collect();
    for chunk in keys.chunks(MAX_OOB_BATCH) {
        let entries = chunk
            .iter()
            .map(|(id, k)| oob_entry(id, Some(k), None, None))
            .collect();
        admin
            .oob_upsert(&OobUpsertRequest {
                entries,
                replace: false,
                dry_run: false,
            })
            .await?;
    }
    let keys = Arc::new(keys);

    println!("idprovd idle RSS: {:.1} MiB", idle_rss as f64 / 1024.0);

    // Phase 1: provisioning, a new TLS connection (full handshake) each.
    let fresh = fresh_tls_client(&ca)?;
    let tokens: Arc<std::sync::Mutex<Vec<Option<String>>>> =
        Arc::new(std::sync::Mutex::new(vec![None; keys.len()]));
    let r = phase("provision (fresh TLS each, ES256 proof)", &args, pid, {
        let keys = keys.clone();
        let tokens = tokens.clone();
        let url = url.clone();
        let did = info.daemon_id.clone();
        move |i| {
            let keys = keys.clone();
            let tokens = tokens.clone();
            let client = fresh.clone();
            let url = url.clone();
            let did = did.clone();
            async move {
                let (id, k) = &keys[i % keys.len()];
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or(0);
                let proof = k.proof(id, &did, ProofEndpoint::Provision, now);
                let a = post_json(
                    &client,
                    &format!("{url}{}", paths::PROVISION),
                    &k.request(id, proof),
                )
                .await?;
                if a.status != 200 {
                    bail!("HTTP {}: {}", a.status, a.body);
                }
                if let Ok(mut t) = tokens.lock() {
                    t[i % keys.len()] = Some(a.token().to_string());
                }
                Ok(())
            }
        }
    })
    .await?;
    println!("{r}");

    // Phase 2: renewals over keep-alive connections.
    let pooled = idprov_tests::pinned_client(&ca);
    let r = phase("renew (keep-alive, ES256 proof)", &args, pid, {
        let keys = keys.clone();
        let tokens = tokens.clone();
        let url = url.clone();
        let did = info.daemon_id.clone();
        move |i| {
            let keys = keys.clone();
            let tokens = tokens.clone();
            let client = pooled.clone();
            let url = url.clone();
            let did = did.clone();
            async move {
                let n = keys.len();
                let (id, k) = &keys[i % n];
                let Some(token) = tokens.lock().ok().and_then(|t| t[i % n].clone()) else {
                    bail!("device {id} has no token to renew");
                };
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or(0);
                let proof = k.proof(id, &did, ProofEndpoint::Renew, now);
                let a = post_json(
                    &client,
                    &format!("{url}{}", paths::RENEW),
                    &serde_json::json!({"token": token, "proof": proof}),
                )
                .await?;
                if a.status != 200 {
                    bail!("HTTP {}: {}", a.status, a.body);
                }
                if let Ok(mut t) = tokens.lock() {
                    t[i % n] = Some(a.token().to_string());
                }
                Ok(())
            }
        }
    })
    .await?;
    println!("{r}");
    println!(
        "idprovd RSS after load: {:.1} MiB (peak {:.1} MiB)",
        proc_status(pid, "VmRSS:").unwrap_or(0) as f64 / 1024.0,
        proc_status(pid, "VmHWM:").unwrap_or(0) as f64 / 1024.0
    );
    drop(proc);
    Ok(())
}

async fn phase<F, Fut>(name: &str, args: &Args, pid: u32, job: F) -> Result<String>
where
    F: Fn(usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Failures::default());
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let cpu0 = cpu_secs(pid);
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (next, failures, job) = (next.clone(), failures.clone(), job.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let s = Instant::now();
                failures.note(&mut lat, s, job(i).await);
            }
            lat
        }));
    }
    let lat = latencies(tasks).await?;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_secs(pid) - cpu0;
    let n = lat.len();
    let mut s = format!(
        "{name}: {n} ok in {wall:.1}s = {:.0}/s wall, {:.0}/s per daemon CPU-second (daemon used {:.2} cores); p50 {:.2} ms, p99 {:.2} ms; errors {}",
        n as f64 / wall,
        if cpu > 0.0 { n as f64 / cpu } else { 0.0 },
        cpu / wall,
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        failures.count()
    );
    if let Some(e) = failures.first() {
        s.push_str(&format!(" (first error: {e})"));
    }
    Ok(s)
}
