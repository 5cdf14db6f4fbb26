//! The idprovd binary: parse the command line (defined in `idprovd::cli`),
//! load the configuration, start logging, and hand over to the library.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::{Context, Result};
use clap::Parser;
use idprovd::cli::{AdminCommand, AuditCommand, CaCommand, Cli, ClockCommand, Command, exit};
use idprovd::config::{Config, FlagOverrides, LogFormat, LogOverrides};
use idprovd::{Listeners, admins, pki};
use tokio_util::sync::CancellationToken;

fn main() -> std::process::ExitCode {
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("idprovd: error: {e:#}");
            std::process::ExitCode::from(exit_code(&e))
        }
    }
}

/// Map an error to the documented exit codes, so a service manager can
/// tell "restart me" from "a human must act".
fn exit_code(e: &anyhow::Error) -> u8 {
    use idprovd::backup::BackupError;
    use idprovd::config::ConfigError;
    use idprovd::store::StoreError;
    for cause in e.chain() {
        if cause.downcast_ref::<AuditBroken>().is_some() {
            return exit::AUDIT_BROKEN;
        }
        if cause.downcast_ref::<ConfigError>().is_some() {
            return exit::CONFIG;
        }
        if cause.downcast_ref::<pki::KeyMaterialError>().is_some() {
            return exit::DATA;
        }
        if let Some(s) = cause.downcast_ref::<StoreError>() {
            return match s {
                StoreError::Db(_) | StoreError::Unavailable(_) => exit::FAILURE,
                _ => exit::DATA,
            };
        }
        if let Some(b) = cause.downcast_ref::<BackupError>() {
            return match b {
                BackupError::Io { .. } => exit::FAILURE,
                _ => exit::DATA,
            };
        }
        if let Some(idprov_admin_client::AdminError::Connect { .. }) = cause.downcast_ref() {
            return exit::UNAVAILABLE;
        }
    }
    exit::FAILURE
}

/// A unix time for people: RFC 3339 UTC (`--json` keeps the number).
fn utc(unix: i64) -> String {
    match u64::try_from(unix) {
        Ok(s) => humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(s),
        )
        .to_string(),
        Err(_) => unix.to_string(),
    }
}

