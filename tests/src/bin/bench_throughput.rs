//! Throughput of the device API's hot paths against the real release
//! binary, one workload at a time, as an A/B of several binaries.
//!
//!   CARGO_TARGET_DIR=… cargo build --release -p idprovd -p idprov-tests
//!   …/release/bench_throughput --idprovd OLD --idprovd NEW \
//!       [--workloads issue,renew,fresh] [--conns 1,4,16,64] [--seconds 5] [--rounds 3]
//!
//! Workloads (devices are pre-approved by OOB key and provisioned once):
//! - `issue`: provisioning of a known device with proof + CSR → token and
//!   certificate, keep-alive connections;
//! - `renew`: token + proof → token, keep-alive;
//! - `fresh`: provisioning (proof, no CSR) with a full TLS handshake per
//!   request (no resumption).
//!
//! Each (round, workload, binary) gets a fresh daemon; the binaries take
//! turns within a round. One line per phase: requests/s, p50/p99, the
//! daemon's CPU per request (utime+stime from /proc/PID/stat), its RSS,
//! durable commits per request and their mean latency, and the batch-size
//! distribution when the binary exports `idprov_store_batch_size`. The
//! medians over the rounds follow, with the load average.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::{Parser, ValueEnum};
use idprov_proto::admin::{MAX_OOB_BATCH, OobUpsertRequest};
use idprov_proto::device::{ProofEndpoint, paths};
use idprov_tests::bench::{
    BenchDaemon, Failures, cpu_secs, fresh_tls_client, latencies, pct, proc_status,
};
use idprov_tests::{DeviceKey, oob_entry, post_json};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
enum Workload {
    Issue,
    Renew,
    Fresh,
}

#[derive(Parser)]
struct Args {
    /// idprovd binaries to compare (default: the one next to this one).
    #[arg(long)]
    idprovd: Vec<PathBuf>,
    #[arg(long, value_delimiter = ',', default_values = ["issue", "renew", "fresh"])]
    workloads: Vec<Workload>,
    /// Client connections (concurrent requests) of each phase.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 4, 16, 64])]
    conns: Vec<usize>,
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Pre-approved devices the requests take turns with.
    #[arg(long, default_value_t = 1000)]
    devices: usize,
    /// A data dir (from `bench_ops --fill-only`) each daemon starts from a
    /// copy of, instead of an empty one.
    #[arg(long)]
    prefilled: Option<PathBuf>,
}

