//! Logic tests of the state: keys in, commands and state out.

use std::time::Duration;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use idprov_proto::DeviceId;
use idprov_proto::admin::{AdminEvent, DeviceStatus, PendingView, ProvisioningState};

use super::*;
use crate::msg::{FailKind, Failure, Outcome, Verb};
use crate::synthetic;

const NOW: i64 = 1_750_000_000;

fn id(s: &str) -> DeviceId {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn key(c: char) -> KeyEvent {
    KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)
}
fn code(c: KeyCode) -> KeyEvent {
    KeyEvent::new(c, KeyModifiers::NONE)
}

fn typed(app: &mut App, s: &str) -> Vec<Command> {
    s.chars().flat_map(|c| app.on_key(key(c))).collect()
}

/// An app that is connected and has loaded `n` pending requests.
fn loaded(n: usize) -> App {
    let mut app = App::new("alice@https://hub:8445".into(), NOW);
    let cmds = app.on_msg(Msg::Connected);
    assert_eq!(cmds, [Command::Reload { generation: 1 }]);
    let snapshot = Snapshot {
        pending: synthetic::pending(n, NOW),
        devices: synthetic::devices(3, NOW),
        provisioning: Some(ProvisioningState {
            paused: false,
            reason: None,
        }),
        ..Snapshot::default()
    };
    let cmds = app.on_msg(Msg::Snapshot {
        generation: 1,
        snapshot: Box::new(snapshot),
    });
    assert!(cmds.is_empty());
    app
}

fn pending(name: &str, revision: u64) -> PendingView {
    let mut p = synthetic::pending(1, NOW).remove(0);
    p.device_id = id(name);
    p.revision = revision;
    p.flags.clear();
    p
}

fn confirm_op(app: &App) -> Op {
    match &app.mode {
        Mode::Confirm(c) => c.op.clone(),
        other => panic!("expected a confirmation, got {other:?}"),
    }
}

fn confirm_title(app: &App) -> String {
    match &app.mode {
        Mode::Confirm(c) => c.title.clone(),
        other => panic!("expected a confirmation, got {other:?}"),
    }
}

#[test]
fn approving_one_device_asks_with_its_verification_code_then_sends_its_revision() {
    let mut app = loaded(10);
    app.on_key(key('j'));
    let p = app
        .pending
        .selected()
        .cloned()
        .unwrap_or_else(|| panic!("no selection"));
    assert!(
        app.on_key(key('a')).is_empty(),
        "nothing is sent before yes"
    );
    let Mode::Confirm(c) = &app.mode else {
        panic!("no confirmation")
    };
    assert_eq!(c.title, format!("Approve {}?", p.device_id));
    assert!(c.body.iter().any(|l| l.contains(&p.verification_code)));
    let cmds = app.on_key(key('y'));
    assert_eq!(
        cmds,
        [Command::Approve(vec![Decision {
            id: p.device_id.clone(),
            revision: p.revision
        }])]
    );
    assert_eq!(app.mode, Mode::Normal);
}

#[test]
fn no_cancels_a_confirmation() {
    let mut app = loaded(3);
    app.on_key(key('r'));
    assert!(matches!(confirm_op(&app), Op::Reject(_)));
    assert!(app.on_key(code(KeyCode::Esc)).is_empty());
    assert_eq!(app.mode, Mode::Normal);
    assert!(!app.quit, "Esc in a confirmation only closes it");
}

#[test]
fn marked_devices_are_decided_together() {
    let mut app = loaded(10);
    typed(&mut app, "  j ");
    // Marked 0, 1 and 3 (space moves down one).
    assert_eq!(app.pending.marked_count(), 3);
    app.on_key(key('a'));
    assert_eq!(confirm_title(&app), "Approve the 3 marked devices?");
    let Op::Approve(d) = confirm_op(&app) else {
        panic!("not an approval")
    };
    let ids: Vec<&str> = d.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["sensor-000000", "sensor-000001", "sensor-000003"]);
}

