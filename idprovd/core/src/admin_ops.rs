//! What administrators can do (flow 4, F9). Every change carries the revision
//! the administrator saw, so of two administrators acting on one record
//! exactly one wins; every decision lands in the audit log in the same
//! transaction that makes it.

use std::collections::HashMap;
use std::sync::Arc;

use idprov_proto::DeviceId;
use idprov_proto::admin::{
    AdminEvent, AuditEntry, DeviceStatus, DeviceView, ListQuery, MAX_OOB_BATCH, MAX_PAGE,
    OobEntryView, OobUpsertRequest, OobUpsertResult, Page, PendingView, ProvisioningState,
};
use idprov_proto::error::EntryError;

use crate::audit::draft;
use crate::config::CertConfig;
use crate::context::Core;
use crate::crl::X509State;
use crate::error::{Error, check_reason};
use crate::oob::validate_oob;
use crate::pki::Pki;
use crate::storage::{Change, StoreView};
use crate::store::{DeviceRecord, KeyRecord, OobRecord, same_setup, secret_hash};

pub use crate::audit::Actor;

/// What administrators do (this module and keys_admin.rs): the use cases of
/// the admin API, on the shared [`Core`] and the CRL they refresh after a
/// revocation.
pub struct Admin {
    pub(crate) core: Core,
    pub(crate) x509: Arc<X509State>,
    pki: Arc<Pki>,
    certs: CertConfig,
}

impl Admin {
    pub fn new(core: Core, x509: Arc<X509State>, pki: Arc<Pki>, certs: CertConfig) -> Admin {
        Admin {
            core,
            x509,
            pki,
            certs,
        }
    }

    /// After a change that revoked something: regenerate the CRL, and if
    /// that fails leave it to the maintenance task (the change is committed).
    pub(crate) async fn crl_changed(&self) {
        if let Err(e) = self.x509.refresh(&self.core, &self.pki, &self.certs).await {
            tracing::warn!(error = %e, "CRL regeneration failed; will retry");
        }
    }
}

fn limit(q: &ListQuery) -> usize {
    q.limit.unwrap_or(100).clamp(1, MAX_PAGE)
}

fn matches(q: &Option<String>, fields: &[&str]) -> bool {
    match q {
        None => true,
        Some(q) if q.is_empty() => true,
        Some(q) => {
            let q = q.to_lowercase();
            fields.iter().any(|f| f.to_lowercase().contains(&q))
        }
    }
}

/// The device an administrator changes, if the revision they saw (when
/// given) is still current: of two administrators, exactly one wins.
pub(crate) fn device_for_change(
    v: &dyn StoreView,
    id: &DeviceId,
    revision: Option<u64>,
) -> Result<DeviceRecord, Error> {
    let dev = v
        .device(id.as_str())?
        .ok_or_else(|| Error::not_found(format!("no device {id}")))?;
    if let Some(r) = revision
        && r != dev.revision
    {
        return Err(Error::conflict(format!(
            "the device changed since you saw it (revision {} now, you saw {r})",
            dev.revision
        )));
    }
    Ok(dev)
}

impl Admin {
    pub async fn list_pending(&self, q: ListQuery) -> Result<Page<PendingView>, Error> {
        let n = limit(&q);
        self.core
            .read(move |v| {
                let (items, next, total) =
                    v.list_pending(q.after.as_deref(), n, &|p: &crate::store::PendingRecord| {
                        let mac = p.mac.map(|m| m.to_string()).unwrap_or_default();
                        matches(&q.q, &[p.device_id.as_str(), &mac, &p.kid, &p.source])
                    })?;
                Ok(Page {
                    items: items.iter().map(|p| p.view()).collect(),
                    next,
                    total,
                })
            })
            .await
    }

    pub async fn list_devices(&self, q: ListQuery) -> Result<Page<DeviceView>, Error> {
        let n = limit(&q);
        self.core
            .read(move |v| {
                let (items, next, total) =
                    v.list_devices(q.after.as_deref(), n, &|d: &DeviceRecord| {
                        let mac = d.mac.map(|m| m.to_string()).unwrap_or_default();
                        let kids: Vec<&str> = d.keys.iter().map(|k| k.kid.as_str()).collect();
                        let mut fields =
                            vec![d.device_id.as_str(), mac.as_str(), d.admitted_by.as_str()];
                        fields.extend(kids);
                        matches(&q.q, &fields)
                    })?;
                Ok(Page {
                    items: items.iter().map(|d| d.view()).collect(),
                    next,
                    total,
                })
            })
            .await
    }

