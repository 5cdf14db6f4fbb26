//! [`StoreView`] for the redb read snapshot ([`Rx`]) and the write
//! transaction ([`Tx`]): one body for both, since redb opens tables the same
//! way in either.

use idprov_proto::admin::{AuditEntry, ProvisioningState};
use redb::{ReadableTable, ReadableTableMetadata};
use serde::de::DeserializeOwned;

use super::identity::{KEY_IDS, MAC_IDS, MAX_OTHERS};
use super::x509::{
    CERTS, CERTS_BY_DEVICE, CRL_DER, CRL_ENTRIES, CRL_STATE, REGISTRY_CAS, RETIRED_KEYS, VERSION,
    X509_META, be_u64,
};
use idprovd_core::policy::PolicyRecord;
use idprovd_core::storage::{CrlEntries, Paged, StoreView};
use idprovd_core::store::StoreResult as CoreResult;
use idprovd_core::store::{
    CertRecord, CrlState, DeviceRecord, OobRecord, PendingRecord, RegistryCaRecord, RetiredKey,
    TokenRecord,
};

use super::{
    AUDIT, CLOCK_KEY, DEVICES, META, OOB, OOB_MAC, PENDING, POLICY_KEY, PROVISIONING_KEY, REPLAY,
    REPLAY_EXP, Rx, StoreResult, TOKENS, Tx, decode,
};

/// Run a body that fails with this backend's error, reporting the
/// interface's.
fn local<T>(f: impl FnOnce() -> StoreResult<T>) -> CoreResult<T> {
    f().map_err(Into::into)
}

fn get_json<T: DeserializeOwned>(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    id: &str,
) -> StoreResult<Option<T>> {
    let v = t.get(id)?;
    v.map(|v| decode(id, v.value())).transpose()
}

/// Keyset paging over a JSON table: entries with key > `after`, filtered,
/// at most `limit`.
fn page<T: DeserializeOwned>(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    after: Option<&str>,
    limit: usize,
    keep: &dyn Fn(&T) -> bool,
) -> StoreResult<Paged<T>> {
    let total = t.len()?;
    let iter = match after {
        Some(a) => t.range::<&str>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded))?,
        None => t.range::<&str>(..)?,
    };
    let mut out = Vec::new();
    let mut last = None;
    let mut more = false;
    for item in iter {
        let (k, v) = item?;
        let rec: T = decode(k.value(), v.value())?;
        if keep(&rec) {
            if out.len() == limit {
                more = true; // a further match exists: there is a next page
                break;
            }
            out.push(rec);
            last = Some(k.value().to_string());
        }
    }
    Ok((out, if more { last } else { None }, total))
}

/// Ids the (value, id) index lists under `value`, but `except`.
fn index_ids(
    t: &impl ReadableTable<(&'static str, &'static str), ()>,
    value: &str,
    except: &str,
) -> StoreResult<Vec<String>> {
    let mut out = Vec::new();
    for item in t.range((value, "")..)? {
        let (k, _) = item?;
        let (v, id) = k.value();
        if v != value {
            break;
        }
        if id != except {
            out.push(id.to_string());
            if out.len() == MAX_OTHERS {
                break;
            }
        }
    }
    Ok(out)
}

fn audit_matches(e: &AuditEntry, q: Option<&str>) -> bool {
    q.is_none_or(|q| {
        let q = q.to_lowercase();
        [&e.actor, &e.action, &e.detail]
            .iter()
            .any(|s| s.to_lowercase().contains(&q))
            || e.target
                .as_deref()
                .is_some_and(|s| s.to_lowercase().contains(&q))
            || e.source
                .as_deref()
                .is_some_and(|s| s.to_lowercase().contains(&q))
    })
}

