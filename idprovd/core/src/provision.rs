//! Flow 3, the provisioning decision: a device we know, a device the OOB
//! list names, or an unknown device that waits for an administrator. The
//! matching rules are pure functions ([`match_oob`], [`known_device`]) with
//! table tests; [`Daemon::provision_tx`] reads what they need and records
//! the outcome in a [`Unit`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use idprov_proto::admin::{AdminEvent, DeviceStatus, OobHold, OobMatch};
use idprov_proto::device::{
    Credentials, PendingAnswer, ProofEndpoint, ProvisionRequest, ProvisionResponse, proof_audience,
};
use idprov_proto::{MacAddr, PublicKey};

use crate::audit::draft;
use crate::certs::Presence;
use crate::config::FlagConfig;
use crate::devices::{Devices, Presigned, new_device};
use crate::error::Error;
use crate::flags::{self, Flag, Observed, Raised, suspicious};
use crate::proof::{self, VerifiedProof};
use crate::storage::{Change, StoreView, Unit};
use crate::store::StoreResult;
use crate::store::{DeviceRecord, OobRecord, PendingRecord, secret_hash};
use crate::x509::CheckedCsr;

/// What a provisioning request decided, with the rule that decided it (the
/// `rule` label of `idprov_provisioning_decisions_total`).
#[derive(Debug)]
pub enum Outcome {
    Issued(Credentials, Admission),
    /// With how a listed device matched its entry when a flag held it.
    Pending(PendingAnswer, Waiting, Option<OobHold>),
    Refused(Refusal),
}

/// Why a device got a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// A known device presented one of its keys.
    DeviceKey,
    /// The first token of a device an administrator approved.
    Admin,
    OobKey,
    OobMac,
    /// The device completed the setup-code exchange (setup_code.rs).
    OobSetupCode,
    OobSecret,
    /// An auto-approval rule (policy.rs).
    Rule,
    /// An enrollment window (windows.rs).
    Window,
}

/// Why a device waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiting {
    New,
    /// New, with flags raised.
    Flagged,
    Repeat,
    MacChanged,
}

/// Why a device was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NotActive,
    KeyMismatch,
    OobMismatch,
    KeyConflict,
    /// A `reject` rule (policy.rs).
    Policy,
}

impl Admission {
    pub fn as_str(self) -> &'static str {
        match self {
            Admission::DeviceKey => "device_key",
            Admission::Admin => "admin",
            Admission::OobKey => "oob_key",
            Admission::OobMac => "oob_mac",
            Admission::OobSetupCode => "oob_setup_code",
            Admission::OobSecret => "oob_secret",
            Admission::Rule => "rule",
            Admission::Window => "window",
        }
    }
}

impl Waiting {
    pub fn as_str(self) -> &'static str {
        match self {
            Waiting::New => "new",
            Waiting::Flagged => "flagged",
            Waiting::Repeat => "repeat",
            Waiting::MacChanged => "mac_changed",
        }
    }
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::NotActive => "not_active",
            Refusal::KeyMismatch => "key_mismatch",
            Refusal::OobMismatch => "oob_mismatch",
            Refusal::KeyConflict => "key_conflict",
            Refusal::Policy => "policy",
        }
    }
}

/// What of an OOB entry a request failed to match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mismatch {
    Key,
    Mac,
    Secret,
    SetupCode,
}

impl Mismatch {
    fn as_str(self) -> &'static str {
        match self {
            Mismatch::Key => "public key",
            Mismatch::Mac => "MAC",
            Mismatch::Secret => "one-time secret",
            Mismatch::SetupCode => "setup code",
        }
    }
}

/// The OOB matching rule: every credential the entry names must match (a
/// one-time secret also must be unused); the strongest one names the rule.
/// A setup code matches only a request that completed the setup-code
/// exchange (`setup_code`), once. (A locked code starts no exchange; the
/// exchange whose start locked it may still complete.)
pub fn match_oob(
    entry: &OobRecord,
    kid: &str,
    mac: Option<MacAddr>,
    secret: Option<&idprov_proto::Secret>,
    setup_code: bool,
) -> Result<Admission, Vec<Mismatch>> {
    let mut mismatch = Vec::new();
    if entry.kid.as_deref().is_some_and(|k| k != kid) {
        mismatch.push(Mismatch::Key);
    }
    if entry.mac.is_some() && entry.mac != mac {
        mismatch.push(Mismatch::Mac);
    }
    if let (Some(hash), Some(salt)) = (&entry.secret_hash, &entry.secret_salt) {
        let given = secret.map(|s| secret_hash(salt, s.expose()));
        let matches = given
            .is_some_and(|g| subtle::ConstantTimeEq::ct_eq(g.as_bytes(), hash.as_bytes()).into());
        if !matches || entry.secret_consumed_at.is_some() {
            mismatch.push(Mismatch::Secret);
        }
    }
    if let Some(s) = &entry.setup
        && (!setup_code || s.consumed_at.is_some())
    {
        mismatch.push(Mismatch::SetupCode);
    }
    if !mismatch.is_empty() {
        return Err(mismatch);
    }
    Ok(if entry.kid.is_some() {
        Admission::OobKey
    } else if entry.mac.is_some() {
        Admission::OobMac
    } else if entry.setup.is_some() {
        Admission::OobSetupCode
    } else {
        Admission::OobSecret
    })
}

