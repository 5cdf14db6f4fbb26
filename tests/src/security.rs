//! Helpers for the security tests: a raw TLS connection that knows its own
//! channel binding (RFC 9266 tls-exporter), proofs that carry one, and an
//! edit of a stopped daemon's audit log.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use base64::Engine;
use idprov_proto::admin::AuditEntry;
use idprov_proto::device::{
    CHANNEL_BINDING_LABEL, CHANNEL_BINDING_LEN, ProofEndpoint, proof_audience,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::{Answer, DeviceKey, random_jti};

/// One TLS connection to a daemon, pinned to its CA, with its exporter value.
pub struct BoundConn {
    stream: TlsStream<TcpStream>,
    pub binding: [u8; CHANNEL_BINDING_LEN],
}

impl BoundConn {
    pub async fn connect(addr: SocketAddr, ca_pem: &str) -> Result<BoundConn> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, ServerName};
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(c?)?;
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::IpAddress(addr.ip().into());
        let stream = connector
            .connect(name, tcp)
            .await
            .context("TLS handshake")?;
        let binding = stream
            .get_ref()
            .1
            .export_keying_material([0u8; CHANNEL_BINDING_LEN], CHANNEL_BINDING_LABEL, None)
            .context("exporter")?;
        Ok(BoundConn { stream, binding })
    }

    pub fn binding_b64(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.binding)
    }

    /// One HTTP/1.1 POST on this connection (kept alive for the next one).
    pub async fn post_json(&mut self, path: &str, body: &impl serde::Serialize) -> Result<Answer> {
        let body = serde_json::to_vec(body)?;
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: idprovd\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        self.stream.write_all(head.as_bytes()).await?;
        self.stream.write_all(&body).await?;
        self.stream.flush().await?;
        self.read_answer().await
    }

    async fn read_answer(&mut self) -> Result<Answer> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let header_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                bail!("connection closed before the answer's headers");
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..header_end]).to_string();
        let mut lines = head.lines();
        let status: u16 = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .context("status line")?;
        let mut len = 0usize;
        let mut retry_after = None;
        for l in lines {
            if let Some((k, v)) = l.split_once(':') {
                match k.trim().to_ascii_lowercase().as_str() {
                    "content-length" => len = v.trim().parse().context("content-length")?,
                    "retry-after" => retry_after = Some(v.trim().to_string()),
                    _ => {}
                }
            }
        }
        while buf.len() < header_end + len {
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                bail!("connection closed in the answer's body");
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body = serde_json::from_slice(&buf[header_end..header_end + len])
            .with_context(|| format!("answer is not JSON (HTTP {status})"))?;
        Ok(Answer {
            status,
            retry_after,
            body,
        })
    }
}

impl DeviceKey {
    /// A proof carrying `cbt` (base64url text, as sent).
    pub fn proof_with_cbt(
        &self,
        device: &str,
        daemon_id: &str,
        endpoint: ProofEndpoint,
        now: i64,
        cbt: &str,
    ) -> String {
        let claims = serde_json::json!({
            "sub": device,
            "aud": proof_audience(daemon_id, endpoint),
            "iat": now,
            "exp": now + 120,
            "jti": random_jti(),
            "cbt": cbt,
        });
        self.sign_raw(&self.proof_header(), &claims)
    }
}

/// Change the `detail` of audit entry `seq` in a stopped daemon's store,
/// leaving its hash as it was (what a careless intruder would do).
pub fn edit_audit_detail(data_dir: &Path, seq: u64, detail: &str) -> Result<()> {
    const AUDIT: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("audit");
    use redb::ReadableTable;
    let db = redb::Database::create(data_dir.join(idprovd::store::STORE_FILE))?;
    let tx = db.begin_write()?;
    {
        let mut t = tx.open_table(AUDIT)?;
        let mut e: AuditEntry = {
            let v = t.get(seq)?.context("no such audit entry")?;
            serde_json::from_slice(v.value())?
        };
        e.detail = detail.to_string();
        t.insert(seq, serde_json::to_vec(&e)?.as_slice())?;
    }
    tx.commit()?;
    Ok(())
}

/// The MAC of `host`'s `eth0`, as the kernel has it.
pub fn interface_mac(lan: &crate::netns::Lan, host: &str) -> Result<idprov_proto::MacAddr> {
    let out = std::process::Command::new(crate::netns::ip_program())
        .args(["-n", &lan.ns(host), "link", "show", "eth0"])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mac = text
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .context("no link/ether in `ip link show eth0`")?;
    Ok(mac.parse()?)
}

