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
    pub mdns: crate::mdns::MdnsConfig,
    /// Client certificates and the CRL.
    pub certificates: crate::x509::CertConfig,
    /// The Prometheus metrics listener.
    pub metrics: crate::metrics::MetricsConfig,
    /// Watching for rogue provisioning servers.
    pub monitor: crate::monitor::MonitorConfig,
    /// Device-API request limits.
    pub rate_limit: crate::ratelimit::RateLimitConfig,
    /// Flags on suspicious requests.
    pub flags: crate::flags::FlagConfig,
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
            mdns: crate::mdns::MdnsConfig::default(),
            certificates: crate::x509::CertConfig::default(),
            metrics: crate::metrics::MetricsConfig::default(),
            monitor: crate::monitor::MonitorConfig::default(),
            rate_limit: crate::ratelimit::RateLimitConfig::default(),
            flags: crate::flags::FlagConfig::default(),
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
    pub mdns: Option<crate::mdns::MdnsOverrides>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<crate::metrics::MetricsOverrides>,
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
        self.rate_limit.validate().map_err(ConfigError::Invalid)?;
        self.flags.validate().map_err(ConfigError::Invalid)?;
        if self.data_dir.as_os_str().is_empty() {
            return bad("data_dir must not be empty");
        }
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
            let src = e
                .metadata
                .as_ref()
                .map(|m| format!(" (from {})", m.name))
                .unwrap_or_default();
            if path.is_empty() {
                format!("{}{src}", e.kind)
            } else {
                format!("{path}: {}{src}", e.kind)
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}