#[test]
fn bulk_decision_takes_everything_matching_the_filter_and_states_the_count() {
    let mut app = loaded(1000);
    app.on_key(key('/'));
    typed(&mut app, "sensor-0001");
    app.on_key(code(KeyCode::Enter));
    assert_eq!(app.pending.len(), 100);
    app.on_key(key('R'));
    let title = confirm_title(&app);
    assert_eq!(
        title,
        "Reject 100 pending devices matching \"sensor-0001\"?"
    );
    let Op::Reject(d) = confirm_op(&app) else {
        panic!("not a rejection")
    };
    assert_eq!(d.len(), 100);
    assert!(d.iter().all(|d| d.id.as_str().starts_with("sensor-0001")));
    let cmds = app.on_key(key('y'));
    assert!(matches!(&cmds[..], [Command::Reject(v)] if v.len() == 100));
}

#[test]
fn bulk_decision_without_filter_says_all() {
    let mut app = loaded(1234);
    app.on_key(key('A'));
    assert_eq!(
        confirm_title(&app),
        "Approve ALL 1,234 pending devices (no filter)?"
    );
}

#[test]
fn deciding_with_nothing_pending_says_so() {
    let mut app = loaded(0);
    assert!(app.on_key(key('a')).is_empty());
    assert_eq!(app.mode, Mode::Normal);
    assert!(
        app.status
            .as_ref()
            .is_some_and(|s| s.text.contains("no pending device"))
    );
}

#[test]
fn filter_edits_live_and_esc_restores_the_previous_filter() {
    let mut app = loaded(100);
    app.on_key(key('/'));
    typed(&mut app, "sensor-000099");
    assert_eq!(app.pending.len(), 1);
    app.on_key(code(KeyCode::Backspace));
    assert_eq!(app.pending.len(), 10);
    app.on_key(code(KeyCode::Enter));
    assert_eq!(app.pending.filter(), "sensor-00009");
    app.on_key(key('/'));
    typed(&mut app, "zzz");
    assert_eq!(app.pending.len(), 0);
    app.on_key(code(KeyCode::Esc));
    assert_eq!(app.pending.filter(), "sensor-00009");
    assert_eq!(app.pending.len(), 10);
    // Keys are text while filtering: q did not quit.
    app.on_key(key('/'));
    typed(&mut app, "q");
    assert!(!app.quit);
}

#[test]
fn esc_clears_marks_then_filter_then_quits() {
    let mut app = loaded(10);
    app.on_key(key(' '));
    app.on_key(key('/'));
    typed(&mut app, "sensor");
    app.on_key(code(KeyCode::Enter));
    app.on_key(code(KeyCode::Esc));
    assert_eq!(app.pending.marked_count(), 0);
    assert_eq!(app.pending.filter(), "sensor");
    app.on_key(code(KeyCode::Esc));
    assert_eq!(app.pending.filter(), "");
    assert!(!app.quit);
    app.on_key(code(KeyCode::Esc));
    assert!(app.quit);
}

#[test]
fn selection_stays_on_the_same_device_as_rows_arrive() {
    let mut app = loaded(0);
    for n in ["m-1", "m-3", "m-5"] {
        app.on_msg(Msg::Event(AdminEvent::PendingUpserted {
            pending: pending(n, 1),
        }));
    }
    app.on_key(key('G'));
    assert_eq!(
        app.pending.selected().map(|p| p.device_id.as_str()),
        Some("m-5")
    );
    for n in ["a-1", "m-2", "m-4"] {
        app.on_msg(Msg::Event(AdminEvent::PendingUpserted {
            pending: pending(n, 1),
        }));
    }
    assert_eq!(
        app.pending.selected().map(|p| p.device_id.as_str()),
        Some("m-5")
    );
    assert_eq!(app.pending.cursor(), 5);
}

