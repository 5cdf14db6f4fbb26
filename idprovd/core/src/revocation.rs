//! What revoking records in a unit: retired keys (never to come back, I4),
//! revoked certificates on the CRL, for one key or a whole device. Shared
//! by the administrators' use cases (admin_ops.rs, keys_admin.rs).

use crate::crl::reason;
use crate::error::Error;
use crate::storage::{Change, StoreView, Unit};
use crate::store::{CertRecord, DeviceRecord, RetiredKey};

/// Retire a key for good: it never comes back (I4).
pub(crate) fn retire_key(u: &mut Unit, dev: &DeviceRecord, kid: &str, why: &str, now: i64) {
    u.change(Change::RetireKey {
        kid: kid.to_string(),
        record: RetiredKey {
            device_id: dev.device_id.clone(),
            at: now,
            why: why.to_string(),
        },
    });
}

/// Revoke every live certificate of `device` (only those of key `kid` if
/// given). Returns how many.
pub(crate) fn revoke_device_certs(
    v: &dyn StoreView,
    u: &mut Unit,
    device: &DeviceRecord,
    kid: Option<&str>,
    now: i64,
    why: &str,
    code: u8,
) -> Result<usize, Error> {
    let mut n = 0;
    for cert in v.device_certs(device.device_id.as_str())? {
        if kid.is_some_and(|k| k != cert.kid) || cert.not_after < now {
            continue;
        }
        if revoke_cert(u, cert, now, why, code).is_some() {
            n += 1;
        }
    }
    Ok(n)
}

/// Mark a certificate revoked and list it in the CRL; `None` if it was
/// already revoked. Never undone (I4).
pub(crate) fn revoke_cert(
    u: &mut Unit,
    mut cert: CertRecord,
    now: i64,
    why: &str,
    code: u8,
) -> Option<CertRecord> {
    if cert.revoked_at.is_some() {
        return None;
    }
    cert.revoked_at = Some(now);
    cert.revocation_reason = Some(why.to_string());
    u.change(Change::RevokeCert {
        cert: cert.clone(),
        code,
    });
    Some(cert)
}

/// Retire a key and revoke its certificates. Returns how many certificates
/// were revoked.
pub(crate) fn retire_key_tx(
    v: &dyn StoreView,
    u: &mut Unit,
    dev: &DeviceRecord,
    kid: &str,
    why: &str,
    code: u8,
    now: i64,
) -> Result<usize, Error> {
    retire_key(u, dev, kid, why, now);
    revoke_device_certs(v, u, dev, Some(kid), now, why, code)
}

/// Hook for device revocation (admin_ops): retire every key and revoke every
/// certificate of the device, in the revoking transaction.
pub(crate) fn on_device_revoked(
    v: &dyn StoreView,
    u: &mut Unit,
    dev: &DeviceRecord,
    now: i64,
) -> Result<(), Error> {
    for k in &dev.keys {
        retire_key(u, dev, &k.kid, "device_revoked", now);
    }
    revoke_device_certs(
        v,
        u,
        dev,
        None,
        now,
        "device_revoked",
        reason::PRIVILEGE_WITHDRAWN,
    )?;
    Ok(())
}

/// Hook for device removal (admin_ops): its certificates go on the CRL (the
/// keys stay usable for a later, fresh admission of the same device).
pub(crate) fn on_device_removed(
    v: &dyn StoreView,
    u: &mut Unit,
    dev: &DeviceRecord,
    now: i64,
) -> Result<(), Error> {
    revoke_device_certs(
        v,
        u,
        dev,
        None,
        now,
        "device_removed",
        reason::CESSATION_OF_OPERATION,
    )?;
    Ok(())
}
