//! Semantic versions as the release command needs them: parse, compare, bump. Parsing and
//! precedence are the `semver` crate's (the one cargo uses); this type only refuses build
//! metadata.

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// A `MAJOR.MINOR.PATCH[-PRE]` version. Build metadata (`+...`) is not accepted: crates.io
/// ignores it for ordering, so a release that differs only there is not a new release.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(semver::Version);

impl Version {
    /// A release version without pre-release identifiers.
    pub fn new(major: u64, minor: u64, patch: u64) -> Self {
        Self(semver::Version::new(major, minor, patch))
    }
}

impl FromStr for Version {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        let version = semver::Version::parse(text).map_err(|e| {
            Error::new(format!(
                "`{text}` is not a version of the form X.Y.Z[-pre]: {e}"
            ))
        })?;
        if !version.build.is_empty() {
            return Err(Error::new(format!(
                "`{text}`: build metadata (`+...`) is not supported in a release version"
            )));
        }
        Ok(Self(version))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Which version to release: a level to bump, or an exact version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bump {
    /// `X.Y.Z` → `X+1.0.0`.
    Major,
    /// `X.Y.Z` → `X.Y+1.0`.
    Minor,
    /// `X.Y.Z` → `X.Y.Z+1`.
    Patch,
    /// Exactly this version (it must still be greater than the current one).
    Exact(Version),
}

impl Bump {
    /// The version after `current`. Level bumps drop any pre-release identifiers.
    pub fn apply(&self, current: &Version) -> Version {
        match self {
            Bump::Major => Version::new(current.0.major + 1, 0, 0),
            Bump::Minor => Version::new(current.0.major, current.0.minor + 1, 0),
            Bump::Patch => Version::new(current.0.major, current.0.minor, current.0.patch + 1),
            Bump::Exact(version) => version.clone(),
        }
    }
}

impl FromStr for Bump {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        match text {
            "major" => Ok(Bump::Major),
            "minor" => Ok(Bump::Minor),
            "patch" => Ok(Bump::Patch),
            _ => text.parse().map(Bump::Exact).map_err(|e| {
                Error::new(format!(
                    "expected major, minor, patch or X.Y.Z: {}",
                    e.message()
                ))
            }),
        }
    }
}

impl fmt::Display for Bump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bump::Major => f.write_str("major"),
            Bump::Minor => f.write_str("minor"),
            Bump::Patch => f.write_str("patch"),
            Bump::Exact(version) => write!(f, "exact {version}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> Version {
        text.parse().unwrap()
    }

    #[test]
    fn parses_and_displays() {
        assert_eq!(v("1.4.2"), Version::new(1, 4, 2));
        assert_eq!(v("0.2.0-rc.1").to_string(), "0.2.0-rc.1");
        for bad in [
            "1.4",
            "1.4.2.0",
            "01.2.3",
            "a.b.c",
            "1.2.3-",
            "1.2.3+build",
            "",
            "1..2",
        ] {
            assert!(bad.parse::<Version>().is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn orders_by_semver_precedence() {
        let ordered = [
            "0.9.9",
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "1.0.1",
            "1.1.0",
            "2.0.0",
        ];
        for pair in ordered.windows(2) {
            assert!(v(pair[0]) < v(pair[1]), "{} < {}", pair[0], pair[1]);
        }
    }

    #[test]
    fn bumps_each_level() {
        let current = v("1.4.2");
        assert_eq!(Bump::Major.apply(&current), v("2.0.0"));
        assert_eq!(Bump::Minor.apply(&current), v("1.5.0"));
        assert_eq!(Bump::Patch.apply(&current), v("1.4.3"));
        assert_eq!("1.4.7".parse::<Bump>().unwrap().apply(&current), v("1.4.7"));
        assert_eq!(Bump::Minor.apply(&v("0.2.0-rc.1")), v("0.3.0"));
        assert!("mini".parse::<Bump>().is_err());
    }
}