/// The known-device rule: an active device presenting one of its usable
/// keys is served; which rule that is depends on whether it is the first
/// token after an administrator's approval.
pub fn known_device(dev: &DeviceRecord, kid: &str, now: i64) -> Result<Admission, Refusal> {
    if dev.status != DeviceStatus::Active {
        return Err(Refusal::NotActive);
    }
    if !dev.key(kid).is_some_and(|k| k.is_usable(now)) {
        return Err(Refusal::KeyMismatch);
    }
    Ok(if dev.tokens_issued == 0 && dev.approved_by_admin() {
        Admission::Admin
    } else {
        Admission::DeviceKey
    })
}

/// One provisioning request, checked (proof verified, CSR parsed).
pub(crate) struct Ask<'a> {
    pub req: &'a ProvisionRequest,
    pub key: &'a PublicKey,
    pub proof: &'a VerifiedProof,
    pub csr: Option<&'a CheckedCsr>,
    pub now: i64,
    pub src: String,
    pub seen: &'a Observed,
    /// The request holds a place to wait for its decision (waiters.rs).
    pub holding: bool,
    /// The request came through a confirmed setup-code exchange.
    pub setup_code: bool,
    /// What was signed before the decision, if anything.
    pub pre: Option<&'a Presigned>,
}

impl Ask<'_> {
    pub(crate) fn id(&self) -> &str {
        self.req.device_id.as_str()
    }
    pub(crate) fn kid(&self) -> &str {
        self.key.thumbprint()
    }
    pub(crate) fn audit(&self, u: &mut Unit, actor: &str, action: &str, detail: String) {
        u.audit(draft(
            self.now,
            actor,
            action,
            Some(self.id()),
            Some(&self.src),
            detail,
        ));
    }
}

/// A provisioning request once its proof, key and CSR are checked: what
/// the decision (and, for a waiting request, each re-check) reads.
struct Checked {
    req: ProvisionRequest,
    key: PublicKey,
    proof: VerifiedProof,
    csr: Option<CheckedCsr>,
    src: String,
    seen: crate::flags::Observed,
    holding: bool,
    setup_code: bool,
    pre: Option<Presigned>,
}

impl Checked {
    fn ask(&self, now: i64) -> Ask<'_> {
        Ask {
            req: &self.req,
            key: &self.key,
            proof: &self.proof,
            csr: self.csr.as_ref(),
            now,
            src: self.src.clone(),
            seen: &self.seen,
            holding: self.holding,
            setup_code: self.setup_code,
            pre: self.pre.as_ref(),
        }
    }
}

/// A provisioning answer, and whether the request waited for a decision.
#[derive(Debug)]
pub struct Provisioned {
    pub answer: ProvisionResponse,
    /// The longest wait the daemon granted (`Prefer: wait`), if any.
    pub waited: Option<Duration>,
}

impl Devices {
    /// Flow 3: match the request against devices, the OOB list and pending.
    pub async fn provision(
        self: &Arc<Self>,
        req: ProvisionRequest,
        source: SocketAddr,
        binding: Option<&[u8]>,
    ) -> Result<ProvisionResponse, Error> {
        Ok(self
            .provision_waiting(req, source, binding, None)
            .await?
            .answer)
    }

    /// [`Devices::provision`], where a device that would be told to come
    /// back later may ask to wait up to `wait` (at most `pending.max_wait`)
    /// on this request for an administrator's decision (waiters.rs).
    pub async fn provision_waiting(
        self: &Arc<Self>,
        req: ProvisionRequest,
        source: SocketAddr,
        binding: Option<&[u8]>,
        wait: Option<Duration>,
    ) -> Result<Provisioned, Error> {
        self.provision_checked(req, source, binding, wait, false)
            .await
    }

    /// Provisioning at the end of a confirmed setup-code exchange
    /// (setup_code.rs): the entry's setup code counts as matched.
    pub(crate) async fn provision_after_setup_code(
        self: &Arc<Self>,
        req: ProvisionRequest,
        source: SocketAddr,
        binding: Option<&[u8]>,
    ) -> Result<ProvisionResponse, Error> {
        Ok(self
            .provision_checked(req, source, binding, None, true)
            .await?
            .answer)
    }