macro_rules! store_view {
    ($ty:ty) => {
        impl StoreView for $ty {
            fn device(&self, id: &str) -> CoreResult<Option<DeviceRecord>> {
                local(|| get_json(&self.tx.open_table(DEVICES)?, id))
            }
            fn pending(&self, id: &str) -> CoreResult<Option<PendingRecord>> {
                local(|| get_json(&self.tx.open_table(PENDING)?, id))
            }
            fn oob(&self, id: &str) -> CoreResult<Option<OobRecord>> {
                local(|| get_json(&self.tx.open_table(OOB)?, id))
            }
            fn token(&self, jti: &str) -> CoreResult<Option<TokenRecord>> {
                local(|| get_json(&self.tx.open_table(TOKENS)?, jti))
            }
            fn oob_mac_owner(&self, mac: &str) -> CoreResult<Option<String>> {
                local(|| {
                    let t = self.tx.open_table(OOB_MAC)?;
                    Ok(t.get(mac)?.map(|v| v.value().to_string()))
                })
            }
            fn device_count(&self) -> CoreResult<u64> {
                local(|| Ok(self.tx.open_table(DEVICES)?.len()?))
            }
            fn pending_count(&self) -> CoreResult<u64> {
                local(|| Ok(self.tx.open_table(PENDING)?.len()?))
            }
            fn oob_count(&self) -> CoreResult<u64> {
                local(|| Ok(self.tx.open_table(OOB)?.len()?))
            }
            fn provisioning(&self) -> CoreResult<ProvisioningState> {
                local(|| {
                    let meta = self.tx.open_table(META)?;
                    let v = meta.get(PROVISIONING_KEY)?;
                    match v {
                        Some(v) => decode("provisioning", v.value()),
                        None => Ok(ProvisioningState {
                            paused: false,
                            reason: None,
                        }),
                    }
                })
            }
            fn clock_high_water(&self) -> CoreResult<Option<i64>> {
                local(|| {
                    let meta = self.tx.open_table(META)?;
                    let v = meta.get(CLOCK_KEY)?;
                    Ok(v.and_then(|v| <[u8; 8]>::try_from(v.value()).ok())
                        .map(i64::from_be_bytes))
                })
            }
            fn proof_seen(&self, key: &str) -> CoreResult<bool> {
                local(|| Ok(self.tx.open_table(REPLAY)?.get(key)?.is_some()))
            }
            fn replay_count(&self) -> CoreResult<u64> {
                local(|| Ok(self.tx.open_table(REPLAY)?.len()?))
            }
            fn token_count(&self) -> CoreResult<u64> {
                local(|| Ok(self.tx.open_table(TOKENS)?.len()?))
            }
            fn replay_live_count(&self, now: i64) -> CoreResult<u64> {
                local(|| {
                    let t = self.tx.open_table(REPLAY_EXP)?;
                    let mut n = 0;
                    for item in t.range((now, "")..)? {
                        item?;
                        n += 1;
                    }
                    Ok(n)
                })
            }
            fn stale_pending(&self, cutoff: i64, max: usize) -> CoreResult<Vec<PendingRecord>> {
                local(|| {
                    let t = self.tx.open_table(PENDING)?;
                    let mut out = Vec::new();
                    for item in t.iter()? {
                        if out.len() >= max {
                            break;
                        }
                        let (k, v) = item?;
                        let rec: PendingRecord = decode(k.value(), v.value())?;
                        if rec.last_seen < cutoff {
                            out.push(rec);
                        }
                    }
                    Ok(out)
                })
            }
            fn ids_with_key(&self, kid: &str, except: &str) -> CoreResult<Vec<String>> {
                local(|| index_ids(&self.tx.open_table(KEY_IDS)?, kid, except))
            }
            fn ids_with_mac(&self, mac: &str, except: &str) -> CoreResult<Vec<String>> {
                local(|| index_ids(&self.tx.open_table(MAC_IDS)?, mac, except))
            }
            fn cert(&self, serial: &str) -> CoreResult<Option<CertRecord>> {
                local(|| get_json(&self.tx.open_table(CERTS)?, serial))
            }
            fn device_certs(&self, device: &str) -> CoreResult<Vec<CertRecord>> {
                local(|| {
                    let idx = self.tx.open_table(CERTS_BY_DEVICE)?;
                    let t = self.tx.open_table(CERTS)?;
                    let mut out = Vec::new();
                    for item in idx.range((device, "")..)? {
                        let (k, _) = item?;
                        let (d, s) = k.value();
                        if d != device {
                            break;
                        }
                        if let Some(v) = t.get(s)? {
                            out.push(decode(s, v.value())?);
                        }
                    }
                    Ok(out)
                })
            }
            fn retired_key(&self, kid: &str) -> CoreResult<Option<RetiredKey>> {
                local(|| get_json(&self.tx.open_table(RETIRED_KEYS)?, kid))
            }
            fn registry_cas(&self) -> CoreResult<Vec<RegistryCaRecord>> {
                local(|| {
                    let t = self.tx.open_table(REGISTRY_CAS)?;
                    let mut out = Vec::new();
                    for item in t.iter()? {
                        let (k, v) = item?;
                        out.push(decode(k.value(), v.value())?);
                    }
                    Ok(out)
                })
            }
            fn crl(&self) -> CoreResult<Option<(Vec<u8>, CrlState)>> {
                local(|| {
                    let t = self.tx.open_table(X509_META)?;
                    let der = t.get(CRL_DER)?.map(|v| v.value().to_vec());
                    let state: Option<CrlState> = t
                        .get(CRL_STATE)?
                        .map(|v| decode("crl_info", v.value()))
                        .transpose()?;
                    Ok(der.zip(state))
                })
            }
            fn revocation_version(&self) -> CoreResult<u64> {
                local(|| {
                    let t = self.tx.open_table(X509_META)?;
                    let v = t.get(VERSION)?;
                    Ok(be_u64(v.as_ref().map(|v| v.value())))
                })
            }
            fn crl_entries(&self, now: i64) -> CoreResult<CrlEntries> {
                local(|| {
                    let t = self.tx.open_table(CRL_ENTRIES)?;
                    let mut out = Vec::with_capacity(t.len()? as usize);
                    let mut expired = Vec::new();
                    for item in t.iter()? {
                        let (k, v) = item?;
                        let (at, not_after, code) = v.value();
                        if not_after < now {
                            expired.push(k.value().to_string());
                        } else {
                            out.push((k.value().to_string(), at, code));
                        }
                    }
                    Ok((out, expired))
                })
            }
            fn list_devices(
                &self,
                after: Option<&str>,
                limit: usize,
                keep: &dyn Fn(&DeviceRecord) -> bool,
            ) -> CoreResult<Paged<DeviceRecord>> {
                local(|| page(&self.tx.open_table(DEVICES)?, after, limit, keep))
            }
            fn list_pending(
                &self,
                after: Option<&str>,
                limit: usize,
                keep: &dyn Fn(&PendingRecord) -> bool,
            ) -> CoreResult<Paged<PendingRecord>> {
                local(|| page(&self.tx.open_table(PENDING)?, after, limit, keep))
            }
            fn list_oob(
                &self,
                after: Option<&str>,
                limit: usize,
                keep: &dyn Fn(&OobRecord) -> bool,
            ) -> CoreResult<Paged<OobRecord>> {
                local(|| page(&self.tx.open_table(OOB)?, after, limit, keep))
            }
            fn audit_page(
                &self,
                after: u64,
                limit: usize,
                q: Option<&str>,
            ) -> CoreResult<(Vec<AuditEntry>, Option<u64>, u64)> {
                local(|| {
                    let t = self.tx.open_table(AUDIT)?;
                    let total = t.len()?;
                    let mut out = Vec::new();
                    let mut last = None;
                    let mut more = false;
                    for item in t.range(after.saturating_add(1)..)? {
                        let (k, v) = item?;
                        let e: AuditEntry = decode("audit", v.value())?;
                        if audit_matches(&e, q) {
                            if out.len() == limit {
                                more = true;
                                break;
                            }
                            out.push(e);
                            last = Some(k.value());
                        }
                    }
                    Ok((out, if more { last } else { None }, total))
                })
            }
            fn audit_all(&self) -> CoreResult<Vec<AuditEntry>> {
                local(|| {
                    let t = self.tx.open_table(AUDIT)?;
                    let mut out = Vec::new();
                    for item in t.iter()? {
                        let (_, v) = item?;
                        out.push(decode("audit", v.value())?);
                    }
                    Ok(out)
                })
            }
            fn policy(&self) -> CoreResult<Option<PolicyRecord>> {
                local(|| get_json(&self.tx.open_table(META)?, POLICY_KEY))
            }
        }
    };
}

store_view!(Rx);
store_view!(Tx<'_>);
