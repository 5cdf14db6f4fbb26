//! Configuration: embedded defaults < TOML file < `IDPROVD_*` environment <
//! command-line flags. Unknown keys are errors at every layer, so a typo never
//! silently falls back to a default.
//!
//! Nested keys in the environment use `__`: `IDPROVD_TOKENS__LIFETIME=1h`.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::flags::Flag;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// HTTPS listen address of the device and admin APIs.
    pub listen: SocketAddr,
    /// Where the CA, keys, store and admin registry live.
    pub data_dir: PathBuf,
    /// Extra DNS names for the server certificate (host name and
    /// `localhost` are always included).
    pub server_names: Vec<String>,
    /// Extra IP addresses for the server certificate (interface addresses
    /// are always included).
    pub server_addresses: Vec<IpAddr>,
    pub tokens: TokenConfig,
    pub proof: ProofConfig,
    pub pending: PendingConfig,
    pub limits: LimitsConfig,
    pub log: LogConfig,
    /// DNS-SD advertising.
    pub mdns: MdnsConfig,
    /// Client certificates and the CRL.
    pub certificates: CertConfig,
    /// The Prometheus metrics listener.
    pub metrics: MetricsConfig,
    /// Watching for rogue provisioning servers.
    pub monitor: MonitorConfig,
    /// Device-API request limits.
    pub rate_limit: RateLimitConfig,
    /// Flags on suspicious requests.
    pub flags: FlagConfig,
    /// Setup codes: lockout and the exchanges' bounds (setup_code.rs).
    pub setup_code: SetupCodeConfig,
    /// Where the records live (redb or PostgreSQL), the page cache and
    /// the group commit.
    pub store: StoreConfig,
    /// Auto-approval rules and enrollment windows (policy.rs).
    pub policy: PolicyConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Where the records live: the embedded redb file or a PostgreSQL
    /// database shared by several daemons of one site.
    pub backend: StoreBackend,
    /// Used when `backend = "postgres"`.
    pub postgres: PostgresConfig,
    /// Bytes of the store's page cache (redb's cache). It bounds the
    /// memory the store takes as it grows; pages beyond it are read from
    /// the file (the kernel's page cache) again.
    pub cache_size: usize,
    /// Decisions waiting for the writer, at most; beyond → `503 busy`.
    pub commit_queue: usize,
    /// Decisions committed together in one durable transaction, at most.
    pub max_batch: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TokenConfig {
    /// Lifetime of a daemon token; devices renew at half of it.
    #[serde(with = "humantime_serde")]
    pub lifetime: Duration,
    /// `aud` of issued tokens: the hub services that accept them.
    pub audience: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ProofConfig {
    /// Allowed clock difference for `iat`, `nbf` and `exp`.
    #[serde(with = "humantime_serde")]
    pub skew: Duration,
    /// Longest `exp - iat` a proof may have.
    #[serde(with = "humantime_serde")]
    pub max_lifetime: Duration,
    /// Most proof ids remembered at once; past it new proofs get `busy`
    /// (never forgetting one early, which would allow a replay).
    pub replay_cache_max: u64,
    /// Refuse proofs without a channel binding (`cbt`). Proofs that carry
    /// one are always checked against their TLS connection; this also
    /// refuses devices that send none (idprov-client always sends one).
    pub require_channel_binding: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PendingConfig {
    /// Most unknown devices waiting for a decision.
    pub cap: u64,
    /// A pending request not seen for this long is dropped.
    #[serde(with = "humantime_serde")]
    pub expiry: Duration,
    /// What pending devices are told to wait before asking again.
    #[serde(with = "humantime_serde")]
    pub retry_after: Duration,
    /// Longest a pending device's request is held open waiting for the
    /// decision (`Prefer: wait=N`, waiters.rs); 0 turns waiting off.
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
    /// Most requests held open at once, in all and per source address
    /// (IPv6: per /64); past either the device gets `Retry-After` at once.
    pub max_waiters: usize,
    pub max_waiters_per_source: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest request body on the device API, bytes.
    pub max_body_bytes: usize,
    /// Largest request body on the admin API (bulk OOB uploads), bytes.
    pub max_admin_body_bytes: usize,
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Time to receive a request's headers (also the keep-alive idle time).
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Time to handle a whole request once its headers are in.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_source: usize,
    /// Concurrent admin event-stream subscribers.
    pub max_event_streams: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `auto` (text on a terminal, JSON otherwise), `text` or `json`.
    pub format: LogFormat,
    /// A tracing filter (`info`, `idprovd=debug,info`); `RUST_LOG` wins.
    pub level: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Auto,
    Text,
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 8445)),
            data_dir: default_data_dir(),
            server_names: Vec::new(),
            server_addresses: Vec::new(),
            tokens: TokenConfig::default(),
            proof: ProofConfig::default(),
            pending: PendingConfig::default(),
            limits: LimitsConfig::default(),
            log: LogConfig::default(),
            mdns: MdnsConfig::default(),
            certificates: CertConfig::default(),
            metrics: MetricsConfig::default(),
            monitor: MonitorConfig::default(),
            rate_limit: RateLimitConfig::default(),
            flags: FlagConfig::default(),
            setup_code: SetupCodeConfig::default(),
            store: StoreConfig::default(),
            policy: PolicyConfig::default(),
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: StoreBackend::default(),
            postgres: PostgresConfig::default(),
            // A hub's working set (the devices, tokens and replay indexes
            // requests touch) fits; see docs/operations.md, "Figures".
            cache_size: 16 * 1024 * 1024,
            commit_queue: 4096,
            max_batch: 64,
        }
    }
}