    async fn provision_checked(
        self: &Arc<Self>,
        req: ProvisionRequest,
        source: SocketAddr,
        binding: Option<&[u8]>,
        wait: Option<Duration>,
        setup_code: bool,
    ) -> Result<Provisioned, Error> {
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
        let presence = self.check_presented_key(&req.device_id, &key).await?;
        // Sign ahead only for a device the store names: an unknown one
        // waits for an administrator, and a flood of them must not cost
        // signatures.
        let pre = match presence {
            Presence::Listed => {
                Some(self.presign(&req.device_id, key.thumbprint(), csr.as_ref(), now)?)
            }
            Presence::Unknown => None,
        };
        let recent_failures = self
            .proof_failures
            .recent(req.device_id.as_str(), source.ip());
        let seen = crate::flags::Observed {
            // Only read when there is a claim to compare.
            neighbour_mac: req.mac.and_then(|_| crate::neighbour::lookup(source.ip())),
            recent_failures,
        };
        // The place to wait is taken before the decision, so that an
        // approval committed between the two still wakes this request.
        let wait = wait
            .map(|w| w.min(self.cfg.pending.max_wait))
            .filter(|w| !w.is_zero());
        let slot = wait.and_then(|_| self.waiters.enter(req.device_id.as_str(), source.ip()));
        let checked = Arc::new(Checked {
            req,
            key,
            proof,
            csr,
            src: source.ip().to_string(),
            seen,
            holding: slot.is_some(),
            setup_code,
            pre,
        });
        let c = checked.clone();
        let outcome = self
            .transact(move |d, v, u| d.provision_tx(v, u, &c.ask(now)))
            .await?;
        // A request that has just made the device pending is answered at
        // once, so that the device can show its verification code; it is
        // told to ask again at once (retry_after 0), and that request waits.
        let (Outcome::Pending(p, Waiting::Repeat | Waiting::MacChanged, _), Some(slot), Some(wait)) =
            (&outcome, slot, wait)
        else {
            return Ok(Provisioned {
                answer: self.answer(outcome)?,
                waited: None,
            });
        };
        let pending = p.clone();
        self.answer(outcome)?;
        let answer = self.await_decision(slot, checked, pending, wait).await?;
        Ok(Provisioned {
            answer,
            waited: Some(wait),
        })
    }

    /// Hold a pending request until its device is decided or `wait` ends.
    /// Each wake re-reads the store; only a decided device is written to
    /// (its first token, or nothing for a refusal).
    async fn await_decision(
        self: &Arc<Self>,
        mut slot: crate::waiters::Slot,
        checked: Arc<Checked>,
        pending: PendingAnswer,
        wait: Duration,
    ) -> Result<ProvisionResponse, Error> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            tokio::select! {
                _ = slot.woken() => {}
                _ = tokio::time::sleep_until(deadline) => break,
            }
            if slot.closing() {
                break;
            }
            let id = checked.req.device_id.to_string();
            if self.read(move |_, v| Ok(v.device(&id)?)).await?.is_none() {
                continue;
            }
            let c = checked.clone();
            let outcome = self
                .transact(move |d, v, u| d.collect_tx(v, u, &c.ask(d.now())))
                .await?;
            if let Some(outcome) = outcome {
                return self.answer(outcome);
            }
        }
        // Still pending (`retry_after_secs` is 0: the next request that
        // finds a place to wait is held again; one that does not is slowed
        // down by pending_tx's rule, which says how long to wait).
        Ok(ProvisionResponse::Pending(pending))
    }

    /// The committed outcome as the device's answer, counted in metrics.
    fn answer(&self, outcome: Outcome) -> Result<ProvisionResponse, Error> {
        match outcome {
            Outcome::Issued(c, rule) => {
                self.metrics.decision("approved", rule.as_str());
                self.metrics.token_issued();
                if c.certificate.is_some() {
                    self.metrics.certificate_issued();
                }
                Ok(ProvisionResponse::Approved(c))
            }
            Outcome::Pending(p, rule, hold) => {
                self.metrics.decision("pending", rule.as_str());
                log_pending(&p, rule, hold.as_ref());
                if rule == Waiting::MacChanged {
                    self.metrics.alert(crate::flags::Flag::MacChanged.as_str());
                }
                Ok(ProvisionResponse::Pending(p))
            }
            Outcome::Refused(rule) => {
                self.metrics.decision("refused", rule.as_str());
                if !matches!(rule, Refusal::NotActive | Refusal::Policy) {
                    self.metrics.alert(rule.as_str());
                }
                Err(Error::Refused)
            }
        }
    }
}

/// A committed pending decision, at info level with its fields: why a
/// device the OOB list names waits (how it matched, the holding flags) must
/// be told apart from an unknown device in the logs too. A repeated request
/// of a waiting device is the same decision again: debug.
fn log_pending(p: &PendingAnswer, rule: Waiting, hold: Option<&OobHold>) {
    let id = p.device_id.as_str();
    match (rule, hold) {
        (Waiting::Repeat, _) => {
            tracing::debug!(device_id = id, rule = rule.as_str(), "device still pending")
        }
        (_, Some(h)) => tracing::info!(
            device_id = id,
            rule = rule.as_str(),
            matched_by = h.matched_by.as_str(),
            held_by = %h.held_by.join(","),
            "device pending: listed out of band, held by a flag"
        ),
        (_, None) => tracing::info!(
            device_id = id,
            rule = rule.as_str(),
            "device pending: not on the OOB list"
        ),
    }
}

