//! The device side of the X.509 lifecycle: certificates attached to
//! provisioning and renewal answers, renewal over mutual TLS, a device adding
//! a key, and the registry-CA check of X.509-wrapped keys.
//!
//! Revocation is checked here, by the application, on every request (rule 4):
//! the TLS layer only proves the client certificate chains to the daemon CA,
//! and a resumed session proves not even that it is still wanted.

use std::net::SocketAddr;
use std::sync::Arc;

use idprov_proto::admin::{AdminEvent, DeviceStatus};
use idprov_proto::device::{Credentials, ProofEndpoint, proof_audience};
use idprov_proto::x509::{AddKeyRequest, KeysResponse, MAX_DEVICE_KEYS, MtlsRenewRequest};
use idprov_proto::{DeviceId, PublicKey};
use rustls_pki_types::CertificateDer;

use crate::audit::draft;
use crate::devices::{Devices, Presigned};
use crate::error::Error;
use crate::proof;
use crate::storage::{Change, StoreView, Unit};
use crate::store::{CertRecord, DeviceRecord, KeyRecord, RetiredKey};
use crate::x509::{CheckedCsr, build_certificate, check_csr, client_cert_identity};

/// The device port's client-certificate verifier: a certificate is optional,
/// and one that is sent must chain to the daemon CA (TLS fails otherwise).
pub fn client_verifier(
    pki: &crate::pki::Pki,
) -> anyhow::Result<Arc<dyn rustls::server::danger::ClientCertVerifier>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_cert_der.clone())?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .allow_unauthenticated()
            .build()?,
    )
}

/// The one answer for every refused client certificate, whatever the reason.
pub fn invalid_client_cert() -> Error {
    Error::InvalidClientCert
}

impl Devices {
    /// Parse and verify an optional CSR before the transaction (400 on a bad
    /// one; the device wrote it, so it may know why).
    pub fn prepare_csr(
        &self,
        csr: Option<&str>,
        device: &DeviceId,
    ) -> Result<Option<CheckedCsr>, Error> {
        let Some(pem) = csr else { return Ok(None) };
        let checked = check_csr(pem, device).map_err(|e| {
            tracing::info!(device_id = %device, reason = %e, "CSR refused");
            Error::bad_request(e.to_string())
        })?;
        if checked.asked_for_ca || checked.ignored_extensions > 0 {
            tracing::info!(
                device_id = %device,
                asked_for_ca = checked.asked_for_ca,
                ignored = checked.ignored_extensions,
                "CSR extensions ignored; the certificate follows policy"
            );
        }
        Ok(Some(checked))
    }

    /// In the issuing transaction: certify the CSR's key if it is a usable
    /// key of the device, record the certificate (I2), and put it in the
    /// answer. An Err aborts the whole transaction: no token either.
    pub fn attach_certificate(
        &self,
        v: &dyn StoreView,
        u: &mut Unit,
        dev: &DeviceRecord,
        creds: &mut Credentials,
        csr: Option<&CheckedCsr>,
        pre: Option<&Presigned>,
    ) -> Result<(), Error> {
        let Some(csr) = csr else { return Ok(()) };
        // The certificate is issued with the token, at the same time.
        let now = creds.issued_at;
        let kid = csr.key.thumbprint();
        if !dev.key(kid).is_some_and(|k| k.is_usable(now)) || v.retired_key(kid)?.is_some() {
            tracing::info!(device_id = %dev.device_id, kid, "CSR key is not a key of the device");
            return Err(Error::bad_request(
                crate::x509::CsrError::NotDeviceKey.to_string(),
            ));
        }
        let (pem, chain) = self.certify(u, dev, &csr.key, now, pre)?;
        creds.certificate = Some(pem);
        creds.ca_chain = chain;
        Ok(())
    }

