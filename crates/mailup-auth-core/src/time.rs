//! Absolute time as plain data: the core never reads a clock, the caller passes `now`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A point in time, as milliseconds since the UNIX epoch.
///
/// Token expiry is stored as a `UnixTime` (not as "seconds left"), so it means the same thing
/// after a restart. Arithmetic saturates instead of overflowing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct UnixTime(u64);

impl UnixTime {
    /// The epoch itself.
    pub const EPOCH: UnixTime = UnixTime(0);

    /// From milliseconds since the epoch.
    pub const fn from_millis(millis: u64) -> Self {
        Self(millis)
    }

    /// From whole seconds since the epoch.
    pub const fn from_secs(secs: u64) -> Self {
        Self(secs.saturating_mul(1000))
    }

    /// From a `SystemTime` (times before the epoch become the epoch).
    pub fn from_system_time(time: SystemTime) -> Self {
        let millis = time
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis().min(u64::MAX as u128) as u64)
            .unwrap_or(0);
        Self(millis)
    }

    /// Milliseconds since the epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// Whole seconds since the epoch.
    pub const fn as_secs(self) -> u64 {
        self.0 / 1000
    }

    /// As a `SystemTime`.
    pub fn to_system_time(self) -> SystemTime {
        let since_epoch = Duration::from_millis(self.0);
        UNIX_EPOCH
            .checked_add(since_epoch)
            .unwrap_or_else(|| UNIX_EPOCH + Duration::from_secs(u64::from(u32::MAX)))
    }

    /// `self + d`, saturating.
    pub fn saturating_add(self, d: Duration) -> Self {
        Self(self.0.saturating_add(duration_millis(d)))
    }

    /// `self - d`, saturating at the epoch.
    pub fn saturating_sub(self, d: Duration) -> Self {
        Self(self.0.saturating_sub(duration_millis(d)))
    }

    /// The time from `earlier` to `self`, or zero when `earlier` is later.
    pub fn duration_since(self, earlier: UnixTime) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl From<SystemTime> for UnixTime {
    fn from(time: SystemTime) -> Self {
        Self::from_system_time(time)
    }
}

fn duration_millis(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_round_trip() {
        let t = UnixTime::from_secs(1_700_000_000);
        assert_eq!(t.as_secs(), 1_700_000_000);
        assert_eq!(UnixTime::from_system_time(t.to_system_time()), t);
        assert_eq!(UnixTime::from_millis(1500).as_secs(), 1);
    }

    #[test]
    fn arithmetic_saturates() {
        let t = UnixTime::from_secs(10);
        assert_eq!(t.saturating_sub(Duration::from_secs(20)), UnixTime::EPOCH);
        assert_eq!(
            UnixTime::from_millis(u64::MAX).saturating_add(Duration::from_secs(1)),
            UnixTime::from_millis(u64::MAX)
        );
        assert_eq!(
            UnixTime::from_secs(5).duration_since(UnixTime::from_secs(7)),
            Duration::ZERO
        );
        assert_eq!(
            UnixTime::from_secs(7).duration_since(UnixTime::from_secs(5)),
            Duration::from_secs(2)
        );
    }
}
