//! How `idprovctl` prints: aligned tables and `key: value` blocks for
//! people, the daemon's own JSON for scripts (`--json`).

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;

/// A unix time as RFC 3339 UTC (`2026-12-03T15:56:02Z`); `-` for none.
pub fn time(unix: i64) -> String {
    match u64::try_from(unix) {
        Ok(s) => humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(s)).to_string(),
        // Before 1970: only a damaged record; show the number as is.
        Err(_) => unix.to_string(),
    }
}

pub fn opt_time(unix: Option<i64>) -> String {
    unix.map_or_else(|| "-".to_string(), time)
}

/// Write to standard output, returning the error (a closed pipe) instead
/// of panicking as `print!` does.
pub fn out(text: &str) -> std::io::Result<()> {
    let mut o = std::io::stdout().lock();
    o.write_all(text.as_bytes())?;
    o.flush()
}

/// One JSON document on standard output.
pub fn json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    Ok(out(&text)?)
}

/// A table with a header, every column as wide as its widest cell, the
/// last column not padded (no trailing blanks).
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&'static str]) -> Table {
        Table {
            header: header.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Cells may hold what a device or a DNS-SD advertiser chose: they are
    /// made [`safe`] here, once for every table.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells.iter().map(|c| safe(c)).collect());
    }

    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.header.iter().map(|h| h.to_string()).collect();
        for r in std::iter::once(&header).chain(&self.rows) {
            let last = r.len().saturating_sub(1);
            let mut line = String::new();
            for (i, (c, w)) in r.iter().zip(&widths).enumerate() {
                if i == last {
                    line.push_str(c);
                } else {
                    let _ = write!(line, "{c:<w$}  ");
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    pub fn print(&self) -> std::io::Result<()> {
        out(&self.render())
    }
}

/// `key: value` lines, keys aligned.
pub fn fields(pairs: &[(&str, String)]) -> std::io::Result<()> {
    let w = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    let mut text = String::new();
    for (k, v) in pairs {
        let _ = writeln!(text, "{:<w$} {}", format!("{k}:"), safe(v));
    }
    out(&text)
}

/// Printable ASCII as is, anything else (control characters, terminal
/// escapes, non-ASCII) as a visible escape, so no terminal sequence from a
/// device or an advertiser reaches the administrator's terminal.
pub fn safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c == ' ' || (c.is_ascii_graphic() && c != '\\') {
                c.to_string()
            } else {
                c.escape_default().to_string()
            }
        })
        .collect()
}

/// A list as `a,b` (or `-` when empty), for one table cell.
pub fn joined(items: &[String]) -> String {
    if items.is_empty() {
        "-".to_string()
    } else {
        items.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns_and_leaves_no_trailing_blanks() {
        let mut t = Table::new(&["DEVICE ID", "STATUS", "NOTE"]);
        t.row(vec!["a".into(), "active".into(), "x".into()]);
        t.row(vec!["longer-id".into(), "revoked".into(), String::new()]);
        assert_eq!(
            t.render(),
            "DEVICE ID  STATUS   NOTE\na          active   x\nlonger-id  revoked\n"
        );
    }

    #[test]
    fn cells_cannot_carry_terminal_sequences() {
        let mut t = Table::new(&["A"]);
        t.row(vec!["x\u{1b}[2Jy\\".into()]);
        assert_eq!(t.render(), "A\nx\\u{1b}[2Jy\\\\\n");
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(time(0), "1970-01-01T00:00:00Z");
        assert_eq!(time(1_796_313_362), "2026-12-03T15:56:02Z");
        assert_eq!(opt_time(None), "-");
    }
}