/// A second DNS-SD responder on a LAN host advertising `_idprov._tcp`
/// under `instance`: a rogue provisioning server. Dropping it stops the
/// responder (without waiting for its goodbye).
pub struct RogueAdvertiser {
    mdns: mdns_sd::ServiceDaemon,
    pub fullname: String,
}

impl RogueAdvertiser {
    /// Start it on `rt`'s host, advertising `addr:port` with a fake CA.
    pub async fn start(
        rt: &crate::netns::NsRuntime,
        instance: &str,
        host_label: &str,
        addr: std::net::Ipv4Addr,
        port: u16,
    ) -> Result<RogueAdvertiser> {
        let instance = instance.to_string();
        let host = format!("{host_label}.local.");
        rt.run(async move {
            // Created on a thread of the namespace: its sockets live there.
            let mdns = mdns_sd::ServiceDaemon::new()?;
            let ca = "ee".repeat(32);
            let txt = [
                ("v", "1"),
                ("path", "/idprov/v1"),
                ("ca", ca.as_str()),
                ("id", "rogue"),
            ];
            let info = mdns_sd::ServiceInfo::new(
                idprov_proto::SERVICE_TYPE,
                &instance,
                &host,
                &[std::net::IpAddr::V4(addr)][..],
                port,
                &txt[..],
            )?;
            let fullname = info.get_fullname().to_string();
            mdns.register(info)?;
            anyhow::Ok(RogueAdvertiser { mdns, fullname })
        })
        .await?
    }

    /// Withdraw (goodbye) and stop.
    pub async fn stop(self) {
        if let Ok(rx) = self.mdns.unregister(&self.fullname) {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), rx.recv_async()).await;
        }
        if let Ok(rx) = self.mdns.shutdown() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), rx.recv_async()).await;
        }
    }
}

/// Wait until the advertisement of `instance` resolves on `rt`'s host: it
/// is out on the LAN, so every host there has had it, the advertising
/// daemon's own monitor included. Fails after `within`.
pub async fn wait_for_advert(
    rt: &crate::netns::NsRuntime,
    instance: &str,
    within: std::time::Duration,
) -> Result<()> {
    let prefix = format!("{instance}.");
    rt.run(async move {
        // Created on a thread of the namespace: its sockets live there.
        let mdns = mdns_sd::ServiceDaemon::new()?;
        let rx = mdns.browse(idprov_proto::SERVICE_TYPE)?;
        let seen = tokio::time::timeout(within, async {
            while let Ok(ev) = rx.recv_async().await {
                if let mdns_sd::ServiceEvent::ServiceResolved(r) = ev
                    && r.get_fullname().starts_with(&prefix)
                {
                    return true;
                }
            }
            false
        })
        .await;
        if let Ok(done) = mdns.shutdown() {
            let _ =
                tokio::time::timeout(std::time::Duration::from_secs(2), done.recv_async()).await;
        }
        match seen {
            Ok(true) => Ok(()),
            _ => Err(anyhow::anyhow!(
                "{prefix}{} did not resolve within {within:?}",
                idprov_proto::SERVICE_TYPE
            )),
        }
    })
    .await?
}

/// Unix seconds now (LAN daemons run on the system clock).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// An HTTPS client pinned to `ca_pem` whose connections leave from `local`
/// (a device with its own address on the LAN).
pub fn pinned_client_from(
    ca_pem: &str,
    local: Option<std::net::IpAddr>,
) -> Result<reqwest::Client> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c?)?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .local_address(local)
        .timeout(std::time::Duration::from_secs(30))
        .build()?)
}

/// Send `bytes` as they are on a new TLS connection to a daemon and read
/// until it closes the connection or `wait` passes: for malformed requests
/// that no HTTP client would send.
pub async fn raw_exchange(
    addr: SocketAddr,
    ca_pem: &str,
    bytes: &[u8],
    wait: std::time::Duration,
) -> Result<Vec<u8>> {
    let mut conn = BoundConn::connect(addr, ca_pem).await?;
    conn.stream.write_all(bytes).await?;
    conn.stream.flush().await?;
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    let read = async {
        loop {
            match conn.stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&chunk[..n]),
            }
        }
    };
    let _ = tokio::time::timeout(wait, read).await;
    Ok(out)
}
