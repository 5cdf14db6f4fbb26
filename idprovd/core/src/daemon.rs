//! The daemon's shared state and the device-facing operations: provisioning
//! (flow 3), renewal (flow 5) and token status. Each operation checks what it
//! can without the store (parsing, the proof's signature and times), then
//! decides and records everything in one durable write transaction, and only
//! then answers (security rule 5).

use std::net::SocketAddr;
use std::sync::Arc;

use idprov_proto::PublicKey;
use idprov_proto::admin::{AdminEvent, DeviceStatus};
use idprov_proto::device::{
    Credentials, ProofEndpoint, ProvisionRequest, ProvisionResponse, RenewRequest,
    TokenStatusResponse, proof_audience,
};
use tokio::sync::{Semaphore, broadcast};

use crate::admins::AdminRegistry;
use crate::clock::Clock;
use crate::config::Config;
use crate::error::Error;
use crate::pki::Pki;
use crate::proof::{self, VerifiedProof};
use crate::provision::{Ask, Outcome, Refusal, Waiting};
use crate::storage::{Change, SharedStore, StoreView, Unit};
use crate::store::{AuditDraft, DeviceRecord, KeyRecord, StoreError, TokenRecord};
use crate::tokens;

/// Seconds the clock may step back before the daemon refuses to issue.
const CLOCK_TOLERANCE: i64 = 5;
/// Expired replay/token records purged per request, to keep work bounded.
const PURGE_PER_REQUEST: usize = 64;

pub struct Daemon {
    pub cfg: Config,
    pub clock: Arc<dyn Clock>,
    pub store: SharedStore,
    pub pki: Pki,
    pub admins: AdminRegistry,
    pub events: broadcast::Sender<AdminEvent>,
    pub event_streams: Arc<Semaphore>,
    /// The CRL and its regeneration (crl.rs).
    pub x509: crate::crl::X509State,
    /// Cancelled when the daemon shuts down (ends event streams at once).
    pub shutdown: tokio_util::sync::CancellationToken,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Per-source and per-device request limits (ratelimit.rs).
    pub rate_limits: crate::ratelimit::RateLimits,
    /// Recent refused proofs, for the `proof_failures` flag (flags.rs).
    pub proof_failures: crate::flags::FailureTracker,
    /// Rogue-advertiser alerts (monitor.rs).
    pub alerts: crate::alerts::Alerts,
    /// Open bulk OOB import sessions (oob_import.rs).
    pub imports: crate::oob_import::Imports,
}

