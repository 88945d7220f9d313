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

    /// When the background should next look at this client: the session's next due time
    /// (`poll_timeout`: the refresh time, or the end of a backoff), minus a random jitter of up
    /// to half the effective skew (capped at 30 s), never within a second of the tokens being
    /// obtained. `None` when nothing is due (no tokens, or a login is needed). The one place
    /// that decides it.
    pub(crate) fn next_background_due(&self) -> Option<UnixTime> {
        let (due, obtained_at) = {
            let shared = self.shared();
            (
                shared.session.poll_timeout()?,
                shared.session.tokens().map(|t| t.obtained_at),
            )
        };
        let early = due.saturating_sub(self.inner.settings.entropy.jitter(self.jitter_max()));
        let earliest = obtained_at
            .unwrap_or(UnixTime::EPOCH)
            .saturating_add(MIN_BACKGROUND_INTERVAL);
        Some(early.max(earliest))
    }

    /// Half the effective skew of the current tokens, capped at 30 s.
    pub(super) fn jitter_max(&self) -> Duration {
        let skew = self
            .shared()
            .session
            .tokens()
            .map_or(self.inner.settings.skew, |tokens| {
                tokens.effective_skew(self.inner.settings.skew)
            });
        (skew / 2).min(Duration::from_secs(30))
    }

    /// The background job: refresh if due (or about to be, within the jitter), else nothing.
    pub(crate) async fn refresh_ahead(&self) -> Result<()> {
        self.locked(|client| async move {
            let deadline = client.deadline();
            client.sync_from_store().await?;
            let now = client.inner.settings.clock.now();
            let (due, obtained_at) = {
                let shared = client.shared();
                (
                    shared.session.poll_timeout(),
                    shared.session.tokens().map(|t| t.obtained_at),
                )
            };
            let Some(due) = due else { return Ok(()) };
            let too_early = now.saturating_add(client.jitter_max()) < due;
            let just_refreshed =
                obtained_at.is_some_and(|at| now < at.saturating_add(MIN_BACKGROUND_INTERVAL));
            if too_early || just_refreshed {
                return Ok(()); // the loop sleeps again
            }
            if now < due {
                // Ahead of time: force it; callers keep the current token meanwhile.
                return client.force_refresh_locked(deadline).await.map(drop);
            }
            client.shared().session.handle_timeout(now);
            client.obtain_locked(deadline).await.map(drop)
        })
        .await
    }
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
