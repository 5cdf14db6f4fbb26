//! Connection-level bounds (security rule 8): TLS handshake time, header-read
//! time (slowloris), connections per source, pending expiry.

use std::sync::Arc;
use std::time::{Duration, Instant};

use idprov_proto::admin::ListQuery;
use idprov_tests::{DeviceKey, TestDaemon};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

type R = anyhow::Result<()>;

/// Wait until the peer closes (EOF or error); return how long it took.
async fn time_to_close(s: &mut (impl AsyncReadExt + Unpin), limit: Duration) -> Option<Duration> {
    let t = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(limit.saturating_sub(t.elapsed()), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(t.elapsed()),
            Ok(Ok(_)) => continue,
            Err(_) => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_slow_clients_are_cut_off() -> R {
    let d = TestDaemon::start_with(|c| {
        c.limits.handshake_timeout = Duration::from_secs(1);
        c.limits.header_read_timeout = Duration::from_secs(1);
    })
    .await?;

    // A TCP connection that never starts TLS.
    let mut silent = TcpStream::connect(d.addr).await?;
    let t = time_to_close(&mut silent, Duration::from_secs(5)).await;
    assert!(
        t.is_some_and(|t| t >= Duration::from_millis(800)),
        "handshake timeout: {t:?}"
    );

    // TLS done, then headers that never finish.
    let mut roots = rustls::RootCertStore::empty();
    use rustls_pki_types::pem::PemObject;
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(d.ca_pem().as_bytes()) {
        roots.add(c?)?;
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = TcpStream::connect(d.addr).await?;
    let mut tls = connector.connect("localhost".try_into()?, tcp).await?;
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await?;
    let t = time_to_close(&mut tls, Duration::from_secs(5)).await;
    assert!(t.is_some(), "slowloris connection must be closed");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_source_are_bounded() -> R {
    let d = TestDaemon::start_with(|c| {
        c.limits.max_connections_per_source = 2;
        c.limits.handshake_timeout = Duration::from_secs(3);
    })
    .await?;
    let mut a = TcpStream::connect(d.addr).await?;
    let mut b = TcpStream::connect(d.addr).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut c = TcpStream::connect(d.addr).await?;
    assert!(
        time_to_close(&mut c, Duration::from_millis(1000))
            .await
            .is_some(),
        "third connection from one source is dropped"
    );
    assert!(
        time_to_close(&mut a, Duration::from_millis(300))
            .await
            .is_none()
    );
    assert!(
        time_to_close(&mut b, Duration::from_millis(300))
            .await
            .is_none()
    );
    drop((a, b));
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Slots free again: a real request works.
    let r = d.http().get(d.endpoint("/healthz")).send().await?;
    assert_eq!(r.status().as_u16(), 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_pending_requests_expire() -> R {
    let d = TestDaemon::start_with(|c| c.pending.expiry = Duration::from_secs(60)).await?;
    let k = DeviceKey::es256();
    assert_eq!(d.provision("old-1", &k).await?.status, 202);
    d.clock.advance(30);
    assert_eq!(
        d.daemon
            .expire_pending()
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))?,
        0
    );
    d.clock.advance(31);
    assert_eq!(
        d.daemon
            .expire_pending()
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))?,
        1
    );
    let admin = d.admin()?;
    assert_eq!(admin.pending_list(&ListQuery::default()).await?.total, 0);
    let audit = admin
        .audit(&ListQuery {
            q: Some("pending_expired".into()),
            ..Default::default()
        })
        .await?;
    assert_eq!(audit.items.len(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_proof_ids_and_token_records_are_purged() -> R {
    let d = TestDaemon::start().await?;
    let k = DeviceKey::es256();
    d.oob_key("purge-1", &k).await?;
    assert_eq!(d.provision("purge-1", &k).await?.status, 200);
    let counts = |d: &TestDaemon| -> anyhow::Result<(u64, u64)> {
        d.daemon
            .store
            .read_with(|v| Ok((v.replay_count()?, v.token_count()?)))
            .map_err(|e| anyhow::anyhow!("{e}"))
    };
    assert_eq!(counts(&d)?, (1, 1));
    // Past the proof's memory (exp + skew) but inside the token's life.
    d.clock.advance(3600);
    d.daemon
        .expire_pending()
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    assert_eq!(counts(&d)?, (0, 1));
    // Past the token's expiry.
    d.clock.advance(31 * 24 * 3600);
    d.daemon
        .expire_pending()
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    assert_eq!(counts(&d)?, (0, 0));
    Ok(())
}
