//! Security checks on loopback (issue 7): channel binding, flags, rate
//! limits and the audit chain check. The LAN parts (rogue advertiser, MAC
//! mismatch with real interface MACs, a flood from one host) are in
//! lan_security.rs.

use std::time::Duration;

use anyhow::{Context, Result};
use idprov_proto::device::{ProofEndpoint, paths};
use idprov_tests::security::{BoundConn, edit_audit_detail};
use idprov_tests::{DeviceKey, TestDaemon, oob_entry, post_json};

type R = Result<()>;

fn bound_request(
    d: &TestDaemon,
    key: &DeviceKey,
    device: &str,
    cbt: &str,
) -> idprov_proto::device::ProvisionRequest {
    let proof = key.proof_with_cbt(
        device,
        &d.daemon_id(),
        ProofEndpoint::Provision,
        d.now(),
        cbt,
    );
    key.request(device, proof)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proof_relayed_over_another_tls_connection_is_refused() -> R {
    let d = TestDaemon::start().await?;
    let key = DeviceKey::es256();
    d.oob_key("cb-1", &key).await?;

    // The device talks to a "rogue" (here: its own connection A); the rogue
    // forwards the proof on its own connection B to the real daemon.
    let device_side = BoundConn::connect(d.addr, &d.ca_pem()).await?;
    let mut rogue_side = BoundConn::connect(d.addr, &d.ca_pem()).await?;
    assert_ne!(device_side.binding, rogue_side.binding);
    let relayed = bound_request(&d, &key, "cb-1", &device_side.binding_b64());
    let a = rogue_side.post_json(paths::PROVISION, &relayed).await?;
    assert_eq!((a.status, a.code()), (401, "invalid_proof"), "{:?}", a.body);

    // The same kind of proof on its own connection is accepted.
    let mut own = BoundConn::connect(d.addr, &d.ca_pem()).await?;
    let req = bound_request(&d, &key, "cb-1", &own.binding_b64());
    let ok = own.post_json(paths::PROVISION, &req).await?;
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    let token = ok.token().to_string();

    // Renewal is bound the same way.
    let renew = |cbt: &str| {
        serde_json::json!({
            "token": token,
            "proof": key.proof_with_cbt("cb-1", &d.daemon_id(), ProofEndpoint::Renew, d.now(), cbt),
        })
    };
    let bad = rogue_side
        .post_json(paths::RENEW, &renew(&own.binding_b64()))
        .await?;
    assert_eq!((bad.status, bad.code()), (401, "invalid_proof"));
    let good = own
        .post_json(paths::RENEW, &renew(&own.binding_b64()))
        .await?;
    assert_eq!(good.status, 200, "{:?}", good.body);

    // A cbt that is not 32 bytes of base64url is refused.
    let mut c = BoundConn::connect(d.addr, &d.ca_pem()).await?;
    let junk = c
        .post_json(
            paths::PROVISION,
            &bound_request(&d, &key, "cb-1", "not-a-binding"),
        )
        .await?;
    assert_eq!(junk.status, 401);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_channel_binding_refuses_proofs_without_one() -> R {
    let d = TestDaemon::start_with(|c| c.proof.require_channel_binding = true).await?;
    let key = DeviceKey::es256();
    d.oob_key("cb-2", &key).await?;
    let plain = d.provision("cb-2", &key).await?;
    assert_eq!((plain.status, plain.code()), (401, "invalid_proof"));
    let mut c = BoundConn::connect(d.addr, &d.ca_pem()).await?;
    let req = bound_request(&d, &key, "cb-2", &c.binding_b64());
    let ok = c.post_json(paths::PROVISION, &req).await?;
    assert_eq!(ok.status, 200, "{:?}", ok.body);

    // Adding a key proves two keys; both proofs must be bound as well.
    let new = DeviceKey::es256();
    let plain = d.add_key("cb-2", &key, &new, None).await?;
    assert_eq!((plain.status, plain.code()), (401, "invalid_proof"));
    let mut c = BoundConn::connect(d.addr, &d.ca_pem()).await?;
    let cbt = c.binding_b64();
    let (did, now) = (d.daemon_id(), d.now());
    let add = |current: &str, added: &str| {
        serde_json::json!({
            "device_id": "cb-2",
            "proof": current,
            "public_key": new.public_pem,
            "key_proof": added,
        })
    };
    let bound = |k: &DeviceKey| k.proof_with_cbt("cb-2", &did, ProofEndpoint::AddKey, now, &cbt);
    // One of the two unbound: refused.
    let half = add(
        &bound(&key),
        &new.proof("cb-2", &did, ProofEndpoint::AddKey, now),
    );
    let r = c.post_json(paths::KEYS, &half).await?;
    assert_eq!((r.status, r.code()), (401, "invalid_proof"));
    let mut c = BoundConn::connect(d.addr, &d.ca_pem()).await?;
    let cbt = c.binding_b64();
    let bound = |k: &DeviceKey| k.proof_with_cbt("cb-2", &did, ProofEndpoint::AddKey, now, &cbt);
    let r = c
        .post_json(paths::KEYS, &add(&bound(&key), &bound(&new)))
        .await?;
    assert_eq!(r.status, 200, "{:?}", r.body);
    Ok(())
}

async fn pending_flags(d: &TestDaemon, id: &str) -> Result<Vec<String>> {
    let page = d
        .admin()?
        .pending_list(&idprov_proto::admin::ListQuery {
            q: Some(id.to_string()),
            ..Default::default()
        })
        .await?;
    Ok(page
        .items
        .into_iter()
        .find(|p| p.device_id.as_str() == id)
        .map(|p| p.flags)
        .unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_keys_and_macs_are_flagged_and_held() -> R {
    let d = TestDaemon::start().await?;
    let shared = DeviceKey::es256();
    // Someone queues "x-1" with the key an OOB entry gives "k-1".
    d.oob_key("k-1", &shared).await?;
    let first = d.provision("x-1", &shared).await?;
    assert_eq!(first.status, 202);
    // The genuine device now matches its OOB entry but its key is held by
    // another id: it waits for an administrator instead of being admitted.
    let held = d.provision("k-1", &shared).await?;
    assert_eq!(held.status, 202, "{:?}", held.body);
    assert_eq!(pending_flags(&d, "k-1").await?, vec!["key_reused"]);

    // A MAC an OOB entry binds to "m-1", claimed by "m-2".
    let mac: idprov_proto::MacAddr = "b8:27:eb:00:00:01".parse()?;
    d.oob(vec![oob_entry("m-1", None, Some(mac), None)]).await?;
    let other = d
        .provision_with("m-2", &DeviceKey::es256(), |r| r.mac = Some(mac))
        .await?;
    assert_eq!(other.status, 202);
    assert_eq!(pending_flags(&d, "m-2").await?, vec!["mac_reused"]);

    // A locally administered MAC is recorded, not held (flags.hold).
    let lk = DeviceKey::es256();
    d.oob_key("l-1", &lk).await?;
    let docker_mac: idprov_proto::MacAddr = "02:42:ac:11:00:02".parse()?;
    let local = d
        .provision_with("l-1", &lk, |r| r.mac = Some(docker_mac))
        .await?;
    assert_eq!(local.status, 200, "{:?}", local.body);
    let dev = d.admin()?.device_get(&"l-1".parse()?).await?;
    assert_eq!(dev.flags, vec!["mac_suspicious"]);

    // Asking again while the token is valid: served, and flagged.
    let again = d.provision("l-1", &lk).await?;
    assert_eq!(again.status, 200);
    let dev = d.admin()?.device_get(&"l-1".parse()?).await?;
    assert!(
        dev.flags.contains(&"repeat_provision".to_string()),
        "{:?}",
        dev.flags
    );

    // Every flag is in the audit log.
    let audit = d
        .admin()?
        .audit(&idprov_proto::admin::ListQuery {
            q: Some("flag".into()),
            limit: Some(100),
            ..Default::default()
        })
        .await?;
    let text = serde_json::to_string(&audit.items)?;
    for f in [
        "key_reused",
        "mac_reused",
        "mac_suspicious",
        "repeat_provision",
    ] {
        assert!(text.contains(f), "audit lacks {f}: {text}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_proof_failures_hold_the_next_request() -> R {
    let d = TestDaemon::start().await?;
    let key = DeviceKey::es256();
    d.oob_key("pf-1", &key).await?;
    let wrong = DeviceKey::es256();
    for _ in 0..3 {
        // Signed by another key than the one presented: refused.
        let proof = wrong.proof("pf-1", &d.daemon_id(), ProofEndpoint::Provision, d.now());
        let a = post_json(
            &d.http(),
            &d.endpoint(paths::PROVISION),
            &key.request("pf-1", proof),
        )
        .await?;
        assert_eq!(a.status, 401);
    }
    let next = d.provision("pf-1", &key).await?;
    assert_eq!(next.status, 202, "{:?}", next.body);
    assert_eq!(pending_flags(&d, "pf-1").await?, vec!["proof_failures"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_answer_429_with_retry_after_and_failures_cost_more() -> R {
    let d = TestDaemon::start_with(|c| {
        c.rate_limit.enabled = true;
        c.rate_limit.source_per_second = 1;
        c.rate_limit.source_burst = 10;
        c.rate_limit.failure_cost = 5;
    })
    .await?;
    // Two failures (bad JSON) cost 10 cells: the next request is limited.
    for _ in 0..2 {
        let a = post_json(
            &d.http(),
            &d.endpoint(paths::PROVISION),
            &serde_json::json!({"nonsense": true}),
        )
        .await?;
        assert_eq!(a.status, 400);
    }
    let key = DeviceKey::es256();
    let limited = d.provision("rl-1", &key).await?;
    assert_eq!((limited.status, limited.code()), (429, "rate_limited"));
    let secs: u64 = limited.retry_after.as_deref().unwrap_or("0").parse()?;
    assert!((1..=2).contains(&secs), "Retry-After {secs}");
    // After waiting as told (on the daemon's clock), it goes through.
    d.clock.advance(i64::try_from(secs)?);
    let ok = d.provision("rl-1", &key).await?;
    assert_eq!(ok.status, 202, "{:?}", ok.body);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_device_limit_spares_other_devices() -> R {
    let d = TestDaemon::start_with(|c| {
        c.rate_limit.enabled = true;
        c.rate_limit.device_per_minute = 1;
        c.rate_limit.device_burst = 2;
    })
    .await?;
    let key = DeviceKey::es256();
    d.oob_key("busy-1", &key).await?;
    assert_eq!(d.provision("busy-1", &key).await?.status, 200);
    assert_eq!(d.provision("busy-1", &key).await?.status, 200);
    let third = d.provision("busy-1", &key).await?;
    assert_eq!((third.status, third.code()), (429, "rate_limited"));
    assert!(third.retry_after.is_some());
    let k2 = DeviceKey::es256();
    d.oob_key("calm-1", &k2).await?;
    assert_eq!(d.provision("calm-1", &k2).await?.status, 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_audit_entry_is_found_online_and_offline() -> R {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("data");
    let d = TestDaemon::start_in(&dir).await?;
    let key = DeviceKey::es256();
    d.oob_key("au-1", &key).await?;
    assert_eq!(d.provision("au-1", &key).await?.status, 200);
    d.provision("au-2", &DeviceKey::es256()).await?;
    let r = idprovd::audit_verify::verify_online(&d.admin()?).await?;
    assert!(r.is_intact(), "{r:?}");
    assert!(r.entries >= 3);
    let d = {
        let mut d = d;
        d.stop().await?;
        d
    };
    drop(d);
    // Offline on the stopped daemon's store.
    let mut r = Err(anyhow::anyhow!("store still locked"));
    for _ in 0..50 {
        match idprovd::audit_verify::verify_dir(&dir) {
            Ok(x) => {
                r = Ok(x);
                break;
            }
            Err(idprovd::audit_verify::VerifyError::Running) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    let r = r?;
    assert!(r.is_intact());
    let total = r.entries;

    edit_audit_detail(&dir, 2, "nothing to see here")?;
    let r = idprovd::audit_verify::verify_dir(&dir)?;
    let broken = r.broken.clone().context("the edit is not found")?;
    assert_eq!(broken.seq, 2);
    assert!(broken.reason.contains("edited"), "{}", broken.reason);
    assert_eq!(r.last_good_seq, 1);

    // And through the admin API of the restarted daemon.
    let d = TestDaemon::start_in(&dir).await?;
    let r = idprovd::audit_verify::verify_online(&d.admin()?).await?;
    assert_eq!(r.broken.map(|b| b.seq), Some(2));
    assert!(total >= 3);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idprov_client_binds_its_proofs_to_their_connection() -> R {
    use idprov_client::{Client, KeySigner, Signer, Trust};
    // Proofs without a binding are refused here: the client must send one.
    let d = TestDaemon::start_with(|c| {
        c.proof.require_channel_binding = true;
        c.tokens.lifetime = Duration::from_secs(4);
    })
    .await?;
    let signer = std::sync::Arc::new(KeySigner::generate_p256()?.0);
    d.oob(vec![idprov_proto::admin::OobEntryInput {
        public_key: Some(signer.public_key().pem().to_string()),
        ..oob_entry("client-cb", None, None, None)
    }])
    .await?;
    let client = Client::builder()
        .device_id("client-cb")
        .server(&d.url)
        .trust(Trust::CaFingerprint(d.daemon.pki.ca_fingerprint.clone()))
        .mac(None)
        .signer(signer)
        .build()?;
    let creds = client.provision().await?;
    let renewed = client.renew(&creds).await?;
    assert_ne!(creds.token, renewed.token);
    Ok(())
}

/// Several services behind one gateway, each listed with its own key, share
/// the gateway's MAC: the key the OOB list holds admits each one (flagged
/// `mac_reused`), while a match by MAC alone or by secret is still held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_key_is_admitted_despite_a_shared_mac() -> R {
    let d = TestDaemon::start().await?;
    let gateway: idprov_proto::MacAddr = "b8:27:eb:00:00:42".parse()?;
    let (k1, k2) = (DeviceKey::es256(), DeviceKey::es256());
    d.oob(vec![
        oob_entry("gw-svc-1", Some(&k1), None, None),
        oob_entry("gw-svc-2", Some(&k2), None, None),
        oob_entry("gw-secret", None, None, Some("correct horse battery")),
    ])
    .await?;
    let first = d
        .provision_with("gw-svc-1", &k1, |r| r.mac = Some(gateway))
        .await?;
    assert_eq!(first.status, 200, "{:?}", first.body);
    // Same MAC, another listed ID with its own listed key: admitted, flagged.
    let second = d
        .provision_with("gw-svc-2", &k2, |r| r.mac = Some(gateway))
        .await?;
    assert_eq!(second.status, 200, "{:?}", second.body);
    let dev = d.admin()?.device_get(&"gw-svc-2".parse()?).await?;
    assert_eq!(dev.flags, vec!["mac_reused"]);
    // Admitted by its secret only, with the same MAC: held for a person.
    let by_secret = d
        .provision_with("gw-secret", &DeviceKey::es256(), |r| {
            r.mac = Some(gateway);
            r.secret = Some(idprov_proto::Secret::new("correct horse battery"));
        })
        .await?;
    assert_eq!(by_secret.status, 202, "{:?}", by_secret.body);
    assert_eq!(pending_flags(&d, "gw-secret").await?, vec!["mac_reused"]);
    Ok(())
}