#[test]
fn older_revisions_never_replace_newer_ones() {
    let mut app = loaded(0);
    app.apply_event(AdminEvent::PendingUpserted {
        pending: pending("d-1", 5),
    });
    let mut old = pending("d-1", 4);
    old.attempts = 999;
    app.apply_event(AdminEvent::PendingUpserted { pending: old });
    assert_eq!(app.pending.get(&id("d-1")).map(|p| p.revision), Some(5));
}

#[test]
fn events_during_a_reload_are_replayed_on_top_of_the_snapshot() {
    let mut app = App::new("a@b".into(), NOW);
    let cmds = app.on_msg(Msg::Connected);
    assert_eq!(cmds, [Command::Reload { generation: 1 }]);
    // While the lists load: one device arrives, one is decided.
    app.on_msg(Msg::Event(AdminEvent::PendingUpserted {
        pending: pending("late-1", 1),
    }));
    app.on_msg(Msg::Event(AdminEvent::PendingRemoved {
        device_id: id("old-1"),
    }));
    assert_eq!(app.pending.total(), 0, "queued, not applied");
    // The snapshot was read before either event.
    let snapshot = Snapshot {
        pending: vec![pending("old-1", 1), pending("old-2", 1)],
        ..Snapshot::default()
    };
    app.on_msg(Msg::Snapshot {
        generation: 1,
        snapshot: Box::new(snapshot),
    });
    let ids: Vec<&str> = app
        .pending
        .iter_all()
        .map(|p| p.device_id.as_str())
        .collect();
    assert_eq!(ids, ["late-1", "old-2"]);
}

#[test]
fn a_stale_snapshot_is_ignored() {
    let mut app = loaded(2);
    let cmds = app.on_key(KeyEvent::new(KeyCode::Char('r'), KeyModifiers::CONTROL));
    assert_eq!(cmds, [Command::Reload { generation: 2 }]);
    app.on_msg(Msg::Snapshot {
        generation: 1,
        snapshot: Box::default(),
    });
    assert_eq!(app.pending.total(), 2);
    assert!(app.is_loading());
}

#[test]
fn losing_the_connection_is_shown_and_reconnecting_reloads() {
    let mut app = loaded(5);
    app.on_msg(Msg::Disconnected {
        error: "connection refused".into(),
        retry_in: Duration::from_secs(2),
        attempt: 1,
    });
    assert!(matches!(app.conn, Conn::Lost { attempt: 1, .. }));
    let s = app.status.clone().unwrap_or_else(|| panic!("no status"));
    assert_eq!(s.level, Level::Error);
    assert!(
        s.text.contains("connection to the daemon lost"),
        "{}",
        s.text
    );
    assert_eq!(app.pending.total(), 5, "the lists stay while disconnected");
    let cmds = app.on_msg(Msg::Connected);
    assert_eq!(cmds, [Command::Reload { generation: 2 }]);
    app.on_msg(Msg::Snapshot {
        generation: 2,
        snapshot: Box::new(Snapshot {
            pending: synthetic::pending(7, NOW),
            ..Snapshot::default()
        }),
    });
    assert_eq!(app.pending.total(), 7);
    assert_eq!(app.conn, Conn::Connected);
    assert!(
        app.status
            .as_ref()
            .is_some_and(|s| s.text.contains("reconnected"))
    );
}

#[test]
fn lagged_reloads_and_oob_changes_reload_the_oob_list() {
    let mut app = loaded(1);
    let cmds = app.on_msg(Msg::Event(AdminEvent::Lagged { missed: 12 }));
    assert_eq!(cmds, [Command::Reload { generation: 2 }]);
    assert!(
        app.status
            .as_ref()
            .is_some_and(|s| s.text.contains("12 events missed"))
    );
    let mut app = loaded(1);
    let cmds = app.on_msg(Msg::Event(AdminEvent::OobChanged { count: 3 }));
    assert_eq!(cmds, [Command::ReloadOob]);
}

