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

    /// When the background should next look at this client ([`next_wakeup`] with a random
    /// jitter). `None` when nothing is due (no tokens, or a login is needed).
    pub(crate) fn next_background_due(&self) -> Option<UnixTime> {
        let entropy = &self.inner.settings.entropy;
        next_wakeup(
            &self.lock_state().session,
            self.inner.settings.skew(),
            |max| entropy.jitter(max),
        )
        .map(|wakeup| wakeup.at)
    }

    /// The background job: refresh if due (or about to be, within the jitter), else nothing.
    pub(crate) async fn refresh_ahead(&self) -> Result<()> {
        self.run_driver(|driver| async move {
            let deadline = driver.deadline();
            driver.sync_from_store().await?;
            let now = driver.inner.settings.clock.now();
            // The earliest moment the scheduler may have woken us for (the largest jitter).
            let wakeup = next_wakeup(
                &driver.lock_state().session,
                driver.inner.settings.skew(),
                |max| max,
            );
            let Some(wakeup) = wakeup else { return Ok(()) };
            if now < wakeup.at {
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

/// The background's next look at a session: [`next_wakeup`]'s answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Wakeup {
    /// When to wake up and refresh ahead.
    pub(crate) at: UnixTime,
    /// When the session itself says a refresh is due (`poll_timeout`: the refresh time, or the
    /// end of a backoff); `at` is at or before it, unless the tokens are too young.
    pub(crate) due: UnixTime,
}

/// The one rule for when the background refreshes a session: at the session's due time
/// (`poll_timeout`), minus `jitter(max)` where `max` is half the effective skew of the current
/// tokens (`skew` while none are held), capped at 30 s; but never within
/// `MIN_BACKGROUND_INTERVAL` (1 s) of the tokens being obtained, so a server whose tokens live
/// barely longer than the skew is not flooded. `None` when nothing is due (no tokens, or a
/// login is needed).
///
/// The scheduler sleeps until `at` with a random jitter (spreading many clients' refreshes);
/// the job it wakes asks again with the largest jitter (`|max| max`), the earliest the
/// scheduler could have woken, and refreshes only once that moment has come.
pub(crate) fn next_wakeup(
    session: &Session,
    skew: Duration,
    jitter: impl FnOnce(Duration) -> Duration,
) -> Option<Wakeup> {
    let due = session.poll_timeout()?;
    let tokens = session.tokens();
    let effective_skew = tokens.map_or(skew, |tokens| tokens.effective_skew(skew));
    let max_jitter = (effective_skew / 2).min(MAX_BACKGROUND_JITTER);
    let early = due.saturating_sub(jitter(max_jitter));
    let earliest = tokens
        .map_or(UnixTime::EPOCH, |tokens| tokens.obtained_at)
        .saturating_add(MIN_BACKGROUND_INTERVAL);
    Some(Wakeup {
        at: early.max(earliest),
        due,
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
        assert_eq!(next_wakeup(&Session::new(config), SKEW, |max| max), None);
    }

    #[test]
    fn the_wakeup_is_the_refresh_time_minus_the_jitter_asked_for() {
        let session = session(Duration::from_secs(3600));
        let mut asked = None;
        let wakeup = next_wakeup(&session, SKEW, |max| {
            asked = Some(max);
            Duration::from_secs(10)
        });
        // Half the skew is the most the jitter may take.
        assert_eq!(asked, Some(Duration::from_secs(30)));
        assert_eq!(
            wakeup,
            Some(Wakeup {
                at: at(3530),
                due: at(3540)
            })
        );
    }

    #[test]
    fn the_jitter_is_at_most_half_the_effective_skew_and_never_above_30_s() {
        let max = |session: &Session, skew| {
            let mut asked = Duration::MAX;
            next_wakeup(session, skew, |max| {
                asked = max;
                Duration::ZERO
            });
            asked
        };
        let hour = session(Duration::from_secs(3600));
        assert_eq!(
            max(&hour, Duration::from_secs(600)),
            Duration::from_secs(30)
        );
        // A 20 s token: the effective skew is 10 s (half its life), the jitter at most 5 s.
        let short = session(Duration::from_secs(20));
        assert_eq!(max(&short, SKEW), Duration::from_secs(5));
    }

    #[test]
    fn never_within_a_second_of_the_tokens_being_obtained() {
        // A 2 s token is due after 1 s; however large the jitter, not before that second.
        let session = session(Duration::from_secs(2));
        let wakeup = next_wakeup(&session, SKEW, |max| max).unwrap();
        assert_eq!(wakeup.due, at(1));
        assert_eq!(wakeup.at, at(1));
    }

    #[test]
    fn any_jitter_wakes_the_job_no_earlier_than_the_largest_one_allows() {
        // The scheduler sleeps with a random jitter; the job it wakes refreshes once the
        // largest jitter's moment has come. So every wake-up finds the job ready to refresh.
        for lifetime in [2, 20, 120, 3600] {
            let session = session(Duration::from_secs(lifetime));
            let earliest = next_wakeup(&session, SKEW, |max| max).unwrap().at;
            for millis in (0..=30_000).step_by(250) {
                let jitter = Duration::from_millis(millis);
                let wakeup = next_wakeup(&session, SKEW, |max| jitter.min(max)).unwrap();
                assert!(
                    wakeup.at >= earliest,
                    "lifetime {lifetime} s, jitter {jitter:?}"
                );
                assert!(wakeup.at <= wakeup.due.max(earliest));
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
        let wakeup = next_wakeup(&session, SKEW, |_| Duration::ZERO).unwrap();
        assert_eq!(
            wakeup,
            Wakeup {
                at: retry_at,
                due: retry_at
            }
        );
    }
}
