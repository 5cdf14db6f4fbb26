//! The device side of idprov: find the hub's idprovd on the LAN, prove the
//! device's identity with its own key, and keep the resulting token fresh.
//!
//! ```no_run
//! use idprov_client::{Client, Event, Trust};
//!
//! # async fn device() -> Result<(), idprov_client::Error> {
//! let client = Client::builder()
//!     .device_id("sensor-0042") // a bad id is an Error::InvalidId from build()
//!     .key_file("/etc/device/key.pem")
//!     .trust(Trust::CaFingerprint("3f1c…".into()))
//!     .state_dir("/var/lib/device/idprov")
//!     .on_event(|e| eprintln!("idprov: {e:?}"))
//!     .build()?;
//! let keeper = client.start().await?; // discover, provision (waits if pending)
//! let token = keeper.current().token; // present it to the hub's services
//! # let _ = token;
//! # Ok(())
//! # }
//! ```
//!
//! What happens underneath:
//! - **Discovery**: without [`ClientBuilder::server`], the daemon is found by
//!   DNS-SD (`_idprov._tcp.local.`). With a pinned CA the advertiser whose TXT
//!   `ca` record matches is used and the others are reported
//!   (`Event::Discovered`).
//! - **Trust**: the daemon's TLS certificate must chain to the pinned CA
//!   ([`Trust`]); DNS-SD answers are never trusted on their own.
//! - **Provisioning**: a proof of possession (a JWS signed by the device key,
//!   stamped with the *server's* time so a device without a real-time clock
//!   works, and bound to the TLS connection it is sent on, RFC 9266, so a
//!   rogue server cannot relay it). A pending device polls at the server's hint with backoff and
//!   jitter; a refusal is [`Error::Rejected`].
//! - **Persistence**: credentials are saved atomically (0600) in the state
//!   directory and reused after a restart.
//! - **Renewal**: [`Keeper`] renews at half-life (minus jitter), retries with
//!   backoff, and re-authenticates with the key after an expiry.
//! - **Client certificates** (opt-in, `ClientBuilder::client_certificate`):
//!   provisioning and every renewal carry a CSR signed by the device key; the
//!   issued certificate and CA chain arrive in [`Credentials`], are saved
//!   with them, and are renewed with the token.
//!
//! # Errors
//!
//! Every fallible call returns [`Error`]. New variants may be added, so a
//! `match` needs a wildcard arm; [`Error::is_retryable`] tells whether waiting
//! can help. Where a lower layer failed (I/O, TLS, HTTP, key parsing, an
//! identifier's grammar) its error is the variant's
//! [`source`](std::error::Error::source), not repeated in the message;
//! [`Error::report`] gives the whole chain on one line. A parse error of a
//! [`DeviceId`] or [`MacAddr`] converts with `?`.
//!
//! # Cargo features
//!
//! Both are on by default; with `default-features = false` the client still
//! provisions and renews against a daemon given by [`ClientBuilder::server`].
//!
//! - **`mdns`**: finding the daemon by DNS-SD (the `mdns-sd` crate): the
//!   `discovery` module, `ClientBuilder::discovery` and `Event::Discovered`.
//!   Without it, [`ClientBuilder::build`] requires a server URL.
//! - **`x509`**: client certificates (the `rcgen` and `x509-parser` crates):
//!   `ClientBuilder::client_certificate` and `certificate_serial`.
//!   Credentials that carry a certificate are still read and saved without
//!   it.

mod api;
mod backoff;
mod bound;
mod builder;
mod client;
#[cfg(feature = "x509")]
mod csr;
#[cfg(feature = "mdns")]
pub mod discovery;
mod error;
mod events;
mod keeper;
mod proof;
mod setup;
mod signer;
mod store;
mod trust;

pub use backoff::Backoff;
pub use builder::ClientBuilder;
pub use client::Client;
#[cfg(feature = "x509")]
pub use csr::certificate_serial;
#[cfg(feature = "mdns")]
pub use discovery::{DiscoveredDaemon, Discovery, DiscoveryOptions};
pub use error::{BoxError, Error};
pub use events::Event;
pub use idprov_pake::SetupCode;
pub use idprov_proto::device::Credentials;
pub use idprov_proto::{DeviceId, KeyAlg, MacAddr, PublicKey, Secret};
pub use keeper::Keeper;
pub use signer::{KeySigner, Signer};
pub use store::{SavedState, StateDir};
pub use trust::{PinnedCa, Trust, normalize_fingerprint};
