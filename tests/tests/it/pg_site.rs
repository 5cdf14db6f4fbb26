//! Daemons on a PostgreSQL site, through the real interfaces (HTTPS device
//! and admin APIs, the admin event stream), each test on its own throwaway
//! cluster: one daemon provisions, approves and renews as on redb; two
//! daemons on one database keep every single-use rule across the site, see
//! each other's changes live, and serve one identity.

use std::time::Duration;

use idprov_proto::ErrorCode;
use idprov_proto::admin::{AdminEvent, ListQuery};
use idprov_proto::device::{ProofEndpoint, paths};
use idprov_tests::site::PgSite;
use idprov_tests::{DeviceKey, TestDaemon, oob_entry, post_json};
use idprovd::store::verify_chain;
use serde_json::json;

type R = anyhow::Result<()>;

async fn all_audit(d: &TestDaemon) -> anyhow::Result<Vec<idprov_proto::admin::AuditEntry>> {
    let admin = d.admin()?;
    let mut all = Vec::new();
    let mut q = ListQuery {
        limit: Some(200),
        ..Default::default()
    };
    loop {
        let page = admin.audit(&q).await?;
        all.extend(page.items);
        match page.next {
            Some(n) => q.after = Some(n),
            None => return Ok(all),
        }
    }
}

