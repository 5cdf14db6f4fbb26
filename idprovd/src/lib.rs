//! idprovd as a library: [`run`] is the whole daemon, and [`start`] gives
//! tests (and the binary) a handle on a daemon serving on a listener they
//! bound themselves (port 0 in tests).
//!
//! This crate is the transport and the process: [`http`] (routes, the one
//! error mapping), [`server`] (TLS listener), [`mdns`] and [`monitor`]
//! (DNS-SD), [`service`] (systemd), [`backup`] and [`audit_verify`] (offline
//! tools), [`cli`]. The use cases live in `idprovd-core` (re-exported here
//! under their old paths) and the redb store in `idprovd-store-redb`; see
//! docs/architecture.md.

pub mod audit_verify;
pub mod backup;
pub mod cli;
pub mod http;
pub mod mdns;
pub mod monitor;
pub mod server;
pub mod service;
pub mod site;

pub use idprovd_core::{
    admin_ops, admins, alerts, audit, certs, clock, config, context, crl, daemon, devices, error,
    flags, keys_admin, metrics, neighbour, oob_import, pki, proof, provision, ratelimit, registry,
    storage, tokens, x509,
};

/// The records and errors of the storage interface, and the redb backend.
pub mod store {
    pub use idprovd_core::store::*;
    pub use idprovd_store_pg::PgStore;
    pub use idprovd_store_redb::{DbError, RedbStore, STORE_FILE, read_audit_offline};
}

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::Config;
pub use daemon::Daemon;

/// Listening sockets, bound by the caller.
pub struct Listeners {
    pub https: TcpListener,
}

/// A started daemon.
pub struct Running {
    pub daemon: Arc<Daemon>,
    pub addr: SocketAddr,
    /// The first administrator profile, if this start created the data dir.
    pub first_profile: Option<std::path::PathBuf>,
    /// Where `/metrics` is served, if enabled.
    pub metrics_addr: Option<SocketAddr>,
    pub task: JoinHandle<Result<()>>,
}

/// Run the daemon until `shutdown` is cancelled.
pub async fn run(cfg: Config, listeners: Listeners, shutdown: CancellationToken) -> Result<()> {
    let running = start(cfg, Arc::new(SystemClock), listeners, shutdown.clone()).await?;
    announce(&running);
    service::ready(&running);
    let supervisor = tokio::spawn(service::supervise(
        running.daemon.clone(),
        running.addr,
        shutdown,
    ));
    let result = running.task.await.context("daemon task")?;
    let _ = supervisor.await;
    service::close(running.daemon).await;
    result
}

