//! The keymap, as data. Key handling looks actions up here and the `?` help
//! and the hint line are generated from the same table, so they cannot drift
//! apart.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use crate::app::View;

/// A key as the keymap names it. Letters carry their case (`A` is Shift-a);
/// `ctrl` is the only modifier that matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    pub code: KeyCode,
    pub ctrl: bool,
}

const fn ch(c: char) -> Key {
    Key {
        code: KeyCode::Char(c),
        ctrl: false,
    }
}
const fn ctrl(c: char) -> Key {
    Key {
        code: KeyCode::Char(c),
        ctrl: true,
    }
}
const fn k(code: KeyCode) -> Key {
    Key { code, ctrl: false }
}

impl Key {
    /// The key of a terminal event, or `None` for releases and for keys
    /// with modifiers the keymap does not use (Alt, Super).
    pub fn from_event(ev: &KeyEvent) -> Option<Key> {
        if ev.kind == KeyEventKind::Release {
            return None;
        }
        if ev
            .modifiers
            .intersects(KeyModifiers::ALT | KeyModifiers::SUPER | KeyModifiers::META)
        {
            return None;
        }
        Some(Key {
            code: ev.code,
            ctrl: ev.modifiers.contains(KeyModifiers::CONTROL),
        })
    }

    pub fn label(&self) -> String {
        let base = match self.code {
            KeyCode::Char(' ') => "Space".to_string(),
            KeyCode::Char(c) if self.ctrl => c.to_ascii_uppercase().to_string(),
            KeyCode::Char(c) => c.to_string(),
            KeyCode::Esc => "Esc".into(),
            KeyCode::Enter => "Enter".into(),
            KeyCode::Tab => "Tab".into(),
            KeyCode::BackTab => "S-Tab".into(),
            KeyCode::Up => "↑".into(),
            KeyCode::Down => "↓".into(),
            KeyCode::Left => "←".into(),
            KeyCode::Right => "→".into(),
            KeyCode::Home => "Home".into(),
            KeyCode::End => "End".into(),
            KeyCode::PageUp => "PgUp".into(),
            KeyCode::PageDown => "PgDn".into(),
            KeyCode::Backspace => "Bksp".into(),
            KeyCode::F(n) => format!("F{n}"),
            other => format!("{other:?}"),
        };
        if self.ctrl {
            format!("Ctrl-{base}")
        } else {
            base
        }
    }
}

/// Where a binding applies. Lookup tries the most specific scope first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Global,
    Pending,
    Devices,
    Oob,
    Alerts,
    Audit,
    Policy,
    /// Typing a filter.
    Filter,
    /// A yes/no question is open.
    Confirm,
    /// The help overlay is open.
    Help,
}

