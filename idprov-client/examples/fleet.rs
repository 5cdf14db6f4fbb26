//! N simulated devices in one process, for load and soak runs against one
//! daemon. Each device has its own key, TLS connection and client.
//!
//! ```text
//! cargo run --release -p idprov-client --example fleet -- --count 1000 \
//!     --server https://127.0.0.1:8445 --ca-fingerprint FP \
//!     --admin-profile admin.profile --renewals 2 [--soak 60s]
//! ```
//!
//! Phases: keys are generated; with `--admin-profile` the devices are listed
//! out of band (their public keys) so they are pre-approved; then all devices
//! provision concurrently, then each renews `--renewals` times back to back;
//! with `--soak` every device then runs a keeper (renewal at half-life) for
//! that long. Latencies are per call; "retries" counts every attempt the
//! client had to repeat (429/503/network), "errors" the calls that failed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use idprov_client::{Client, Event, KeySigner, Signer, Trust};
use idprov_proto::admin::{OobEntryInput, OobUpsertRequest};
use tokio::sync::Semaphore;

#[derive(Parser, Debug)]
#[command(about = "Simulate a fleet of idprov devices")]
struct Args {
    #[arg(long, default_value_t = 100)]
    count: usize,
    #[arg(long)]
    server: String,
    #[arg(long, conflicts_with = "ca_file")]
    ca_fingerprint: Option<String>,
    #[arg(long)]
    ca_file: Option<std::path::PathBuf>,
    /// Admin profile used to pre-approve the fleet (OOB entries by key).
    #[arg(long)]
    admin_profile: Option<std::path::PathBuf>,
    /// Device ID prefix; devices are PREFIX-00000 ...
    #[arg(long, default_value = "fleet")]
    prefix: String,
    /// Devices provisioning or renewing at the same time.
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
    /// Renewals per device after provisioning, back to back.
    #[arg(long, default_value_t = 1)]
    renewals: usize,
    /// Then run a keeper on every device for this long.
    #[arg(long, value_parser = humantime::parse_duration)]
    soak: Option<Duration>,
}

#[derive(Default)]
struct Counters {
    retries: AtomicU64,
    renewed_by_keeper: AtomicU64,
    reauth: AtomicU64,
    revoked: AtomicU64,
}

struct Phase {
    name: &'static str,
    latencies: Vec<Duration>,
    errors: Vec<String>,
    wall: Duration,
}

