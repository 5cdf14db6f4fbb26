//! DNS-SD on a private LAN of network namespaces: the daemon on one host,
//! devices (the idprov-client library) on others, joined by a bridge. As
//! root, or each test in a user namespace of its own (see
//! `idprov_tests::netns`); fails, never skips, where neither works.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use idprov_client::{Client, DiscoveryOptions, Event, KeySigner, Signer, Trust};
use idprov_proto::admin::{ListQuery, OobEntryInput, OobUpsertRequest};
use idprov_tests::lan_test;
use idprov_tests::netns::{Lan, LanDaemon, NsRuntime, lan_config};
use tokio::sync::mpsc;

type Events = mpsc::UnboundedReceiver<Event>;

/// A device client on a LAN host with a fresh key, finding the daemon by
/// DNS-SD, pinned to `trust`.
fn device(
    id: &str,
    signer: Arc<KeySigner>,
    trust: Trust,
    state: &std::path::Path,
) -> Result<(Client, Events)> {
    let (tx, rx) = mpsc::unbounded_channel();
    let client = Client::builder()
        .device_id(id)
        .signer(signer)
        .trust(trust)
        .state_dir(state)
        // The builder runs on the test's thread, outside the device's
        // namespace: auto-detection would claim the test machine's MAC, and
        // the daemon would rightly hold the device for a MAC mismatch.
        .mac(None)
        .discovery(DiscoveryOptions {
            timeout: Duration::from_secs(10),
            linger: Duration::from_millis(500),
        })
        .on_event(move |e| {
            let _ = tx.send(e.clone());
        })
        .build()?;
    Ok((client, rx))
}

/// Wait for the first event that `pick` accepts; other events are skipped.
async fn wait_for<T>(
    rx: &mut Events,
    within: Duration,
    what: &str,
    mut pick: impl FnMut(&Event) -> Option<T>,
) -> Result<T> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(e)) => {
                if let Some(t) = pick(&e) {
                    return Ok(t);
                }
            }
            Ok(None) => bail!("event stream closed while waiting for {what}"),
            Err(_) => bail!("no {what} within {within:?}"),
        }
    }
}

/// List `signer` out of band on the daemon, by public key.
async fn preapprove(rt: &NsRuntime, d: &LanDaemon, id: &str, signer: &KeySigner) -> Result<()> {
    let admin = d.admin()?;
    let entry = OobEntryInput {
        device_id: id.parse()?,
        public_key: Some(signer.public_key().pem().to_string()),
        key_format: Some(signer.public_key().format()),
        mac: None,
        secret: None,
        setup_verifier: None,
        expires_at: None,
        note: None,
    };
    rt.run(async move {
        admin
            .oob_upsert(&OobUpsertRequest {
                entries: vec![entry],
                replace: false,
                dry_run: false,
            })
            .await
    })
    .await??;
    Ok(())
}

/// Ask the daemon (from its own host) whether a token is active.
async fn token_active(rt: &NsRuntime, d: &LanDaemon, token: String) -> Result<bool> {
    let http = idprov_tests::pinned_client(&d.ca_pem);
    let url = format!(
        "https://127.0.0.1:{}{}",
        d.cfg.listen.port(),
        idprov_proto::device::paths::TOKEN_STATUS
    );
    let body: serde_json::Value = rt
        .run(async move {
            http.post(url)
                .json(&serde_json::json!({ "token": token }))
                .send()
                .await?
                .error_for_status()?
                .json()
                .await
        })
        .await??;
    Ok(body["active"] == true)
}

