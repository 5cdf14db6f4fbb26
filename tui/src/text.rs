//! Turning daemon data into screen text.
//!
//! Every string that a device (or a file an administrator uploaded) could have
//! chosen goes through [`safe`] before it reaches a widget: control
//! characters, terminal escape sequences and anything outside printable ASCII
//! are shown as `\u{..}` escapes (security rule 7). As a side effect every
//! cell is one column wide, so column widths computed from `len()` are exact.

use std::borrow::Cow;

use idprov_proto::ids::escape_untrusted;

/// Escape an untrusted string for display. Printable ASCII passes through
/// unchanged (without allocating); everything else is escaped with
/// [`escape_untrusted`], and so is the backslash, so that an escape shown on
/// screen can never be confused with one a device typed itself.
pub fn safe(s: &str) -> Cow<'_, str> {
    if s.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'\\') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if (c.is_ascii_graphic() && c != '\\') || c == ' ' {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            out.push_str(&escape_untrusted(c.encode_utf8(&mut buf)));
        }
    }
    Cow::Owned(out)
}

/// Shorten to at most `max` columns, marking the cut with `…`. Input must
/// already be [`safe`] (one column per byte).
pub fn clip(s: &str, max: usize) -> Cow<'_, str> {
    if s.len() <= max {
        Cow::Borrowed(s)
    } else if max == 0 {
        Cow::Borrowed("")
    } else {
        // `safe` output is ASCII, so any byte index is a char boundary.
        let cut = s.get(..max - 1).unwrap_or("");
        Cow::Owned(format!("{cut}…"))
    }
}

/// "12s", "5m", "3h", "2d" — how long ago `at` was, for list columns.
pub fn ago(now: i64, at: i64) -> String {
    let d = now.saturating_sub(at);
    if d < 0 {
        return "future".into();
    }
    match d {
        0..60 => format!("{d}s"),
        60..3600 => format!("{}m", d / 60),
        3600..86_400 => format!("{}h", d / 3600),
        _ => format!("{}d", d / 86_400),
    }
}

/// UTC RFC 3339 time of a Unix timestamp, for detail panes and the audit log.
pub fn timestamp(at: i64) -> String {
    idprov_proto::time::rfc3339(at)
}

/// "in 3d", "2h ago" — for expiry dates.
pub fn relative(now: i64, at: i64) -> String {
    if at >= now {
        format!("in {}", ago(at, now))
    } else {
        format!("{} ago", ago(now, at))
    }
}

/// 12345 → "12,345".
pub fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_passes_plain_ascii_without_copying() {
        assert!(matches!(safe("sensor-01 192.0.2.1"), Cow::Borrowed(_)));
    }

    #[test]
    fn safe_escapes_terminal_sequences_and_non_ascii() {
        let out = safe("x\u{1b}[2J\u{7}\r\nü\u{9b}31m");
        assert!(out.bytes().all(|b| (0x20..0x7f).contains(&b)), "{out}");
        assert_eq!(out, "x\\u{1b}[2J\\u{7}\\r\\n\\u{fc}\\u{9b}31m");
    }

    #[test]
    fn safe_escapes_backslash_so_escapes_are_unambiguous() {
        assert_eq!(safe("a\\u{1b}"), "a\\\\u{1b}");
    }

    #[test]
    fn clip_marks_the_cut() {
        assert_eq!(clip("abcdef", 6), "abcdef");
        assert_eq!(clip("abcdef", 4), "abc…");
        assert_eq!(clip("abcdef", 0), "");
    }

    #[test]
    fn ages_and_times() {
        assert_eq!(ago(100, 100), "0s");
        assert_eq!(ago(200, 100), "1m");
        assert_eq!(ago(100 + 7200, 100), "2h");
        assert_eq!(ago(100 + 3 * 86_400, 100), "3d");
        assert_eq!(ago(100, 200), "future");
        assert_eq!(relative(0, 7200), "in 2h");
        assert_eq!(relative(7200, 0), "2h ago");
        assert_eq!(timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(timestamp(-5), "@-5");
        assert_eq!(thousands(100_000), "100,000");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
    }
}

/// Natural order: runs of ASCII digits compare by their value, so
/// `sensor-2` sorts before `sensor-10`; everything else compares by
/// character. Equal by that rule (`a01`, `a1`), the plain order decides, so
/// the order is total and agrees with string equality.
pub fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let (x, y) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < x.len() && j < y.len() {
        if x[i].is_ascii_digit() && y[j].is_ascii_digit() {
            let (si, sj) = (i, j);
            while i < x.len() && x[i].is_ascii_digit() {
                i += 1;
            }
            while j < y.len() && y[j].is_ascii_digit() {
                j += 1;
            }
            // Compare the digit runs without leading zeros: longer is
            // larger, equal lengths compare digit by digit (no overflow).
            let p = trim_zeros(&x[si..i]);
            let q = trim_zeros(&y[sj..j]);
            match p.len().cmp(&q.len()).then_with(|| p.cmp(q)) {
                Ordering::Equal => {}
                other => return other,
            }
        } else {
            match x[i].cmp(&y[j]) {
                Ordering::Equal => {}
                other => return other,
            }
            i += 1;
            j += 1;
        }
    }
    (x.len() - i).cmp(&(y.len() - j)).then_with(|| a.cmp(b))
}

fn trim_zeros(d: &[u8]) -> &[u8] {
    let n = d.iter().take_while(|&&c| c == b'0').count();
    &d[n..]
}

#[cfg(test)]
mod natural_tests {
    use super::natural_cmp;

    #[test]
    fn digit_runs_compare_by_value() {
        let mut v = vec![
            "sensor-10",
            "sensor-2",
            "sensor-1",
            "gw",
            "sensor-02",
            "sensor-1a",
            "a",
        ];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            v,
            [
                "a",
                "gw",
                "sensor-1",
                "sensor-1a",
                "sensor-02",
                "sensor-2",
                "sensor-10"
            ]
        );
        assert_eq!(
            natural_cmp("x99999999999999999999999", "x100000000000000000000000"),
            std::cmp::Ordering::Less
        );
        assert_eq!(natural_cmp("same-7", "same-7"), std::cmp::Ordering::Equal);
    }
}