impl Scope {
    pub fn title(self) -> &'static str {
        match self {
            Scope::Global => "Everywhere",
            Scope::Pending => "Pending",
            Scope::Devices => "Devices",
            Scope::Oob => "OOB entries",
            Scope::Alerts => "Alerts",
            Scope::Audit => "Audit log",
            Scope::Policy => "Windows and rules",
            Scope::Filter => "While typing a filter",
            Scope::Confirm => "In a confirmation",
            Scope::Help => "In this help",
        }
    }

    pub fn of_view(v: View) -> Scope {
        match v {
            View::Pending => Scope::Pending,
            View::Devices => Scope::Devices,
            View::Oob => Scope::Oob,
            View::Alerts => Scope::Alerts,
            View::Audit => Scope::Audit,
            View::Policy => Scope::Policy,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Quit,
    /// Esc: close, clear the filter or the marks, or quit.
    Back,
    Help,
    NextView,
    PrevView,
    GoTo(View),
    Up,
    Down,
    Top,
    Bottom,
    PageUp,
    PageDown,
    Filter,
    Reload,
    ToggleMark,
    ClearMarks,
    Approve,
    Reject,
    ApproveMatching,
    RejectMatching,
    Revoke,
    RemoveOob,
    ToggleProvisioning,
    OpenWindow,
    CloseWindow,
    /// Enter on an alert: show the device it is about.
    Open,
    Yes,
    No,
    FilterApply,
    FilterCancel,
    FilterBackspace,
    FilterClear,
    /// Ctrl-L: clear the terminal and draw everything again (after another
    /// program wrote over the screen). Works in every mode.
    Repaint,
}

pub struct Binding {
    pub scope: Scope,
    pub keys: &'static [Key],
    pub action: Action,
    pub help: &'static str,
    /// Short word for the one-line hint at the bottom, if shown there.
    pub hint: Option<&'static str>,
}

const fn b(
    scope: Scope,
    keys: &'static [Key],
    action: Action,
    help: &'static str,
    hint: Option<&'static str>,
) -> Binding {
    Binding {
        scope,
        keys,
        action,
        help,
        hint,
    }
}

use Action as A;
use Scope as S;

pub static BINDINGS: &[Binding] = &[
    // Views scoped first: they win over the global keys.
    b(
        S::Pending,
        &[ch('a')],
        A::Approve,
        "approve the marked devices, or the selected one",
        Some("approve"),
    ),
    b(
        S::Pending,
        &[ch('r')],
        A::Reject,
        "reject the marked devices, or the selected one",
        Some("reject"),
    ),
    b(
        S::Pending,
        &[ch(' ')],
        A::ToggleMark,
        "mark / unmark the selected device",
        Some("mark"),
    ),
    b(
        S::Pending,
        &[ch('A')],
        A::ApproveMatching,
        "approve every device matching the filter",
        Some("approve all"),
    ),
    b(
        S::Pending,
        &[ch('R')],
        A::RejectMatching,
        "reject every device matching the filter",
        Some("reject all"),
    ),
    b(
        S::Pending,
        &[ch('u')],
        A::ClearMarks,
        "clear all marks",
        None,
    ),
    b(
        S::Devices,
        &[ch('x')],
        A::Revoke,
        "revoke the selected device",
        Some("revoke"),
    ),
    b(
        S::Oob,
        &[ch('d'), k(KeyCode::Delete)],
        A::RemoveOob,
        "remove the selected OOB entry",
        Some("remove"),
    ),
    b(
        S::Alerts,
        &[ch('p')],
        A::ToggleProvisioning,
        "pause or resume provisioning",
        Some("pause/resume"),
    ),
    b(
        S::Alerts,
        &[k(KeyCode::Enter)],
        A::Open,
        "show the device of the selected alert",
        Some("show device"),
    ),
    b(
        S::Policy,
        &[ch('o')],
        A::OpenWindow,
        "open an enrollment window (the daemon's default length)",
        Some("open window"),
    ),
    b(
        S::Policy,
        &[ch('x')],
        A::CloseWindow,
        "close the selected enrollment window",
        Some("close window"),
    ),
    b(
        S::Confirm,
        &[ch('y'), k(KeyCode::Enter)],
        A::Yes,
        "yes, do it",
        Some("yes"),
    ),
    b(
        S::Confirm,
        &[ch('n'), k(KeyCode::Esc)],
        A::No,
        "no, cancel",
        Some("no"),
    ),
    b(
        S::Filter,
        &[k(KeyCode::Enter)],
        A::FilterApply,
        "keep the filter",
        Some("keep"),
    ),
    b(
        S::Filter,
        &[k(KeyCode::Esc)],
        A::FilterCancel,
        "cancel (restore the previous filter)",
        Some("cancel"),
    ),
    b(
        S::Filter,
        &[k(KeyCode::Backspace)],
        A::FilterBackspace,
        "delete the last character",
        None,
    ),
    b(
        S::Filter,
        &[ctrl('u')],
        A::FilterClear,
        "clear the filter text",
        None,
    ),
    b(
        S::Help,
        &[ch('?'), ch('q'), k(KeyCode::Esc)],
        A::Back,
        "close the help",
        Some("close"),
    ),
    b(
        S::Help,
        &[ch('j'), k(KeyCode::Down)],
        A::Down,
        "scroll down",
        None,
    ),
    b(
        S::Help,
        &[ch('k'), k(KeyCode::Up)],
        A::Up,
        "scroll up",
        None,
    ),
    b(
        S::Global,
        &[ch('/')],
        A::Filter,
        "filter (space-separated words, all must match)",
        Some("filter"),
    ),
    b(S::Global, &[ch('?')], A::Help, "this help", Some("help")),
    b(
        S::Global,
        &[ctrl('l')],
        A::Repaint,
        "repaint the screen (in every mode)",
        None,
    ),
    b(
        S::Global,
        &[ch('q'), ctrl('c')],
        A::Quit,
        "quit",
        Some("quit"),
    ),
    b(
        S::Global,
        &[k(KeyCode::Esc)],
        A::Back,
        "clear marks, then the filter, then quit",
        None,
    ),
    b(
        S::Global,
        &[k(KeyCode::Tab)],
        A::NextView,
        "next view",
        None,
    ),
    b(
        S::Global,
        &[k(KeyCode::BackTab)],
        A::PrevView,
        "previous view",
        None,
    ),
    b(
        S::Global,
        &[ch('1')],
        A::GoTo(View::Pending),
        "Pending view",
        None,
    ),
    b(
        S::Global,
        &[ch('2')],
        A::GoTo(View::Devices),
        "Devices view",
        None,
    ),
    b(
        S::Global,
        &[ch('3')],
        A::GoTo(View::Oob),
        "OOB entries view",
        None,
    ),
    b(
        S::Global,
        &[ch('4')],
        A::GoTo(View::Alerts),
        "Alerts view",
        None,
    ),
    b(
        S::Global,
        &[ch('5')],
        A::GoTo(View::Audit),
        "Audit log view",
        None,
    ),
    b(
        S::Global,
        &[ch('6')],
        A::GoTo(View::Policy),
        "Windows and rules view",
        None,
    ),
    b(
        S::Global,
        &[ch('j'), k(KeyCode::Down)],
        A::Down,
        "down",
        None,
    ),
    b(S::Global, &[ch('k'), k(KeyCode::Up)], A::Up, "up", None),
    b(
        S::Global,
        &[ch('g'), k(KeyCode::Home)],
        A::Top,
        "first row",
        None,
    ),
    b(
        S::Global,
        &[ch('G'), k(KeyCode::End)],
        A::Bottom,
        "last row",
        None,
    ),
    b(
        S::Global,
        &[k(KeyCode::PageDown), ctrl('d')],
        A::PageDown,
        "page down",
        None,
    ),
    b(
        S::Global,
        &[k(KeyCode::PageUp), ctrl('u')],
        A::PageUp,
        "page up",
        None,
    ),
    b(
        S::Global,
        &[ctrl('r')],
        A::Reload,
        "reload every list from the daemon",
        None,
    ),
];

/// The scopes that apply, most specific first.
pub fn chain(scope: Scope) -> &'static [Scope] {
    match scope {
        S::Global => &[S::Global],
        S::Pending => &[S::Pending, S::Global],
        S::Devices => &[S::Devices, S::Global],
        S::Oob => &[S::Oob, S::Global],
        S::Alerts => &[S::Alerts, S::Global],
        S::Audit => &[S::Audit, S::Global],
        S::Policy => &[S::Policy, S::Global],
        // Modal scopes do not fall through to the view keys.
        S::Filter => &[S::Filter],
        S::Confirm => &[S::Confirm],
        S::Help => &[S::Help],
    }
}

