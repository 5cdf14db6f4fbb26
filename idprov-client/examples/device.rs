//! A device: finds the daemon, provisions, and keeps its token fresh until
//! stopped. Creates its key on first start.
//!
//! ```text
//! cargo run -p idprov-client --example device -- --id sensor-1 --key key.pem \
//!     --state-dir state [--server https://hub:8445] [--ca-fingerprint FP | --tofu | --setup-code CODE] [--cert]
//! ```
//!
//! With `--cert` the device also asks for an X.509 client certificate (saved
//! as `certificate.pem` in the state directory) and prints
//! `event: certificate serial=HEX` whenever it changes.
//!
//! Every state change is printed as one line on stdout, `event: NAME k=v...`,
//! so scripts and tests can follow it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use idprov_client::{Client, DiscoveryOptions, Event, KeySigner, MacAddr, Secret, Signer, Trust};

#[derive(Parser, Debug)]
#[command(about = "An idprov device: provision and keep the token fresh")]
struct Args {
    /// Device ID (letters, digits, . _ : -).
    #[arg(long)]
    id: String,
    /// Private key PEM; created (P-256, mode 0600) if it does not exist.
    #[arg(long)]
    key: PathBuf,
    /// Where credentials and a TOFU-pinned CA are kept.
    #[arg(long)]
    state_dir: PathBuf,
    /// Daemon URL; without it the daemon is found by DNS-SD.
    #[arg(long)]
    server: Option<String>,
    /// SHA-256 of the daemon's CA certificate (as idprovd prints it).
    #[arg(long, conflicts_with_all = ["tofu", "ca_file"])]
    ca_fingerprint: Option<String>,
    /// The daemon's CA certificate (PEM file).
    #[arg(long, conflicts_with = "tofu")]
    ca_file: Option<PathBuf>,
    /// Trust the first daemon reached and pin its CA.
    #[arg(long)]
    tofu: bool,
    /// The device's setup code (`1234-5678-9012`, or env IDPROV_SETUP_CODE):
    /// pin the CA of the daemon that completes the exchange over it.
    #[arg(long, env = "IDPROV_SETUP_CODE", hide_env_values = true)]
    setup_code: Option<String>,
    /// MAC to report (default: this machine's first interface).
    #[arg(long, conflicts_with = "no_mac")]
    mac: Option<MacAddr>,
    /// Report no MAC.
    #[arg(long)]
    no_mac: bool,
    /// One-time secret from the OOB list (or env IDPROV_SECRET).
    #[arg(long, env = "IDPROV_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// DNS-SD browse timeout.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    discovery_timeout: Duration,
    /// Exit as soon as a token is held (for scripts and benchmarks).
    #[arg(long)]
    once: bool,
    /// Ask for a client certificate with every provisioning and renewal.
    #[arg(long)]
    cert: bool,
}