impl Devices {
    /// Decide a provisioning request and record the decision in `u`.
    pub(crate) fn provision_tx(
        &self,
        v: &dyn StoreView,
        u: &mut Unit,
        ask: &Ask<'_>,
    ) -> Result<Outcome, Error> {
        let (id, now) = (ask.id(), ask.now);
        self.preflight(v, u, now)?;
        self.consume_proof(v, u, id, ask.proof)?;

        // 1. A device we already know: its key must be one of its keys.
        if let Some(dev) = v.device(id)? {
            return self.known_tx(v, u, ask, dev);
        }

        // 2. The OOB list. A flagged match is held in pending (flags.rs).
        let mut held = None;
        if let Some(entry) = v.oob(id)?.filter(|e| !e.is_expired(now)) {
            let secret = ask.req.secret.as_ref();
            match match_oob(&entry, ask.kid(), ask.req.mac, secret, ask.setup_code) {
                // A setup-code match that flags held in pending: the device
                // polls with its key (the code cannot be proven twice) and
                // waits for the administrator like any held match.
                Err(mismatch)
                    if mismatch == [Mismatch::SetupCode]
                        && v.pending(id)?.is_some_and(|p| p.kid == ask.kid()) =>
                {
                    let raised = self.raised_flags(v, u, ask)?;
                    // Held as it was when the code was proven.
                    let hold = v.pending(id)?.and_then(|p| p.oob_hold).map_or_else(
                        || OobHold {
                            matched_by: OobMatch::SetupCode,
                            held_by: Vec::new(),
                        },
                        |h| *h,
                    );
                    held = Some((hold, raised));
                }
                Err(mismatch) => {
                    let what: Vec<_> = mismatch.iter().map(|m| m.as_str()).collect();
                    let detail = format!("{} does not match the OOB entry", what.join(", "));
                    ask.audit(u, &format!("device:{id}"), "refused_oob_mismatch", detail);
                    return Ok(Outcome::Refused(Refusal::OobMismatch));
                }
                Ok(rule) => {
                    let raised = self.raised_flags(v, u, ask)?;
                    let by = match rule {
                        Admission::OobKey => flags::MatchedBy::ListedKey,
                        Admission::OobMac | Admission::OobSecret | Admission::OobSetupCode => {
                            flags::MatchedBy::MacOrSecret
                        }
                        // match_oob names only OOB rules.
                        Admission::DeviceKey
                        | Admission::Admin
                        | Admission::Rule
                        | Admission::Window => flags::MatchedBy::MacOrSecret,
                    };
                    let holding = flags::holding(&self.cfg.flags, &raised, by);
                    if !holding.is_empty() {
                        let hold = OobHold {
                            matched_by: match rule {
                                Admission::OobKey => OobMatch::Key,
                                Admission::OobMac => OobMatch::Mac,
                                Admission::OobSetupCode => OobMatch::SetupCode,
                                // match_oob names only OOB rules.
                                _ => OobMatch::Secret,
                            },
                            held_by: holding.iter().map(|f| f.as_str().to_string()).collect(),
                        };
                        held = Some((hold, raised));
                    } else {
                        return self.admit_oob(v, u, ask, entry, rule, &raised);
                    }
                }
            }
        }

        // 3. Unknown (or held): a rule or an open window may decide
        // (admission.rs); else wait for an administrator.
        let (oob_hold, raised) = match held {
            Some((hold, f)) => (Some(Box::new(hold)), f),
            None => (None, self.raised_flags(v, u, ask)?),
        };
        if let Some(outcome) = self.policy_tx(v, u, ask, &raised)? {
            return Ok(outcome);
        }
        self.pending_tx(v, u, ask, raised, oob_hold)
    }

    /// A waiting request's re-check: once its device is decided, the answer
    /// the known-device rule gives (its first token, or a refusal); `None`
    /// while it is still undecided. The proof was consumed when it arrived.
    fn collect_tx(
        &self,
        v: &dyn StoreView,
        u: &mut Unit,
        ask: &Ask<'_>,
    ) -> Result<Option<Outcome>, Error> {
        let Some(dev) = v.device(ask.id())? else {
            return Ok(None);
        };
        self.preflight(v, u, ask.now)?;
        // The key was checked when the request arrived (certs.rs,
        // check_presented_key); one revoked while it waited never gets a
        // token (invariant I4). Refused as it is at the start of a request.
        if v.retired_key(ask.kid())?.is_some() {
            tracing::info!(device_id = ask.id(), "refused: key revoked while waiting");
            return Err(Error::Refused);
        }
        self.known_tx(v, u, ask, dev).map(Some)
    }

    fn raised_flags(
        &self,
        v: &dyn StoreView,
        u: &mut Unit,
        ask: &Ask<'_>,
    ) -> Result<Vec<Raised>, Error> {
        Ok(check_flags(
            v,
            u,
            &self.cfg.flags,
            ask.id(),
            ask.kid(),
            ask.req.mac,
            ask.seen,
        )?)
    }

