//! The builder of a [`Client`]: what the device is, how it signs, where the
//! daemon is and what it trusts.

use std::path::PathBuf;
use std::sync::Arc;

use idprov_proto::{DeviceId, MacAddr, Secret};
use tokio::sync::Mutex;

use crate::backoff::Backoff;
use crate::client::{Client, Inner};
#[cfg(feature = "mdns")]
use crate::discovery::DiscoveryOptions;
use crate::error::Error;
use crate::events::{Event, EventFn, EventSink};
use crate::proof::ServerClock;
use crate::signer::{KeySigner, Signer};
use crate::store::StateDir;
use crate::trust::{PinnedCa, Trust, normalize_fingerprint};

/// Where the daemon is.
#[derive(Debug, Clone)]
pub(crate) enum ServerChoice {
    Fixed(String),
    #[cfg(feature = "mdns")]
    Discover(DiscoveryOptions),
}

#[derive(Debug, Clone, Copy)]
enum MacChoice {
    Auto,
    Given(MacAddr),
    Omit,
}

/// Builds a [`Client`]. Device id, key and trust are required; without
/// [`server`](Self::server) the daemon is found by DNS-SD (feature `mdns`;
/// without that feature a server URL is required too).
///
/// Every mistake is reported by [`build`](Self::build), as an [`Error`].
#[derive(Default)]
pub struct ClientBuilder {
    device_id: Option<Result<DeviceId, Error>>,
    signer: Option<Arc<dyn Signer>>,
    key_file: Option<PathBuf>,
    mac: Option<MacChoice>,
    secret: Option<Secret>,
    server: Option<ServerChoice>,
    trust: Option<Trust>,
    state_dir: Option<PathBuf>,
    backoff: Option<Backoff>,
    on_event: Option<EventFn>,
    #[cfg(feature = "x509")]
    client_certificate: bool,
}

