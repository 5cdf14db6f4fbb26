//! A rogue provisioning server that terminates TLS with a certificate of
//! its own and relays every request, unchanged, to the real daemon over a
//! TLS connection of its own (one upstream connection per device
//! connection): the attack channel binding and the setup-code exchange's
//! Context are there to defeat.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::security::BoundConn;

/// A running relay; stops when dropped.
pub struct Relay {
    pub addr: SocketAddr,
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Relay {
    /// Listen on `bind` (port 0 for any) and relay to `upstream`, whose CA
    /// the rogue knows (it is public).
    pub async fn start(bind: SocketAddr, upstream: SocketAddr, upstream_ca: &str) -> Result<Relay> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let params = rcgen::CertificateParams::new(vec!["rogue.local".to_string()])?;
        let cert = params.self_signed(&key)?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let listener = TcpListener::bind(bind).await?;
        let addr = listener.local_addr()?;
        let ca = upstream_ca.to_string();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, ca) = (acceptor.clone(), ca.clone());
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await
                        && let Err(e) = relay_connection(tls, upstream, &ca).await
                    {
                        eprintln!("relay: {e:#}");
                    }
                });
            }
        });
        Ok(Relay {
            addr,
            url: format!("https://{addr}"),
            task,
        })
    }
}

async fn relay_connection(
    mut tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    upstream: SocketAddr,
    ca: &str,
) -> Result<()> {
    let mut up = BoundConn::connect(upstream, ca).await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        // One request: headers, then Content-Length bytes of body.
        let header_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = tls.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..header_end]).to_string();
        let path = head
            .lines()
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .context("request line")?
            .to_string();
        let len: usize = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.trim().parse())
            .transpose()?
            .unwrap_or(0);
        while buf.len() < header_end + len {
            let n = tls.read(&mut chunk).await?;
            if n == 0 {
                bail!("client closed in a body");
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body: serde_json::Value = serde_json::from_slice(&buf[header_end..header_end + len])?;
        buf.drain(..header_end + len);
        let answer = up.post_json(&path, &body).await?;
        let out = serde_json::to_vec(&answer.body)?;
        let head = format!(
            "HTTP/1.1 {} Relayed\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            answer.status,
            out.len()
        );
        tls.write_all(head.as_bytes()).await?;
        tls.write_all(&out).await?;
        tls.flush().await?;
    }
}
