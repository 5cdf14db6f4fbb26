//! Setup codes (issue 17, docs/protocol.md "Setup codes"): a device with no
//! CA pinned runs SPAKE2+ (idprov-pake) with the daemon over its setup code,
//! bound to its TLS connection, and is admitted by the confirmed exchange.
//!
//! Every started exchange counts as one failure of its code until it ends
//! in an admission: a prover learns whether its one guess was right from
//! confirmV alone, so an exchange must be paid for when it starts, not when
//! confirmP turns out wrong. The count is in the OOB entry (persisted: a
//! restart does not reset it) and locks the code at
//! `setup_code.max_failures`; per source address, failures are counted in
//! memory over `setup_code.source_window`. Exchanges between their two
//! steps are held in memory, bounded in number, per source and in time.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use idprov_pake::spake2plus::{Binding, Verifier, decode_point};
use idprov_pake::{StoredVerifier, setup_code::ID_VERIFIER};
use idprov_proto::DeviceId;
use idprov_proto::admin::AlertKind;
use idprov_proto::device::CHANNEL_BINDING_LEN;
use idprov_proto::setup::{
    CA_MAC_INFO, CONTEXT_PREFIX, FinishRequest, FinishResponse, ParamsRequest, ParamsResponse,
    StartRequest, StartResponse,
};
use tokio::time::Instant;

use crate::alerts::AlertDraft;
use crate::audit::draft;
use crate::config::SetupCodeConfig;
use crate::daemon::Daemon;
use crate::error::Error;
use crate::storage::Change;
use crate::store::OobRecord;

/// Why a setup-code request was refused. Unauthenticated callers see two
/// classes (`setup_code_refused`, `setup_code_mismatch`); the detail is
/// logged and audited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SetupCodeError {
    /// No entry with an unused, unlocked setup code for this device ID.
    #[error(
        "this daemon holds no usable setup code for this device (none, already used, or locked after too many failures)"
    )]
    Unusable,
    /// Key confirmation failed, or the exchange is unknown, expired, or
    /// continued on another TLS connection.
    #[error(
        "the setup-code exchange failed: wrong code, expired, or not on the TLS connection it started on; start again"
    )]
    Mismatch,
}

/// One exchange between its two steps.
struct InFlight {
    device_id: DeviceId,
    source: IpAddr,
    binding: [u8; CHANNEL_BINDING_LEN],
    verifier: Verifier,
    deadline: Instant,
}

#[derive(Default)]
struct State {
    live: HashMap<[u8; 16], InFlight>,
    /// Recent failed exchanges per source address (bounded: see `note_failure`).
    failures: HashMap<IpAddr, VecDeque<Instant>>,
}

/// Exchanges in flight and failures per source. In memory: an exchange cut
/// by a restart is simply started again (its count is already persisted).
#[derive(Default)]
pub struct Exchanges {
    state: Mutex<State>,
}

/// Most source addresses whose failures are remembered at once.
const MAX_SOURCES: usize = 4096;

/// An abandoned exchange, to report.
struct Abandoned {
    device_id: DeviceId,
    source: IpAddr,
}

impl Exchanges {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain maps; keep using them.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drop exchanges past their deadline; they are failures of their source.
    fn sweep(&self, cfg: &SetupCodeConfig, now: Instant) -> Vec<Abandoned> {
        self.take(cfg, now, |x| x.deadline <= now)
    }

    /// Remove the exchanges `which` selects, counting each as a failure of
    /// its source, and return them to report.
    fn take(
        &self,
        cfg: &SetupCodeConfig,
        now: Instant,
        which: impl Fn(&InFlight) -> bool,
    ) -> Vec<Abandoned> {
        let mut st = self.lock();
        let keys: Vec<[u8; 16]> = st
            .live
            .iter()
            .filter(|(_, x)| which(x))
            .map(|(k, _)| *k)
            .collect();
        let mut out = Vec::new();
        for k in keys {
            if let Some(x) = st.live.remove(&k) {
                note_failure(&mut st, cfg, x.source, now);
                out.push(Abandoned {
                    device_id: x.device_id,
                    source: x.source,
                });
            }
        }
        out
    }

    /// Refuse a source over its failure or concurrency limit, or a full table.
    fn admit(&self, cfg: &SetupCodeConfig, source: IpAddr, now: Instant) -> Result<(), Error> {
        let mut st = self.lock();
        if let Some(q) = st.failures.get_mut(&source) {
            while q
                .front()
                .is_some_and(|t| now.duration_since(*t) >= cfg.source_window)
            {
                q.pop_front();
            }
            if q.len() >= cfg.max_failures_per_source as usize {
                return Err(Error::RateLimited {
                    message: "too many failed setup-code exchanges from this address".into(),
                    retry_after: cfg.source_window.as_secs().max(1),
                });
            }
        }
        let from_source = st.live.values().filter(|x| x.source == source).count();
        if st.live.len() >= cfg.max_exchanges || from_source >= cfg.max_exchanges_per_source {
            return Err(Error::busy(
                "too many setup-code exchanges in progress; try again shortly",
                Some(cfg.exchange_ttl.as_secs().max(1)),
            ));
        }
        Ok(())
    }

