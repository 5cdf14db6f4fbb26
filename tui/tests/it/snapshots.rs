//! Snapshot tests: the state is drawn on ratatui's `TestBackend` and the
//! screen text is compared with `tests/snapshots/<name>.txt`.
//!
//! After an intended change to the screen, regenerate and review with
//! `UPDATE_SNAPSHOTS=1 cargo test -p idprov-tui --test it snapshots::` and
//! `git diff tui/tests/snapshots`.

use std::path::PathBuf;
use std::time::Duration;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use idprov_proto::admin::{AdminEvent, ProvisioningState};
use idprov_tui::app::App;
use idprov_tui::msg::{Msg, Snapshot};
use idprov_tui::synthetic;
use idprov_tui::ui::{self, Theme};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::style::Color;

const NOW: i64 = 1_750_000_000;

fn app_with(pending: usize) -> App {
    let mut app = App::new("alice@127.0.0.1:8445".into(), NOW);
    app.on_msg(Msg::Connected);
    let snapshot = Snapshot {
        pending: synthetic::pending(pending, NOW),
        devices: synthetic::devices(12, NOW),
        audit: synthetic::audit(40, NOW),
        provisioning: Some(ProvisioningState {
            paused: false,
            reason: None,
        }),
        ..Snapshot::default()
    };
    app.on_msg(Msg::Snapshot {
        generation: 1,
        snapshot: Box::new(snapshot),
    });
    app
}

fn keys(app: &mut App, keys: &str) {
    for c in keys.chars() {
        app.on_key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE));
    }
}

fn render(app: &App, w: u16, h: u16, theme: Theme) -> Buffer {
    let mut t = match Terminal::new(TestBackend::new(w, h)) {
        Ok(t) => t,
        Err(e) => panic!("test terminal: {e}"),
    };
    if let Err(e) = t.draw(|f| ui::draw(f, app, &theme)) {
        panic!("draw: {e}");
    }
    t.backend().buffer().clone()
}

