//! A private LAN of network namespaces for the DNS-SD tests, and daemons and
//! devices running inside it.
//!
//! The shape is that of `shared/tools/netns-lan`: a switch namespace holding
//! a bridge, and one namespace per host joined to it by a veth pair (`eth0`
//! in the host, `10.213.0.N/24`). Multicast sent there can never reach the
//! machine's real interfaces. Code runs "on" a host through [`NsRuntime`]: a
//! thread that entered the host's namespace with `setns` and runs a tokio
//! runtime; threads spawned from it (tokio workers, the mDNS responder's
//! thread) inherit the namespace.
//!
//! Building namespaces needs root over them. CI runs the tests as root, and
//! they build their namespaces directly. A contributor without root gets the
//! same tests: every LAN test starts with [`lan_test!`], which runs that one
//! test again in a child process of this test binary inside a user namespace
//! of its own (`unshare --user --map-root-user --net --mount`): root there, a
//! private `/run` for `ip netns`, and a fresh network namespace with nothing
//! but loopback, so nothing can reach the machine's real interfaces either.
//! The child's outcome is the test's outcome. Where neither works (no
//! `unshare`, user namespaces disabled) the tests fail with a message saying
//! so. They never skip silently.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use idprov_admin_client::AdminClient;
use idprovd::{Config, SystemClock};
use tokio_util::sync::CancellationToken;

static LANS: AtomicUsize = AtomicUsize::new(0);

/// The port daemons listen on inside the LAN (the product default).
pub const LAN_PORT: u16 = 8445;

/// Set in the child process that runs one LAN test in a user namespace.
const USERNS_ENV: &str = "IDPROV_TESTS_IN_USERNS";

pub(crate) fn effective_uid_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// Fail (never skip) when namespaces cannot be built here.
pub fn require_root() -> Result<()> {
    if !effective_uid_is_root() {
        bail!(
            "the LAN tests build network namespaces: they need root, or to start with \
             `lan_test!(name)`, which runs them in a user namespace"
        );
    }
    if Command::new(ip_program()).arg("-V").output().is_err() {
        bail!("the LAN tests need iproute2's `ip` command (apt-get install iproute2)");
    }
    Ok(())
}

/// `program` on the PATH, or in the system directories a normal user's PATH
/// often lacks (`ip` is in /usr/sbin).
pub(crate) fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// iproute2's `ip`, wherever it is.
pub fn ip_program() -> PathBuf {
    find_program("ip").unwrap_or_else(|| PathBuf::from("ip"))
}

/// Run LAN tests as they can be run here; see the module comment. Returns
/// true when `test` (in the module `module`, as `module_path!()` gives it)
/// ran in a child process and passed; false when it is to run here (as root,
/// or in that child). Use it through [`lan_test!`].
pub fn ran_in_user_namespace(module: &str, test: &str) -> Result<bool> {
    if effective_uid_is_root() {
        require_root()?;
        return Ok(false);
    }
    if std::env::var_os(USERNS_ENV).is_some() {
        bail!("running in a user namespace, but not as its root: the uid map did not apply");
    }
    let unshare = find_program("unshare").context(
        "the LAN tests need root or util-linux's `unshare` (user namespaces); \
         apt-get install util-linux",
    )?;
    // libtest names a test by its module path without the crate.
    let name = match module.split_once("::") {
        Some((_, m)) => format!("{m}::{test}"),
        None => test.to_string(),
    };
    let exe = std::env::current_exe().context("the test binary")?;
    // Root in a new user namespace, with a new network namespace (only
    // loopback) and a mount namespace whose /run is private, so that
    // `ip netns add` can make /run/netns.
    let out = Command::new(&unshare)
        .args(["--user", "--map-root-user", "--net", "--mount", "--"])
        .args([
            "sh",
            "-c",
            r#"mount -t tmpfs tmpfs /run && "$0" link set lo up && exec "$@""#,
        ])
        .arg(ip_program())
        .arg(&exe)
        .args(["--exact", &name, "--test-threads=1"])
        .env(USERNS_ENV, "1")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", unshare.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("--- {name} in a user namespace ---\n{stdout}{stderr}");
    if stderr.starts_with("unshare:") {
        bail!(
            "cannot create a user namespace for the LAN tests (are unprivileged user \
             namespaces disabled? see /proc/sys/user/max_user_namespaces, \
             kernel.unprivileged_userns_clone, kernel.apparmor_restrict_unprivileged_userns); \
             run them as root instead:\n{stderr}"
        );
    }
    if !out.status.success() {
        bail!("{name} failed in its user namespace ({})", out.status);
    }
    // It must really have run, not been filtered away.
    if !stdout.contains(&format!("test {name} ... ok")) || !stdout.contains(" 1 passed;") {
        bail!("{name} did not run in its user namespace:\n{stdout}{stderr}");
    }
    Ok(true)
}

