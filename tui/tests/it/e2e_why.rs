//! Why a device waits, in the real TUI (issue 18 item 3): a device the OOB
//! list names but a flag held says so in the pending view's detail and in
//! the approval dialog, with its flags; an unknown device says it is not
//! listed.

use idprov_tests::{DeviceKey, TestDaemon};

use crate::e2e_tmux::Tmux;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_listed_device_says_why_it_waits() -> anyhow::Result<()> {
    let td = TestDaemon::start().await?;
    let shared = DeviceKey::es256();
    td.oob_key("k-1", &shared).await?;
    assert_eq!(td.provision("x-1", &shared).await?.status, 202);
    assert_eq!(td.provision("k-1", &shared).await?.status, 202);

    let tmp = tempfile::tempdir()?;
    let conf = tmp.path().join("tmux.conf");
    std::fs::write(&conf, "set -g status off\n")?;
    let cmd = format!(
        "'{}' --profile '{}'",
        env!("CARGO_BIN_EXE_idprov-tui"),
        td.profile_path().display()
    );
    let tmux = Tmux::start(&cmd, &conf, 120, 40);
    tmux.wait("both pending devices", |s| {
        s.contains("k-1") && s.contains("x-1")
    })
    .await;
    // The list is sorted by device ID: k-1 first, under the cursor.
    tmux.wait("k-1's reason in the detail", |s| {
        s.contains("matched its OOB entry by key, held by flag key_reused")
    })
    .await;

    tmux.keys(&["a"]);
    let s = tmux
        .wait("the approval dialog", |s| s.contains("Approve k-1?"))
        .await;
    assert!(s.contains("flags              key_reused"), "{s}");
    assert!(
        s.contains("OOB list           matched its OOB entry by key, held by flag key_reused"),
        "{s}"
    );
    tmux.keys(&["n", "Down"]);
    tmux.wait("x-1 not listed", |s| s.contains("not on the OOB list"))
        .await;
    tmux.keys(&["q"]);
    Ok(())
}