#[test]
fn a_conflict_says_another_administrator_decided_first() {
    let mut app = loaded(3);
    let d = app
        .pending
        .selected()
        .cloned()
        .unwrap_or_else(|| panic!("none"));
    // The other administrator's decision removed it.
    app.apply_event(AdminEvent::PendingRemoved {
        device_id: d.device_id.clone(),
    });
    let mut o = Outcome::new(Verb::Approve, 1);
    o.failures.push(Failure {
        id: Some(d.device_id.clone()),
        revision: Some(d.revision),
        kind: FailKind::Conflict,
        message: "revision mismatch".into(),
    });
    app.on_msg(Msg::Done(o));
    let s = app.status.clone().unwrap_or_else(|| panic!("no status"));
    assert_eq!(s.level, Level::Error);
    assert_eq!(
        s.text,
        format!(
            "{}: another administrator decided this device first",
            d.device_id
        )
    );
}

#[test]
fn a_conflict_on_a_changed_request_says_to_look_again() {
    let mut app = loaded(0);
    app.apply_event(AdminEvent::PendingUpserted {
        pending: pending("d-1", 3),
    });
    let mut o = Outcome::new(Verb::Approve, 1);
    o.failures.push(Failure {
        id: Some(id("d-1")),
        revision: Some(2),
        kind: FailKind::Conflict,
        message: String::new(),
    });
    app.on_msg(Msg::Done(o));
    assert!(
        app.status
            .as_ref()
            .is_some_and(|s| s.text.contains("changed since you looked"))
    );
}

#[test]
fn a_successful_approval_moves_the_device_at_once() {
    let mut app = loaded(3);
    let p = app
        .pending
        .selected()
        .cloned()
        .unwrap_or_else(|| panic!("none"));
    let mut dev = synthetic::devices(1, NOW).remove(0);
    dev.device_id = p.device_id.clone();
    let mut o = Outcome::new(Verb::Approve, 1);
    o.done.push(p.device_id.clone());
    o.devices.push(dev);
    app.on_msg(Msg::Done(o));
    assert!(app.pending.get(&p.device_id).is_none());
    assert_eq!(
        app.devices.get(&p.device_id).map(|d| d.status),
        Some(DeviceStatus::Active)
    );
    let s = app.status.clone().unwrap_or_else(|| panic!("no status"));
    assert_eq!(s.level, Level::Ok);
    assert!(s.text.starts_with(&format!("approved {}", p.device_id)));
}

#[test]
fn bulk_results_are_summarised_by_reason() {
    let mut app = loaded(0);
    let mut o = Outcome::new(Verb::Reject, 5);
    for i in 0..3 {
        o.done.push(id(&format!("ok-{i}")));
    }
    for (i, kind) in [FailKind::Conflict, FailKind::NotFound]
        .into_iter()
        .enumerate()
    {
        o.failures.push(Failure {
            id: Some(id(&format!("bad-{i}"))),
            revision: Some(1),
            kind,
            message: String::new(),
        });
    }
    app.on_msg(Msg::Done(o));
    let s = app.status.clone().unwrap_or_else(|| panic!("no status"));
    assert_eq!(s.level, Level::Warn);
    assert_eq!(
        s.text,
        "rejected 3 of 5; 1 decided first by another administrator or changed, 1 already gone"
    );
}

#[test]
fn daemon_messages_are_escaped_in_the_status_line() {
    let mut app = loaded(1);
    let mut o = Outcome::new(Verb::Revoke, 1);
    o.failures.push(Failure {
        id: None,
        revision: None,
        kind: FailKind::Other("bad_request".into()),
        message: "evil\u{1b}]0;pwned\u{7}".into(),
    });
    app.on_msg(Msg::Done(o));
    let s = app.status.clone().unwrap_or_else(|| panic!("no status"));
    assert!(!s.text.contains('\u{1b}'), "{}", s.text);
    assert!(s.text.contains("evil\\u{1b}]0;pwned\\u{7}"));
}

