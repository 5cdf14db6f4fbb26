//! Which device IDs a public key and a MAC have been seen under, for the
//! "one key / one MAC under several IDs" flags (flags.rs).
//!
//! The index is written when a request creates a pending record or a device
//! and is only an index: an entry counts only while the device or pending
//! record it names still holds that key or MAC, and entries that no longer
//! do are deleted when met. Its size is therefore bounded by the records
//! ever admitted or queued (the pending cap bounds the queue).

use idprov_proto::MacAddr;
use redb::TableDefinition;

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
}
