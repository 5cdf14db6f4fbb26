//! The five views: a table of the visible window of rows, and for most a
//! detail pane about the selected row. Every string a device or an uploaded
//! file chose goes through `text::safe`; device ids and MACs are safe by
//! construction (strict grammar).

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Block, Cell, HighlightSpacing, Paragraph, Row as TRow, Table, TableState, Wrap,
};

use idprov_proto::admin::{AuditEntry, DeviceStatus, DeviceView, OobEntryView, PendingView};

use super::Theme;
use crate::alerts::Alert;
use crate::app::{App, View};
use crate::list::{List, Row};
use crate::rows::status_str;
use crate::text::{self, ago, safe, timestamp};

pub fn draw(f: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    match app.view {
        View::Pending => pending(f, area, app, theme),
        View::Devices => devices(f, area, app, theme),
        View::Oob => oob(f, area, app, theme),
        View::Alerts => alerts(f, area, app, theme),
        View::Audit => audit(f, area, app, theme),
        View::Policy => super::policy_view::draw(f, area, app, theme),
    }
}

/// Split a view into a table and a detail pane of `detail` rows, when there
/// is room for both.
fn split(area: Rect, detail: u16) -> (Rect, Option<Rect>) {
    if area.height >= detail + 6 {
        let [t, d] = Layout::vertical([Constraint::Min(4), Constraint::Length(detail)]).areas(area);
        (t, Some(d))
    } else {
        (area, None)
    }
}

pub(super) fn title<T: Row>(name: &str, list: &List<T>, extra: Option<String>) -> String {
    let mut t = format!(" {name} ");
    if list.filter().is_empty() {
        t.push_str(&text::thousands(list.total()));
    } else {
        t.push_str(&format!(
            "{}/{} · filter \"{}\"",
            text::thousands(list.len()),
            text::thousands(list.total()),
            safe(list.filter())
        ));
    }
    if list.marked_count() > 0 {
        t.push_str(&format!(
            " · {} marked",
            text::thousands(list.marked_count())
        ));
    }
    if let Some(e) = extra {
        t.push_str(" · ");
        t.push_str(&e);
    }
    t.push(' ');
    t
}

pub(super) type CellsFn<'a, T> = dyn Fn(&T) -> Vec<Cell<'static>> + 'a;

pub(super) struct Columns<'a, T> {
    pub headers: Vec<&'static str>,
    pub widths: Vec<Constraint>,
    pub cells: Box<CellsFn<'a, T>>,
    /// What an empty (loaded) list says.
    pub empty: &'static str,
}

/// Draw the visible window of a list as a table with the cursor row
/// highlighted.
pub(super) fn table<'a, T: Row>(
    f: &mut Frame,
    area: Rect,
    list: &'a List<T>,
    title: String,
    cols: Columns<'a, T>,
    loaded: bool,
    theme: &Theme,
) {
    let block = Block::bordered().border_style(theme.border()).title(title);
    let inner_rows = usize::from(area.height.saturating_sub(3));
    if list.is_empty() {
        let msg = if loaded { cols.empty } else { "loading…" };
        f.render_widget(
            Paragraph::new(Span::styled(msg.to_string(), theme.dim())).block(block),
            area,
        );
        return;
    }
    let offset = list.scroll_for(inner_rows);
    let rows: Vec<TRow<'static>> = list
        .window(offset, inner_rows)
        .map(|item| {
            let row = TRow::new((cols.cells)(item));
            if list.is_marked(item.key()) {
                row.style(theme.marked())
            } else {
                row
            }
        })
        .collect();
    let header = TRow::new(cols.headers.clone()).style(theme.header());
    let mut state = TableState::new().with_selected(Some(list.cursor().saturating_sub(offset)));
    let t = Table::new(rows, cols.widths)
        .header(header)
        .block(block)
        .column_spacing(1)
        .row_highlight_style(theme.selected())
        // A visible marker too, for monochrome terminals and screen readers.
        .highlight_symbol(">")
        .highlight_spacing(HighlightSpacing::Always);
    f.render_stateful_widget(t, area, &mut state);
}

