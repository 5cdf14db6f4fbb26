//! The TUI holding up (issue 18 item 4), the real binary in tmux: device
//! IDs in natural order, Ctrl-L repaints a screen another program wrote
//! over, a refused administrator token says so and stops retrying, and an
//! ordinary error prints no backtrace whatever RUST_BACKTRACE says.

use std::path::Path;

use idprov_tests::{DeviceKey, TestDaemon};

use crate::e2e_tmux::Tmux;

const TUI: &str = env!("CARGO_BIN_EXE_idprov-tui");

fn tui_in_tmux(profile: &Path, dir: &Path) -> anyhow::Result<Tmux> {
    let conf = dir.join("tmux.conf");
    std::fs::write(&conf, "set -g status off\nset -g remain-on-exit on\n")?;
    let cmd = format!("'{TUI}' --profile '{}'", profile.display());
    Ok(Tmux::start(&cmd, &conf, 120, 30))
}

/// The rows of the screen that name one of `ids`, in screen order.
fn order_on_screen<'a>(screen: &str, ids: &[&'a str]) -> Vec<&'a str> {
    screen
        .lines()
        // Table rows only (the detail pane's title names the selection).
        .filter(|l| l.starts_with('│'))
        .filter_map(|l| {
            let first = l.split_whitespace().find(|w| w.starts_with("sensor-"))?;
            ids.iter().copied().find(|id| *id == first)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_ids_sort_naturally_and_ctrl_l_repaints() -> anyhow::Result<()> {
    let td = TestDaemon::start().await?;
    let ids = ["sensor-10", "sensor-2", "sensor-1", "sensor-9"];
    for id in ids {
        assert_eq!(td.provision(id, &DeviceKey::es256()).await?.status, 202);
    }
    let tmp = tempfile::tempdir()?;
    let tmux = tui_in_tmux(&td.profile_path(), tmp.path())?;
    let s = tmux
        .wait("the four pending devices", |s| {
            ids.iter().all(|id| s.contains(id))
        })
        .await;
    assert_eq!(
        order_on_screen(&s, &ids),
        ["sensor-1", "sensor-2", "sensor-9", "sensor-10"],
        "natural order:\n{s}"
    );

    // Another program writes over the TUI's terminal.
    let out = tmux.run(&["display-message", "-p", "-t", "e2e", "#{pane_tty}"]);
    let tty = String::from_utf8_lossy(&out.stdout).trim().to_string();
    std::fs::write(&tty, "\x1b[6;10HGARBAGE-GARBAGE-GARBAGE")?;
    tmux.wait("the garbage on screen", |s| s.contains("GARBAGE-GARBAGE"))
        .await;
    tmux.keys(&["C-l"]);
    let s = tmux
        // Not just cleared: painted again (a capture between the clear and
        // the next frame is blank).
        .wait("the repainted screen", |s| {
            !s.contains("GARBAGE") && s.contains("sensor-10")
        })
        .await;
    assert!(s.contains("sensor-10"), "{s}");
    tmux.keys(&["q"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_says_so_and_stops_retrying() -> anyhow::Result<()> {
    let td = TestDaemon::start().await?;
    let tmp = tempfile::tempdir()?;
    // The profile of an administrator whose token the daemon does not know
    // (as after `idprovd admin remove`): same name, another secret.
    let text = std::fs::read_to_string(td.profile_path())?;
    let start = text.find("token = \"").map(|i| i + "token = \"".len());
    let start = start.ok_or_else(|| anyhow::anyhow!("token in the profile"))?;
    let mut bad = text.clone();
    let end = start + text[start..].find('"').unwrap_or(0);
    let last = end.saturating_sub(4);
    bad.replace_range(last..end, "AAAA");
    assert_ne!(bad, text);
    let profile = tmp.path().join("revoked.profile");
    std::fs::write(&profile, bad)?;

    let tmux = tui_in_tmux(&profile, tmp.path())?;
    let s = tmux
        .wait("the refusal", |s| s.contains("TOKEN REFUSED"))
        .await;
    assert!(s.contains("not retrying"), "{s}");
    assert!(s.contains("token refused (revoked or not valid)"), "{s}");
    assert!(!s.contains("OFFLINE"), "no reconnection countdown:\n{s}");
    tmux.keys(&["q"]);
    Ok(())
}

#[test]
fn an_ordinary_error_prints_no_backtrace() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let out = std::process::Command::new(TUI)
        .arg("--profile")
        .arg(tmp.path().join("missing.profile"))
        .env("RUST_BACKTRACE", "1")
        .env("RUST_LIB_BACKTRACE", "1")
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(3),
        "a missing profile is exit 3: {err}"
    );
    assert!(
        err.starts_with("idprov-tui: error: cannot read profile"),
        "{err}"
    );
    assert!(!err.to_lowercase().contains("backtrace"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line:\n{err}");
    Ok(())
}
