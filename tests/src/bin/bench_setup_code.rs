//! Figures of the setup-code exchange (docs/security.md "Setup codes")
//! against the real idprovd binary:
//!
//!   cargo build -p idprovd -p idprov-tests --bin bench_setup_code
//!   target/debug/bench_setup_code [--devices 20] [--memory-kib 19456]
//!
//! Prints, per device run one after the other: the time from the device's
//! start (client built, nothing pinned) to its token with a setup code at
//! the given Argon2id cost (min / median / max); the daemon's CPU per
//! exchange (utime + stime of its process over all exchanges, divided by
//! their number); and, in this process, the Argon2id derivation alone and
//! the daemon's SPAKE2+ computations alone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Parser;
use idprov_client::{Client, KeySigner, SetupCode, Trust};
use idprov_pake::spake2plus::{Binding, Prover, Verifier};
use idprov_pake::{KdfParams, StoredVerifier};
use idprov_proto::admin::{OobEntryInput, OobUpsertRequest};
use idprov_tests::bench::{BenchDaemon, cpu_secs};
use idprov_tests::oob_entry;

#[derive(Parser)]
struct Args {
    /// Devices provisioned, one after the other.
    #[arg(long, default_value_t = 20)]
    devices: usize,
    /// Argon2id memory of the codes (KiB); the default is the shipped one.
    #[arg(long, default_value_t = KdfParams::DEFAULT.memory_kib)]
    memory_kib: u32,
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

fn summary(name: &str, mut v: Vec<Duration>) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    if let (Some(min), Some(max)) = (v.first(), v.last()) {
        println!(
            "{name}: min {:.1} ms, median {:.1} ms, max {:.1} ms (n = {})",
            ms(*min),
            ms(v[v.len() / 2]),
            ms(*max),
            v.len()
        );
    }
}

async fn run(args: Args) -> Result<()> {
    let kdf = KdfParams {
        memory_kib: args.memory_kib,
        ..KdfParams::DEFAULT
    };
    let proc = BenchDaemon::start(args.idprovd.as_deref(), &[])?;
    let profile = proc.admin_profile()?;
    let admin = idprov_admin_client::AdminClient::new(&profile)?;
    let mut codes = Vec::new();
    let mut entries = Vec::new();
    for i in 0..args.devices {
        let id = format!("bench-sc-{i}");
        let code = SetupCode::generate();
        entries.push(OobEntryInput {
            setup_verifier: Some(StoredVerifier::for_code(&code, &id, kdf)?.encode()),
            ..oob_entry(&id, None, None, None)
        });
        codes.push((id, code));
    }
    admin
        .oob_upsert(&OobUpsertRequest {
            entries,
            replace: false,
            dry_run: false,
        })
        .await?;

    let mut times = Vec::new();
    let cpu0 = cpu_secs(proc.pid);
    for (id, code) in codes {
        let state = tempfile::tempdir()?;
        let signer = Arc::new(KeySigner::generate_p256()?.0);
        let start = Instant::now();
        let client = Client::builder()
            .device_id(id.as_str())
            .server(&proc.url)
            .trust(Trust::SetupCode(code))
            .signer(signer)
            .mac(None)
            .state_dir(state.path())
            .build()?;
        let creds = client.provision().await?;
        times.push(start.elapsed());
        if creds.device_id.as_str() != id {
            bail!("wrong device in the answer");
        }
    }
    let cpu = cpu_secs(proc.pid) - cpu0;
    println!(
        "Argon2id m={} KiB t={} p={}",
        kdf.memory_kib, kdf.iterations, kdf.parallelism
    );
    summary("device start -> token (setup code, loopback)", times);
    println!(
        "daemon CPU per exchange (3 requests, TLS handshake, SPAKE2+, proof, token, 3 store commits): {:.2} ms",
        cpu * 1000.0 / args.devices.max(1) as f64
    );

    // The parts, in this process.
    let code = SetupCode::generate();
    let salt = idprov_pake::setup_code::new_salt();
    let mut kdf_times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        code.derive("bench", &salt, &kdf)?;
        kdf_times.push(t.elapsed());
    }
    summary(
        "Argon2id derivation (device side, once per exchange)",
        kdf_times,
    );
    let record = code.verifier("bench", &salt, &kdf)?;
    let ctx = [0u8; 52];
    let b = Binding {
        context: &ctx,
        id_prover: b"bench",
        id_verifier: b"idprovd",
    };
    let mut verifier_times = Vec::new();
    for _ in 0..50 {
        let prover = Prover::start(code.derive(
            "bench",
            &salt,
            &KdfParams {
                memory_kib: 8,
                iterations: 1,
                parallelism: 1,
            },
        )?);
        let t = Instant::now();
        let (v, _) = Verifier::respond(&record, &b, prover.share_p())?;
        let _ = v.verify(&[0u8; 32]);
        verifier_times.push(t.elapsed());
    }
    summary(
        "daemon SPAKE2+ work alone (respond + verify)",
        verifier_times,
    );
    Ok(())
}
