//! Security figures (issue 7), on a private LAN of network namespaces (root):
//!
//! 1. time from a rogue `_idprov._tcp` advertisement to provisioning being
//!    paused (a second mdns-sd responder on another host; the pause is
//!    watched through the admin API every 10 ms);
//! 2. provisioning throughput of known (OOB-listed) devices, each from its
//!    own address, while one host floods the daemon with unknown devices,
//!    as a ratio to the throughput without the flood.
//!
//! `CARGO_TARGET_DIR=/work/target-bench cargo run --release -p idprov-tests
//!  --bin bench_security -- --rounds 5 --devices 300`

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use idprov_proto::admin::{OobEntryInput, OobUpsertRequest, ProvisioningState};
use idprov_proto::device::{ProofEndpoint, paths};
use idprov_tests::netns::{LAN_PORT, Lan, LanDaemon, NsRuntime, lan_config};
use idprov_tests::security::{RogueAdvertiser, pinned_client_from, unix_now};
use idprov_tests::{DeviceKey, oob_entry, post_json};
use idprovd::monitor::OnRogue;

#[derive(Parser)]
struct Args {
    /// Rogue advertisements to time.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Known devices provisioned in each phase (with and without flood).
    #[arg(long, default_value_t = 300)]
    devices: usize,
    /// Concurrent known devices.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Concurrent flood workers (one address, keep-alive connections).
    #[arg(long, default_value_t = 16)]
    flood_workers: usize,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let pause = rogue_to_pause(args.rounds).await?;
        let flood = flood_ratio(&args).await?;
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "rogue_to_pause_ms": pause,
                "throughput": flood,
            }))?
        );
        anyhow::Ok(())
    })
}

async fn paused(rt: &NsRuntime, d: &LanDaemon) -> Result<bool> {
    let admin = d.admin()?;
    Ok(rt
        .run(async move { admin.provisioning().await })
        .await??
        .paused)
}

