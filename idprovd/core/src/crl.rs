//! The CRL of the daemon CA (F12): regenerated after every change that
//! revokes a certificate, and re-signed before its nextUpdate; stored in
//! redb so it survives restarts, and held in memory for `GET /crl`.
//!
//! A change commits first and regenerates after (so a revocation is never
//! delayed by signing a large CRL); a regeneration that fails or is lost in
//! a crash is caught by the revocation generation the stored CRL records,
//! which [`crl_maintenance`] and startup compare with the store's.

use std::sync::{Arc, RwLock};

use crate::context::Core;
use crate::error::Error;
use crate::pki::Pki;
use crate::storage::{Change, Store, StoreView, Unit};
use crate::store::CrlState;
use crate::x509::CertConfig;
use anyhow::Context;
use idprov_proto::keys::pem_encode;
use idprov_proto::x509::CrlInfo;
use rcgen::{CertificateRevocationListParams, KeyIdMethod, RevocationReason, RevokedCertParams};

/// RFC 5280 reason codes the daemon uses.
pub mod reason {
    pub const UNSPECIFIED: u8 = 0;
    pub const KEY_COMPROMISE: u8 = 1;
    pub const AFFILIATION_CHANGED: u8 = 3;
    pub const SUPERSEDED: u8 = 4;
    pub const CESSATION_OF_OPERATION: u8 = 5;
    pub const PRIVILEGE_WITHDRAWN: u8 = 9;
}

/// One signed CRL.
pub struct CrlDoc {
    pub der: bytes::Bytes,
    pub pem: String,
    pub state: CrlState,
}

impl CrlDoc {
    fn new(der: Vec<u8>, state: CrlState) -> CrlDoc {
        CrlDoc {
            pem: pem_encode("X509 CRL", &der),
            der: der.into(),
            state,
        }
    }

    pub fn info(&self) -> CrlInfo {
        CrlInfo {
            number: self.state.number,
            this_update: self.state.this_update,
            next_update: self.state.next_update,
            revoked: self.state.revoked,
            der_bytes: self.der.len() as u64,
        }
    }
}

/// The daemon's X.509 state outside the store: the current CRL.
pub struct X509State {
    current: RwLock<Arc<CrlDoc>>,
    /// One regeneration at a time; a second waits and then signs again,
    /// so the last one always includes the last change.
    regen: tokio::sync::Mutex<()>,
}

impl X509State {
    /// At startup: create the tables if needed, and load the stored CRL or
    /// sign a new one if it is missing, stale or behind the store.
    pub fn load(store: &dyn Store, pki: &Pki, cfg: &CertConfig, now: i64) -> anyhow::Result<Self> {
        let stored = store
            .read_with(|v| Ok((v.crl()?, v.revocation_version()?)))
            .context("reading the stored CRL")?;
        let doc = match stored {
            (Some((der, state)), version) if !needs_refresh(&state, version, now, cfg) => {
                CrlDoc::new(der, state)
            }
            _ => {
                store
                    .transact_with(|v, u| regenerate(v, u, pki, cfg, now))
                    .map_err(|e| anyhow::anyhow!("signing the CRL: {e}"))?
                    .0
            }
        };
        Ok(X509State {
            current: RwLock::new(Arc::new(doc)),
            regen: tokio::sync::Mutex::new(()),
        })
    }

    pub fn current(&self) -> Arc<CrlDoc> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set(&self, doc: CrlDoc) {
        let doc = Arc::new(doc);
        match self.current.write() {
            Ok(mut g) => *g = doc,
            Err(poisoned) => *poisoned.into_inner() = doc,
        }
    }
}

/// Re-sign when the store has changes the CRL lacks, or half of its
/// validity has passed.
fn needs_refresh(state: &CrlState, version: u64, now: i64, cfg: &CertConfig) -> bool {
    let half = (cfg.crl_validity.as_secs() / 2) as i64;
    state.version != version || now >= state.this_update + half || now >= state.next_update
}