/// The first line of every LAN test (a test returning `Result`): as root the
/// test goes on here; otherwise it runs in a user namespace of its own and
/// this returns its outcome. The argument is the test function's name.
#[macro_export]
macro_rules! lan_test {
    ($test:ident) => {
        if $crate::netns::ran_in_user_namespace(module_path!(), stringify!($test))? {
            return Ok(());
        }
    };
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new(ip_program())
        .args(args)
        .output()
        .context("running ip")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A switch and some hosts; everything is removed on drop.
pub struct Lan {
    prefix: String,
    hosts: Vec<(String, Ipv4Addr)>,
}

impl Lan {
    /// Hosts get 10.213.0.1, .2, ... in the order given.
    pub fn new(hosts: &[&str]) -> Result<Lan> {
        require_root()?;
        let n = LANS.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("idpt{}-{n}", std::process::id());
        let mut lan = Lan {
            prefix,
            hosts: Vec::new(),
        };
        let switch = lan.switch();
        ip(&["netns", "add", &switch])?;
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &switch, "link", "set", "br0", "up"])?;
        for (i, host) in hosts.iter().enumerate() {
            let addr = Ipv4Addr::new(10, 213, 0, u8::try_from(i + 1).context("too many hosts")?);
            lan.add_host(host, addr, i)?;
        }
        Ok(lan)
    }

    fn switch(&self) -> String {
        format!("{}-sw", self.prefix)
    }

    fn add_host(&mut self, host: &str, addr: Ipv4Addr, i: usize) -> Result<()> {
        let ns = format!("{}-{host}", self.prefix);
        let switch = self.switch();
        let port = format!("p{i}");
        ip(&["netns", "add", &ns])?;
        self.hosts.push((host.to_string(), addr));
        ip(&[
            "link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", &port, "netns",
            &switch,
        ])?;
        ip(&["-n", &switch, "link", "set", &port, "master", "br0", "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", &ns, "link", "set", "eth0", "multicast", "on", "up"])?;
        Ok(())
    }

    /// The namespace name of `host` (for `ip netns exec`).
    pub fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    pub fn addr(&self, host: &str) -> Ipv4Addr {
        self.hosts
            .iter()
            .find(|(h, _)| h == host)
            .map(|(_, a)| *a)
            .unwrap_or(Ipv4Addr::UNSPECIFIED)
    }

    /// `ip netns exec NS program`, to run a process on `host`.
    pub fn command(&self, host: &str, program: &str) -> Command {
        let mut c = Command::new(ip_program());
        c.args(["netns", "exec", &self.ns(host), program]);
        c
    }

    /// Run `ip ARGS` inside `host`'s namespace (e.g. add an address).
    pub fn ip_on(&self, host: &str, args: &[&str]) -> Result<()> {
        let ns = self.ns(host);
        let mut all = vec!["-n", ns.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// A tokio runtime whose threads live in `host`'s namespace.
    pub fn runtime(&self, host: &str) -> Result<NsRuntime> {
        NsRuntime::new(&self.ns(host))
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for (host, _) in &self.hosts {
            let _ = ip(&["netns", "del", &self.ns(host)]);
        }
        let _ = ip(&["netns", "del", &self.switch()]);
    }
}

/// A multi-threaded tokio runtime running inside a network namespace.
pub struct NsRuntime {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NsRuntime {
    pub fn new(ns: &str) -> Result<NsRuntime> {
        let path = PathBuf::from("/run/netns").join(ns);
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("ns-{ns}"))
            .spawn(move || {
                let setup = (|| -> Result<tokio::runtime::Runtime> {
                    let f = std::fs::File::open(&path)
                        .with_context(|| format!("opening {}", path.display()))?;
                    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
                        .with_context(|| format!("entering {}", path.display()))?;
                    // Built after setns: every worker thread inherits it.
                    Ok(tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(2)
                        .enable_all()
                        .build()?)
                })();
                match setup {
                    Ok(rt) => {
                        let _ = tx.send(Ok(rt.handle().clone()));
                        rt.block_on(async {
                            let _ = stop_rx.await;
                        });
                        rt.shutdown_timeout(Duration::from_secs(3));
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            })?;
        let handle = rx.recv().context("namespace thread died")??;
        Ok(NsRuntime {
            handle,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// Run `fut` in the namespace and wait for it from any runtime.
    pub async fn run<F>(&self, fut: F) -> Result<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(fut).await.context("task in namespace")
    }

    /// Start `fut` in the namespace.
    pub fn spawn<F>(&self, fut: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(fut)
    }
}

impl Drop for NsRuntime {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A daemon on a LAN host: real clock, listening on every address of the
/// host at [`LAN_PORT`], advertising by DNS-SD on `eth0`.
pub struct LanDaemon {
    pub cfg: Config,
    pub daemon_id: String,
    pub ca_fingerprint: String,
    pub ca_pem: String,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<Result<()>>>,
}

/// A LAN daemon's configuration: seconds-long tokens, quick pending polls.
pub fn lan_config(dir: &Path, instance: &str) -> Config {
    let mut cfg = Config {
        listen: (Ipv4Addr::UNSPECIFIED, LAN_PORT).into(),
        data_dir: dir.to_path_buf(),
        ..Config::default()
    };
    cfg.tokens.lifetime = Duration::from_secs(4);
    cfg.pending.retry_after = Duration::from_secs(1);
    cfg.mdns.enabled = true;
    cfg.mdns.interfaces = vec!["eth0".into()];
    cfg.mdns.instance_name = Some(instance.into());
    // Several daemons share some of these LANs: alert on each other, but do
    // not pause (the security tests set `pause`).
    cfg.monitor.on_rogue = idprovd::monitor::OnRogue::Alert;
    // Pending devices poll every second here.
    cfg.rate_limit.device_per_minute = 120;
    // A restart must not race the old metrics listener for a fixed port.
    cfg.metrics.listen = (Ipv4Addr::LOCALHOST, 0).into();
    cfg
}

impl LanDaemon {
    pub async fn start(rt: &NsRuntime, cfg: Config) -> Result<LanDaemon> {
        let c = cfg.clone();
        let (running, shutdown) = rt
            .run(async move {
                let listener = tokio::net::TcpListener::bind(c.listen).await?;
                let shutdown = CancellationToken::new();
                let running = idprovd::start(
                    c,
                    Arc::new(SystemClock),
                    idprovd::Listeners { https: listener },
                    shutdown.clone(),
                )
                .await?;
                anyhow::Ok((running, shutdown))
            })
            .await??;
        Ok(LanDaemon {
            cfg,
            daemon_id: running.daemon.daemon_id().to_string(),
            ca_fingerprint: running.daemon.pki.ca_fingerprint.clone(),
            ca_pem: running.daemon.pki.ca_cert_pem.clone(),
            shutdown,
            task: Some(running.task),
        })
    }

    /// Shut down (the mDNS goodbye included) and wait until the store is closed.
    pub async fn stop(&mut self) -> Result<()> {
        self.shutdown.cancel();
        if let Some(t) = self.task.take() {
            t.await??;
        }
        Ok(())
    }

    /// Stop, then start again on the same data dir and port.
    pub async fn restart(&mut self, rt: &NsRuntime) -> Result<()> {
        self.stop().await?;
        let mut last = None;
        for _ in 0..50 {
            match Self::start(rt, self.cfg.clone()).await {
                Ok(d) => {
                    *self = d;
                    return Ok(());
                }
                // The store's last handle may take a moment to drop.
                Err(e) => {
                    last = Some(e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("restart failed")))
    }

    /// The first administrator, through the admin API on loopback. Call its
    /// methods inside the daemon's namespace ([`NsRuntime::run`]).
    pub fn admin(&self) -> Result<AdminClient> {
        let path = self.cfg.data_dir.join("admin.profile");
        let (_, profile) = idprov_admin_client::load_profile(Some(&path))?;
        Ok(AdminClient::new(&profile)?)
    }
}

impl Drop for LanDaemon {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