async fn pending_revision(d: &TestDaemon, id: &str) -> anyhow::Result<u64> {
    let page = d
        .admin()?
        .pending_list(&ListQuery {
            q: Some(id.to_string()),
            ..Default::default()
        })
        .await?;
    match page.items.first() {
        Some(p) => Ok(p.revision),
        None => anyhow::bail!("{id} is not pending"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_daemon_provisions_approves_and_renews() -> R {
    let site = PgSite::start().await?;
    let d = TestDaemon::start_with(|c| {
        site.configure(c);
        c.tokens.lifetime = Duration::from_secs(10);
    })
    .await?;
    // A known key: approved at once.
    let k = DeviceKey::es256();
    d.oob_key("pg-known", &k).await?;
    let a = d.provision("pg-known", &k).await?;
    assert_eq!(a.status, 200, "{:?}", a.body);
    d.clock.advance(6);
    let renewed = d.renew("pg-known", &k, a.token()).await?;
    assert_eq!(renewed.status, 200, "{:?}", renewed.body);
    assert_ne!(renewed.token(), a.token());
    // An unknown device waits, is approved, gets its token.
    let u = DeviceKey::es256();
    assert_eq!(d.provision("pg-new", &u).await?.status, 202);
    let rev = pending_revision(&d, "pg-new").await?;
    d.admin()?.approve(&"pg-new".parse()?, rev).await?;
    d.clock.advance(2);
    let b = d.provision("pg-new", &u).await?;
    assert_eq!(b.status, 200, "{:?}", b.body);
    // The same proof again is a replay.
    let proof = k.proof(
        "pg-known",
        &d.daemon_id(),
        ProofEndpoint::Provision,
        d.now(),
    );
    let first = post_json(
        &d.http(),
        &d.endpoint(paths::PROVISION),
        &k.request("pg-known", proof.clone()),
    )
    .await?;
    assert_eq!(first.status, 200, "{:?}", first.body);
    let again = post_json(
        &d.http(),
        &d.endpoint(paths::PROVISION),
        &k.request("pg-known", proof),
    )
    .await?;
    assert_eq!(again.status, 401, "{:?}", again.body);
    // What happened is on one verifiable chain, and survives a restart.
    let chain = all_audit(&d).await?;
    assert!(chain.len() >= 3, "{chain:?}");
    assert!(verify_chain(idprovd::store::GENESIS_HASH, &chain).is_ok());
    let d = d.restart().await?;
    let dev = d.admin()?.device_get(&"pg-new".parse()?).await?;
    assert_eq!(dev.device_id.as_str(), "pg-new");
    assert_eq!(all_audit(&d).await?.len(), chain.len());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_two_daemons_keep_single_use_rules_across_the_site() -> R {
    let site = PgSite::start().await?;
    let a = site.first().await?;
    let b = site.join(&a).await?;
    assert_eq!(a.daemon_id(), b.daemon_id(), "one site identity");
    assert_eq!(a.ca_pem(), b.ca_pem(), "one CA");

    // Two administrators, one on each daemon, approve the same device at
    // once: exactly one wins, the other gets 409.
    for round in 0..4 {
        let id = format!("race-{round}");
        let k = DeviceKey::es256();
        assert_eq!(b.provision(&id, &k).await?.status, 202);
        let rev = pending_revision(&a, &id).await?;
        let (alice, bob) = (a.admin()?, b.admin()?);
        let did: idprov_proto::DeviceId = id.parse()?;
        let (x, y) = tokio::join!(alice.approve(&did, rev), bob.approve(&did, rev));
        assert!(x.is_ok() != y.is_ok(), "exactly one wins: {x:?} {y:?}");
        let loser = x
            .err()
            .or(y.err())
            .ok_or_else(|| anyhow::anyhow!("no loser"))?;
        assert_eq!(loser.code(), Some(ErrorCode::Conflict), "{loser}");
        // The device polling daemon B gets its token.
        a.clock.advance(2);
        let got = b.provision(&id, &k).await?;
        assert_eq!(got.status, 200, "{:?}", got.body);
    }

    // One one-time secret presented to both daemons at once (two devices
    // that both learnt it): exactly one is admitted.
    for round in 0..4 {
        let id = format!("secret-{round}");
        a.oob(vec![oob_entry(&id, None, None, Some("s3cret-one-time"))])
            .await?;
        let (k1, k2) = (DeviceKey::es256(), DeviceKey::es256());
        let secret = || Some(idprov_proto::Secret::new("s3cret-one-time"));
        let (x, y) = tokio::join!(
            a.provision_with(&id, &k1, |r| r.secret = secret()),
            b.provision_with(&id, &k2, |r| r.secret = secret())
        );
        let (x, y) = (x?, y?);
        let admitted = [x.status, y.status].iter().filter(|s| **s == 200).count();
        assert_eq!(
            admitted, 1,
            "exactly one admitted: {:?} {:?}",
            x.body, y.body
        );
    }

    // One proof (one jti) sent to both daemons at once: accepted once.
    let k = DeviceKey::es256();
    a.oob_key("jti-dev", &k).await?;
    for _ in 0..4 {
        let proof = k.proof("jti-dev", &a.daemon_id(), ProofEndpoint::Provision, a.now());
        let req = k.request("jti-dev", proof);
        let (ha, hb) = (a.http(), b.http());
        let (ua, ub) = (a.endpoint(paths::PROVISION), b.endpoint(paths::PROVISION));
        let (x, y) = tokio::join!(post_json(&ha, &ua, &req), post_json(&hb, &ub, &req));
        let (x, y) = (x?, y?);
        let ok = [x.status, y.status].iter().filter(|s| **s == 200).count();
        assert_eq!(ok, 1, "one proof accepted once: {:?} {:?}", x.body, y.body);
        a.clock.advance(1);
    }

    // A token from one daemon renews at the other; a revocation made on one
    // is refused on the other at the next request.
    let t = a.provision("jti-dev", &k).await?;
    assert_eq!(t.status, 200, "{:?}", t.body);
    a.clock.advance(1);
    let r = b.renew("jti-dev", &k, t.token()).await?;
    assert_eq!(r.status, 200, "{:?}", r.body);
    a.admin()?
        .device_revoke(&"jti-dev".parse()?, None, Some("lost".into()))
        .await?;
    a.clock.advance(1);
    let refused = b.renew("jti-dev", &k, r.token()).await?;
    assert_eq!(refused.status, 401, "{:?}", refused.body);
    let s = post_json(
        &b.http(),
        &b.endpoint(paths::TOKEN_STATUS),
        &json!({"token": r.token()}),
    )
    .await?;
    assert_eq!(s.body["active"], false, "{:?}", s.body);

    // Both daemons wrote to one chain, and it verifies from either.
    let from_a = all_audit(&a).await?;
    let from_b = all_audit(&b).await?;
    assert_eq!(from_a, from_b);
    assert!(verify_chain(idprovd::store::GENESIS_HASH, &from_a).is_ok());
    let seqs: Vec<u64> = from_a.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=from_a.len() as u64).collect::<Vec<_>>());
    // `idprovd audit verify` reads the site database while both daemons
    // run, and names an entry edited in the database.
    let (dir, pg) = (a.dir.clone(), a.cfg.store.postgres.clone());
    let report = tokio::task::spawn_blocking(move || idprovd::audit_verify::verify_site(&dir, &pg))
        .await??;
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.entries, from_a.len() as u64);
    tokio::task::block_in_place(|| {
        site.cluster
            .sql_in(&site.db, "UPDATE audit SET detail = 'edited' WHERE seq = 2")
    })
    .map_err(anyhow::Error::msg)?;
    let (dir, pg) = (b.dir.clone(), b.cfg.store.postgres.clone());
    let report = tokio::task::spawn_blocking(move || idprovd::audit_verify::verify_site(&dir, &pg))
        .await??;
    assert_eq!(report.broken.as_ref().map(|b| b.seq), Some(2), "{report:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_event_stream_carries_the_other_daemons_changes() -> R {
    let site = PgSite::start().await?;
    let a = site.first().await?;
    let b = site.join(&a).await?;
    let mut on_b = b.admin()?.events().await?;
    // A device queues at daemon A; the TUI on daemon B sees it within a
    // second.
    let k = DeviceKey::es256();
    let started = std::time::Instant::now();
    assert_eq!(a.provision("seen-on-b", &k).await?.status, 202);
    let seen = tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            match on_b.recv().await {
                Some(AdminEvent::PendingUpserted { pending }) => return Some(pending),
                Some(_) => continue,
                None => return None,
            }
        }
    })
    .await?
    .ok_or_else(|| anyhow::anyhow!("daemon B's event stream ended"))?;
    assert_eq!(seen.device_id.as_str(), "seen-on-b");
    eprintln!("change on A seen on B after {:?}", started.elapsed());
    // An approval on B reaches the device waiting on A.
    b.admin()?.approve(&seen.device_id, seen.revision).await?;
    a.clock.advance(2);
    assert_eq!(a.provision("seen-on-b", &k).await?.status, 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_lost_database_answers_503_then_recovers_by_itself() -> R {
    let mut site = PgSite::start().await?;
    let d = site.first().await?;
    let k = DeviceKey::es256();
    d.oob_key("survivor", &k).await?;
    assert_eq!(d.provision("survivor", &k).await?.status, 200);
    // The pool shows on /metrics.
    let addr = d
        .metrics_addr
        .ok_or_else(|| anyhow::anyhow!("metrics enabled in tests"))?;
    let text = d
        .http()
        .get(format!("http://{addr}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    assert!(text.contains("idprov_store_pool_max 8"), "{text}");

    // PostgreSQL goes away (fast shutdown: the pool's connections are cut).
    tokio::task::block_in_place(|| site.cluster.stop()).map_err(anyhow::Error::msg)?;
    d.clock.advance(1);
    let down = d.provision("survivor", &k).await?;
    assert_eq!(
        (down.status, down.code()),
        (503, "unavailable"),
        "{:?}",
        down.body
    );
    assert!(down.retry_after.is_some());
    let ready = d.http().get(format!("http://{addr}/readyz")).send().await?;
    assert_eq!(ready.status(), 503);

    // It comes back: the daemon serves again without a restart.
    tokio::task::block_in_place(|| site.cluster.restart()).map_err(anyhow::Error::msg)?;
    let mut status = 0;
    for _ in 0..100 {
        d.clock.advance(1);
        status = d.provision("survivor", &k).await?.status;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200, "the daemon did not recover by itself");
    let ready = d.http().get(format!("http://{addr}/readyz")).send().await?;
    assert_eq!(ready.status(), 200);
    Ok(())
}