pub fn lookup(scope: Scope, key: Key) -> Option<Action> {
    chain(scope).iter().find_map(|s| {
        BINDINGS
            .iter()
            .find(|b| b.scope == *s && b.keys.contains(&key))
            .map(|b| b.action)
    })
}

/// `"a/Enter"` — every key of a binding.
pub fn keys_label(b: &Binding) -> String {
    b.keys.iter().map(Key::label).collect::<Vec<_>>().join("/")
}

/// The hint line of a scope: `(keys, help word)` pairs.
pub fn hints(scope: Scope) -> Vec<(String, &'static str)> {
    chain(scope)
        .iter()
        .flat_map(|s| BINDINGS.iter().filter(move |b| b.scope == *s))
        .filter_map(|b| {
            let first = b.keys.first().map(Key::label)?;
            Some((first, b.hint?))
        })
        .collect()
}

/// The help text, generated from [`BINDINGS`]: one section per scope, the
/// current view's section first.
pub fn help_lines(current: Scope) -> Vec<(Option<&'static str>, String, &'static str)> {
    let order = [
        current,
        S::Global,
        S::Pending,
        S::Devices,
        S::Oob,
        S::Alerts,
        S::Audit,
        S::Policy,
        S::Filter,
        S::Confirm,
    ];
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for s in order {
        if seen.contains(&s) {
            continue;
        }
        seen.push(s);
        let mut first = true;
        for bd in BINDINGS.iter().filter(|bd| bd.scope == s) {
            let heading = first.then(|| s.title());
            first = false;
            out.push((heading, keys_label(bd), bd.help));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(code: KeyCode, mods: KeyModifiers) -> Key {
        Key::from_event(&KeyEvent::new(code, mods)).unwrap_or(ch('\0'))
    }

    #[test]
    fn view_keys_win_over_global_ones_and_modals_are_closed() {
        let a = ev(KeyCode::Char('a'), KeyModifiers::NONE);
        assert_eq!(lookup(S::Pending, a), Some(A::Approve));
        assert_eq!(lookup(S::Devices, a), None);
        let q = ev(KeyCode::Char('q'), KeyModifiers::NONE);
        assert_eq!(lookup(S::Pending, q), Some(A::Quit));
        assert_eq!(lookup(S::Filter, q), None, "q is text while filtering");
        assert_eq!(lookup(S::Confirm, q), None);
        assert_eq!(lookup(S::Help, q), Some(A::Back));
    }

    #[test]
    fn shift_letters_and_ctrl_are_distinct() {
        let big_a = ev(KeyCode::Char('A'), KeyModifiers::SHIFT);
        assert_eq!(lookup(S::Pending, big_a), Some(A::ApproveMatching));
        let ctrl_r = ev(KeyCode::Char('r'), KeyModifiers::CONTROL);
        assert_eq!(lookup(S::Pending, ctrl_r), Some(A::Reload));
        let alt_a = KeyEvent::new(KeyCode::Char('a'), KeyModifiers::ALT);
        assert_eq!(Key::from_event(&alt_a), None);
    }

    #[test]
    fn no_key_is_bound_twice_in_one_scope_chain() {
        for scope in [
            S::Pending,
            S::Devices,
            S::Oob,
            S::Alerts,
            S::Audit,
            S::Filter,
            S::Confirm,
            S::Help,
        ] {
            let mut seen: Vec<(Scope, Key)> = Vec::new();
            for bd in BINDINGS
                .iter()
                .filter(|bd| chain(scope).contains(&bd.scope))
            {
                for key in bd.keys {
                    assert!(
                        !seen.contains(&(bd.scope, *key)),
                        "{:?} bound twice in {:?}",
                        key,
                        bd.scope
                    );
                    seen.push((bd.scope, *key));
                }
            }
        }
    }

    #[test]
    fn help_lists_every_binding_once() {
        let lines = help_lines(S::Pending);
        assert_eq!(
            lines.len(),
            BINDINGS.iter().filter(|b| b.scope != S::Help).count()
        );
        assert_eq!(lines[0].0, Some("Pending"));
        assert!(lines.iter().any(|l| l.1 == "q/Ctrl-C" && l.2 == "quit"));
    }

    #[test]
    fn hints_are_short() {
        let h = hints(S::Pending);
        assert_eq!(h[0], ("a".to_string(), "approve"));
        assert!(h.contains(&("A".to_string(), "approve all")));
        assert!(h.contains(&("/".to_string(), "filter")));
    }
}