impl Phase {
    fn report(&mut self) {
        self.latencies.sort();
        let pct = |p: f64| {
            if self.latencies.is_empty() {
                return Duration::ZERO;
            }
            let i =
                ((self.latencies.len() as f64 * p).ceil() as usize).clamp(1, self.latencies.len());
            self.latencies[i - 1]
        };
        let ok = self.latencies.len();
        println!(
            "{}: ok={ok} errors={} wall={:.2}s throughput={:.0}/s p50={:.1}ms p99={:.1}ms max={:.1}ms",
            self.name,
            self.errors.len(),
            self.wall.as_secs_f64(),
            ok as f64 / self.wall.as_secs_f64().max(1e-9),
            pct(0.50).as_secs_f64() * 1e3,
            pct(0.99).as_secs_f64() * 1e3,
            pct(1.0).as_secs_f64() * 1e3,
        );
        for e in self.errors.iter().take(5) {
            println!("  error: {e}");
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let trust = match (&args.ca_fingerprint, &args.ca_file) {
        (Some(fp), None) => Trust::CaFingerprint(fp.clone()),
        (None, Some(p)) => Trust::CaCertPem(std::fs::read_to_string(p)?),
        _ => bail!("give --ca-fingerprint or --ca-file"),
    };

    let t = Instant::now();
    let mut signers = Vec::with_capacity(args.count);
    for _ in 0..args.count {
        signers.push(Arc::new(KeySigner::generate_p256()?.0));
    }
    println!(
        "keys: {} generated in {:.2}s",
        args.count,
        t.elapsed().as_secs_f64()
    );
    let ids: Vec<String> = (0..args.count)
        .map(|i| format!("{}-{i:05}", args.prefix))
        .collect();

    if let Some(profile) = &args.admin_profile {
        let admin = idprov_admin_client::AdminClient::from_profile_path(Some(profile))?;
        let t = Instant::now();
        for chunk in ids.iter().zip(&signers).collect::<Vec<_>>().chunks(500) {
            let entries = chunk
                .iter()
                .map(|(id, s)| {
                    Ok(OobEntryInput {
                        device_id: id.parse()?,
                        public_key: Some(s.public_key().pem().to_string()),
                        key_format: Some(s.public_key().format()),
                        mac: None,
                        secret: None,
                        setup_verifier: None,
                        expires_at: None,
                        note: Some("fleet example".into()),
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            admin
                .oob_upsert(&OobUpsertRequest {
                    entries,
                    replace: true,
                    dry_run: false,
                })
                .await
                .context("uploading OOB entries")?;
        }
        println!(
            "oob: {} entries uploaded in {:.2}s",
            ids.len(),
            t.elapsed().as_secs_f64()
        );
    }

    let counters = Arc::new(Counters::default());
    let mut clients = Vec::with_capacity(args.count);
    for (id, signer) in ids.iter().zip(signers) {
        let c = counters.clone();
        clients.push(
            Client::builder()
                .device_id(id.as_str())
                .signer(signer)
                .trust(trust.clone())
                .server(&args.server)
                .mac(None)
                .on_event(move |e| match e {
                    Event::RetryScheduled { .. } => {
                        c.retries.fetch_add(1, Ordering::Relaxed);
                    }
                    Event::Renewed { .. } => {
                        c.renewed_by_keeper.fetch_add(1, Ordering::Relaxed);
                    }
                    Event::Reauthenticating { .. } => {
                        c.reauth.fetch_add(1, Ordering::Relaxed);
                    }
                    Event::Revoked { .. } => {
                        c.revoked.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                })
                .build()?,
        );
    }

    let sem = Arc::new(Semaphore::new(args.concurrency.max(1)));
    // Phase 1: provision everyone.
    let t = Instant::now();
    let mut tasks = Vec::new();
    for client in &clients {
        let client = client.clone();
        let sem = sem.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await;
            let t = Instant::now();
            let r = tokio::time::timeout(Duration::from_secs(120), client.provision()).await;
            (t.elapsed(), r)
        }));
    }
    let mut phase = Phase {
        name: "provision",
        latencies: Vec::new(),
        errors: Vec::new(),
        wall: Duration::ZERO,
    };
    let mut creds = Vec::with_capacity(args.count);
    for task in tasks {
        match task.await? {
            (d, Ok(Ok(c))) => {
                phase.latencies.push(d);
                creds.push(Some(c));
            }
            (_, Ok(Err(e))) => {
                phase.errors.push(e.to_string());
                creds.push(None);
            }
            (_, Err(_)) => {
                phase.errors.push("timed out after 120 s".into());
                creds.push(None);
            }
        }
    }
    phase.wall = t.elapsed();
    phase.report();

    // Phase 2: renewals, back to back.
    if args.renewals > 0 {
        let t = Instant::now();
        let mut tasks = Vec::new();
        for (client, c) in clients.iter().cloned().zip(creds.iter().cloned()) {
            let Some(mut c) = c else { continue };
            let sem = sem.clone();
            let n = args.renewals;
            tasks.push(tokio::spawn(async move {
                let mut out = Vec::new();
                for _ in 0..n {
                    let _permit = sem.acquire().await;
                    let t = Instant::now();
                    match client.renew(&c).await {
                        Ok(next) => {
                            out.push(Ok(t.elapsed()));
                            c = next;
                        }
                        Err(e) => out.push(Err(e.to_string())),
                    }
                }
                out
            }));
        }
        let mut phase = Phase {
            name: "renew",
            latencies: Vec::new(),
            errors: Vec::new(),
            wall: Duration::ZERO,
        };
        for task in tasks {
            for r in task.await? {
                match r {
                    Ok(d) => phase.latencies.push(d),
                    Err(e) => phase.errors.push(e),
                }
            }
        }
        phase.wall = t.elapsed();
        phase.report();
    }

    // Phase 3: keepers for a while.
    if let Some(soak) = args.soak {
        counters.renewed_by_keeper.store(0, Ordering::Relaxed);
        let before_retries = counters.retries.load(Ordering::Relaxed);
        let mut keepers = Vec::new();
        for client in &clients {
            if let Ok(k) = client.start().await {
                keepers.push(k);
            }
        }
        println!("soak: {} keepers running for {soak:?}", keepers.len());
        tokio::time::sleep(soak).await;
        println!(
            "soak: renewals={} reauth={} revoked={} retries={}",
            counters.renewed_by_keeper.load(Ordering::Relaxed),
            counters.reauth.load(Ordering::Relaxed),
            counters.revoked.load(Ordering::Relaxed),
            counters.retries.load(Ordering::Relaxed) - before_retries,
        );
    }
    println!("retries: {}", counters.retries.load(Ordering::Relaxed));
    Ok(())
}