fn print_event(start: Instant, e: &Event) {
    let t = start.elapsed().as_secs_f64();
    let line = match e {
        Event::Discovered {
            server,
            daemon_id,
            others,
        } => {
            let mut s = format!(
                "discovered server={server} daemon_id={} others={}",
                daemon_id.as_deref().unwrap_or("?"),
                others.len()
            );
            for o in others {
                s.push_str(&format!(
                    "\nevent: other_daemon instance={} url={} ca={}",
                    o.instance,
                    o.url().unwrap_or_default(),
                    o.ca_fingerprint.as_deref().unwrap_or("?")
                ));
            }
            s
        }
        Event::Connected { server, daemon_id } => {
            format!("connected server={server} daemon_id={daemon_id}")
        }
        Event::TrustedOnFirstUse { fingerprint } => format!("tofu_pinned ca={fingerprint}"),
        Event::SetupCodeConfirmed {
            server,
            fingerprint,
        } => format!("setup_code_confirmed server={server} ca={fingerprint}"),
        Event::SetupCodeRefused { server, reason } => {
            format!("setup_code_refused server={server} reason={reason:?}")
        }
        Event::Pending {
            verification_code,
            retry_in,
        } => format!(
            "pending code={verification_code} retry_in_ms={}",
            retry_in.as_millis()
        ),
        Event::Provisioned { expires_at, reused } => {
            format!("provisioned expires_at={expires_at} reused={reused}")
        }
        Event::Renewed { expires_at } => format!("renewed expires_at={expires_at}"),
        Event::RetryScheduled { error, retry_in } => {
            format!("retry in_ms={} error={error:?}", retry_in.as_millis())
        }
        Event::Reauthenticating { reason } => format!("reauthenticating reason={reason:?}"),
        Event::Revoked { message } => format!("revoked message={message:?}"),
        other => format!("{other:?}"),
    };
    println!("event: {line} t={t:.3}");
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // An ordinary error is its message and causes, never a backtrace
        // (returning the error from main would print one under
        // RUST_BACKTRACE=1).
        Err(e) => {
            eprintln!("device: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let start = Instant::now();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();

    // Checked here for a clear message; `device_id` also takes the string.
    let id: idprov_client::DeviceId = args.id.parse().context("--id")?;
    let setup_code = args
        .setup_code
        .as_deref()
        .map(idprov_client::SetupCode::parse)
        .transpose()
        .context("--setup-code")?;
    let trust = match (&args.ca_fingerprint, &args.ca_file, args.tofu, setup_code) {
        (Some(fp), None, false, None) => Trust::CaFingerprint(fp.clone()),
        (None, Some(path), false, None) => Trust::CaCertPem(
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
        ),
        (None, None, true, None) => Trust::TrustOnFirstUse,
        (None, None, false, Some(code)) => Trust::SetupCode(code),
        _ => bail!("give exactly one of --ca-fingerprint, --ca-file, --tofu, --setup-code"),
    };
    let (signer, created) = KeySigner::load_or_generate(&args.key)?;
    println!(
        "event: key {} kid={} alg={} code={}",
        if created { "created" } else { "loaded" },
        signer.public_key().thumbprint(),
        signer.alg(),
        signer.public_key().verification_code()
    );

    let mut builder = Client::builder()
        .device_id(id)
        .signer(std::sync::Arc::new(signer))
        .trust(trust)
        .state_dir(&args.state_dir)
        .on_event(move |e| print_event(start, e));
    builder = match &args.server {
        Some(url) => builder.server(url),
        None => builder.discovery(DiscoveryOptions {
            timeout: args.discovery_timeout,
            ..DiscoveryOptions::default()
        }),
    };
    if args.no_mac {
        builder = builder.mac(None);
    } else if let Some(mac) = args.mac {
        builder = builder.mac(Some(mac));
    }
    if let Some(s) = args.secret {
        builder = builder.secret(Secret::new(s));
    }
    builder = builder.client_certificate(args.cert);
    let client = builder.build()?;

    let keeper = client.start().await?;
    let creds = keeper.current();
    println!(
        "event: token expires_at={} t={:.3}",
        creds.expires_at,
        start.elapsed().as_secs_f64()
    );
    let mut last_serial = None;
    if args.cert {
        last_serial = print_certificate(start, &creds, None);
    }
    if args.once {
        return Ok(());
    }
    let mut rx = keeper.subscribe();
    let watch_certs = async move {
        while args.cert && rx.changed().await.is_ok() {
            let creds = rx.borrow_and_update().clone();
            last_serial = print_certificate(start, &creds, last_serial.as_deref());
        }
        std::future::pending::<()>().await
    };
    tokio::select! {
        e = keeper.finished() => Err(e.into()),
        () = watch_certs => Ok(()),
        r = shutdown_signal() => {
            r?;
            println!("event: stopped");
            Ok(())
        }
    }
}

/// Print the certificate's serial if it is not `last`; returns the current one.
fn print_certificate(
    start: Instant,
    creds: &idprov_client::Credentials,
    last: Option<&str>,
) -> Option<String> {
    let t = start.elapsed().as_secs_f64();
    let Some(pem) = &creds.certificate else {
        println!("event: certificate none t={t:.3}");
        return None;
    };
    match idprov_client::certificate_serial(pem) {
        Ok(serial) => {
            if last != Some(serial.as_str()) {
                println!("event: certificate serial={serial} t={t:.3}");
            }
            Some(serial)
        }
        Err(e) => {
            println!(
                "event: certificate unreadable error={:?} t={t:.3}",
                e.report()
            );
            None
        }
    }
}

async fn shutdown_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}