    /// Exchanges of this device still waiting for their second step: a new
    /// one supersedes them (a relay's, or a device that gave up on one).
    fn supersede(
        &self,
        cfg: &SetupCodeConfig,
        device_id: &DeviceId,
        now: Instant,
    ) -> Vec<Abandoned> {
        self.take(cfg, now, |x| x.device_id == *device_id)
    }
}

fn note_failure(st: &mut State, cfg: &SetupCodeConfig, source: IpAddr, now: Instant) {
    if st.failures.len() >= MAX_SOURCES && !st.failures.contains_key(&source) {
        // Forget sources whose failures have all aged out; if none have,
        // the oldest entry goes (the per-code count still holds).
        st.failures.retain(|_, q| {
            q.back()
                .is_some_and(|t| now.duration_since(*t) < cfg.source_window)
        });
        if st.failures.len() >= MAX_SOURCES
            && let Some(k) = st.failures.keys().next().copied()
        {
            st.failures.remove(&k);
        }
    }
    let q = st.failures.entry(source).or_default();
    if q.len() >= cfg.max_failures_per_source.max(1) as usize {
        q.pop_front();
    }
    q.push_back(now);
}

fn b64_field(value: &str, what: &str, len: usize) -> Result<Vec<u8>, Error> {
    match B64.decode(value) {
        Ok(v) if v.len() == len => Ok(v),
        _ => Err(Error::bad_request(format!(
            "{what} must be {len} bytes in base64url without padding"
        ))),
    }
}

fn binding_of(binding: Option<&[u8]>) -> Result<[u8; CHANNEL_BINDING_LEN], Error> {
    binding
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| Error::internal("setup code", "the TLS connection has no exporter value"))
}

fn context(binding: &[u8]) -> Vec<u8> {
    [CONTEXT_PREFIX, binding].concat()
}

/// The entry's stored verifier, if its setup code can be used now.
fn usable(entry: Option<OobRecord>, now: i64) -> Option<(OobRecord, StoredVerifier)> {
    let entry = entry.filter(|e| !e.is_expired(now))?;
    let s = entry.setup.as_ref()?;
    if s.consumed_at.is_some() || s.locked_at.is_some() {
        return None;
    }
    let v = StoredVerifier::parse(&s.verifier).ok()?;
    Some((entry, v))
}

impl Daemon {
    /// Step 0: the salt and KDF cost of the device's code. Free of charge
    /// (no exchange is started), refused like step 1 when there is no
    /// usable code.
    pub async fn setup_params(&self, req: ParamsRequest) -> Result<ParamsResponse, Error> {
        let now = self.now();
        let id = req.device_id.to_string();
        let found = self.read(move |v| Ok(v.oob(&id)?)).await?;
        let Some((_, v)) = usable(found, now) else {
            return Err(Error::SetupCode(SetupCodeError::Unusable));
        };
        Ok(ParamsResponse {
            kdf: "argon2id".into(),
            salt: B64.encode(&v.salt),
            memory_kib: v.params.memory_kib,
            iterations: v.params.iterations,
            parallelism: v.params.parallelism,
        })
    }

    /// Step 1: count the attempt against the code, then answer shareV and
    /// confirmV for this TLS connection.
    pub async fn setup_start(
        &self,
        req: StartRequest,
        source: SocketAddr,
        binding: Option<&[u8]>,
    ) -> Result<StartResponse, Error> {
        let cfg = self.cfg.setup_code.clone();
        let binding = binding_of(binding)?;
        let share_p = b64_field(&req.share_p, "share_p", idprov_pake::spake2plus::POINT_LEN)?;
        decode_point(&share_p).map_err(|e| Error::bad_request(format!("share_p: {e}")))?;
        let at = self.clock.instant();
        self.report_abandoned(self.setup_exchanges.sweep(&cfg, at))
            .await;
        self.setup_exchanges.admit(&cfg, source.ip(), at)?;
        let superseded = self.setup_exchanges.supersede(&cfg, &req.device_id, at);
        self.report_abandoned(superseded).await;

        let now = self.now();
        let id = req.device_id.clone();
        let src = source.ip().to_string();
        let max = cfg.max_failures;
        let (verifier, locked) = self
            .transact(move |v, u| {
                let Some((mut entry, verifier)) = usable(v.oob(id.as_str())?, now) else {
                    return Err(Error::SetupCode(SetupCodeError::Unusable));
                };
                let Some(s) = entry.setup.as_mut() else {
                    return Err(Error::SetupCode(SetupCodeError::Unusable));
                };
                s.failures = s.failures.saturating_add(1);
                // The attempt that reaches the limit still runs; the next is refused.
                let locked = s.failures >= max;
                if locked {
                    s.locked_at = Some(now);
                }
                let failures = s.failures;
                entry.updated_at = now;
                u.change(Change::PutOob(entry));
                u.audit(draft(
                    now,
                    &format!("device:{id}"),
                    if locked {
                        "setup_code_locked"
                    } else {
                        "setup_code_attempt"
                    },
                    Some(id.as_str()),
                    Some(&src),
                    format!("setup-code exchange started; {failures} of {max} attempts used"),
                ));
                Ok((verifier, locked))
            })
            .await?;
        if locked {
            self.setup_alert(
                AlertKind::SetupCodeLocked,
                &req.device_id,
                source.ip(),
                format!(
                    "setup code of {} locked after {max} exchanges without an admission; replace the entry's code to use it again",
                    req.device_id
                ),
            )
            .await;
        }

        let ctx = context(&binding);
        let b = Binding {
            context: &ctx,
            id_prover: req.device_id.as_str().as_bytes(),
            id_verifier: ID_VERIFIER,
        };
        let (state, answer) = Verifier::respond(&verifier.record, &b, &share_p)
            .map_err(|e| Error::bad_request(format!("share_p: {e}")))?;
        let exchange: [u8; 16] = rand::random();
        self.setup_exchanges.lock().live.insert(
            exchange,
            InFlight {
                device_id: req.device_id.clone(),
                source: source.ip(),
                binding,
                verifier: state,
                deadline: at + cfg.exchange_ttl,
            },
        );
        tracing::info!(device_id = %req.device_id, %source, "setup-code exchange started");
        Ok(StartResponse {
            exchange: B64.encode(exchange),
            share_v: B64.encode(answer.share_v),
            confirm_v: B64.encode(answer.confirm_v),
            daemon_id: self.daemon_id().to_string(),
            time: now,
            proof_max_lifetime_secs: self.cfg.proof.max_lifetime.as_secs(),
        })
    }

