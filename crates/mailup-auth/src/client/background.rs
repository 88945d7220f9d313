//! Refreshing ahead of expiry in the background.

use super::*;
use crate::scheduler::Scheduler;

impl MailUpClient {
    /// Spawns a task that refreshes ahead of expiry (at the refresh time, `expires_at -
    /// min(skew, lifetime / 2)`, minus a random jitter of up to half that skew, capped at 30 s)
    /// so callers rarely wait. It never refreshes a token set less than a second old, so a
    /// server whose tokens live barely longer than the skew is not flooded, and it sleeps
    /// until the next due time (no polling). The task holds only a weak reference: it ends
    /// when every clone of the client is dropped, or when the returned handle is dropped.
    ///
    /// This is the scheduler of [`MailUpAccounts`](crate::MailUpAccounts) with one account; a
    /// client obtained from a `MailUpAccounts` is already refreshed by the accounts' scheduler
    /// (then this returns a handle that does nothing).
    pub fn spawn_background_refresh(&self) -> BackgroundRefresh {
        let mut standalone = self
            .inner
            .standalone
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Another handle is alive: share its task (it runs while any handle does).
        if let Some(running) = standalone.upgrade() {
            return BackgroundRefresh {
                _running: Some(running),
            };
        }
        // Attached to a `MailUpAccounts` scheduler: that one refreshes this client already.
        if self.scheduler().is_some() {
            return BackgroundRefresh { _running: None };
        }
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let alive = weak.clone();
        let scheduler = Scheduler::new(
            self.inner.settings.clock.clone(),
            1,
            Box::new(move |_| weak.upgrade().map(|inner| MailUpClient { inner })),
            Box::new(move || alive.strong_count() > 0),
        );
        self.attach(&scheduler);
        let running = Arc::new(RunningTask {
            handle: scheduler.spawn(),
            _scheduler: scheduler,
        });
        *standalone = Arc::downgrade(&running);
        BackgroundRefresh {
            _running: Some(running),
        }
    }

    /// Reports this client's next due time to `scheduler` from now on.
    pub(crate) fn attach(&self, scheduler: &Arc<Scheduler>) {
        *self
            .inner
            .scheduler
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::downgrade(scheduler);
        self.report_due();
    }

    fn scheduler(&self) -> Option<Arc<Scheduler>> {
        self.inner
            .scheduler
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .upgrade()
    }

    /// Tells the scheduler (if any) when this client next needs a background refresh.
    pub(crate) fn report_due(&self) {
        if let Some(scheduler) = self.scheduler() {
            scheduler.schedule(&self.inner.profile, self.next_background_due());
        }
    }

    /// When the background should next look at this client: [`next_wakeup`] with a random
    /// jitter. `None` when nothing is due (no tokens, or a login is needed).
    pub(crate) fn next_background_due(&self) -> Option<UnixTime> {
        let wakeup = next_wakeup(&self.lock_state().session, self.inner.settings.skew())?;
        // Drawn with the state lock released: the entropy source is the application's.
        let jitter = self.inner.settings.entropy.jitter(wakeup.max_jitter);
        Some(wakeup.at(jitter))
    }

    /// The background job: refresh if due (or about to be, within the jitter), else nothing.
    pub(crate) async fn refresh_ahead(&self) -> Result<()> {
        self.run_driver(|driver| async move {
            let deadline = driver.deadline();
            driver.sync_from_store().await?;
            let now = driver.inner.settings.clock.now();
            let wakeup = next_wakeup(&driver.lock_state().session, driver.inner.settings.skew());
            let Some(wakeup) = wakeup else { return Ok(()) };
            if now < wakeup.earliest() {
                return Ok(()); // too early, or the tokens are too young: the loop sleeps again
            }
            if now < wakeup.due {
                // Ahead of time: force it; callers keep the current token meanwhile.
                return driver.force_refresh(deadline).await.map(drop);
            }
            driver.lock_state().session.handle_timeout(now);
            driver.obtain(deadline).await.map(drop)
        })
        .await
    }
}

/// When the background refreshes a session ([`next_wakeup`]'s answer): at `due` minus a jitter
/// of at most `max_jitter`, but not before `not_before`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Wakeup {
    /// When the session says a refresh is due (`poll_timeout`: the refresh time, or the end of
    /// a backoff).
    pub(crate) due: UnixTime,
    /// The largest jitter to wake up earlier by: half the effective skew, capped at 30 s.
    pub(crate) max_jitter: Duration,
    /// A second after the tokens were obtained: never sooner.
    pub(crate) not_before: UnixTime,
}

impl Wakeup {
    /// The moment to wake up with this `jitter` (taken as at most `max_jitter`: an
    /// [`Entropy`] that answers more would wake the job before it acts, and the scheduler
    /// would wake it again at once, in a loop until `earliest`). The scheduler sleeps until it
    /// with a random jitter, spreading many clients' refreshes.
    pub(crate) fn at(&self, jitter: Duration) -> UnixTime {
        self.due
            .saturating_sub(jitter.min(self.max_jitter))
            .max(self.not_before)
    }