    /// Sign and record a certificate for `key` of `dev`.
    fn certify(
        &self,
        u: &mut Unit,
        dev: &DeviceRecord,
        key: &PublicKey,
        now: i64,
        pre: Option<&Presigned>,
    ) -> Result<(String, Vec<String>), Error> {
        let issued = match pre.and_then(|p| p.cert(dev.device_id.as_str(), key.thumbprint(), now)) {
            Some(c) => c,
            None => self.sign_cert(&dev.device_id, key, now)?,
        };
        u.change(Change::PutCert(CertRecord {
            serial: issued.serial.clone(),
            device_id: dev.device_id.clone(),
            device_epoch: dev.epoch,
            kid: key.thumbprint().to_string(),
            issued_at: now,
            not_before: issued.not_before,
            not_after: issued.not_after,
            revoked_at: None,
            revocation_reason: None,
            pem: issued.pem.clone(),
        }));
        tracing::info!(device_id = %dev.device_id, serial = %issued.serial, "certificate issued");
        Ok((issued.pem, vec![self.pki.ca_cert_pem.clone()]))
    }

    /// Sign a certificate for `key` of `device` (not recorded).
    pub(crate) fn sign_cert(
        &self,
        device: &DeviceId,
        key: &PublicKey,
        now: i64,
    ) -> Result<crate::x509::Issued, Error> {
        build_certificate(&self.pki, device, key, now, self.cfg.certificates.lifetime)
            .map_err(|e| Error::internal("the daemon could not sign a certificate", e))
    }

    /// Before provisioning: a retired key never comes back (I4), and
    /// X.509-wrapped keys (the presented one, and the device's OOB entry)
    /// must chain to a registry CA when any is registered (F13).
    /// Says too whether the store knows the device (or lists it out of
    /// band), read in the same snapshot: only then is signing ahead likely
    /// to be used.
    pub async fn check_presented_key(
        self: &Arc<Self>,
        device: &DeviceId,
        key: &PublicKey,
    ) -> Result<Presence, Error> {
        let id = device.to_string();
        let presented = key.format().is_x509().then(|| key.clone());
        let kid = key.thumbprint().to_string();
        let now = self.now();
        let (verdict, presence) = self
            .read(move |_, v| {
                let presence = if v.device(&id)?.is_some() || v.oob(&id)?.is_some() {
                    Presence::Listed
                } else {
                    Presence::Unknown
                };
                Ok((check_key(v, &id, &kid, presented.as_ref(), now)?, presence))
            })
            .await?;
        match verdict {
            Ok(()) => Ok(presence),
            Err(reason) => {
                tracing::info!(device_id = %device, %reason, "refused: registry CA check");
                Err(Error::Refused)
            }
        }
    }
}

/// Whether a device's id is in the store when its request arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// A device record or an OOB entry names it.
    Listed,
    Unknown,
}

/// The retired-key and registry-CA rules of [`Devices::check_presented_key`].
fn check_key(
    v: &dyn StoreView,
    id: &str,
    kid: &str,
    presented: Option<&PublicKey>,
    now: i64,
) -> Result<Result<(), String>, Error> {
    if let Some(r) = v.retired_key(kid)? {
        return Ok(Err(format!("key was retired ({}) at {}", r.why, r.at)));
    }
    let cas = v.registry_cas()?;
    if cas.is_empty() {
        return Ok(Ok(()));
    }
    if let Some(k) = presented
        && let Err(reason) = crate::registry::check_wrapped(k, &cas, now)
    {
        return Ok(Err(reason));
    }
    let oob_key = v
        .oob(id)?
        .and_then(|o| o.public_key)
        .and_then(|pem| PublicKey::from_pem(&pem, None).ok());
    if let Some(k) = oob_key.filter(|k| k.format().is_x509()) {
        return Ok(crate::registry::check_wrapped(&k, &cas, now));
    }
    Ok(Ok(()))
}