    /// Step 2: check confirmP on the same connection, then provision with
    /// the code counted as matched, and send the CA MACed under K_shared.
    pub async fn setup_finish(
        &self,
        req: FinishRequest,
        source: SocketAddr,
        binding: Option<&[u8]>,
    ) -> Result<FinishResponse, Error> {
        let binding = binding_of(binding)?;
        let exchange: [u8; 16] = b64_field(&req.exchange, "exchange", 16)?
            .try_into()
            .map_err(|_| Error::bad_request("exchange must be 16 bytes"))?;
        let confirm_p = b64_field(
            &req.confirm_p,
            "confirm_p",
            idprov_pake::spake2plus::CONFIRM_LEN,
        )?;
        let at = self.clock.instant();
        let Some(x) = self.setup_exchanges.lock().live.remove(&exchange) else {
            return Err(Error::SetupCode(SetupCodeError::Mismatch));
        };
        let cfg = &self.cfg.setup_code;
        let why = if x.deadline <= at {
            Some("expired before its second step")
        } else if x.binding != binding || x.device_id != req.provision.device_id {
            Some("continued on another TLS connection or for another device")
        } else {
            None
        };
        let key = match why {
            Some(why) => Err(why),
            None => x.verifier.verify(&confirm_p).map_err(
                |_| "key confirmation failed (wrong code, or a relay between device and daemon)",
            ),
        };
        let key = match key {
            Ok(k) => k,
            Err(why) => {
                note_failure(&mut self.setup_exchanges.lock(), cfg, source.ip(), at);
                self.setup_alert(
                    AlertKind::SetupCodeUnconfirmed,
                    &x.device_id,
                    source.ip(),
                    format!(
                        "setup-code exchange for {} from {}: {why}",
                        x.device_id, x.source
                    ),
                )
                .await;
                return Err(Error::SetupCode(SetupCodeError::Mismatch));
            }
        };
        let answer = self
            .devices
            .provision_after_setup_code(req.provision, source, Some(&binding))
            .await?;
        let fingerprint = self.pki.ca_fingerprint.clone();
        let mac = key.mac(CA_MAC_INFO, fingerprint.as_bytes());
        tracing::info!(device_id = %x.device_id, %source, "setup-code exchange confirmed");
        Ok(FinishResponse {
            ca_pem: self.pki.ca_cert_pem.clone(),
            ca_fingerprint: fingerprint,
            ca_mac: B64.encode(mac),
            answer,
        })
    }

    /// Housekeeping: report exchanges that never reached their second step.
    pub async fn setup_sweep(&self) {
        let abandoned = self
            .setup_exchanges
            .sweep(&self.cfg.setup_code, self.clock.instant());
        self.report_abandoned(abandoned).await;
    }

    async fn report_abandoned(&self, abandoned: Vec<Abandoned>) {
        for a in abandoned {
            self.setup_alert(
                AlertKind::SetupCodeUnconfirmed,
                &a.device_id,
                a.source,
                format!(
                    "setup-code exchange for {} from {} was never confirmed (wrong code, or a relay between device and daemon)",
                    a.device_id, a.source
                ),
            )
            .await;
        }
    }

    async fn setup_alert(
        &self,
        kind: AlertKind,
        device_id: &DeviceId,
        source: IpAddr,
        detail: String,
    ) {
        let a = AlertDraft {
            kind,
            instance: device_id.to_string(),
            addresses: vec![source.to_string()],
            port: None,
            daemon_id: None,
            ca_fingerprint: None,
            detail,
        };
        if let Err(e) = self.raise_alert(a).await {
            tracing::warn!(error = %e, %device_id, "could not record a setup-code alert");
        }
    }
}