impl Default for TokenConfig {
    fn default() -> Self {
        TokenConfig {
            lifetime: Duration::from_secs(30 * 24 * 3600),
            audience: "idprov-hub".into(),
        }
    }
}

impl Default for ProofConfig {
    fn default() -> Self {
        ProofConfig {
            skew: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(600),
            replay_cache_max: 1_000_000,
            require_channel_binding: false,
        }
    }
}

impl Default for PendingConfig {
    fn default() -> Self {
        PendingConfig {
            cap: 10_000,
            expiry: Duration::from_secs(7 * 24 * 3600),
            retry_after: Duration::from_secs(30),
            max_wait: Duration::from_secs(25),
            max_waiters: 4096,
            max_waiters_per_source: 128,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_body_bytes: 64 * 1024,
            max_admin_body_bytes: 16 * 1024 * 1024,
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_connections: 4096,
            max_connections_per_source: 128,
            max_event_streams: 32,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Auto,
            level: "info".into(),
        }
    }
}

/// The data dir when none is configured: systemd's `$STATE_DIRECTORY`, else
/// `/var/lib/idprovd` for root, else `$XDG_DATA_HOME/idprovd` (usually
/// `~/.local/share/idprovd`), else `./idprovd-data`.
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("STATE_DIRECTORY") {
        // systemd may pass several, colon-separated; the first is ours.
        let first = dir
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or("")
            .to_string();
        if !first.is_empty() {
            return PathBuf::from(first);
        }
    }
    if is_root() {
        return PathBuf::from("/var/lib/idprovd");
    }
    if let Some(d) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(d).join("idprovd");
    }
    if let Some(h) = std::env::var_os("HOME") {
        return PathBuf::from(h).join(".local/share/idprovd");
    }
    PathBuf::from("idprovd-data")
}