fn real_main() -> Result<()> {
    let cli = Cli::parse();
    let g = &cli.global;
    let flags = FlagOverrides {
        listen: g.listen,
        data_dir: g.data_dir.clone(),
        log: (g.log_format.is_some() || g.log_level.is_some()).then(|| LogOverrides {
            format: g.log_format,
            level: g.log_level.clone(),
        }),
        mdns: g.no_mdns.then_some(idprovd::mdns::MdnsOverrides {
            enabled: Some(false),
        }),
        metrics: (g.no_metrics || g.metrics_listen.is_some()).then(|| {
            idprovd::metrics::MetricsOverrides {
                enabled: g.no_metrics.then_some(false),
                listen: g.metrics_listen,
            }
        }),
    };
    let cfg = Config::load(g.config.as_deref(), &flags)?;
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => run(cfg),
        Command::CheckConfig { json } => {
            if json {
                println!("{}", serde_json::to_string_pretty(&cfg)?);
            } else {
                print!("{}", cfg.to_toml());
            }
            eprintln!("configuration ok");
            Ok(())
        }
        Command::Ca { command } => {
            let (pem, fp) = pki::read_ca(&cfg.data_dir)?;
            match command {
                CaCommand::Fingerprint { json: false } => println!("{fp}"),
                CaCommand::Cert { json: false } => print!("{pem}"),
                CaCommand::Fingerprint { json: true } | CaCommand::Cert { json: true } => {
                    let v = serde_json::json!({ "fingerprint_sha256": fp, "certificate_pem": pem });
                    println!("{}", serde_json::to_string_pretty(&v)?);
                }
            }
            Ok(())
        }
        Command::Admin { command } => admin(cfg, command),
        Command::Backup {
            out,
            profile,
            server,
            json,
        } => backup(&cfg, &out, profile.as_deref(), server, json),
        Command::Audit {
            command:
                AuditCommand::Verify {
                    profile,
                    online,
                    json,
                },
        } => audit_verify(&cfg, profile.as_deref(), online, json),
        Command::Clock {
            command,
            profile,
            json,
        } => clock(&cfg, command, profile.as_deref(), json),
        Command::Restore {
            file,
            force,
            check,
            json,
        } => restore(&cfg, &file, force, check, json),
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
        AdminCommand::Add {
            name,
            out,
            server,
            force,
        } => {
            let (pem, fp) = pki::read_ca(dir)?;
            let server = server.unwrap_or_else(|| idprovd::server_url(cfg.listen));
            let existing = if force {
                admins::ExistingProfile::Replace
            } else {
                admins::ExistingProfile::Refuse
            };
            if existing == admins::ExistingProfile::Refuse && out.exists() {
                anyhow::bail!(
                    "{} already exists; refusing to overwrite it (--force replaces it)",
                    out.display()
                );
            }
            let now = idprovd::Clock::now(&idprovd::SystemClock);
            let profile = admins::add(dir, &name, &server, &pem, &fp, now)?;
            if let Err(e) = admins::write_profile(&out, &profile, existing) {
                // Don't leave an administrator nobody has the token of.
                let _ = admins::remove(dir, &name, admins::LastAdmin::MayRemove);
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
                    println!("{}\tcreated {}", a.name, utc(a.created_at));
                }
            }
        }
        AdminCommand::Remove { name } => {
            admins::remove(dir, &name, admins::LastAdmin::Keep)?;
            println!("administrator {name} removed");
        }
    }
    Ok(())
}

