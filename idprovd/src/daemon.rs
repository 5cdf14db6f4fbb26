//! The daemon's shared state and the device-facing operations: provisioning
//! (flow 3), renewal (flow 5) and token status. Each operation checks what it
//! can without the store (parsing, the proof's signature and times), then
//! decides and records everything in one durable write transaction, and only
//! then answers (security rule 5).

use std::net::SocketAddr;
use std::sync::Arc;

use idprov_proto::admin::{AdminEvent, DeviceStatus};
use idprov_proto::device::{
    Credentials, PendingAnswer, ProofEndpoint, ProvisionRequest, ProvisionResponse, RenewRequest,
    TokenStatusResponse, proof_audience,
};
use idprov_proto::PublicKey;
use tokio::sync::{Semaphore, broadcast};

use crate::admins::AdminRegistry;
use crate::clock::Clock;
use crate::config::Config;
use crate::error::Error;
use crate::pki::Pki;
use crate::proof::{self, VerifiedProof};
use crate::store::{
    AuditDraft, DeviceRecord, KeyRecord, PendingRecord, Store, StoreError, TokenRecord, Tx,
    secret_hash,
};
use crate::tokens;

/// Seconds the clock may step back before the daemon refuses to issue.
const CLOCK_TOLERANCE: i64 = 5;
/// Expired replay/token records purged per request, to keep work bounded.
const PURGE_PER_REQUEST: usize = 64;

pub struct Daemon {
    pub cfg: Config,
    pub clock: Arc<dyn Clock>,
    pub store: Store,
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
    pub alerts: crate::monitor::Alerts,
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

