//! Time as the emulator sees it: a [`Clock`] trait, the real [`SystemClock`] and a
//! [`ManualClock`] that tests move by hand, so codes and tokens expire without sleeping.

use std::fmt::Debug;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// A source of the current time.
///
/// Every expiry the emulator checks (authorization codes, access tokens, LogOn forms, rate-limit
/// windows) reads this clock, so a test that injects a [`ManualClock`] controls them all.
pub trait Clock: Send + Sync + Debug {
    /// The current time.
    fn now(&self) -> SystemTime;
}

/// The operating system's wall clock. The default.
#[allow(
    clippy::exhaustive_structs,
    reason = "a unit struct, named as a value (`SystemClock`)"
)]
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that only moves when told to.
///
/// ```
/// use std::sync::Arc;
/// use std::time::{Duration, SystemTime};
/// use mailup_auth_emulator::{Clock, ManualClock};
///
/// let clock = Arc::new(ManualClock::new(SystemTime::UNIX_EPOCH));
/// clock.advance(Duration::from_secs(61));
/// assert_eq!(clock.now(), SystemTime::UNIX_EPOCH + Duration::from_secs(61));
/// ```
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<SystemTime>,
}

impl ManualClock {
    /// A clock stopped at `start`.
    pub fn new(start: SystemTime) -> Self {
        Self {
            now: Mutex::new(start),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(|e| e.into_inner());
        *now += by;
    }

    /// Sets the clock to `to` (which may be earlier than the current reading).
    pub fn set(&self, to: SystemTime) {
        *self.now.lock().unwrap_or_else(|e| e.into_inner()) = to;
    }
}

impl Default for ManualClock {
    /// A clock stopped at the Unix epoch plus 1.7 billion seconds (November 2023), a
    /// realistic, fixed date.
    fn default() -> Self {
        Self::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000))
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.now.lock().unwrap_or_else(|e| e.into_inner())
    }
}