fn is_root() -> bool {
    // Reading our own uid from /proc avoids an unsafe libc call.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Values given as command-line flags; `None` means "not given".
#[derive(Debug, Clone, Default, Serialize)]
pub struct FlagOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<LogOverrides>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mdns: Option<MdnsOverrides>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsOverrides>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct LogOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<LogFormat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    Missing(PathBuf),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Layer defaults, the file (if any), the environment and the flags.
    pub fn load(file: Option<&Path>, flags: &FlagOverrides) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::Missing(path.to_path_buf()));
            }
            fig = fig.merge(Toml::file_exact(path));
        }
        fig = fig
            .merge(
                Env::prefixed("IDPROVD_")
                    .split("__")
                    // Read by clap, not configuration keys.
                    .ignore(&["config"]),
            )
            .merge(Serialized::defaults(flags));
        let cfg: Config = fig
            .extract()
            .map_err(|e| ConfigError::Invalid(figment_message(e)))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks that serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_string()));
        if self.tokens.lifetime < Duration::from_secs(2) {
            return bad("tokens.lifetime must be at least 2s");
        }
        if self.tokens.audience.is_empty() {
            return bad("tokens.audience must not be empty");
        }
        if self.proof.max_lifetime.is_zero() || self.proof.max_lifetime > Duration::from_secs(86400)
        {
            return bad("proof.max_lifetime must be between 1s and 24h");
        }
        if self.proof.skew > Duration::from_secs(3600) {
            return bad("proof.skew must be at most 1h");
        }
        if self.proof.replay_cache_max == 0 || self.pending.cap == 0 {
            return bad("proof.replay_cache_max and pending.cap must be positive");
        }
        if self.pending.max_wait > Duration::from_secs(120) {
            return bad("pending.max_wait must be at most 120s");
        }
        if self.limits.max_body_bytes < 1024 || self.limits.max_body_bytes > 64 * 1024 * 1024 {
            return bad("limits.max_body_bytes must be between 1024 and 67108864");
        }
        if self.limits.max_admin_body_bytes < self.limits.max_body_bytes
            || self.limits.max_admin_body_bytes > 1024 * 1024 * 1024
        {
            return bad("limits.max_admin_body_bytes must be between max_body_bytes and 1 GiB");
        }
        if self.limits.max_connections == 0 || self.limits.max_connections_per_source == 0 {
            return bad("limits.max_connections and max_connections_per_source must be positive");
        }
        if self.store.cache_size < 1024 * 1024 {
            return bad("store.cache_size must be at least 1 MiB (1048576)");
        }
        if !(1..=1_000_000).contains(&self.store.commit_queue)
            || !(1..=4096).contains(&self.store.max_batch)
        {
            return bad("store.commit_queue must be 1..=1000000 and store.max_batch 1..=4096");
        }
        self.rate_limit.validate().map_err(ConfigError::Invalid)?;
        self.flags.validate().map_err(ConfigError::Invalid)?;
        let sc = &self.setup_code;
        if sc.max_failures == 0
            || sc.max_failures_per_source == 0
            || sc.max_exchanges == 0
            || sc.max_exchanges_per_source == 0
        {
            return bad(
                "setup_code: max_failures, max_failures_per_source, max_exchanges and max_exchanges_per_source must be positive",
            );
        }
        if sc.exchange_ttl.is_zero() || sc.exchange_ttl > Duration::from_secs(600) {
            return bad("setup_code.exchange_ttl must be between 1s and 10m");
        }
        self.policy.validate().map_err(ConfigError::Invalid)?;
        if self.data_dir.as_os_str().is_empty() {
            return bad("data_dir must not be empty");
        }
        self.store.validate().map_err(ConfigError::Invalid)?;
        Ok(())
    }

    /// The effective configuration as TOML (for `check-config`).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}"))
    }
}