impl Daemon {
    pub fn daemon_id(&self) -> &str {
        &self.pki.identity.daemon_id
    }

    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// The unit of work: run decision `f` (reads through the view, writes
    /// recorded in the unit) and apply what it recorded in one durable
    /// transaction, off the async threads; then publish the unit's events.
    /// `f` may run again if the store retries, so it has no other effects.
    pub async fn transact<T: Send + 'static>(
        self: &Arc<Self>,
        mut f: impl FnMut(&Daemon, &dyn StoreView, &mut Unit) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let d = Arc::clone(self);
        let (out, events) = blocking(move || d.store.transact_with(|v, u| f(&d, v, u))).await?;
        self.publish(events);
        Ok(out)
    }

    /// [`Daemon::transact`] that returns the committed unit's events
    /// instead of publishing them (for a caller that needs what the store
    /// assigned, such as an audit sequence number).
    pub async fn transact_unpublished<T: Send + 'static>(
        self: &Arc<Self>,
        mut f: impl FnMut(&Daemon, &dyn StoreView, &mut Unit) -> Result<T, Error> + Send + 'static,
    ) -> Result<(T, Vec<AdminEvent>), Error> {
        let d = Arc::clone(self);
        blocking(move || d.store.transact_with(|v, u| f(&d, v, u))).await
    }

    /// A store operation of its own (bulk import staging), off the async
    /// threads.
    pub async fn with_store<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&dyn crate::storage::Store) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let d = Arc::clone(self);
        blocking(move || f(d.store.as_ref())).await
    }

    /// Read from one consistent snapshot, off the async threads.
    pub async fn read<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Daemon, &dyn StoreView) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let d = Arc::clone(self);
        blocking(move || d.store.read_with(|v| f(&d, v))).await
    }

    pub fn publish(&self, events: Vec<AdminEvent>) {
        for e in events {
            // No subscribers is fine.
            let _ = self.events.send(e);
        }
    }

    /// Flow 3: match the request against devices, the OOB list and pending.
    pub async fn provision(
        self: &Arc<Self>,
        req: ProvisionRequest,
        source: SocketAddr,
        binding: Option<&[u8]>,
    ) -> Result<ProvisionResponse, Error> {
        let key = PublicKey::from_pem(&req.public_key, req.key_format)
            .map_err(|e| Error::bad_request(format!("public_key: {e}")))?;
        let now = self.now();
        let aud = proof_audience(self.daemon_id(), ProofEndpoint::Provision);
        let proof = proof::verify(&req.proof, &key, &req.device_id, &aud, now, &self.cfg.proof)
            .and_then(|p| {
                proof::check_binding(&p, binding, self.cfg.proof.require_channel_binding)?;
                Ok(p)
            })
            .map_err(|reason| {
                tracing::info!(device_id = %req.device_id, %source, %reason, "proof refused");
                self.metrics
                    .proof_failure(crate::metrics::proof_class(&reason));
                Error::InvalidProof
            })?;

        let csr = self.prepare_csr(req.csr.as_deref(), &req.device_id)?;
        self.check_presented_key(&req.device_id, &key).await?;
        let recent_failures = self
            .proof_failures
            .recent(req.device_id.as_str(), source.ip());
        let seen = crate::flags::Observed {
            // Only read when there is a claim to compare.
            neighbour_mac: req.mac.and_then(|_| crate::neighbour::lookup(source.ip())),
            recent_failures,
        };
        let outcome = self
            .transact(move |d, v, u| {
                let ask = Ask {
                    req: &req,
                    key: &key,
                    proof: &proof,
                    csr: csr.as_ref(),
                    now,
                    src: source.ip().to_string(),
                    seen: &seen,
                };
                d.provision_tx(v, u, &ask)
            })
            .await?;
        // Counted only now that the decision is committed.
        match outcome {
            Outcome::Issued(c, rule) => {
                self.metrics.decision("approved", rule.as_str());
                self.metrics.token_issued();
                if c.certificate.is_some() {
                    self.metrics.certificate_issued();
                }
                Ok(ProvisionResponse::Approved(c))
            }
            Outcome::Pending(p, rule) => {
                self.metrics.decision("pending", rule.as_str());
                if rule == Waiting::MacChanged {
                    self.metrics.alert(crate::flags::Flag::MacChanged.as_str());
                }
                Ok(ProvisionResponse::Pending(p))
            }
            Outcome::Refused(rule) => {
                self.metrics.decision("refused", rule.as_str());
                if rule != Refusal::NotActive {
                    self.metrics.alert(rule.as_str());
                }
                Err(Error::Refused)
            }
        }
    }

    /// Flow 5: a fresh token for a valid token plus a fresh proof.
    pub async fn renew(
        self: &Arc<Self>,
        req: RenewRequest,
        source: SocketAddr,
        binding: Option<&[u8]>,
    ) -> Result<Credentials, Error> {
        let now = self.now();
        let claims = tokens::verify(
            &self.pki.signing,
            self.daemon_id(),
            &self.cfg.tokens.audience,
            &req.token,
            now,
        )
        .map_err(|reason| {
            tracing::info!(%source, %reason, "renewal token refused");
            self.metrics.proof_failure("token");
            Error::InvalidToken
        })?;
        let device_id: idprov_proto::DeviceId =
            claims.sub.parse().map_err(|_| Error::InvalidToken)?;
        let id = device_id.to_string();
        // The key comes from the store, named by the token's cnf.jkt.
        let (dev, rec) = self
            .read(move |_, v| {
                let dev = v.device(&id)?;
                let rec = v.token(&claims.jti)?;
                Ok((dev, rec))
            })
            .await?;
        let (Some(dev), Some(rec)) = (dev, rec) else {
            return Err(Error::InvalidToken);
        };
        if rec.device_epoch != dev.epoch || dev.status != DeviceStatus::Active {
            return Err(Error::InvalidToken);
        }
        let Some(key_rec) = dev.key(&rec.kid).filter(|k| k.is_usable(now)) else {
            return Err(Error::InvalidToken);
        };
        let key = PublicKey::from_pem(&key_rec.pem, Some(key_rec.format))
            .map_err(|e| Error::from(StoreError::Record(e.to_string())))?;
        let aud = proof_audience(self.daemon_id(), ProofEndpoint::Renew);
        let proof = proof::verify(&req.proof, &key, &device_id, &aud, now, &self.cfg.proof)
            .and_then(|p| {
                proof::check_binding(&p, binding, self.cfg.proof.require_channel_binding)?;
                Ok(p)
            })
            .map_err(|reason| {
                tracing::info!(device_id = %device_id, %source, %reason, "renewal proof refused");
                self.metrics
                    .proof_failure(crate::metrics::proof_class(&reason));
                Error::InvalidProof
            })?;
        let epoch = dev.epoch;
        let kid = rec.kid.clone();
        let csr = self.prepare_csr(req.csr.as_deref(), &device_id)?;
        let creds = self
            .transact(move |d, v, u| {
                d.preflight(v, u, now)?;
                d.consume_proof(v, u, device_id.as_str(), &proof)?;
                // Re-read inside the transaction: a revocation that committed
                // since our read wins (rule 4).
                let mut dev = v
                    .device(device_id.as_str())?
                    .filter(|d| d.epoch == epoch && d.status == DeviceStatus::Active)
                    .ok_or(Error::InvalidToken)?;
                if !dev.key(&kid).is_some_and(|k| k.is_usable(now)) {
                    return Err(Error::InvalidToken);
                }
                let mut creds = d.issue(u, &mut dev, &kid, now)?;
                d.attach_certificate(v, u, &dev, &mut creds, csr.as_ref(), now)?;
                u.event(AdminEvent::DeviceUpserted { device: dev.view() });
                Ok(creds)
            })
            .await?;
        self.metrics.token_issued();
        self.metrics.renewal("token");
        if creds.certificate.is_some() {
            self.metrics.certificate_issued();
        }
        Ok(creds)
    }

    /// May a hub service still honour this token?
    pub async fn token_status(
        self: &Arc<Self>,
        token: String,
    ) -> Result<TokenStatusResponse, Error> {
        let now = self.now();
        let inactive = |reason: &str| TokenStatusResponse {
            active: false,
            device_id: None,
            expires_at: None,
            reason: Some(reason.to_string()),
        };
        let claims = match tokens::verify(
            &self.pki.signing,
            self.daemon_id(),
            &self.cfg.tokens.audience,
            &token,
            now,
        ) {
            Ok(c) => c,
            Err(tokens::TokenError::Expired) => return Ok(inactive("expired")),
            Err(_) => return Ok(inactive("unknown")),
        };
        let jti = claims.jti.clone();
        let sub = claims.sub.clone();
        let (dev, rec) = self
            .read(move |_, v| Ok((v.device(&sub)?, v.token(&jti)?)))
            .await?;
        let Some(rec) = rec else {
            return Ok(inactive("unknown"));
        };
        let reason = match dev {
            None => Some("device_removed"),
            Some(d) if d.epoch != rec.device_epoch => Some("device_removed"),
            Some(d) if d.status != DeviceStatus::Active => Some("device_revoked"),
            Some(d) if !d.key(&rec.kid).is_some_and(|k| k.is_usable(now)) => Some("key_removed"),
            Some(_) => None,
        };
        Ok(TokenStatusResponse {
            active: reason.is_none(),
            device_id: Some(rec.device_id),
            expires_at: Some(rec.expires_at),
            reason: reason.map(str::to_string),
        })
    }

    /// Checks every issuing transaction makes first.
    pub(crate) fn preflight(&self, v: &dyn StoreView, u: &mut Unit, now: i64) -> Result<(), Error> {
        if v.provisioning()?.paused {
            return Err(Error::Paused);
        }
        if v.clock_high_water()?
            .is_some_and(|hwm| now + CLOCK_TOLERANCE < hwm)
        {
            tracing::error!(now, "clock went backwards; refusing to issue");
            return Err(Error::ClockRegressed);
        }
        u.change(Change::AdvanceClock(now));
        Ok(())
    }

    /// Make the proof single-use (invariant I5), keeping the cache bounded.
    pub(crate) fn consume_proof(
        &self,
        v: &dyn StoreView,
        u: &mut Unit,
        device_id: &str,
        proof: &VerifiedProof,
    ) -> Result<(), Error> {
        let now = self.now();
        let max = self.cfg.proof.replay_cache_max;
        let mut purge = PURGE_PER_REQUEST;
        if v.replay_count()? >= max {
            // Forgetting a live proof early would allow a replay: refuse.
            if v.replay_live_count(now)? >= max {
                return Err(Error::busy(
                    "too many recent proofs; try later",
                    Some(self.cfg.proof.max_lifetime.as_secs()),
                ));
            }
            purge = usize::MAX;
        }
        u.change(Change::PurgeExpired { now, max: purge });
        let key = format!("{device_id}\n{}", proof.jti);
        if v.proof_seen(&key)? {
            tracing::info!(device_id, "replayed proof refused");
            self.metrics.proof_failure("replayed");
            return Err(Error::InvalidProof);
        }
        u.change(Change::RememberProof {
            key,
            until: proof.remember_until,
        });
        Ok(())
    }

    /// Sign a token, record it, and update the device (caller stores it).
    pub(crate) fn issue(
        &self,
        u: &mut Unit,
        dev: &mut DeviceRecord,
        kid: &str,
        now: i64,
    ) -> Result<Credentials, Error> {
        let lifetime = self.cfg.tokens.lifetime.as_secs() as i64;
        let issued = tokens::issue(
            &self.pki.signing,
            self.daemon_id(),
            &self.cfg.tokens.audience,
            dev.device_id.as_str(),
            kid,
            now,
            lifetime,
        )
        .map_err(|e| Error::internal("the daemon could not sign a token", e))?;
        u.change(Change::PutToken(TokenRecord {
            jti: issued.claims.jti.clone(),
            device_id: dev.device_id.clone(),
            device_epoch: dev.epoch,
            kid: kid.to_string(),
            issued_at: now,
            expires_at: issued.claims.exp,
        }));
        dev.last_issued_at = Some(now);
        dev.tokens_issued += 1;
        dev.revision += 1;
        u.put_device(dev);
        tracing::info!(device_id = %dev.device_id, jti = %issued.claims.jti, "token issued");
        Ok(Credentials {
            device_id: dev.device_id.clone(),
            token: issued.token,
            issued_at: now,
            expires_at: issued.claims.exp,
            renew_after: now + lifetime / 2,
            key_id: kid.to_string(),
            certificate: None,
            ca_chain: Vec::new(),
        })
    }
}

