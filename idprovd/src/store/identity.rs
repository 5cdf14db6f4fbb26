//! Which device IDs a public key and a MAC have been seen under, for the
//! "one key / one MAC under several IDs" flags (flags.rs).
//!
//! The index is written when a request creates a pending record or a device
//! and is only an index: an entry counts only while the device or pending
//! record it names still holds that key or MAC, and entries that no longer
//! do are deleted when met. Its size is therefore bounded by the records
//! ever admitted or queued (the pending cap bounds the queue).

use idprov_proto::MacAddr;
use redb::{ReadableTable, TableDefinition};

use super::{StoreResult, Tx};

/// (key thumbprint, device id).
pub(crate) const KEY_IDS: TableDefinition<(&str, &str), ()> = TableDefinition::new("key_ids");
/// (MAC, device id).
pub(crate) const MAC_IDS: TableDefinition<(&str, &str), ()> = TableDefinition::new("mac_ids");

/// Most other IDs reported per key or MAC (the flag needs one).
pub(super) const MAX_OTHERS: usize = 16;

impl Tx<'_> {
    /// Remember that `device_id` used `kid` (and `mac`).
    pub fn note_identity(
        &mut self,
        device_id: &str,
        kid: &str,
        mac: Option<MacAddr>,
    ) -> StoreResult<()> {
        self.tx.open_table(KEY_IDS)?.insert((kid, device_id), ())?;
        if let Some(mac) = mac {
            let m = mac.to_string();
            self.tx
                .open_table(MAC_IDS)?
                .insert((m.as_str(), device_id), ())?;
        }
        Ok(())
    }

    /// Other device IDs (devices or pending) that hold `kid` now.
    pub fn others_with_key(&mut self, device_id: &str, kid: &str) -> StoreResult<Vec<String>> {
        let candidates = self.index_ids(KEY_IDS, kid, device_id)?;
        let mut out = Vec::new();
        for other in candidates {
            let live = self.device(&other)?.is_some_and(|d| d.key(kid).is_some())
                || self.pending(&other)?.is_some_and(|p| p.kid == kid);
            if live {
                out.push(other);
            } else {
                self.tx.open_table(KEY_IDS)?.remove((kid, other.as_str()))?;
            }
        }
        Ok(out)
    }

    /// Other device IDs (devices, pending, or OOB entries) bound to `mac`.
    pub fn others_with_mac(&mut self, device_id: &str, mac: MacAddr) -> StoreResult<Vec<String>> {
        let m = mac.to_string();
        let candidates = self.index_ids(MAC_IDS, &m, device_id)?;
        let mut out = Vec::new();
        for other in candidates {
            let live = self.device(&other)?.is_some_and(|d| d.mac == Some(mac))
                || self.pending(&other)?.is_some_and(|p| p.mac == Some(mac));
            if live {
                out.push(other);
            } else {
                self.tx
                    .open_table(MAC_IDS)?
                    .remove((m.as_str(), other.as_str()))?;
            }
        }
        if let Some(owner) = self.oob_mac_owner(&m)?
            && owner != device_id
            && !out.contains(&owner)
        {
            out.push(owner);
        }
        Ok(out)
    }

    fn index_ids(
        &self,
        table: TableDefinition<(&str, &str), ()>,
        value: &str,
        except: &str,
    ) -> StoreResult<Vec<String>> {
        let t = self.tx.open_table(table)?;
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
}
