//! The idprovd binary: parse the command line, load the configuration, start
//! logging, and hand over to the library.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use idprovd::config::{Config, FlagOverrides, LogFormat, LogOverrides};
use idprovd::{Listeners, admins, pki};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "idprovd",
    version,
    about = "idprov hub daemon: zero-touch provisioning for IoT devices on the LAN"
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Args)]
struct Global {
    /// TOML configuration file.
    #[arg(long, global = true, env = "IDPROVD_CONFIG")]
    config: Option<PathBuf>,
    /// HTTPS listen address (default 0.0.0.0:8445).
    #[arg(long, global = true)]
    listen: Option<SocketAddr>,
    /// Data directory (CA, keys, store, administrators).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Log format: auto (text on a terminal, else JSON), text, json.
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    /// Log filter, e.g. `info` or `idprovd=debug` (RUST_LOG wins).
    #[arg(long, global = true)]
    log_level: Option<String>,
    /// Do not advertise the daemon by DNS-SD (same as mdns.enabled = false).
    #[arg(long, global = true)]
    no_mdns: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (the default).
    Run,
    /// Load and check the configuration, print the effective values.
    CheckConfig,
    /// The daemon's certificate authority.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Administrator credentials (work while the daemon runs).
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Subcommand)]
enum CaCommand {
    /// Print the CA fingerprint (SHA-256 of the certificate, hex).
    Fingerprint,
    /// Print the CA certificate (PEM).
    Cert,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create an administrator and write its profile (0600).
    Add {
        name: String,
        /// Where to write the profile.
        #[arg(long)]
        out: PathBuf,
        /// The daemon URL to put in the profile (default: from `listen`).
        #[arg(long)]
        server: Option<String>,
    },
    /// List administrators.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove an administrator; its token stops working at once.
    Remove { name: String },
}

fn main() -> std::process::ExitCode {
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("idprovd: error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

fn real_main() -> Result<()> {
    let cli = Cli::parse();
    let flags = FlagOverrides {
        listen: cli.global.listen,
        data_dir: cli.global.data_dir.clone(),
        log: (cli.global.log_format.is_some() || cli.global.log_level.is_some()).then(|| {
            LogOverrides {
                format: cli.global.log_format,
                level: cli.global.log_level.clone(),
            }
        }),
        mdns: cli.global.no_mdns.then_some(idprovd::mdns::MdnsOverrides {
            enabled: Some(false),
        }),
    };
    let cfg = Config::load(cli.global.config.as_deref(), &flags)?;
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => run(cfg),
        Command::CheckConfig => {
            print!("{}", cfg.to_toml());
            eprintln!("configuration ok");
            Ok(())
        }
        Command::Ca { command } => {
            let (pem, fp) = pki::read_ca(&cfg.data_dir)?;
            match command {
                CaCommand::Fingerprint => println!("{fp}"),
                CaCommand::Cert => print!("{pem}"),
            }
            Ok(())
        }
        Command::Admin { command } => admin(cfg, command),
    }
}

fn run(cfg: Config) -> Result<()> {
    init_logging(&cfg);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .with_context(|| format!("binding {}", cfg.listen))?;
        let shutdown = CancellationToken::new();
        let s = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutting down");
            s.cancel();
        });
        idprovd::run(cfg, Listeners { https: listener }, shutdown).await
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn init_logging(cfg: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cfg.log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match cfg.log.format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn admin(cfg: Config, cmd: AdminCommand) -> Result<()> {
    let dir = &cfg.data_dir;
    match cmd {
        AdminCommand::Add { name, out, server } => {
            let (pem, fp) = pki::read_ca(dir)?;
            let server = server.unwrap_or_else(|| idprovd::server_url(cfg.listen));
            if out.exists() {
                anyhow::bail!("{} already exists; refusing to overwrite", out.display());
            }
            let now = idprovd::Clock::now(&idprovd::SystemClock);
            let profile = admins::add(dir, &name, &server, &pem, &fp, now)?;
            if let Err(e) = admins::write_profile(&out, &profile) {
                // Don't leave an administrator nobody has the token of.
                let _ = admins::remove(dir, &name);
                return Err(e);
            }
            println!(
                "administrator {name} added; profile written to {}",
                out.display()
            );
        }
        AdminCommand::List { json } => {
            let list = admins::list(dir)?;
            if json {
                let v: Vec<_> = list
                    .iter()
                    .map(|a| serde_json::json!({"name": a.name, "created_at": a.created_at}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for a in list {
                    println!("{}\tcreated {}", a.name, a.created_at);
                }
            }
        }
        AdminCommand::Remove { name } => {
            admins::remove(dir, &name)?;
            println!("administrator {name} removed");
        }
    }
    Ok(())
}