    fn known_tx(
        &self,
        v: &dyn StoreView,
        u: &mut Unit,
        ask: &Ask<'_>,
        mut dev: DeviceRecord,
    ) -> Result<Outcome, Error> {
        let (id, now) = (ask.id(), ask.now);
        let rule = match known_device(&dev, ask.kid(), now) {
            Ok(rule) => rule,
            Err(Refusal::KeyMismatch) => {
                dev.add_flag(Flag::KeyMismatch);
                dev.revision += 1;
                u.upsert_device(&dev);
                let detail = format!("presented key {} is not a key of this device", ask.kid());
                ask.audit(u, &format!("device:{id}"), "refused_key_mismatch", detail);
                return Ok(Outcome::Refused(Refusal::KeyMismatch));
            }
            Err(refusal) => {
                tracing::info!(device_id = id, status = ?dev.status, "refused: not active");
                return Ok(Outcome::Refused(refusal));
            }
        };
        let live_keys = dev.keys.iter().filter(|k| k.is_usable(now)).count();
        if live_keys > 1 && ask.proof.kid.is_none() {
            tracing::info!(device_id = id, "proof without kid for a multi-key device");
            self.metrics.proof_failure("kid_missing");
            return Err(Error::InvalidProof);
        }
        let mut raised = self.raised_flags(v, u, ask)?;
        let lifetime = self.cfg.tokens.lifetime.as_secs() as i64;
        if let Some(last) = dev.last_issued_at.filter(|t| t + lifetime > now) {
            raised.push(Raised {
                flag: Flag::RepeatProvision,
                detail: format!("asked again while the token issued at {last} is valid"),
            });
        }
        self.flag_device(u, &mut dev, &raised, now, &ask.src);
        let creds = self.issue_with_cert(v, u, &mut dev, ask)?;
        u.event(AdminEvent::DeviceUpserted { device: dev.view() });
        Ok(Outcome::Issued(creds, rule))
    }

    /// A token, and a certificate when the request carried a CSR.
    pub(crate) fn issue_with_cert(
        &self,
        v: &dyn StoreView,
        u: &mut Unit,
        dev: &mut DeviceRecord,
        ask: &Ask<'_>,
    ) -> Result<Credentials, Error> {
        let mut creds = self.issue(u, dev, ask.kid(), ask.now, ask.pre)?;
        self.attach_certificate(v, u, dev, &mut creds, ask.csr, ask.pre)?;
        Ok(creds)
    }

    /// Admit a device the OOB list names (flow 3), issuing its first token.
    fn admit_oob(
        &self,
        v: &dyn StoreView,
        u: &mut Unit,
        ask: &Ask<'_>,
        mut entry: OobRecord,
        rule: Admission,
        raised: &[Raised],
    ) -> Result<Outcome, Error> {
        let (id, now) = (ask.id(), ask.now);
        if let Some(s) = entry.setup.as_mut().filter(|_| ask.setup_code) {
            s.consumed_at = Some(now);
            // The attempt charged when this exchange started was not a
            // failure, and so did not lock the code.
            s.failures = s.failures.saturating_sub(1);
            s.locked_at = None;
        }
        if entry.secret_hash.is_some() || ask.setup_code {
            if entry.secret_hash.is_some() {
                entry.secret_consumed_at = Some(now);
            }
            entry.updated_at = now;
            u.change(Change::PutOob(entry));
        }
        let mut dev = new_device(ask.req, ask.key, now, rule.as_str());
        u.change(Change::NoteIdentity {
            device_id: ask.req.device_id.clone(),
            kid: ask.kid().to_string(),
            mac: ask.req.mac,
        });
        self.flag_device(u, &mut dev, raised, now, &ask.src);
        if v.pending(id)?.is_some() {
            u.change(Change::DeletePending(ask.req.device_id.clone()));
            u.event(AdminEvent::PendingRemoved {
                device_id: ask.req.device_id.clone(),
            });
        }
        let detail = format!("admitted by {}, key {}", rule.as_str(), ask.kid());
        ask.audit(u, "daemon", "device_admitted", detail);
        let creds = self.issue_with_cert(v, u, &mut dev, ask)?;
        u.event(AdminEvent::DeviceUpserted { device: dev.view() });
        Ok(Outcome::Issued(creds, rule))
    }

