//! `idprovd audit verify` as an operator runs it on a stopped daemon's data
//! dir: intact chain (exit 0), then an entry edited behind the daemon's back
//! (exit 6, the entry named). The admin-API path is tested in
//! tests/tests/it/security.rs.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use idprov_proto::admin::{AlertKind, AuditEntry};
use redb::ReadableTable;
use tokio_util::sync::CancellationToken;

const BIN: &str = env!("CARGO_BIN_EXE_idprovd");

fn verify(dir: &Path, json: bool) -> Result<(i32, String)> {
    let mut c = Command::new(BIN);
    c.env("IDPROVD_MDNS__ENABLED", "false")
        .env_remove("IDPROVD_CONFIG")
        .arg("--data-dir")
        .arg(dir)
        .args(["audit", "verify"]);
    if json {
        c.arg("--json");
    }
    let o = c.output().context("running idprovd")?;
    Ok((
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    ))
}

/// Start a daemon on `dir`, record a few audit entries, stop it.
async fn make_history(dir: &Path) -> Result<()> {
    let mut cfg = idprovd::Config {
        listen: "127.0.0.1:0".parse()?,
        data_dir: dir.to_path_buf(),
        ..idprovd::Config::default()
    };
    cfg.mdns.enabled = false;
    cfg.metrics.enabled = false;
    let listener = tokio::net::TcpListener::bind(cfg.listen).await?;
    let shutdown = CancellationToken::new();
    let running = idprovd::start(
        cfg,
        Arc::new(idprovd::SystemClock),
        idprovd::Listeners { https: listener },
        shutdown.clone(),
    )
    .await?;
    for i in 0..2 {
        running
            .daemon
            .raise_alert(idprovd::monitor::AlertDraft {
                kind: AlertKind::RogueAdvertiser,
                instance: format!("rogue-{i}._idprov._tcp.local."),
                addresses: vec!["10.0.0.9".into()],
                port: Some(8445),
                daemon_id: None,
                ca_fingerprint: None,
                detail: "test".into(),
            })
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    shutdown.cancel();
    running.task.await??;
    drop(running.daemon);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_names_an_edited_entry_and_exits_6() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("data");
    make_history(&dir).await?;

    // The store closes when its last handle goes; wait for the lock.
    let mut intact = (0, String::new());
    for _ in 0..50 {
        intact = verify(&dir, false)?;
        if intact.0 == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(intact.0, 0, "{}", intact.1);
    assert!(
        intact.1.contains("audit chain intact: 3 entries"),
        "{}",
        intact.1
    );

    // Edit entry 2 (provisioning_paused) without fixing its hash.
    {
        const AUDIT: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("audit");
        let db = redb::Database::create(dir.join(idprovd::store::STORE_FILE))?;
        let tx = db.begin_write()?;
        {
            let mut t = tx.open_table(AUDIT)?;
            let mut e: AuditEntry = {
                let v = t.get(2)?.context("entry 2")?;
                serde_json::from_slice(v.value())?
            };
            e.actor = "admin:nobody".into();
            t.insert(2, serde_json::to_vec(&e)?.as_slice())?;
        }
        tx.commit()?;
    }
    let (code, text) = verify(&dir, false)?;
    assert_eq!(code, 6, "{text}");
    assert!(text.contains("BROKEN at entry 2"), "{text}");
    let (code, json) = verify(&dir, true)?;
    assert_eq!(code, 6);
    let v: serde_json::Value = serde_json::from_str(&json)?;
    assert_eq!(v["intact"], false);
    assert_eq!(v["report"]["broken"]["seq"], 2);
    assert_eq!(v["via"], "store file");
    Ok(())
}