fn flags_cell(flags: &[String], theme: &Theme) -> Cell<'static> {
    if flags.is_empty() {
        Cell::from("")
    } else {
        let joined: Vec<String> = flags.iter().map(|f| safe(f).into_owned()).collect();
        Cell::from(Span::styled(joined.join(","), theme.flag()))
    }
}

fn label<'a>(l: &'static str, theme: &Theme) -> Span<'a> {
    Span::styled(format!("{l:<12}"), theme.dim())
}

/// The date part of a timestamp (UTC).
fn date(at: i64) -> String {
    let t = timestamp(at);
    t.get(..10).map(str::to_owned).unwrap_or(t)
}

fn short_fp(fp: &str) -> String {
    safe(fp.get(..8).unwrap_or(fp)).into_owned()
}

fn mac(m: Option<idprov_proto::MacAddr>) -> String {
    m.map(|m| m.to_string()).unwrap_or_else(|| "-".into())
}

// ---- Pending ----

fn pending(f: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let (t_area, d_area) = split(area, 8);
    let wide = area.width >= 110;
    let now = app.now;
    let mut headers = vec![" ", "DEVICE ID", "MAC", "KEY"];
    let mut widths = vec![
        Constraint::Length(1),
        Constraint::Fill(2),
        Constraint::Length(17),
        Constraint::Length(14),
    ];
    if wide {
        headers.push("SOURCE");
        widths.push(Constraint::Fill(1));
        headers.push("FIRST");
        widths.push(Constraint::Length(5));
    }
    headers.extend(["LAST", "TRIES", "FLAGS"]);
    widths.extend([
        Constraint::Length(5),
        Constraint::Length(5),
        Constraint::Fill(1),
    ]);
    let list = &app.pending;
    let th = *theme;
    let cells = move |p: &PendingView| {
        let mut c = vec![
            Cell::from(if list.is_marked(&p.device_id) {
                "*"
            } else {
                " "
            }),
            Cell::from(p.device_id.to_string()),
            Cell::from(mac(p.mac)),
            Cell::from(format!(
                "{} {}",
                p.key_format.alg(),
                short_fp(&p.key_fingerprint)
            )),
        ];
        if wide {
            c.push(Cell::from(safe(&p.source).into_owned()));
            c.push(Cell::from(ago(now, p.first_seen)));
        }
        c.push(Cell::from(ago(now, p.last_seen)));
        c.push(Cell::from(p.attempts.to_string()));
        c.push(flags_cell(&p.flags, &th));
        c
    };
    let cols = Columns {
        headers,
        widths,
        cells: Box::new(cells),
        empty: "no device is waiting for approval",
    };
    let t = title("Pending", list, None);
    table(f, t_area, list, t, cols, app.loaded, theme);

    if let (Some(d_area), Some(p)) = (d_area, list.selected()) {
        let mut lines = vec![
            Line::from(vec![
                label("verify code", theme),
                Span::styled(safe(&p.verification_code).into_owned(), theme.bold()),
                Span::styled("  (the device shows the same code)", theme.dim()),
            ]),
            Line::from(vec![
                label("fingerprint", theme),
                Span::raw(format!(
                    "{} {}",
                    p.key_format.as_str(),
                    safe(&p.key_fingerprint)
                )),
            ]),
            Line::from(vec![
                label("MAC, source", theme),
                Span::raw(format!("{}   {}", mac(p.mac), safe(&p.source))),
            ]),
            Line::from(vec![
                label("seen", theme),
                Span::raw(format!(
                    "first {}, last {} ago, {} attempt{}",
                    timestamp(p.first_seen),
                    ago(now, p.last_seen),
                    p.attempts,
                    if p.attempts == 1 { "" } else { "s" },
                )),
            ]),
            Line::from(vec![
                label("flags", theme),
                if p.flags.is_empty() {
                    Span::styled("none", theme.dim())
                } else {
                    let v: Vec<String> = p.flags.iter().map(|f| safe(f).into_owned()).collect();
                    Span::styled(v.join(", "), theme.flag())
                },
                Span::styled(" · ", theme.dim()),
                why_pending(p, theme),
            ]),
        ];
        // The policy's dry run: the rule or window that decides this
        // device at its next request (policy.rs).
        lines.push(Line::from(vec![
            label("decided by", theme),
            match app.decided.get(&p.device_id) {
                Some(by) => Span::styled(safe(by).into_owned(), theme.bold()),
                None => Span::styled("an administrator (no rule or window matches)", theme.dim()),
            },
        ]));
        let t = format!("{} · rev {}", p.device_id, p.revision);
        detail(f, d_area, &t, lines, theme);
    }
}