async fn rogue_to_pause(rounds: usize) -> Result<serde_json::Value> {
    let lan = Lan::new(&["hub", "rogue"])?;
    let hub = lan.runtime("hub")?;
    let rogue_rt = lan.runtime("rogue")?;
    let tmp = tempfile::tempdir()?;
    let mut cfg = lan_config(&tmp.path().join("hub"), "bench-hub");
    cfg.monitor.on_rogue = OnRogue::Pause;
    let d = LanDaemon::start(&hub, cfg).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut ms = Vec::new();
    for round in 0..rounds {
        if paused(&hub, &d).await? {
            bail!("paused before the rogue appeared");
        }
        let started = Instant::now();
        let rogue = RogueAdvertiser::start(
            &rogue_rt,
            &format!("rogue-{round}"),
            &format!("rogue-{round}"),
            lan.addr("rogue"),
            LAN_PORT,
        )
        .await?;
        loop {
            if paused(&hub, &d).await? {
                break;
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("round {round}: no pause within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let took = started.elapsed().as_secs_f64() * 1000.0;
        eprintln!("round {round}: rogue advertisement to pause {took:.0} ms");
        ms.push(took);
        rogue.stop().await;
        let admin = d.admin()?;
        hub.run(async move {
            admin
                .set_provisioning(&ProvisioningState {
                    paused: false,
                    reason: Some("bench".into()),
                })
                .await
        })
        .await??;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    ms.sort_by(f64::total_cmp);
    let median = ms.get(ms.len() / 2).copied().unwrap_or(0.0);
    eprintln!(
        "rogue to pause: median {median:.0} ms, min {:.0}, max {:.0} over {rounds}",
        ms.first().copied().unwrap_or(0.0),
        ms.last().copied().unwrap_or(0.0)
    );
    Ok(serde_json::json!({ "samples": ms, "median": median }))
}

/// Addresses the known devices use on the `dev` host: 10.213.0.100 + i.
const DEVICE_ADDRS: usize = 100;

async fn flood_ratio(args: &Args) -> Result<serde_json::Value> {
    let lan = Lan::new(&["hub", "flood", "dev"])?;
    for i in 0..DEVICE_ADDRS {
        lan.ip_on(
            "dev",
            &[
                "addr",
                "add",
                &format!("10.213.0.{}/24", 100 + i),
                "dev",
                "eth0",
            ],
        )?;
    }
    let hub = lan.runtime("hub")?;
    let flood = lan.runtime("flood")?;
    let dev = lan.runtime("dev")?;
    let tmp = tempfile::tempdir()?;
    let mut cfg = lan_config(&tmp.path().join("hub"), "bench-flood");
    cfg.mdns.enabled = false;
    cfg.pending.cap = 1000;
    let d = LanDaemon::start(&hub, cfg).await?;

    let n = args.devices;
    let keys: Vec<(String, DeviceKey)> = (0..2 * n)
        .map(|i| (format!("known-{i}"), DeviceKey::es256()))
        .collect();
    for chunk in keys.chunks(1000) {
        let entries: Vec<OobEntryInput> = chunk
            .iter()
            .map(|(id, k)| oob_entry(id, Some(k), None, None))
            .collect();
        let admin = d.admin()?;
        hub.run(async move {
            admin
                .oob_upsert(&OobUpsertRequest {
                    entries,
                    replace: false,
                    dry_run: false,
                })
                .await
        })
        .await??;
    }
    let keys = Arc::new(keys);

    let quiet = known_phase(&dev, &d, keys.clone(), 0, n, args.concurrency).await?;
    eprintln!("known devices without flood: {quiet:.1}/s");

    let stop = Arc::new(AtomicBool::new(false));
    let flood_task = flood.spawn(run_flood(
        d.ca_pem.clone(),
        d.daemon_id.clone(),
        lan.addr("hub"),
        args.flood_workers,
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let flooded = known_phase(&dev, &d, keys.clone(), n, n, args.concurrency).await?;
    stop.store(true, Ordering::Relaxed);
    let (counts, flood_secs) = flood_task.await??;
    let flood_total: u64 = counts.values().sum();
    eprintln!("known devices during the flood: {flooded:.1}/s");
    eprintln!(
        "flood: {flood_total} requests in {flood_secs:.1} s ({:.0}/s), by status {counts:?}",
        flood_total as f64 / flood_secs
    );
    let admin = d.admin()?;
    let pending = hub
        .run(async move {
            admin
                .pending_list(&idprov_proto::admin::ListQuery::default())
                .await
        })
        .await??
        .total;
    let ratio = flooded / quiet;
    eprintln!("ratio during/without flood: {ratio:.2}; pending after the flood: {pending}");
    Ok(serde_json::json!({
        "known_per_sec_quiet": quiet,
        "known_per_sec_flood": flooded,
        "ratio": ratio,
        "flood_requests": flood_total,
        "flood_per_sec": flood_total as f64 / flood_secs,
        "flood_by_status": counts,
        "pending_after": pending,
        "devices_per_phase": n,
        "concurrency": args.concurrency,
    }))
}

/// Provision keys[from..from+n], `concurrency` at a time, each device on a
/// fresh connection from its own address. Returns devices per second.
async fn known_phase(
    dev: &NsRuntime,
    d: &LanDaemon,
    keys: Arc<Vec<(String, DeviceKey)>>,
    from: usize,
    n: usize,
    concurrency: usize,
) -> Result<f64> {
    let next = Arc::new(AtomicUsize::new(from));
    let end = from + n;
    let hub_addr = Ipv4Addr::new(10, 213, 0, 1);
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (next, keys) = (next.clone(), keys.clone());
        let (ca, daemon_id) = (d.ca_pem.clone(), d.daemon_id.clone());
        workers.push(dev.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    return anyhow::Ok(());
                }
                let (id, key) = &keys[i];
                let local: IpAddr =
                    Ipv4Addr::new(10, 213, 0, 100 + (i % DEVICE_ADDRS) as u8).into();
                let client = pinned_client_from(&ca, Some(local))?;
                let proof = key.proof(id, &daemon_id, ProofEndpoint::Provision, unix_now());
                let url = format!("https://{hub_addr}:{LAN_PORT}{}", paths::PROVISION);
                let a = post_json(&client, &url, &key.request(id, proof)).await?;
                if a.status != 200 {
                    bail!("{id}: HTTP {} {:?}", a.status, a.body);
                }
            }
        }));
    }
    for w in workers {
        w.await.context("worker")??;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

async fn run_flood(
    ca: String,
    daemon_id: String,
    hub: Ipv4Addr,
    workers: usize,
    stop: Arc<AtomicBool>,
) -> Result<(BTreeMap<u16, u64>, f64)> {
    let client = pinned_client_from(&ca, None)?;
    // The cheapest flood: requests signed in advance (unknown devices, each
    // valid once), sent over and over on keep-alive connections, ignoring
    // Retry-After. The attacker spends no CPU on signing while it runs.
    let key = DeviceKey::es256();
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..2000)
            .map(|i| {
                let id = format!("flood-{i}");
                let proof = key.proof(&id, &daemon_id, ProofEndpoint::Provision, unix_now());
                serde_json::to_vec(&key.request(&id, proof)).unwrap_or_default()
            })
            .collect(),
    );
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (client, bodies, stop) = (client.clone(), bodies.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut counts = BTreeMap::<u16, u64>::new();
            let mut i = w;
            let url = format!("https://{hub}:{LAN_PORT}{}", paths::PROVISION);
            // Bounded in time by the caller (stop) and in count.
            while !stop.load(Ordering::Relaxed) && i < 50_000_000 {
                i += workers;
                let body = bodies[i % bodies.len()].clone();
                let sent = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                match sent {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let _ = r.bytes().await;
                        *counts.entry(status).or_default() += 1;
                    }
                    Err(_) => *counts.entry(0).or_default() += 1,
                }
            }
            counts
        }));
    }
    let mut total = BTreeMap::<u16, u64>::new();
    for t in tasks {
        for (s, n) in t.await? {
            *total.entry(s).or_default() += n;
        }
    }
    Ok((total, started.elapsed().as_secs_f64()))
}
