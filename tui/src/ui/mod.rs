//! Drawing. Reads the [`App`] state and paints one frame; changes nothing
//! except the remembered scroll offsets of the lists.
//!
//! Only the rows on screen are turned into widgets, so a frame costs the
//! same with 10 or 100,000 pending devices.

mod overlay;
mod policy_view;
pub mod theme;
mod views;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use crate::app::{App, Conn, Mode, View};
use crate::keymap::{self, Scope};
use crate::text;
pub use theme::Theme;

pub fn draw(f: &mut Frame, app: &App, theme: &Theme) {
    let [header, body, status, hints] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(f.area());

    draw_header(f, header, app, theme);
    views::draw(f, body, app, theme);
    draw_status(f, status, app, theme);
    draw_hints(f, hints, app, theme);

    match &app.mode {
        Mode::Confirm(c) => overlay::confirm(f, body, c, theme),
        Mode::Help { scroll } => overlay::help(f, body, app.scope_behind_help(), *scroll, theme),
        Mode::Normal | Mode::Filter { .. } => {}
    }
}

impl App {
    /// The view scope the help was opened from (help lists it first).
    pub fn scope_behind_help(&self) -> Scope {
        Scope::of_view(self.view)
    }
}

/// Tabs with counts on the left, connection and provisioning on the right.
fn draw_header(f: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let mut spans = Vec::new();
    for (i, v) in View::ALL.iter().enumerate() {
        let count = match v {
            View::Pending => Some(app.pending.total()),
            View::Devices => Some(app.devices.total()),
            View::Oob => Some(app.oob.total()),
            View::Alerts => Some(app.alerts.total()),
            View::Audit => None,
            View::Policy => Some(app.policy.total()),
        };
        let label = match count {
            Some(n) if app.loaded => format!(" {} {} {} ", i + 1, v.title(), text::thousands(n)),
            _ => format!(" {} {} ", i + 1, v.title()),
        };
        let style = if *v == app.view {
            theme.tab_active()
        } else if *v == View::Alerts && app.alerts.total() > 0 {
            theme.flag()
        } else {
            theme.normal()
        };
        spans.push(Span::styled(label, style));
    }

    let (state, state_style) = match &app.conn {
        Conn::Connecting => ("connecting…".to_string(), theme.dim()),
        Conn::Connected if app.provisioning.as_ref().is_some_and(|p| p.paused) => {
            (format!("PAUSED · {}", app.identity), theme.alarm())
        }
        Conn::Connected => (app.identity.clone(), theme.good()),
        Conn::Lost { retry_at, .. } => (
            format!(
                "OFFLINE · retry in {}s",
                retry_at.saturating_sub(app.now).max(0)
            ),
            theme.alarm(),
        ),
        Conn::Refused => ("TOKEN REFUSED · not retrying".to_string(), theme.alarm()),
    };
    let left_width: usize = spans.iter().map(|s| s.content.len()).sum();
    // Keep at least one blank column between the tabs and the state.
    let room = usize::from(area.width).saturating_sub(left_width + 1);
    let state = text::clip(&state, room).into_owned();
    let [left, right] = Layout::horizontal([
        Constraint::Min(0),
        Constraint::Length(u16::try_from(state.chars().count()).unwrap_or(0)),
    ])
    .areas(area);
    f.render_widget(Paragraph::new(Line::from(spans)), left);
    f.render_widget(Paragraph::new(Span::styled(state, state_style)), right);
}

fn draw_status(f: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let width = usize::from(area.width);
    let line = if let Some((verb, done, total)) = app.progress {
        Line::from(Span::styled(
            format!(
                "{} {} of {}…",
                verb.progressive(),
                text::thousands(done),
                text::thousands(total)
            ),
            theme.bold(),
        ))
    } else if let Some(s) = &app.status {
        Line::from(Span::styled(
            text::clip(&s.text, width).into_owned(),
            theme.level(s.level),
        ))
    } else if app.is_loading() && !app.loaded {
        Line::from(Span::styled("loading lists from the daemon…", theme.dim()))
    } else {
        Line::default()
    };
    f.render_widget(Paragraph::new(line), area);
}

/// The bottom line: the filter prompt while typing one, otherwise the key
/// hints of the current scope, generated from the keymap.
fn draw_hints(f: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    if let Mode::Filter { input, .. } = &app.mode {
        let line = Line::from(vec![
            Span::styled("filter: ", theme.bold()),
            Span::raw(input.clone()),
            Span::styled("█", theme.dim()),
            Span::styled("  Enter keep · Esc cancel", theme.dim()),
        ]);
        f.render_widget(Paragraph::new(line), area);
        return;
    }
    let mut spans = Vec::new();
    let mut used = 0usize;
    for (key, word) in keymap::hints(app.scope()) {
        let len = key.chars().count() + word.len() + 3;
        if used + len > usize::from(area.width) {
            break;
        }
        used += len;
        spans.push(Span::styled(key, theme.key()));
        spans.push(Span::raw(format!(" {word}  ")));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

/// A rectangle of at most `w`×`h` centred in `area`.
fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    }
}
