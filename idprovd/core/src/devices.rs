//! The device API's use cases and the device-facing operations: provisioning
//! (flow 3), renewal (flow 5) and token status. Each operation checks what it
//! can without the store (parsing, the proof's signature and times), then
//! decides and records everything in one durable write transaction, and only
//! then answers (security rule 5).

use std::net::SocketAddr;
use std::sync::Arc;

use idprov_proto::PublicKey;
use idprov_proto::admin::{AdminEvent, DeviceStatus};
use idprov_proto::device::{
    Credentials, ProofEndpoint, ProvisionRequest, RenewRequest, TokenStatusResponse, proof_audience,
};

use crate::config::Config;
use crate::context::Core;
use crate::error::Error;
use crate::pki::Pki;
use crate::proof::{self, VerifiedProof};
use crate::storage::{Change, StoreView, Unit};
use crate::store::{DeviceRecord, KeyRecord, StoreError, TokenRecord};
use crate::tokens;

use crate::audit::draft;

/// Seconds the clock may step back before the daemon refuses to issue.
pub(crate) const CLOCK_TOLERANCE: i64 = 5;
/// Expired replay/token records purged per request, to keep work bounded.
const PURGE_PER_REQUEST: usize = 64;

/// The device API's use cases (flows 3 and 5, the X.509 device side):
/// provisioning, renewal, token status, keys added by devices, and the
/// request limits and proof-failure memory they keep.
pub struct Devices {
    core: Core,
    pub cfg: Arc<Config>,
    pub pki: Arc<Pki>,
    /// Per-source and per-device request limits (ratelimit.rs).
    pub rate_limits: crate::ratelimit::RateLimits,
    /// Recent refused proofs, for the `proof_failures` flag (flags.rs).
    pub proof_failures: crate::flags::FailureTracker,
    /// Pending devices waiting on an open request (waiters.rs).
    pub waiters: Arc<crate::waiters::Waiters>,
    /// Refused proofs while an enrollment window is open (windows.rs).
    pub windows: Arc<crate::windows::WindowGuard>,
}

/// `self.metrics`, `self.clock`, `self.store` reach the core.
impl std::ops::Deref for Devices {
    type Target = Core;
    fn deref(&self) -> &Core {
        &self.core
    }
}

impl Devices {
    pub fn new(core: Core, cfg: Arc<Config>, pki: Arc<Pki>) -> Devices {
        let timers = core.clock.clone();
        Devices {
            rate_limits: crate::ratelimit::RateLimits::new(&cfg.rate_limit, timers.clone()),
            proof_failures: crate::flags::FailureTracker::new(
                cfg.flags.proof_failure_window,
                timers,
            ),
            waiters: crate::waiters::Waiters::new(
                cfg.pending.max_waiters,
                cfg.pending.max_waiters_per_source,
            ),
            windows: crate::windows::WindowGuard::new(cfg.policy.window_max_failed_proofs),
            core,
            cfg,
            pki,
        }
    }

    pub fn daemon_id(&self) -> &str {
        &self.pki.identity.daemon_id
    }

    pub fn now(&self) -> i64 {
        self.core.now()
    }

