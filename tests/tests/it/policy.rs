//! Auto-approval rules and enrollment windows (issue 16 items 2, 3),
//! through HTTPS: each match field and action, order, the dry run, the
//! revision, the security rule on held flags; a window admits matching
//! devices and no others, closes at its time (ManualClock), at its count,
//! early on request and after a flood of refused proofs, and survives a
//! restart.

use anyhow::{Context, Result};
use idprov_admin_client::AdminClient;
use idprov_proto::MacAddr;
use idprov_proto::admin::ListQuery;
use idprov_proto::policy::{DryRunRequest, Rule, RuleAction, WindowClosed, WindowOpen};
use idprov_tests::{Answer, DeviceKey, TestDaemon};

type R = Result<()>;

fn rule(json: serde_json::Value) -> Result<Rule> {
    serde_json::from_value(json).context("test rule")
}

async fn add(admin: &AdminClient, json: serde_json::Value) -> Result<()> {
    let rev = admin.rules().await?.revision;
    admin.rule_add(rev, rule(json)?, None).await?;
    Ok(())
}

/// The audit entries about `target`, as (actor, action).
async fn audit_of(d: &TestDaemon, target: &str) -> Result<Vec<(String, String)>> {
    let q = ListQuery {
        limit: Some(1000),
        ..ListQuery::default()
    };
    let page = d.admin()?.audit(&q).await?;
    Ok(page
        .items
        .into_iter()
        .filter(|e| e.target.as_deref() == Some(target))
        .map(|e| (e.actor, e.action))
        .collect())
}

fn with_mac(mac: MacAddr) -> impl FnOnce(&mut idprov_proto::device::ProvisionRequest) {
    move |r| r.mac = Some(mac)
}

/// A daily time window around the daemon's now (or away from it).
fn time_around(now: i64, inside: bool) -> String {
    let m = now.rem_euclid(86_400) / 60;
    let (a, b) = if inside {
        (m - 60, m + 60)
    } else {
        (m + 60, m + 120)
    };
    let f = |x: i64| {
        let x = x.rem_euclid(1440);
        format!("{:02}:{:02}", x / 60, x % 60)
    };
    format!("{}-{}", f(a), f(b))
}