/// Open everything, start serving in a task, and return at once.
pub async fn start(
    cfg: Config,
    clock: Arc<dyn Clock>,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<Running> {
    let addr = listeners.https.local_addr().context("listener address")?;
    let now = clock.now();
    let dir = cfg.data_dir.clone();
    let names = cfg.server_names.clone();
    let addrs = cfg.server_addresses.clone();
    let certs_cfg = cfg.certificates.clone();
    let store_cfg = cfg.store.clone();
    let (lock, pki, opened, x509) = tokio::task::spawn_blocking(move || -> Result<_> {
        // First: a second daemon on this data dir must change nothing in it.
        let lock = pki::DataDirLock::acquire(&dir)?;
        let redb = store_cfg.backend == config::StoreBackend::Redb;
        let pki = pki::Pki::load_or_create_for(&dir, now, &names, &addrs, redb)?;
        let opened = site::open_store(&store_cfg, &dir, &pki)?;
        let x509 = crl::X509State::load(opened.store.as_ref(), &pki, &certs_cfg, now)?;
        Ok((lock, pki, opened, x509))
    })
    .await
    .context("startup task")??;
    let site::Opened {
        store,
        commits,
        site: site_store,
    } = opened;

    let first_profile = if pki.created {
        let path = cfg.data_dir.join(admins::FIRST_PROFILE);
        let profile = admins::add(
            &cfg.data_dir,
            "admin",
            &server_url(addr),
            &pki.ca_cert_pem,
            &pki.ca_fingerprint,
            now,
        )?;
        admins::write_profile(&path, &profile, admins::ExistingProfile::Refuse)?;
        Some(path)
    } else {
        None
    };

    let tls = server::tls_config(&pki)?;
    let metrics_listener = http::metrics::bind(&cfg.metrics).await?;
    let metrics_addr = match &metrics_listener {
        Some(l) => Some(l.local_addr().context("metrics listener address")?),
        None => None,
    };
    let metrics = Arc::new(metrics::Metrics::new(commits));
    let core = idprovd_core::Core::new(clock, store, metrics, &cfg.store);
    let pki = Arc::new(pki);
    let x509 = Arc::new(x509);
    let cfg = Arc::new(cfg);
    let devices = Arc::new(devices::Devices::new(
        core.clone(),
        cfg.clone(),
        pki.clone(),
    ));
    let admin = admin_ops::Admin::new(
        core.clone(),
        x509.clone(),
        pki.clone(),
        cfg.certificates.clone(),
    );
    let policy = Arc::new(idprovd_core::policy_admin::Policy::new(
        core.clone(),
        cfg.clone(),
        devices.windows.clone(),
    ));
    let daemon = Arc::new(Daemon {
        core,
        devices,
        admin,
        admins: admins::AdminRegistry::new(&cfg.data_dir),
        event_streams: Arc::new(Semaphore::new(cfg.limits.max_event_streams)),
        shutdown: shutdown.clone(),
        data_dir_lock: lock,
        cfg,
        pki,
        x509,
        alerts: alerts::Alerts::default(),
        imports: Arc::new(oob_import::Imports::default()),
        setup_exchanges: Default::default(),
        policy,
    });
    if let Err(e) = daemon.policy.load_guard().await {
        tracing::warn!(error = %e, "could not read the enrollment windows");
    }
    tokio::spawn(
        daemon
            .policy
            .guard
            .clone()
            .follow(daemon.core.events.subscribe()),
    );
    tokio::spawn(daemon::window_watch(daemon.clone(), shutdown.clone()));
    // Staging of imports that a crash or a stop cut short goes now, not
    // when the next import starts.
    if let Err(e) = daemon.imports.sweep(&daemon.core).await {
        tracing::warn!(error = %e, "could not drop the staging of unfinished imports; the next import will try again");
    }
    // Pending devices waiting on an open request are woken by the committed
    // events, and answered at once when the daemon stops.
    let waiters = daemon.devices.waiters.clone();
    tokio::spawn(waiters.clone().follow(daemon.core.events.subscribe()));
    let stopping = shutdown.clone();
    tokio::spawn(async move {
        stopping.cancelled().await;
        waiters.close();
    });
    if let Some(pg) = site_store {
        // Changes the site's other daemons commit reach this one's event
        // stream (and its waiting devices).
        tokio::spawn(site::follow_events(
            pg,
            daemon.core.events.clone(),
            shutdown.clone(),
        ));
    }
    let router = http::router(daemon.clone());
    let limits = daemon.cfg.limits.clone();
    let housekeeping = tokio::spawn(housekeeping(daemon.clone(), shutdown.clone()));
    tokio::spawn(daemon::crl_maintenance(daemon.clone(), shutdown.clone()));
    // After an I/O error the store is reopened (with backoff) by this task.
    tokio::spawn(idprovd_core::recovery::store_recovery(
        Arc::downgrade(&daemon.core.store),
        shutdown.clone(),
    ));
    let advert = mdns::Advert {
        listen: addr,
        daemon_id: daemon.daemon_id().to_string(),
        ca_fingerprint: daemon.pki.ca_fingerprint.clone(),
    };
    let own = Arc::new(monitor::OwnAdvert::default());
    let mdns = mdns::spawn(&daemon.cfg.mdns, advert, own.clone(), shutdown.clone())?.map(
        |(task, responder)| {
            // The monitor browses with the advertiser's responder.
            monitor::spawn(daemon.clone(), responder, own, shutdown.clone());
            task
        },
    );
    if let Some(l) = metrics_listener {
        tokio::spawn(http::metrics::serve(l, daemon.clone(), shutdown.clone()));
    }
    let conn_metrics = daemon.metrics.clone();
    let task = tokio::spawn(async move {
        let r = server::serve(listeners.https, tls, router, limits, conn_metrics, shutdown).await;
        housekeeping.abort();
        // The advertiser saw the same shutdown; wait for its goodbye.
        if let Some(m) = mdns {
            let _ = m.await;
        }
        r
    });
    Ok(Running {
        daemon,
        addr,
        first_profile,
        metrics_addr,
        task,
    })
}

/// The URL administrators and local tools reach the daemon at.
pub fn server_url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_string(),
        ip if ip.is_unspecified() => "[::1]".to_string(),
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        std::net::IpAddr::V4(v4) => v4.to_string(),
    };
    format!("https://{ip}:{}", addr.port())
}