impl Devices {
    /// `POST /renew/mtls`: the client certificate is the credential. Every
    /// check is made against the store, on every request.
    pub async fn renew_mtls(
        self: &Arc<Self>,
        client_cert: Option<Arc<CertificateDer<'static>>>,
        req: MtlsRenewRequest,
        source: SocketAddr,
    ) -> Result<Credentials, Error> {
        let cert = client_cert.ok_or_else(invalid_client_cert)?;
        let (serial, kid) = client_cert_identity(&cert).ok_or_else(invalid_client_cert)?;
        let now = self.now();
        let s = serial.clone();
        let rec = self.read(move |_, v| Ok(v.cert(&s)?)).await?;
        let Some(rec) = rec.filter(|r| r.kid == kid) else {
            tracing::info!(%source, %serial, "client certificate unknown to the store");
            return Err(invalid_client_cert());
        };
        let csr = self.prepare_csr(req.csr.as_deref(), &rec.device_id)?;
        let creds = self
            .transact(move |d, v, u| {
                d.preflight(v, u, now)?;
                // Re-read in the transaction: a revocation that committed a
                // moment ago wins (rule 4).
                let rec = v.cert(&rec.serial)?.ok_or_else(invalid_client_cert)?;
                let mut dev = live_cert_device(v, &rec, now).map_err(|why| {
                    tracing::info!(serial = %rec.serial, why, "client certificate refused");
                    invalid_client_cert()
                })?;
                let mut creds = d.issue(u, &mut dev, &rec.kid, now, None)?;
                match &csr {
                    Some(c) => d.attach_certificate(v, u, &dev, &mut creds, Some(c), None)?,
                    None => {
                        let key = dev
                            .key(&rec.kid)
                            .and_then(|k| PublicKey::from_pem(&k.pem, Some(k.format)).ok())
                            .ok_or_else(invalid_client_cert)?;
                        let (pem, chain) = d.certify(u, &dev, &key, now, None)?;
                        creds.certificate = Some(pem);
                        creds.ca_chain = chain;
                    }
                }
                u.event(AdminEvent::DeviceUpserted { device: dev.view() });
                Ok(creds)
            })
            .await?;
        // Committed: count the token and the certificate it always carries.
        self.metrics.token_issued();
        self.metrics.certificate_issued();
        self.metrics.renewal("certificate");
        Ok(creds)
    }

    /// `POST /keys`: a device adds a key, proving both its current key and
    /// the new one, each proof bound to this TLS connection as
    /// `/provision`'s is (`binding`, RFC 9266).
    pub async fn add_key(
        self: &Arc<Self>,
        req: AddKeyRequest,
        source: SocketAddr,
        binding: Option<&[u8]>,
    ) -> Result<KeysResponse, Error> {
        let new_key = PublicKey::from_pem(&req.public_key, req.key_format)
            .map_err(|e| Error::bad_request(format!("public_key: {e}")))?;
        let now = self.now();
        if req.expires_at.is_some_and(|e| e <= now) {
            return Err(Error::bad_request("expires_at is in the past"));
        }
        // The proof names the current key it was made with.
        let kid = jsonwebtoken::decode_header(&req.proof)
            .ok()
            .and_then(|h| h.kid)
            .ok_or(Error::InvalidProof)?;
        let id = req.device_id.to_string();
        let dev = self.read(move |_, v| Ok(v.device(&id)?)).await?;
        let current = dev
            .as_ref()
            .filter(|d| d.status == DeviceStatus::Active)
            .and_then(|d| d.key(&kid))
            .filter(|k| k.is_usable(now))
            .and_then(|k| PublicKey::from_pem(&k.pem, Some(k.format)).ok())
            .ok_or_else(|| {
                tracing::info!(device_id = %req.device_id, %source, "add-key: no such current key");
                Error::InvalidProof
            })?;
        let aud = proof_audience(self.daemon_id(), ProofEndpoint::AddKey);
        let check = |token: &str, key: &PublicKey| {
            proof::verify(token, key, &req.device_id, &aud, now, &self.cfg.proof)
                .and_then(|p| {
                    proof::check_binding(&p, binding, self.cfg.proof.require_channel_binding)?;
                    Ok(p)
                })
                .map_err(|reason| {
                    tracing::info!(device_id = %req.device_id, %source, %reason, "add-key proof refused");
                    Error::InvalidProof
                },
            )
        };
        let p1 = check(&req.proof, &current)?;
        let p2 = check(&req.key_proof, &new_key)?;
        if p1.jti == p2.jti {
            return Err(Error::InvalidProof);
        }
        self.check_presented_key(&req.device_id, &new_key).await?;

        let device_id = req.device_id.clone();
        let expires_at = req.expires_at;
        let src = source.ip().to_string();
        let resp = self
            .transact(move |d, v, u| {
                d.preflight(v, u, now)?;
                d.consume_proof(v, u, device_id.as_str(), &p1)?;
                d.consume_proof(v, u, device_id.as_str(), &p2)?;
                let mut dev = v
                    .device(device_id.as_str())?
                    .filter(|x| x.status == DeviceStatus::Active)
                    .ok_or(Error::InvalidProof)?;
                if !dev.key(&kid).is_some_and(|k| k.is_usable(now)) {
                    return Err(Error::InvalidProof);
                }
                let detail = format!("key {} added, proven with key {kid}", new_key.thumbprint());
                add_key_tx(v, u, &mut dev, &new_key, expires_at, now)?;
                u.audit(draft(
                    now,
                    &format!("device:{device_id}"),
                    "key_added",
                    Some(device_id.as_str()),
                    Some(&src),
                    detail,
                ));
                u.event(AdminEvent::DeviceUpserted { device: dev.view() });
                Ok(keys_response(&dev))
            })
            .await?;
        Ok(resp)
    }
}

