//! The admin API: authentication per administrator, conflicts between
//! administrators, atomic OOB upserts, the event stream, the audit chain,
//! and what survives a restart.

use std::time::Duration;

use idprov_proto::ErrorCode;
use idprov_proto::admin::{AdminEvent, ListQuery, OobUpsertRequest};
use idprov_tests::{DeviceKey, TestDaemon, oob_entry};
use idprovd::store::verify_chain;

type R = anyhow::Result<()>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_calls_need_a_valid_administrator() -> R {
    let d = TestDaemon::start().await?;
    let http = d.http();
    for (path, auth) in [
        ("/idprov/v1/admin/pending", None),
        ("/idprov/v1/admin/devices", Some("Bearer nonsense")),
        (
            "/idprov/v1/admin/oob",
            Some("Bearer idpa.admin.wrongsecretwrongsecretwrongsecret00000"),
        ),
        ("/idprov/v1/admin/audit", Some("Basic YWRtaW46YWRtaW4=")),
    ] {
        let mut req = http.get(d.endpoint(path));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let r = req.send().await?;
        assert_eq!(r.status().as_u16(), 401, "{path}");
        let body: serde_json::Value = r.json().await?;
        assert_eq!(body["code"], "unauthorized");
    }
    // A removed administrator is refused at once.
    let admin = d.admin()?;
    assert_eq!(admin.whoami().await?.name, "admin");
    idprovd::admins::remove(&d.dir, "admin", idprovd::admins::LastAdmin::MayRemove)?;
    let err = admin
        .whoami()
        .await
        .expect_err("removed admin must be refused");
    assert_eq!(err.code(), Some(ErrorCode::Unauthorized));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_administrators_deciding_at_once_one_wins() -> R {
    let d = TestDaemon::start().await?;
    let second = idprovd::admins::add(&d.dir, "bob", &d.url, &d.ca_pem(), "", d.now())?;
    let alice = d.admin()?;
    let bob = idprov_admin_client::AdminClient::new(&second)?;
    assert_eq!(bob.whoami().await?.name, "bob");

    for round in 0..5 {
        let id = format!("race-{round}");
        let k = DeviceKey::es256();
        assert_eq!(d.provision(&id, &k).await?.status, 202);
        let p = alice
            .pending_list(&ListQuery {
                q: Some(id.clone()),
                ..Default::default()
            })
            .await?
            .items
            .remove(0);
        let (a, b) = tokio::join!(
            alice.approve(&p.device_id, p.revision),
            bob.reject(&p.device_id, p.revision, None)
        );
        assert!(a.is_ok() != b.is_ok(), "exactly one wins: {a:?} {b:?}");
        let loser = a.err().or(b.err()).expect("one error");
        assert_eq!(loser.code(), Some(ErrorCode::Conflict), "{loser}");
    }
    // A stale revision is a conflict too.
    let k = DeviceKey::es256();
    d.provision("stale", &k).await?;
    let p = alice
        .pending_list(&ListQuery {
            q: Some("stale".into()),
            ..Default::default()
        })
        .await?
        .items
        .remove(0);
    d.clock.advance(2);
    d.provision("stale", &k).await?; // bumps the revision
    let err = alice
        .approve(&p.device_id, p.revision)
        .await
        .expect_err("stale revision");
    assert_eq!(err.code(), Some(ErrorCode::Conflict));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oob_upsert_is_atomic_idempotent_and_needs_replace() -> R {
    let d = TestDaemon::start().await?;
    let admin = d.admin()?;
    let (k1, k2) = (DeviceKey::es256(), DeviceKey::rs256());
    let good = vec![
        oob_entry("o-1", Some(&k1), None, None),
        oob_entry("o-2", Some(&k2), None, None),
    ];
    let req = |entries, replace, dry_run| OobUpsertRequest {
        entries,
        replace,
        dry_run,
    };

    // One bad entry: nothing stored, every problem listed.
    let mut bad = good.clone();
    bad.push(oob_entry("o-3", None, None, None));
    let mut dup = oob_entry("o-1", None, Some("02:00:00:00:00:09".parse()?), None);
    dup.note = Some("dup".into());
    bad.push(dup);
    let err = admin
        .oob_upsert(&req(bad, false, false))
        .await
        .expect_err("invalid batch");
    match &err {
        idprov_admin_client::AdminError::Api { body, .. } => {
            let idx: Vec<usize> = body.details.iter().map(|e| e.index).collect();
            assert_eq!(idx, vec![2, 3], "{:?}", body.details);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(admin.oob_list(&ListQuery::default()).await?.total, 0);

    let dry = admin.oob_upsert(&req(good.clone(), false, true)).await?;
    assert_eq!(dry.added.len(), 2);
    assert_eq!(
        admin.oob_list(&ListQuery::default()).await?.total,
        0,
        "dry run stores nothing"
    );
    let r = admin.oob_upsert(&req(good.clone(), false, false)).await?;
    assert_eq!(r.added.len(), 2);
    let r = admin.oob_upsert(&req(good.clone(), false, false)).await?;
    assert_eq!(
        (r.added.len(), r.changed.len(), r.unchanged),
        (0, 0, 2),
        "idempotent"
    );

    let changed = vec![oob_entry("o-1", Some(&k2), None, None)];
    assert!(
        admin
            .oob_upsert(&req(changed.clone(), false, false))
            .await
            .is_err()
    );
    let r = admin.oob_upsert(&req(changed, true, false)).await?;
    assert_eq!(r.changed.len(), 1);

    // One MAC under two ids is refused.
    let m = "02:11:22:33:44:55".parse()?;
    admin
        .oob_upsert(&req(
            vec![oob_entry("m-1", None, Some(m), None)],
            false,
            false,
        ))
        .await?;
    assert!(
        admin
            .oob_upsert(&req(
                vec![oob_entry("m-2", None, Some(m), None)],
                false,
                false
            ))
            .await
            .is_err()
    );

    admin.oob_remove(&"o-2".parse()?).await?;
    assert_eq!(admin.oob_list(&ListQuery::default()).await?.total, 2);
    Ok(())
}

/// An entry without its secret keeps the stored one while key and MAC stay
/// (an exported list never carries secrets), in a single upsert just as in
/// an import session; with another key and `replace` it is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_omitted_secret_is_kept_while_key_and_mac_stay() -> R {
    let d = TestDaemon::start().await?;
    let admin = d.admin()?;
    let (k1, k2) = (DeviceKey::es256(), DeviceKey::es256());
    let upsert = |entries, replace| OobUpsertRequest {
        entries,
        replace,
        dry_run: false,
    };
    let has_secret = |list: &idprov_proto::admin::Page<idprov_proto::admin::OobEntryView>| {
        list.items
            .iter()
            .find(|e| e.device_id.as_str() == "s-1")
            .map(|e| e.has_secret)
    };
    let with_secret = oob_entry("s-1", Some(&k1), None, Some("one-time-secret-1"));
    admin.oob_upsert(&upsert(vec![with_secret], false)).await?;

    let r = admin
        .oob_upsert(&upsert(
            vec![oob_entry("s-1", Some(&k1), None, None)],
            false,
        ))
        .await?;
    assert_eq!((r.changed.len(), r.unchanged), (0, 1));
    let list = admin.oob_list(&ListQuery::default()).await?;
    assert_eq!(has_secret(&list), Some(true));
    // The kept secret still has to be presented.
    assert_eq!(d.provision("s-1", &k1).await?.status, 403);

    let r = admin
        .oob_upsert(&upsert(vec![oob_entry("s-1", Some(&k2), None, None)], true))
        .await?;
    assert_eq!(r.changed.len(), 1);
    let list = admin.oob_list(&ListQuery::default()).await?;
    assert_eq!(has_secret(&list), Some(false));
    assert_eq!(d.provision("s-1", &k2).await?.status, 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_stream_live_and_audit_chain_holds() -> R {
    let d = TestDaemon::start().await?;
    let admin = d.admin()?;
    let mut events = admin.events().await?;
    let k = DeviceKey::es256();
    assert_eq!(d.provision("live-1", &k).await?.status, 202);
    let ev = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match events.recv().await {
                Some(AdminEvent::PendingUpserted { pending }) => return Some(pending),
                Some(_) => continue,
                None => return None,
            }
        }
    })
    .await?
    .expect("a pending event");
    assert_eq!(ev.device_id.as_str(), "live-1");
    admin.approve(&ev.device_id, ev.revision).await?;
    let removed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(AdminEvent::PendingRemoved { device_id }) = events.recv().await {
                return device_id;
            }
        }
    })
    .await?;
    assert_eq!(removed.as_str(), "live-1");

    // The audit log pages and chains.
    let mut all = Vec::new();
    let mut q = ListQuery {
        limit: Some(1),
        ..Default::default()
    };
    loop {
        let page = admin.audit(&q).await?;
        all.extend(page.items);
        match page.next {
            Some(n) => q.after = Some(n),
            None => break,
        }
    }
    assert!(all.len() >= 2);
    assert!(verify_chain(idprovd::store::GENESIS_HASH, &all).is_ok());
    let mut tampered = all.clone();
    tampered[0].detail = "edited".into();
    assert_eq!(
        verify_chain(idprovd::store::GENESIS_HASH, &tampered),
        Err(tampered[0].seq)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_pending_devices_and_replay_state() -> R {
    let d = TestDaemon::start().await?;
    let (known, unknown) = (DeviceKey::es256(), DeviceKey::es256());
    d.oob_key("keep-1", &known).await?;
    let proof = known.proof(
        "keep-1",
        &d.daemon_id(),
        idprov_proto::device::ProofEndpoint::Provision,
        d.now(),
    );
    let req = known.request("keep-1", proof);
    let url = idprov_proto::device::paths::PROVISION;
    let first = idprov_tests::post_json(&d.http(), &d.endpoint(url), &req).await?;
    assert_eq!(first.status, 200);
    assert_eq!(d.provision("wait-1", &unknown).await?.status, 202);

    let d = d.restart().await?;
    let replay = idprov_tests::post_json(&d.http(), &d.endpoint(url), &req).await?;
    assert_eq!(
        (replay.status, replay.code()),
        (401, "invalid_proof"),
        "replay state survives"
    );
    let admin = d.admin()?;
    let pending = admin.pending_list(&ListQuery::default()).await?;
    assert_eq!(pending.items.len(), 1);
    assert_eq!(admin.device_get(&"keep-1".parse()?).await?.tokens_issued, 1);
    // The token issued before the restart is still recorded and valid.
    let s = idprov_tests::post_json(
        &d.http(),
        &d.endpoint(idprov_proto::device::paths::TOKEN_STATUS),
        &serde_json::json!({"token": first.token()}),
    )
    .await?;
    assert_eq!(s.body["active"], true);
    assert_eq!(d.renew("keep-1", &known, first.token()).await?.status, 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_batch_fits_and_a_larger_one_is_refused() -> R {
    let d = TestDaemon::start().await?;
    let admin = d.admin()?;
    let k = DeviceKey::es256();
    let entries: Vec<_> = (0..idprov_proto::admin::MAX_OOB_BATCH)
        .map(|i| oob_entry(&format!("batch-{i:05}"), Some(&k), None, None))
        .collect();
    let r = admin
        .oob_upsert(&OobUpsertRequest {
            entries: entries.clone(),
            replace: false,
            dry_run: false,
        })
        .await?;
    assert_eq!(r.added.len(), idprov_proto::admin::MAX_OOB_BATCH);
    let page = admin
        .oob_list(&ListQuery {
            limit: Some(1000),
            ..Default::default()
        })
        .await?;
    assert_eq!((page.items.len(), page.total), (1000, 10_000));
    assert!(page.next.is_some());
    let mut more = entries;
    more.push(oob_entry("one-too-many", Some(&k), None, None));
    let err = admin
        .oob_upsert(&OobUpsertRequest {
            entries: more,
            replace: false,
            dry_run: false,
        })
        .await
        .expect_err("over the batch limit");
    assert_eq!(err.code(), Some(ErrorCode::BadRequest));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mac_can_move_between_entries_in_one_batch() -> R {
    let d = TestDaemon::start().await?;
    let admin = d.admin()?;
    let (m1, m2) = ("02:00:00:00:aa:01".parse()?, "02:00:00:00:aa:02".parse()?);
    admin
        .oob_upsert(&OobUpsertRequest {
            entries: vec![oob_entry("mv-b", None, Some(m1), None)],
            replace: false,
            dry_run: false,
        })
        .await?;
    // A takes B's MAC while B moves to another one; A is listed first.
    let batch = vec![
        oob_entry("mv-a", None, Some(m1), None),
        oob_entry("mv-b", None, Some(m2), None),
    ];
    let dry = admin
        .oob_upsert(&OobUpsertRequest {
            entries: batch.clone(),
            replace: true,
            dry_run: true,
        })
        .await?;
    let real = admin
        .oob_upsert(&OobUpsertRequest {
            entries: batch,
            replace: true,
            dry_run: false,
        })
        .await?;
    assert_eq!(dry.added, real.added);
    assert_eq!(dry.changed, real.changed);
    // The index follows: a third device cannot take either MAC now.
    for m in [m1, m2] {
        let e = admin
            .oob_upsert(&OobUpsertRequest {
                entries: vec![oob_entry("mv-c", None, Some(m), None)],
                replace: false,
                dry_run: false,
            })
            .await
            .expect_err("MAC in use");
        assert_eq!(e.code(), Some(ErrorCode::BadRequest));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_bodies_carry_the_request_id() -> R {
    let d = TestDaemon::start().await?;
    let r = d
        .http()
        .get(d.endpoint("/idprov/v1/admin/pending"))
        .send()
        .await?;
    let header = r
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body: serde_json::Value = r.json().await?;
    assert!(header.is_some());
    assert_eq!(body["request_id"].as_str(), header.as_deref());
    assert!(
        idprovd::admins::add(&d.dir, "ops.alice", &d.url, "", "", 0).is_err(),
        "'.' is not allowed in names"
    );
    Ok(())
}