/// A device the OOB list names but a flag held looks, without this, just
/// like an unknown device.
fn why_pending(p: &PendingView, theme: &Theme) -> Span<'static> {
    match &p.oob_hold {
        Some(h) => Span::styled(safe(&h.to_string()).into_owned(), theme.flag()),
        None => Span::styled("not on the OOB list", theme.dim()),
    }
}

fn detail(f: &mut Frame, area: Rect, title: &str, lines: Vec<Line<'_>>, theme: &Theme) {
    f.render_widget(
        Paragraph::new(lines).wrap(Wrap { trim: false }).block(
            Block::bordered()
                .border_style(theme.border())
                .title(format!(" {title} ")),
        ),
        area,
    );
}

// ---- Devices ----

fn devices(f: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let list = &app.devices;
    let keys_rows = list.selected().map_or(1, |d| d.keys.len().max(1));
    let detail_h = u16::try_from(keys_rows + 5).unwrap_or(8).min(9);
    let (t_area, d_area) = split(area, detail_h);
    let now = app.now;
    let th = *theme;
    let wide = area.width >= 100;
    let mut headers = vec!["DEVICE ID", "STATUS", "KEYS"];
    let mut widths = vec![
        Constraint::Fill(2),
        Constraint::Length(8),
        Constraint::Length(4),
    ];
    if wide {
        headers.push("MAC");
        widths.push(Constraint::Length(17));
    }
    headers.extend(["ADMITTED BY", "ISSUED", "TOKENS", "FLAGS"]);
    widths.extend([
        Constraint::Fill(1),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Fill(1),
    ]);
    let cells = move |d: &DeviceView| {
        let status = Cell::from(Span::styled(
            status_str(d.status),
            if d.status == DeviceStatus::Active {
                th.good()
            } else {
                th.flag()
            },
        ));
        let mut c = vec![
            Cell::from(d.device_id.to_string()),
            status,
            Cell::from(d.keys.len().to_string()),
        ];
        if wide {
            c.push(Cell::from(mac(d.mac)));
        }
        c.push(Cell::from(safe(&d.admitted_by).into_owned()));
        c.push(Cell::from(
            d.last_issued_at
                .map(|t| ago(now, t))
                .unwrap_or_else(|| "-".into()),
        ));
        c.push(Cell::from(d.tokens_issued.to_string()));
        c.push(flags_cell(&d.flags, &th));
        c
    };
    let cols = Columns {
        headers,
        widths,
        cells: Box::new(cells),
        empty: "no device yet",
    };
    table(
        f,
        t_area,
        list,
        title("Devices", list, None),
        cols,
        app.loaded,
        theme,
    );

    if let (Some(d_area), Some(d)) = (d_area, list.selected()) {
        let mut lines = vec![
            Line::from(vec![
                label("status", theme),
                Span::raw(format!(
                    "{}, admitted by {}, MAC {}",
                    status_str(d.status),
                    safe(&d.admitted_by),
                    mac(d.mac)
                )),
            ]),
            Line::from(vec![
                label("issued", theme),
                Span::raw(format!(
                    "{} tokens, last {}, created {}",
                    d.tokens_issued,
                    d.last_issued_at
                        .map(|t| format!("{} ago", ago(now, t)))
                        .unwrap_or_else(|| "never".into()),
                    date(d.created_at),
                )),
            ]),
            Line::from(vec![
                label("flags", theme),
                if d.flags.is_empty() {
                    Span::styled("none", theme.dim())
                } else {
                    let v: Vec<String> = d.flags.iter().map(|f| safe(f).into_owned()).collect();
                    Span::styled(v.join(", "), theme.flag())
                },
            ]),
        ];
        if d.keys.is_empty() {
            lines.push(Line::from(vec![
                label("keys", theme),
                Span::styled("none", theme.dim()),
            ]));
        }
        for (i, k) in d.keys.iter().enumerate() {
            let expiry = match k.expires_at {
                Some(e) => format!("expires {} ({})", date(e), text::relative(now, e)),
                None => "no expiry".into(),
            };
            lines.push(Line::from(vec![
                label(if i == 0 { "keys" } else { "" }, theme),
                Span::raw(format!(
                    "{}  {}  {expiry}",
                    safe(&k.kid),
                    k.key_format.as_str()
                )),
            ]));
        }
        let t = format!("{} · rev {}", d.device_id, d.revision);
        detail(f, d_area, &t, lines, theme);
    }
}