fn figment_message(e: figment::Error) -> String {
    e.into_iter()
        .map(|e| {
            let path = e.path.join(".");
            let src = match e.metadata.as_ref() {
                // Where in the file, so the administrator can go there.
                Some(m) => match &m.source {
                    Some(figment::Source::File(f)) => match key_line(f, &e.path) {
                        Some(n) => format!(" ({} line {n})", f.display()),
                        None => format!(" ({})", f.display()),
                    },
                    _ => format!(" (from {})", m.name),
                },
                None => String::new(),
            };
            let what = kind_message(&e.kind);
            if path.is_empty() {
                format!("{what}{src}")
            } else {
                format!("{path}: {what}{src}")
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// figment's own wording quotes serde's list of expected keys a second
/// time ("expected `one of `a`, `b``"); say it once.
fn kind_message(kind: &figment::error::Kind) -> String {
    use figment::error::Kind;
    match kind {
        Kind::UnknownField(key, expected) => {
            let known: Vec<String> = expected.iter().map(|k| format!("`{k}`")).collect();
            format!(
                "unknown key `{key}` (known keys here: {})",
                known.join(", ")
            )
        }
        Kind::MissingField(key) => format!("missing key `{key}`"),
        other => other.to_string(),
    }
}

/// The 1-based line of a TOML file that sets `path` (a key, or a table's
/// header), found by following the table headers: figment keeps no
/// positions. None when it cannot be told (the file changed, inline tables).
fn key_line(file: &Path, path: &[String]) -> Option<usize> {
    let text = std::fs::read_to_string(file).ok()?;
    let parts = |s: &str| -> Vec<String> {
        s.split('.')
            .map(|p| p.trim().trim_matches(|c| c == '"' || c == '\'').to_string())
            .collect()
    };
    let mut table: Vec<String> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(header) = line.strip_prefix('[') {
            let name = header.trim_start_matches('[');
            let name = name.split(']').next().unwrap_or_default();
            table = parts(name);
            if table == path {
                return Some(n + 1);
            }
        } else if let Some((key, _)) = line.split_once('=') {
            if line.starts_with('#') {
                continue;
            }
            let mut full = table.clone();
            full.extend(parts(key));
            if full == path {
                return Some(n + 1);
            }
        }
    }
    None
}

/// `[mdns]` configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MdnsConfig {
    /// Advertise at all (`--no-mdns` turns it off).
    pub enabled: bool,
    /// Interface names to advertise on; empty means every interface that has
    /// an IPv4 address (loopback only when nothing else has one).
    pub interfaces: Vec<String>,
    /// DNS-SD instance name; default: the host name.
    pub instance_name: Option<String>,
}

impl Default for MdnsConfig {
    fn default() -> Self {
        MdnsConfig {
            enabled: true,
            interfaces: Vec::new(),
            instance_name: None,
        }
    }
}

/// `--no-mdns` as a configuration layer.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MdnsOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// `[metrics]` in the configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve `/metrics`, `/healthz` and `/readyz` on `listen` (plain HTTP).
    pub enabled: bool,
    /// Keep it on loopback unless a firewall guards the port: the counters
    /// tell an observer how busy the hub is.
    pub listen: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 9445)),
        }
    }
}

/// `--metrics-listen` / `--no-metrics` as a configuration layer.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MetricsOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
}

/// `[rate_limit]` configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    pub enabled: bool,
    /// Sustained device-API requests per second from one source address
    /// (IPv6: one /64).
    pub source_per_second: u32,
    /// Requests one source may send at once before the sustained rate applies.
    pub source_burst: u32,
    /// Sustained requests per minute naming one device ID.
    pub device_per_minute: u32,
    pub device_burst: u32,
    /// Cells a failed request costs in all (a success costs 1).
    pub failure_cost: u32,
    /// Buckets kept per map before stale ones are dropped early.
    pub max_tracked: usize,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            enabled: true,
            source_per_second: 20,
            source_burst: 60,
            device_per_minute: 30,
            device_burst: 10,
            failure_cost: 5,
            max_tracked: 100_000,
        }
    }
}

impl RateLimitConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.enabled
            && [
                self.source_per_second,
                self.source_burst,
                self.device_per_minute,
                self.device_burst,
                self.failure_cost,
            ]
            .contains(&0)
        {
            return Err("rate_limit: rates, bursts and failure_cost must be positive".into());
        }
        if self.max_tracked == 0 {
            return Err("rate_limit.max_tracked must be positive".into());
        }
        Ok(())
    }
}