fn announce(r: &Running) {
    let d = &r.daemon;
    println!("idprovd {} listening on https://{}", d.daemon_id(), r.addr);
    println!("data dir: {}", d.cfg.data_dir.display());
    println!("CA fingerprint (SHA-256): {}", d.pki.ca_fingerprint);
    if let Some(p) = &r.first_profile {
        println!("first administrator profile: {}", p.display());
    }
    if let Some(m) = r.metrics_addr {
        println!("metrics on http://{m}/metrics");
    }
    print!(
        "{}",
        next_steps(&d.cfg.data_dir, r.first_profile.as_deref())
    );
    tracing::info!(
        daemon_id = d.daemon_id(),
        addr = %r.addr,
        ca_fingerprint = %d.pki.ca_fingerprint,
        "idprovd ready"
    );
    warn_if_no_administrator(&d.cfg.data_dir);
}

/// What a new administrator does next, printed after start-up: open the TUI
/// with the profile, import an OOB list. Said with the profile this start
/// created, else the first profile if it is still in the data dir; without
/// one there is no next step to name (the no-administrator warning says
/// how to add one).
fn next_steps(data_dir: &std::path::Path, created: Option<&std::path::Path>) -> String {
    let existing = data_dir.join(admins::FIRST_PROFILE);
    let profile = match created {
        Some(p) => p.to_path_buf(),
        None if existing.is_file() => existing,
        None => return String::new(),
    };
    let p = profile.display();
    format!(
        "next: watch and approve devices:  {tui} --profile {p}\n      import an OOB device list:  {oob} --profile {p} import LIST.csv\n",
        tui = sibling_tool("idprov-tui"),
        oob = sibling_tool("idprov-oob"),
    )
}

/// How to run another idprov tool: next to this binary as it was started
/// (`target/release/idprov-tui` when the daemon was started as
/// `target/release/idprovd`), so the printed line can be pasted as it is;
/// the bare name (found on the PATH) when the daemon was started by name or
/// the tool is not there.
fn sibling_tool(name: &str) -> String {
    let argv0 = std::env::args_os().next().map(std::path::PathBuf::from);
    match argv0.as_deref().and_then(std::path::Path::parent) {
        Some(dir) if !dir.as_os_str().is_empty() && dir.join(name).is_file() => {
            dir.join(name).display().to_string()
        }
        _ => name.to_string(),
    }
}

/// A daemon nobody can administer approves nothing: say so at start, and
/// how to add an administrator.
fn warn_if_no_administrator(data_dir: &std::path::Path) {
    let why = match admins::list(data_dir) {
        Ok(list) if !list.is_empty() => return,
        Ok(_) => format!(
            "{} is missing or lists no administrator",
            data_dir.join(admins::ADMINS_FILE).display()
        ),
        Err(e) => format!("{e:#}"),
    };
    eprintln!(
        "warning: no administrator can use this daemon ({why}): pending devices cannot be approved and the TUI cannot connect.\n\
         Add one with: idprovd --data-dir {} admin add NAME --out NAME.profile",
        data_dir.display()
    );
    tracing::warn!(reason = %why, "no administrator configured");
}

/// Expire stale pending requests and forget expired proofs and tokens.
async fn housekeeping(d: Arc<Daemon>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = d.expire_pending().await {
            tracing::warn!(error = ?e, "housekeeping failed");
        }
        if let Err(e) = d.policy.close_expired().await {
            tracing::warn!(error = ?e, "closing expired enrollment windows failed");
        }
        // Raises the alert of a regressed clock even with no probe asking.
        if let Err(e) = d.clock_state().await {
            tracing::warn!(error = ?e, "clock check failed");
        }
        d.devices.rate_limits.clean();
        d.setup_sweep().await;
    }
}
