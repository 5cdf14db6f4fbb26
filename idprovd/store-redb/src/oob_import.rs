//! Staging and committing large OOB imports (see `idprov_proto::oob_import`).
//!
//! Each import session stages its checked entries, chunk by chunk, in tables
//! of its own (`oob_staging/<id>` and two small indexes), so the daemon holds
//! no import in memory. The commit then reads the staging tables and applies
//! everything to the OOB list in the one write transaction that also drops
//! them: a crash or kill before that commit returns leaves the list exactly
//! as it was (invariant I3), and a crash after it leaves all of the import.
//! Staging tables that outlive their session (the daemon stopped or
//! crashed) are dropped when the daemon starts again.

use std::collections::HashSet;

use idprov_proto::MacAddr;
use idprov_proto::error::EntryError;
use idprov_proto::oob_import::{MAX_LISTED_IDS, OobImportResult};
use redb::{ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle};

use idprovd_core::store::{
    CommitOptions, ImportMerge, OobRecord, StoreError, merge_import, secret_hash,
};

use super::{DbError, OOB, OOB_MAC, StoreResult, Tx, decode, encode};

const STAGING_PREFIX: &str = "oob_staging/";
const STAGING_MAC_PREFIX: &str = "oob_staging_mac/";
const STAGING_SECRET_PREFIX: &str = "oob_staging_secret/";

/// Staged entries: device id → [`StagedHead`] then the [`OobRecord`] JSON.
fn staging(sid: &str) -> String {
    format!("{STAGING_PREFIX}{sid}")
}
/// MAC → device id, to find one MAC under two ids across chunks.
fn staging_mac(sid: &str) -> String {
    format!("{STAGING_MAC_PREFIX}{sid}")
}
/// Device id → the stored secret hash the uploaded secret was found equal
/// to when staged (the plaintext is never written, not even to staging).
fn staging_secret(sid: &str) -> String {
    format!("{STAGING_SECRET_PREFIX}{sid}")
}

/// Most per-entry problems one answer lists.
const MAX_DETAILS: usize = 1000;

