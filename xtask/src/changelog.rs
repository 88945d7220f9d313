//! `CHANGELOG.md` in the "Keep a Changelog" layout: moving the "Unreleased" section under a
//! new version heading, and the date that heading carries.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::version::Version;
use crate::{Error, Result};

/// Why the changelog cannot be released.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangelogProblem {
    /// No `## [Unreleased]` (or `## Unreleased`) heading.
    NoUnreleasedSection,
    /// The "Unreleased" section lists no change.
    EmptyUnreleasedSection,
    /// There is already a section for the version being released.
    VersionAlreadyPresent(String),
}

impl std::fmt::Display for ChangelogProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoUnreleasedSection => {
                f.write_str("CHANGELOG.md has no \"## [Unreleased]\" section")
            }
            Self::EmptyUnreleasedSection => f.write_str(
                "CHANGELOG.md's \"Unreleased\" section is empty: list the changes this release ships",
            ),
            Self::VersionAlreadyPresent(v) => {
                write!(f, "CHANGELOG.md already has a section for {v}")
            }
        }
    }
}

fn heading_text(line: &str) -> Option<&str> {
    line.strip_prefix("## ").map(str::trim)
}

fn is_unreleased_heading(line: &str) -> bool {
    heading_text(line).is_some_and(|t| {
        t.trim_start_matches('[')
            .split([']', ' '])
            .next()
            .is_some_and(|w| w.eq_ignore_ascii_case("unreleased"))
    })
}

/// A link reference definition, like `[Unreleased]: https://...`.
fn is_link_definition(line: &str) -> bool {
    line.starts_with('[') && line.contains("]: ")
}

/// Whether a line of the section says something (not blank, not a heading, not a comment).
fn is_entry(line: &str) -> bool {
    let t = line.trim();
    !(t.is_empty() || t.starts_with('#') || (t.starts_with("<!--") && t.ends_with("-->")))
}

/// The text with the "Unreleased" section's entries moved under `## [version] - date`, and an
/// empty "Unreleased" section left above it. A `[Unreleased]: .../compare/vA...HEAD` link
/// definition, if present, is moved on to the new tag and one is added for the new version.
pub fn release(
    text: &str,
    version: &Version,
    date: &str,
) -> std::result::Result<String, ChangelogProblem> {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .position(|l| is_unreleased_heading(l))
        .ok_or(ChangelogProblem::NoUnreleasedSection)?;
    let version_text = version.to_string();
    let already = lines
        .iter()
        .filter_map(|l| heading_text(l))
        .any(|h| h.trim_start_matches('[').split([']', ' ']).next() == Some(version_text.as_str()));
    if already {
        return Err(ChangelogProblem::VersionAlreadyPresent(version_text));
    }
    let end = lines[start + 1..]
        .iter()
        .position(|l| l.starts_with("## ") || is_link_definition(l))
        .map_or(lines.len(), |i| start + 1 + i);
    let mut body = &lines[start + 1..end];
    while body.first().is_some_and(|l| l.trim().is_empty()) {
        body = &body[1..];
    }
    while body.last().is_some_and(|l| l.trim().is_empty()) {
        body = &body[..body.len() - 1];
    }
    if !body.iter().any(|l| is_entry(l)) {
        return Err(ChangelogProblem::EmptyUnreleasedSection);
    }
    let bracketed = lines[start].contains('[');
    let heading = if bracketed {
        format!("## [{version}] - {date}")
    } else {
        format!("## {version} - {date}")
    };

    let mut out: Vec<String> = lines[..=start].iter().map(|l| (*l).to_owned()).collect();
    out.push(String::new());
    out.push(heading);
    out.push(String::new());
    out.extend(body.iter().map(|l| (*l).to_owned()));
    let rest = &lines[end..];
    if !rest.is_empty() {
        out.push(String::new());
    }
    for line in rest {
        match moved_unreleased_link(line, version) {
            Some((unreleased, released)) => {
                out.push(unreleased);
                out.push(released);
            }
            None => out.push((*line).to_owned()),
        }
    }
    let mut result = out.join("\n");
    if text.ends_with('\n') {
        result.push('\n');
    }
    Ok(result)
}

/// `[Unreleased]: BASE/compare/vA...HEAD` → (`[Unreleased]: BASE/compare/vNEW...HEAD`,
/// `[NEW]: BASE/compare/vA...vNEW`).
fn moved_unreleased_link(line: &str, version: &Version) -> Option<(String, String)> {
    let (label, url) = line.split_once("]: ")?;
    if !label
        .trim_start_matches('[')
        .eq_ignore_ascii_case("unreleased")
    {
        return None;
    }
    let url = url.trim();
    let (base, range) = url.rsplit_once('/')?;
    let previous = range.strip_suffix("...HEAD")?;
    let prefix = if previous.starts_with('v') { "v" } else { "" };
    let tag = format!("{prefix}{version}");
    Some((
        format!("{label}]: {base}/{tag}...HEAD"),
        format!("[{version}]: {base}/{previous}...{tag}"),
    ))
}

