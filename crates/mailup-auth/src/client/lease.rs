//! The cross-process refresh lease, as the driver takes it before sending a refresh and checks
//! it right before the refresh leaves (see docs/architecture.md, "The refresh lease").

use super::driver::{DriveReport, Driver};
use super::*;

impl Driver {
    /// Takes the cross-process refresh lease when a refresh is queued (and a lease is
    /// configured), then adopts what another holder may have saved meanwhile: a queued refresh
    /// that carries a refresh token the store has superseded is then dropped unsent.
    ///
    /// While another process holds the lease, each sign from the lease that the store may have
    /// changed (the holder's save, its release, a poll) is followed by a reload: tokens newer
    /// than ours that the session may hand out are adopted at once, without the lease
    /// (`Ok(None)`, nothing to send), so the waiters of a storm do not take the lease one after
    /// another only to find the work done. Bounded by `deadline`: a lease still held elsewhere
    /// then is [`StoreError::LeaseTimeout`].
    pub(super) async fn lease_for_refresh(
        &self,
        deadline: tokio::time::Instant,
        report: &mut DriveReport,
    ) -> Result<Option<LeaseGuard>> {
        let Some(lease) = &self.inner.settings.lease else {
            return Ok(None);
        };
        if !self.lock_state().session.is_refreshing() {
            return Ok(None);
        }
        let started = tokio::time::Instant::now();
        loop {
            let wait = deadline.saturating_duration_since(tokio::time::Instant::now());
            match lease.try_acquire_or_wait(&self.inner.profile, wait).await? {
                LeaseAttempt::Acquired(guard) => {
                    if self.sync_from_store().await? {
                        tracing::info!(
                            "another process refreshed while we waited; using its tokens"
                        );
                        report.adopted = true;
                    }
                    return Ok(Some(guard));
                }
                // `HeldElsewhere`, and whatever a later version may add: look at the store.
                _ => {
                    if self.sync_from_store().await? {
                        report.adopted = true;
                        if self.adopted_tokens_serve() {
                            tracing::info!(
                                "another process refreshed; using its tokens without the lease"
                            );
                            return Ok(None);
                        }
                    }
                    if !self.lock_state().session.is_refreshing() {
                        // What was adopted needs no refresh from us (a logout, a rejection
                        // mark): the caller decides what it means.
                        return Ok(None);
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return Err(Error::from(StoreError::LeaseTimeout {
                            profile: self.inner.profile.clone(),
                            waited: started.elapsed(),
                        }));
                    }
                }
            }
        }
    }

    /// After adopting another process's save without the lease: whether the session would
    /// hand the adopted access token out now, with no refresh of ours still queued (the
    /// adopted refresh token superseded the one it carried).
    fn adopted_tokens_serve(&self) -> bool {
        let now = self.inner.settings.clock.now();
        let state = self.lock_state();
        !state.session.is_refreshing() && state.session.hand_out_until(now).is_some()
    }

    /// Asks the lease, right before a refresh is sent, whether it is still ours: `None` when
    /// it is, otherwise why the refresh must not go out. A process stopped past the lease's
    /// TTL (SIGSTOP, a GC pause, a frozen VM) after taking it may find it taken over, and its
    /// refresh token maybe already used. This narrows the window to the time between this
    /// answer and the request leaving; it cannot close it. A lease that cannot answer (its
    /// server unreachable) is treated as lost: nothing is sent without knowing.
    pub(super) async fn lost_lease(&self, guard: &LeaseGuard) -> Option<StoreError> {
        match guard.still_held().await {
            Ok(true) => None,
            Ok(false) => {
                tracing::warn!("refresh lease lost before the refresh was sent; not sending it");
                Some(StoreError::LeaseLost {
                    profile: self.inner.profile.clone(),
                })
            }
            Err(error) => {
                tracing::warn!(%error, "refresh lease could not be checked; not sending the refresh");
                Some(error)
            }
        }
    }
}