/// Build, sign and store a CRL from the entries in the store, in `tx`.
pub fn regenerate(
    v: &dyn StoreView,
    u: &mut Unit,
    pki: &Pki,
    cfg: &CertConfig,
    now: i64,
) -> Result<CrlDoc, Error> {
    // Entries of expired certificates go (an expired certificate is
    // refused anyway).
    let (entries, expired) = v.crl_entries(now)?;
    if !expired.is_empty() {
        u.change(Change::DropCrlEntries(expired));
    }
    let version = v.revocation_version()?;
    let number = v.crl()?.map(|(_, s)| s.number).unwrap_or(0) + 1;
    let validity = cfg.crl_validity.as_secs().max(2) as i64;
    let state = CrlState {
        number,
        this_update: now,
        next_update: now + validity,
        version,
        revoked: entries.len() as u64,
    };
    let der = sign(pki, &entries, &state)
        .map_err(|e| Error::internal("the daemon could not sign its CRL", e))?;
    u.change(Change::PutCrl {
        der: der.clone(),
        state: state.clone(),
    });
    Ok(CrlDoc::new(der, state))
}

fn sign(pki: &Pki, entries: &[(String, i64, u8)], state: &CrlState) -> Result<Vec<u8>, String> {
    let ts = |t: i64| time::OffsetDateTime::from_unix_timestamp(t).map_err(|e| e.to_string());
    let mut revoked = Vec::with_capacity(entries.len());
    for (serial, at, code) in entries {
        let bytes = hex::decode(serial).map_err(|e| format!("stored serial {serial}: {e}"))?;
        revoked.push(RevokedCertParams {
            serial_number: bytes.into(),
            revocation_time: ts(*at)?,
            reason_code: reason_of(*code),
            invalidity_date: None,
        });
    }
    let params = CertificateRevocationListParams {
        this_update: ts(state.this_update)?,
        next_update: ts(state.next_update)?,
        crl_number: state.number.to_be_bytes().to_vec().into(),
        issuing_distribution_point: None,
        revoked_certs: revoked,
        key_identifier_method: KeyIdMethod::Sha256,
    };
    let issuer = pki.ca_issuer().map_err(|e| e.to_string())?;
    let crl = params.signed_by(&issuer).map_err(|e| e.to_string())?;
    Ok(crl.der().to_vec())
}

fn reason_of(code: u8) -> Option<RevocationReason> {
    Some(match code {
        reason::KEY_COMPROMISE => RevocationReason::KeyCompromise,
        reason::AFFILIATION_CHANGED => RevocationReason::AffiliationChanged,
        reason::SUPERSEDED => RevocationReason::Superseded,
        reason::CESSATION_OF_OPERATION => RevocationReason::CessationOfOperation,
        reason::PRIVILEGE_WITHDRAWN => RevocationReason::PrivilegeWithdrawn,
        _ => return None,
    })
}

impl X509State {
    /// Re-sign the CRL now (after a committed change) and publish it.
    pub async fn refresh(
        &self,
        core: &Core,
        pki: &Arc<Pki>,
        cfg: &CertConfig,
    ) -> Result<Arc<CrlDoc>, Error> {
        let _one = self.regen.lock().await;
        let now = core.now();
        let (pki, cfg) = (pki.clone(), cfg.clone());
        let doc = core
            .transact(move |v, u| regenerate(v, u, &pki, &cfg, now))
            .await?;
        tracing::info!(
            number = doc.state.number,
            revoked = doc.state.revoked,
            "CRL regenerated"
        );
        self.set(doc);
        Ok(self.current())
    }

    /// Is the CRL behind the store, or past half of its validity?
    pub async fn due(&self, core: &Core, cfg: &CertConfig) -> Result<bool, Error> {
        let state = self.current().state.clone();
        let now = core.now();
        let cfg = cfg.clone();
        core.read(move |v| Ok(needs_refresh(&state, v.revocation_version()?, now, &cfg)))
            .await
    }
}