    pub async fn get_device(&self, id: DeviceId) -> Result<DeviceView, Error> {
        self.core
            .read(move |v| {
                v.device(id.as_str())?
                    .map(|d| d.view())
                    .ok_or_else(|| Error::not_found(format!("no device {id}")))
            })
            .await
    }

    pub async fn list_oob(&self, q: ListQuery) -> Result<Page<OobEntryView>, Error> {
        let n = limit(&q);
        self.core
            .read(move |v| {
                let (items, next, total) =
                    v.list_oob(q.after.as_deref(), n, &|o: &OobRecord| {
                        let mac = o.mac.map(|m| m.to_string()).unwrap_or_default();
                        let kid = o.kid.clone().unwrap_or_default();
                        let note = o.note.clone().unwrap_or_default();
                        matches(&q.q, &[o.device_id.as_str(), &mac, &kid, &note])
                    })?;
                Ok(Page {
                    items: items.iter().map(|o| o.view()).collect(),
                    next,
                    total,
                })
            })
            .await
    }

    /// Approve a pending device: it becomes an active device with the
    /// pending key; its next poll gets a token.
    pub async fn approve(
        &self,
        id: DeviceId,
        revision: Option<u64>,
        actor: Actor,
    ) -> Result<DeviceView, Error> {
        self.decide(id, revision, None, actor, DeviceStatus::Active)
            .await
    }

    pub async fn reject(
        &self,
        id: DeviceId,
        revision: Option<u64>,
        reason: Option<String>,
        actor: Actor,
    ) -> Result<DeviceView, Error> {
        check_reason(reason.as_deref())?;
        self.decide(id, revision, reason, actor, DeviceStatus::Rejected)
            .await
    }

    async fn decide(
        &self,
        id: DeviceId,
        revision: Option<u64>,
        reason: Option<String>,
        actor: Actor,
        status: DeviceStatus,
    ) -> Result<DeviceView, Error> {
        let revision = revision.ok_or_else(|| {
            Error::bad_request("revision is required: pass the revision you decided on")
        })?;
        let now = self.core.now();
        let who = actor.label();
        let view = self.core
            .transact(move |v, u| {
                let Some(p) = v.pending(id.as_str())? else {
                    if v.device(id.as_str())?.is_some() {
                        return Err(Error::conflict(
                            "another administrator decided this device first",
                        ));
                    }
                    return Err(Error::not_found(format!("no pending request for {id}")));
                };
                if p.revision != revision {
                    return Err(Error::conflict(format!(
                        "the request changed since you saw it (revision {} now, you saw {revision}); reload and decide again",
                        p.revision
                    )));
                }
                let dev = DeviceRecord {
                    device_id: p.device_id.clone(),
                    status,
                    epoch: rand::random(),
                    keys: vec![KeyRecord {
                        kid: p.kid.clone(),
                        format: p.key_format,
                        pem: p.public_key.clone(),
                        added_at: now,
                        expires_at: None,
                    }],
                    mac: p.mac,
                    admitted_by: actor.label(),
                    created_at: now,
                    last_issued_at: None,
                    tokens_issued: 0,
                    flags: p.flags.clone(),
                    revision: 1,
                    status_reason: reason.clone(),
                };
                u.change(Change::DeletePending(id.clone()));
                u.put_device(&dev);
                let action = if status == DeviceStatus::Active {
                    "pending_approved"
                } else {
                    "pending_rejected"
                };
                let detail = match &reason {
                    Some(r) => format!("key {}; reason: {r}", p.kid),
                    None => format!("key {}", p.kid),
                };
                u.audit(draft(
                    now,
                    &actor.label(),
                    action,
                    Some(id.as_str()),
                    Some(&actor.source),
                    detail,
                ));
                let view = dev.view();
                let out = view.clone();
                u.event(AdminEvent::PendingRemoved { device_id: id.clone() });
                u.event(AdminEvent::DeviceUpserted { device: view });
                Ok(out)
            })
            .await?;
        // After the commit: the decision happened.
        tracing::info!(
            device_id = view.device_id.as_str(),
            decision = if status == DeviceStatus::Active { "approved" } else { "rejected" },
            actor = %who,
            revision,
            flags = %view.flags.join(","),
            "pending device decided"
        );
        Ok(view)
    }