pub(crate) fn new_device(
    req: &ProvisionRequest,
    key: &PublicKey,
    now: i64,
    admitted_by: &str,
) -> DeviceRecord {
    DeviceRecord {
        device_id: req.device_id.clone(),
        status: DeviceStatus::Active,
        epoch: rand::random(),
        keys: vec![KeyRecord {
            kid: key.thumbprint().to_string(),
            format: key.format(),
            pem: key.pem().to_string(),
            added_at: now,
            expires_at: None,
        }],
        mac: req.mac,
        admitted_by: admitted_by.to_string(),
        created_at: now,
        last_issued_at: None,
        tokens_issued: 0,
        flags: Vec::new(),
        revision: 0,
        status_reason: None,
    }
}

pub fn draft(
    at: i64,
    actor: &str,
    action: &str,
    target: Option<&str>,
    source: Option<&str>,
    detail: String,
) -> AuditDraft {
    AuditDraft {
        at,
        actor: actor.to_string(),
        action: action.to_string(),
        target: target.map(str::to_string),
        source: source.map(str::to_string),
        detail,
    }
}

impl Daemon {
    /// Drop pending requests not seen within `pending.expiry`, and purge
    /// expired replay and token records.
    pub async fn expire_pending(self: &Arc<Self>) -> Result<usize, Error> {
        let now = self.now();
        let cutoff = now - self.cfg.pending.expiry.as_secs() as i64;
        self.transact(move |_, v, u| {
            u.change(Change::PurgeExpired { now, max: 10_000 });
            let stale = v.stale_pending(cutoff, 1000)?;
            for p in &stale {
                u.change(Change::DeletePending(p.device_id.clone()));
                u.audit(draft(
                    now,
                    "daemon",
                    "pending_expired",
                    Some(p.device_id.as_str()),
                    None,
                    format!("last seen {}", p.last_seen),
                ));
                u.event(AdminEvent::PendingRemoved {
                    device_id: p.device_id.clone(),
                });
            }
            Ok(stale.len())
        })
        .await
    }
}

/// Run store work on the blocking pool; a task that died is an internal
/// error, never a panic of the handler.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        tracing::error!(error = %e, "store task failed");
        Error::internal("the daemon could not complete the request", e)
    })?
}
