//! Pop-ups drawn over the current view: confirmations and the help.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};

use super::{Theme, centered};
use crate::app::Confirm;
use crate::keymap::{self, Scope};

pub fn confirm(f: &mut Frame, area: Rect, c: &Confirm, theme: &Theme) {
    let mut lines = vec![
        Line::from(Span::styled(c.title.clone(), theme.bold())),
        Line::default(),
    ];
    lines.extend(c.body.iter().map(|l| Line::from(l.clone())));
    lines.push(Line::default());
    let mut keys = Vec::new();
    for (key, word) in keymap::hints(Scope::Confirm) {
        keys.push(Span::styled(key, theme.key()));
        keys.push(Span::raw(format!(" {word}   ")));
    }
    lines.push(Line::from(keys));

    let width = area.width.saturating_sub(4).clamp(20, 76);
    // Wrapped height: each line takes ceil(len / inner width) rows.
    let inner = usize::from(width.saturating_sub(2)).max(1);
    let rows: usize = lines.iter().map(|l| l.width().max(1).div_ceil(inner)).sum();
    let height = u16::try_from(rows + 2).unwrap_or(u16::MAX);
    let r = centered(area, width, height);
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(lines).wrap(Wrap { trim: false }).block(
            Block::bordered()
                .border_style(theme.border())
                .title(" Confirm "),
        ),
        r,
    );
}

pub fn help(f: &mut Frame, area: Rect, current: Scope, scroll: usize, theme: &Theme) {
    let mut lines = Vec::new();
    for (heading, keys, help) in keymap::help_lines(current) {
        if let Some(h) = heading {
            if !lines.is_empty() {
                lines.push(Line::default());
            }
            lines.push(Line::from(Span::styled(h, theme.header())));
        }
        lines.push(Line::from(vec![
            Span::styled(format!("  {keys:<14}"), theme.key()),
            Span::raw(help),
        ]));
    }
    let r = centered(area, 72, area.height);
    let visible = usize::from(r.height.saturating_sub(2));
    let scroll = scroll.min(lines.len().saturating_sub(visible));
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(lines)
            .scroll((u16::try_from(scroll).unwrap_or(u16::MAX), 0))
            .block(
                Block::bordered()
                    .border_style(theme.border())
                    .title(" Keys (j/k scroll · ? or Esc close) "),
            ),
        r,
    );
}
