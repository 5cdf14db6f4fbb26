//! Tables of the X.509 lifecycle: every issued certificate (invariant I2),
//! the serials the CRL lists, keys that may never come back (I4), registry
//! CAs, and the current CRL itself (so it survives restarts).

use idprovd_core::store::{CertRecord, CrlState, RegistryCaRecord, RetiredKey};
use redb::{ReadableTable, TableDefinition};

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

impl RedbStore {
    /// Create the tables of this module if this store predates them, so
    /// readers never meet a missing table.
    pub(crate) fn ensure_x509_tables(&self) -> StoreResult<()> {
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
