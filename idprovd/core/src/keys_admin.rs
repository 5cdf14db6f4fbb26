//! What administrators can do with keys, certificates and registry CAs
//! (F12, F13): add and remove device keys, revoke a key or a certificate,
//! re-provision a device after a factory reset, register CAs. As everywhere
//! on the admin API, each change and its audit entry commit together; a
//! change that revokes a certificate then regenerates the CRL before the
//! answer leaves.

use idprov_proto::admin::{AdminEvent, DeviceStatus, DeviceView};
use idprov_proto::x509::{
    AdminKeyAddRequest, CertificateView, CrlInfo, KeysResponse, RegistryCaAddRequest,
    RegistryCaView, ReprovisionRequest,
};
use idprov_proto::{DeviceId, PublicKey};

use crate::admin_ops::{Admin, device_for_change};
use crate::audit::Actor;
use crate::audit::draft;
use crate::certs::{add_key_tx, keys_response};
use crate::crl::reason;
use crate::error::{Error, check_reason};
use crate::flags::Flag;
use crate::registry::{MAX_REGISTRY_CAS, check_wrapped, parse_ca};
use crate::revocation::{retire_key, retire_key_tx, revoke_cert, revoke_device_certs};
use crate::storage::{Change, StoreView};

fn label(a: &Actor) -> String {
    format!("admin:{}", a.name)
}

/// Parse a key an administrator gives and check it against registry CAs.
fn admin_key(
    v: &dyn StoreView,
    pem: &str,
    format: Option<idprov_proto::KeyFormat>,
    now: i64,
) -> Result<PublicKey, Error> {
    let key = PublicKey::from_pem(pem, format)
        .map_err(|e| Error::bad_request(format!("public_key: {e}")))?;
    check_wrapped(&key, &v.registry_cas()?, now).map_err(Error::bad_request)?;
    Ok(key)
}

impl Admin {
    pub async fn admin_add_key(
        &self,
        id: DeviceId,
        req: AdminKeyAddRequest,
        actor: Actor,
    ) -> Result<KeysResponse, Error> {
        let now = self.core.now();
        if req.expires_at.is_some_and(|e| e <= now) {
            return Err(Error::bad_request("expires_at is in the past"));
        }
        let resp = self
            .core
            .transact(move |v, u| {
                let mut dev = device_for_change(v, &id, req.revision)?;
                if dev.status != DeviceStatus::Active {
                    return Err(Error::conflict("the device is not active"));
                }
                let key = admin_key(v, &req.public_key, req.key_format, now)?;
                add_key_tx(v, u, &mut dev, &key, req.expires_at, now)?;
                u.audit(draft(
                    now,
                    &label(&actor),
                    "key_added",
                    Some(id.as_str()),
                    Some(&actor.source),
                    format!("key {}", key.thumbprint()),
                ));
                let out = keys_response(&dev);
                u.event(AdminEvent::DeviceUpserted { device: dev.view() });
                Ok(out)
            })
            .await?;
        Ok(resp)
    }

