//! The core of idprovd: what the daemon decides and how, with no HTTP and
//! no database in it. The HTTP layer (crate `idprovd`) calls the use cases
//! here; they read and write through the storage interface
//! ([`storage::Store`]), which a backend crate (`idprovd-store-redb`)
//! implements. This crate's dependencies leave out axum, hyper, `http` and
//! redb on purpose: a use case that reached for them would not compile.
//!
//! Map: [`error`] (the domain error), [`storage`] and [`store`] (the
//! storage interface and its records), [`daemon`] (shared state and the
//! unit of work), use cases ([`provision`], [`admin_ops`], [`keys_admin`],
//! [`certs`], [`crl`], [`oob_import`], [`alerts`]), pure checks ([`proof`],
//! [`flags`], [`tokens`], [`registry`], [`x509`]), key material ([`pki`],
//! [`admins`]).

pub mod admin_ops;
pub mod admins;
pub mod admission;
pub mod alerts;
pub mod audit;
pub mod certs;
pub mod clock;
pub mod clock_check;
pub mod config;
pub mod context;
pub mod crl;
pub mod daemon;
pub mod devices;
pub mod error;
pub mod flags;
pub mod group_commit;
pub mod keys_admin;
pub mod metrics;
pub mod neighbour;
pub mod oob;
pub mod oob_import;
pub mod pki;
pub mod policy;
pub mod policy_admin;
pub mod proof;
pub mod provision;
pub mod ratelimit;
pub mod records;
pub mod recovery;
pub mod registry;
pub mod revocation;
pub mod setup_code;
pub mod storage;
pub mod store;
/// The conformance suite every storage backend runs (feature
/// `conformance`, on for backends' tests).
#[cfg(feature = "conformance")]
pub mod store_conformance;
pub mod tokens;
pub mod waiters;
pub mod windows;
pub mod x509;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::Config;
pub use context::Core;
pub use daemon::Daemon;
pub use error::Error;
