//! The Policy view: enrollment windows (open first) and the auto-approval
//! rules in evaluation order, one table.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::widgets::Cell;

use super::theme::Theme;
use super::views::{Columns, table, title};
use crate::app::App;
use crate::policy::PolicyRow;
use crate::text::{safe, timestamp};

pub fn draw(f: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let cells = |r: &PolicyRow| match r {
        PolicyRow::Window { window: w, .. } => {
            let state = match w.closed {
                None => format!("open until {}", timestamp(w.closes_at)),
                Some(why) => format!("closed ({})", why.as_str()),
            };
            let mut what = vec![
                format!(
                    "device_id={}",
                    w.device_id.as_ref().map_or("*".into(), |g| g.to_string())
                ),
                format!("admitted={}", w.admitted),
            ];
            if let Some(s) = w.source {
                what.push(format!("source={s}"));
            }
            if let Some(m) = w.max_devices {
                what.push(format!("max={m}"));
            }
            vec![
                Cell::from(format!("window {}", w.id)),
                Cell::from(state),
                Cell::from(what.join(" ")),
                Cell::from(safe(&w.opened_by).into_owned()),
            ]
        }
        PolicyRow::Rule {
            pos,
            configured,
            rule,
            ..
        } => vec![
            Cell::from(format!("rule {pos}")),
            Cell::from(format!("{} {}", rule.action.as_str(), rule.name)),
            Cell::from(rule.summary()),
            Cell::from(if *configured { "config" } else { "stored" }),
        ],
    };
    let cols = Columns {
        headers: vec!["WHAT", "STATE / ACTION", "MATCHES", "BY"],
        widths: vec![
            Constraint::Length(10),
            Constraint::Fill(1),
            Constraint::Fill(2),
            Constraint::Length(14),
        ],
        cells: Box::new(cells),
        empty: "no rules and no windows (o opens a window)",
    };
    let list = &app.policy;
    let t = title("Windows and rules", list, None);
    table(f, area, list, t, cols, app.loaded, theme);
}