    /// The earliest moment any jitter wakes up at: the job the scheduler wakes refreshes once
    /// this has come, so it always acts when woken.
    pub(crate) fn earliest(&self) -> UnixTime {
        self.at(self.max_jitter)
    }
}

/// The one rule for when the background refreshes a session: at the session's due time
/// (`poll_timeout`), minus a jitter of at most half the effective skew of the current tokens
/// (`skew` while none are held), capped at 30 s; but never within `MIN_BACKGROUND_INTERVAL`
/// (1 s) of the tokens being obtained, so a server whose tokens live barely longer than the
/// skew is not flooded. `None` when nothing is due (no tokens, or a login is needed).
pub(crate) fn next_wakeup(session: &Session, skew: Duration) -> Option<Wakeup> {
    let due = session.poll_timeout()?;
    let tokens = session.tokens();
    let effective_skew = tokens.map_or(skew, |tokens| tokens.effective_skew(skew));
    Some(Wakeup {
        due,
        max_jitter: (effective_skew / 2).min(MAX_BACKGROUND_JITTER),
        not_before: tokens
            .map_or(UnixTime::EPOCH, |tokens| tokens.obtained_at)
            .saturating_add(MIN_BACKGROUND_INTERVAL),
    })
}

/// The handle of [`MailUpClient::spawn_background_refresh`]; the task runs while any handle
/// of the client does, and stops when the last is dropped.
#[derive(Debug)]
pub struct BackgroundRefresh {
    _running: Option<Arc<RunningTask>>,
}

impl BackgroundRefresh {
    /// Gives up this handle (the task stops when no other handle is left).
    pub fn stop(self) {}
}

/// A standalone client's background task and its scheduler, shared by its handles.
#[derive(Debug)]
pub(super) struct RunningTask {
    handle: tokio::task::JoinHandle<()>,
    /// The scheduler lives as long as the task's handles; the client only holds a weak
    /// reference.
    _scheduler: Arc<Scheduler>,
}

impl Drop for RunningTask {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

#[cfg(test)]
mod tests {
    use mailup_auth_core::{RefreshToken, TransportErrorKind};

    use super::*;
    use crate::test_support::NOW;

    const SKEW: Duration = Duration::from_secs(60);

    fn session(lifetime: Duration) -> Session {
        let config = ClientConfig::builder("cid", ClientSecret::new("csecret"))
            .refresh_skew(SKEW)
            .build()
            .unwrap();
        let obtained_at = UnixTime::from_secs(NOW);
        Session::with_tokens(
            config,
            TokenSet {
                access_token: AccessToken::new("access"),
                refresh_token: Some(RefreshToken::new("refresh")),
                expires_at: obtained_at.saturating_add(lifetime),
                obtained_at,
                token_type: None,
                scope: None,
            },
        )
    }

    fn at(secs: u64) -> UnixTime {
        UnixTime::from_secs(NOW + secs)
    }

    #[test]
    fn nothing_is_due_without_tokens() {
        let config = ClientConfig::builder("cid", ClientSecret::new("csecret"))
            .build()
            .unwrap();
        assert_eq!(next_wakeup(&Session::new(config), SKEW), None);
    }

    #[test]
    fn the_wakeup_is_the_refresh_time_minus_the_jitter() {
        let wakeup = next_wakeup(&session(Duration::from_secs(3600)), SKEW).unwrap();
        assert_eq!(
            wakeup,
            Wakeup {
                due: at(3540),
                // Half the skew.
                max_jitter: Duration::from_secs(30),
                not_before: at(1),
            }
        );
        assert_eq!(wakeup.at(Duration::from_secs(10)), at(3530));
        assert_eq!(wakeup.earliest(), at(3510));
    }

    #[test]
    fn the_jitter_is_at_most_half_the_effective_skew_and_never_above_30_s() {
        let hour = session(Duration::from_secs(3600));
        let wakeup = next_wakeup(&hour, Duration::from_secs(600)).unwrap();
        assert_eq!(wakeup.max_jitter, Duration::from_secs(30));
        // A 20 s token: the effective skew is 10 s (half its life), the jitter at most 5 s.
        let short = next_wakeup(&session(Duration::from_secs(20)), SKEW).unwrap();
        assert_eq!(short.max_jitter, Duration::from_secs(5));
        assert_eq!(short.earliest(), at(5));
    }

    #[test]
    fn never_within_a_second_of_the_tokens_being_obtained() {
        // A 2 s token is due after 1 s; however large the jitter, not before that second.
        let wakeup = next_wakeup(&session(Duration::from_secs(2)), SKEW).unwrap();
        assert_eq!(wakeup.due, at(1));
        assert_eq!(wakeup.at(Duration::from_secs(30)), at(1));
        assert_eq!(wakeup.earliest(), at(1));
    }

