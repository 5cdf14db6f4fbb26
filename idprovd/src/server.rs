//! The HTTPS listener: rustls (TLS 1.2/1.3, no 0-RTT) over tokio, hyper's
//! HTTP/1.1 and HTTP/2 with a timer so the header-read limit is real, and
//! bounds on connections overall and per source address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::config::LimitsConfig;
use crate::http::ConnInfo;
use crate::pki::Pki;

/// Time in-flight requests get to finish after shutdown is asked for; the
/// connections still open then are closed. With [`CUT_WAIT`] and the
/// store's close this keeps SIGTERM to exit under the documented 10 s
/// (docs/operations.md, "Shutdown").
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(8);
/// How long the connections closed after the drain get to let go.
const CUT_WAIT: Duration = Duration::from_millis(500);

pub fn tls_config(pki: &Pki) -> Result<Arc<ServerConfig>> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS protocol versions")?
        .with_client_cert_verifier(crate::certs::client_verifier(pki)?)
        .with_single_cert(pki.server_chain.clone(), pki.server_key.clone_key())
        .context("loading the server certificate")?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // 0-RTT data is replayable; never accept it.
    cfg.max_early_data_size = 0;
    Ok(Arc::new(cfg))
}

/// Serve `router` on `listener` until `shutdown`, then drain.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    router: Router,
    limits: LimitsConfig,
    metrics: Arc<crate::metrics::Metrics>,
    shutdown: CancellationToken,
) -> Result<()> {
    let acceptor = TlsAcceptor::from(tls);
    let total = Arc::new(Semaphore::new(limits.max_connections));
    let per_source: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
    let graceful = GracefulShutdown::new();
    // Cancelled after the drain: closes the connections still open.
    let cut = CancellationToken::new();

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(64 * 1024)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(64)
        .max_header_list_size(32 * 1024)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    let builder = Arc::new(builder);

    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = total.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "connection limit reached; dropping connection");
            metrics.rate_limited("connection_limit");
            continue;
        };
        let Some(source_guard) =
            SourceGuard::acquire(&per_source, peer.ip(), limits.max_connections_per_source)
        else {
            tracing::warn!(%peer, "per-source connection limit reached; dropping connection");
            metrics.rate_limited("per_source_limit");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let conn = Connection {
            acceptor: acceptor.clone(),
            router: router.clone(),
            builder: builder.clone(),
            handshake_timeout: limits.handshake_timeout,
            watcher: graceful.watcher(),
        };
        let cut = cut.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = conn.serve(tcp, peer) => {}
                () = cut.cancelled() => {
                    tracing::debug!(%peer, "connection closed at shutdown");
                }
            }
            // Released only now, after the connection (and with it the
            // router's hold on the daemon) is gone: the drain below counts
            // on that.
            drop(source_guard);
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(DRAIN_TIMEOUT) => {
            let open = limits.max_connections.saturating_sub(total.available_permits());
            tracing::warn!(open, "in-flight requests did not finish in time; closing their connections");
        }
    }
    // A client stalled on its body would otherwise keep its connection
    // task, and through the router the daemon and its store, alive past the
    // drain: the store could not be closed cleanly.
    cut.cancel();
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(CUT_WAIT, total.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("connections still closing after the drain");
    }
    Ok(())
}

/// What a connection task needs to serve one accepted socket.
struct Connection {
    acceptor: TlsAcceptor,
    router: Router,
    builder: Arc<auto::Builder<TokioExecutor>>,
    handshake_timeout: Duration,
    watcher: hyper_util::server::graceful::Watcher,
}

impl Connection {
    /// TLS handshake (bounded), then HTTP until the peer or a graceful
    /// shutdown ends it.
    async fn serve(self, tcp: tokio::net::TcpStream, peer: std::net::SocketAddr) {
        let tls =
            match tokio::time::timeout(self.handshake_timeout, self.acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
        // Verified to chain to the daemon CA; whether it is still good
        // is checked by the application on every request (rule 4).
        let client_cert = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| Arc::new(c.clone().into_owned()));
        let channel_binding = tls
            .get_ref()
            .1
            .export_keying_material(
                [0u8; idprov_proto::device::CHANNEL_BINDING_LEN],
                idprov_proto::device::CHANNEL_BINDING_LABEL,
                None,
            )
            .ok();
        let info = ConnInfo {
            peer,
            client_cert,
            channel_binding,
        };
        let router = self.router;
        let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(info.clone());
            router.clone().oneshot(req)
        });
        let conn = self.builder.serve_connection(TokioIo::new(tls), svc);
        if let Err(e) = self.watcher.watch(conn.into_owned()).await {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
    }
}

/// Counts a connection against its source address while alive.
struct SourceGuard {
    map: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl SourceGuard {
    fn acquire(map: &Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr, max: usize) -> Option<Self> {
        let mut m = map.lock().ok()?;
        let n = m.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(SourceGuard {
            map: map.clone(),
            ip,
        })
    }
}

impl Drop for SourceGuard {
    fn drop(&mut self) {
        if let Ok(mut m) = self.map.lock()
            && let Some(n) = m.get_mut(&self.ip)
        {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}