#[tokio::test(flavor = "multi_thread")]
async fn preapproved_device_discovers_provisions_renews_and_survives_restarts() -> Result<()> {
    lan_test!(preapproved_device_discovers_provisions_renews_and_survives_restarts);
    let lan = Lan::new(&["hub", "dev1"])?;
    let hub = lan.runtime("hub")?;
    let dev = lan.runtime("dev1")?;
    let tmp = tempfile::tempdir()?;
    let mut daemon = LanDaemon::start(&hub, lan_config(&tmp.path().join("hub"), "hub-a")).await?;

    let signer = Arc::new(KeySigner::generate_p256()?.0);
    preapprove(&hub, &daemon, "sensor-1", &signer).await?;
    let trust = Trust::CaFingerprint(daemon.ca_fingerprint.clone());
    let state = tmp.path().join("dev1-state");
    let (client, mut events) = device("sensor-1", signer.clone(), trust.clone(), &state)?;

    // No server address: DNS-SD finds the daemon at its LAN address.
    let c = client.clone();
    let keeper = dev
        .run(async move { c.start().await })
        .await?
        .context("provisioning")?;
    let server = wait_for(
        &mut events,
        Duration::from_secs(1),
        "discovery",
        |e| match e {
            Event::Discovered { server, .. } => Some(server.clone()),
            _ => None,
        },
    )
    .await?;
    assert_eq!(server, format!("https://{}:8445", lan.addr("hub")));
    assert!(token_active(&hub, &daemon, keeper.current().token).await?);

    // Tokens live 4 s: the keeper renews at about half-life, twice.
    for n in 0..2 {
        wait_for(&mut events, Duration::from_secs(8), "renewal", |e| {
            matches!(e, Event::Renewed { .. }).then_some(())
        })
        .await
        .with_context(|| format!("renewal {}", n + 1))?;
    }
    let before = keeper.current().token;

    // The daemon restarts (same data dir and port); the device keeps renewing.
    daemon.restart(&hub).await?;
    wait_for(
        &mut events,
        Duration::from_secs(10),
        "renewal after restart",
        |e| matches!(e, Event::Renewed { .. }).then_some(()),
    )
    .await?;
    let after = keeper.current().token;
    assert_ne!(before, after);
    assert!(token_active(&hub, &daemon, after.clone()).await?);

    // The device restarts: it reloads its credentials and does not provision.
    drop(keeper);
    drop(client);
    let (client, mut events) = device("sensor-1", signer, trust, &state)?;
    let c = client.clone();
    let creds = dev.run(async move { c.provision().await }).await??;
    let reused = wait_for(
        &mut events,
        Duration::from_secs(1),
        "provisioned",
        |e| match e {
            Event::Provisioned { reused, .. } => Some(*reused),
            _ => None,
        },
    )
    .await?;
    assert!(
        reused,
        "a restarted device must reuse its saved credentials"
    );
    assert!(creds.expires_at >= client.server_now());
    daemon.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_device_waits_pending_until_an_administrator_approves() -> Result<()> {
    lan_test!(unknown_device_waits_pending_until_an_administrator_approves);
    let lan = Lan::new(&["hub", "dev1"])?;
    let hub = lan.runtime("hub")?;
    let dev = lan.runtime("dev1")?;
    let tmp = tempfile::tempdir()?;
    let daemon = LanDaemon::start(&hub, lan_config(&tmp.path().join("hub"), "hub-p")).await?;

    let signer = Arc::new(KeySigner::generate_p256()?.0);
    let (client, mut events) = device(
        "newcomer-7",
        signer,
        Trust::CaFingerprint(daemon.ca_fingerprint.clone()),
        &tmp.path().join("dev1-state"),
    )?;
    let expected_code = client.verification_code();
    let c = client.clone();
    let provisioning = dev.spawn(async move { c.provision().await });

    // The device polls as pending and shows the code the administrator sees.
    let code = wait_for(
        &mut events,
        Duration::from_secs(15),
        "pending",
        |e| match e {
            Event::Pending {
                verification_code, ..
            } => Some(verification_code.clone()),
            _ => None,
        },
    )
    .await?;
    assert_eq!(code, expected_code);
    // Told to ask again at once, it does, and the daemon holds that request
    // for the decision (protocol §5.5): the poll is recorded first.
    let admin = daemon.admin()?;
    hub.run(async move {
        for _ in 0..500 {
            let page = admin.pending_list(&ListQuery::default()).await?;
            if page
                .items
                .iter()
                .any(|p| p.device_id.as_str() == "newcomer-7" && p.attempts >= 2)
            {
                return anyhow::Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        anyhow::bail!("the device never asked again")
    })
    .await??;
    assert!(!provisioning.is_finished());

    let admin = daemon.admin()?;
    let view = hub
        .run(async move {
            let page = admin.pending_list(&ListQuery::default()).await?;
            let p = page
                .items
                .into_iter()
                .find(|p| p.device_id.as_str() == "newcomer-7")
                .context("device not in the pending queue")?;
            assert_eq!(p.verification_code, expected_code);
            admin.approve(&p.device_id, p.revision).await?;
            anyhow::Ok(p)
        })
        .await??;
    assert_eq!(view.device_id.as_str(), "newcomer-7");

    // Without a restart, its next poll returns the token.
    let creds = tokio::time::timeout(Duration::from_secs(10), provisioning)
        .await
        .context("no token within 10 s of approval")???;
    assert_eq!(creds.device_id.as_str(), "newcomer-7");
    assert!(token_active(&hub, &daemon, creds.token).await?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn with_two_daemons_the_client_uses_the_pinned_one_and_reports_the_other() -> Result<()> {
    lan_test!(with_two_daemons_the_client_uses_the_pinned_one_and_reports_the_other);
    let lan = Lan::new(&["hub1", "hub2", "dev1"])?;
    let hub1 = lan.runtime("hub1")?;
    let hub2 = lan.runtime("hub2")?;
    let dev = lan.runtime("dev1")?;
    let tmp = tempfile::tempdir()?;
    let d1 = LanDaemon::start(&hub1, lan_config(&tmp.path().join("h1"), "hub-one")).await?;
    let d2 = LanDaemon::start(&hub2, lan_config(&tmp.path().join("h2"), "hub-two")).await?;
    assert_ne!(d1.ca_fingerprint, d2.ca_fingerprint);

    let signer = Arc::new(KeySigner::generate_p256()?.0);
    preapprove(&hub2, &d2, "sensor-2", &signer).await?;
    let (client, mut events) = device(
        "sensor-2",
        signer.clone(),
        Trust::CaFingerprint(d2.ca_fingerprint.clone()),
        &tmp.path().join("dev1-state"),
    )?;
    let c = client.clone();
    let creds = dev.run(async move { c.provision().await }).await??;
    let (server, others) = wait_for(
        &mut events,
        Duration::from_secs(1),
        "discovery",
        |e| match e {
            Event::Discovered { server, others, .. } => Some((server.clone(), others.clone())),
            _ => None,
        },
    )
    .await?;
    assert_eq!(server, format!("https://{}:8445", lan.addr("hub2")));
    assert_eq!(others.len(), 1, "the other daemon is reported: {others:?}");
    assert_eq!(
        others[0].ca_fingerprint.as_deref(),
        Some(d1.ca_fingerprint.as_str())
    );
    assert_eq!(others[0].daemon_id.as_deref(), Some(d1.daemon_id.as_str()));
    assert!(token_active(&hub2, &d2, creds.token).await?);

    // Trust on first use with two daemons on the network is refused.
    let (tofu, _events) = device(
        "sensor-3",
        signer,
        Trust::TrustOnFirstUse,
        &tmp.path().join("dev1-tofu"),
    )?;
    let err = dev
        .run(async move { tofu.provision().await })
        .await?
        .err()
        .context("TOFU with two daemons must fail")?;
    assert!(
        matches!(err, idprov_client::Error::AmbiguousTofu { count: 2, .. }),
        "{err}"
    );
    Ok(())
}

/// Python's zeroconf browses the LAN, prints each service change as a JSON
/// line, and keeps listening until killed.
const ZEROCONF_BROWSER: &str = r#"
import json, sys, time
from zeroconf import ServiceBrowser, ServiceStateChange, Zeroconf
zc = Zeroconf()
def on_change(zeroconf, service_type, name, state_change):
    out = {"event": state_change.name, "name": name}
    if state_change is not ServiceStateChange.Removed:
        info = zeroconf.get_service_info(service_type, name, timeout=3000)
        if info is not None:
            out["port"] = info.port
            out["addresses"] = info.parsed_addresses()
            out["txt"] = {k.decode(): (v or b"").decode() for k, v in info.properties.items()}
    print(json.dumps(out), flush=True)
ServiceBrowser(zc, "_idprov._tcp.local.", handlers=[on_change])
while True:
    time.sleep(0.1)
"#;

async fn next(
    rx: &mut mpsc::UnboundedReceiver<serde_json::Value>,
    within: Duration,
    what: &str,
) -> Result<serde_json::Value> {
    tokio::time::timeout(within, rx.recv())
        .await
        .ok()
        .flatten()
        .with_context(|| format!("zeroconf reported no {what} within {within:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn python_zeroconf_sees_the_service_its_updates_and_its_goodbye() -> Result<()> {
    lan_test!(python_zeroconf_sees_the_service_its_updates_and_its_goodbye);
    use std::io::BufRead;
    let lan = Lan::new(&["hub", "dev1"])?;
    let hub = lan.runtime("hub")?;
    let tmp = tempfile::tempdir()?;
    let mut daemon = LanDaemon::start(&hub, lan_config(&tmp.path().join("hub"), "hub-z")).await?;

    let mut child = lan
        .command("dev1", "python3")
        .args(["-c", ZEROCONF_BROWSER])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("starting python3 (the LAN tests need python3 with `pip install zeroconf`)")?;
    let stdout = child.stdout.take().context("child stdout")?;
    let (tx, mut lines) = mpsc::unbounded_channel::<serde_json::Value>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(|l| l.ok())
        {
            if let Ok(v) = serde_json::from_str(&line) {
                let _ = tx.send(v);
            }
        }
    });
    let result = async {
        let added = next(&mut lines, Duration::from_secs(10), "service").await?;
        assert_eq!(added["event"], "Added", "{added}");
        assert_eq!(added["name"], "hub-z._idprov._tcp.local.");
        assert_eq!(added["port"], 8445);
        assert_eq!(
            added["addresses"],
            serde_json::json!([lan.addr("hub").to_string()])
        );
        assert_eq!(added["txt"]["v"], "1");
        assert_eq!(added["txt"]["path"], "/idprov/v1");
        assert_eq!(added["txt"]["ca"], daemon.ca_fingerprint.as_str());
        assert_eq!(added["txt"]["id"], daemon.daemon_id.as_str());

        // A new address on the interface is announced.
        lan.ip_on("hub", &["addr", "add", "10.213.0.200/24", "dev", "eth0"])?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let v = next(&mut lines, left, "re-announcement with the new address").await?;
            let has_new = v["addresses"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == "10.213.0.200"));
            if has_new {
                // Re-announced under its own name, not renamed by a conflict.
                assert_eq!(v["name"], "hub-z._idprov._tcp.local.", "{v}");
                break;
            }
        }

        // Shutdown withdraws the record (mDNS goodbye), seen at once.
        daemon.stop().await?;
        loop {
            let v = next(&mut lines, Duration::from_secs(3), "goodbye").await?;
            if v["event"] == "Removed" {
                assert_eq!(v["name"], "hub-z._idprov._tcp.local.");
                break;
            }
        }
        anyhow::Ok(())
    }
    .await;
    let _ = child.kill();
    let out = child.wait_with_output()?;
    if result.is_err() {
        eprintln!("python stderr:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    result
}
