//! Every idprovctl command through the real binary and a real daemon:
//! `--json` parsed, the human output checked, the exit codes.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use idprov_tests::{DeviceKey, TestDaemon};

use crate::common::{ctl, ctl_fails, ctl_json, stderr, stdout};

type R = anyhow::Result<()>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_reads_the_revision_and_a_stale_one_is_refused() -> R {
    let d = TestDaemon::start().await?;
    let p = d.profile_path();
    let who = ctl_json(&p, &["whoami"]).await;
    assert_eq!(who["name"], "admin");
    assert_eq!(who["daemon_id"], d.daemon_id());

    let k = DeviceKey::es256();
    assert_eq!(d.provision("stranger-1", &k).await?.status, 202);
    let list = ctl_json(&p, &["pending", "list"]).await;
    assert_eq!(list[0]["device_id"], "stranger-1", "{list}");
    let seen = list[0]["revision"].as_u64().expect("revision");
    let human = stdout(&ctl(&p, &["pending", "list"]).await);
    let code = list[0]["verification_code"].as_str().expect("code");
    assert!(
        human.starts_with("DEVICE ID") && human.contains(code),
        "{human}"
    );

    let show = stdout(&ctl(&p, &["pending", "show", "stranger-1"]).await);
    assert!(
        show.contains(&format!("revision:          {seen}\n")),
        "{show}"
    );

    // The device tries again: what the administrator saw is stale.
    d.clock.advance(2);
    d.provision("stranger-1", &k).await?;
    let (code, err) = ctl_fails(
        &p,
        &["approve", "stranger-1", "--revision", &seen.to_string()],
    )
    .await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("changed since revision") && err.contains("conflict"),
        "{err}"
    );
    assert!(
        ctl_json(&p, &["devices", "list"])
            .await
            .as_array()
            .is_some_and(Vec::is_empty),
        "nothing was decided"
    );

    // Without --revision, approve decides on the revision it reads now.
    let dev = ctl_json(&p, &["approve", "stranger-1"]).await;
    assert_eq!(dev["status"], "active", "{dev}");
    assert_eq!(
        ctl_json(&p, &["pending", "list"]).await,
        serde_json::json!([])
    );
    let (code, err) = ctl_fails(&p, &["approve", "stranger-1"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("no pending device stranger-1"), "{err}");

    // Reject, with its reason in the audit log.
    let k2 = DeviceKey::es256();
    d.provision("stranger-2", &k2).await?;
    let o = ctl(&p, &["reject", "stranger-2", "--reason", "not ours"]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("stranger-2: rejected"),
        "{}",
        stdout(&o)
    );
    let audit = ctl_json(&p, &["audit", "--query", "stranger-2"]).await;
    let items = audit["items"].as_array().expect("items");
    assert!(
        items
            .iter()
            .any(|e| e["detail"].as_str().is_some_and(|s| s.contains("not ours"))),
        "{audit}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_keys_certificates_provisioning_alerts_and_audit() -> R {
    let d = TestDaemon::start().await?;
    let p = d.profile_path();
    let k = DeviceKey::es256();
    d.oob_key("sensor-1", &k).await?;
    let csr = idprov_tests::x509::csr(&k, "sensor-1")?;
    assert_eq!(
        d.provision_csr("sensor-1", &k, Some(csr)).await?.status,
        200
    );

    let list = ctl_json(&p, &["devices", "list"]).await;
    assert_eq!(list[0]["device_id"], "sensor-1");
    let human = stdout(&ctl(&p, &["devices", "show", "sensor-1"]).await);
    assert!(
        human.contains("status:") && human.contains("active"),
        "{human}"
    );
    // Times are shown as dates, not unix seconds.
    assert!(
        human.contains("created:") && human.contains("Z\n"),
        "{human}"
    );

    // Keys: add one from a PEM file, list, remove it.
    let tmp = tempfile::tempdir()?;
    let extra = DeviceKey::es256();
    let pem = tmp.path().join("extra.pem");
    std::fs::write(&pem, &extra.public_pem)?;
    let keys = ctl_json(
        &p,
        &["keys", "add", "sensor-1", "--key", &pem.to_string_lossy()],
    )
    .await;
    assert_eq!(keys["keys"].as_array().map(Vec::len), Some(2), "{keys}");
    let keys = ctl_json(&p, &["keys", "list", "sensor-1"]).await;
    assert!(
        keys["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .any(|x| x["kid"] == extra.kid()),
        "{keys}"
    );
    let keys = ctl_json(&p, &["keys", "remove", "sensor-1", extra.kid()]).await;
    assert_eq!(keys["keys"].as_array().map(Vec::len), Some(1), "{keys}");

    // Certificates: the one issued with the CSR; show, revoke, CRL.
    let certs = ctl_json(&p, &["certs", "list", "sensor-1"]).await;
    let serial = certs[0]["serial"].as_str().expect("serial").to_string();
    let pem_out = stdout(&ctl(&p, &["certs", "show", &serial, "--pem"]).await);
    assert!(
        pem_out.starts_with("-----BEGIN CERTIFICATE-----"),
        "{pem_out}"
    );
    let revoked = ctl_json(&p, &["certs", "revoke", &serial, "--reason", "test"]).await;
    assert!(revoked["revoked_at"].is_i64(), "{revoked}");
    let crl = ctl_json(&p, &["crl"]).await;
    assert_eq!(crl["revoked"], 1, "{crl}");
    assert_eq!(
        ctl_json(&p, &["registry-cas", "list"]).await,
        serde_json::json!([])
    );
    let (code, err) = ctl_fails(&p, &["certs", "show", "00ff"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("not_found"), "{err}");

    // The provisioning switch.
    let st = ctl_json(&p, &["provisioning", "pause", "--reason", "maintenance"]).await;
    assert_eq!(
        st,
        serde_json::json!({"paused": true, "reason": "maintenance"})
    );
    let human = stdout(&ctl(&p, &["provisioning", "status"]).await);
    assert_eq!(human, "provisioning: paused (maintenance)\n");
    let st = ctl_json(&p, &["provisioning", "resume"]).await;
    assert_eq!(st["paused"], false);
    assert_eq!(ctl_json(&p, &["alerts"]).await, serde_json::json!([]));

    // A key revoked as compromised; a factory reset binds a new key.
    let leaked = DeviceKey::es256();
    let leaked_pem = tmp.path().join("leaked.pem");
    std::fs::write(&leaked_pem, &leaked.public_pem)?;
    let keys = ctl_json(
        &p,
        &[
            "keys",
            "add",
            "sensor-1",
            "--key",
            &leaked_pem.to_string_lossy(),
        ],
    )
    .await;
    assert_eq!(keys["keys"].as_array().map(Vec::len), Some(2), "{keys}");
    let args = [
        "keys",
        "revoke",
        "sensor-1",
        leaked.kid(),
        "--reason",
        "leaked",
    ];
    let keys = ctl_json(&p, &args).await;
    assert_eq!(keys["keys"].as_array().map(Vec::len), Some(1), "{keys}");
    // A retired key never comes back: the daemon's refusal, exit 1.
    let leaked_path = leaked_pem.to_string_lossy();
    let again = ["keys", "add", "sensor-1", "--key", &leaked_path];
    let (code, err) = ctl_fails(&p, &again).await;
    assert_eq!(code, 1, "{err}");
    let fresh = DeviceKey::es256();
    let fresh_pem = tmp.path().join("fresh.pem");
    std::fs::write(&fresh_pem, &fresh.public_pem)?;
    let dev = ctl_json(
        &p,
        &[
            "devices",
            "reprovision",
            "sensor-1",
            "--key",
            &fresh_pem.to_string_lossy(),
            "--reason",
            "factory reset",
        ],
    )
    .await;
    assert_eq!(dev["keys"][0]["kid"], fresh.kid(), "{dev}");
    // Not a CA certificate: the daemon's refusal, exit 1.
    let (code, err) = ctl_fails(&p, &["registry-cas", "add", &fresh_pem.to_string_lossy()]).await;
    assert_eq!(code, 1, "{err}");

    // Revoke and remove the device.
    let dev = ctl_json(&p, &["devices", "revoke", "sensor-1", "--reason", "stolen"]).await;
    assert_eq!(dev["status"], "revoked");
    let o = ctl(&p, &["devices", "remove", "sensor-1"]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    let (code, err) = ctl_fails(&p, &["devices", "show", "sensor-1"]).await;
    assert_eq!(code, 1, "{err}");

    // The audit log, as a table with dates and as JSON pages.
    let human = stdout(&ctl(&p, &["audit", "--limit", "1000"]).await);
    assert!(
        human.starts_with("SEQ") && human.contains("provisioning_paused"),
        "{human}"
    );
    let page = ctl_json(&p, &["audit", "--limit", "2"]).await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(2));
    let next = page["next"].as_str().expect("next page");
    let page2 = ctl_json(&p, &["audit", "--after", next, "--limit", "1"]).await;
    assert_eq!(
        page2["items"][0]["seq"].as_u64(),
        page["items"][1]["seq"].as_u64().map(|s| s + 1)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_json_lines() -> R {
    use std::time::Duration;
    use tokio::io::AsyncBufReadExt;
    let d = TestDaemon::start().await?;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_idprovctl"))
        .arg("--profile")
        .arg(d.profile_path())
        .arg("events")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().expect("piped");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    // Provision until the stream (which may open after the first try)
    // reports the pending device.
    let k = DeviceKey::es256();
    let seen = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            d.clock.advance(2);
            d.provision("watched", &k).await?;
            match tokio::time::timeout(Duration::from_millis(500), lines.next_line()).await {
                Ok(Ok(Some(line))) => {
                    let v: serde_json::Value = serde_json::from_str(&line)?;
                    if v["type"] == "pending_upserted" {
                        return anyhow::Ok(v);
                    }
                }
                Ok(Ok(None)) => anyhow::bail!("idprovctl events ended"),
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => {} // nothing yet: try again
            }
        }
    })
    .await??;
    assert_eq!(seen["pending"]["device_id"], "watched");
    child.kill().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_match_idprovd() -> R {
    let mut d = TestDaemon::start().await?;
    let p = d.profile_path();
    // 2: bad command line (an invalid device id is refused before any call).
    let (code, err) = ctl_fails(&p, &["approve", "bad id"]).await;
    assert_eq!(code, 2, "{err}");
    // 3: no profile.
    let (code, err) = ctl_fails(std::path::Path::new("/nonexistent/p.toml"), &["whoami"]).await;
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("/nonexistent/p.toml"), "{err}");
    // 5: the daemon is not there.
    d.stop().await?;
    let (code, err) = ctl_fails(&p, &["pending", "list"]).await;
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("cannot reach the daemon"), "{err}");
    Ok(())
}
