//! A full disk under the running daemon (issue 13 item 6): the store's data
//! dir is a small tmpfs (in a mount namespace of the test's own), filled up
//! while the daemon serves. Writes must answer 503 `unavailable` with
//! `Retry-After` (not 500), `/readyz` must be 503 naming the store, the
//! systemd watchdog must stop being fed, a metric must count it; once space
//! is back the daemon serves again without a restart, and every device
//! acknowledged before is still there.

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use idprov_proto::ErrorCode;
use idprov_proto::admin::OobUpsertRequest;
use idprov_tests::{DeviceKey, TestDaemon, mount_ns_test, mountns, oob_entry};

type R = anyhow::Result<()>;

/// Fill the filesystem of `dir` until it is full; returns the filler.
fn fill(dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path)?;
    let chunk = vec![0u8; 64 * 1024];
    loop {
        if let Err(e) = f.write_all(&chunk) {
            if e.raw_os_error() == Some(28) {
                // ENOSPC: full. Smaller writes take the last blocks.
                for _ in 0..64 {
                    let _ = f.write_all(&[0u8; 512]);
                }
                let _ = f.sync_all();
                return Ok(path);
            }
            return Err(e.into());
        }
    }
}

async fn readyz(d: &TestDaemon) -> anyhow::Result<(u16, serde_json::Value)> {
    let url = format!("http://{}/readyz", d.metrics_addr.context("metrics")?);
    let r = d.http().get(&url).send().await?;
    Ok((r.status().as_u16(), r.json().await?))
}

async fn metric(d: &TestDaemon, name: &str) -> anyhow::Result<f64> {
    d.metric(name).await
}

/// Every sd_notify message the daemon sends, read as it comes (systemd
/// always reads; a full socket queue would block the daemon's sender).
#[derive(Clone, Default)]
struct Notified(Arc<Mutex<Vec<(Instant, String)>>>);

