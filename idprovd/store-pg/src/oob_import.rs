//! Staging and committing large OOB imports on PostgreSQL: the checked
//! entries of a session go into `oob_staging` rows (never the plaintext
//! secret), and the commit applies them to the OOB list in the one
//! transaction that also deletes them, so a crash leaves all or none of an
//! import (invariant I3). Any daemon of the site can take the next chunk
//! of a session: nothing of it is held in memory between requests.

use std::collections::HashSet;

use idprov_proto::error::EntryError;
use idprov_proto::oob_import::{MAX_LISTED_IDS, OobImportResult};
use idprovd_core::store::{
    CommitOptions, ImportMerge, OobRecord, StoreError, StoreResult, merge_import, secret_hash,
};

use super::error::{decode, encode};
use super::view::{PgView, get};

/// Most per-entry problems one answer lists.
const MAX_DETAILS: usize = 1000;
/// Staged rows read per round trip at commit.
const BATCH: i64 = 1000;

/// One staged row.
struct Staged {
    id: String,
    mac: Option<String>,
    same_secret: Option<String>,
    record: serde_json::Value,
}

impl PgView<'_, '_> {
    pub(crate) fn drop_oob_staging(&self, sid: &str) -> StoreResult<()> {
        self.execute("DELETE FROM oob_staging WHERE sid = $1", &[&sid])?;
        Ok(())
    }

    /// Drop the staging of every session not in `live`; returns how many
    /// sessions.
    pub(crate) fn drop_stale_oob_staging(&self, live: &HashSet<String>) -> StoreResult<usize> {
        let live: Vec<&str> = live.iter().map(String::as_str).collect();
        let rows = self.query(
            "SELECT DISTINCT sid FROM oob_staging WHERE NOT (sid = ANY($1))",
            &[&live],
        )?;
        if !rows.is_empty() {
            self.execute(
                "DELETE FROM oob_staging WHERE NOT (sid = ANY($1))",
                &[&live],
            )?;
        }
        Ok(rows.len())
    }

    /// Stage checked records; returns the staged count and the problems
    /// across chunks (an id or a MAC staged before), indexes into
    /// `records`. The caller aborts the transaction if there are any.
    pub(crate) fn stage_oob(
        &self,
        sid: &str,
        records: &[OobRecord],
    ) -> StoreResult<(u64, Vec<EntryError>)> {
        let mut errors = Vec::new();
        for (index, rec) in records.iter().enumerate() {
            let id = rec.device_id.as_str();
            let err = |message: String| EntryError {
                index,
                device_id: Some(id.to_string()),
                message,
            };
            if self
                .query_opt(
                    "SELECT 1 FROM oob_staging WHERE sid = $1 AND device_id = $2",
                    &[&sid, &id],
                )?
                .is_some()
            {
                errors.push(err("device_id is listed twice in this import".into()));
                continue;
            }
            let mac = rec.mac.map(|m| m.to_string());
            if let Some(m) = &mac
                && let Some(other) = self.query_opt(
                    "SELECT device_id FROM oob_staging WHERE sid = $1 AND mac = $2",
                    &[&sid, m],
                )?
            {
                let other: String = get(&other, 0)?;
                errors.push(err(format!(
                    "MAC {m} is also given for device {other} in this import"
                )));
                continue;
            }
            // Compare an uploaded secret with a stored one now, while the
            // plaintext is in memory: stored secrets are salted per entry.
            let mut same_secret = None;
            if let Some(plain) = rec.secret_plain_for_compare.as_ref() {
                let old: Option<OobRecord> =
                    self.record("SELECT record FROM oob WHERE device_id = $1", id)?;
                if let Some(old) = old
                    && let (Some(salt), Some(hash)) = (&old.secret_salt, &old.secret_hash)
                    && secret_hash(salt, plain.expose()) == *hash
                {
                    same_secret = Some(hash.clone());
                }
            }
            self.execute(
                "INSERT INTO oob_staging (sid, device_id, mac, same_secret, record)
                 VALUES ($1, $2, $3, $4, $5)",
                &[&sid, &id, &mac, &same_secret, &encode(rec)?],
            )?;
        }
        let n = self.count("SELECT count(*) FROM oob_staging WHERE sid = $1", &[&sid])?;
        Ok((n, errors))
    }

