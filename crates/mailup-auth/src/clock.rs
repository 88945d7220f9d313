//! The clock and the randomness the facade injects into the core.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use mailup_auth_core::{CsrfState, UnixTime};

/// A source of the current time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Now.
    fn now(&self) -> UnixTime;

    /// A time at or after now, for checks that may run early but never late: the cached
    /// access token is handed out only while this is before the token's hand-out limit, on
    /// every call, so it is worth reading cheaply. Running ahead only makes a token leave the
    /// cache (and go through the session, which reads [`now`](Self::now)) that much earlier.
    ///
    /// The default is [`now`](Self::now). [`SystemClock`] reads the kernel's coarse clock on
    /// Linux (no timestamp-counter read; it lags the precise clock by at most one tick) plus
    /// two ticks and a millisecond.
    fn now_or_later(&self) -> UnixTime {
        self.now()
    }
}

/// The system clock.
#[allow(
    clippy::exhaustive_structs,
    reason = "a unit struct, named as a value (`SystemClock`)"
)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixTime {
        UnixTime::from_system_time(SystemTime::now())
    }

    fn now_or_later(&self) -> UnixTime {
        match coarse::now_or_later() {
            Some(later) => later,
            None => self.now(),
        }
    }
}

/// `CLOCK_REALTIME_COARSE`: the wall clock as of the last tick, read from the vDSO without a
/// timestamp-counter read (a few ns where the precise clock costs 20–30).
#[cfg(any(target_os = "linux", target_os = "android"))]
mod coarse {
    use std::sync::OnceLock;

    use mailup_auth_core::UnixTime;
    use rustix::time::{clock_getres, clock_gettime, ClockId, Timespec};

    /// Above this resolution the coarse clock is not worth it: the precise one is used.
    const MAX_RESOLUTION_NANOS: u64 = 50_000_000;

    fn nanos(time: Timespec) -> Option<u64> {
        let secs = u64::try_from(time.tv_sec).ok()?;
        let nanos = u64::try_from(time.tv_nsec).ok()?;
        secs.checked_mul(1_000_000_000)?.checked_add(nanos)
    }

    /// How far ahead of the coarse reading the precise clock may be, in whole milliseconds
    /// rounded up: two ticks and one millisecond (for the truncation to milliseconds).
    fn lead_millis() -> Option<u64> {
        static LEAD: OnceLock<Option<u64>> = OnceLock::new();
        *LEAD.get_or_init(|| {
            let resolution = nanos(clock_getres(ClockId::RealtimeCoarse))?;
            if resolution == 0 || resolution > MAX_RESOLUTION_NANOS {
                return None;
            }
            Some((2 * resolution).div_ceil(1_000_000) + 1)
        })
    }

    pub(super) fn now_or_later() -> Option<UnixTime> {
        let lead = lead_millis()?;
        let coarse = nanos(clock_gettime(ClockId::RealtimeCoarse))? / 1_000_000;
        Some(UnixTime::from_millis(coarse.saturating_add(lead)))
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
mod coarse {
    /// No coarse clock here: [`SystemClock`](super::SystemClock) reads the precise one.
    pub(super) fn now_or_later() -> Option<mailup_auth_core::UnixTime> {
        None
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
#[allow(
    clippy::exhaustive_structs,
    reason = "a unit struct, named as a value (`OsEntropy`)"
)]
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
    fn system_clock_now_or_later_never_runs_behind_now() {
        for _ in 0..10_000 {
            let before = SystemClock.now();
            let later = SystemClock.now_or_later();
            assert!(later >= before, "{later:?} < {before:?}");
            // Ahead by a few ticks at most, not by anything a token's lifetime would notice.
            assert!(later <= SystemClock.now().saturating_add(Duration::from_millis(200)));
        }
    }

    #[test]
    fn manual_clock_now_or_later_is_its_now() {
        let clock = ManualClock::new(UnixTime::from_secs(100));
        assert_eq!(clock.now_or_later(), UnixTime::from_secs(100));
        clock.advance(Duration::from_millis(1));
        assert_eq!(clock.now_or_later(), UnixTime::from_millis(100_001));
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