fn text(buf: &Buffer) -> String {
    let area = buf.area;
    let mut out = String::new();
    for y in 0..area.height {
        let mut line = String::new();
        for x in 0..area.width {
            line.push_str(buf[(x, y)].symbol());
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn check(name: &str, app: &App, w: u16, h: u16) -> Buffer {
    let buf = render(app, w, h, Theme { color: true });
    let got = text(&buf);
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(format!("{name}.txt"));
    let update = std::env::var_os("UPDATE_SNAPSHOTS").is_some();
    match std::fs::read_to_string(&path) {
        Ok(want) if !update => {
            assert!(
                want == got,
                "screen {name} differs from {}:\n--- want\n{want}--- got\n{got}\n\
                 (UPDATE_SNAPSHOTS=1 rewrites it after an intended change)",
                path.display()
            );
        }
        Ok(_) | Err(_) => {
            if let Err(e) = std::fs::write(&path, &got) {
                panic!("write {}: {e}", path.display());
            }
            assert!(
                update,
                "new snapshot {} written; review and commit it",
                path.display()
            );
        }
    }
    buf
}

#[test]
fn pending_80x24_with_detail_pane() {
    let mut app = app_with(30);
    keys(&mut app, "jj j");
    check("pending_80x24", &app, 80, 24);
}

#[test]
fn pending_wide_shows_source_and_first_seen() {
    let mut app = app_with(30);
    keys(&mut app, "G");
    check("pending_140x30", &app, 140, 30);
}

#[test]
fn bulk_confirmation_states_the_count() {
    let mut app = app_with(1000);
    keys(&mut app, "/sensor-00");
    app.on_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE));
    keys(&mut app, "A");
    check("bulk_confirm_80x24", &app, 80, 24);
}

#[test]
fn filter_prompt_while_typing() {
    let mut app = app_with(200);
    keys(&mut app, "/sensor-0001 ");
    check("filter_typing_80x24", &app, 80, 24);
}

#[test]
fn help_is_generated_from_the_keymap() {
    let mut app = app_with(3);
    keys(&mut app, "?");
    check("help_80x24", &app, 80, 24);
}

#[test]
fn devices_view_with_keys_and_expiry() {
    let mut app = app_with(3);
    keys(&mut app, "2j");
    check("devices_80x24", &app, 80, 24);
}

#[test]
fn oob_view_lists_what_each_entry_matches_by() {
    use idprov_proto::KeyFormat;
    use idprov_proto::admin::OobEntryView;
    let mut app = app_with(3);
    let entry = |id: &str| OobEntryView {
        device_id: id.parse().unwrap_or_else(|e| panic!("{id}: {e}")),
        public_key: None,
        key_format: None,
        key_fingerprint: None,
        mac: None,
        has_secret: false,
        secret_consumed: false,
        setup_code: None,
        expires_at: None,
        note: None,
        created_at: NOW - 86_400,
        updated_at: NOW - 3600,
    };
    let mut by_key = entry("cam-01");
    by_key.key_format = Some(KeyFormat::ES256_X509_PEM);
    by_key.key_fingerprint = Some("Xq3bO0yq1mQ5d8mJkV3y6n2mG1w0b5kq3JtQJ2bVZbk".into());
    by_key.note = Some("lobby\u{1b}[5m camera \u{7}".into());
    let mut by_mac = entry("plug-07");
    by_mac.mac = Some(
        "02:00:5e:10:00:07"
            .parse()
            .unwrap_or_else(|e| panic!("{e}")),
    );
    by_mac.expires_at = Some(NOW + 3 * 86_400);
    let mut by_secret = entry("valve-3");
    by_secret.has_secret = true;
    by_secret.secret_consumed = true;
    by_secret.expires_at = Some(NOW - 60);
    app.on_msg(Msg::Oob(vec![by_key, by_mac, by_secret]));
    keys(&mut app, "3");
    check("oob_80x24", &app, 80, 24);
}

#[test]
fn alerts_view_when_paused() {
    let mut app = app_with(120);
    app.on_msg(Msg::Event(AdminEvent::Provisioning {
        state: ProvisioningState {
            paused: true,
            reason: Some("rogue _idprov._tcp server at 192.0.2.66".into()),
        },
    }));
    keys(&mut app, "4");
    check("alerts_paused_80x24", &app, 80, 24);
}

#[test]
fn audit_view_starts_at_the_newest_entry() {
    let mut app = app_with(3);
    keys(&mut app, "5");
    check("audit_80x24", &app, 80, 24);
}

#[test]
fn disconnected_header_and_status() {
    let mut app = app_with(5);
    app.on_msg(Msg::Disconnected {
        error: "connection refused".into(),
        retry_in: Duration::from_secs(4),
        attempt: 3,
    });
    check("disconnected_80x24", &app, 80, 24);
}

#[test]
fn before_the_first_snapshot_it_says_loading() {
    let mut app = App::new("alice@127.0.0.1:8445".into(), NOW);
    app.on_msg(Msg::Connected);
    check("loading_80x24", &app, 80, 24);
}

/// A device that puts terminal escapes, control characters and non-ASCII
/// into every free-text field it controls.
#[test]
fn device_supplied_strings_never_reach_the_screen_raw() {
    let mut app = app_with(0);
    let mut p = synthetic::pending(1, NOW).remove(0);
    let evil = "\u{1b}[2J\u{1b}]0;owned\u{7}\r\n\u{9b}31m\u{202e}ü";
    p.source = format!("10.0.0.1{evil}");
    p.flags = vec![format!("flag{evil}")];
    p.verification_code = format!("CODE{evil}");
    p.key_fingerprint = format!("fp{evil}");
    app.on_msg(Msg::Event(AdminEvent::PendingUpserted { pending: p }));
    for (view, w) in [("1", 80), ("1", 140), ("4", 80)] {
        keys(&mut app, view);
        let buf = render(&app, w, 24, Theme { color: true });
        for cell in buf.content() {
            let s = cell.symbol();
            assert!(
                s.chars()
                    .all(|c| !c.is_control() && c != '\u{9b}' && c != '\u{202e}'),
                "raw control character {s:?} on screen"
            );
        }
        let screen = text(&buf);
        assert!(
            screen.contains("\\u{1b}[2J"),
            "escaped form shown:\n{screen}"
        );
    }
    keys(&mut app, "1a");
    let screen = text(&render(&app, 80, 24, Theme { color: true }));
    assert!(screen.contains("CODE\\u{1b}[2J"), "{screen}");
}

#[test]
fn no_color_uses_modifiers_only() {
    let mut app = app_with(60);
    keys(&mut app, " ");
    app.on_msg(Msg::Event(AdminEvent::Provisioning {
        state: ProvisioningState {
            paused: true,
            reason: None,
        },
    }));
    for view in ["1", "2", "4", "5"] {
        keys(&mut app, view);
        let buf = render(&app, 100, 30, Theme::plain());
        for cell in buf.content() {
            assert_eq!(cell.fg, Color::Reset, "foreground colour with NO_COLOR");
            assert_eq!(cell.bg, Color::Reset, "background colour with NO_COLOR");
        }
        // The colour theme does use colour, so the check above can fail.
        let coloured = render(&app, 100, 30, Theme { color: true });
        assert!(coloured.content().iter().any(|c| c.fg != Color::Reset));
    }
}

#[test]
fn tiny_terminals_do_not_panic() {
    let mut app = app_with(50);
    for view in ["1", "2", "3", "4", "5", "?"] {
        keys(&mut app, view);
        for (w, h) in [(1, 1), (10, 3), (20, 6), (40, 10), (80, 5)] {
            render(&app, w, h, Theme { color: true });
        }
        if view == "?" {
            app.on_key(KeyEvent::new(KeyCode::Esc, KeyModifiers::NONE));
        }
    }
    keys(&mut app, "1A");
    render(&app, 12, 4, Theme::plain());
}
