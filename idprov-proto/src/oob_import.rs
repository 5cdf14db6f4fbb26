//! Large, atomic OOB imports: an import session under
//! `/idprov/v1/admin/oob/imports`. The client opens a session, sends the
//! entries in numbered chunks (each at most [`MAX_OOB_BATCH`] entries, each
//! validated by the daemon as it arrives and staged on disk), then commits:
//! the daemon applies everything in one transaction, or nothing.
//!
//! ```text
//! POST   /admin/oob/imports              OobImportStart   -> 201 OobImportSession
//! POST   /admin/oob/imports/{id}/chunks  OobImportChunk   -> 200 OobImportChunkAck
//! POST   /admin/oob/imports/{id}/commit  OobImportCommit  -> 200 OobImportResult
//! DELETE /admin/oob/imports/{id}                          -> 204
//! ```
//!
//! A session that sees no request for [`IMPORT_IDLE_SECS`] is dropped with
//! everything it staged; so is every session when the daemon restarts.
//!
//! [`MAX_OOB_BATCH`]: crate::admin::MAX_OOB_BATCH

use serde::{Deserialize, Serialize};

use crate::admin::OobEntryInput;
use crate::ids::DeviceId;

pub const IMPORTS: &str = "/idprov/v1/admin/oob/imports";

/// Idle time after which the daemon drops a session.
pub const IMPORT_IDLE_SECS: u64 = 300;
/// Most entries one session may stage.
pub const MAX_IMPORT_ENTRIES: u64 = 5_000_000;
/// Most IDs of each kind listed in an [`OobImportResult`] (the counts are
/// always complete).
pub const MAX_LISTED_IDS: usize = 1000;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OobImportStart {
    /// Allow changing the key/MAC/secret of existing entries.
    #[serde(default)]
    pub replace: bool,
    /// Remove every existing entry that the import does not list.
    #[serde(default)]
    pub prune: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OobImportSession {
    pub id: String,
    pub idle_timeout_secs: u64,
}

/// Chunks are numbered from 0. Resending the last accepted chunk (after a
/// lost answer) is acknowledged without staging it twice; any other number
/// than the next one is a conflict.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OobImportChunk {
    pub seq: u64,
    #[serde(deserialize_with = "crate::json::vec_of_objects")]
    pub entries: Vec<OobEntryInput>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OobImportChunkAck {
    pub seq: u64,
    /// Entries staged in the session so far.
    pub staged: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OobImportCommit {
    /// Compute the difference and end the session without storing anything.
    #[serde(default)]
    pub dry_run: bool,
    /// The number of entries the client sent; a mismatch aborts the commit.
    pub expected_entries: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct OobImportResult {
    pub added: u64,
    pub changed: u64,
    pub unchanged: u64,
    pub removed: u64,
    pub dry_run: bool,
    /// The first [`MAX_LISTED_IDS`] of each, in device-ID order.
    #[serde(default)]
    pub added_ids: Vec<DeviceId>,
    #[serde(default)]
    pub changed_ids: Vec<DeviceId>,
    #[serde(default)]
    pub removed_ids: Vec<DeviceId>,
}