    /// Revoke a device: every token and key of it stops working at once,
    /// for good (invariant I4).
    pub async fn revoke_device(
        &self,
        id: DeviceId,
        revision: Option<u64>,
        reason: Option<String>,
        actor: Actor,
    ) -> Result<DeviceView, Error> {
        check_reason(reason.as_deref())?;
        let now = self.core.now();
        let view = self
            .core
            .transact(move |v, u| {
                let mut dev = device_for_change(v, &id, revision)?;
                if dev.status == DeviceStatus::Revoked {
                    return Err(Error::conflict("the device is already revoked"));
                }
                dev.status = DeviceStatus::Revoked;
                dev.status_reason = reason.clone();
                dev.revision += 1;
                u.put_device(&dev);
                crate::revocation::on_device_revoked(v, u, &dev, now)?;
                u.audit(draft(
                    now,
                    &actor.label(),
                    "device_revoked",
                    Some(id.as_str()),
                    Some(&actor.source),
                    reason.clone().unwrap_or_default(),
                ));
                let view = dev.view();
                let out = view.clone();
                u.event(AdminEvent::DeviceUpserted { device: view });
                Ok(out)
            })
            .await?;
        self.crl_changed().await;
        Ok(view)
    }

    /// Forget a device. Its tokens die with it (they name the record's
    /// epoch); a device with the same id later starts over as unknown.
    pub async fn remove_device(&self, id: DeviceId, actor: Actor) -> Result<(), Error> {
        let now = self.core.now();
        self.core
            .transact(move |v, u| {
                let dev = v
                    .device(id.as_str())?
                    .ok_or_else(|| Error::not_found(format!("no device {id}")))?;
                crate::revocation::on_device_removed(v, u, &dev, now)?;
                u.change(Change::DeleteDevice(id.clone()));
                u.audit(draft(
                    now,
                    &actor.label(),
                    "device_removed",
                    Some(id.as_str()),
                    Some(&actor.source),
                    format!("status was {:?}", dev.status),
                ));
                u.event(AdminEvent::DeviceRemoved {
                    device_id: id.clone(),
                });
                Ok(())
            })
            .await?;
        self.crl_changed().await;
        Ok(())
    }

    /// Upsert many OOB entries in one transaction: all of them or none.
    pub async fn upsert_oob(
        &self,
        req: OobUpsertRequest,
        actor: Actor,
    ) -> Result<OobUpsertResult, Error> {
        if req.entries.len() > MAX_OOB_BATCH {
            return Err(Error::bad_request(format!(
                "at most {MAX_OOB_BATCH} entries per request; send larger lists in several requests or use idprov-oob"
            )));
        }
        let now = self.core.now();
        let records = validate_oob(&req.entries, now)?;
        let (replace, dry_run) = (req.replace, req.dry_run);
        let result = self.core
            .transact(move |v, u| {
                let mut result = OobUpsertResult {
                    dry_run,
                    ..Default::default()
                };
                let mut errors = Vec::new();
                // MACs are judged against the state after the whole batch, so
                // a dry run and the real run agree and entry order is moot:
                // a MAC may move from an entry that this batch also changes.
                let batch_macs: HashMap<String, Option<idprov_proto::MacAddr>> = records
                    .iter()
                    .map(|r| (r.device_id.to_string(), r.mac))
                    .collect();
                for (index, mut rec) in records.iter().cloned().enumerate() {
                    let id = rec.device_id.to_string();
                    if let Some(mac) = rec.mac
                        && let Some(owner) = v.oob_mac_owner(&mac.to_string())?
                        && owner != id
                        && batch_macs.get(&owner).is_none_or(|m| *m == Some(mac))
                    {
                        errors.push(EntryError {
                            index,
                            device_id: Some(id.clone()),
                            message: format!("MAC {mac} already belongs to device {owner}"),
                        });
                        continue;
                    }
                    match v.oob(&id)? {
                        None => {
                            result.added.push(rec.device_id.clone());
                            if !dry_run {
                                u.change(Change::PutOob(rec.clone()));
                            }
                        }
                        Some(old) => {
                            // A secret is stored salted: same secret, same
                            // salt needed to compare; keep the old salt.
                            let same = old.kid == rec.kid
                                && old.mac == rec.mac
                                && old.expires_at == rec.expires_at
                                && old.note == rec.note
                                && same_secret(&old, &rec)
                                && same_setup(&old, &rec);
                            if same {
                                result.unchanged += 1;
                                continue;
                            }
                            let creds_change = old.kid != rec.kid
                                || old.mac != rec.mac
                                || !same_secret(&old, &rec)
                                || !same_setup(&old, &rec);
                            if creds_change && !replace {
                                errors.push(EntryError {
                                    index,
                                    device_id: Some(id.clone()),
                                    message: "an entry with other credentials exists; pass replace to change it".into(),
                                });
                                continue;
                            }
                            if same_secret(&old, &rec) {
                                rec.secret_hash = old.secret_hash.clone();
                                rec.secret_salt = old.secret_salt.clone();
                                rec.secret_consumed_at = old.secret_consumed_at;
                            }
                            if same_setup(&old, &rec) {
                                rec.setup = old.setup.clone();
                            }
                            rec.created_at = old.created_at;
                            result.changed.push(rec.device_id.clone());
                            if !dry_run {
                                u.change(Change::PutOob(rec.clone()));
                            }
                        }
                    }
                }
                if !errors.is_empty() {
                    return Err(Error::invalid(
                        format!("{} entries refused; nothing was stored", errors.len()),
                        errors,
                    ));
                }
                if dry_run {
                    // Nothing recorded in the unit: nothing is written.
                    return Ok(result);
                }
                u.audit(draft(
                    now,
                    &actor.label(),
                    "oob_upsert",
                    None,
                    Some(&actor.source),
                    format!(
                        "added {}, changed {}, unchanged {}",
                        result.added.len(),
                        result.changed.len(),
                        result.unchanged
                    ),
                ));
                // The count once this batch is applied.
                let count = v.oob_count()? + result.added.len() as u64;
                u.event(AdminEvent::OobChanged { count });
                Ok(result)
            })
            .await?;
        Ok(result)
    }

