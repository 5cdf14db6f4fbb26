//! `idprovctl rules …` and `idprovctl window …` through the real binary
//! and a real daemon: a rule added decides the next device, the order and
//! the revision hold, the dry run names what a rule would decide, a window
//! admits and closes.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use idprov_tests::{DeviceKey, TestDaemon};

use crate::common::{ctl, ctl_fails, ctl_json, stderr, stdout};

type R = anyhow::Result<()>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_are_added_moved_dry_run_and_deleted() -> R {
    let d = TestDaemon::start().await?;
    let p = d.profile_path();
    assert_eq!(d.provision("lab-1", &DeviceKey::es256()).await?.status, 202);

    let dry = ctl_json(&p, &["rules", "dry-run"]).await;
    assert_eq!(dry["items"].as_array().map(Vec::len), Some(0), "{dry}");
    let list = ctl_json(
        &p,
        &[
            "rules",
            "add",
            "lab",
            "--action",
            "approve",
            "--device-id",
            "lab-*",
            "--source",
            "127.0.0.0/8",
        ],
    )
    .await;
    assert_eq!(list["revision"], 1, "{list}");
    let dry = stdout(&ctl(&p, &["rules", "dry-run", "lab"]).await);
    assert!(dry.contains("lab-1") && dry.contains("rule:lab"), "{dry}");
    // Added first, a hold keeps lab-* for a person.
    ctl_json(
        &p,
        &[
            "rules",
            "add",
            "wait",
            "--action",
            "hold",
            "--device-id",
            "lab-*",
            "--position",
            "0",
        ],
    )
    .await;
    assert_eq!(d.provision("lab-2", &DeviceKey::es256()).await?.status, 202);
    let human = stdout(&ctl(&p, &["rules", "list"]).await);
    let rows: Vec<&str> = human.lines().collect();
    assert!(
        rows[0].starts_with("#") && rows[1].contains("wait") && rows[2].contains("lab"),
        "{human}"
    );
    assert!(
        rows[2].contains("device_id=lab-* source=127.0.0.0/8"),
        "{human}"
    );
    // A stale revision is refused with exit 1 and changes nothing.
    let (code, err) = ctl_fails(&p, &["rules", "move", "wait", "1", "--revision", "1"]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("conflict"), "{err}");
    ctl_json(&p, &["rules", "move", "wait", "1"]).await;
    let key = DeviceKey::es256();
    assert_eq!(d.provision("lab-3", &key).await?.status, 200);
    let dev = ctl_json(&p, &["devices", "show", "lab-3"]).await;
    assert_eq!(dev["admitted_by"], "rule:lab", "{dev}");
    let audit = stdout(&ctl(&p, &["audit", "--query", "lab-3"]).await);
    assert!(
        audit.contains("rule:lab") && audit.contains("device_admitted"),
        "{audit}"
    );

    let list = ctl_json(&p, &["rules", "delete", "lab"]).await;
    assert_eq!(list["rules"].as_array().map(Vec::len), Some(1), "{list}");
    // Bad input is a usage error (exit 2), before anything is sent.
    let (code, err) = ctl_fails(&p, &["rules", "add", "x", "--action", "maybe"]).await;
    assert_eq!(code, 2, "{err}");
    let (code, err) = ctl_fails(
        &p,
        &[
            "rules",
            "add",
            "x",
            "--action",
            "approve",
            "--flag",
            "key_conflict",
        ],
    )
    .await;
    assert_eq!(code, 2, "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_opened_from_the_cli_admits_and_closes() -> R {
    let d = TestDaemon::start().await?;
    let p = d.profile_path();
    let w = ctl_json(
        &p,
        &[
            "window",
            "open",
            "--duration",
            "5m",
            "--device-id",
            "porch-*",
            "--max-devices",
            "3",
        ],
    )
    .await;
    assert_eq!(
        w["closes_at"].as_i64().unwrap() - w["opened_at"].as_i64().unwrap(),
        300
    );
    let id = w["id"].to_string();
    assert_eq!(
        d.provision("porch-1", &DeviceKey::es256()).await?.status,
        200
    );
    assert_eq!(
        d.provision("hall-1", &DeviceKey::es256()).await?.status,
        202
    );
    let human = stdout(&ctl(&p, &["window", "list"]).await);
    assert!(
        human.contains("open") && human.contains("porch-*"),
        "{human}"
    );
    let closed = ctl_json(&p, &["window", "close", &id]).await;
    assert_eq!(closed["closed"], "admin", "{closed}");
    assert_eq!(
        d.provision("porch-2", &DeviceKey::es256()).await?.status,
        202
    );
    let o = ctl(&p, &["window", "close", &id]).await;
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let (code, err) = ctl_fails(&p, &["window", "open", "--duration", "2h"]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("policy.window_max"), "{err}");
    Ok(())
}
