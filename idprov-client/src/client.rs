//! The client: its builder, the connection to a daemon (discovery, trust,
//! `/info`), provisioning with its waits, and one renewal.

use std::sync::Arc;
use std::time::Duration;

use idprov_proto::device::RenewRequest;
use idprov_proto::device::{Credentials, ProofEndpoint, ProvisionRequest, ProvisionResponse};
use idprov_proto::{DeviceId, ErrorCode, MacAddr, Secret};

use crate::builder::ClientBuilder;
pub(crate) use crate::builder::ServerChoice;
use tokio::sync::Mutex;

use crate::api::{DaemonApi, fetch_ca};
use crate::backoff::Backoff;
use crate::error::Error;
use crate::events::{Event, EventSink};
use crate::keeper::Keeper;
use crate::proof::{DEFAULT_PROOF_LIFETIME_SECS, ServerClock, make_proof};
use crate::signer::Signer;
use crate::store::{SavedState, StateDir};
use crate::trust::{PinnedCa, Trust};

/// A `Retry-After` longer than this is treated as this (hostile or buggy).
const MAX_HINT: Duration = Duration::from_secs(15 * 60);
/// Consecutive refused proofs before giving up: a proof keeps failing when the
/// key or the device id is wrong, and waiting will not fix that.
const MAX_PROOF_FAILURES: u32 = 5;
/// How often a long-lived connection re-reads `/info` (the server's time).
const INFO_REFRESH: Duration = Duration::from_secs(600);

/// The device side of idprov. Cheap to clone; clones share one connection.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) device_id: DeviceId,
    pub(crate) signer: Arc<dyn Signer>,
    pub(crate) mac: Option<MacAddr>,
    pub(crate) secret: Option<Secret>,
    pub(crate) server: ServerChoice,
    pub(crate) trust: Trust,
    pub(crate) state: Option<StateDir>,
    pub(crate) backoff: Backoff,
    pub(crate) events: EventSink,
    pub(crate) clock: Arc<ServerClock>,
    pub(crate) saved: std::sync::Mutex<Option<SavedState>>,
    pub(crate) conn: Mutex<Option<Conn>>,
    /// Send a CSR with every provisioning and renewal.
    pub(crate) client_certificate: bool,
    /// The CA a setup-code exchange pinned, also without a state directory.
    pub(crate) setup_ca: std::sync::Mutex<Option<PinnedCa>>,
}

#[derive(Clone)]
pub(crate) struct Conn {
    api: DaemonApi,
    daemon_id: String,
    proof_lifetime: u64,
    /// When `/info` (and with it the server's time) was last read.
    info_at: std::time::Instant,
}

/// Longest a whole setup-code exchange with one daemon may take (the KDF
/// on a slow device included).
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);

fn proof_lifetime(max: u64) -> u64 {
    DEFAULT_PROOF_LIFETIME_SECS.min(max.max(1))
}

impl Client {
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    pub fn device_id(&self) -> &DeviceId {
        &self.inner.device_id
    }

    /// The RFC 7638 thumbprint of the device key (the `kid` of its proofs).
    pub fn key_thumbprint(&self) -> &str {
        self.inner.signer.public_key().thumbprint()
    }

    /// The code the administrator sees next to this device's request.
    pub fn verification_code(&self) -> String {
        self.inner.signer.public_key().verification_code()
    }

    pub fn mac(&self) -> Option<MacAddr> {
        self.inner.mac
    }

    /// The daemon's time as this client estimates it, unix seconds.
    pub fn server_now(&self) -> i64 {
        self.inner.clock.now()
    }

    /// Credentials: the saved ones if they are still valid for this key, or
    /// new ones from the daemon. Waits while the device is pending, retries
    /// network and busy errors, and returns [`Error::Rejected`] if the
    /// daemon refuses the device. Wrap it in a timeout to bound the wait.
    pub async fn provision(&self) -> Result<Credentials, Error> {
        if let Some(c) = self.usable_saved() {
            self.inner.events.emit(Event::Provisioned {
                expires_at: c.expires_at,
                reused: true,
            });
            return Ok(c);
        }
        self.provision_fresh().await
    }

