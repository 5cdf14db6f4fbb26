//! SIGTERM with a client that sent its request headers and then stalls on
//! the body: the daemon still exits within the documented 10 s and closes
//! the store cleanly (issue 13 item 8).

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::ops_cli::{Daemon, needs_repair};

/// A TLS connection to the daemon, trusting the CA in its data dir.
pub(crate) fn tls_connect(
    dir: &Path,
    addr: &str,
) -> anyhow::Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_file_iter(dir.join("ca.pem"))? {
        roots.add(c?)?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let name = rustls_pki_types::ServerName::try_from(host.to_string())?;
    let conn = rustls::ClientConnection::new(Arc::new(cfg), name)?;
    let tcp = TcpStream::connect(addr)?;
    Ok(rustls::StreamOwned::new(conn, tcp))
}

#[test]
fn a_client_stalled_on_its_body_does_not_hold_sigterm_past_ten_seconds() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("d");
    let d = Daemon::start(&dir, &[], &[]);

    // Headers promise 1000 bytes; one arrives, then nothing.
    let mut stalled = tls_connect(&dir, &d.https)?;
    write!(
        stalled,
        "POST /idprov/v1/provision HTTP/1.1\r\nHost: idprovd\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{"
    )?;
    stalled.flush()?;
    // Let the request reach its handler (it then waits for the body).
    std::thread::sleep(Duration::from_millis(500));

    // Generous over the documented 10 s, well under the 15 s it took.
    let (code, logs, took) = d.terminate_timed(Duration::from_secs(30));
    eprintln!("SIGTERM to exit with a stalled client: {took:?}");
    drop(stalled);
    assert_eq!(code, 0, "{logs:?}");
    assert!(
        took < Duration::from_millis(11_500),
        "SIGTERM to exit took {took:?}: {logs:?}"
    );
    assert!(
        logs.iter().any(|l| l.contains("store closed")),
        "clean close logged: {logs:?}"
    );
    assert!(!needs_repair(&dir), "the store needed repair after SIGTERM");
    Ok(())
}