impl Notified {
    fn listen(sock: UnixDatagram) -> Notified {
        let n = Notified::default();
        let seen = n.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(len) = sock.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..len]).into_owned();
                if let Ok(mut v) = seen.0.lock() {
                    v.push((Instant::now(), msg));
                }
            }
        });
        n
    }

    /// The messages received during the next `within`.
    async fn during(&self, within: Duration) -> Vec<String> {
        let from = Instant::now();
        tokio::time::sleep(within).await;
        let v = self.0.lock().map(|v| v.clone()).unwrap_or_default();
        v.into_iter()
            .filter(|(at, _)| *at >= from)
            .map(|(_, m)| m)
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_503_and_the_daemon_recovers_when_space_is_back() -> R {
    // The child process binds the socket the daemon code notifies.
    let notify = std::env::temp_dir().join(format!("idprov-store-io-{}.sock", std::process::id()));
    mount_ns_test!(
        a_full_disk_answers_503_and_the_daemon_recovers_when_space_is_back,
        &[
            ("NOTIFY_SOCKET", notify.to_str().context("temp dir path")?),
            ("WATCHDOG_USEC", "200000")
        ]
    );
    let notify = std::env::var("NOTIFY_SOCKET")?;
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("data");
    mountns::mount_tmpfs(&dir, "6m")?;
    let notified = Notified::listen(UnixDatagram::bind(&notify)?);

    let d = TestDaemon::start_in(&dir).await?;
    eprintln!("daemon started");
    tokio::spawn(idprovd::service::supervise(
        d.daemon.clone(),
        d.addr,
        d.shutdown.clone(),
    ));
    assert!(
        notified
            .during(Duration::from_millis(600))
            .await
            .iter()
            .any(|m| m.contains("WATCHDOG=1")),
        "the watchdog is fed while the store is healthy"
    );

    // Acknowledged before the disk fills: they must survive.
    let mut acked = Vec::new();
    for i in 0..5 {
        let key = DeviceKey::es256();
        let id = format!("before-{i}");
        d.oob_key(&id, &key).await?;
        let a = d.provision(&id, &key).await?;
        assert_eq!(a.status, 200, "{:?}", a.body);
        acked.push((id, key, a.token().to_string()));
    }

    let filler = fill(&dir)?;
    eprintln!("disk filled");
    // The first writes may still fit in the store file's free pages: write
    // OOB entries in batches until one needs more room than there is.
    let admin = d.admin()?;
    let mut failed = None;
    for batch in 0..200u32 {
        let entries = (0..100u32)
            .map(|i| {
                let n = batch * 100 + i;
                let mac = format!(
                    "02:00:00:{:02x}:{:02x}:{:02x}",
                    n >> 16,
                    (n >> 8) & 0xff,
                    n & 0xff
                );
                let mut e = oob_entry(&format!("full-{n}"), None, mac.parse().ok(), None);
                e.note = Some("x".repeat(250));
                e
            })
            .collect();
        let r = admin
            .oob_upsert(&OobUpsertRequest {
                entries,
                replace: false,
                dry_run: false,
            })
            .await;
        if let Err(e) = r {
            failed = Some(e);
            break;
        }
    }
    let e = failed.context("no write failed on a full disk")?;
    eprintln!("write refused: {e}");
    assert_eq!(e.code(), Some(ErrorCode::Unavailable), "{e}");

    // A device provisioning now: 503 unavailable with Retry-After.
    let a = d.provision("while-full", &DeviceKey::es256()).await?;
    assert_eq!((a.status, a.code()), (503, "unavailable"), "{:?}", a.body);
    assert_eq!(a.retry_after.as_deref(), Some("5"), "Retry-After");

    // While the cause lasts: writes refused, not ready, no watchdog pings.
    let key = DeviceKey::es256();
    let (status, body) = readyz(&d).await?;
    assert_eq!(status, 503, "{body}");
    let why = body["checks"]["store"]["error"].as_str().unwrap_or("");
    assert!(
        body["checks"]["store"]["ok"] == false && why.contains("idprov.redb"),
        "readyz names the store: {body}"
    );
    // A ping decided just before the failure may still be in flight.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let quiet = notified.during(Duration::from_millis(1000)).await;
    assert!(
        !quiet.iter().any(|m| m.contains("WATCHDOG=1")),
        "no watchdog pings while the store is unavailable: {quiet:?}"
    );
    assert!(quiet.iter().any(|m| m.contains("STATUS=store unavailable")));
    assert!(metric(&d, "idprov_store_io_errors_total").await? >= 1.0);
    assert_eq!(metric(&d, "idprov_store_unavailable").await?, 1.0);

    // Space back: the daemon reopens the store by itself.
    std::fs::remove_file(&filler)?;
    eprintln!("space freed");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = readyz(&d).await?;
        if status == 200 {
            break;
        }
        if Instant::now() > deadline {
            bail!("still not ready a minute after space came back: {body}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(metric(&d, "idprov_store_reopens_total").await? >= 1.0);
    assert_eq!(metric(&d, "idprov_store_unavailable").await?, 0.0);
    d.oob_key("after", &key).await?;
    let a = d.provision("after", &key).await?;
    assert_eq!(a.status, 200, "serves again: {:?}", a.body);
    assert!(
        notified
            .during(Duration::from_millis(600))
            .await
            .iter()
            .any(|m| m.contains("WATCHDOG=1")),
        "the watchdog is fed again"
    );

    // Nothing acknowledged before is lost.
    for (id, key, token) in &acked {
        let dev = admin.device_get(&id.parse()?).await?;
        assert_eq!(dev.device_id.as_str(), id);
        let r = d.renew(id, key, token).await?;
        assert_eq!(r.status, 200, "{id}: {:?}", r.body);
    }
    let _ = std::fs::remove_file(&notify);
    Ok(())
}
