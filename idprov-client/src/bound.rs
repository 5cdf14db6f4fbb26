//! Requests whose proof is bound to their own TLS connection (RFC 9266).
//!
//! A proof sent to a rogue server could be relayed by it to the real daemon.
//! To stop that, `/provision` and `/renew` go over a fresh TLS connection of
//! their own: the client reads that connection's `EXPORTER-Channel-Binding`
//! value, puts it in the proof (`cbt`), and sends the request on the same
//! connection. The daemon compares `cbt` with its side of the connection, so
//! a proof replayed on any other connection is refused. (reqwest hides its
//! connections, so these two calls use hyper directly.)

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use idprov_proto::device::{CHANNEL_BINDING_LABEL, CHANNEL_BINDING_LEN};
use rustls_pki_types::ServerName;

use crate::api::refused_certificate;
use crate::error::{BoxError, Error};

/// A finished exchange, before its body is decoded.
pub(crate) struct RawAnswer {
    pub status: reqwest::StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

/// One TLS connection of its own to the daemon, with its RFC 9266
/// exporter value, that carries several requests in turn (HTTP/1.1).
pub(crate) struct BoundConn {
    base: String,
    host: String,
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    driver: tokio::task::JoinHandle<Result<(), hyper::Error>>,
    /// `EXPORTER-Channel-Binding` of this connection.
    pub exporter: Option<[u8; CHANNEL_BINDING_LEN]>,
}

impl Drop for BoundConn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

fn net(base: &str, step: &str, source: Option<BoxError>) -> Error {
    Error::Network {
        server: base.to_string(),
        message: step.to_string(),
        source,
    }
}

impl BoundConn {
    /// Connect to `base` and shake hands (TLS, then HTTP/1.1).
    pub(crate) async fn connect(
        tls: &Arc<rustls::ClientConfig>,
        base: &str,
    ) -> Result<Self, Error> {
        let url = reqwest::Url::parse(base)
            .map_err(|e| Error::config_from(format!("{base}: not a URL"), e))?;
        let port = url.port_or_known_default().unwrap_or(443);
        let host = url
            .host_str()
            .ok_or_else(|| Error::config(format!("{base}: no host")))?;
        let (addr, name): (String, ServerName<'static>) =
            match host.trim_matches(['[', ']']).parse::<std::net::IpAddr>() {
                Ok(ip) => (
                    std::net::SocketAddr::new(ip, port).to_string(),
                    ServerName::IpAddress(ip.into()),
                ),
                Err(_) => (
                    format!("{host}:{port}"),
                    ServerName::try_from(host.to_string())
                        .map_err(|e| Error::config_from(format!("{base}: not a server name"), e))?,
                ),
            };
        let tcp = tokio::net::TcpStream::connect(&addr)
            .await
            .map_err(|e| net(base, "connect", Some(e.into())))?;
        let _ = tcp.set_nodelay(true);
        let tls = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| {
                if refused_certificate(&e) {
                    Error::untrusted_from(format!("{base}: its TLS certificate was refused"), e)
                } else {
                    net(base, "TLS handshake", Some(e.into()))
                }
            })?;
        let exporter = tls
            .get_ref()
            .1
            .export_keying_material([0u8; CHANNEL_BINDING_LEN], CHANNEL_BINDING_LABEL, None)
            .ok();
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .map_err(|e| net(base, "HTTP handshake", Some(e.into())))?;
        Ok(Self {
            base: base.to_string(),
            host: url.host_str().unwrap_or("idprovd").to_string(),
            sender,
            driver: tokio::spawn(conn),
            exporter,
        })
    }

    /// The exporter value as the proofs' `cbt` carries it (base64url).
    pub(crate) fn cbt(&self) -> Option<String> {
        self.exporter
            .map(|b| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
    }

    /// POST a JSON body to `path` on this connection.
    pub(crate) async fn post(
        &mut self,
        path: &str,
        body: Vec<u8>,
        max_body: usize,
        extra: &[(http::HeaderName, http::HeaderValue)],
    ) -> Result<RawAnswer, Error> {
        let mut req = http::Request::post(path)
            .header(http::header::HOST, self.host.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| Error::config_from("building the request", e))?;
        for (name, value) in extra {
            req.headers_mut().insert(name.clone(), value.clone());
        }
        self.sender
            .ready()
            .await
            .map_err(|e| net(&self.base, "HTTP connection", Some(e.into())))?;
        let resp = self
            .sender
            .send_request(req)
            .await
            .map_err(|e| net(&self.base, "HTTP request", Some(e.into())))?;
        let (parts, body) = resp.into_parts();
        let body = Limited::new(body, max_body)
            .collect()
            .await
            .map_err(|e| {
                Error::protocol_from(
                    parts.status.as_u16(),
                    format!("answer unreadable or longer than {max_body} bytes"),
                    e,
                )
            })?
            .to_bytes();
        Ok(RawAnswer {
            status: reqwest::StatusCode::from_u16(parts.status.as_u16())
                .map_err(|e| net(&self.base, "HTTP status", Some(e.into())))?,
            headers: parts.headers,
            body,
        })
    }
}

/// Connect to `base`, build the JSON body with the connection's channel
/// binding (base64url), POST it to `path` on that connection with the
/// `extra` headers (user agent, preferences).
pub(crate) async fn post_bound<B: serde::Serialize>(
    tls: &Arc<rustls::ClientConfig>,
    base: &str,
    path: &str,
    max_body: usize,
    timeout: Duration,
    extra: &[(http::HeaderName, http::HeaderValue)],
    build: impl FnOnce(Option<&str>) -> Result<B, Error>,
) -> Result<RawAnswer, Error> {
    let exchange = async {
        let mut conn = BoundConn::connect(tls, base).await?;
        let cbt = conn.cbt();
        let body = serde_json::to_vec(&build(cbt.as_deref())?)
            .map_err(|e| Error::config_from("encoding the request", e))?;
        conn.post(path, body, max_body, extra).await
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| net(base, &format!("no answer within {timeout:?}"), None))?
}