    pub async fn remove_oob(&self, id: DeviceId, actor: Actor) -> Result<(), Error> {
        let now = self.core.now();
        self.core
            .transact(move |v, u| {
                if v.oob(id.as_str())?.is_none() {
                    return Err(Error::not_found(format!("no OOB entry for {id}")));
                }
                u.change(Change::DeleteOob(id.clone()));
                u.audit(draft(
                    now,
                    &actor.label(),
                    "oob_removed",
                    Some(id.as_str()),
                    Some(&actor.source),
                    String::new(),
                ));
                // The count once this removal is applied.
                let count = v.oob_count()?.saturating_sub(1);
                u.event(AdminEvent::OobChanged { count });
                Ok(())
            })
            .await?;
        Ok(())
    }

    pub async fn provisioning_state(&self) -> Result<ProvisioningState, Error> {
        self.core.read(|v| Ok(v.provisioning()?)).await
    }

    pub async fn set_provisioning(
        &self,
        state: ProvisioningState,
        actor: Actor,
    ) -> Result<ProvisioningState, Error> {
        check_reason(state.reason.as_deref())?;
        let now = self.core.now();
        let state = self
            .core
            .transact(move |_, u| {
                u.change(Change::SetProvisioning(state.clone()));
                u.audit(draft(
                    now,
                    &actor.label(),
                    if state.paused {
                        "provisioning_paused"
                    } else {
                        "provisioning_resumed"
                    },
                    None,
                    Some(&actor.source),
                    state.reason.clone().unwrap_or_default(),
                ));
                let out = state.clone();
                u.event(AdminEvent::Provisioning {
                    state: state.clone(),
                });
                Ok(out)
            })
            .await?;
        Ok(state)
    }

    pub async fn audit_page(&self, q: ListQuery) -> Result<Page<AuditEntry>, Error> {
        let n = limit(&q);
        let after = match q.after.as_deref() {
            None | Some("") => 0,
            Some(a) => a
                .parse::<u64>()
                .map_err(|_| Error::bad_request("after must be an audit sequence number"))?,
        };
        self.core
            .read(move |v| {
                let (items, next, total) = v.audit_page(after, n, q.q.as_deref())?;
                let next = next.map(|s| s.to_string());
                Ok(Page { items, next, total })
            })
            .await
    }
}

/// Whether `new` keeps the secret of `old`: it gives the same one, or it
/// leaves the secret out while key and MAC stay. The daemon never gives a
/// secret back, so an exported list cannot repeat it; import sessions follow
/// the same rule (`store::oob_import`).
fn same_secret(old: &OobRecord, new: &OobRecord) -> bool {
    match (&old.secret_salt, &old.secret_hash, &new.secret_hash) {
        (None, None, None) => true,
        (Some(_), Some(_), None) => old.kid == new.kid && old.mac == new.mac,
        (None, None, Some(_)) => false,
        // Salts differ per upload: hash the new plaintext with the old salt.
        (Some(salt), Some(hash), Some(_)) => new
            .secret_plain_for_compare
            .as_ref()
            .is_some_and(|p| secret_hash(salt, p.expose()) == *hash),
        _ => false,
    }
}
