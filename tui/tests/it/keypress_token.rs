//! Key press → device token (issue 16): a pending device waits on its
//! request (`Prefer: wait`), the administrator approves it in the real TUI
//! in tmux, and the device holds its token long before the poll interval
//! it would otherwise sleep out (`Retry-After` 60 s here). The bound is
//! generous for a loaded machine; the figure itself is measured by
//! `bench_approval`.

use std::time::{Duration, Instant};

use idprov_proto::device::{ProofEndpoint, paths};
use idprov_tests::{DeviceKey, TestDaemon};

use crate::e2e_tmux::Tmux;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_press_reaches_the_waiting_device_at_once() -> anyhow::Result<()> {
    let td = TestDaemon::start_with(|c| {
        c.pending.retry_after = Duration::from_secs(60);
        c.pending.max_wait = Duration::from_secs(60);
    })
    .await?;
    let key = DeviceKey::es256();
    let first = td.provision("kp-1", &key).await?;
    assert_eq!(first.status, 202, "{:?}", first.body);

    // The device's next request waits for the decision.
    let proof = key.proof("kp-1", &td.daemon_id(), ProofEndpoint::Provision, td.now());
    let req = key.request("kp-1", proof);
    let http = td.http();
    let url = td.endpoint(paths::PROVISION);
    let waiting = tokio::spawn(async move {
        let resp = http
            .post(url)
            .header("prefer", "wait=60")
            .json(&req)
            .send()
            .await?;
        let status = resp.status().as_u16();
        Ok::<_, anyhow::Error>((status, resp.text().await?, Instant::now()))
    });
    let held = Instant::now() + Duration::from_secs(10);
    while td.daemon.devices.waiters.count() == 0 {
        assert!(Instant::now() < held, "the daemon never held the request");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let tmp = tempfile::tempdir()?;
    let conf = tmp.path().join("tmux.conf");
    std::fs::write(&conf, "set -g remain-on-exit on\nset -g status off\n")?;
    let cmd = format!(
        "'{}' --profile '{}'",
        env!("CARGO_BIN_EXE_idprov-tui"),
        td.profile_path().display()
    );
    let tmux = Tmux::start_named("keypress", &cmd, &conf, 100, 30);
    tmux.wait("the pending device", |s| s.contains("kp-1"))
        .await;
    tmux.keys(&["a"]);
    tmux.wait("the approval confirmation", |s| s.contains("Approve kp-1?"))
        .await;
    let pressed = Instant::now();
    tmux.keys(&["y"]);
    let (status, body, answered) = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .map_err(|_| anyhow::anyhow!("no answer within 30 s of the key press"))???;
    let took = answered.duration_since(pressed);
    eprintln!("key press → token: {took:?}");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"token\":\"ey"), "{body}");
    // Far below the 60 s poll interval the device would have slept out.
    assert!(took < Duration::from_secs(10), "took {took:?}");
    Ok(())
}