    /// Apply a session's staged entries to the OOB list (or, with
    /// `dry_run`, only compute the difference) and drop its staging.
    /// `Ok(Err)` lists refused entries; the caller must then abort.
    pub(crate) fn commit_oob_import(
        &self,
        sid: &str,
        opts: CommitOptions,
    ) -> StoreResult<Result<OobImportResult, Vec<EntryError>>> {
        let mut result = OobImportResult {
            dry_run: opts.dry_run,
            ..Default::default()
        };
        let mut errors = Vec::new();
        let count = self.count("SELECT count(*) FROM oob_staging WHERE sid = $1", &[&sid])?;
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
            let gone = self.query(
                "SELECT o.device_id, o.mac FROM oob o WHERE NOT EXISTS
                 (SELECT 1 FROM oob_staging s WHERE s.sid = $1 AND s.device_id = o.device_id)
                 ORDER BY o.device_id",
                &[&sid],
            )?;
            result.removed = gone.len() as u64;
            for r in gone {
                let id: String = get(&r, 0)?;
                let mac: Option<String> = get(&r, 1)?;
                if result.removed_ids.len() < MAX_LISTED_IDS {
                    result.removed_ids.push(parse_id(&id)?);
                }
                if !opts.dry_run {
                    self.execute("DELETE FROM oob WHERE device_id = $1", &[&id])?;
                    if let Some(mac) = mac {
                        self.release_mac(&mac, &id)?;
                    }
                }
            }
        }
        let mut cursor = String::new();
        let mut index = 0usize;
        loop {
            let rows = self.query(
                "SELECT device_id, mac, same_secret, record FROM oob_staging
                 WHERE sid = $1 AND device_id > $2 ORDER BY device_id LIMIT $3",
                &[&sid, &cursor, &BATCH],
            )?;
            let fetched = rows.len();
            for r in rows {
                let s = Staged {
                    id: get(&r, 0)?,
                    mac: get(&r, 1)?,
                    same_secret: get(&r, 2)?,
                    record: get(&r, 3)?,
                };
                cursor = s.id.clone();
                if let Some(message) = self.commit_one(sid, s, opts, &mut result)?
                    && errors.len() < MAX_DETAILS
                {
                    errors.push(EntryError {
                        index,
                        device_id: Some(cursor.clone()),
                        message,
                    });
                }
                index += 1;
            }
            if (fetched as i64) < BATCH {
                break;
            }
        }
        if !errors.is_empty() {
            return Ok(Err(errors));
        }
        self.drop_oob_staging(sid)?;
        Ok(Ok(result))
    }

    /// Apply one staged entry; `Some(message)` refuses it.
    fn commit_one(
        &self,
        sid: &str,
        s: Staged,
        opts: CommitOptions,
        result: &mut OobImportResult,
    ) -> StoreResult<Option<String>> {
        let id = s.id.as_str();
        if let Some(mac) = &s.mac {
            let owner = self.oob_mac_owner_row(mac)?;
            if let Some(owner) = owner
                && owner != id
                && !self.moves_away(sid, &owner, mac)?
            {
                return Ok(Some(format!("MAC {mac} already belongs to device {owner}")));
            }
        }
        let old: Option<OobRecord> =
            self.record("SELECT record FROM oob WHERE device_id = $1", id)?;
        let mut rec: OobRecord = decode(id, s.record)?;
        let Some(old) = old else {
            result.added += 1;
            if result.added_ids.len() < MAX_LISTED_IDS {
                result.added_ids.push(rec.device_id.clone());
            }
            if !opts.dry_run {
                self.put_oob(&rec)?;
            }
            return Ok(None);
        };
        let same_secret = |h: &str| Ok::<_, StoreError>(s.same_secret.as_deref() == Some(h));
        match merge_import(&old, &mut rec, same_secret, opts.replace, opts.now, result)? {
            ImportMerge::Unchanged => return Ok(None),
            ImportMerge::Refused(why) => return Ok(Some(why)),
            ImportMerge::Changed => {}
        }
        if !opts.dry_run {
            self.put_oob(&rec)?;
        }
        Ok(None)
    }

    fn oob_mac_owner_row(&self, mac: &str) -> StoreResult<Option<String>> {
        match self.query_opt("SELECT device_id FROM oob_mac WHERE mac = $1", &[&mac])? {
            Some(r) => Ok(Some(get(&r, 0)?)),
            None => Ok(None),
        }
    }

    /// Whether `owner`, which holds `mac` now, is given another MAC (or
    /// none) by this same import.
    fn moves_away(&self, sid: &str, owner: &str, mac: &str) -> StoreResult<bool> {
        match self.query_opt(
            "SELECT mac FROM oob_staging WHERE sid = $1 AND device_id = $2",
            &[&sid, &owner],
        )? {
            None => Ok(false),
            Some(r) => {
                let staged: Option<String> = get(&r, 0)?;
                Ok(staged.as_deref() != Some(mac))
            }
        }
    }
}

fn parse_id(id: &str) -> StoreResult<idprov_proto::DeviceId> {
    id.parse()
        .map_err(|_| StoreError::Record(format!("oob key {id:?}")))
}
