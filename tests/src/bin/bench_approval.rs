//! Approval latency with many devices waiting on their requests (protocol
//! §5.5): how long from an administrator's decision (the admin API call the
//! TUI's key press makes) until the device holds its token, with N devices
//! waiting at once; then a bulk approval of all of them, and the memory the
//! waiting costs.
//!
//!   cargo build --release -p idprov-tests --bin bench_approval
//!   ulimit -n 8192   # two descriptors per waiting device (both ends here)
//!   target/release/bench_approval [--devices 1000] [--singles 50]
//!
//! Daemon and devices run in this one process (the daemon in-process, as
//! the tests start it; devices over HTTPS on loopback, each on its own
//! connection): the RSS figure covers both sides and is an upper bound for
//! the daemon's share.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use idprov_proto::admin::ListQuery;
use idprov_proto::device::{ProofEndpoint, paths};
use idprov_tests::{DeviceKey, TestDaemon};
use tokio::sync::oneshot;

#[derive(Parser)]
struct Args {
    /// Devices waiting at once.
    #[arg(long, default_value_t = 1000)]
    devices: usize,
    /// Single approvals timed one by one (the rest are approved in bulk).
    #[arg(long, default_value_t = 50)]
    singles: usize,
    /// Concurrent admin calls in the bulk approval.
    #[arg(long, default_value_t = 8)]
    admin_concurrency: usize,
}

/// Each device's outcome: the instant it held its token.
type Done = oneshot::Receiver<Result<Instant>>;

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.singles >= args.devices {
        bail!("--singles must be below --devices");
    }
    let n = args.devices;
    let d = TestDaemon::start_with(|c| {
        c.rate_limit.enabled = false;
        c.pending.max_waiters = n + 16;
        c.pending.max_waiters_per_source = n + 16;
        c.pending.max_wait = Duration::from_secs(120);
        c.pending.retry_after = Duration::from_secs(300);
        c.limits.max_connections = 2 * n + 64;
        c.limits.max_connections_per_source = 2 * n + 64;
    })
    .await?;
    let rss_before = rss_kib()?;
    let http = d.http();

    // Every device: its first request makes it pending (answered at once),
    // its second waits; its task reports when it holds a token.
    let mut done: Vec<(String, Done)> = Vec::with_capacity(n);
    for i in 0..n {
        let id = format!("wait-{i:05}");
        let (tx, rx) = oneshot::channel();
        let (http, url, daemon_id, key) = (
            http.clone(),
            d.endpoint(paths::PROVISION),
            d.daemon_id(),
            DeviceKey::es256(),
        );
        let clock = d.clock.clone();
        let dev = id.clone();
        tokio::spawn(async move {
            let r = async {
                loop {
                    let now = idprovd::Clock::now(&clock);
                    let proof = key.proof(&dev, &daemon_id, ProofEndpoint::Provision, now);
                    let resp = http
                        .post(&url)
                        .header("prefer", "wait=120")
                        .json(&key.request(&dev, proof))
                        .send()
                        .await?;
                    match resp.status().as_u16() {
                        200 => return Ok(Instant::now()),
                        202 => continue,
                        s => bail!("{dev}: HTTP {s}: {}", resp.text().await?),
                    }
                }
            }
            .await;
            let _ = tx.send(r);
        });
        done.push((id, rx));
    }
    let admin = Arc::new(d.admin()?);
    let t = Instant::now();
    loop {
        let held = d.daemon.devices.waiters.count();
        if held >= n {
            break;
        }
        if t.elapsed() > Duration::from_secs(300) {
            // A device that gave up says why.
            for (_, rx) in &mut done {
                if let Ok(Err(e)) = rx.try_recv() {
                    bail!("only {held} of {n} devices waiting after 300 s; a device failed: {e:#}");
                }
            }
            bail!("only {held} of {n} devices waiting after 300 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rss_waiting = rss_kib()?;
    println!(
        "{n} devices waiting after {:.1} s; RSS {} → {} KiB: {:.1} KiB per waiting device (daemon and device side together)",
        t.elapsed().as_secs_f64(),
        rss_before,
        rss_waiting,
        (rss_waiting.saturating_sub(rss_before)) as f64 / n as f64
    );

    let revisions = revisions(&admin).await?;
    // One by one: decision → token, the others still waiting.
    let mut lat = Vec::new();
    let mut rest = done.split_off(args.singles);
    for (id, rx) in done {
        let rev = *revisions.get(&id).context("not pending")?;
        let start = Instant::now();
        admin.approve(&id.parse()?, rev).await?;
        let got = rx.await.context("device task")??;
        lat.push(got.saturating_duration_since(start));
    }
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "approval → token, {} single approvals with {} waiting: median {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        lat.len(),
        n,
        ms(pct(0.5)),
        ms(pct(0.99)),
        ms(*lat.last().context("no samples")?)
    );

    // Bulk: approve all the others, admin calls `admin_concurrency` at once.
    let start = Instant::now();
    let ids: Vec<String> = rest.iter().map(|(id, _)| id.clone()).collect();
    let chunks: Vec<Vec<String>> = ids
        .chunks(ids.len().div_ceil(args.admin_concurrency))
        .map(<[String]>::to_vec)
        .collect();
    let revisions = Arc::new(revisions);
    let mut approvers = Vec::new();
    for chunk in chunks {
        let (admin, revisions) = (admin.clone(), revisions.clone());
        approvers.push(tokio::spawn(async move {
            for id in chunk {
                let rev = *revisions.get(&id).context("not pending")?;
                admin.approve(&id.parse()?, rev).await?;
            }
            anyhow::Ok(())
        }));
    }
    for a in approvers {
        a.await??;
    }
    let approved = start.elapsed();
    let mut last = start;
    for (_, rx) in rest.drain(..) {
        last = last.max(rx.await.context("device task")??);
    }
    println!(
        "bulk approval of {} waiting devices: all approved in {:.2} s, all holding tokens {:.2} s after the first approval",
        ids.len(),
        approved.as_secs_f64(),
        last.duration_since(start).as_secs_f64()
    );
    Ok(())
}

async fn revisions(
    admin: &idprov_admin_client::AdminClient,
) -> Result<std::collections::HashMap<String, u64>> {
    let mut out = std::collections::HashMap::new();
    let mut cursor = None;
    loop {
        let page = admin
            .pending_list(&ListQuery {
                limit: Some(1000),
                after: cursor.clone(),
                ..Default::default()
            })
            .await?;
        for p in &page.items {
            // A held request has recorded its poll (attempt 2) first.
            if p.attempts < 2 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                return Box::pin(revisions(admin)).await;
            }
            out.insert(p.device_id.to_string(), p.revision);
        }
        match page.next {
            Some(c) => cursor = Some(c),
            None => return Ok(out),
        }
    }
}

fn rss_kib() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmRSS")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