    /// Remove (`revoke` false) or revoke a key. Either way it never comes
    /// back, and its certificates are revoked; tokens bound to it stop
    /// working (their key is gone).
    pub async fn admin_remove_key(
        &self,
        id: DeviceId,
        kid: String,
        revoke: bool,
        revision: Option<u64>,
        why: Option<String>,
        actor: Actor,
    ) -> Result<KeysResponse, Error> {
        check_reason(why.as_deref())?;
        let now = self.core.now();
        let resp = self
            .core
            .transact(move |v, u| {
                let mut dev = device_for_change(v, &id, revision)?;
                let Some(key) = dev.key(&kid) else {
                    return Err(Error::not_found(format!("device {id} has no key {kid}")));
                };
                // Without a usable key an active device can never
                // authenticate again, yet it would still look admitted: a
                // routine removal of its last key is refused. Revoking it
                // (a compromised key) is never refused — stopping the key
                // at once matters more; the device then needs
                // re-provisioning, as the answer's key list shows.
                let others_usable = dev.keys.iter().any(|k| k.kid != kid && k.is_usable(now));
                if !revoke
                    && dev.status == DeviceStatus::Active
                    && key.is_usable(now)
                    && !others_usable
                {
                    return Err(Error::conflict(format!(
                        "key {kid} is the last active key of device {id}; to stop the device, revoke or remove the device instead"
                    )));
                }
                let (action, code, tag) = if revoke {
                    ("key_revoked", reason::KEY_COMPROMISE, "revoked")
                } else {
                    ("key_removed", reason::SUPERSEDED, "removed")
                };
                let n = retire_key_tx(v, u, &dev, &kid, tag, code, now)?;
                dev.keys.retain(|k| k.kid != kid);
                dev.revision += 1;
                u.put_device(&dev);
                u.audit(draft(
                    now,
                    &label(&actor),
                    action,
                    Some(id.as_str()),
                    Some(&actor.source),
                    format!(
                        "key {kid}; {n} certificates revoked{}",
                        why.as_ref()
                            .map(|w| format!("; reason: {w}"))
                            .unwrap_or_default()
                    ),
                ));
                let out = keys_response(&dev);
                u.event(AdminEvent::DeviceUpserted { device: dev.view() });
                Ok(out)
            })
            .await?;
        self.crl_changed().await;
        Ok(resp)
    }

    pub async fn device_certificates(&self, id: DeviceId) -> Result<Vec<CertificateView>, Error> {
        self.core
            .read(move |v| {
                Ok(v.device_certs(id.as_str())?
                    .iter()
                    .map(|c| c.view())
                    .collect())
            })
            .await
    }

    pub async fn certificate(&self, serial: String) -> Result<CertificateView, Error> {
        let serial = normalise_serial(&serial)?;
        self.core
            .read(move |v| {
                v.cert(&serial)?
                    .map(|c| c.view())
                    .ok_or_else(|| Error::not_found(format!("no certificate with serial {serial}")))
            })
            .await
    }

    pub async fn revoke_certificate(
        &self,
        serial: String,
        why: Option<String>,
        actor: Actor,
    ) -> Result<CertificateView, Error> {
        check_reason(why.as_deref())?;
        let serial = normalise_serial(&serial)?;
        let now = self.core.now();
        let view = self
            .core
            .transact(move |v, u| {
                let rec = v.cert(&serial)?.ok_or_else(|| {
                    Error::not_found(format!("no certificate with serial {serial}"))
                })?;
                let tag = why.clone().unwrap_or_else(|| "revoked".into());
                let Some(rec) = revoke_cert(u, rec, now, &tag, reason::UNSPECIFIED) else {
                    return Err(Error::conflict("the certificate is already revoked"));
                };
                u.audit(draft(
                    now,
                    &label(&actor),
                    "certificate_revoked",
                    Some(rec.device_id.as_str()),
                    Some(&actor.source),
                    format!("serial {serial}; reason: {tag}"),
                ));
                let out = rec.view();
                Ok(out)
            })
            .await?;
        self.crl_changed().await;
        Ok(view)
    }