impl Tx<'_> {
    /// Drop the staging tables of every session not in `live`.
    pub fn drop_stale_oob_staging(&mut self, live: &HashSet<String>) -> StoreResult<usize> {
        let stale: Vec<_> = self
            .tx
            .list_tables()?
            .filter(|t| {
                [STAGING_PREFIX, STAGING_MAC_PREFIX, STAGING_SECRET_PREFIX]
                    .iter()
                    .find_map(|p| t.name().strip_prefix(p))
                    .is_some_and(|sid| !live.contains(sid))
            })
            .collect();
        let n = stale.len();
        for t in stale {
            self.tx.delete_table(t)?;
        }
        Ok(n)
    }

    /// Drop one session's staging tables.
    pub fn drop_oob_staging(&mut self, sid: &str) -> StoreResult<()> {
        self.tx.delete_table(str_bytes(&staging(sid)))?;
        self.tx.delete_table(str_str(&staging_mac(sid)))?;
        self.tx.delete_table(str_str(&staging_secret(sid)))?;
        Ok(())
    }

    /// Stage checked records (made by `admin_ops::validate_oob`, which also
    /// refused duplicates within the chunk). Returns the problems across
    /// chunks — an id or a MAC staged before — with indexes into `records`;
    /// the caller aborts the transaction if there are any.
    pub fn stage_oob(
        &mut self,
        sid: &str,
        records: &[OobRecord],
    ) -> StoreResult<(u64, Vec<EntryError>)> {
        let (sname, mname, secname) = (staging(sid), staging_mac(sid), staging_secret(sid));
        let mut staged = self.tx.open_table(str_bytes(&sname))?;
        let mut macs = self.tx.open_table(str_str(&mname))?;
        let mut secrets = self.tx.open_table(str_str(&secname))?;
        let oob = self.tx.open_table(OOB)?;
        let mut errors = Vec::new();
        for (index, rec) in records.iter().enumerate() {
            let id = rec.device_id.as_str();
            let err = |message: String| EntryError {
                index,
                device_id: Some(id.to_string()),
                message,
            };
            if staged.get(id)?.is_some() {
                errors.push(err("device_id is listed twice in this import".into()));
                continue;
            }
            if let Some(mac) = rec.mac {
                let key = mac.to_string();
                if let Some(other) = macs.get(key.as_str())? {
                    errors.push(err(format!(
                        "MAC {mac} is also given for device {} in this import",
                        other.value()
                    )));
                    continue;
                }
                macs.insert(key.as_str(), id)?;
            }
            // Compare an uploaded secret with a stored one now, while the
            // plaintext is in memory: stored secrets are salted per entry.
            if let (Some(plain), Some(old)) = (
                rec.secret_plain_for_compare.as_ref(),
                oob.get(id)?
                    .map(|v| decode::<OobRecord>(id, v.value()))
                    .transpose()?,
            ) && let (Some(salt), Some(hash)) = (&old.secret_salt, &old.secret_hash)
                && secret_hash(salt, plain.expose()) == *hash
            {
                secrets.insert(id, hash.as_str())?;
            }
            staged.insert(id, staged_value(rec)?.as_slice())?;
        }
        Ok((staged.len()?, errors))
    }

    /// Apply a session's staged entries to the OOB list (or, with `dry_run`,
    /// only compute the difference) and drop the staging tables. `Ok(Err)`
    /// lists refused entries; the caller must then abort the transaction.
    pub fn commit_oob_import(
        &mut self,
        sid: &str,
        opts: CommitOptions,
    ) -> StoreResult<Result<OobImportResult, Vec<EntryError>>> {
        let (sname, secname) = (staging(sid), staging_secret(sid));
        let mut result = OobImportResult {
            dry_run: opts.dry_run,
            ..Default::default()
        };
        let mut errors = Vec::new();
        {
            let staged = self.tx.open_table(str_bytes(&sname))?;
            let secrets = self.tx.open_table(str_str(&secname))?;
            let mut oob = self.tx.open_table(OOB)?;
            let mut macs = self.tx.open_table(OOB_MAC)?;
            let count = staged.len()?;
            if count != opts.expected_entries {
                errors.push(EntryError {
                    index: 0,
                    device_id: None,
                    message: format!(
                        "the daemon staged {count} entries but the client sent {}",
                        opts.expected_entries
                    ),
                });
                return Ok(Err(errors));
            }

            // Prune first, so the MACs of removed entries are free again.
            if opts.prune {
                let mut gone = Vec::new();
                for item in oob.iter()? {
                    let (k, v) = item?;
                    if staged.get(k.value())?.is_none() {
                        let old: OobRecord = decode(k.value(), v.value())?;
                        gone.push((k.value().to_string(), old.mac));
                    }
                }
                result.removed = gone.len() as u64;
                for (id, mac) in gone {
                    if result.removed_ids.len() < MAX_LISTED_IDS {
                        result.removed_ids.push(parse_id(&id)?);
                    }
                    if !opts.dry_run {
                        oob.remove(id.as_str())?;
                        if let Some(mac) = mac {
                            remove_mac_if_owned(&mut macs, &mac.to_string(), &id)?;
                        }
                    }
                }
            }

            for (index, item) in staged.iter()?.enumerate() {
                let (k, v) = item?;
                let id = k.value();
                let (mac, json) = split_staged(id, v.value())?;
                let mut refuse = |message: String| {
                    if errors.len() < MAX_DETAILS {
                        errors.push(EntryError {
                            index,
                            device_id: Some(id.to_string()),
                            message,
                        });
                    }
                };
                if let Some(mac) = mac {
                    let key = mac.to_string();
                    let owner = macs.get(key.as_str())?.map(|o| o.value().to_string());
                    if let Some(owner) = owner
                        && owner != id
                        && !moves_away(&staged, &owner, mac)?
                    {
                        refuse(format!("MAC {mac} already belongs to device {owner}"));
                        continue;
                    }
                }
                let old = oob
                    .get(id)?
                    .map(|v| decode::<OobRecord>(id, v.value()))
                    .transpose()?;
                // A new entry is stored as staged: no need to decode it.
                let Some(old) = old else {
                    result.added += 1;
                    if result.added_ids.len() < MAX_LISTED_IDS {
                        result.added_ids.push(parse_id(id)?);
                    }
                    if !opts.dry_run {
                        oob.insert(id, json)?;
                        if let Some(mac) = mac {
                            macs.insert(mac.to_string().as_str(), id)?;
                        }
                    }
                    continue;
                };
                let mut rec: OobRecord = decode(id, json)?;
                let same_secret = |h: &str| -> Result<bool, DbError> {
                    Ok(secrets.get(id)?.is_some_and(|s| s.value() == h))
                };
                match merge_import(
                    &old,
                    &mut rec,
                    same_secret,
                    opts.replace,
                    opts.now,
                    &mut result,
                )? {
                    ImportMerge::Unchanged => continue,
                    ImportMerge::Refused(why) => {
                        refuse(why);
                        continue;
                    }
                    ImportMerge::Changed => {}
                }
                if !opts.dry_run {
                    oob.insert(id, encode(&rec)?.as_slice())?;
                    if old.mac != rec.mac {
                        if let Some(m) = old.mac {
                            remove_mac_if_owned(&mut macs, &m.to_string(), id)?;
                        }
                        if let Some(m) = rec.mac {
                            macs.insert(m.to_string().as_str(), id)?;
                        }
                    }
                }
            }
        }
        if !errors.is_empty() {
            return Ok(Err(errors));
        }
        self.drop_oob_staging(sid)?;
        Ok(Ok(result))
    }
}