    /// Record a request for an unknown device, or one whose OOB match was
    /// held for its flags (`oob_hold`: how it matched, which flags hold it),
    /// in the pending queue.
    fn pending_tx(
        &self,
        v: &dyn StoreView,
        u: &mut Unit,
        ask: &Ask<'_>,
        raised: Vec<Raised>,
        oob_hold: Option<Box<OobHold>>,
    ) -> Result<Outcome, Error> {
        let (id, now, req) = (ask.id(), ask.now, ask.req);
        let retry = self.cfg.pending.retry_after.as_secs().max(1);
        let answer = PendingAnswer {
            device_id: req.device_id.clone(),
            // A request that may wait asks again at once, and waits then.
            retry_after_secs: if ask.holding { 0 } else { retry },
            verification_code: ask.key.verification_code(),
        };
        let rule = match v.pending(id)? {
            Some(mut p) => {
                if p.kid != ask.kid() {
                    // Someone else claims this id with another key: keep the
                    // first request, flag it, refuse this one.
                    p.add_flag(Flag::KeyConflict);
                    p.revision += 1;
                    u.change(Change::PutPending(p.clone()));
                    u.event(AdminEvent::PendingUpserted { pending: p.view() });
                    let detail = format!("key {} differs from the pending request's", ask.kid());
                    ask.audit(
                        u,
                        &format!("device:{id}"),
                        "refused_pending_key_conflict",
                        detail,
                    );
                    return Ok(Outcome::Refused(Refusal::KeyConflict));
                }
                let earliest = p.last_seen + (retry as i64) / 2;
                // A request that waits for its decision is not a fast poll:
                // the wait itself paces it (and its place is bounded).
                if now < earliest && !ask.holding {
                    // Abort: nothing is recorded, the proof is not consumed.
                    let wait = (p.last_seen + retry as i64 - now).max(1) as u64;
                    return Err(Error::SlowDown { retry_after: wait });
                }
                let rule = if p.mac != req.mac {
                    p.add_flag(Flag::MacChanged);
                    Waiting::MacChanged
                } else {
                    Waiting::Repeat
                };
                let fresh: Vec<_> = raised
                    .iter()
                    .filter(|f| !p.flags.iter().any(|g| g == f.flag.as_str()))
                    .cloned()
                    .collect();
                for f in &fresh {
                    p.add_flag(f.flag);
                }
                p.last_seen = now;
                p.attempts += 1;
                p.source = ask.src.clone();
                // As of this request: the list or the flags may have changed.
                p.oob_hold = oob_hold.clone();
                p.revision += 1;
                u.change(Change::PutPending(p.clone()));
                u.event(AdminEvent::PendingUpserted { pending: p.view() });
                if !fresh.is_empty() {
                    ask.audit(u, "daemon", "request_flagged", flags::describe(&fresh));
                }
                rule
            }
            None => {
                if v.pending_count()? >= self.cfg.pending.cap {
                    return Err(Error::PendingFull { retry_after: retry });
                }
                let p = PendingRecord {
                    device_id: req.device_id.clone(),
                    key_format: ask.key.format(),
                    kid: ask.kid().to_string(),
                    public_key: ask.key.pem().to_string(),
                    mac: req.mac,
                    source: ask.src.clone(),
                    first_seen: now,
                    last_seen: now,
                    attempts: 1,
                    flags: raised.iter().map(|f| f.flag.as_str().to_string()).collect(),
                    oob_hold: oob_hold.clone(),
                    revision: 1,
                };
                u.change(Change::PutPending(p.clone()));
                u.change(Change::NoteIdentity {
                    device_id: req.device_id.clone(),
                    kid: ask.kid().to_string(),
                    mac: req.mac,
                });
                let why = match &oob_hold {
                    Some(h) => format!("listed out of band: {h}"),
                    None => "unknown device".to_string(),
                };
                let mut detail = format!("{why}, key {}", ask.kid());
                if !raised.is_empty() {
                    detail.push_str("; flags: ");
                    detail.push_str(&flags::describe(&raised));
                }
                let action = if raised.is_empty() {
                    "pending_added"
                } else {
                    "pending_added_flagged"
                };
                u.event(AdminEvent::PendingUpserted { pending: p.view() });
                ask.audit(u, &format!("device:{id}"), action, detail);
                if raised.is_empty() {
                    Waiting::New
                } else {
                    Waiting::Flagged
                }
            }
        };
        Ok(Outcome::Pending(answer, rule, oob_hold.map(|h| *h)))
    }

    /// Add newly raised flags to a device record (the caller stores it) and
    /// audit them; flags already on the record are not audited again.
    pub(crate) fn flag_device(
        &self,
        u: &mut Unit,
        dev: &mut DeviceRecord,
        raised: &[Raised],
        now: i64,
        src: &str,
    ) {
        let fresh: Vec<_> = raised
            .iter()
            .filter(|f| !dev.flags.iter().any(|g| g == f.flag.as_str()))
            .cloned()
            .collect();
        if fresh.is_empty() {
            return;
        }
        for f in &fresh {
            dev.add_flag(f.flag);
        }
        dev.revision += 1;
        let id = dev.device_id.as_str();
        tracing::warn!(device_id = id, flags = %flags::describe(&fresh), "device flagged");
        u.audit(draft(
            now,
            "daemon",
            "device_flagged",
            Some(id),
            Some(src),
            flags::describe(&fresh),
        ));
    }
}

// ---- the flags a request raises (flags.rs has their rules) ----

