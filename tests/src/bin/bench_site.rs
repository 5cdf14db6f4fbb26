//! Provisioning and renewals per second on the two storage backends, in one
//! run: redb (one daemon), PostgreSQL with one daemon, and PostgreSQL with
//! two daemons of one site (requests spread over both). The daemons run in
//! this process (port 0, loopback); PostgreSQL is a throwaway cluster
//! started by this command (initdb/pg_ctl, Unix socket), stopped at the end.
//!
//!   cargo run -p idprov-tests --bin bench_site -- [--devices 300] [--concurrency 16]
//!
//! Each phase sends a fixed number of requests (one per device) from
//! `--concurrency` tasks over keep-alive connections: provisioning of
//! pre-approved devices (ES256 proof, token issued), then one renewal each.
//! Prints requests per second (wall) and p50/p99 latency per phase.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Parser;
use idprov_proto::admin::{MAX_OOB_BATCH, OobUpsertRequest};
use idprov_proto::device::{ProofEndpoint, paths};
use idprov_tests::bench::pct;
use idprov_tests::site::PgSite;
use idprov_tests::{DeviceKey, TestDaemon, oob_entry, post_json};

#[derive(Parser)]
struct Args {
    /// Pre-approved devices: one provisioning and one renewal each.
    #[arg(long, default_value_t = 300)]
    devices: usize,
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    let keys: Arc<Vec<(String, DeviceKey)>> = Arc::new(
        (0..args.devices)
            .map(|i| (format!("bench-{i:05}"), DeviceKey::es256()))
            .collect(),
    );
    println!(
        "{} devices, concurrency {}, debug={}",
        args.devices,
        args.concurrency,
        cfg!(debug_assertions)
    );

    let redb = TestDaemon::start().await?;
    bench("redb, 1 daemon", &args, &keys, &[&redb]).await?;
    drop(redb);

    let site = PgSite::start().await?;
    let one = site.first().await?;
    bench("postgres, 1 daemon", &args, &keys, &[&one]).await?;
    drop(one);

    let site2 = PgSite::start().await?;
    let a = site2.first().await?;
    let b = site2.join(&a).await?;
    bench("postgres, 2 daemons", &args, &keys, &[&a, &b]).await?;
    Ok(())
}

async fn bench(
    name: &str,
    args: &Args,
    keys: &Arc<Vec<(String, DeviceKey)>>,
    daemons: &[&TestDaemon],
) -> Result<()> {
    let admin = daemons[0].admin()?;
    for chunk in keys.chunks(MAX_OOB_BATCH) {
        admin
            .oob_upsert(&OobUpsertRequest {
                entries: chunk
                    .iter()
                    .map(|(id, k)| oob_entry(id, Some(k), None, None))
                    .collect(),
                replace: false,
                dry_run: false,
            })
            .await?;
    }
    let targets: Arc<Vec<(reqwest::Client, String, String, i64)>> = Arc::new(
        daemons
            .iter()
            .map(|d| (d.http(), d.url.clone(), d.daemon_id(), d.now()))
            .collect(),
    );
    let tokens: Arc<std::sync::Mutex<Vec<Option<String>>>> =
        Arc::new(std::sync::Mutex::new(vec![None; keys.len()]));

    let provision = phase(args, keys.len(), {
        let (keys, targets, tokens) = (keys.clone(), targets.clone(), tokens.clone());
        move |i| {
            let (keys, targets, tokens) = (keys.clone(), targets.clone(), tokens.clone());
            async move {
                let (id, k) = &keys[i];
                let (client, url, did, now) = &targets[i % targets.len()];
                let proof = k.proof(id, did, ProofEndpoint::Provision, *now);
                let a = post_json(
                    client,
                    &format!("{url}{}", paths::PROVISION),
                    &k.request(id, proof),
                )
                .await?;
                if a.status != 200 {
                    bail!("provision HTTP {}: {}", a.status, a.body);
                }
                if let Ok(mut t) = tokens.lock() {
                    t[i] = Some(a.token().to_string());
                }
                Ok(())
            }
        }
    })
    .await?;
    let renew = phase(args, keys.len(), {
        let (keys, targets, tokens) = (keys.clone(), targets.clone(), tokens.clone());
        move |i| {
            let (keys, targets, tokens) = (keys.clone(), targets.clone(), tokens.clone());
            async move {
                let (id, k) = &keys[i];
                // Renew at the other daemon than the one that issued.
                let (client, url, did, now) = &targets[(i + 1) % targets.len()];
                let Some(token) = tokens.lock().ok().and_then(|t| t[i].clone()) else {
                    bail!("{id} has no token");
                };
                let proof = k.proof(id, did, ProofEndpoint::Renew, *now);
                let a = post_json(
                    client,
                    &format!("{url}{}", paths::RENEW),
                    &serde_json::json!({"token": token, "proof": proof}),
                )
                .await?;
                if a.status != 200 {
                    bail!("renew HTTP {}: {}", a.status, a.body);
                }
                Ok(())
            }
        }
    })
    .await?;
    println!("{name:<22} provision {provision}");
    println!("{name:<22} renew     {renew}");
    Ok(())
}

/// Run `job(0..n)` from `concurrency` tasks; "N/s p50 p99" of the phase.
async fn phase<F, Fut>(args: &Args, n: usize, job: F) -> Result<String>
where
    F: Fn(usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (next, job) = (next.clone(), job.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, anyhow::Error>(lat);
                }
                let t = Instant::now();
                job(i).await?;
                lat.push(t.elapsed());
            }
        }));
    }
    let mut lat: Vec<Duration> = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    let wall = started.elapsed().as_secs_f64();
    lat.sort();
    Ok(format!(
        "{:>8.1}/s  p50 {:>6.1} ms  p99 {:>6.1} ms  ({} requests)",
        lat.len() as f64 / wall,
        pct(&lat, 0.50),
        pct(&lat, 0.99),
        lat.len()
    ))
}
