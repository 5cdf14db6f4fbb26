//! idprov-client against a real daemon on 127.0.0.1 with a fixed server URL
//! (mDNS off): trust pinning, server time, rejection, persistence, renewal
//! and revocation. DNS-SD itself is covered by `lan_dnssd.rs`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use idprov_client::{Client, ClientBuilder, Error, Event, KeySigner, Signer, Trust};
use idprov_proto::admin::{ListQuery, OobEntryInput};
use idprov_tests::{DeviceKey, TestDaemon};

type Log = Arc<Mutex<Vec<Event>>>;

fn builder(d: &TestDaemon, id: &str, trust: Trust, log: &Log) -> Result<ClientBuilder> {
    let log = log.clone();
    Ok(Client::builder()
        .device_id(id)
        .server(&d.url)
        .trust(trust)
        .mac(None)
        .on_event(move |e| {
            if let Ok(mut l) = log.lock() {
                l.push(e.clone());
            }
        }))
}

fn fingerprint(d: &TestDaemon) -> Trust {
    Trust::CaFingerprint(d.daemon.pki.ca_fingerprint.clone())
}

async fn preapprove(d: &TestDaemon, id: &str, signer: &KeySigner) -> Result<()> {
    d.oob(vec![OobEntryInput {
        device_id: id.parse()?,
        public_key: Some(signer.public_key().pem().to_string()),
        key_format: None,
        mac: None,
        secret: None,
        setup_verifier: None,
        expires_at: None,
        note: None,
    }])
    .await
}

fn events(log: &Log) -> Vec<Event> {
    log.lock().map(|l| l.clone()).unwrap_or_default()
}

#[tokio::test]
async fn provisions_renews_saves_and_reuses_credentials() -> Result<()> {
    let d = TestDaemon::start().await?;
    let tmp = tempfile::tempdir()?;
    let signer = Arc::new(KeySigner::generate_p256()?.0);
    preapprove(&d, "dev-1", &signer).await?;
    let log = Log::default();
    let client = builder(&d, "dev-1", fingerprint(&d), &log)?
        .signer(signer.clone())
        .state_dir(tmp.path())
        .build()?;

    let creds = client.provision().await?;
    assert_eq!(creds.device_id.as_str(), "dev-1");
    assert_eq!(creds.key_id, signer.public_key().thumbprint());
    let renewed = client.renew(&creds).await?;
    assert_ne!(renewed.token, creds.token);

    // Saved atomically, owner-only, and reused by a restarted device.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(tmp.path().join("credentials.json"))?
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let log2 = Log::default();
    let again = builder(&d, "dev-1", fingerprint(&d), &log2)?
        .signer(signer)
        .state_dir(tmp.path())
        .build()?
        .provision()
        .await?;
    assert_eq!(again.token, renewed.token);
    assert!(
        events(&log2)
            .iter()
            .any(|e| matches!(e, Event::Provisioned { reused: true, .. }))
    );
    Ok(())
}

#[tokio::test]
async fn a_device_with_a_wrong_clock_uses_the_server_time() -> Result<()> {
    let d = TestDaemon::start().await?;
    // The daemon is two days ahead of this machine: a proof stamped with the
    // local clock would be far outside the 10-minute skew.
    d.clock.advance(2 * 86_400);
    let signer = Arc::new(KeySigner::generate_p256()?.0);
    preapprove(&d, "dev-clock", &signer).await?;
    let log = Log::default();
    let client = builder(&d, "dev-clock", fingerprint(&d), &log)?
        .signer(signer)
        .build()?;
    let creds = client.provision().await?;
    assert!((creds.issued_at - d.now()).abs() <= 2);
    assert!((client.server_now() - d.now()).abs() <= 2);
    client.renew(&creds).await?;
    Ok(())
}

#[tokio::test]
async fn a_wrong_pinned_fingerprint_is_untrusted_and_sends_nothing() -> Result<()> {
    let d = TestDaemon::start().await?;
    let signer = Arc::new(KeySigner::generate_p256()?.0);
    let log = Log::default();
    let client = builder(&d, "dev-x", Trust::CaFingerprint("ab".repeat(32)), &log)?
        .signer(signer)
        .build()?;
    let err = client.provision().await.err().context("must fail")?;
    assert!(matches!(err, Error::Untrusted { .. }), "{err}");
    let pending = d.admin()?.pending_list(&ListQuery::default()).await?;
    assert!(pending.items.is_empty(), "no request may reach the daemon");
    Ok(())
}