fn admitted(a: &Answer) -> bool {
    a.status == 200 && !a.token().is_empty()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_rule_field_and_action_decides_in_order() -> R {
    let d = TestDaemon::start_with(|c| {
        c.policy.rules = vec![
            serde_json::from_value(serde_json::json!(
                {"name": "cfg-hold", "action": "hold", "device_id": "kitchen-9"}))
            .unwrap_or_else(|e| panic!("{e}")),
        ];
    })
    .await?;
    let admin = d.admin()?;
    let now = d.now();
    let rules = [
        serde_json::json!({"name": "kitchen", "action": "approve", "device_id": "kitchen-*"}),
        serde_json::json!({"name": "no-rsa", "action": "reject", "key_type": "rs256"}),
        serde_json::json!({"name": "vendor", "action": "approve", "mac_oui": "00:1a:2b"}),
        serde_json::json!({"name": "far", "action": "approve", "device_id": "src-*", "source": "10.0.0.0/8"}),
        serde_json::json!({"name": "near", "action": "approve", "device_id": "net-*", "source": "127.0.0.0/8"}),
        serde_json::json!({"name": "later", "action": "approve", "device_id": "t-*", "time": time_around(now, false)}),
        serde_json::json!({"name": "now", "action": "approve", "device_id": "u-*", "time": time_around(now, true)}),
    ];
    for r in rules {
        add(&admin, r).await?;
    }
    let list = admin.rules().await?;
    assert_eq!(list.config.len(), 1);
    assert_eq!(list.rules.len(), 7);
    assert_eq!(list.revision, 7);

    let es = DeviceKey::es256;
    let a = d.provision("kitchen-1", &es()).await?;
    assert!(admitted(&a), "{:?}", a.body);
    assert!(
        audit_of(&d, "kitchen-1")
            .await?
            .contains(&("rule:kitchen".to_string(), "device_admitted".to_string()))
    );
    let dev = admin.device_get(&"kitchen-1".parse()?).await?;
    assert_eq!(dev.admitted_by, "rule:kitchen");
    // The token is a real one.
    let key = es();
    let a = d.provision("kitchen-2", &key).await?;
    assert_eq!(d.renew("kitchen-2", &key, a.token()).await?.status, 200);

    // The configured hold comes first: kitchen-9 waits for a person.
    assert_eq!(d.provision("kitchen-9", &es()).await?.status, 202);
    // key type
    let a = d.provision("sensor-rsa", &DeviceKey::rs256()).await?;
    assert_eq!((a.status, a.code()), (403, "refused"), "{:?}", a.body);
    let dev = admin.device_get(&"sensor-rsa".parse()?).await?;
    assert_eq!(dev.admitted_by, "rule:no-rsa");
    assert!(
        audit_of(&d, "sensor-rsa")
            .await?
            .contains(&("rule:no-rsa".to_string(), "device_rejected".to_string()))
    );
    // Rejected for good: the next request is refused as well.
    assert_eq!(
        d.provision("sensor-rsa", &DeviceKey::rs256()).await?.status,
        403
    );
    // MAC OUI
    let vendor = MacAddr([0x00, 0x1a, 0x2b, 9, 9, 9]);
    let other = MacAddr([0x00, 0x1a, 0x2c, 9, 9, 9]);
    assert!(admitted(
        &d.provision_with("m-1", &es(), with_mac(vendor)).await?
    ));
    assert_eq!(
        d.provision_with("m-2", &es(), with_mac(other))
            .await?
            .status,
        202
    );
    assert_eq!(
        d.provision("m-3", &es()).await?.status,
        202,
        "no MAC, no OUI match"
    );
    // source range (the tests come from 127.0.0.1)
    assert_eq!(d.provision("src-1", &es()).await?.status, 202);
    assert!(admitted(&d.provision("net-1", &es()).await?));
    // time of day
    assert_eq!(d.provision("t-1", &es()).await?.status, 202);
    assert!(admitted(&d.provision("u-1", &es()).await?));

    // Order: a hold placed first keeps net-* for a person.
    let rev = admin.rules().await?.revision;
    admin
        .rule_add(
            rev,
            rule(serde_json::json!({"name": "hold-net", "action": "hold", "device_id": "net-*"}))?,
            Some(0),
        )
        .await?;
    let net2 = es();
    assert_eq!(d.provision("net-2", &net2).await?.status, 202);
    // Moved after "near", it no longer decides: net-2's next request is admitted.
    let rev = admin.rules().await?.revision;
    let list = admin.rule_move(rev, &"hold-net".parse()?, 7).await?;
    let names: Vec<_> = list.rules.iter().map(|r| r.name.to_string()).collect();
    assert_eq!(names[4], "near");
    assert_eq!(names[7], "hold-net");
    d.clock.advance(5);
    assert!(admitted(&d.provision("net-2", &net2).await?));

    // A stale revision is a conflict; an unknown name is not found; two
    // rules with one name, or a name taken by the configuration, are refused.
    let stale = admin
        .rule_delete(rev, &"kitchen".parse()?)
        .await
        .err()
        .context("a stale revision was accepted")?;
    assert_eq!(stale.code().map(|c| c.as_str()), Some("conflict"));
    let rev = admin.rules().await?.revision;
    let err = admin
        .rule_add(
            rev,
            rule(serde_json::json!({"name": "cfg-hold", "action": "hold"}))?,
            None,
        )
        .await
        .err()
        .context("a configured rule's name was taken")?;
    assert_eq!(err.code().map(|c| c.as_str()), Some("bad_request"));
    let err = admin
        .rule_delete(rev, &"nope".parse()?)
        .await
        .err()
        .context("deleted a rule that does not exist")?;
    assert_eq!(err.code().map(|c| c.as_str()), Some("not_found"));
    let list = admin.rule_delete(rev, &"kitchen".parse()?).await?;
    assert!(list.rules.iter().all(|r| r.name.as_str() != "kitchen"));
    assert_eq!(d.provision("kitchen-3", &es()).await?.status, 202);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dry_run_names_the_pending_devices_a_rule_would_decide() -> R {
    let d = TestDaemon::start().await?;
    let admin = d.admin()?;
    for id in ["lab-1", "lab-2", "hall-1"] {
        assert_eq!(d.provision(id, &DeviceKey::es256()).await?.status, 202);
    }
    let lab = rule(serde_json::json!({"name": "lab", "action": "approve", "device_id": "lab-*"}))?;
    let out = admin
        .rules_dry_run(&DryRunRequest {
            rule: Some(lab.clone()),
            name: None,
        })
        .await?;
    assert_eq!(out.checked, 3);
    let mut ids: Vec<_> = out.items.iter().map(|i| i.device_id.to_string()).collect();
    ids.sort();
    assert_eq!(ids, ["lab-1", "lab-2"]);
    assert!(
        out.items
            .iter()
            .all(|i| i.decided_by == "rule:lab" && i.action == RuleAction::Approve)
    );
    // Nothing was decided by the dry run.
    assert_eq!(admin.pending_list(&ListQuery::default()).await?.total, 3);
    // The whole policy: a stored rule, then an open window.
    admin.rule_add(0, lab, None).await?;
    admin
        .window_open(&WindowOpen {
            device_id: Some("hall-*".parse()?),
            ..WindowOpen::default()
        })
        .await?;
    let out = admin.rules_dry_run(&DryRunRequest::default()).await?;
    let mut got: Vec<_> = out
        .items
        .iter()
        .map(|i| (i.device_id.to_string(), i.decided_by.clone()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("hall-1".to_string(), "window:1".to_string()),
            ("lab-1".to_string(), "rule:lab".to_string()),
            ("lab-2".to_string(), "rule:lab".to_string())
        ]
    );
    // By name; a rule given inline and by name at once is a bad request.
    let out = admin
        .rules_dry_run(&DryRunRequest {
            rule: None,
            name: Some("lab".parse()?),
        })
        .await?;
    assert_eq!(out.items.len(), 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approve_rule_never_admits_a_held_flag_it_does_not_name() -> R {
    let d = TestDaemon::start().await?;
    let admin = d.admin()?;
    // One key under two IDs: the second raises key_reused (held by default).
    let shared = DeviceKey::es256();
    assert_eq!(d.provision("gw-a", &shared).await?.status, 202);
    add(
        &admin,
        serde_json::json!({"name": "all", "action": "approve", "device_id": "gw-*"}),
    )
    .await?;
    let a = d.provision("gw-b", &shared).await?;
    assert_eq!(
        a.status, 202,
        "a plain approve rule admitted a key_reused request: {:?}",
        a.body
    );
    // A window does not admit it either.
    admin.window_open(&WindowOpen::default()).await?;
    d.clock.advance(5);
    assert_eq!(d.provision("gw-b", &shared).await?.status, 202);
    // A rule that names the flag does.
    let rev = admin.rules().await?.revision;
    admin
        .rule_add(
            rev,
            rule(serde_json::json!({"name": "reused-ok", "action": "approve", "device_id": "gw-b", "flags": ["key_reused"]}))?,
            Some(0),
        )
        .await?;
    d.clock.advance(5);
    let a = d.provision("gw-b", &shared).await?;
    assert!(admitted(&a), "{:?}", a.body);
    let dev = admin.device_get(&"gw-b".parse()?).await?;
    assert_eq!(dev.admitted_by, "rule:reused-ok");
    assert!(
        dev.flags.iter().any(|f| f == "key_reused"),
        "{:?}",
        dev.flags
    );
    // A rule may not name a flag that is never raised on requests.
    let rev = admin.rules().await?.revision;
    let bad = serde_json::json!({"name": "x", "action": "approve", "flags": ["key_conflict"]});
    let err = admin
        .rule_add(rev, rule(bad)?, None)
        .await
        .err()
        .context("accepted")?;
    assert_eq!(err.code().map(|c| c.as_str()), Some("bad_request"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_admits_matching_devices_until_its_count_and_its_time() -> R {
    let mut d = TestDaemon::start_with(|c| {
        c.policy.window_max = std::time::Duration::from_secs(600);
    })
    .await?;
    let admin = d.admin()?;
    let mut events = admin.events().await?;
    let w = admin
        .window_open(&WindowOpen {
            duration_secs: Some(120),
            device_id: Some("kitchen-*".parse()?),
            source: Some("127.0.0.0/8".parse()?),
            max_devices: Some(2),
        })
        .await?;
    assert_eq!((w.id, w.closes_at - w.opened_at), (1, 120));
    let es = DeviceKey::es256;
    assert_eq!(
        d.provision("hall-1", &es()).await?.status,
        202,
        "outside the pattern"
    );
    assert!(admitted(&d.provision("kitchen-1", &es()).await?));
    assert!(
        audit_of(&d, "kitchen-1")
            .await?
            .contains(&("window:1".to_string(), "device_admitted".to_string()))
    );
    assert!(admitted(&d.provision("kitchen-2", &es()).await?));
    // At its count it closed: the third waits for a person.
    assert_eq!(d.provision("kitchen-3", &es()).await?.status, 202);
    let w = &admin.windows().await?.items[0];
    assert_eq!((w.admitted, w.closed), (2, Some(WindowClosed::Count)));
    // Listed live: the admissions and the closing came as events.
    let mut seen = Vec::new();
    while let Ok(Some(ev)) =
        tokio::time::timeout(std::time::Duration::from_millis(500), events.recv()).await
    {
        if let idprov_proto::admin::AdminEvent::Window { window } = ev {
            seen.push((window.admitted, window.closed));
        }
    }
    assert_eq!(seen, [(0, None), (1, None), (2, Some(WindowClosed::Count))]);

    // Longer than policy.window_max: refused.
    let err = admin
        .window_open(&WindowOpen {
            duration_secs: Some(601),
            ..WindowOpen::default()
        })
        .await
        .err()
        .context("a window longer than the maximum opened")?;
    assert_eq!(err.code().map(|c| c.as_str()), Some("bad_request"));
    // Default length, survives a restart, closes at its time.
    let w2 = admin.window_open(&WindowOpen::default()).await?;
    assert_eq!(w2.closes_at - w2.opened_at, 600);
    d = d.restart().await?;
    let admin = d.admin()?;
    assert!(admitted(&d.provision("porch-1", &es()).await?));
    d.clock.advance(600);
    assert_eq!(d.provision("porch-2", &es()).await?.status, 202);
    let w = admin
        .windows()
        .await?
        .items
        .into_iter()
        .find(|w| w.id == w2.id);
    assert_eq!(w.and_then(|w| w.closed), Some(WindowClosed::Time));
    // Closed early on request; closing it twice is a conflict.
    let w3 = admin.window_open(&WindowOpen::default()).await?;
    let closed = admin.window_close(w3.id).await?;
    assert_eq!(closed.closed, Some(WindowClosed::Admin));
    assert_eq!(d.provision("porch-3", &es()).await?.status, 202);
    let err = admin
        .window_close(w3.id)
        .await
        .err()
        .context("closed twice")?;
    assert_eq!(err.code().map(|c| c.as_str()), Some("conflict"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_refused_proofs_closes_the_window_with_an_alert() -> R {
    let d = TestDaemon::start_with(|c| c.policy.window_max_failed_proofs = 20).await?;
    let admin = d.admin()?;
    let w = admin.window_open(&WindowOpen::default()).await?;
    let key = DeviceKey::es256();
    for i in 0..20 {
        let a = d
            .provision_with(&format!("flood-{i}"), &key, |r| r.proof = "x.y.z".into())
            .await?;
        assert_eq!(a.code(), "invalid_proof", "{:?}", a.body);
    }
    let mut closed = None;
    for _ in 0..200 {
        let list = admin.windows().await?;
        closed = list
            .items
            .iter()
            .find(|x| x.id == w.id)
            .and_then(|x| x.closed);
        if closed.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(closed, Some(WindowClosed::ProofFailures));
    let alerts = admin.alerts().await?;
    assert!(
        alerts
            .items
            .iter()
            .any(|a| a.kind.as_str() == "window_proof_failures" && !a.paused),
        "{alerts:?}"
    );
    // Provisioning was not paused, and the window admits nobody now.
    assert_eq!(
        d.provision("late-1", &DeviceKey::es256()).await?.status,
        202
    );
    Ok(())
}