#[test]
fn revoke_asks_first_and_refuses_already_revoked_devices() {
    let mut app = loaded(0);
    app.on_key(key('2'));
    assert_eq!(app.view, View::Devices);
    app.on_key(key('x'));
    let Op::Revoke(d) = confirm_op(&app) else {
        panic!("not a revoke")
    };
    assert_eq!(d.id.as_str(), "meter-0000");
    app.on_key(key('n'));
    let mut dev = synthetic::devices(1, NOW).remove(0);
    dev.status = DeviceStatus::Revoked;
    dev.revision = 9;
    app.apply_event(AdminEvent::DeviceUpserted { device: dev });
    app.on_key(key('x'));
    assert_eq!(app.mode, Mode::Normal);
    assert!(
        app.status
            .as_ref()
            .is_some_and(|s| s.text.contains("already revoked"))
    );
}

#[test]
fn provisioning_switch_pauses_and_resumes_with_confirmation() {
    let mut app = loaded(0);
    app.on_key(key('4'));
    app.on_key(key('p'));
    assert_eq!(confirm_title(&app), "Pause provisioning?");
    let cmds = app.on_key(key('y'));
    assert!(matches!(
        &cmds[..],
        [Command::SetProvisioning(ProvisioningState {
            paused: true,
            ..
        })]
    ));
    app.apply_event(AdminEvent::Provisioning {
        state: ProvisioningState {
            paused: true,
            reason: Some("rogue server".into()),
        },
    });
    app.on_key(key('p'));
    assert_eq!(confirm_title(&app), "Resume provisioning?");
    let cmds = app.on_key(code(KeyCode::Enter));
    assert_eq!(
        cmds,
        [Command::SetProvisioning(ProvisioningState {
            paused: false,
            reason: None
        })]
    );
}

#[test]
fn flags_raise_alerts_that_lead_to_the_device() {
    let mut app = loaded(100);
    // synthetic: every 50th (i % 50 == 7) is flagged.
    assert_eq!(app.alerts.total(), 2);
    app.on_key(key('/'));
    typed(&mut app, "nothing-matches");
    app.on_key(code(KeyCode::Enter));
    app.on_key(key('4'));
    app.on_key(key('j'));
    app.on_key(code(KeyCode::Enter));
    assert_eq!(app.view, View::Pending);
    assert_eq!(
        app.pending.filter(),
        "",
        "the filter that hid it was cleared"
    );
    assert_eq!(
        app.pending.selected().map(|p| p.device_id.as_str()),
        Some("sensor-000057")
    );
    // Deciding the device clears its alert.
    app.apply_event(AdminEvent::PendingRemoved {
        device_id: id("sensor-000057"),
    });
    assert_eq!(app.alerts.total(), 1);
}

#[test]
fn oob_removal_is_confirmed() {
    let mut app = loaded(0);
    let entry = idprov_proto::admin::OobEntryView {
        device_id: id("cam-1"),
        public_key: None,
        key_format: None,
        key_fingerprint: None,
        mac: None,
        has_secret: true,
        secret_consumed: false,
        setup_code: None,
        expires_at: None,
        note: None,
        created_at: NOW,
        updated_at: NOW,
    };
    app.on_msg(Msg::Oob(vec![entry]));
    app.on_key(key('3'));
    app.on_key(key('d'));
    assert_eq!(confirm_op(&app), Op::RemoveOob(vec![id("cam-1")]));
    let cmds = app.on_key(key('y'));
    assert_eq!(cmds, [Command::RemoveOob(vec![id("cam-1")])]);
    let mut o = Outcome::new(Verb::RemoveOob, 1);
    o.done.push(id("cam-1"));
    app.on_msg(Msg::Done(o));
    assert_eq!(app.oob.total(), 0);
}