/// One phase's figures.
#[derive(Clone, Default)]
struct Figures {
    rps: f64,
    p50: f64,
    p99: f64,
    cpu_us: f64,
    rss_mib: f64,
    commits_per_req: f64,
    commit_ms: f64,
    errors: usize,
    batches: String,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    let bins: Vec<Option<PathBuf>> = if args.idprovd.is_empty() {
        vec![None]
    } else {
        args.idprovd.iter().cloned().map(Some).collect()
    };
    let label = |b: &Option<PathBuf>| {
        b.as_ref()
            .map_or("idprovd".to_string(), |p| p.display().to_string())
    };
    eprintln!("generating {} device keys and CSRs...", args.devices);
    let keys: Arc<Vec<Device>> = Arc::new(
        (0..args.devices)
            .map(|i| Device::new(format!("tp-{i:06}")))
            .collect::<Result<_>>()?,
    );
    println!("load before: {}", loadavg());
    let mut all: BTreeMap<(Workload, usize, usize), Vec<Figures>> = BTreeMap::new();
    for round in 0..args.rounds {
        for &w in &args.workloads {
            for (bi, bin) in bins.iter().enumerate() {
                let d = BenchDaemon::start_from(
                    bin.as_deref(),
                    &[("IDPROVD_TOKENS__LIFETIME", "1h")],
                    args.prefilled.as_deref(),
                )?;
                tokio::time::sleep(Duration::from_millis(500)).await;
                let idle = proc_status(d.pid, "VmRSS:").unwrap_or(0) as f64 / 1024.0;
                let bench = Bench::setup(&d, keys.clone()).await?;
                for &c in &args.conns {
                    let f = bench.phase(w, c, args.seconds).await?;
                    println!(
                        "round {round} {w:?} {} conns={c}: {:.0}/s p50 {:.2} ms p99 {:.2} ms, {:.0} µs CPU/req, RSS {:.1} MiB (idle {idle:.1}), {:.2} commits/req at {:.2} ms, errors {}{}",
                        label(bin),
                        f.rps,
                        f.p50,
                        f.p99,
                        f.cpu_us,
                        f.rss_mib,
                        f.commits_per_req,
                        f.commit_ms,
                        f.errors,
                        f.batches
                    );
                    all.entry((w, c, bi)).or_default().push(f);
                }
            }
        }
    }
    println!("load after: {}", loadavg());
    println!("medians over {} round(s):", args.rounds);
    for ((w, c, bi), fs) in &all {
        let med = |g: fn(&Figures) -> f64| {
            let mut v: Vec<f64> = fs.iter().map(g).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        println!(
            "{w:?} conns={c} {}: {:.0}/s p50 {:.2} ms p99 {:.2} ms {:.0} µs CPU/req RSS {:.1} MiB {:.2} commits/req",
            label(&bins[*bi]),
            med(|f| f.rps),
            med(|f| f.p50),
            med(|f| f.p99),
            med(|f| f.cpu_us),
            med(|f| f.rss_mib),
            med(|f| f.commits_per_req),
        );
    }
    Ok(())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

struct Device {
    id: String,
    key: DeviceKey,
    csr: String,
}

impl Device {
    fn new(id: String) -> Result<Device> {
        let key = DeviceKey::es256();
        let csr = idprov_tests::x509::csr(&key, &id)?;
        Ok(Device { id, key, csr })
    }
}

/// A daemon with every device provisioned once.
struct Bench {
    pid: u32,
    url: String,
    metrics_url: String,
    did: String,
    pooled: reqwest::Client,
    fresh: reqwest::Client,
    devices: Arc<Vec<Device>>,
    tokens: Arc<Vec<std::sync::Mutex<String>>>,
}

impl Bench {
    async fn setup(d: &BenchDaemon, devices: Arc<Vec<Device>>) -> Result<Bench> {
        let profile = d.admin_profile()?;
        let admin = idprov_admin_client::AdminClient::new(&profile)?;
        let ca = profile.ca_cert.clone();
        let pooled = idprov_tests::pinned_client(&ca);
        let info: idprov_proto::device::InfoResponse = pooled
            .get(format!("{}{}", d.url, paths::INFO))
            .send()
            .await?
            .json()
            .await?;
        for chunk in devices.chunks(MAX_OOB_BATCH) {
            let entries = chunk
                .iter()
                .map(|dv| oob_entry(&dv.id, Some(&dv.key), None, None))
                .collect();
            admin
                .oob_upsert(&OobUpsertRequest {
                    entries,
                    replace: false,
                    dry_run: false,
                })
                .await?;
        }
        let b = Bench {
            pid: d.pid,
            url: d.url.clone(),
            metrics_url: d.metrics_url.clone(),
            did: info.daemon_id,
            fresh: fresh_tls_client(&ca)?,
            pooled,
            tokens: Arc::new(
                (0..devices.len())
                    .map(|_| std::sync::Mutex::new(String::new()))
                    .collect(),
            ),
            devices,
        };
        // Admit every device once (their first token).
        let next = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (b, next) = (b.clone_handles(), next.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= b.devices.len() {
                        return Ok::<_, anyhow::Error>(());
                    }
                    b.provision(&b.pooled, i, false).await?;
                }
            }));
        }
        for t in tasks {
            t.await??;
        }
        Ok(b)
    }

    fn clone_handles(&self) -> Bench {
        Bench {
            pid: self.pid,
            url: self.url.clone(),
            metrics_url: self.metrics_url.clone(),
            did: self.did.clone(),
            pooled: self.pooled.clone(),
            fresh: self.fresh.clone(),
            devices: self.devices.clone(),
            tokens: self.tokens.clone(),
        }
    }

    async fn provision(&self, client: &reqwest::Client, i: usize, csr: bool) -> Result<()> {
        let dv = &self.devices[i % self.devices.len()];
        let proof = dv
            .key
            .proof(&dv.id, &self.did, ProofEndpoint::Provision, now());
        let mut req = dv.key.request(&dv.id, proof);
        if csr {
            req.csr = Some(dv.csr.clone());
        }
        let a = post_json(client, &format!("{}{}", self.url, paths::PROVISION), &req).await?;
        if a.status != 200 {
            bail!("provision HTTP {}: {}", a.status, a.body);
        }
        if csr && a.body["certificate"].as_str().is_none() {
            bail!("no certificate in the answer");
        }
        self.keep_token(i, a.token());
        Ok(())
    }

    async fn renew(&self, i: usize) -> Result<()> {
        let n = self.devices.len();
        let dv = &self.devices[i % n];
        let token = self.tokens[i % n]
            .lock()
            .map(|t| t.clone())
            .map_err(|_| anyhow::anyhow!("poisoned"))?;
        let proof = dv.key.proof(&dv.id, &self.did, ProofEndpoint::Renew, now());
        let a = post_json(
            &self.pooled,
            &format!("{}{}", self.url, paths::RENEW),
            &serde_json::json!({"token": token, "proof": proof}),
        )
        .await?;
        if a.status != 200 {
            bail!("renew HTTP {}: {}", a.status, a.body);
        }
        self.keep_token(i, a.token());
        Ok(())
    }

    fn keep_token(&self, i: usize, token: &str) {
        if let Ok(mut t) = self.tokens[i % self.devices.len()].lock() {
            *t = token.to_string();
        }
    }

    async fn metrics(&self) -> Result<String> {
        Ok(self
            .pooled
            .get(&self.metrics_url)
            .send()
            .await?
            .text()
            .await?)
    }

    /// `conns` tasks run `w` for `seconds`; each task takes its own devices
    /// (i ≡ task mod conns) so that no two requests race for one token.
    async fn phase(&self, w: Workload, conns: usize, seconds: u64) -> Result<Figures> {
        let m0 = Scrape::parse(&self.metrics().await?);
        let failures = Arc::new(Failures::default());
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let cpu0 = cpu_secs(self.pid);
        let t0 = Instant::now();
        let per_task = (self.devices.len() / conns).max(1);
        let mut tasks = Vec::new();
        for t in 0..conns {
            let (b, failures) = (self.clone_handles(), failures.clone());
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut k = 0usize;
                while Instant::now() < deadline {
                    let i = t + conns * (k % per_task);
                    k += 1;
                    let s = Instant::now();
                    let r = match w {
                        Workload::Issue => b.provision(&b.pooled, i, true).await,
                        Workload::Renew => b.renew(i).await,
                        Workload::Fresh => b.provision(&b.fresh, i, false).await,
                    };
                    failures.note(&mut lat, s, r);
                }
                lat
            }));
        }
        let lat = latencies(tasks).await?;
        let wall = t0.elapsed().as_secs_f64();
        let cpu = cpu_secs(self.pid) - cpu0;
        let m1 = Scrape::parse(&self.metrics().await?);
        let n = lat.len().max(1) as f64;
        let commits = m1.commits - m0.commits;
        let mut batches = String::new();
        if !m1.batch.is_empty() {
            batches.push_str("; batch sizes");
            let mut below = 0.0;
            let total = m1.batch_count - m0.batch_count;
            for (le, c1) in &m1.batch {
                let c0 = m0.batch.get(le).copied().unwrap_or(0.0);
                let share = c1 - c0 - below;
                below = c1 - c0;
                if share > 0.0 && total > 0.0 {
                    batches.push_str(&format!(" ≤{le}:{:.0}%", 100.0 * share / total));
                }
            }
            if total > 0.0 {
                batches.push_str(&format!(
                    " (mean {:.1})",
                    (m1.batch_sum - m0.batch_sum) / total
                ));
            }
        }
        if let Some(e) = failures.first() {
            batches.push_str(&format!("; first error: {e}"));
        }
        Ok(Figures {
            rps: lat.len() as f64 / wall,
            p50: pct(&lat, 0.5),
            p99: pct(&lat, 0.99),
            cpu_us: cpu * 1e6 / n,
            rss_mib: proc_status(self.pid, "VmRSS:").unwrap_or(0) as f64 / 1024.0,
            commits_per_req: commits / n,
            commit_ms: if commits > 0.0 {
                1000.0 * (m1.commit_sum - m0.commit_sum) / commits
            } else {
                0.0
            },
            errors: failures.count(),
            batches,
        })
    }
}

/// The counters of one /metrics scrape this benchmark reads.
#[derive(Default)]
struct Scrape {
    commits: f64,
    commit_sum: f64,
    /// Cumulative `idprov_store_batch_size` buckets by upper bound.
    batch: BTreeMap<u64, f64>,
    batch_count: f64,
    batch_sum: f64,
}

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut s = Scrape::default();
        for line in text.lines() {
            let Some((name, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(v) = value.parse::<f64>() else {
                continue;
            };
            match name {
                "idprov_store_commit_seconds_count" => s.commits = v,
                "idprov_store_commit_seconds_sum" => s.commit_sum = v,
                "idprov_store_batch_size_count" => s.batch_count = v,
                "idprov_store_batch_size_sum" => s.batch_sum = v,
                _ => {
                    if let Some(le) = name
                        .strip_prefix("idprov_store_batch_size_bucket{le=\"")
                        .and_then(|r| r.strip_suffix("\"}"))
                        .and_then(|le| le.parse::<f64>().ok())
                    {
                        s.batch.insert(le as u64, v);
                    }
                }
            }
        }
        s
    }
}