/// Certificate policy (`[certificates]` in the configuration).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CertConfig {
    /// Validity of an issued client certificate.
    #[serde(with = "humantime_serde")]
    pub lifetime: Duration,
    /// nextUpdate - thisUpdate of the CRL; it is re-signed at half of it.
    #[serde(with = "humantime_serde")]
    pub crl_validity: Duration,
}

impl Default for CertConfig {
    fn default() -> Self {
        CertConfig {
            lifetime: Duration::from_secs(30 * 24 * 3600),
            crl_validity: Duration::from_secs(24 * 3600),
        }
    }
}

/// `[setup_code]` configuration (docs/security.md, "Setup codes").
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SetupCodeConfig {
    /// Exchanges started with one code without an admission after which
    /// the code is locked (persisted in its OOB entry).
    pub max_failures: u32,
    /// Failed exchanges from one source address within `source_window`
    /// after which that address is refused (in memory).
    pub max_failures_per_source: u32,
    #[serde(with = "humantime_serde")]
    pub source_window: Duration,
    /// How long an exchange waits for its second step.
    #[serde(with = "humantime_serde")]
    pub exchange_ttl: Duration,
    /// Exchanges between their two steps, in all and from one address.
    pub max_exchanges: usize,
    pub max_exchanges_per_source: usize,
}

impl Default for SetupCodeConfig {
    fn default() -> Self {
        SetupCodeConfig {
            // 10 online guesses at a 10^10 code space: 1 in 10^9 for a
            // thief who tries every one; a device with typos (caught by the
            // check digits before they cost anything) never gets near it.
            max_failures: 10,
            max_failures_per_source: 20,
            source_window: Duration::from_secs(600),
            exchange_ttl: Duration::from_secs(60),
            max_exchanges: 256,
            max_exchanges_per_source: 4,
        }
    }
}

/// `[flags]` configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FlagConfig {
    /// Flags that hold a request in pending instead of admitting it by the
    /// OOB list (the others are recorded only).
    pub hold: Vec<Flag>,
    /// Refused proofs for one device ID or from one address that make the
    /// next request `proof_failures`.
    pub proof_failure_threshold: u32,
    /// How long refused proofs are remembered.
    #[serde(with = "humantime_serde")]
    pub proof_failure_window: Duration,
}

impl Default for FlagConfig {
    fn default() -> Self {
        FlagConfig {
            hold: vec![
                Flag::KeyReused,
                Flag::MacReused,
                Flag::MacMismatch,
                Flag::ProofFailures,
            ],
            proof_failure_threshold: 3,
            proof_failure_window: Duration::from_secs(600),
        }
    }
}

impl FlagConfig {
    pub fn validate(&self) -> Result<(), String> {
        match self.hold.iter().find(|h| !Flag::CHECKED.contains(h)) {
            Some(bad) => Err(format!(
                "flags.hold: {bad} is not raised on requests (holdable: {})",
                Flag::CHECKED.map(Flag::as_str).join(", ")
            )),
            None => Ok(()),
        }
    }
}

/// `[monitor]` configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MonitorConfig {
    /// Browse for other advertisers (needs `mdns.enabled`).
    pub enabled: bool,
    /// `pause` provisioning on an alert (until an administrator resumes it),
    /// or only `alert`.
    pub on_rogue: OnRogue,
    /// Daemon ids or CA fingerprints of other daemons that may advertise on
    /// the same networks (they are logged, not alerted on).
    pub allow: Vec<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnRogue {
    Pause,
    Alert,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            enabled: true,
            on_rogue: OnRogue::Pause,
            allow: Vec::new(),
        }
    }
}