/// The flags a request raises, checked inside its transaction.
fn check_flags(
    v: &dyn StoreView,
    u: &mut Unit,
    cfg: &FlagConfig,
    device_id: &str,
    kid: &str,
    claimed_mac: Option<MacAddr>,
    seen: &Observed,
) -> StoreResult<Vec<Raised>> {
    let mut out = Vec::new();
    let others = others_with_key(v, u, device_id, kid)?;
    if !others.is_empty() {
        out.push(Raised {
            flag: Flag::KeyReused,
            detail: format!("key {kid} is also held by {}", others.join(", ")),
        });
    }
    if let Some(mac) = claimed_mac {
        let others = others_with_mac(v, u, device_id, mac)?;
        if !others.is_empty() {
            out.push(Raised {
                flag: Flag::MacReused,
                detail: format!("MAC {mac} also belongs to {}", others.join(", ")),
            });
        }
        if let Some(seen_mac) = seen.neighbour_mac
            && seen_mac != mac
        {
            out.push(Raised {
                flag: Flag::MacMismatch,
                detail: format!("claimed MAC {mac}, the network shows {seen_mac}"),
            });
        }
        if let Some(why) = suspicious(mac) {
            out.push(Raised {
                flag: Flag::MacSuspicious,
                detail: format!("MAC {mac} is {why}"),
            });
        }
    }
    if cfg.proof_failure_threshold > 0 && seen.recent_failures >= cfg.proof_failure_threshold {
        out.push(Raised {
            flag: Flag::ProofFailures,
            detail: format!("{} refused proofs recently", seen.recent_failures),
        });
    }
    Ok(out)
}

/// Other device IDs (devices or pending) that hold `kid` now. Index
/// entries that no longer hold are dropped with the decision's unit.
fn others_with_key(
    v: &dyn StoreView,
    u: &mut Unit,
    device_id: &str,
    kid: &str,
) -> StoreResult<Vec<String>> {
    let mut out = Vec::new();
    for other in v.ids_with_key(kid, device_id)? {
        let live = v.device(&other)?.is_some_and(|d| d.key(kid).is_some())
            || v.pending(&other)?.is_some_and(|p| p.kid == kid);
        if live {
            out.push(other);
        } else {
            u.change(Change::ForgetKeyHolder {
                kid: kid.to_string(),
                device_id: other,
            });
        }
    }
    Ok(out)
}

