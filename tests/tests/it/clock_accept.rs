//! A forward clock jump, corrected (issue 13 item 7): the persisted
//! high-water mark keeps provisioning refused; `/readyz` names the clock, an
//! alert says so, and an administrator accepts the corrected clock through
//! the admin API (audited with the actor), after which devices provision
//! again. Time is the injected ManualClock.

use anyhow::Result;
use idprov_proto::admin::{AlertKind, ListQuery};
use idprov_tests::{DeviceKey, TestDaemon};

#[tokio::test]
async fn a_corrected_forward_jump_is_shown_alerted_and_accepted_by_an_administrator() -> Result<()>
{
    let d = TestDaemon::start().await?;
    let admin = d.admin()?;
    let k = DeviceKey::es256();
    d.oob_key("dev-1", &k).await?;

    // The clock runs three weeks ahead; a provision records that time.
    let jump = 21 * 24 * 3600;
    d.clock.advance(jump);
    assert_eq!(d.provision("dev-1", &k).await?.status, 200);
    // Corrected: now the daemon refuses to issue.
    d.clock.advance(-jump);
    let r = d.provision("dev-1", &k).await?;
    assert_eq!((r.status, r.code()), (503, "clock_regressed"));

    // Readiness names the clock.
    let r = d.http().get(d.endpoint("/readyz")).send().await?;
    assert_eq!(r.status(), 503);
    let v: serde_json::Value = r.json().await?;
    assert_eq!(v["checks"]["clock"]["ok"], false, "{v}");
    assert_eq!(v["checks"]["clock"]["now"], d.now(), "{v}");
    assert!(
        v["checks"]["clock"]["high_water"].as_i64() >= Some(d.now() + jump),
        "{v}"
    );
    // One alert, and provisioning is not paused by it.
    d.http().get(d.endpoint("/readyz")).send().await?;
    let alerts = admin.alerts().await?;
    let clock_alerts: Vec<_> = alerts
        .items
        .iter()
        .filter(|a| a.kind == AlertKind::ClockRegressed)
        .collect();
    assert_eq!(clock_alerts.len(), 1, "{alerts:?}");
    assert!(!clock_alerts[0].paused);
    let state = admin.clock().await?;
    assert!(state.regressed, "{state:?}");

    // The administrator accepts the corrected clock.
    let state = admin.accept_clock().await?;
    assert!(!state.regressed, "{state:?}");
    assert_eq!(state.high_water, Some(d.now()));
    let audit = admin.audit(&ListQuery::default()).await?;
    let entry = audit
        .items
        .iter()
        .find(|e| e.action == "clock_accepted")
        .unwrap_or_else(|| panic!("no clock_accepted in {:?}", audit.items));
    assert!(entry.actor.contains("admin"), "{entry:?}");
    assert!(
        entry.detail.contains(&(d.now() + jump).to_string()),
        "{entry:?}"
    );

    // Devices provision again; readiness is back.
    assert_eq!(d.provision("dev-1", &k).await?.status, 200);
    let r = d.http().get(d.endpoint("/readyz")).send().await?;
    assert_eq!(r.status(), 200);
    // Accepting a clock that is not behind changes nothing.
    let before = audit.items.len();
    admin.accept_clock().await?;
    let after = admin.audit(&ListQuery::default()).await?;
    let accepted = |items: &[idprov_proto::admin::AuditEntry]| {
        items
            .iter()
            .filter(|e| e.action == "clock_accepted")
            .count()
    };
    assert_eq!(accepted(&after.items), 1, "{before} entries before");
    Ok(())
}
