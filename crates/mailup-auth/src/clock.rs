//! The clock and the randomness the facade injects into the core.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use mailup_auth_core::{CsrfState, UnixTime};

/// A source of the current time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Now.
    fn now(&self) -> UnixTime;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixTime {
        UnixTime::from_system_time(SystemTime::now())
    }
}

/// A clock that moves only when told to: for tests that jump time without sleeping.
#[derive(Debug)]
pub struct ManualClock {
    millis: AtomicU64,
}

impl ManualClock {
    /// A clock stopped at `start`.
    pub fn new(start: UnixTime) -> Self {
        Self {
            millis: AtomicU64::new(start.as_millis()),
        }
    }

    /// A clock stopped at the current system time.
    pub fn starting_now() -> Self {
        Self::new(SystemClock.now())
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let by = by.as_millis().min(u64::MAX as u128) as u64;
        self.millis.fetch_add(by, Ordering::SeqCst);
    }

    /// Sets the clock.
    pub fn set(&self, to: UnixTime) {
        self.millis.store(to.as_millis(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> UnixTime {
        UnixTime::from_millis(self.millis.load(Ordering::SeqCst))
    }
}

/// Where CSRF `state` values and jitter come from.
pub trait Entropy: Send + Sync + std::fmt::Debug {
    /// A fresh, unguessable CSRF state.
    fn csrf_state(&self) -> CsrfState;
    /// A uniformly random duration in `[0, max]`, for jitter.
    fn jitter(&self, max: Duration) -> Duration;
}

/// The operating system's random generator: 32 random bytes, URL-safe base64, per state.
#[derive(Clone, Copy, Debug, Default)]
pub struct OsEntropy;

impl Entropy for OsEntropy {
    fn csrf_state(&self) -> CsrfState {
        let mut bytes = [0u8; 32];
        os_random(&mut bytes);
        CsrfState::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
    }

    fn jitter(&self, max: Duration) -> Duration {
        let max_millis = max.as_millis().min(u64::MAX as u128) as u64;
        if max_millis == 0 {
            return Duration::ZERO;
        }
        let mut bytes = [0u8; 8];
        os_random(&mut bytes);
        Duration::from_millis(u64::from_le_bytes(bytes) % (max_millis + 1))
    }
}

/// Fills `bytes` from the operating system's generator. A system that cannot give random
/// bytes cannot make an unguessable CSRF state either: that is a panic, as it was with `rand`'s
/// `OsRng`, never a predictable value.
fn os_random(bytes: &mut [u8]) {
    if let Err(error) = getrandom::getrandom(bytes) {
        panic!("the operating system's random generator failed: {error}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(UnixTime::from_secs(100));
        assert_eq!(clock.now(), UnixTime::from_secs(100));
        clock.advance(Duration::from_millis(1500));
        assert_eq!(clock.now(), UnixTime::from_millis(101_500));
        clock.set(UnixTime::from_secs(5));
        assert_eq!(clock.now(), UnixTime::from_secs(5));
    }

    #[test]
    fn os_entropy_states_are_long_unique_and_url_safe() {
        let a = OsEntropy.csrf_state();
        let b = OsEntropy.csrf_state();
        assert_ne!(a, b);
        assert_eq!(a.secret().len(), 43);
        assert!(a
            .secret()
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert!(OsEntropy.jitter(Duration::from_millis(10)) <= Duration::from_millis(10));
        assert_eq!(OsEntropy.jitter(Duration::ZERO), Duration::ZERO);
    }
}
