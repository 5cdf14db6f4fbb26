//! A typed client of the idprovd admin API (`/idprov/v1/admin/`), used by the
//! TUI, oob-tool and idprovctl. It reads an administrator profile, pins the daemon's
//! CA from it, and maps every error answer to [`AdminError::Api`] with the
//! daemon's stable code.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use idprov_proto::admin::{
    AdminEvent, AdminProfile, AuditEntry, DecisionRequest, DeviceView, ListQuery, OobEntryView,
    OobUpsertRequest, OobUpsertResult, Page, PendingView, ProvisioningState, WhoAmI, paths,
};
use idprov_proto::oob_import;
use idprov_proto::{DeviceId, ErrorBody, ErrorCode};
use reqwest::{Method, StatusCode};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

mod policy;
mod x509;

/// The exit codes of every idprov tool (`idprovd`, `idprovctl`,
/// `idprov-oob`, `idprov-tui`), kept in one place so that a script sees the
/// same number for the same trouble whichever tool it ran (documented in
/// docs/operations.md, "Exit codes").
pub mod exit {
    pub const OK: u8 = 0;
    /// Any other failure (I/O, a request the daemon refused, the daemon
    /// stopped on an error while running).
    pub const FAILURE: u8 = 1;
    /// Bad command line (clap).
    pub const USAGE: u8 = 2;
    /// The configuration (or the administrator profile) is missing or
    /// invalid. Restarting will not help.
    pub const CONFIG: u8 = 3;
    /// The data dir, store or backup is unusable (corrupt, foreign, locked
    /// by another daemon, non-empty restore target). Restarting will not help.
    pub const DATA: u8 = 4;
    /// The daemon could not be reached.
    pub const UNAVAILABLE: u8 = 5;
    /// `idprovd audit verify`: the audit chain is broken (tampering or damage).
    pub const AUDIT_BROKEN: u8 = 6;
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// `cause` is not the `source` either, for the same reason as below.
    #[error("cannot read profile {path}: {cause}")]
    ProfileRead {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("profile {path} is not valid: {message}")]
    ProfileInvalid { path: PathBuf, message: String },
    #[error("no administrator profile found; pass --profile FILE (looked in: {0})")]
    NoProfile(String),
    /// `cause` is deliberately not the error's `source`: its message and
    /// its causes are all in this error's message, so a caller that prints
    /// the chain (`{:#}`) does not repeat them.
    #[error("cannot reach the daemon at {server}: {}", with_causes(cause))]
    Connect {
        server: String,
        cause: reqwest::Error,
    },
    /// The daemon answered with an error.
    #[error("{message} ({code})", code = code.as_str())]
    Api {
        status: u16,
        code: ErrorCode,
        message: String,
        body: Box<ErrorBody>,
    },
    #[error("unexpected answer from the daemon (HTTP {status}): {message}")]
    Unexpected { status: u16, message: String },
}

/// An error's message followed by those of its causes, each said once
/// (reqwest repeats the URL at two levels; a message that the next one
/// already contains is skipped).
fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut next = e.source();
    while let Some(c) = next {
        let m = c.to_string();
        if parts.last().is_some_and(|p| p.contains(&m)) {
            next = c.source();
            continue;
        }
        if parts.last().is_some_and(|p| m.contains(p.as_str())) {
            parts.pop();
        }
        parts.push(m);
        next = c.source();
    }
    parts.join(": ")
}

impl AdminError {
    /// The tools' exit code for this error: the daemon unreachable is
    /// [`exit::UNAVAILABLE`], a missing or bad profile [`exit::CONFIG`],
    /// anything the daemon answered [`exit::FAILURE`].
    pub fn exit_code(&self) -> u8 {
        match self {
            AdminError::Connect { .. } => exit::UNAVAILABLE,
            AdminError::NoProfile(_)
            | AdminError::ProfileRead { .. }
            | AdminError::ProfileInvalid { .. } => exit::CONFIG,
            AdminError::Api { .. } | AdminError::Unexpected { .. } => exit::FAILURE,
        }
    }

    /// The daemon's error code, if the daemon answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            AdminError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Where to look for a profile when none is given: `$IDPROV_PROFILE`,
/// `$XDG_CONFIG_HOME/idprov/profile.toml` (or `~/.config/...`), then the
/// profile idprovd writes into its default data dir on first start.
pub fn default_profile_paths() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(p) = std::env::var_os("IDPROV_PROFILE") {
        out.push(PathBuf::from(p));
    }
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| home.as_ref().map(|h| h.join(".config")));
    if let Some(c) = config {
        out.push(c.join("idprov").join("profile.toml"));
    }
    if let Some(d) = std::env::var_os("IDPROVD_DATA_DIR") {
        out.push(PathBuf::from(d).join("admin.profile"));
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| home.as_ref().map(|h| h.join(".local").join("share")));
    if let Some(d) = data {
        out.push(d.join("idprovd").join("admin.profile"));
    }
    out.push(PathBuf::from("/var/lib/idprovd/admin.profile"));
    out
}

