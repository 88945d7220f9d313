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