/// `[policy]` configuration: rules (`[[policy.rules]]`, read-only, always
/// evaluated before the rules stored through the admin API) and the bounds
/// of enrollment windows.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    pub rules: Vec<idprov_proto::policy::Rule>,
    /// Most rules, configured and stored together.
    pub max_rules: usize,
    /// How long a window stays open when the administrator does not say.
    #[serde(with = "humantime_serde")]
    pub window_default: Duration,
    /// The longest a window may be opened for.
    #[serde(with = "humantime_serde")]
    pub window_max: Duration,
    /// Most windows open at once.
    pub max_open_windows: usize,
    /// Refused proofs while a window is open that close it, with an alert
    /// (Matter closes its commissioning window after 20 failed attempts).
    pub window_max_failed_proofs: u32,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            rules: Vec::new(),
            max_rules: 100,
            window_default: Duration::from_secs(600),
            window_max: Duration::from_secs(3600),
            max_open_windows: 8,
            window_max_failed_proofs: 20,
        }
    }
}

/// Which storage backend holds the records.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// The embedded store file in the data dir (one daemon).
    #[default]
    Redb,
    /// A PostgreSQL database, shared by every daemon of the site.
    Postgres,
}

/// `[store.postgres]`: how to reach the database. The password never sits
/// in this file: it comes from `password_file` or the environment variable
/// named by `password_env` (and is then held in a type that neither prints
/// nor serializes).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresConfig {
    /// A libpq connection URL (`postgresql://idprov@db.example/idprov`) or
    /// key=value parameters (`host=/run/postgresql dbname=idprov`), without
    /// a password.
    pub url: String,
    /// A file holding the password (first line), readable by the daemon only.
    pub password_file: Option<PathBuf>,
    /// The name of an environment variable holding the password.
    pub password_env: Option<String>,
    /// Connections this daemon keeps to the database at most.
    pub pool_size: u32,
    /// How long to wait for a connection (new or from the pool) before the
    /// request is answered 503.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            url: String::new(),
            password_file: None,
            password_env: None,
            pool_size: 8,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

impl PolicyConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.window_default.is_zero() || self.window_default > self.window_max {
            return Err("policy.window_default must be between 1s and policy.window_max".into());
        }
        if self.window_max > Duration::from_secs(7 * 86_400) {
            return Err("policy.window_max must be at most 7 days".into());
        }
        if self.max_open_windows == 0 || self.window_max_failed_proofs == 0 {
            return Err(
                "policy.max_open_windows and policy.window_max_failed_proofs must be positive"
                    .into(),
            );
        }
        if self.rules.len() > self.max_rules {
            return Err(format!(
                "policy.rules: {} rules, more than policy.max_rules ({})",
                self.rules.len(),
                self.max_rules
            ));
        }
        check_rules(self.rules.iter()).map_err(|e| format!("policy.rules: {e}"))
    }
}

/// Rule names are unique, and a rule names only flags raised on requests.
pub fn check_rules<'a>(
    rules: impl Iterator<Item = &'a idprov_proto::policy::Rule>,
) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for r in rules {
        if !seen.insert(r.name.as_str()) {
            return Err(format!("two rules are named {}", r.name));
        }
        if let Some(f) = r.flags.iter().find(|f| !Flag::CHECKED.contains(f)) {
            return Err(format!(
                "rule {}: {f} is not raised on requests (flags: {})",
                r.name,
                Flag::CHECKED.map(Flag::as_str).join(", ")
            ));
        }
    }
    Ok(())
}
impl StoreConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.backend != StoreBackend::Postgres {
            return Ok(());
        }
        let pg = &self.postgres;
        if pg.url.trim().is_empty() {
            return Err("store.postgres.url must be set when store.backend = \"postgres\"".into());
        }
        if pg.password_file.is_some() && pg.password_env.is_some() {
            return Err(
                "store.postgres: give the password by password_file or by password_env, not both"
                    .into(),
            );
        }
        if pg.pool_size == 0 || pg.pool_size > 256 {
            return Err("store.postgres.pool_size must be between 1 and 256".into());
        }
        if pg.connect_timeout.is_zero() || pg.connect_timeout > Duration::from_secs(300) {
            return Err("store.postgres.connect_timeout must be between 1s and 5m".into());
        }
        Ok(())
    }
}
