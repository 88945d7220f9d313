//! Time for people: RFC 3339 in UTC (via `humantime`) and "in 59m 12s" / "3m 4s ago".

use mailup_auth::UnixTime;

/// `2024-05-01T12:34:56Z`.
pub(crate) fn rfc3339(time: UnixTime) -> String {
    humantime::format_rfc3339_seconds(time.to_system_time()).to_string()
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
        assert_eq!(rfc3339(UnixTime::from_secs(0)), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UnixTime::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            rfc3339(UnixTime::from_secs(1_714_566_896)),
            "2024-05-01T12:34:56Z"
        );
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