/// Load the given profile, or the first default one that exists.
pub fn load_profile(path: Option<&Path>) -> Result<(PathBuf, AdminProfile), AdminError> {
    let path = match path {
        Some(p) => p.to_path_buf(),
        None => {
            let candidates = default_profile_paths();
            match candidates.iter().find(|p| p.is_file()) {
                Some(p) => p.clone(),
                None => {
                    let list: Vec<String> =
                        candidates.iter().map(|p| p.display().to_string()).collect();
                    return Err(AdminError::NoProfile(list.join(", ")));
                }
            }
        }
    };
    let text = std::fs::read_to_string(&path).map_err(|cause| AdminError::ProfileRead {
        path: path.clone(),
        cause,
    })?;
    let profile: AdminProfile = toml::from_str(&text).map_err(|e| AdminError::ProfileInvalid {
        path: path.clone(),
        message: e.to_string(),
    })?;
    Ok((path, profile))
}

#[derive(Clone)]
pub struct AdminClient {
    http: reqwest::Client,
    /// Client without a total timeout, for the event stream.
    stream_http: reqwest::Client,
    server: String,
    auth: String,
    name: String,
}

impl std::fmt::Debug for AdminClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminClient")
            .field("server", &self.server)
            .field("name", &self.name)
            .finish()
    }
}

