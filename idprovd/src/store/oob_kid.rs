//! One public key, one OOB entry: an index from key thumbprint to the
//! device id whose OOB entry holds it.
//!
//! Two entries with the same key would let whoever holds that private key
//! provision as either device (a factory that reused a key, or a copy-paste
//! slip in a list), so `POST /admin/oob` and import commits refuse a key
//! that another entry holds, exactly as they do for MACs. The index is kept
//! in step by `put_oob`/`delete_oob` and the import commit; stores from
//! before it existed get it built once when they are opened.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use redb::{ReadableTable, TableDefinition};

use super::{META, OOB, OobRecord, Store, StoreError, StoreResult, Tx, decode};

/// The 32 bytes of a key thumbprint: a fixed-width index key is smaller
/// and compares faster than its base64 text, which matters when a large
/// import adds a million of them in random order.
pub(crate) type KidKey = [u8; 32];

/// Key thumbprint → device id of the OOB entry that holds it.
pub(crate) const OOB_KID: TableDefinition<KidKey, &str> = TableDefinition::new("oob_kid");

/// The index key of a thumbprint (`kid`, base64url of SHA-256).
pub(crate) fn kid_key(kid: &str) -> StoreResult<KidKey> {
    URL_SAFE_NO_PAD
        .decode(kid)
        .ok()
        .and_then(|b| KidKey::try_from(b).ok())
        .ok_or_else(|| StoreError::Record(format!("key thumbprint {kid:?}")))
}

/// Forget `kid` in `t` if it still points at `id`: another entry of the same
/// batch may have taken it over already.
pub(crate) fn release_if_owned(
    t: &mut redb::Table<'_, KidKey, &'static str>,
    kid: &str,
    id: &str,
) -> StoreResult<()> {
    let key = kid_key(kid)?;
    let ours = t.get(key)?.is_some_and(|v| v.value() == id);
    if ours {
        t.remove(key)?;
    }
    Ok(())
}
/// Set in `meta` once the index covers every entry.
const INDEXED_KEY: &str = "oob_kid_indexed";

impl Tx<'_> {
    /// Which device id's OOB entry holds this key, if any.
    pub fn oob_kid_owner(&self, kid: &str) -> StoreResult<Option<String>> {
        let t = self.tx.open_table(OOB_KID)?;
        Ok(t.get(kid_key(kid)?)?.map(|v| v.value().to_string()))
    }

    /// Point `kid` at `id`.
    pub(crate) fn set_oob_kid(&mut self, kid: &str, id: &str) -> StoreResult<()> {
        self.tx.open_table(OOB_KID)?.insert(kid_key(kid)?, id)?;
        Ok(())
    }

    /// Forget `kid` if it still points at `id` (another entry of the same
    /// batch may have taken it over already).
    pub(crate) fn release_oob_kid(&mut self, kid: &str, id: &str) -> StoreResult<()> {
        release_if_owned(&mut self.tx.open_table(OOB_KID)?, kid, id)
    }
}

impl Store {
    /// Build the index for a store written before it existed. Entries that
    /// already share a key (allowed then) keep working; the index names one
    /// of them, and new entries with that key are refused.
    pub(crate) fn ensure_oob_kid_index(&self) -> StoreResult<()> {
        let tx = self.db.begin_write()?;
        {
            let mut meta = tx.open_table(META)?;
            if meta.get(INDEXED_KEY)?.is_some() {
                return Ok(());
            }
            let oob = tx.open_table(OOB)?;
            let mut index = tx.open_table(OOB_KID)?;
            let mut n = 0u64;
            for item in oob.iter()? {
                let (k, v) = item?;
                let rec: OobRecord = decode(k.value(), v.value())?;
                if let Some(kid) = &rec.kid {
                    let key = kid_key(kid)?;
                    if index.get(key)?.is_none() {
                        index.insert(key, k.value())?;
                        n += 1;
                    }
                }
            }
            meta.insert(INDEXED_KEY, b"1".as_slice())?;
            tracing::info!(keys = n, "indexed the keys of the OOB list");
        }
        tx.commit()?;
        Ok(())
    }
}
