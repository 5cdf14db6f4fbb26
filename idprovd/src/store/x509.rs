//! Tables of the X.509 lifecycle: every issued certificate (invariant I2),
//! the serials the CRL lists, keys that may never come back (I4), registry
//! CAs, and the current CRL itself (so it survives restarts).

use idprov_proto::DeviceId;
use idprov_proto::x509::{CertificateView, RegistryCaView};
use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::{RedbStore, StoreResult, Tx, encode};

/// Serial (lower-case hex) → [`CertRecord`].
pub(crate) const CERTS: TableDefinition<&str, &[u8]> = TableDefinition::new("x509_certs");
/// (device id, serial) → (), to list and revoke a device's certificates.
pub(crate) const CERTS_BY_DEVICE: TableDefinition<(&str, &str), ()> =
    TableDefinition::new("x509_certs_by_device");
/// Serial → (revoked at, certificate not_after, RFC 5280 reason code): the
/// entries of the CRL. An entry is dropped once its certificate has expired.
pub(crate) const CRL_ENTRIES: TableDefinition<&str, (i64, i64, u8)> =
    TableDefinition::new("x509_crl_entries");
/// Key thumbprint → [`RetiredKey`]: removed, revoked or retired keys.
pub(crate) const RETIRED_KEYS: TableDefinition<&str, &[u8]> =
    TableDefinition::new("x509_retired_keys");
/// SHA-256 fingerprint → [`RegistryCaRecord`].
pub(crate) const REGISTRY_CAS: TableDefinition<&str, &[u8]> =
    TableDefinition::new("x509_registry_cas");
/// `crl` → DER, `crl_info` → [`CrlState`] JSON, `version` → revocation
/// generation (u64 big-endian), bumped by every change the CRL must show.
pub(crate) const X509_META: TableDefinition<&str, &[u8]> = TableDefinition::new("x509_meta");

pub(super) const CRL_DER: &str = "crl";
pub(super) const CRL_STATE: &str = "crl_info";
pub(super) const VERSION: &str = "version";

/// Every issued certificate.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CertRecord {
    pub serial: String,
    pub device_id: DeviceId,
    pub device_epoch: u64,
    pub kid: String,
    pub issued_at: i64,
    pub not_before: i64,
    pub not_after: i64,
    #[serde(default)]
    pub revoked_at: Option<i64>,
    #[serde(default)]
    pub revocation_reason: Option<String>,
    pub pem: String,
}

impl CertRecord {
    pub fn view(&self) -> CertificateView {
        CertificateView {
            serial: self.serial.clone(),
            device_id: self.device_id.clone(),
            kid: self.kid.clone(),
            issued_at: self.issued_at,
            not_before: self.not_before,
            not_after: self.not_after,
            revoked_at: self.revoked_at,
            revocation_reason: self.revocation_reason.clone(),
            pem: self.pem.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RetiredKey {
    pub device_id: DeviceId,
    pub at: i64,
    /// `removed`, `revoked`, `expired`, `reprovisioned`, `device_revoked`.
    pub why: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RegistryCaRecord {
    pub fingerprint: String,
    pub subject: String,
    pub not_before: i64,
    pub not_after: i64,
    pub added_at: i64,
    pub added_by: String,
    pub pem: String,
}

impl RegistryCaRecord {
    pub fn view(&self) -> RegistryCaView {
        RegistryCaView {
            fingerprint: self.fingerprint.clone(),
            subject: self.subject.clone(),
            not_before: self.not_before,
            not_after: self.not_after,
            added_at: self.added_at,
            added_by: self.added_by.clone(),
            pem: self.pem.clone(),
        }
    }
}

/// What the stored CRL is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CrlState {
    pub number: u64,
    pub this_update: i64,
    pub next_update: i64,
    /// The revocation generation it was built from.
    pub version: u64,
    pub revoked: u64,
}

impl RedbStore {
    /// Create the tables of this module if this store predates them, so
    /// readers never meet a missing table.
    pub fn ensure_x509_tables(&self) -> StoreResult<()> {
        self.write(|tx: &mut Tx<'_>| -> StoreResult<()> {
            tx.tx.open_table(CERTS)?;
            tx.tx.open_table(CERTS_BY_DEVICE)?;
            tx.tx.open_table(CRL_ENTRIES)?;
            tx.tx.open_table(RETIRED_KEYS)?;
            tx.tx.open_table(REGISTRY_CAS)?;
            tx.tx.open_table(X509_META)?;
            Ok(())
        })
    }
}

pub(super) fn be_u64(v: Option<&[u8]>) -> u64 {
    v.and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

impl Tx<'_> {
    pub fn put_cert(&mut self, rec: &CertRecord) -> StoreResult<()> {
        let bytes = encode(rec)?;
        self.tx
            .open_table(CERTS)?
            .insert(rec.serial.as_str(), bytes.as_slice())?;
        self.tx
            .open_table(CERTS_BY_DEVICE)?
            .insert((rec.device_id.as_str(), rec.serial.as_str()), ())?;
        Ok(())
    }

    pub fn bump_revocation_version(&mut self) -> StoreResult<u64> {
        let mut t = self.tx.open_table(X509_META)?;
        let v = be_u64(t.get(VERSION)?.as_ref().map(|v| v.value())) + 1;
        t.insert(VERSION, v.to_be_bytes().as_slice())?;
        Ok(v)
    }

    pub fn put_crl(&mut self, der: &[u8], state: &CrlState) -> StoreResult<()> {
        let mut t = self.tx.open_table(X509_META)?;
        t.insert(CRL_DER, der)?;
        t.insert(CRL_STATE, encode(state)?.as_slice())?;
        Ok(())
    }

    // ---- retired keys ----

    pub fn retire_key(&mut self, kid: &str, rec: &RetiredKey) -> StoreResult<()> {
        let bytes = encode(rec)?;
        self.tx
            .open_table(RETIRED_KEYS)?
            .insert(kid, bytes.as_slice())?;
        Ok(())
    }

    // ---- registry CAs ----

    pub fn put_registry_ca(&mut self, rec: &RegistryCaRecord) -> StoreResult<()> {
        let bytes = encode(rec)?;
        self.tx
            .open_table(REGISTRY_CAS)?
            .insert(rec.fingerprint.as_str(), bytes.as_slice())?;
        Ok(())
    }

    pub fn delete_registry_ca(&mut self, fingerprint: &str) -> StoreResult<bool> {
        Ok(self
            .tx
            .open_table(REGISTRY_CAS)?
            .remove(fingerprint)?
            .is_some())
    }
}