/// Whether `owner`, which holds `mac` now, is given another MAC (or none)
/// by this same import, so the MAC is free for the entry that asks for it.
fn moves_away(
    staged: &redb::Table<'_, &'static str, &'static [u8]>,
    owner: &str,
    mac: MacAddr,
) -> StoreResult<bool> {
    match staged.get(owner)? {
        None => Ok(false),
        Some(v) => Ok(split_staged(owner, v.value())?.0 != Some(mac)),
    }
}

/// A staged value starts with the entry's MAC (a flag byte, then six bytes
/// if there is one), so the commit can add a new entry — by far the most
/// common case in a large import — without decoding its JSON.
fn staged_value(rec: &OobRecord) -> StoreResult<Vec<u8>> {
    let json = encode(rec)?;
    let mut out = Vec::with_capacity(json.len() + 7);
    match rec.mac {
        Some(m) => {
            out.push(1);
            out.extend_from_slice(&m.0);
        }
        None => out.push(0),
    }
    out.extend_from_slice(&json);
    Ok(out)
}

/// The MAC and the record JSON of a staged value.
fn split_staged<'v>(id: &str, v: &'v [u8]) -> StoreResult<(Option<MacAddr>, &'v [u8])> {
    let bad = || DbError(StoreError::Record(format!("staged entry {id}")));
    match v.split_first() {
        Some((0, json)) => Ok((None, json)),
        Some((1, rest)) if rest.len() >= 6 => {
            let (mac, json) = rest.split_at(6);
            let mac: [u8; 6] = mac.try_into().map_err(|_| bad())?;
            Ok((Some(MacAddr(mac)), json))
        }
        _ => Err(bad()),
    }
}

/// Remove `mac` from the index only if it still points at `id`: another
/// entry of the same import may have taken it over already.
fn remove_mac_if_owned(
    macs: &mut redb::Table<'_, &'static str, &'static str>,
    mac: &str,
    id: &str,
) -> StoreResult<()> {
    let owned = macs.get(mac)?.is_some_and(|o| o.value() == id);
    if owned {
        macs.remove(mac)?;
    }
    Ok(())
}

fn parse_id(id: &str) -> StoreResult<idprov_proto::DeviceId> {
    id.parse()
        .map_err(|_| DbError(StoreError::Record(format!("oob key {id:?}"))))
}

fn str_bytes(name: &str) -> TableDefinition<'_, &'static str, &'static [u8]> {
    TableDefinition::new(name)
}

fn str_str(name: &str) -> TableDefinition<'_, &'static str, &'static str> {
    TableDefinition::new(name)
}