impl ClientBuilder {
    /// The device's id: a [`DeviceId`], or a string such as `"sensor-0042"`
    /// (`[A-Za-z0-9._:-]`, 1–128 characters, starting with a letter or
    /// digit). A string that is not a valid id makes [`build`](Self::build)
    /// fail with [`Error::InvalidId`].
    pub fn device_id<I>(mut self, id: I) -> Self
    where
        I: TryInto<DeviceId>,
        I::Error: Into<Error>,
    {
        self.device_id = Some(id.try_into().map_err(Into::into));
        self
    }
    /// A PEM private key file (PKCS#8, SEC1 or PKCS#1; P-256 or RSA).
    pub fn key_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.key_file = Some(path.into());
        self
    }
    /// A signer whose key never leaves hardware (TPM, secure element).
    pub fn signer(mut self, signer: Arc<dyn Signer>) -> Self {
        self.signer = Some(signer);
        self
    }
    /// The MAC to report. By default the first non-loopback interface's MAC
    /// is used, and none is sent when there is none.
    pub fn mac(mut self, mac: Option<MacAddr>) -> Self {
        self.mac = Some(mac.map_or(MacChoice::Omit, MacChoice::Given));
        self
    }
    /// A one-time secret from the administrator's OOB list.
    pub fn secret(mut self, secret: Secret) -> Self {
        self.secret = Some(secret);
        self
    }
    /// A fixed daemon URL (`https://hub.local:8445`) instead of DNS-SD.
    /// Required when the crate is built without the `mdns` feature.
    pub fn server(mut self, url: impl Into<String>) -> Self {
        self.server = Some(ServerChoice::Fixed(url.into()));
        self
    }
    /// Find the daemon by DNS-SD with these timings (the default).
    ///
    /// Needs the `mdns` feature (on by default).
    #[cfg(feature = "mdns")]
    pub fn discovery(mut self, opts: DiscoveryOptions) -> Self {
        self.server = Some(ServerChoice::Discover(opts));
        self
    }
    pub fn trust(mut self, trust: Trust) -> Self {
        self.trust = Some(trust);
        self
    }
    /// Where credentials and a TOFU-pinned CA are kept. Without it nothing
    /// is persisted and a restarted device provisions again.
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = Some(dir.into());
        self
    }
    /// Ask for an X.509 client certificate: provisioning and every renewal
    /// send a CSR signed by the device key (file key or [`Signer`]), and the
    /// certificate and CA chain come back in [`Credentials`](crate::Credentials)
    /// (`certificate`, `ca_chain`). With a state directory they are also
    /// written to `certificate.pem` (leaf, then chain). Saved credentials
    /// without a certificate are not reused: the device provisions again.
    ///
    /// Needs the `x509` feature (on by default).
    #[cfg(feature = "x509")]
    pub fn client_certificate(mut self, on: bool) -> Self {
        self.client_certificate = on;
        self
    }
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = Some(backoff);
        self
    }
    /// Called with every [`Event`], from the client's tasks: keep it quick.
    pub fn on_event(mut self, f: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        self.on_event = Some(Arc::new(f));
        self
    }

    pub fn build(self) -> Result<Client, Error> {
        let device_id = self
            .device_id
            .ok_or_else(|| Error::config("a device id is required"))??;
        let signer: Arc<dyn Signer> = match (self.signer, self.key_file) {
            (Some(s), None) => s,
            (None, Some(path)) => Arc::new(KeySigner::load(&path)?),
            (Some(_), Some(_)) => {
                return Err(Error::config(
                    "give either a key file or a signer, not both",
                ));
            }
            (None, None) => return Err(Error::config("a key file or a signer is required")),
        };
        let mut trust = self
            .trust
            .ok_or_else(|| Error::config("a trust anchor is required: a CA fingerprint, a CA certificate, or explicit trust on first use"))?;
        if let Trust::CaFingerprint(fp) = &trust {
            trust = Trust::CaFingerprint(normalize_fingerprint(fp)?);
        }
        if let Trust::CaCertPem(pem) = &trust {
            PinnedCa::from_pem(pem)?;
        }
        let server = match self.server {
            Some(ServerChoice::Fixed(url)) => {
                let url = url.trim_end_matches('/').to_string();
                if !url.starts_with("https://") {
                    return Err(Error::config(format!(
                        "server URL must start with https://: {url}"
                    )));
                }
                ServerChoice::Fixed(url)
            }
            #[cfg(feature = "mdns")]
            Some(d) => d,
            #[cfg(feature = "mdns")]
            None => ServerChoice::Discover(DiscoveryOptions::default()),
            #[cfg(not(feature = "mdns"))]
            None => {
                return Err(Error::config(
                    "a server URL is required: finding the daemon by DNS-SD needs the `mdns` feature",
                ));
            }
        };
        let mac = match self.mac.unwrap_or(MacChoice::Auto) {
            MacChoice::Given(m) => Some(m),
            MacChoice::Omit => None,
            // No MAC (or an error reading one) is a normal case, not a failure.
            MacChoice::Auto => match mac_address::get_mac_address() {
                Ok(Some(m)) => Some(MacAddr(m.bytes())).filter(|m| !m.is_zero()),
                _ => None,
            },
        };
        let state = self.state_dir.map(StateDir::open).transpose()?;
        let events = EventSink::new(self.on_event);
        let saved = match &state {
            Some(dir) => match dir.load_state() {
                Ok(s) => s,
                // The key is still here: provisioning again repairs it.
                Err(e) => {
                    tracing::warn!("ignoring unreadable saved credentials: {}", e.report());
                    None
                }
            },
            None => None,
        };
        let clock = Arc::new(ServerClock::new(
            saved.as_ref().and_then(|s| s.clock_offset_ms),
        ));
        Ok(Client {
            inner: Arc::new(Inner {
                device_id,
                signer,
                mac,
                secret: self.secret,
                server,
                trust,
                state,
                backoff: self.backoff.unwrap_or_default(),
                events,
                clock,
                saved: std::sync::Mutex::new(saved),
                conn: Mutex::new(None),
                #[cfg(feature = "x509")]
                client_certificate: self.client_certificate,
                #[cfg(not(feature = "x509"))]
                client_certificate: false,
                setup_ca: std::sync::Mutex::new(None),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_id_takes_an_id_or_a_string_checked_by_build() -> Result<(), Error> {
        let signer: Arc<dyn Signer> = Arc::new(KeySigner::generate_p256()?.0);
        let builder = || {
            Client::builder()
                .signer(signer.clone())
                .trust(Trust::TrustOnFirstUse)
                .server("https://127.0.0.1:8445")
                .mac(None)
        };
        let c = builder().device_id("sensor-1").build()?;
        assert_eq!(c.device_id().as_str(), "sensor-1");
        let c = builder().device_id(String::from("sensor-2")).build()?;
        assert_eq!(c.device_id().as_str(), "sensor-2");
        let id: DeviceId = "sensor-3".parse()?;
        assert_eq!(builder().device_id(id.clone()).build()?.device_id(), &id);

        let err = builder().device_id("bad id").build().err();
        assert!(
            matches!(
                err,
                Some(Error::InvalidId(idprov_proto::IdError::DeviceIdChars))
            ),
            "{err:?}"
        );
        let err = builder().build().err();
        assert!(matches!(err, Some(Error::Config { .. })), "{err:?}");
        Ok(())
    }

    #[cfg(not(feature = "mdns"))]
    #[test]
    fn without_mdns_a_server_url_is_required() -> Result<(), Error> {
        let err = Client::builder()
            .device_id("sensor-1")
            .signer(Arc::new(KeySigner::generate_p256()?.0))
            .trust(Trust::TrustOnFirstUse)
            .build()
            .err();
        assert!(
            matches!(&err, Some(Error::Config { message, .. }) if message.contains("`mdns`")),
            "{err:?}"
        );
        Ok(())
    }
}
