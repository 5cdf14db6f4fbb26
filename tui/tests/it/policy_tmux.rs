//! The Policy view and the pending detail's "decided by", in the real TUI
//! in tmux against a real daemon: the pending detail names the rule that
//! would decide a device, the view lists the rules, and a window opened
//! and closed with key presses admits a device while it is open and none
//! after.

use idprov_proto::policy::{Rule, RuleAction};
use idprov_tests::{DeviceKey, TestDaemon};

use crate::e2e_tmux::Tmux;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_and_rules_in_the_tui() -> anyhow::Result<()> {
    let td = TestDaemon::start().await?;
    assert_eq!(
        td.provision("lab-1", &DeviceKey::es256()).await?.status,
        202
    );
    let admin = td.admin()?;
    let rule = Rule {
        name: "lab".parse()?,
        action: RuleAction::Approve,
        device_id: Some("lab-*".parse()?),
        key_type: None,
        mac_oui: None,
        source: None,
        flags: Vec::new(),
        time: None,
    };
    admin.rule_add(0, rule, None).await?;

    let tmp = tempfile::tempdir()?;
    let conf = tmp.path().join("tmux.conf");
    std::fs::write(&conf, "set -g remain-on-exit on\nset -g status off\n")?;
    let cmd = format!(
        "'{}' --profile '{}'",
        env!("CARGO_BIN_EXE_idprov-tui"),
        td.profile_path().display()
    );
    let tmux = Tmux::start_named("policy", &cmd, &conf, 120, 32);

    // The pending detail says which rule decides lab-1 at its next request.
    tmux.wait("the rule in the pending detail", |s| {
        s.contains("lab-1") && s.contains("rule:lab (approve)")
    })
    .await;

    // 6: the Policy view lists the rule.
    tmux.keys(&["6"]);
    tmux.wait("the rule in the Policy view", |s| {
        s.lines()
            .any(|l| l.contains("approve lab") && l.contains("device_id=lab-*"))
    })
    .await;

    // o, y: a window opens; it is listed live, and admits a device.
    tmux.keys(&["o"]);
    tmux.wait("the window confirmation", |s| {
        s.contains("Open an enrollment window?")
    })
    .await;
    tmux.keys(&["y"]);
    tmux.wait("the open window", |s| {
        s.contains("window 1 open until")
            && s.lines()
                .any(|l| l.contains("window 1") && l.contains("admitted=0"))
    })
    .await;
    let a = td.provision("porch-1", &DeviceKey::es256()).await?;
    assert_eq!(a.status, 200, "admitted by the window: {:?}", a.body);
    tmux.wait("the admission counted", |s| s.contains("admitted=1"))
        .await;

    // x, y on the window: closed, and the next device waits again.
    tmux.keys(&["g", "x"]);
    tmux.wait("the close confirmation", |s| s.contains("Close window 1?"))
        .await;
    tmux.keys(&["y"]);
    tmux.wait("the closed window", |s| {
        s.contains("window 1 closed, 1 admitted") && s.contains("closed (admin)")
    })
    .await;
    assert_eq!(
        td.provision("porch-2", &DeviceKey::es256()).await?.status,
        202
    );
    Ok(())
}
