//! Wire types shared by idprovd, idprov-client, the TUI and oob-tool.
//!
//! Everything that crosses the network is defined here once: identifiers with
//! their grammar ([`DeviceId`], [`MacAddr`]), public-key parsing and RFC 7638
//! thumbprints ([`keys`]), the device protocol ([`device`]), the admin protocol
//! ([`admin`]) and the stable error codes ([`error`]). The crate does no I/O.
//! `docs/protocol.md` is the normative description; this crate implements it.

pub mod admin;
pub mod device;
pub mod dnssd;
pub mod error;
pub mod ids;
pub mod json;
pub mod keys;
pub mod oob_import;
pub mod pem;
pub mod policy;
pub mod secret;
pub mod setup;
pub mod time;
pub mod x509;

pub use error::{ErrorBody, ErrorCode};
pub use ids::{DeviceId, IdError, MacAddr};
pub use keys::{KeyAlg, KeyError, KeyFormat, PublicKey};
pub use secret::Secret;

/// Protocol version advertised in DNS-SD TXT records and `/info`.
pub const PROTOCOL_VERSION: &str = "1";
/// Base path of every versioned endpoint.
pub const API_PATH: &str = "/idprov/v1";
/// DNS-SD service type.
pub const SERVICE_TYPE: &str = "_idprov._tcp.local.";