/// Other device IDs (devices, pending, or OOB entries) bound to `mac`.
fn others_with_mac(
    v: &dyn StoreView,
    u: &mut Unit,
    device_id: &str,
    mac: MacAddr,
) -> StoreResult<Vec<String>> {
    let m = mac.to_string();
    let mut out = Vec::new();
    for other in v.ids_with_mac(&m, device_id)? {
        let live = v.device(&other)?.is_some_and(|d| d.mac == Some(mac))
            || v.pending(&other)?.is_some_and(|p| p.mac == Some(mac));
        if live {
            out.push(other);
        } else {
            u.change(Change::ForgetMacHolder {
                mac: m.clone(),
                device_id: other,
            });
        }
    }
    if let Some(owner) = v.oob_mac_owner(&m)?
        && owner != device_id
        && !out.contains(&owner)
    {
        out.push(owner);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::KeyRecord;
    use idprov_proto::KeyFormat;

    fn entry(kid: Option<&str>, mac: Option<MacAddr>, secret: Option<&str>) -> OobRecord {
        let salt = secret.map(|_| "salt".to_string());
        OobRecord {
            device_id: "d1".parse().unwrap_or_else(|_| unreachable!()),
            public_key: None,
            key_format: None,
            kid: kid.map(str::to_string),
            mac,
            secret_hash: secret.map(|s| secret_hash("salt", s)),
            secret_salt: salt,
            secret_consumed_at: None,
            setup: None,
            expires_at: None,
            note: None,
            created_at: 0,
            updated_at: 0,
            secret_plain_for_compare: None,
        }
    }

    const M1: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const M2: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);

    /// (entry, presented kid, MAC, secret) → outcome.
    type Row<'a> = (
        OobRecord,
        &'a str,
        Option<MacAddr>,
        Option<&'a idprov_proto::Secret>,
        Result<Admission, Vec<Mismatch>>,
    );

    #[test]
    fn oob_matching_table() {
        let s = |v: &str| idprov_proto::Secret::new(v);
        let good = s("secret-one");
        let bad = s("secret-two");
        use Admission::*;
        use Mismatch::*;
        // (entry, presented kid, mac, secret) → outcome
        let rows: Vec<Row> = vec![
            (entry(Some("k1"), None, None), "k1", None, None, Ok(OobKey)),
            (
                entry(Some("k1"), None, None),
                "k2",
                None,
                None,
                Err(vec![Key]),
            ),
            (
                entry(None, Some(M1), None),
                "k9",
                Some(M1),
                None,
                Ok(OobMac),
            ),
            (
                entry(None, Some(M1), None),
                "k9",
                Some(M2),
                None,
                Err(vec![Mac]),
            ),
            (
                entry(None, Some(M1), None),
                "k9",
                None,
                None,
                Err(vec![Mac]),
            ),
            (
                entry(None, None, Some("secret-one")),
                "k9",
                None,
                Some(&good),
                Ok(OobSecret),
            ),
            (
                entry(None, None, Some("secret-one")),
                "k9",
                None,
                Some(&bad),
                Err(vec![Secret]),
            ),
            (
                entry(None, None, Some("secret-one")),
                "k9",
                None,
                None,
                Err(vec![Secret]),
            ),
            (
                entry(Some("k1"), Some(M1), Some("secret-one")),
                "k1",
                Some(M1),
                Some(&good),
                Ok(OobKey),
            ),
            (
                entry(Some("k1"), Some(M1), Some("secret-one")),
                "k2",
                Some(M2),
                Some(&bad),
                Err(vec![Key, Mac, Secret]),
            ),
            (
                entry(None, Some(M1), Some("secret-one")),
                "k9",
                Some(M1),
                Some(&good),
                Ok(OobMac),
            ),
        ];
        for (i, (e, kid, mac, secret, want)) in rows.into_iter().enumerate() {
            assert_eq!(match_oob(&e, kid, mac, secret, false), want, "row {i}");
        }
    }

    #[test]
    fn a_used_secret_never_matches_again() {
        let mut e = entry(None, None, Some("secret-one"));
        e.secret_consumed_at = Some(5);
        let s = idprov_proto::Secret::new("secret-one");
        assert_eq!(
            match_oob(&e, "k", None, Some(&s), false),
            Err(vec![Mismatch::Secret])
        );
    }

    #[test]
    fn a_setup_code_matches_only_a_confirmed_exchange_once() {
        let mut e = entry(None, None, None);
        e.setup = Some(crate::store::SetupRecord {
            verifier: String::new(),
            consumed_at: None,
            failures: 10,
            locked_at: Some(4),
        });
        let plain = match_oob(&e, "k", None, None, false);
        assert_eq!(plain, Err(vec![Mismatch::SetupCode]), "plain /provision");
        // The exchange whose start locked the code may still complete.
        assert_eq!(
            match_oob(&e, "k", None, None, true),
            Ok(Admission::OobSetupCode)
        );
        if let Some(s) = e.setup.as_mut() {
            s.consumed_at = Some(5);
        }
        assert_eq!(
            match_oob(&e, "k", None, None, true),
            Err(vec![Mismatch::SetupCode]),
            "consumed"
        );
        // With a key listed too, the key names the rule and both must match.
        e.kid = Some("k".into());
        if let Some(s) = e.setup.as_mut() {
            s.consumed_at = None;
        }
        assert_eq!(match_oob(&e, "k", None, None, true), Ok(Admission::OobKey));
        assert_eq!(
            match_oob(&e, "other", None, None, true),
            Err(vec![Mismatch::Key])
        );
    }

    fn device(status: DeviceStatus, admitted_by: &str, tokens: u64) -> DeviceRecord {
        DeviceRecord {
            device_id: "d1".parse().unwrap_or_else(|_| unreachable!()),
            status,
            epoch: 1,
            keys: vec![
                KeyRecord {
                    kid: "k1".into(),
                    format: KeyFormat::ES256_PEM,
                    pem: String::new(),
                    added_at: 0,
                    expires_at: None,
                },
                KeyRecord {
                    kid: "old".into(),
                    format: KeyFormat::ES256_PEM,
                    pem: String::new(),
                    added_at: 0,
                    expires_at: Some(10),
                },
            ],
            mac: None,
            admitted_by: admitted_by.into(),
            created_at: 0,
            last_issued_at: None,
            tokens_issued: tokens,
            flags: Vec::new(),
            revision: 1,
            status_reason: None,
        }
    }

    #[test]
    fn known_device_table() {
        use DeviceStatus::*;
        let rows = [
            (device(Active, "oob_key", 3), "k1", Ok(Admission::DeviceKey)),
            (device(Active, "admin:alice", 0), "k1", Ok(Admission::Admin)),
            (
                device(Active, "admin:alice", 1),
                "k1",
                Ok(Admission::DeviceKey),
            ),
            (device(Active, "oob_key", 0), "k1", Ok(Admission::DeviceKey)),
            (
                device(Active, "oob_key", 3),
                "k2",
                Err(Refusal::KeyMismatch),
            ),
            (
                device(Active, "oob_key", 3),
                "old",
                Err(Refusal::KeyMismatch),
            ),
            (device(Revoked, "oob_key", 3), "k1", Err(Refusal::NotActive)),
            (
                device(Rejected, "admin:bob", 0),
                "k1",
                Err(Refusal::NotActive),
            ),
        ];
        for (i, (dev, kid, want)) in rows.into_iter().enumerate() {
            assert_eq!(known_device(&dev, kid, 100), want, "row {i}");
        }
    }
}
