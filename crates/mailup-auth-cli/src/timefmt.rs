//! Time for people: RFC 3339 in UTC and "in 59m 12s" / "3m 4s ago".
//!
//! A stored time comes from disk and can be anything: one RFC 3339 cannot write (a year after
//! 9999) is shown as invalid, never a panic (`humantime`'s formatter asserts on those).

use mailup_auth::UnixTime;

/// The last second RFC 3339 can write: 9999-12-31T23:59:59Z.
const LAST_RFC3339_SECOND: u64 = 253_402_300_799;

/// `2024-05-01T12:34:56Z`, or `None` for a time after the year 9999 (checked first: humantime
/// asserts on those).
pub(crate) fn rfc3339(time: UnixTime) -> Option<String> {
    let secs = time.as_secs();
    if secs > LAST_RFC3339_SECOND {
        return None;
    }
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    Some(humantime::format_rfc3339_seconds(at).to_string())
}

/// [`rfc3339`], or `invalid time (N s after 1970-01-01)` for a time it cannot write.
pub(crate) fn display(time: UnixTime) -> String {
    rfc3339(time).unwrap_or_else(|| {
        format!(
            "invalid time ({} s after 1970-01-01, after the year 9999)",
            time.as_secs()
        )
    })
}

/// `in 59m 12s` for a future `time`, `3m 4s ago` for a past one, `now` within a second.
pub(crate) fn relative(time: UnixTime, now: UnixTime) -> String {
    if time >= now {
        let d = time.duration_since(now).as_secs();
        if d == 0 {
            "now".to_owned()
        } else {
            format!("in {}", span(d))
        }
    } else {
        let d = now.duration_since(time).as_secs();
        if d == 0 {
            "now".to_owned()
        } else {
            format!("{} ago", span(d))
        }
    }
}

/// `1d 2h`, `2h 5m`, `5m 3s`, `42s`: the two largest units.
fn span(secs: u64) -> String {
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        let format = |secs| rfc3339(UnixTime::from_secs(secs)).unwrap();
        assert_eq!(format(0), "1970-01-01T00:00:00Z");
        assert_eq!(format(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format(1_714_566_896), "2024-05-01T12:34:56Z");
        assert_eq!(format(4_107_542_400), "2100-03-01T00:00:00Z");
        assert_eq!(format(LAST_RFC3339_SECOND), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn times_after_the_year_9999_are_invalid_not_a_panic() {
        for time in [
            UnixTime::from_secs(LAST_RFC3339_SECOND + 1),
            UnixTime::from_secs(253_402_300_800 + 3600),
            UnixTime::from_millis(u64::MAX),
        ] {
            assert_eq!(rfc3339(time), None);
            assert!(
                display(time).starts_with("invalid time ("),
                "{}",
                display(time)
            );
            let _ = relative(time, UnixTime::from_secs(0));
        }
    }

    #[test]
    fn formats_relative_spans() {
        let now = UnixTime::from_secs(10_000);
        assert_eq!(relative(UnixTime::from_secs(13_552), now), "in 59m 12s");
        assert_eq!(relative(UnixTime::from_secs(9_816), now), "3m 4s ago");
        assert_eq!(relative(now, now), "now");
        assert_eq!(relative(UnixTime::from_secs(10_042), now), "in 42s");
        assert_eq!(
            relative(UnixTime::from_secs(10_000 + 93_600), now),
            "in 1d 2h"
        );
    }
}