/// Ask the running daemon for a backup, check it completely, then move it
/// into place (0600): a failed or truncated download never replaces `out`.
fn backup(
    cfg: &Config,
    out: &Path,
    profile: Option<&Path>,
    server: Option<String>,
    json: bool,
) -> Result<()> {
    let profile_path = match profile {
        Some(p) => p.to_path_buf(),
        None => cfg.data_dir.join(admins::FIRST_PROFILE),
    };
    let (_, mut profile) = idprov_admin_client::load_profile(Some(&profile_path))?;
    if let Some(s) = server {
        profile.server = s;
    }
    let client = idprov_admin_client::AdminClient::new(&profile)?;
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    // tempfile creates 0600 files; the name is only visible until renamed.
    let tmp = tempfile::Builder::new()
        .prefix(".idprov-backup-")
        .tempfile_in(&dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    let started = std::time::Instant::now();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let bytes = rt.block_on(async {
        let file = tmp.reopen().context("opening the temporary file")?;
        let mut file = tokio::fs::File::from_std(file);
        let n = client.backup_to(&mut file).await?;
        file.sync_all().await.context("syncing the backup")?;
        anyhow::Ok(n)
    })?;
    let manifest =
        idprovd::backup::verify(tmp.path()).context("the downloaded backup does not check out")?;
    tmp.persist(out)
        .with_context(|| format!("moving the backup to {}", out.display()))?;
    let elapsed = started.elapsed();
    if json {
        let v = serde_json::json!({
            "file": out,
            "bytes": bytes,
            "seconds": elapsed.as_secs_f64(),
            "manifest": manifest,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "backup of {} written to {} ({} bytes, {} devices, {} OOB entries, {:.1}s); it holds the CA and signing keys: keep it secret",
            manifest.daemon_id,
            out.display(),
            bytes,
            manifest.counts.devices,
            manifest.counts.oob,
            elapsed.as_secs_f64()
        );
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
#[error("the audit chain is broken at entry {0}")]
struct AuditBroken(u64);

/// Check the audit chain: from the store file when the daemon is stopped,
/// else (or with --online) through the admin API.
fn audit_verify(cfg: &Config, profile: Option<&Path>, online: bool, json: bool) -> Result<()> {
    use idprovd::audit_verify::{VerifyError, verify_dir, verify_online};
    let postgres = cfg.store.backend == idprovd::config::StoreBackend::Postgres;
    let offline = if online {
        None
    } else if postgres {
        let r = idprovd::audit_verify::verify_site(&cfg.data_dir, &cfg.store.postgres)
            .context("reading the audit log from the site database")?;
        Some(r)
    } else {
        match verify_dir(&cfg.data_dir) {
            Ok(r) => Some(r),
            Err(VerifyError::Running) => None,
            Err(e) => return Err(e).context("reading the audit log from the store"),
        }
    };
    let (report, via) = match offline {
        Some(r) if postgres => (r, "site database"),
        Some(r) => (r, "store file"),
        None => {
            let (client, rt) = admin_client(cfg, profile)?;
            let r = rt
                .block_on(verify_online(&client))
                .context("reading the audit log through the admin API")?;
            (r, "admin API")
        }
    };
    if json {
        let v = serde_json::json!({ "via": via, "intact": report.is_intact(), "report": report });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if let Some(b) = &report.broken {
        println!(
            "audit chain BROKEN at entry {}: {} ({} entries checked via the {via}; entries up to {} are intact)",
            b.seq, b.reason, report.entries, report.last_good_seq
        );
    } else {
        println!(
            "audit chain intact: {} entries checked via the {via}; head {} (entry {})",
            report.entries, report.head_hash, report.last_good_seq
        );
    }
    match report.broken {
        Some(b) => Err(AuditBroken(b.seq).into()),
        None => Ok(()),
    }
}

/// A client of the running daemon's admin API (`profile`, default the data
/// dir's first profile) and a runtime to drive it.
fn admin_client(
    cfg: &Config,
    profile: Option<&Path>,
) -> Result<(idprov_admin_client::AdminClient, tokio::runtime::Runtime)> {
    let path = profile
        .map(Path::to_path_buf)
        .unwrap_or_else(|| cfg.data_dir.join(admins::FIRST_PROFILE));
    let client = idprov_admin_client::AdminClient::from_profile_path(Some(&path))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    Ok((client, rt))
}

/// Show or accept the running daemon's clock through its admin API.
fn clock(cfg: &Config, cmd: ClockCommand, profile: Option<&Path>, json: bool) -> Result<()> {
    let (client, rt) = admin_client(cfg, profile)?;
    let state = rt.block_on(async {
        match cmd {
            ClockCommand::Show => client.clock().await,
            ClockCommand::Accept => client.accept_clock().await,
        }
    })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&state)?);
        return Ok(());
    }
    let mark = state
        .high_water
        .map_or_else(|| "none".to_string(), |h| h.to_string());
    let verdict = if state.regressed {
        "BEHIND the high-water mark: provisioning is refused (idprovd clock accept, once the time is checked)"
    } else {
        "ok"
    };
    println!("clock {} high-water mark {mark}: {verdict}", state.now);
    Ok(())
}

fn restore(cfg: &Config, file: &Path, force: bool, check: bool, json: bool) -> Result<()> {
    let dir = &cfg.data_dir;
    let manifest = if check {
        idprovd::backup::verify(file)?
    } else {
        idprovd::backup::restore(file, dir, force)?
    };
    if json {
        let v = serde_json::json!({
            "checked_only": check,
            "data_dir": dir,
            "manifest": manifest,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if check {
        println!(
            "{}: a complete backup of {} taken at {} ({} devices)",
            file.display(),
            manifest.daemon_id,
            utc(manifest.created_at),
            manifest.counts.devices
        );
    } else {
        println!(
            "restored {} ({} devices, {} OOB entries, backup taken at {}) into {}",
            manifest.daemon_id,
            manifest.counts.devices,
            manifest.counts.oob,
            utc(manifest.created_at),
            dir.display()
        );
    }
    Ok(())
}