// ---- OOB entries ----

fn oob(f: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let list = &app.oob;
    let (t_area, d_area) = split(area, 5);
    let now = app.now;
    let wide = area.width >= 100;
    let mut headers = vec!["DEVICE ID", "MATCH BY", "KEY"];
    let mut widths = vec![
        Constraint::Fill(2),
        Constraint::Length(14),
        Constraint::Length(14),
    ];
    if wide {
        headers.push("MAC");
        widths.push(Constraint::Length(17));
    }
    headers.extend(["SECRET", "EXPIRES", "NOTE"]);
    widths.extend([
        Constraint::Length(6),
        Constraint::Length(7),
        Constraint::Fill(1),
    ]);
    let cells = move |e: &OobEntryView| {
        let mut c = vec![
            Cell::from(e.device_id.to_string()),
            Cell::from(match_by(e)),
            Cell::from(match (&e.key_format, &e.key_fingerprint) {
                (Some(kf), Some(fp)) => format!("{} {}", kf.alg(), short_fp(fp)),
                (None, Some(fp)) => short_fp(fp),
                _ => "-".into(),
            }),
        ];
        if wide {
            c.push(Cell::from(mac(e.mac)));
        }
        c.push(Cell::from(match (e.has_secret, e.secret_consumed) {
            (false, _) => "-",
            (true, false) => "unused",
            (true, true) => "used",
        }));
        c.push(Cell::from(match e.expires_at {
            Some(t) if t < now => "expired".to_string(),
            Some(t) => format!("in {}", ago(t, now)),
            None => "never".to_string(),
        }));
        c.push(Cell::from(
            safe(e.note.as_deref().unwrap_or("")).into_owned(),
        ));
        c
    };
    let cols = Columns {
        headers,
        widths,
        cells: Box::new(cells),
        empty: "no OOB entry",
    };
    table(
        f,
        t_area,
        list,
        title("OOB entries", list, None),
        cols,
        app.loaded,
        theme,
    );

    if let (Some(d_area), Some(e)) = (d_area, list.selected()) {
        let lines = vec![
            Line::from(vec![
                label("fingerprint", theme),
                Span::raw(safe(e.key_fingerprint.as_deref().unwrap_or("-")).into_owned()),
            ]),
            Line::from(vec![
                label("MAC, dates", theme),
                Span::raw(format!(
                    "{}   created {}, updated {} ago, expires {}",
                    mac(e.mac),
                    date(e.created_at),
                    ago(now, e.updated_at),
                    e.expires_at.map(date).unwrap_or_else(|| "never".into())
                )),
            ]),
            Line::from(vec![
                label("note", theme),
                Span::raw(safe(e.note.as_deref().unwrap_or("")).into_owned()),
            ]),
        ];
        detail(f, d_area, e.device_id.as_str(), lines, theme);
    }
}

/// "key+mac+secret": what an OOB entry admits a device by.
fn match_by(e: &OobEntryView) -> String {
    let mut by = Vec::new();
    if e.public_key.is_some() || e.key_fingerprint.is_some() {
        by.push("key");
    }
    if e.mac.is_some() {
        by.push("mac");
    }
    if e.has_secret {
        by.push("secret");
    }
    by.join("+")
}