    /// [`Core::transact`] for a decision that needs the service's state
    /// (configuration, keys) besides the store.
    pub async fn transact<T: Send + 'static>(
        self: &Arc<Self>,
        mut f: impl FnMut(&Devices, &dyn StoreView, &mut Unit) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let d = Arc::clone(self);
        self.core.transact(move |v, u| f(&d, v, u)).await
    }

    /// [`Core::read`] with the service's state.
    pub async fn read<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Devices, &dyn StoreView) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let d = Arc::clone(self);
        self.core.read(move |v| f(&d, v)).await
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
        if !dev.key(&rec.kid).is_some_and(|k| k.is_usable(now)) {
            return Err(Error::InvalidToken);
        }
        // Rotation: the token proves the device's earlier authentication; a
        // proof whose `kid` names another usable key of this device (added
        // through add-key, vouched for by a key it held) proves possession
        // of that key, and the new token is bound to it. Without a `kid`,
        // or with the token's own, the token's key signs as before.
        let signer_kid = proof::header_kid(&req.proof).unwrap_or_else(|| rec.kid.clone());
        let Some(key_rec) = dev.key(&signer_kid).filter(|k| k.is_usable(now)) else {
            tracing::info!(device_id = %device_id, %source, kid = %signer_kid, "renewal proof names no usable key of the device");
            self.metrics.proof_failure("kid");
            return Err(Error::InvalidProof);
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
        let token_kid = rec.kid.clone();
        if signer_kid != token_kid {
            tracing::info!(device_id = %device_id, from = %token_kid, to = %signer_kid, "renewal rotates to another key");
        }
        let csr = self.prepare_csr(req.csr.as_deref(), &device_id)?;
        let pre = self.presign(&device_id, &signer_kid, csr.as_ref(), now)?;
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
                if !dev.key(&token_kid).is_some_and(|k| k.is_usable(now)) {
                    return Err(Error::InvalidToken);
                }
                // The proof's key may have been removed since it was checked.
                if !dev.key(&signer_kid).is_some_and(|k| k.is_usable(now)) {
                    return Err(Error::InvalidProof);
                }
                let mut creds = d.issue(u, &mut dev, &signer_kid, now, Some(&pre))?;
                d.attach_certificate(v, u, &dev, &mut creds, csr.as_ref(), Some(&pre))?;
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
        pre: Option<&Presigned>,
    ) -> Result<Credentials, Error> {
        let lifetime = self.cfg.tokens.lifetime.as_secs() as i64;
        let issued = match pre.and_then(|p| p.token(dev.device_id.as_str(), kid, now)) {
            Some(t) => t,
            None => self.sign_token(dev.device_id.as_str(), kid, now)?,
        };
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

/// A token, and a certificate for a CSR, signed before the decision:
/// signing is most of a request's CPU, and the writer (group_commit.rs)
/// must not wait for it. The decision records them only when it issues for
/// exactly this device, key and time; otherwise it signs itself, so the
/// answer is the one signing inside would have given.
pub struct Presigned {
    device_id: String,
    kid: String,
    now: i64,
    token: tokens::Issued,
    /// The CSR key's thumbprint and its certificate.
    cert: Option<(String, crate::x509::Issued)>,
}

impl Presigned {
    pub(crate) fn token(&self, device_id: &str, kid: &str, now: i64) -> Option<tokens::Issued> {
        (self.device_id == device_id && self.kid == kid && self.now == now)
            .then(|| self.token.clone())
    }

    pub(crate) fn cert(
        &self,
        device_id: &str,
        csr_kid: &str,
        now: i64,
    ) -> Option<crate::x509::Issued> {
        let (k, c) = self.cert.as_ref()?;
        (self.device_id == device_id && k == csr_kid && self.now == now).then(|| c.clone())
    }
}

impl Devices {
    fn sign_token(&self, device_id: &str, kid: &str, now: i64) -> Result<tokens::Issued, Error> {
        tokens::issue(
            &self.pki.signing,
            self.daemon_id(),
            &self.cfg.tokens.audience,
            device_id,
            kid,
            now,
            self.cfg.tokens.lifetime.as_secs() as i64,
        )
        .map_err(|e| Error::internal("the daemon could not sign a token", e))
    }

    /// Sign the token for `kid` (and the certificate for `csr`) that a
    /// decision at `now` would issue. Runs on the request's own task, so
    /// requests sign in parallel on every core.
    pub(crate) fn presign(
        &self,
        device: &idprov_proto::DeviceId,
        kid: &str,
        csr: Option<&crate::x509::CheckedCsr>,
        now: i64,
    ) -> Result<Presigned, Error> {
        let token = self.sign_token(device.as_str(), kid, now)?;
        let cert = match csr {
            Some(c) => Some((
                c.key.thumbprint().to_string(),
                self.sign_cert(device, &c.key, now)?,
            )),
            None => None,
        };
        Ok(Presigned {
            device_id: device.to_string(),
            kid: kid.to_string(),
            now,
            token,
            cert,
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

impl Devices {
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

impl Devices {
    /// The per-device check, once the request names its device.
    pub fn limit_device(&self, device_id: &str) -> Result<(), Error> {
        self.rate_limits.check(None, Some(device_id))
    }

    /// Account for a failed request from `source`: failures cost the device
    /// extra (the source was charged by the HTTP layer before the body was
    /// read), and refused proofs count towards the `proof_failures` flag.
    pub fn after_failure(&self, source: std::net::IpAddr, device_id: Option<&str>, e: &Error) {
        if e.is_client_failure() && device_id.is_some() {
            self.rate_limits.charge_failure(None, device_id);
        }
        if matches!(e, Error::InvalidProof) {
            self.proof_failures.record(device_id, source);
            self.windows.failed_proof(self.now());
        }
    }
}