#[test]
fn tab_cycles_views_and_help_opens_and_closes() {
    let mut app = loaded(0);
    let mut seen = vec![app.view];
    for _ in 0..6 {
        app.on_key(code(KeyCode::Tab));
        seen.push(app.view);
    }
    assert_eq!(
        seen,
        [
            View::Pending,
            View::Devices,
            View::Oob,
            View::Alerts,
            View::Audit,
            View::Policy,
            View::Pending
        ]
    );
    app.on_key(KeyEvent::new(KeyCode::BackTab, KeyModifiers::SHIFT));
    assert_eq!(app.view, View::Policy);
    app.on_key(key('?'));
    assert!(matches!(app.mode, Mode::Help { .. }));
    app.on_key(key('a'));
    assert!(
        matches!(app.mode, Mode::Help { .. }),
        "view keys are inert in help"
    );
    app.on_key(key('q'));
    assert_eq!(app.mode, Mode::Normal);
    assert!(!app.quit);
}

#[test]
fn the_audit_log_follows_new_entries_when_at_the_bottom() {
    let mut app = loaded(0);
    let entries = synthetic::audit(5, NOW);
    app.on_msg(Msg::Event(AdminEvent::Audit {
        entry: entries[0].clone(),
    }));
    for e in &entries[1..] {
        app.on_msg(Msg::Event(AdminEvent::Audit { entry: e.clone() }));
    }
    assert_eq!(app.audit.selected().map(|e| e.seq), Some(5));
    app.view = View::Audit;
    app.on_key(key('g'));
    let mut e = entries[4].clone();
    e.seq = 6;
    app.on_msg(Msg::Event(AdminEvent::Audit { entry: e }));
    assert_eq!(
        app.audit.selected().map(|e| e.seq),
        Some(1),
        "scrolled up: stays put"
    );
}

#[test]
fn a_security_alert_event_is_listed_escaped_and_survives_a_reload() {
    use idprov_proto::admin::{Alert as WireAlert, AlertKind};
    let mut app = loaded(0);
    let before = app.alerts.total();
    app.apply_event(AdminEvent::Alert {
        alert: WireAlert {
            id: 1,
            at: NOW,
            kind: AlertKind::RogueAdvertiser,
            instance: "evil\u{1b}[2J._idprov._tcp.local.".into(),
            addresses: vec!["10.0.0.9".into()],
            port: Some(8445),
            daemon_id: None,
            ca_fingerprint: None,
            detail: "another advertiser".into(),
            paused: true,
            audit_seq: 7,
        },
    });
    assert_eq!(app.alerts.total(), before + 1);
    let row = app
        .alerts
        .iter_all()
        .find(|a| a.key.kind() == "security")
        .cloned()
        .unwrap_or_else(|| panic!("no security row"));
    assert_eq!(row.flags, ["rogue_advertiser"]);
    assert!(!row.key.subject().contains('\u{1b}'));
    // A reload rebuilds the flag alerts but keeps the security one.
    let cmds = app.on_key(KeyEvent::new(KeyCode::Char('r'), KeyModifiers::CONTROL));
    let generation = match cmds.first() {
        Some(Command::Reload { generation }) => *generation,
        other => panic!("expected a reload, got {other:?}"),
    };
    app.on_msg(Msg::Snapshot {
        generation,
        snapshot: Box::default(),
    });
    assert!(app.alerts.iter_all().any(|a| a.key == row.key));
}

#[test]
fn a_setup_code_alert_is_listed_under_its_device() {
    use idprov_proto::admin::{Alert as WireAlert, AlertKind};
    let mut app = loaded(0);
    app.apply_event(AdminEvent::Alert {
        alert: WireAlert {
            id: 2,
            at: NOW,
            kind: AlertKind::SetupCodeLocked,
            instance: "label-7".into(),
            addresses: vec!["10.0.0.23".into()],
            port: None,
            daemon_id: None,
            ca_fingerprint: None,
            detail: "setup code of label-7 locked after 10 exchanges".into(),
            paused: false,
            audit_seq: 9,
        },
    });
    let row = app
        .alerts
        .iter_all()
        .find(|a| a.key.kind() == "security")
        .cloned()
        .unwrap_or_else(|| panic!("no security row"));
    assert_eq!(row.flags, ["setup_code_locked"]);
    assert_eq!(row.key.subject(), "label-7");
}