    #[test]
    fn any_jitter_wakes_the_job_no_earlier_than_it_refreshes() {
        // The scheduler sleeps with a random jitter up to the largest; the job it wakes
        // refreshes once `earliest` has come. So every wake-up finds the job ready to refresh.
        for lifetime in [2, 20, 120, 3600] {
            let wakeup = next_wakeup(&session(Duration::from_secs(lifetime)), SKEW).unwrap();
            let max = wakeup.max_jitter.as_millis() as u64;
            for millis in (0..=max).step_by(250) {
                let woken = wakeup.at(Duration::from_millis(millis));
                assert!(
                    woken >= wakeup.earliest(),
                    "lifetime {lifetime} s, {millis} ms"
                );
                assert!(woken <= wakeup.due.max(wakeup.not_before));
            }
        }
    }

    #[test]
    fn a_jitter_above_the_bound_is_the_bound() {
        // Hostile review of issue 17: an `Entropy` that ignores `max` (a fixed jitter of a
        // minute, an hour) must not wake the job before it acts; the scheduler would wake it
        // again at once, and again, until `earliest`.
        for lifetime in [2, 20, 120, 3600] {
            let wakeup = next_wakeup(&session(Duration::from_secs(lifetime)), SKEW).unwrap();
            for jitter in [61, 3600, u64::MAX] {
                let woken = wakeup.at(Duration::from_secs(jitter));
                assert_eq!(
                    woken,
                    wakeup.earliest(),
                    "lifetime {lifetime} s, {jitter} s"
                );
            }
        }
    }

    #[test]
    fn a_backing_off_session_wakes_for_its_retry() {
        let mut session = session(Duration::from_secs(3600));
        let id = session.refresh_now().unwrap();
        let request = session.poll_request().unwrap();
        assert_eq!(request.id(), id);
        let failure = TransportError::new(TransportErrorKind::Connect, "refused");
        session.handle_token_response(at(10), id, Err(failure));
        let retry_at = session.poll_timeout().unwrap();
        assert!(retry_at > at(10));
        let wakeup = next_wakeup(&session, SKEW).unwrap();
        assert_eq!(wakeup.due, retry_at);
        assert_eq!(wakeup.at(Duration::ZERO), retry_at);
    }

    /// The scheduler's due time and the job's "act now?" as they were before the one rule
    /// (ec815ab: `next_background_due`, `jitter_max` and `refresh_ahead`), written out again.
    fn old_due_and_acts(
        session: &Session,
        skew: Duration,
        jitter: Duration,
        now: UnixTime,
    ) -> Option<(UnixTime, bool)> {
        let due = session.poll_timeout()?;
        let obtained_at = session.tokens().map(|t| t.obtained_at);
        let jitter_max = (session
            .tokens()
            .map_or(skew, |tokens| tokens.effective_skew(skew))
            / 2)
        .min(Duration::from_secs(30));
        let early = due.saturating_sub(jitter);
        let earliest = obtained_at
            .unwrap_or(UnixTime::EPOCH)
            .saturating_add(MIN_BACKGROUND_INTERVAL);
        let too_early = now.saturating_add(jitter_max) < due;
        let just_refreshed =
            obtained_at.is_some_and(|at| now < at.saturating_add(MIN_BACKGROUND_INTERVAL));
        Some((early.max(earliest), !(too_early || just_refreshed)))
    }

    #[test]
    fn the_one_rule_wakes_and_acts_exactly_as_the_old_code_did() {
        // Hostile review of issue 17: the refactor must not move a wake-up or change whether
        // the woken job refreshes, for fresh and backing-off sessions, any skew, any jitter
        // within the bound, at any moment around the due time.
        let mut compared = 0;
        for lifetime in [1, 2, 3, 20, 61, 120, 3600] {
            for skew in [0, 1, 7, 60, 600, 86_400] {
                let skew = Duration::from_secs(skew);
                let fresh = session(Duration::from_secs(lifetime));
                let mut backing_off = session(Duration::from_secs(lifetime));
                let id = backing_off.refresh_now().unwrap();
                let _ = backing_off.poll_request();
                let failure = TransportError::new(TransportErrorKind::Connect, "refused");
                backing_off.handle_token_response(at(lifetime / 2), id, Err(failure));
                for session in [&fresh, &backing_off] {
                    let wakeup = next_wakeup(session, skew).unwrap();
                    let due = wakeup.due;
                    let max = wakeup.max_jitter.as_millis() as u64;
                    for jitter in [0, 1.min(max), max / 3, max.saturating_sub(1), max] {
                        let jitter = Duration::from_millis(jitter);
                        for offset in [-40_000i64, -30_001, -30_000, -1_001, -1_000, -1, 0, 1] {
                            let now = if offset < 0 {
                                due.saturating_sub(Duration::from_millis(offset.unsigned_abs()))
                            } else {
                                due.saturating_add(Duration::from_millis(offset as u64))
                            };
                            let (old_at, old_acts) =
                                old_due_and_acts(session, skew, jitter, now).unwrap();
                            assert_eq!(wakeup.at(jitter), old_at, "{lifetime} s, {skew:?}");
                            assert_eq!(
                                now >= wakeup.earliest(),
                                old_acts,
                                "{lifetime} s, {skew:?}, now {offset} ms from due"
                            );
                            compared += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(compared, 7 * 6 * 2 * 5 * 8);
    }
}