/// The device a client certificate belongs to, if every check passes.
fn live_cert_device(
    v: &dyn StoreView,
    rec: &CertRecord,
    now: i64,
) -> Result<DeviceRecord, &'static str> {
    if rec.revoked_at.is_some() {
        return Err("certificate revoked");
    }
    if now < rec.not_before || now >= rec.not_after {
        return Err("certificate outside its validity");
    }
    let dev = v
        .device(rec.device_id.as_str())
        .map_err(|_| "store error")?
        .ok_or("device removed")?;
    if dev.epoch != rec.device_epoch {
        return Err("device removed and admitted again");
    }
    if dev.status != DeviceStatus::Active {
        return Err("device not active");
    }
    if !dev.key(&rec.kid).is_some_and(|k| k.is_usable(now)) {
        return Err("key removed or expired");
    }
    Ok(dev)
}

/// Add `key` to `dev` (and store it): refused if retired, already there, or
/// if the device would hold more than [`MAX_DEVICE_KEYS`]. Expired keys are
/// retired on the way, so they never count and never come back.
pub(crate) fn add_key_tx(
    v: &dyn StoreView,
    u: &mut Unit,
    dev: &mut DeviceRecord,
    key: &PublicKey,
    expires_at: Option<i64>,
    now: i64,
) -> Result<(), Error> {
    let kid = key.thumbprint();
    if v.retired_key(kid)?.is_some() {
        return Err(Error::conflict(
            "this key was removed or revoked before; a retired key never comes back",
        ));
    }
    if dev.key(kid).is_some() {
        return Err(Error::conflict("the key is already a key of this device"));
    }
    let expired: Vec<KeyRecord> = dev
        .keys
        .iter()
        .filter(|k| !k.is_usable(now))
        .cloned()
        .collect();
    for k in &expired {
        u.change(Change::RetireKey {
            kid: k.kid.clone(),
            record: RetiredKey {
                device_id: dev.device_id.clone(),
                at: now,
                why: "expired".into(),
            },
        });
    }
    dev.keys.retain(|k| k.is_usable(now));
    if dev.keys.len() >= MAX_DEVICE_KEYS {
        return Err(Error::conflict(format!(
            "the device already has {MAX_DEVICE_KEYS} keys; remove one before adding another"
        )));
    }
    dev.keys.push(KeyRecord {
        kid: kid.to_string(),
        format: key.format(),
        pem: key.pem().to_string(),
        added_at: now,
        expires_at,
    });
    dev.revision += 1;
    u.put_device(dev);
    Ok(())
}

pub(crate) fn keys_response(dev: &DeviceRecord) -> KeysResponse {
    KeysResponse {
        device_id: dev.device_id.clone(),
        keys: dev.view().keys,
        revision: dev.revision,
    }
}