    /// Run a store transaction off the async threads.
    pub async fn write<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Daemon, &mut Tx<'_>) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let d = Arc::clone(self);
        blocking(move || d.store.write(|tx| f(&d, tx))).await
    }

    pub async fn read<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Daemon, &crate::store::Rx) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let d = Arc::clone(self);
        blocking(move || d.store.read(|rx| f(&d, rx))).await
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
        let (outcome, events) = self
            .write(move |d, tx| {
                let seen = crate::flags::Observed {
                    // Only read when there is a claim to compare.
                    neighbour_mac: req.mac.and_then(|_| crate::neighbour::lookup(source.ip())),
                    recent_failures,
                };
                let (mut outcome, events) =
                    d.provision_tx(tx, &req, &key, &proof, now, source, &seen)?;
                if let Outcome::Issued(c, ..) = &mut outcome {
                    d.attach_certificate(tx, c, csr.as_ref(), now)?;
                }
                Ok((outcome, events))
            })
            .await?;
        self.publish(events);
        // Counted only now that the decision is committed.
        match outcome {
            Outcome::Issued(c, rule) => {
                self.metrics.decision("approved", rule);
                self.metrics.token_issued();
                if c.certificate.is_some() {
                    self.metrics.certificate_issued();
                }
                Ok(ProvisionResponse::Approved(c))
            }
            Outcome::Pending(p, rule) => {
                self.metrics.decision("pending", rule);
                if rule == "mac_changed" {
                    self.metrics.alert("mac_changed");
                }
                Ok(ProvisionResponse::Pending(p))
            }
            Outcome::Refused(rule) => {
                self.metrics.decision("refused", rule);
                if rule != "not_active" {
                    self.metrics.alert(rule);
                }
                Err(Error::Refused)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn provision_tx(
        &self,
        tx: &mut Tx<'_>,
        req: &ProvisionRequest,
        key: &PublicKey,
        proof: &VerifiedProof,
        now: i64,
        source: SocketAddr,
        seen: &crate::flags::Observed,
    ) -> Result<(Outcome, Vec<AdminEvent>), Error> {
        let id = req.device_id.as_str();
        let src = source.ip().to_string();
        self.preflight(tx, now)?;
        self.consume_proof(tx, id, proof)?;
        let mut events = Vec::new();

        // 1. A device we already know: its key must be one of its keys.
        if let Some(mut dev) = tx.device(id)? {
            if dev.status != DeviceStatus::Active {
                tracing::info!(device_id = id, status = ?dev.status, "refused: not active");
                return Ok((Outcome::Refused("not_active"), events));
            }
            let usable = dev.key(key.thumbprint()).is_some_and(|k| k.is_usable(now));
            if !usable {
                dev.add_flag("key_mismatch");
                dev.revision += 1;
                tx.put_device(id, &dev)?;
                let e = tx.append_audit(draft(
                    now,
                    &format!("device:{id}"),
                    "refused_key_mismatch",
                    Some(id),
                    Some(&src),
                    format!(
                        "presented key {} is not a key of this device",
                        key.thumbprint()
                    ),
                ))?;
                events.push(AdminEvent::DeviceUpserted { device: dev.view() });
                events.push(AdminEvent::Audit { entry: e });
                return Ok((Outcome::Refused("key_mismatch"), events));
            }
            let live_keys = dev.keys.iter().filter(|k| k.is_usable(now)).count();
            if live_keys > 1 && proof.kid.is_none() {
                tracing::info!(device_id = id, "proof without kid for a multi-key device");
                self.metrics.proof_failure("kid_missing");
                return Err(Error::InvalidProof);
            }
            let mut raised =
                crate::flags::check(tx, &self.cfg.flags, id, key.thumbprint(), req.mac, seen)?;
            let lifetime = self.cfg.tokens.lifetime.as_secs() as i64;
            if let Some(last) = dev.last_issued_at.filter(|t| t + lifetime > now) {
                raised.push(crate::flags::Flag {
                    name: crate::flags::REPEAT_PROVISION,
                    detail: format!("asked again while the token issued at {last} is valid"),
                });
            }
            if let Some(e) = self.flag_device(tx, &mut dev, &raised, now, &src)? {
                events.push(AdminEvent::Audit { entry: e });
            }
            // A device an administrator approved gets its first token here.
            let rule = if dev.tokens_issued == 0 && dev.admitted_by.starts_with("admin") {
                "admin"
            } else {
                "device_key"
            };
            let creds = self.issue(tx, &mut dev, key.thumbprint(), now)?;
            events.push(AdminEvent::DeviceUpserted { device: dev.view() });
            return Ok((Outcome::Issued(creds, rule), events));
        }

        // 2. The OOB list. A flagged match is held in pending (flags.rs).
        let mut held: Option<Vec<crate::flags::Flag>> = None;
        if let Some(entry) = tx.oob(id)?.filter(|e| !e.is_expired(now)) {
            let mut mismatch = Vec::new();
            if entry.kid.as_deref().is_some_and(|k| k != key.thumbprint()) {
                mismatch.push("public key");
            }
            if entry.mac.is_some() && entry.mac != req.mac {
                mismatch.push("MAC");
            }
            let mut admitted_by = if entry.kid.is_some() {
                "oob_key"
            } else if entry.mac.is_some() {
                "oob_mac"
            } else {
                "oob_secret"
            };
            if let (Some(hash), Some(salt)) = (&entry.secret_hash, &entry.secret_salt) {
                let given = req.secret.as_ref().map(|s| secret_hash(salt, s.expose()));
                let matches = given.is_some_and(|g| {
                    subtle::ConstantTimeEq::ct_eq(g.as_bytes(), hash.as_bytes()).into()
                });
                if !matches || entry.secret_consumed_at.is_some() {
                    mismatch.push("one-time secret");
                } else if entry.kid.is_none() && entry.mac.is_none() {
                    admitted_by = "oob_secret";
                }
            }
            if !mismatch.is_empty() {
                let e = tx.append_audit(draft(
                    now,
                    &format!("device:{id}"),
                    "refused_oob_mismatch",
                    Some(id),
                    Some(&src),
                    format!("{} does not match the OOB entry", mismatch.join(", ")),
                ))?;
                events.push(AdminEvent::Audit { entry: e });
                return Ok((Outcome::Refused("oob_mismatch"), events));
            }
            let raised =
                crate::flags::check(tx, &self.cfg.flags, id, key.thumbprint(), req.mac, seen)?;
            if crate::flags::holds(&self.cfg.flags, &raised) {
                held = Some(raised);
            } else {
                return self.admit_oob(tx, req, key, entry, admitted_by, raised, now, &src);
            }
        }

        // 3. Unknown (or held): wait for an administrator.
        self.pending_tx(tx, req, key, now, &src, seen, held)
    }

    /// Admit a device the OOB list names (flow 3), issuing its first token.
    #[allow(clippy::too_many_arguments)]
    fn admit_oob(
        &self,
        tx: &mut Tx<'_>,
        req: &ProvisionRequest,
        key: &PublicKey,
        mut entry: crate::store::OobRecord,
        admitted_by: &'static str,
        raised: Vec<crate::flags::Flag>,
        now: i64,
        src: &str,
    ) -> Result<(Outcome, Vec<AdminEvent>), Error> {
        let id = req.device_id.as_str();
        let src = src.to_string();
        let mut events = Vec::new();
        {
            if entry.secret_hash.is_some() {
                entry.secret_consumed_at = Some(now);
                entry.updated_at = now;
                tx.put_oob(&entry)?;
            }
            let mut dev = new_device(req, key, now, admitted_by);
            tx.note_identity(id, key.thumbprint(), req.mac)?;
            if let Some(e) = self.flag_device(tx, &mut dev, &raised, now, &src)? {
                events.push(AdminEvent::Audit { entry: e });
            }
            if tx.delete_pending(id)? {
                events.push(AdminEvent::PendingRemoved {
                    device_id: req.device_id.clone(),
                });
            }
            let e = tx.append_audit(draft(
                now,
                "daemon",
                "device_admitted",
                Some(id),
                Some(&src),
                format!("admitted by {admitted_by}, key {}", key.thumbprint()),
            ))?;
            let creds = self.issue(tx, &mut dev, key.thumbprint(), now)?;
            events.push(AdminEvent::DeviceUpserted { device: dev.view() });
            events.push(AdminEvent::Audit { entry: e });
            Ok((Outcome::Issued(creds, admitted_by), events))
        }
    }

    /// Record a request for an unknown device, or one whose OOB match was
    /// `held` for its flags, in the pending queue.
    #[allow(clippy::too_many_arguments)]
    fn pending_tx(
        &self,
        tx: &mut Tx<'_>,
        req: &ProvisionRequest,
        key: &PublicKey,
        now: i64,
        src: &str,
        seen: &crate::flags::Observed,
        held: Option<Vec<crate::flags::Flag>>,
    ) -> Result<(Outcome, Vec<AdminEvent>), Error> {
        let id = req.device_id.as_str();
        let src = src.to_string();
        let mut events = Vec::new();
        let was_held = held.is_some();
        let raised = match held {
            Some(f) => f,
            None => crate::flags::check(tx, &self.cfg.flags, id, key.thumbprint(), req.mac, seen)?,
        };
        let retry = self.cfg.pending.retry_after.as_secs().max(1);
        let answer = PendingAnswer {
            device_id: req.device_id.clone(),
            retry_after_secs: retry,
            verification_code: key.verification_code(),
        };
        let rule = match tx.pending(id)? {
            Some(mut p) => {
                if p.kid != key.thumbprint() {
                    // Someone else claims this id with another key: keep the
                    // first request, flag it, refuse this one.
                    p.add_flag("key_conflict");
                    p.revision += 1;
                    tx.put_pending(id, &p)?;
                    let e = tx.append_audit(draft(
                        now,
                        &format!("device:{id}"),
                        "refused_pending_key_conflict",
                        Some(id),
                        Some(&src),
                        format!(
                            "key {} differs from the pending request's",
                            key.thumbprint()
                        ),
                    ))?;
                    events.push(AdminEvent::PendingUpserted { pending: p.view() });
                    events.push(AdminEvent::Audit { entry: e });
                    return Ok((Outcome::Refused("key_conflict"), events));
                }
                let earliest = p.last_seen + (retry as i64) / 2;
                if now < earliest {
                    // Abort: nothing is recorded, the proof is not consumed.
                    let wait = (p.last_seen + retry as i64 - now).max(1) as u64;
                    return Err(Error::SlowDown { retry_after: wait });
                }
                let rule = if p.mac != req.mac {
                    p.add_flag("mac_changed");
                    "mac_changed"
                } else {
                    "repeat"
                };
                let fresh: Vec<_> = raised
                    .iter()
                    .filter(|f| !p.flags.iter().any(|g| g == f.name))
                    .cloned()
                    .collect();
                for f in &fresh {
                    p.add_flag(f.name);
                }
                p.last_seen = now;
                p.attempts += 1;
                p.source = src.clone();
                p.revision += 1;
                tx.put_pending(id, &p)?;
                events.push(AdminEvent::PendingUpserted { pending: p.view() });
                if !fresh.is_empty() {
                    let e = tx.append_audit(draft(
                        now,
                        "daemon",
                        "request_flagged",
                        Some(id),
                        Some(&src),
                        crate::flags::describe(&fresh),
                    ))?;
                    events.push(AdminEvent::Audit { entry: e });
                }
                rule
            }
            None => {
                if tx.pending_count()? >= self.cfg.pending.cap {
                    return Err(Error::PendingFull { retry_after: retry });
                }
                let p = PendingRecord {
                    device_id: req.device_id.clone(),
                    key_format: key.format(),
                    kid: key.thumbprint().to_string(),
                    public_key: key.pem().to_string(),
                    mac: req.mac,
                    source: src.clone(),
                    first_seen: now,
                    last_seen: now,
                    attempts: 1,
                    flags: raised.iter().map(|f| f.name.to_string()).collect(),
                    revision: 1,
                };
                tx.put_pending(id, &p)?;
                tx.note_identity(id, key.thumbprint(), req.mac)?;
                let why = if was_held {
                    "listed out of band but flagged, held for an administrator"
                } else {
                    "unknown device"
                };
                let mut detail = format!("{why}, key {}", key.thumbprint());
                if !raised.is_empty() {
                    detail.push_str("; flags: ");
                    detail.push_str(&crate::flags::describe(&raised));
                }
                let e = tx.append_audit(draft(
                    now,
                    &format!("device:{id}"),
                    if raised.is_empty() {
                        "pending_added"
                    } else {
                        "pending_added_flagged"
                    },
                    Some(id),
                    Some(&src),
                    detail,
                ))?;
                events.push(AdminEvent::PendingUpserted { pending: p.view() });
                events.push(AdminEvent::Audit { entry: e });
                if raised.is_empty() { "new" } else { "flagged" }
            }
        };
        Ok((Outcome::Pending(answer, rule), events))
    }

    /// Add newly raised flags to a device record (the caller stores it) and
    /// audit them; flags already on the record are not audited again.
    fn flag_device(
        &self,
        tx: &mut Tx<'_>,
        dev: &mut DeviceRecord,
        raised: &[crate::flags::Flag],
        now: i64,
        src: &str,
    ) -> Result<Option<idprov_proto::admin::AuditEntry>, Error> {
        let fresh: Vec<_> = raised
            .iter()
            .filter(|f| !dev.flags.iter().any(|g| g == f.name))
            .cloned()
            .collect();
        if fresh.is_empty() {
            return Ok(None);
        }
        for f in &fresh {
            dev.add_flag(f.name);
        }
        dev.revision += 1;
        let id = dev.device_id.as_str();
        tracing::warn!(device_id = id, flags = %crate::flags::describe(&fresh), "device flagged");
        Ok(Some(tx.append_audit(draft(
            now,
            "daemon",
            "device_flagged",
            Some(id),
            Some(src),
            crate::flags::describe(&fresh),
        ))?))
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
            .read(move |_, rx| {
                let dev = rx.device(&id)?;
                let rec = rx.token(&claims.jti)?;
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
        let (creds, events) = self
            .write(move |d, tx| {
                d.preflight(tx, now)?;
                d.consume_proof(tx, device_id.as_str(), &proof)?;
                // Re-read inside the transaction: a revocation that committed
                // since our read wins (rule 4).
                let mut dev = tx
                    .device(device_id.as_str())?
                    .filter(|d| d.epoch == epoch && d.status == DeviceStatus::Active)
                    .ok_or(Error::InvalidToken)?;
                if !dev.key(&kid).is_some_and(|k| k.is_usable(now)) {
                    return Err(Error::InvalidToken);
                }
                let mut creds = d.issue(tx, &mut dev, &kid, now)?;
                d.attach_certificate(tx, &mut creds, csr.as_ref(), now)?;
                Ok((
                    creds,
                    vec![AdminEvent::DeviceUpserted { device: dev.view() }],
                ))
            })
            .await?;
        self.publish(events);
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
            .read(move |_, rx| Ok((rx.device(&sub)?, rx.token(&jti)?)))
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
    pub(crate) fn preflight(&self, tx: &mut Tx<'_>, now: i64) -> Result<(), Error> {
        if tx.provisioning()?.paused {
            return Err(Error::Paused);
        }
        if !tx.check_clock(now, CLOCK_TOLERANCE)? {
            tracing::error!(now, "clock went backwards; refusing to issue");
            return Err(Error::ClockRegressed);
        }
        Ok(())
    }

    /// Make the proof single-use (invariant I5), keeping the cache bounded.
    pub(crate) fn consume_proof(
        &self,
        tx: &mut Tx<'_>,
        device_id: &str,
        proof: &VerifiedProof,
    ) -> Result<(), Error> {
        let now = self.now();
        tx.purge_replay(now, PURGE_PER_REQUEST)?;
        tx.purge_tokens(now, PURGE_PER_REQUEST)?;
        if tx.replay_count()? >= self.cfg.proof.replay_cache_max {
            // Forgetting a live proof early would allow a replay: refuse.
            tx.purge_replay(now, usize::MAX)?;
            if tx.replay_count()? >= self.cfg.proof.replay_cache_max {
                return Err(
                    Error::busy(
                        "too many recent proofs; try later",
                        Some(self.cfg.proof.max_lifetime.as_secs()),
                    ),
                );
            }
        }
        let key = format!("{device_id}\n{}", proof.jti);
        if !tx.remember_proof(&key, proof.remember_until)? {
            tracing::info!(device_id, "replayed proof refused");
            self.metrics.proof_failure("replayed");
            return Err(Error::InvalidProof);
        }
        Ok(())
    }

    /// Sign a token, record it, and update the device (caller stores it).
    pub(crate) fn issue(
        &self,
        tx: &mut Tx<'_>,
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
        tx.put_token(&TokenRecord {
            jti: issued.claims.jti.clone(),
            device_id: dev.device_id.clone(),
            device_epoch: dev.epoch,
            kid: kid.to_string(),
            issued_at: now,
            expires_at: issued.claims.exp,
        })?;
        dev.last_issued_at = Some(now);
        dev.tokens_issued += 1;
        dev.revision += 1;
        tx.put_device(dev.device_id.as_str(), dev)?;
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

/// What a provisioning transaction decided, with the rule that decided it
/// (the `rule` label of `idprov_provisioning_decisions_total`).
pub(crate) enum Outcome {
    /// `device_key`, `admin`, `oob_key`, `oob_mac` or `oob_secret`.
    Issued(Credentials, &'static str),
    /// `new`, `repeat` or `mac_changed`.
    Pending(PendingAnswer, &'static str),
    /// `not_active`, `key_mismatch`, `oob_mismatch` or `key_conflict`.
    Refused(&'static str),
}

fn new_device(
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

pub(crate) fn draft(
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
        let (n, events) = self
            .write(move |_, tx| {
                tx.purge_replay(now, 10_000)?;
                tx.purge_tokens(now, 10_000)?;
                let stale = tx.stale_pending(cutoff, 1000)?;
                let mut events = Vec::new();
                for p in &stale {
                    tx.delete_pending(p.device_id.as_str())?;
                    let e = tx.append_audit(draft(
                        now,
                        "daemon",
                        "pending_expired",
                        Some(p.device_id.as_str()),
                        None,
                        format!("last seen {}", p.last_seen),
                    ))?;
                    events.push(AdminEvent::PendingRemoved {
                        device_id: p.device_id.clone(),
                    });
                    events.push(AdminEvent::Audit { entry: e });
                }
                Ok((stale.len(), events))
            })
            .await?;
        self.publish(events);
        Ok(n)
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
