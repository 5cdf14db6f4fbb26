//! idprov-client with client certificates (F11, `client_certificate(true)`)
//! against a real daemon on 127.0.0.1: the CSR made from the device key gets
//! a certificate that openssl accepts for client TLS, it is saved next to the
//! credentials and reloaded after a restart, and the keeper renews it with
//! the token.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use idprov_client::{Client, ClientBuilder, Credentials, Event, KeySigner, Signer, Trust};
use idprov_proto::admin::OobEntryInput;
use idprov_tests::x509::{openssl, serial_of};
use idprov_tests::{DeviceKey, TestDaemon};

type Log = Arc<Mutex<Vec<Event>>>;

fn builder(d: &TestDaemon, id: &str, log: &Log) -> Result<ClientBuilder> {
    let log = log.clone();
    Ok(Client::builder()
        .device_id(id)
        .server(&d.url)
        .trust(Trust::CaFingerprint(d.daemon.pki.ca_fingerprint.clone()))
        .mac(None)
        .client_certificate(true)
        .on_event(move |e| {
            if let Ok(mut l) = log.lock() {
                l.push(e.clone());
            }
        }))
}

async fn preapprove(d: &TestDaemon, id: &str, public_pem: &str) -> Result<()> {
    d.oob(vec![OobEntryInput {
        device_id: id.parse()?,
        public_key: Some(public_pem.to_string()),
        key_format: None,
        mac: None,
        secret: None,
        setup_verifier: None,
        expires_at: None,
        note: None,
    }])
    .await
}

/// `openssl verify -purpose sslclient` of the credentials' certificate
/// against the daemon's CA; returns the serial openssl reads.
fn verify(dir: &Path, d: &TestDaemon, c: &Credentials, name: &str) -> Result<String> {
    let Some(cert) = &c.certificate else {
        bail!("credentials carry no certificate");
    };
    std::fs::write(dir.join("ca.pem"), d.ca_pem())?;
    std::fs::write(dir.join(name), cert)?;
    let (ok, out) = openssl(
        dir,
        &["verify", "-CAfile", "ca.pem", "-purpose", "sslclient", name],
    )?;
    if !(ok && out.contains(": OK")) {
        bail!("openssl verify refused {name}: {out}");
    }
    let serial = serial_of(dir, name)?;
    // The client reads the same serial as openssl.
    assert_eq!(idprov_client::certificate_serial(cert)?, serial);
    assert_eq!(c.ca_chain.first(), Some(&d.ca_pem()));
    Ok(serial)
}

fn saved_certificate(state: &Path) -> Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let path = state.join("certificate.pem");
    let mode = std::fs::metadata(&path)
        .with_context(|| format!("{path:?}"))?
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{path:?} mode");
    Ok(std::fs::read_to_string(path)?)
}

#[tokio::test]
async fn certificate_is_issued_saved_reloaded_and_renewed() -> Result<()> {
    let d = TestDaemon::start_with(|c| c.tokens.lifetime = Duration::from_secs(3)).await?;
    let work = tempfile::tempdir()?;
    let state = work.path().join("state");
    let signer = Arc::new(KeySigner::generate_p256()?.0);
    preapprove(&d, "cert-dev", signer.public_key().pem()).await?;

    let log = Log::default();
    let client = builder(&d, "cert-dev", &log)?
        .signer(signer.clone())
        .state_dir(&state)
        .build()?;
    let first = client.provision().await?;
    let serial = verify(work.path(), &d, &first, "first.pem")?;
    let on_disk = saved_certificate(&state)?;
    let cert = first.certificate.clone().unwrap_or_default();
    assert!(on_disk.starts_with(cert.trim_end()), "{on_disk}");
    assert!(on_disk.contains(d.ca_pem().trim_end()), "chain not saved");
    drop(client);

    // A restarted device reloads the certificate with the token.
    let log2 = Log::default();
    let client = builder(&d, "cert-dev", &log2)?
        .signer(signer)
        .state_dir(&state)
        .build()?;
    let keeper = client.start().await?;
    let reloaded = keeper.current();
    assert_eq!(reloaded.certificate, first.certificate);
    assert_eq!(reloaded.token, first.token);
    assert!(
        log2.lock()
            .map(|l| l
                .iter()
                .any(|e| matches!(e, Event::Provisioned { reused: true, .. })))
            .unwrap_or(false),
        "saved credentials were not reused"
    );

    // The keeper renews the token and, with it, the certificate.
    let mut rx = keeper.subscribe();
    tokio::time::timeout(Duration::from_secs(10), rx.changed())
        .await
        .context("no renewal within 10 s")??;
    let renewed = rx.borrow().clone();
    assert_ne!(renewed.token, first.token);
    let new_serial = verify(work.path(), &d, &renewed, "renewed.pem")?;
    assert_ne!(new_serial, serial, "renewal kept the old certificate");
    let on_disk = saved_certificate(&state)?;
    let cert = renewed.certificate.clone().unwrap_or_default();
    assert!(on_disk.starts_with(cert.trim_end()), "renewed not saved");
    keeper.stop();
    Ok(())
}

#[tokio::test]
async fn rsa_key_file_gets_a_certificate_and_old_credentials_are_upgraded() -> Result<()> {
    let d = TestDaemon::start().await?;
    let work = tempfile::tempdir()?;
    let state = work.path().join("state");
    let key = DeviceKey::rs256();
    let key_file = work.path().join("key.pem");
    std::fs::write(&key_file, &key.private_pem)?;
    preapprove(&d, "cert-rsa", &key.public_pem).await?;

    // Provisioned first without the option: no certificate, no file.
    let plain = Client::builder()
        .device_id("cert-rsa")
        .server(&d.url)
        .trust(Trust::CaFingerprint(d.daemon.pki.ca_fingerprint.clone()))
        .mac(None)
        .key_file(&key_file)
        .state_dir(&state)
        .build()?
        .provision()
        .await?;
    assert!(plain.certificate.is_none());
    assert!(!state.join("certificate.pem").exists());

    // Turned on: the saved token is not enough, the device asks again.
    let log = Log::default();
    let c = builder(&d, "cert-rsa", &log)?
        .key_file(&key_file)
        .state_dir(&state)
        .build()?
        .provision()
        .await?;
    assert_ne!(c.token, plain.token);
    verify(work.path(), &d, &c, "rsa.pem")?;
    saved_certificate(&state)?;
    Ok(())
}
