//! DNS-SD (`_idprov._tcp.local.`) TXT record keys, shared by the daemon's
//! advertiser, its rogue-advertiser watch and the device client.
//!
//! TXT records are unauthenticated hints (security rule 10): a client uses
//! [`CA_FINGERPRINT`] only to choose among several advertisers, and still
//! verifies the daemon's TLS certificate against its pinned CA.

/// Protocol version, [`crate::PROTOCOL_VERSION`].
pub const VERSION: &str = "v";
/// Base path of the versioned API, [`crate::API_PATH`].
pub const API_PATH: &str = "path";
/// SHA-256 of the daemon's CA certificate (DER), lower-case hex.
pub const CA_FINGERPRINT: &str = "ca";
/// The daemon id (the `iss` of its tokens, part of a proof's audience).
pub const DAEMON_ID: &str = "id";
