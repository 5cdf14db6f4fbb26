//! Everything a store keeps and how it fails, in one place: the records,
//! the audit chain's types, and the storage interface's error and result
//! types. Backends and services name these as `store::…`.

pub use crate::audit::{AuditDraft, GENESIS_HASH, audit_hash, verify_chain};
pub use crate::records::*;
pub use crate::storage::{CommitOptions, SnapshotCounts, StoreError, StoreResult};