// ---- Alerts ----

fn alerts(f: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let [switch, rest] = Layout::vertical([Constraint::Length(3), Constraint::Min(3)]).areas(area);
    let line = match &app.provisioning {
        Some(p) if p.paused => Line::from(vec![
            Span::styled(" PAUSED ", theme.alarm()),
            Span::raw(format!(
                "  {}  — p resumes",
                safe(p.reason.as_deref().unwrap_or("no reason given"))
            )),
        ]),
        Some(_) => Line::from(vec![
            Span::styled("active", theme.good()),
            Span::raw("  devices are admitted — p pauses"),
        ]),
        None => Line::from(Span::styled("unknown (not loaded yet)", theme.dim())),
    };
    f.render_widget(
        Paragraph::new(line).block(
            Block::bordered()
                .border_style(theme.border())
                .title(" Provisioning "),
        ),
        switch,
    );

    let list = &app.alerts;
    let now = app.now;
    let th = *theme;
    let cells = move |a: &Alert| {
        vec![
            Cell::from(a.key.kind()),
            Cell::from(a.key.subject().to_string()),
            flags_cell(&a.flags, &th),
            Cell::from(ago(now, a.at)),
        ]
    };
    let cols = Columns {
        headers: vec!["SOURCE", "DEVICE ID", "FLAGS", "SEEN"],
        widths: vec![
            Constraint::Length(8),
            Constraint::Fill(1),
            Constraint::Fill(2),
            Constraint::Length(5),
        ],
        cells: Box::new(cells),
        empty: "nothing needs attention",
    };
    table(
        f,
        rest,
        list,
        title("Alerts", list, None),
        cols,
        app.loaded,
        theme,
    );
}

// ---- Audit log ----

fn audit(f: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let list = &app.audit;
    let (t_area, d_area) = split(area, 6);
    let wide = area.width >= 110;
    let mut headers = vec!["SEQ"];
    let mut widths = vec![Constraint::Length(7)];
    if wide {
        headers.push("TIME (UTC)");
        widths.push(Constraint::Length(20));
    }
    headers.extend(["ACTOR", "ACTION", "TARGET", "DETAIL"]);
    widths.extend([
        Constraint::Length(16),
        Constraint::Length(14),
        Constraint::Length(16),
        Constraint::Fill(1),
    ]);
    let cells = move |e: &AuditEntry| {
        let mut c = vec![Cell::from(e.seq.to_string())];
        if wide {
            c.push(Cell::from(timestamp(e.at)));
        }
        c.push(Cell::from(safe(&e.actor).into_owned()));
        c.push(Cell::from(safe(&e.action).into_owned()));
        c.push(Cell::from(
            safe(e.target.as_deref().unwrap_or("")).into_owned(),
        ));
        c.push(Cell::from(safe(&e.detail).into_owned()));
        c
    };
    let cols = Columns {
        headers,
        widths,
        cells: Box::new(cells),
        empty: "the audit log is empty",
    };
    let extra = (list.total() >= crate::app::AUDIT_KEEP).then(|| "newest only".to_string());
    table(
        f,
        t_area,
        list,
        title("Audit log", list, extra),
        cols,
        app.loaded,
        theme,
    );

    if let (Some(d_area), Some(e)) = (d_area, list.selected()) {
        let lines = vec![
            Line::from(vec![
                label("at, source", theme),
                Span::raw(format!(
                    "{}   {}",
                    timestamp(e.at),
                    safe(e.source.as_deref().unwrap_or("-"))
                )),
            ]),
            Line::from(vec![
                label("hash", theme),
                Span::styled(safe(&e.hash).into_owned(), theme.dim()),
            ]),
            Line::from(vec![
                label("detail", theme),
                Span::raw(safe(&e.detail).into_owned()),
            ]),
        ];
        detail(f, d_area, &format!("audit #{}", e.seq), lines, theme);
    }
}