/// Checks the changelog could be released as `version`, without producing the text.
pub fn check(text: &str, version: &Version) -> std::result::Result<(), ChangelogProblem> {
    release(text, version, "0000-00-00").map(|_| ())
}

/// Today's date in UTC, `YYYY-MM-DD`.
// The xtask is not the core: reading the clock here is what a release date needs.
#[allow(clippy::disallowed_methods)]
pub fn today_utc() -> String {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, m, d) = civil_from_days((seconds / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Checks a `YYYY-MM-DD` date given on the command line: a real day of the Gregorian calendar
/// (`2024-02-29` is one, `2023-02-29` and `2024-02-31` are not).
pub fn parse_date(text: &str) -> Result<String> {
    let invalid = || Error::new(format!("`{text}` is not a date of the form YYYY-MM-DD"));
    let parts: Vec<&str> = text.split('-').collect();
    let shaped = parts.len() == 3
        && [4, 2, 2]
            .iter()
            .zip(&parts)
            .all(|(len, p)| p.len() == *len && p.bytes().all(|b| b.is_ascii_digit()));
    if !shaped {
        return Err(invalid());
    }
    let number = |part: &str| part.parse::<u32>().map_err(|_| invalid());
    let (year, month, day) = (number(parts[0])?, number(parts[1])?, number(parts[2])?);
    if !(1..=12).contains(&month) {
        return Err(invalid());
    }
    if day == 0 || day > days_in_month(year, month) {
        return Err(Error::new(format!(
            "`{text}` is not a date: {year:04}-{month:02} has {} days",
            days_in_month(year, month)
        )));
    }
    Ok(text.to_owned())
}

/// The days of `month` (1 to 12) in `year`, leap years as the Gregorian calendar has them.
fn days_in_month(year: u32, month: u32) -> u32 {
    let leap = (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400);
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "# Changelog

Intro.

## [Unreleased]

### Added
- a thing

### Fixed
- a bug

## [1.4.2] - 2024-01-15

- old

[Unreleased]: https://example.invalid/fx/compare/v1.4.2...HEAD
[1.4.2]: https://example.invalid/fx/compare/v1.4.1...v1.4.2
";

    fn v(text: &str) -> Version {
        text.parse().unwrap()
    }

    #[test]
    fn moves_unreleased_under_the_new_version() {
        let after = release(BEFORE, &v("1.5.0"), "2024-05-06").unwrap();
        let expected = "# Changelog

Intro.

## [Unreleased]

## [1.5.0] - 2024-05-06

### Added
- a thing

### Fixed
- a bug

## [1.4.2] - 2024-01-15

- old

[Unreleased]: https://example.invalid/fx/compare/v1.5.0...HEAD
[1.5.0]: https://example.invalid/fx/compare/v1.4.2...v1.5.0
[1.4.2]: https://example.invalid/fx/compare/v1.4.1...v1.4.2
";
        assert_eq!(after, expected);
        // Released again right away: nothing new to ship.
        assert_eq!(
            release(&after, &v("1.5.1"), "2024-05-07"),
            Err(ChangelogProblem::EmptyUnreleasedSection)
        );
    }

    #[test]
    fn works_without_brackets_links_or_later_sections() {
        let before = "# Changes\n\n## Unreleased\n\n- first\n";
        let after = release(before, &v("0.2.0"), "2024-05-06").unwrap();
        assert_eq!(
            after,
            "# Changes\n\n## Unreleased\n\n## 0.2.0 - 2024-05-06\n\n- first\n"
        );
    }

    #[test]
    fn refuses_empty_missing_or_duplicate() {
        let empty = "## [Unreleased]\n\n### Added\n\n<!-- nothing yet -->\n\n## [1.0.0] - 2020-01-01\n- x\n";
        assert_eq!(
            check(empty, &v("1.1.0")),
            Err(ChangelogProblem::EmptyUnreleasedSection)
        );
        assert_eq!(
            check("# Changelog\n", &v("1.1.0")),
            Err(ChangelogProblem::NoUnreleasedSection)
        );
        assert_eq!(
            check(BEFORE, &v("1.4.2")),
            Err(ChangelogProblem::VersionAlreadyPresent("1.4.2".to_owned()))
        );
    }

    #[test]
    fn converts_days_to_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(20_454), (2026, 1, 1));
        assert_eq!(today_utc().len(), 10);
        assert!(parse_date("2024-05-06").is_ok());
        assert!(parse_date("2024-5-6").is_err());
        assert!(parse_date("2024-13-01").is_err());
        // Days that do not exist in their month.
        assert!(parse_date("2024-02-31").is_err());
        assert!(parse_date("2024-04-31").is_err());
        assert!(parse_date("2023-02-29").is_err());
        assert!(parse_date("1900-02-29").is_err());
        assert!(parse_date("2024-02-00").is_err());
        assert!(parse_date("2024-02-29").is_ok());
        assert!(parse_date("2000-02-29").is_ok());
        assert!(parse_date("2024-12-31").is_ok());
        let message = parse_date("2024-02-31").unwrap_err();
        assert!(message.message().contains("has 29 days"), "{message:?}");
    }
}