#[tokio::test]
async fn trust_on_first_use_pins_the_first_ca_and_refuses_another() -> Result<()> {
    let d1 = TestDaemon::start().await?;
    let tmp = tempfile::tempdir()?;
    let signer = Arc::new(KeySigner::generate_p256()?.0);
    preapprove(&d1, "dev-t", &signer).await?;
    let log = Log::default();
    builder(&d1, "dev-t", Trust::TrustOnFirstUse, &log)?
        .signer(signer.clone())
        .state_dir(tmp.path())
        .build()?
        .provision()
        .await?;
    let pinned = events(&log).iter().find_map(|e| match e {
        Event::TrustedOnFirstUse { fingerprint } => Some(fingerprint.clone()),
        _ => None,
    });
    assert_eq!(
        pinned.as_deref(),
        Some(d1.daemon.pki.ca_fingerprint.as_str())
    );

    // Another daemon (another CA) is refused with the same state directory.
    let d2 = TestDaemon::start().await?;
    preapprove(&d2, "dev-t", &signer).await?;
    std::fs::remove_file(tmp.path().join("credentials.json"))?;
    let err = builder(&d2, "dev-t", Trust::TrustOnFirstUse, &Log::default())?
        .signer(signer)
        .state_dir(tmp.path())
        .build()?
        .provision()
        .await
        .err()
        .context("a second CA must be refused")?;
    assert!(matches!(err, Error::Untrusted { .. }), "{err}");
    Ok(())
}

#[tokio::test]
async fn a_refused_device_gets_a_rejection_error() -> Result<()> {
    let d = TestDaemon::start().await?;
    let listed = KeySigner::generate_p256()?.0;
    preapprove(&d, "dev-r", &listed).await?;
    // The device presents another key than the one listed for its id.
    let other = Arc::new(KeySigner::generate_p256()?.0);
    let err = builder(&d, "dev-r", fingerprint(&d), &Log::default())?
        .signer(other)
        .build()?
        .provision()
        .await
        .err()
        .context("must be refused")?;
    assert!(matches!(err, Error::Rejected { .. }), "{err}");
    assert!(!err.is_retryable());
    Ok(())
}

#[tokio::test]
async fn an_rsa_key_file_provisions_with_rs256() -> Result<()> {
    let d = TestDaemon::start().await?;
    let key = DeviceKey::rs256();
    let tmp = tempfile::tempdir()?;
    let path = tmp.path().join("rsa.pem");
    std::fs::write(&path, &key.private_pem)?;
    d.oob_key("dev-rsa", &key).await?;
    let client = builder(&d, "dev-rsa", fingerprint(&d), &Log::default())?
        .key_file(&path)
        .build()?;
    assert_eq!(client.key_thumbprint(), key.kid());
    let creds = client.provision().await?;
    assert_eq!(creds.key_id, key.kid());
    Ok(())
}

#[tokio::test]
async fn the_keeper_renews_and_stops_when_the_device_is_revoked() -> Result<()> {
    let d = TestDaemon::start_with(|c| c.tokens.lifetime = Duration::from_secs(2)).await?;
    let signer = Arc::new(KeySigner::generate_p256()?.0);
    preapprove(&d, "dev-k", &signer).await?;
    let log = Log::default();
    let client = builder(&d, "dev-k", fingerprint(&d), &log)?
        .signer(signer)
        .build()?;
    let keeper = client.start().await?;
    let mut tokens = keeper.subscribe();
    let first = keeper.current().token;
    tokio::time::timeout(Duration::from_secs(5), tokens.changed())
        .await
        .context("no renewal within 5 s")??;
    assert_ne!(tokens.borrow().token, first);

    d.admin()?
        .device_revoke(&"dev-k".parse()?, None, Some("test".into()))
        .await?;
    let err = tokio::time::timeout(Duration::from_secs(10), keeper.finished())
        .await
        .context("keeper did not stop after revocation")?;
    assert!(matches!(err, Error::Rejected { .. }), "{err}");
    assert!(
        events(&log)
            .iter()
            .any(|e| matches!(e, Event::Revoked { .. }))
    );
    Ok(())
}
