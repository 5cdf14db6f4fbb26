//! Benchmark of the X.509 lifecycle.
//!
//!   CARGO_TARGET_DIR=/work/target-bench cargo build --release -p idprovd -p idprov-tests
//!   /work/target-bench/release/bench_x509 [--devices 1000] [--concurrency 32] [--seconds 10]
//!       [--crl-serials 100000]
//!
//! 1. Certificate issuance against the real release daemon: each request is
//!    a provisioning with an ES256 proof and a CSR, on a fresh TLS connection
//!    (full handshake, no resumption). Prints issuances per second (wall and
//!    per daemon CPU-second) and p50/p99 latency.
//! 2. CRL regeneration with `--crl-serials` revoked certificates, in process
//!    through the daemon library on a real redb store: read the entries,
//!    sign, store and commit durably, as a revocation does.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Parser;
use idprov_proto::admin::{MAX_OOB_BATCH, OobUpsertRequest};
use idprov_proto::device::{ProofEndpoint, paths};
use idprov_tests::bench::{BenchDaemon, cpu_secs, pct};
use idprov_tests::{DeviceKey, oob_entry, post_json};
use idprovd::store::{CertRecord, RedbStore};

#[derive(Parser)]
struct Args {
    /// Pre-approved devices (requests cycle over them).
    #[arg(long, default_value_t = 1000)]
    devices: usize,
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Length of the timed issuance phase.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Revoked serials in the CRL phase (0 skips it).
    #[arg(long, default_value_t = 100_000)]
    crl_serials: usize,
    /// Skip the issuance phase.
    #[arg(long)]
    crl_only: bool,
    /// The idprovd binary (default: next to this one).
    #[arg(long)]
    idprovd: Option<std::path::PathBuf>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if !args.crl_only {
        rt.block_on(issuance(&args))?;
    }
    if args.crl_serials > 0 {
        crl_phase(args.crl_serials)?;
    }
    Ok(())
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

async fn issuance(args: &Args) -> Result<()> {
    let proc = BenchDaemon::start(args.idprovd.as_deref(), &[])?;
    let (pid, url) = (proc.pid, proc.url.clone());
    let profile = proc.admin_profile()?;
    let admin = idprov_admin_client::AdminClient::new(&profile)?;
    let ca = profile.ca_cert.clone();
    let info: idprov_proto::device::InfoResponse = idprov_tests::pinned_client(&ca)
        .get(format!("{url}{}", paths::INFO))
        .send()
        .await?
        .json()
        .await?;

    eprintln!("generating {} device keys and CSRs...", args.devices);
    let mut devices = Vec::with_capacity(args.devices);
    for i in 0..args.devices {
        let id = format!("x509-{i:06}");
        let key = DeviceKey::es256();
        let csr = idprov_tests::x509::csr(&key, &id)?;
        devices.push((id, key, csr));
    }
    for chunk in devices.chunks(MAX_OOB_BATCH) {
        let entries = chunk
            .iter()
            .map(|(id, k, _)| oob_entry(id, Some(k), None, None))
            .collect();
        admin
            .oob_upsert(&OobUpsertRequest {
                entries,
                replace: false,
                dry_run: false,
            })
            .await?;
    }
    let devices = Arc::new(devices);

    let fresh = {
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pki_types::CertificateDer::pem_slice_iter(ca.as_bytes()) {
            roots.add(c?)?;
        }
        let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        tls.resumption = rustls::client::Resumption::disabled();
        reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .pool_max_idle_per_host(0)
            .http1_only()
            .build()?
    };

    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let cpu0 = cpu_secs(pid);
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (devices, next, errors, first_error) = (
            devices.clone(),
            next.clone(),
            errors.clone(),
            first_error.clone(),
        );
        let (client, url, did) = (fresh.clone(), url.clone(), info.daemon_id.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let (id, key, csr) = &devices[i % devices.len()];
                let s = Instant::now();
                let proof = key.proof(id, &did, ProofEndpoint::Provision, unix_now());
                let mut req = key.request(id, proof);
                req.csr = Some(csr.clone());
                let r = post_json(&client, &format!("{url}{}", paths::PROVISION), &req).await;
                match r {
                    Ok(a) if a.status == 200 && a.body["certificate"].is_string() => {
                        lat.push(s.elapsed())
                    }
                    other => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut f) = first_error.lock() {
                            f.get_or_insert_with(|| format!("{other:?}"));
                        }
                    }
                }
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await?);
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_secs(pid) - cpu0;
    lat.sort();
    let n = lat.len();
    println!(
        "certificate issuance (fresh TLS each, ES256 proof + CSR, {} concurrent): {n} in {wall:.1}s = {:.0}/s wall, {:.0}/s per daemon CPU-second (daemon used {:.2} cores); p50 {:.2} ms, p99 {:.2} ms; errors {}",
        args.concurrency,
        n as f64 / wall,
        if cpu > 0.0 { n as f64 / cpu } else { 0.0 },
        cpu / wall,
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        errors.load(Ordering::Relaxed)
    );
    if let Ok(f) = first_error.lock()
        && let Some(e) = f.as_ref()
    {
        println!("  first error: {e}");
    }
    drop(proc);
    Ok(())
}

/// Fill a store with `n` revoked certificates, then time regenerations.
fn crl_phase(n: usize) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("data");
    let now = unix_now();
    let pki = idprovd::pki::Pki::load_or_create(&dir, now, &[], &[])?;
    let store = RedbStore::open(&dir, &pki.identity.daemon_id, true)?;
    let t = Instant::now();
    let dummy_pem = pki.ca_cert_pem.clone();
    let mut done = 0;
    while done < n {
        let batch = (n - done).min(10_000);
        store.write(|tx| -> Result<(), idprovd::store::StoreError> {
            for i in done..done + batch {
                let mut rec = CertRecord {
                    serial: idprovd::x509::random_serial()
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect(),
                    device_id: format!("crl-{i:07}").parse().expect("valid id"),
                    device_epoch: 1,
                    kid: "k".into(),
                    issued_at: now,
                    not_before: now - 300,
                    not_after: now + 30 * 24 * 3600,
                    revoked_at: None,
                    revocation_reason: None,
                    pem: dummy_pem.clone(),
                };
                tx.put_cert(&rec)?;
                rec.revoked_at = Some(now);
                rec.revocation_reason = Some("bench".into());
                tx.apply(vec![idprovd::storage::Change::RevokeCert {
                    cert: rec,
                    code: 1,
                }])?;
            }
            Ok(())
        })?;
        done += batch;
    }
    eprintln!(
        "stored {n} revoked certificates in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let cfg = idprovd::x509::CertConfig::default();
    let mut times = Vec::new();
    let mut size = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let doc = (&store as &dyn idprovd::storage::Store)
            .transact_with(|v, u| idprovd::crl::regenerate(v, u, &pki, &cfg, now))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .0;
        times.push(t.elapsed());
        size = doc.der.len();
        anyhow::ensure!(
            doc.state.revoked as usize == n,
            "CRL lists {}",
            doc.state.revoked
        );
    }
    times.sort();
    println!(
        "CRL regeneration with {n} revoked serials (read entries, sign, store, durable commit): median {:.0} ms, min {:.0} ms, max {:.0} ms over 5 runs; CRL {:.1} MiB DER",
        times[2].as_secs_f64() * 1000.0,
        times[0].as_secs_f64() * 1000.0,
        times[4].as_secs_f64() * 1000.0,
        size as f64 / (1024.0 * 1024.0)
    );
    Ok(())
}
