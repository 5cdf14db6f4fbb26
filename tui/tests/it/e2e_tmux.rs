//! End to end: the real `idprov-tui` binary in a real terminal (tmux)
//! against a real daemon (in-process, HTTPS on 127.0.0.1:0). An
//! administrator approves a pending device with key presses, and the device
//! then receives its token; a device that arrives while the TUI runs shows up
//! live and is rejected the same way.
//!
//! Needs `tmux` on the PATH (CI installs it).

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use idprov_tests::{DeviceKey, TestDaemon};

/// A private tmux server (own socket name), killed when dropped.
pub(crate) struct Tmux {
    socket: String,
}

/// Tmux servers started by this test binary, for unique socket names.
static SERVERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl Tmux {
    pub(crate) fn start(cmd: &str, conf: &Path, w: u16, h: u16) -> Tmux {
        Tmux::start_named("e2e", cmd, conf, w, h)
    }

    /// A server of its own for each test (`tag` and a counter), so tests
    /// run in parallel.
    pub(crate) fn start_named(tag: &str, cmd: &str, conf: &Path, w: u16, h: u16) -> Tmux {
        let n = SERVERS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let socket = format!("idprov-tui-{tag}-{}-{n}", std::process::id());
        let t = Tmux { socket };
        // remain-on-exit (from the config) keeps the pane after the TUI
        // exits, so the restored screen can be checked.
        t.run(&[
            "-f",
            &conf.display().to_string(),
            "new-session",
            "-d",
            "-s",
            "e2e",
            "-x",
            &w.to_string(),
            "-y",
            &h.to_string(),
            cmd,
        ]);
        t
    }

    pub(crate) fn run(&self, args: &[&str]) -> Output {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output();
        match out {
            Ok(o) if o.status.success() => o,
            Ok(o) => panic!(
                "tmux {args:?} failed: {}",
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => panic!("cannot run tmux (install it: apt-get install tmux): {e}"),
        }
    }

    pub(crate) fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "e2e"]).stdout).into()
    }

    pub(crate) fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "e2e"];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    /// Wait until the screen satisfies `ok`; fail with the screen if not.
    pub(crate) async fn wait(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = self.screen();
            if ok(&s) {
                return s;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}; the screen shows:\n{s}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .arg("kill-server")
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_in_the_tui_and_the_device_gets_its_token() -> anyhow::Result<()> {
    let td = TestDaemon::start().await?;
    let key = DeviceKey::es256();
    let first = td.provision("e2e-sensor-1", &key).await?;
    assert_eq!(first.status, 202, "unknown device waits: {:?}", first.body);

    let tmp = tempfile::tempdir()?;
    let conf = tmp.path().join("tmux.conf");
    std::fs::write(&conf, "set -g remain-on-exit on\nset -g status off\n")?;
    let bin = env!("CARGO_BIN_EXE_idprov-tui");
    // The pane runs a shell that runs the TUI and writes its exit status to
    // a file (renamed into place, so it is never read half-written). The
    // shell reaps the TUI itself with wait(): tmux 3.3a sometimes never
    // reaps its pane's process (seen here: the TUI a zombie for minutes, the
    // pane dead with no exit status), so tmux's status is not used.
    let status = tmp.path().join("exit-status");
    let script = tmp.path().join("run-tui.sh");
    std::fs::write(
        &script,
        format!(
            "'{bin}' --profile '{}'\necho $? > '{st}.tmp' && mv '{st}.tmp' '{st}'\n",
            td.profile_path().display(),
            st = status.display()
        ),
    )?;
    let cmd = format!("sh '{}'", script.display());
    let tmux = Tmux::start(&cmd, &conf, 100, 30);

    // The pending device is listed, with the cursor on it.
    tmux.wait("the pending device", |s| s.contains("e2e-sensor-1"))
        .await;

    // a: a confirmation naming the device and its verification code.
    tmux.keys(&["a"]);
    let code = key.public.verification_code();
    let s = tmux
        .wait("the approval confirmation", |s| {
            s.contains("Approve e2e-sensor-1?")
        })
        .await;
    assert!(s.contains(&code), "verification code {code} shown:\n{s}");

    // y: approved, said so in the status line.
    tmux.keys(&["y"]);
    tmux.wait("the approval result", |s| {
        s.contains("approved e2e-sensor-1")
    })
    .await;

    // The device's next request (after the wait it was given) gets a token.
    let wait = i64::try_from(td.cfg.pending.retry_after.as_secs())? + 1;
    td.clock.advance(wait);
    let answer = td.provision("e2e-sensor-1", &key).await?;
    assert_eq!(
        answer.status, 200,
        "approved device is issued: {:?}",
        answer.body
    );
    assert!(answer.token().starts_with("ey"), "a JWT: {:?}", answer.body);

    // The Devices view shows it active.
    tmux.keys(&["2"]);
    tmux.wait("the device as active", |s| {
        s.lines()
            .any(|l| l.contains("e2e-sensor-1") && l.contains("active"))
    })
    .await;

    // A device that arrives now appears live (event stream) and is rejected.
    tmux.keys(&["1"]);
    let key2 = DeviceKey::es256();
    let a2 = td.provision("e2e-sensor-2", &key2).await?;
    assert_eq!(a2.status, 202);
    tmux.wait("the live pending device", |s| s.contains("e2e-sensor-2"))
        .await;
    tmux.keys(&["r"]);
    tmux.wait("the rejection confirmation", |s| {
        s.contains("Reject e2e-sensor-2?")
    })
    .await;
    tmux.keys(&["y"]);
    tmux.wait("the rejection result", |s| {
        s.contains("rejected e2e-sensor-2")
    })
    .await;
    td.clock.advance(wait);
    let refused = td.provision("e2e-sensor-2", &key2).await?;
    assert_eq!(
        refused.status, 403,
        "rejected device is refused: {:?}",
        refused.body
    );

    // Bulk: filter, approve everything matching, with the count stated.
    let bulk: Vec<DeviceKey> = (0..3).map(|_| DeviceKey::es256()).collect();
    for (i, k) in bulk.iter().enumerate() {
        assert_eq!(td.provision(&format!("bulk-{i}"), k).await?.status, 202);
    }
    let other = DeviceKey::es256();
    assert_eq!(td.provision("other-1", &other).await?.status, 202);
    tmux.wait("the bulk devices", |s| {
        s.contains("bulk-2") && s.contains("other-1")
    })
    .await;
    tmux.keys(&["/", "bulk", "Enter", "A"]);
    tmux.wait("the bulk confirmation", |s| {
        s.contains("Approve 3 pending devices matching \"bulk\"?")
    })
    .await;
    tmux.keys(&["y"]);
    tmux.wait("the bulk result", |s| s.contains("approved 3 devices"))
        .await;
    td.clock.advance(wait);
    for (i, k) in bulk.iter().enumerate() {
        let a = td.provision(&format!("bulk-{i}"), k).await?;
        assert_eq!(a.status, 200, "bulk-{i} is issued: {:?}", a.body);
    }
    let a = td.provision("other-1", &other).await?;
    assert_eq!(
        a.status, 202,
        "outside the filter: still pending: {:?}",
        a.body
    );

    // q: the TUI exits cleanly and leaves the alternate screen.
    tmux.keys(&["q"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Ok(code) = std::fs::read_to_string(&status) {
            break code;
        }
        assert!(
            Instant::now() < deadline,
            "the TUI did not exit on q; the screen shows:\n{}",
            tmux.screen()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(code.trim(), "0", "the TUI's exit status");
    tmux.wait("the terminal restored (alternate screen left)", |s| {
        !s.contains("Pending")
    })
    .await;
    Ok(())
}