    /// After a factory reset: retire every key and certificate of the device
    /// and bind it to its new key. Old tokens die with the new epoch. A
    /// revoked device stays revoked (I4).
    pub async fn reprovision(
        &self,
        id: DeviceId,
        req: ReprovisionRequest,
        actor: Actor,
    ) -> Result<DeviceView, Error> {
        if req.reason.trim().is_empty() {
            return Err(Error::bad_request(
                "reason is required: re-provisioning is recorded in the audit log",
            ));
        }
        check_reason(Some(&req.reason))?;
        let now = self.core.now();
        let view = self.core
            .transact(move |v, u| {
                let mut dev = device_for_change(v, &id, req.revision)?;
                if dev.status != DeviceStatus::Active {
                    return Err(Error::conflict(
                        "only an active device can be re-provisioned; a revoked device stays revoked",
                    ));
                }
                let key = admin_key(v, &req.public_key, req.key_format, now)?;
                if v.retired_key(key.thumbprint())?.is_some() || dev.key(key.thumbprint()).is_some()
                {
                    return Err(Error::conflict(
                        "the new key must be a fresh key: this one is (or was) a key of a device",
                    ));
                }
                let old: Vec<String> = dev.keys.iter().map(|k| k.kid.clone()).collect();
                for kid in &old {
                    retire_key(u, &dev, kid, "reprovisioned", now);
                }
                // Every live certificate of the device goes, whichever key it
                // certifies (those of keys removed earlier are revoked already).
                let revoked = revoke_device_certs(
                    v,
                    u,
                    &dev,
                    None,
                    now,
                    "reprovisioned",
                    reason::SUPERSEDED,
                )?;
                dev.keys.clear();
                dev.epoch = rand::random();
                if req.mac.is_some() {
                    dev.mac = req.mac;
                }
                dev.flags.retain(|f| f != Flag::KeyMismatch.as_str());
                add_key_tx(v, u, &mut dev, &key, None, now)?;
                u.audit(draft(
                    now,
                    &label(&actor),
                    "device_reprovisioned",
                    Some(id.as_str()),
                    Some(&actor.source),
                    format!(
                        "retired keys [{}], {revoked} certificates revoked; new key {}; reason: {}",
                        old.join(", "),
                        key.thumbprint(),
                        req.reason
                    ),
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

    pub async fn registry_cas(&self) -> Result<Vec<RegistryCaView>, Error> {
        self.core
            .read(|v| Ok(v.registry_cas()?.iter().map(|c| c.view()).collect()))
            .await
    }

    pub async fn add_registry_ca(
        &self,
        req: RegistryCaAddRequest,
        actor: Actor,
    ) -> Result<RegistryCaView, Error> {
        let mut rec = parse_ca(&req.pem).map_err(Error::bad_request)?;
        let now = self.core.now();
        rec.added_at = now;
        rec.added_by = label(&actor);
        let view = self
            .core
            .transact(move |v, u| {
                let cas = v.registry_cas()?;
                if cas.iter().any(|c| c.fingerprint == rec.fingerprint) {
                    return Err(Error::conflict("this CA is already registered"));
                }
                if cas.len() >= MAX_REGISTRY_CAS {
                    return Err(Error::conflict(format!(
                        "at most {MAX_REGISTRY_CAS} registry CAs; remove one first"
                    )));
                }
                u.change(Change::PutRegistryCa(rec.clone()));
                u.audit(draft(
                    now,
                    &label(&actor),
                    "registry_ca_added",
                    None,
                    Some(&actor.source),
                    format!("{} ({})", rec.fingerprint, rec.subject),
                ));
                let out = rec.view();
                Ok(out)
            })
            .await?;
        Ok(view)
    }

    pub async fn remove_registry_ca(&self, fingerprint: String, actor: Actor) -> Result<(), Error> {
        let fp = fingerprint.to_ascii_lowercase();
        if fp.len() != 64 || !fp.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::bad_request(
                "fingerprint must be 64 hex digits (SHA-256 of the certificate)",
            ));
        }
        let now = self.core.now();
        self.core
            .transact(move |v, u| {
                if !v.registry_cas()?.iter().any(|c| c.fingerprint == fp) {
                    return Err(Error::not_found(format!("no registry CA {fp}")));
                }
                u.change(Change::DeleteRegistryCa(fp.clone()));
                u.audit(draft(
                    now,
                    &label(&actor),
                    "registry_ca_removed",
                    None,
                    Some(&actor.source),
                    fp.clone(),
                ));
                Ok(())
            })
            .await?;
        Ok(())
    }

    pub fn crl_info(&self) -> CrlInfo {
        self.x509.current().info()
    }
}

/// Serials are lower-case hex without separators; accept `AB:CD` and
/// upper case as openssl prints them.
fn normalise_serial(s: &str) -> Result<String, Error> {
    let hex: String = s
        .chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if hex.is_empty() || hex.len() > 40 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::bad_request(
            "serial must be the certificate's serial number in hex",
        ));
    }
    Ok(hex)
}
