//! Unix timestamps on the wire: the range the protocol accepts and one way
//! to print them.
//!
//! Times an administrator supplies (OOB `expires_at`) are bounded so that
//! every stored time can be printed as RFC 3339: a year past 9999 has no
//! four-digit form, and printers that assume one (humantime) fail on it.

use std::time::{Duration, UNIX_EPOCH};

/// 9999-12-31T23:59:59Z, the last second RFC 3339 can write.
pub const MAX_UNIX: i64 = 253_402_300_799;

/// RFC 3339 in UTC with whole seconds (`2027-03-01T12:00:00Z`); a time
/// outside 1970..=9999 (only possible in data from elsewhere) prints as
/// `@<unix seconds>` instead of failing.
pub fn rfc3339(unix: i64) -> String {
    match u64::try_from(unix) {
        Ok(secs) if unix <= MAX_UNIX => {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
        }
        _ => format!("@{unix}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_the_whole_range_and_never_fails_outside_it() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_798_761_600), "2027-01-01T00:00:00Z");
        assert_eq!(rfc3339(MAX_UNIX), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339(MAX_UNIX + 1), "@253402300800");
        assert_eq!(rfc3339(i64::MAX), format!("@{}", i64::MAX));
        assert_eq!(rfc3339(-1), "@-1");
    }
}
