//! Refreshing ahead of expiry in the background.

use super::*;

impl MailUpClient {
    /// Spawns a task that refreshes ahead of expiry (at `expires_at - skew`, minus a random
    /// jitter of up to half the skew, capped at 30 s) so callers rarely wait. It never
    /// refreshes a token set less than a second old, so a server whose tokens live barely
    /// longer than the skew is not flooded. The task holds only a weak reference: it ends when
    /// every clone of the client is dropped, or when the returned handle is dropped.
    pub fn spawn_background_refresh(&self) -> BackgroundRefresh {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let handle = tokio::spawn(async move {
            let mut failures: u32 = 0;
            loop {
                let wait = {
                    let Some(inner) = weak.upgrade() else { break };
                    MailUpClient { inner }.background_wait()
                };
                tokio::time::sleep(wait).await;
                let result = {
                    let Some(inner) = weak.upgrade() else { break };
                    MailUpClient { inner }.refresh_ahead().await
                };
                match result {
                    Ok(()) => failures = 0,
                    Err(error) => {
                        tracing::warn!(%error, "background refresh failed");
                        failures = failures.saturating_add(1);
                        // Back off (1 s doubling to 60 s; 60 s at once when a login is needed),
                        // holding no strong reference meanwhile.
                        let pause = if error.is_reauthorization_required() {
                            Duration::from_secs(60)
                        } else {
                            (MIN_BACKGROUND_INTERVAL * 2u32.saturating_pow(failures.min(6) - 1))
                                .min(Duration::from_secs(60))
                        };
                        tokio::time::sleep(pause).await;
                    }
                }
            }
        });
        BackgroundRefresh { handle }
    }

    /// Half the effective skew of the current tokens, capped at 30 s.
    pub(super) fn jitter_max(&self) -> Duration {
        let skew = self
            .shared()
            .session
            .tokens()
            .map_or(self.inner.skew, |tokens| {
                tokens.effective_skew(self.inner.skew)
            });
        (skew / 2).min(Duration::from_secs(30))
    }

    /// How long the background task sleeps before its next look.
    pub(super) fn background_wait(&self) -> Duration {
        let now = self.inner.clock.now();
        let (due, obtained_at) = {
            let shared = self.shared();
            (
                shared.session.poll_timeout(),
                shared.session.tokens().map(|t| t.obtained_at),
            )
        };
        let Some(due) = due else {
            return Duration::from_secs(30);
        };
        let early = due.saturating_sub(self.inner.entropy.jitter(self.jitter_max()));
        let earliest = obtained_at
            .unwrap_or(UnixTime::EPOCH)
            .saturating_add(MIN_BACKGROUND_INTERVAL);
        early
            .max(earliest)
            .duration_since(now)
            .max(Duration::from_millis(10))
    }

    pub(super) async fn refresh_ahead(&self) -> Result<()> {
        self.locked(|client| async move {
            let deadline = client.deadline();
            client.sync_from_store().await?;
            let now = client.inner.clock.now();
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

/// The handle of [`MailUpClient::spawn_background_refresh`]; dropping it stops the task.
#[derive(Debug)]
pub struct BackgroundRefresh {
    handle: tokio::task::JoinHandle<()>,
}

impl BackgroundRefresh {
    /// Stops the task.
    pub fn stop(self) {}
}

impl Drop for BackgroundRefresh {
    fn drop(&mut self) {
        self.handle.abort();
    }
}
