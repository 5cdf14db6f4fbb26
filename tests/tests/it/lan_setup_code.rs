//! Setup codes on a private LAN of network namespaces (issue 17): a device
//! with only its code finds daemons by DNS-SD; a rogue daemon that
//! advertises too (and sorts first), and a rogue that relays to the real
//! daemon, are refused by the device, which says why; the device ends with
//! the real daemon's CA pinned, and the real daemon alerts on the relay.
//! As root, or each test in a user namespace of its own (see
//! `idprov_tests::netns`); fails, never skips, where neither works.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use idprov_client::{Client, DiscoveryOptions, Event, KeySigner, SetupCode, Trust};
use idprov_pake::{KdfParams, StoredVerifier};
use idprov_proto::admin::{AlertKind, OobEntryInput, OobUpsertRequest};
use idprov_tests::lan_test;
use idprov_tests::netns::{LAN_PORT, Lan, LanDaemon, NsRuntime, lan_config};
use idprov_tests::relay::Relay;
use idprov_tests::security::{RogueAdvertiser, wait_for_advert};
use tokio::sync::mpsc;

const KDF: KdfParams = KdfParams {
    memory_kib: 1024,
    iterations: 1,
    parallelism: 1,
};

/// Give `id` a setup code on `d`.
async fn enrol(rt: &NsRuntime, d: &LanDaemon, id: &str, code: &SetupCode) -> Result<()> {
    let entry = OobEntryInput {
        setup_verifier: Some(StoredVerifier::for_code(code, id, KDF)?.encode()),
        ..idprov_tests::oob_entry(id, None, None, None)
    };
    let admin = d.admin()?;
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

fn device(
    id: &str,
    code: SetupCode,
    state: &std::path::Path,
) -> Result<(Client, mpsc::UnboundedReceiver<Event>)> {
    let (tx, rx) = mpsc::unbounded_channel();
    let client = Client::builder()
        .device_id(id)
        .signer(Arc::new(KeySigner::generate_p256()?.0))
        .trust(Trust::SetupCode(code))
        .state_dir(state)
        .mac(None)
        .discovery(DiscoveryOptions {
            timeout: Duration::from_secs(10),
            linger: Duration::from_secs(2),
        })
        .on_event(move |e| {
            let _ = tx.send(e.clone());
        })
        .build()?;
    Ok((client, rx))
}

/// The setup-code events seen so far: (server, refused reason or None).
fn setup_events(rx: &mut mpsc::UnboundedReceiver<Event>) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        match e {
            Event::SetupCodeRefused { server, reason } => out.push((server, Some(reason))),
            Event::SetupCodeConfirmed { server, .. } => out.push((server, None)),
            _ => {}
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rogue_daemon_advertising_first_is_refused_and_the_real_ca_pinned() -> Result<()> {
    lan_test!(a_rogue_daemon_advertising_first_is_refused_and_the_real_ca_pinned);
    let lan = Lan::new(&["hub", "rogue", "dev1"])?;
    let (hub, rogue, dev) = (
        lan.runtime("hub")?,
        lan.runtime("rogue")?,
        lan.runtime("dev1")?,
    );
    let tmp = tempfile::tempdir()?;
    // The rogue is a complete idprovd that lists the device too, with a
    // code it guessed; its instance name sorts before the real one's.
    let fake = LanDaemon::start(&rogue, lan_config(&tmp.path().join("rogue"), "a-rogue")).await?;
    let real = LanDaemon::start(&hub, lan_config(&tmp.path().join("hub"), "z-hub")).await?;
    let code = SetupCode::generate();
    enrol(&hub, &real, "label-1", &code).await?;
    enrol(&rogue, &fake, "label-1", &SetupCode::generate()).await?;
    wait_for_advert(&dev, "a-rogue", Duration::from_secs(10)).await?;
    wait_for_advert(&dev, "z-hub", Duration::from_secs(10)).await?;

    let state = tmp.path().join("dev1-state");
    let (client, mut events) = device("label-1", code, &state)?;
    let c = client.clone();
    let creds = dev
        .run(async move { c.provision().await })
        .await?
        .context("provisioning with the setup code")?;
    assert_eq!(creds.device_id.as_str(), "label-1");
    let seen = setup_events(&mut events);
    let rogue_url = format!("https://{}:{LAN_PORT}", lan.addr("rogue"));
    let hub_url = format!("https://{}:{LAN_PORT}", lan.addr("hub"));
    // The rogue was tried first and refused, saying why; then the real one.
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].0, rogue_url);
    let why = seen[0].1.clone().unwrap_or_default();
    assert!(
        why.contains("failed the setup code's key confirmation"),
        "{why}"
    );
    assert_eq!(seen[1], (hub_url, None));
    let pinned = idprov_client::StateDir::open(&state)?
        .load_ca()?
        .map(|ca| ca.fingerprint().to_string());
    assert_eq!(pinned, Some(real.ca_fingerprint.clone()));
    assert_ne!(real.ca_fingerprint, fake.ca_fingerprint);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_advertising_first_is_refused_and_the_real_daemon_alerts() -> Result<()> {
    lan_test!(a_relay_advertising_first_is_refused_and_the_real_daemon_alerts);
    let lan = Lan::new(&["hub", "rogue", "dev1"])?;
    let (hub, rogue, dev) = (
        lan.runtime("hub")?,
        lan.runtime("rogue")?,
        lan.runtime("dev1")?,
    );
    let tmp = tempfile::tempdir()?;
    let real = LanDaemon::start(&hub, lan_config(&tmp.path().join("hub"), "z-hub")).await?;
    let code = SetupCode::generate();
    enrol(&hub, &real, "label-2", &code).await?;
    // A TLS terminator on the rogue host relaying to the real daemon, and
    // its advertisement.
    let (hub_addr, ca) = (
        std::net::SocketAddr::from((lan.addr("hub"), LAN_PORT)),
        real.ca_pem.clone(),
    );
    let bind = std::net::SocketAddr::from((lan.addr("rogue"), LAN_PORT));
    let relay = rogue
        .run(async move { Relay::start(bind, hub_addr, &ca).await })
        .await??;
    let advert =
        RogueAdvertiser::start(&rogue, "a-relay", "rogue", lan.addr("rogue"), LAN_PORT).await?;
    wait_for_advert(&dev, "a-relay", Duration::from_secs(10)).await?;
    wait_for_advert(&dev, "z-hub", Duration::from_secs(10)).await?;

    let state = tmp.path().join("dev1-state");
    let (client, mut events) = device("label-2", code, &state)?;
    let c = client.clone();
    let creds = dev
        .run(async move { c.provision().await })
        .await?
        .context("provisioning with the setup code")?;
    assert_eq!(creds.device_id.as_str(), "label-2");
    let seen = setup_events(&mut events);
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].0, relay.url);
    let why = seen[0].1.clone().unwrap_or_default();
    assert!(
        why.contains("relays to the daemon over another TLS connection"),
        "{why}"
    );
    let pinned = idprov_client::StateDir::open(&state)?
        .load_ca()?
        .map(|ca| ca.fingerprint().to_string());
    assert_eq!(pinned, Some(real.ca_fingerprint.clone()));

    // The real daemon saw the relayed exchange go unconfirmed, from the
    // rogue's address.
    let admin = real.admin()?;
    let alerts = hub.run(async move { admin.alerts().await }).await??;
    let relayed: Vec<_> = alerts
        .items
        .iter()
        .filter(|a| a.kind == AlertKind::SetupCodeUnconfirmed)
        .collect();
    assert_eq!(relayed.len(), 1, "{:?}", alerts.items);
    assert_eq!(relayed[0].instance, "label-2");
    assert_eq!(relayed[0].addresses, vec![lan.addr("rogue").to_string()]);
    advert.stop().await;
    Ok(())
}