impl AdminClient {
    /// Build a client from a profile: TLS pinned to the profile's CA only.
    pub fn new(profile: &AdminProfile) -> Result<Self, AdminError> {
        let invalid = |message: String| AdminError::ProfileInvalid {
            path: PathBuf::from("<profile>"),
            message,
        };
        let mut roots = rustls::RootCertStore::empty();
        let mut found = false;
        for cert in CertificateDer::pem_slice_iter(profile.ca_cert.as_bytes()) {
            let cert = cert.map_err(|e| invalid(format!("ca_cert: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| invalid(format!("ca_cert: {e}")))?;
            found = true;
        }
        if !found {
            return Err(invalid("ca_cert holds no certificate".into()));
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let build = |timeout: Option<Duration>| {
            let mut b = reqwest::Client::builder()
                .use_preconfigured_tls(tls.clone())
                .connect_timeout(Duration::from_secs(10))
                .user_agent(concat!("idprov-admin-client/", env!("CARGO_PKG_VERSION")));
            if let Some(t) = timeout {
                b = b.timeout(t);
            }
            b.build().map_err(|e| invalid(e.to_string()))
        };
        Ok(AdminClient {
            http: build(Some(Duration::from_secs(120)))?,
            stream_http: build(None)?,
            server: profile.server.trim_end_matches('/').to_string(),
            auth: format!("Bearer {}", profile.token.expose()),
            name: profile.name.clone(),
        })
    }

    pub fn from_profile_path(path: Option<&Path>) -> Result<Self, AdminError> {
        let (_, profile) = load_profile(path)?;
        Self::new(&profile)
    }

    pub fn server(&self) -> &str {
        &self.server
    }
    pub fn admin_name(&self) -> &str {
        &self.name
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: Option<&ListQuery>,
        body: Option<&B>,
    ) -> Result<T, AdminError> {
        let resp = self.send(method, path, query, body).await?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|cause| AdminError::Connect {
            server: self.server.clone(),
            cause,
        })?;
        let bytes: &[u8] = if status == StatusCode::NO_CONTENT {
            b"null"
        } else {
            &bytes
        };
        serde_json::from_slice(bytes).map_err(|e| AdminError::Unexpected {
            status: status.as_u16(),
            message: e.to_string(),
        })
    }

    async fn send<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        query: Option<&ListQuery>,
        body: Option<&B>,
    ) -> Result<reqwest::Response, AdminError> {
        let mut req = self
            .http
            .request(method, format!("{}{}", self.server, path))
            .header("authorization", &self.auth);
        if let Some(q) = query {
            req = req.query(q);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|cause| AdminError::Connect {
            server: self.server.clone(),
            cause,
        })?;
        check(resp).await
    }

    pub async fn whoami(&self) -> Result<WhoAmI, AdminError> {
        self.call::<(), _>(Method::GET, paths::WHOAMI, None, None)
            .await
    }

    // ---- OOB ----
    pub async fn oob_list(&self, q: &ListQuery) -> Result<Page<OobEntryView>, AdminError> {
        self.call::<(), _>(Method::GET, paths::OOB, Some(q), None)
            .await
    }
    pub async fn oob_upsert(&self, req: &OobUpsertRequest) -> Result<OobUpsertResult, AdminError> {
        self.call(Method::POST, paths::OOB, None, Some(req)).await
    }
    pub async fn oob_remove(&self, id: &DeviceId) -> Result<(), AdminError> {
        self.send::<()>(Method::DELETE, &format!("{}/{id}", paths::OOB), None, None)
            .await
            .map(drop)
    }

    // ---- OOB import sessions (large atomic imports) ----
    pub async fn oob_import_start(
        &self,
        req: &oob_import::OobImportStart,
    ) -> Result<oob_import::OobImportSession, AdminError> {
        self.call(Method::POST, oob_import::IMPORTS, None, Some(req))
            .await
    }
    pub async fn oob_import_chunk(
        &self,
        session: &str,
        chunk: &oob_import::OobImportChunk,
    ) -> Result<oob_import::OobImportChunkAck, AdminError> {
        let path = format!("{}/{}/chunks", oob_import::IMPORTS, path_segment(session));
        self.call(Method::POST, &path, None, Some(chunk)).await
    }
    pub async fn oob_import_commit(
        &self,
        session: &str,
        req: &oob_import::OobImportCommit,
    ) -> Result<oob_import::OobImportResult, AdminError> {
        let path = format!("{}/{}/commit", oob_import::IMPORTS, path_segment(session));
        self.call(Method::POST, &path, None, Some(req)).await
    }
    pub async fn oob_import_abort(&self, session: &str) -> Result<(), AdminError> {
        let path = format!("{}/{}", oob_import::IMPORTS, path_segment(session));
        self.send::<()>(Method::DELETE, &path, None, None)
            .await
            .map(drop)
    }

    // ---- pending ----
    pub async fn pending_list(&self, q: &ListQuery) -> Result<Page<PendingView>, AdminError> {
        self.call::<(), _>(Method::GET, paths::PENDING, Some(q), None)
            .await
    }
    pub async fn approve(&self, id: &DeviceId, revision: u64) -> Result<DeviceView, AdminError> {
        let body = DecisionRequest {
            revision: Some(revision),
            reason: None,
        };
        self.call(
            Method::POST,
            &format!("{}/{id}/approve", paths::PENDING),
            None,
            Some(&body),
        )
        .await
    }
    pub async fn reject(
        &self,
        id: &DeviceId,
        revision: u64,
        reason: Option<String>,
    ) -> Result<DeviceView, AdminError> {
        let body = DecisionRequest {
            revision: Some(revision),
            reason,
        };
        self.call(
            Method::POST,
            &format!("{}/{id}/reject", paths::PENDING),
            None,
            Some(&body),
        )
        .await
    }

    // ---- devices ----
    pub async fn device_list(&self, q: &ListQuery) -> Result<Page<DeviceView>, AdminError> {
        self.call::<(), _>(Method::GET, paths::DEVICES, Some(q), None)
            .await
    }
    pub async fn device_get(&self, id: &DeviceId) -> Result<DeviceView, AdminError> {
        self.call::<(), _>(Method::GET, &format!("{}/{id}", paths::DEVICES), None, None)
            .await
    }
    pub async fn device_revoke(
        &self,
        id: &DeviceId,
        revision: Option<u64>,
        reason: Option<String>,
    ) -> Result<DeviceView, AdminError> {
        let body = DecisionRequest { revision, reason };
        self.call(
            Method::POST,
            &format!("{}/{id}/revoke", paths::DEVICES),
            None,
            Some(&body),
        )
        .await
    }
    pub async fn device_remove(&self, id: &DeviceId) -> Result<(), AdminError> {
        self.send::<()>(
            Method::DELETE,
            &format!("{}/{id}", paths::DEVICES),
            None,
            None,
        )
        .await
        .map(drop)
    }

    // ---- provisioning switch, audit ----
    pub async fn provisioning(&self) -> Result<ProvisioningState, AdminError> {
        self.call::<(), _>(Method::GET, paths::PROVISIONING, None, None)
            .await
    }
    pub async fn set_provisioning(
        &self,
        state: &ProvisioningState,
    ) -> Result<ProvisioningState, AdminError> {
        self.call(Method::PUT, paths::PROVISIONING, None, Some(state))
            .await
    }
    /// The daemon's clock against its high-water mark.
    pub async fn clock(&self) -> Result<idprov_proto::admin::ClockState, AdminError> {
        self.call::<(), _>(Method::GET, paths::CLOCK, None, None)
            .await
    }
    /// Accept the daemon's current clock after a corrected forward jump
    /// (lowers the high-water mark to it; audited as `clock_accepted`).
    pub async fn accept_clock(&self) -> Result<idprov_proto::admin::ClockState, AdminError> {
        self.call::<(), _>(Method::POST, paths::CLOCK_ACCEPT, None, None)
            .await
    }
    /// Security alerts raised since the daemon started (issue 7).
    pub async fn alerts(&self) -> Result<idprov_proto::admin::AlertList, AdminError> {
        self.call::<(), _>(Method::GET, paths::ALERTS, None, None)
            .await
    }
    pub async fn audit(&self, q: &ListQuery) -> Result<Page<AuditEntry>, AdminError> {
        self.call::<(), _>(Method::GET, paths::AUDIT, Some(q), None)
            .await
    }

    /// Download a consistent backup of the daemon (a tar archive holding
    /// the CA and signing keys: treat it as a secret) into `out`. Returns
    /// the bytes written. No total timeout: a large store takes a while.
    pub async fn backup_to<W: tokio::io::AsyncWrite + Unpin>(
        &self,
        out: &mut W,
    ) -> Result<u64, AdminError> {
        use tokio::io::AsyncWriteExt;
        let connect = |cause| AdminError::Connect {
            server: self.server.clone(),
            cause,
        };
        let resp = self
            .stream_http
            .get(format!("{}{}", self.server, paths::BACKUP))
            .header("authorization", &self.auth)
            .send()
            .await
            .map_err(connect)?;
        let mut resp = check(resp).await?;
        let mut n = 0u64;
        while let Some(chunk) = resp.chunk().await.map_err(connect)? {
            out.write_all(&chunk)
                .await
                .map_err(|e| AdminError::Unexpected {
                    status: 200,
                    message: format!("writing the backup: {e}"),
                })?;
            n += chunk.len() as u64;
        }
        out.flush().await.map_err(|e| AdminError::Unexpected {
            status: 200,
            message: format!("writing the backup: {e}"),
        })?;
        Ok(n)
    }

    /// Subscribe to the event stream. Events arrive on the returned channel
    /// (bounded); the channel closes when the connection drops, and the
    /// caller reconnects (and reloads its lists) as it sees fit.
    pub async fn events(&self) -> Result<mpsc::Receiver<AdminEvent>, AdminError> {
        let resp = self
            .stream_http
            .get(format!("{}{}", self.server, paths::EVENTS))
            .header("authorization", &self.auth)
            .header("accept", "text/event-stream")
            .send()
            .await
            .map_err(|cause| AdminError::Connect {
                server: self.server.clone(),
                cause,
            })?;
        let resp = check(resp).await?;
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(async move {
            let mut stream = resp.bytes_stream();
            let mut buf: Vec<u8> = Vec::new();
            while let Some(Ok(chunk)) = stream.next().await {
                buf.extend_from_slice(&chunk);
                // An event ends with a blank line.
                while let Some(end) = find_blank_line(&buf) {
                    let block: Vec<u8> = buf.drain(..end.1).collect();
                    if let Some(ev) = parse_sse_block(&block[..end.0])
                        && tx.send(ev).await.is_err()
                    {
                        return;
                    }
                }
                if buf.len() > 4 * 1024 * 1024 {
                    return; // a runaway event: drop the connection
                }
            }
        });
        Ok(rx)
    }
}

async fn check(resp: reqwest::Response) -> Result<reqwest::Response, AdminError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let text = resp.text().await.unwrap_or_default();
    match serde_json::from_str::<ErrorBody>(&text) {
        Ok(body) => Err(AdminError::Api {
            status: status.as_u16(),
            code: body.code,
            message: body.message.clone(),
            body: Box::new(body),
        }),
        Err(_) => Err(AdminError::Unexpected {
            status: status.as_u16(),
            message: text.chars().take(200).collect(),
        }),
    }
}

/// (end of block, end of separator)
fn find_blank_line(buf: &[u8]) -> Option<(usize, usize)> {
    let lf = buf
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|i| (i, i + 2));
    let crlf = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, i + 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 < b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

fn parse_sse_block(block: &[u8]) -> Option<AdminEvent> {
    let text = std::str::from_utf8(block).ok()?;
    let mut data = String::new();
    for line in text.lines() {
        if let Some(d) = line.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(d.trim_start());
        }
    }
    if data.is_empty() {
        return None; // comment / keep-alive
    }
    serde_json::from_str(&data).ok()
}

/// A session id goes into a path: keep only characters that need no
/// escaping, so a hostile id cannot change the path.
fn path_segment(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        .collect()
}