    /// Provision with a new proof, ignoring saved credentials.
    pub async fn provision_fresh(&self) -> Result<Credentials, Error> {
        let inner = &self.inner;
        let mut failures = 0u32;
        let mut proof_failures = 0u32;
        let mut polls = 0u32;
        loop {
            let result = match self.pending_setup_code()? {
                Some(code) => self
                    .provision_by_setup_code(&code)
                    .await
                    .map(|a| (a, false)),
                None => match self.connection().await {
                    Ok(conn) => self.provision_once(&conn).await,
                    Err(e) => Err(e),
                },
            };
            let wait = match result {
                Ok((ProvisionResponse::Approved(c), _)) => {
                    self.remember(&c).await;
                    inner.events.emit(Event::Provisioned {
                        expires_at: c.expires_at,
                        reused: false,
                    });
                    return Ok(c);
                }
                Ok((ProvisionResponse::Pending(p), waited)) => {
                    failures = 0;
                    let hint = Duration::from_secs(p.retry_after_secs);
                    // A daemon that held the request already spent the wait:
                    // ask again after its hint (often 0), with little jitter.
                    let wait = if waited {
                        inner.backoff.after_hint(hint, 0, MAX_HINT)
                    } else {
                        let wait = inner.backoff.after_hint(hint, polls.min(4), MAX_HINT);
                        polls = polls.saturating_add(1);
                        wait
                    };
                    inner.events.emit(Event::Pending {
                        verification_code: idprov_proto::ids::escape_untrusted(
                            &p.verification_code,
                        ),
                        retry_in: wait,
                    });
                    wait
                }
                Err(e) => {
                    if e.code() == Some(ErrorCode::InvalidProof) {
                        proof_failures += 1;
                        if proof_failures >= MAX_PROOF_FAILURES {
                            return Err(e);
                        }
                    }
                    self.retry_delay(e, &mut failures).await?
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// One renewal attempt with the current token. `Error::Api` with
    /// `invalid_token` means the token is gone: provision again.
    pub async fn renew(&self, current: &Credentials) -> Result<Credentials, Error> {
        let conn = self.connection().await?;
        let csr = self.csr()?;
        let build = |cbt: Option<&str>| {
            Ok(RenewRequest {
                token: current.token.clone(),
                proof: self.proof(&conn, ProofEndpoint::Renew, cbt)?,
                csr: csr.clone(),
            })
        };
        match conn.api.renew(build).await {
            Ok(c) => {
                self.remember(&c).await;
                Ok(c)
            }
            Err(e) => {
                self.after_error(&e).await;
                Err(e)
            }
        }
    }

    /// Provision (or reload) and start a [`Keeper`] that keeps the token fresh.
    pub async fn start(&self) -> Result<Keeper, Error> {
        let creds = self.provision().await?;
        Ok(Keeper::spawn(self.clone(), creds))
    }

    /// Decide how long to wait after `e`, or give up if waiting cannot help.
    pub(crate) async fn retry_delay(
        &self,
        e: Error,
        failures: &mut u32,
    ) -> Result<Duration, Error> {
        if !e.is_retryable() {
            return Err(e);
        }
        self.after_error(&e).await;
        let own = self.inner.backoff.delay(*failures);
        *failures = failures.saturating_add(1);
        let wait = match e.retry_after() {
            Some(hint) => self.inner.backoff.after_hint(hint, 0, MAX_HINT).max(own),
            None => own,
        };
        self.inner.events.emit(Event::RetryScheduled {
            error: e.report(),
            retry_in: wait,
        });
        Ok(wait)
    }

    fn usable_saved(&self) -> Option<Credentials> {
        let saved = self.inner.saved.lock().ok()?.clone()?;
        let c = saved.credentials;
        let fresh = self.inner.clock.now() < c.expires_at;
        // Asked for a certificate but saved without one (the option was just
        // turned on): provisioning again brings one.
        let has_cert = !self.inner.client_certificate || c.certificate.is_some();
        (fresh
            && has_cert
            && c.device_id == self.inner.device_id
            && c.key_id == self.key_thumbprint())
        .then_some(c)
    }

    async fn provision_once(&self, conn: &Conn) -> Result<(ProvisionResponse, bool), Error> {
        let key = self.inner.signer.public_key();
        let csr = self.csr()?;
        let build = |cbt: Option<&str>| {
            Ok(ProvisionRequest {
                device_id: self.inner.device_id.clone(),
                public_key: key.pem().to_string(),
                key_format: Some(key.format()),
                mac: self.inner.mac,
                secret: self.inner.secret.clone(),
                proof: self.proof(conn, ProofEndpoint::Provision, cbt)?,
                csr: csr.clone(),
            })
        };
        let answer = conn.api.provision(build).await;
        if let Err(e) = &answer {
            self.after_error(e).await;
        }
        answer
    }

    /// A CSR from the device key, when a client certificate is wanted. A new
    /// one each time: it costs one signature, like the proof.
    fn csr(&self) -> Result<Option<String>, Error> {
        if !self.inner.client_certificate {
            return Ok(None);
        }
        #[cfg(feature = "x509")]
        {
            crate::csr::build_csr(self.inner.signer.as_ref(), &self.inner.device_id).map(Some)
        }
        // Never asked for without the feature (the builder has no switch).
        #[cfg(not(feature = "x509"))]
        {
            Ok(None)
        }
    }

    /// A proof for `endpoint`, bound to the TLS connection whose exporter
    /// value is `cbt` (RFC 9266).
    fn proof(
        &self,
        conn: &Conn,
        endpoint: ProofEndpoint,
        cbt: Option<&str>,
    ) -> Result<String, Error> {
        make_proof(
            self.inner.signer.as_ref(),
            &self.inner.device_id,
            &conn.daemon_id,
            endpoint,
            self.inner.clock.now(),
            conn.proof_lifetime,
            cbt,
        )
    }

    /// After a network error the daemon may have moved, and after a refused
    /// proof our idea of its clock may be stale: connect afresh next time.
    async fn after_error(&self, e: &Error) {
        if e.is_network() || e.code() == Some(ErrorCode::InvalidProof) {
            *self.inner.conn.lock().await = None;
            if e.is_network()
                && let Ok(mut saved) = self.inner.saved.lock()
                && let Some(s) = saved.as_mut()
            {
                // Do not insist on the saved address: discover again.
                s.server.clear();
            }
        }
    }

    async fn remember(&self, c: &Credentials) {
        if self.inner.client_certificate && c.certificate.is_none() {
            // The token is good; the daemon ignored the CSR (an older one).
            tracing::warn!("asked for a client certificate, but the daemon returned none");
        }
        let (server, daemon_id) = match self.inner.conn.lock().await.as_ref() {
            Some(conn) => (conn.api.base().to_string(), conn.daemon_id.clone()),
            None => (String::new(), String::new()),
        };
        let state = SavedState {
            credentials: c.clone(),
            daemon_id,
            server,
            clock_offset_ms: self.inner.clock.offset_ms(),
        };
        if let Some(dir) = &self.inner.state
            && let Err(e) = dir.save_state(&state)
        {
            // The credentials are good; only a restart would cost a re-provision.
            tracing::warn!("cannot save credentials: {}", e.report());
        }
        if let Ok(mut saved) = self.inner.saved.lock() {
            *saved = Some(state);
        }
    }

    pub(crate) fn forget(&self) {
        if let Some(dir) = &self.inner.state
            && let Err(e) = dir.clear_state()
        {
            tracing::warn!("cannot remove saved credentials: {}", e.report());
        }
        if let Ok(mut saved) = self.inner.saved.lock() {
            *saved = None;
        }
    }

    /// The setup code, while it still has to pin a CA.
    fn pending_setup_code(&self) -> Result<Option<idprov_pake::SetupCode>, Error> {
        match &self.inner.trust {
            Trust::SetupCode(code) if self.configured_ca()?.is_none() => Ok(Some(code.clone())),
            _ => Ok(None),
        }
    }

    /// Run the setup-code exchange with each daemon found (or the one
    /// given) until one completes it; pin its CA and keep the connection.
    async fn provision_by_setup_code(
        &self,
        code: &idprov_pake::SetupCode,
    ) -> Result<ProvisionResponse, Error> {
        let inner = &self.inner;
        let candidates: Vec<String> = match &inner.server {
            ServerChoice::Fixed(url) => vec![url.clone()],
            #[cfg(feature = "mdns")]
            ServerChoice::Discover(opts) => crate::discovery::discover_candidates(*opts)
                .await?
                .iter()
                .filter_map(|d| d.url())
                .collect(),
        };
        let key = inner.signer.public_key();
        let csr = self.csr()?;
        let build = |start: &idprov_proto::setup::StartResponse, cbt: Option<&str>| {
            inner.clock.observe_unix_secs(start.time);
            Ok(ProvisionRequest {
                device_id: inner.device_id.clone(),
                public_key: key.pem().to_string(),
                key_format: Some(key.format()),
                mac: inner.mac,
                secret: inner.secret.clone(),
                proof: make_proof(
                    inner.signer.as_ref(),
                    &inner.device_id,
                    &start.daemon_id,
                    ProofEndpoint::Provision,
                    inner.clock.now(),
                    proof_lifetime(start.proof_max_lifetime_secs),
                    cbt,
                )?,
                csr: csr.clone(),
            })
        };
        let mut last = None;
        for base in candidates {
            match crate::setup::exchange(&base, &inner.device_id, code, &build, SETUP_TIMEOUT).await
            {
                Ok(done) => {
                    if let Some(dir) = &inner.state {
                        dir.save_ca(&done.ca)?;
                    }
                    if let Ok(mut c) = inner.setup_ca.lock() {
                        *c = Some(done.ca.clone());
                    }
                    inner.events.emit(Event::SetupCodeConfirmed {
                        server: base.clone(),
                        fingerprint: done.ca.fingerprint().to_string(),
                    });
                    *inner.conn.lock().await = Some(Conn {
                        api: DaemonApi::new(&base, &done.ca, inner.clock.clone())?,
                        daemon_id: done.daemon_id,
                        proof_lifetime: proof_lifetime(done.proof_max_lifetime_secs),
                        info_at: std::time::Instant::now(),
                    });
                    return Ok(done.answer);
                }
                Err(e) => {
                    tracing::warn!(server = %base, error = %e.report(), "setup-code exchange not completed");
                    inner.events.emit(Event::SetupCodeRefused {
                        server: base.clone(),
                        reason: e.report(),
                    });
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or(Error::NotFound(SETUP_TIMEOUT)))
    }

    /// The current connection, or a new one: find the daemon, establish
    /// trust, read `/info`.
    async fn connection(&self) -> Result<Conn, Error> {
        let mut guard = self.inner.conn.lock().await;
        if let Some(c) = guard.as_mut() {
            // Re-read the server's time now and then: the device clock drifts.
            if c.info_at.elapsed() > INFO_REFRESH {
                match c.api.info().await {
                    Ok(info) => {
                        c.info_at = std::time::Instant::now();
                        c.proof_lifetime = proof_lifetime(info.proof_max_lifetime_secs);
                    }
                    Err(e) => {
                        *guard = None;
                        return Err(e);
                    }
                }
            }
            if let Some(c) = guard.as_ref() {
                return Ok(c.clone());
            }
        }
        let conn = self.connect().await?;
        *guard = Some(conn.clone());
        Ok(conn)
    }

    async fn connect(&self) -> Result<Conn, Error> {
        let inner = &self.inner;
        let mut ca = self.configured_ca()?;
        let saved_server = inner
            .saved
            .lock()
            .ok()
            .and_then(|s| s.as_ref().map(|s| s.server.clone()))
            .filter(|s| !s.is_empty());
        // The base URL, and the CA fingerprint DNS-SD advertised for it.
        let (base, advertised_fp): (String, Option<String>) = match (&inner.server, saved_server) {
            (ServerChoice::Fixed(url), _) => (url.clone(), None),
            #[cfg(feature = "mdns")]
            (ServerChoice::Discover(_), Some(saved)) => (saved, None),
            #[cfg(feature = "mdns")]
            (ServerChoice::Discover(opts), None) => self.discover(ca.as_ref(), *opts).await?,
        };
        if ca.is_none() {
            ca = Some(self.establish_ca(&base, advertised_fp.as_deref()).await?);
        }
        let ca = ca.ok_or_else(|| Error::untrusted("no CA"))?;
        let api = DaemonApi::new(&base, &ca, inner.clock.clone())?;
        let info = api.info().await?;
        if info.ca_fingerprint.to_ascii_lowercase() != ca.fingerprint() {
            return Err(Error::untrusted(format!(
                "{base} reports CA {} but its certificate chains to the pinned CA {}",
                idprov_proto::ids::escape_untrusted(&info.ca_fingerprint),
                ca.fingerprint()
            )));
        }
        let daemon_id = info.daemon_id.clone();
        inner.events.emit(Event::Connected {
            server: base.clone(),
            daemon_id: idprov_proto::ids::escape_untrusted(&daemon_id),
        });
        Ok(Conn {
            api,
            daemon_id,
            proof_lifetime: proof_lifetime(info.proof_max_lifetime_secs),
            info_at: std::time::Instant::now(),
        })
    }

    /// Find the daemon by DNS-SD: its URL and the CA fingerprint it
    /// advertises.
    #[cfg(feature = "mdns")]
    async fn discover(
        &self,
        ca: Option<&PinnedCa>,
        opts: crate::discovery::DiscoveryOptions,
    ) -> Result<(String, Option<String>), Error> {
        let inner = &self.inner;
        let pinned = match (ca, &inner.trust) {
            (Some(ca), _) => Some(ca.fingerprint().to_string()),
            (None, Trust::CaFingerprint(fp)) => Some(fp.clone()),
            (None, _) => None,
        };
        let found = crate::discovery::discover(pinned.as_deref(), opts).await?;
        let url = found.chosen.url().ok_or(Error::NotFound(opts.timeout))?;
        for other in &found.others {
            tracing::warn!(
                instance = %other.instance,
                url = ?other.url(),
                ca = ?other.ca_fingerprint,
                "another idprov daemon advertises on this network; not using it"
            );
        }
        let advertised_fp = found.chosen.ca_fingerprint.clone();
        inner.events.emit(Event::Discovered {
            server: url.clone(),
            daemon_id: found.chosen.daemon_id.clone(),
            others: found.others,
        });
        Ok((url, advertised_fp))
    }

    /// The CA known without asking the daemon: given in full, or saved in the
    /// state directory (when it matches the configured fingerprint).
    fn configured_ca(&self) -> Result<Option<PinnedCa>, Error> {
        let inner = &self.inner;
        if let Trust::CaCertPem(pem) = &inner.trust {
            return PinnedCa::from_pem(pem).map(Some);
        }
        let stored = match &inner.state {
            Some(dir) => dir.load_ca()?,
            None => None,
        };
        Ok(match (&inner.trust, stored) {
            (Trust::CaFingerprint(fp), Some(ca)) if ca.fingerprint() == fp => Some(ca),
            (Trust::TrustOnFirstUse, Some(ca)) => Some(ca),
            (Trust::SetupCode(_), Some(ca)) => Some(ca),
            (Trust::SetupCode(_), None) => inner.setup_ca.lock().ok().and_then(|c| c.clone()),
            _ => None,
        })
    }

    /// Fetch the daemon's CA and decide whether to trust it.
    async fn establish_ca(&self, base: &str, advertised: Option<&str>) -> Result<PinnedCa, Error> {
        let inner = &self.inner;
        let ca = fetch_ca(base).await?;
        match &inner.trust {
            Trust::CaFingerprint(fp) if ca.fingerprint() != fp => {
                return Err(Error::untrusted(format!(
                    "{base} presents CA {} but {fp} is pinned",
                    ca.fingerprint()
                )));
            }
            Trust::CaFingerprint(_) => {}
            Trust::TrustOnFirstUse => {
                if let Some(adv) = advertised
                    && adv != ca.fingerprint()
                {
                    return Err(Error::untrusted(format!(
                        "{base} advertises CA {adv} by DNS-SD but presents {}",
                        ca.fingerprint()
                    )));
                }
                inner.events.emit(Event::TrustedOnFirstUse {
                    fingerprint: ca.fingerprint().to_string(),
                });
            }
            Trust::CaCertPem(_) => {}
            // Never fetched unauthenticated: the exchange pins it.
            Trust::SetupCode(_) => {
                return Err(Error::untrusted(
                    "no CA pinned yet: the setup-code exchange has not completed",
                ));
            }
        }
        if let Some(dir) = &inner.state {
            dir.save_ca(&ca)?;
        }
        Ok(ca)
    }
}
