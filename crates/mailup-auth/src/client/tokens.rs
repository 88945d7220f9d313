//! The token lifecycle: the public token operations, and what a [`Driver`] does to obtain a
//! token (bounded retries, the lease lost and retaken, rejections settled against the store).
//! The pumping itself is in [`driver`].

use super::driver::Driver;
use super::*;

impl MailUpClient {
    /// A valid access token: the cached one while no refresh is due, otherwise after one
    /// refresh shared by all concurrent callers (retried with backoff on transient failures).
    ///
    /// Inside the refresh margin (`expires_at - skew`) a failing refresh does not fail the
    /// call: the current token is still valid and is returned (the failure shows in
    /// [`status`](Self::status)`.refresh_error`), until a few seconds before it expires. The
    /// whole operation is bounded by
    /// [`token_operation_timeout`](MailUpClientBuilder::token_operation_timeout) (30 s by
    /// default), however the token endpoint behaves.
    #[inline]
    pub fn access_token(&self) -> impl Future<Output = Result<AccessToken>> + Send + '_ {
        // Two words that move in registers; the cache is read on the first poll.
        AccessTokenFuture::new(self)
    }

    /// [`access_token`](Self::access_token) when the cache had nothing to hand out.
    pub(super) async fn access_token_uncached(&self) -> Result<AccessToken> {
        let span = tracing::debug_span!("mailup_auth.access_token", profile = %self.inner.profile);
        async {
            let flight = match self.wait_for_flight().await {
                Some(flight) => flight,
                None => {
                    // Whoever held the flight may have published what we need (a storm's
                    // waiters all end here, without taking the flight).
                    if let Some(token) = self.cached_access_token() {
                        return Ok(token);
                    }
                    self.lock_refresh_flight().await
                }
            };
            // Single flight: whoever held the flight before us may have refreshed already.
            if let Some(token) = self.cached_access_token() {
                return Ok(token);
            }
            self.run_driver_with(flight, |driver| async move {
                let deadline = driver.deadline();
                // Another instance may have rotated the tokens: use theirs, don't burn ours.
                driver.sync_before_refresh().await?;
                driver.obtain(deadline).await
            })
            .await
        }
        .instrument(span)
        .await
    }

    /// Forces a refresh now (e.g. the CLI's `refresh`), even if the access token is fresh. A
    /// rejected refresh is [`ErrorKind::ReauthorizationRequired`] and a failed one
    /// [`ErrorKind::TokenEndpointUnavailable`], even while the current access token is still
    /// valid (it keeps being served until it expires).
    pub async fn refresh(&self) -> Result<AccessToken> {
        self.run_driver(|driver| async move {
            let deadline = driver.deadline();
            driver.sync_from_store().await?;
            driver.force_refresh(deadline).await
        })
        .await
    }

    /// Refreshes when the core says a refresh is due (for schedulers; see
    /// [`spawn_background_refresh`](Self::spawn_background_refresh)).
    pub async fn refresh_if_due(&self) -> Result<()> {
        self.run_driver(|driver| async move {
            let deadline = driver.deadline();
            driver.sync_before_refresh().await?;
            let now = driver.inner.settings.clock.now();
            driver.lock_state().session.handle_timeout(now);
            driver.obtain(deadline).await.map(drop)
        })
        .await
    }
}

impl Driver {
    /// Sends one refresh now (or finishes the one a 401 already queued) and reports its
    /// outcome.
    pub(super) async fn force_refresh(
        &self,
        deadline: tokio::time::Instant,
    ) -> Result<AccessToken> {
        let started = {
            let mut state = self.lock_state();
            state.session.is_refreshing() || state.session.refresh_now().is_ok()
        };
        if !started {
            let reason = self.lock_state().session.reauthorization_reason().cloned();
            return Err(ErrorKind::ReauthorizationRequired(
                reason.unwrap_or(ReauthReason::NoRefreshToken),
            )
            .into());
        }
        let report = self.pump(deadline).await?;
        if let Some(error) = report.not_sent {
            if report.lease_lost && report.adopted {
                // The lease's new holder refreshed: its tokens are the refresh asked for.
                return self.obtain(deadline).await;
            }
            // Nothing was sent: the lease could not be taken, or was lost before sending.
            return Err(ErrorKind::Store(error).into());
        }
        if let Some(error) = report.refresh_error {
            // Not a rejection: the old tokens are kept and still served while valid.
            return Err(ErrorKind::TokenEndpointUnavailable { error, attempts: 1 }.into());
        }
        let rejected = self.lock_state().session.reauthorization_reason().cloned();
        if let Some(reason) = rejected {
            // Even if the current access token has not expired yet.
            if !self.settle_rejection(&reason, true).await? {
                return Err(ErrorKind::ReauthorizationRequired(reason).into());
            }
        }
        self.obtain(deadline).await
    }

    /// Drives the session until it hands out a token or gives a final answer. Bounded: in time by `deadline`, transient failures by
    /// `max_refresh_attempts`, rejections by one look at the store, and tokens that are stale
    /// on arrival by `MAX_STALE_TOKEN_SETS`.
    pub(super) async fn obtain(&self, deadline: tokio::time::Instant) -> Result<AccessToken> {
        let mut reloaded_after_rejection = false;
        let mut stale_token_sets = 0;
        let mut leases_lost = 0;
        // Why the last refresh was not sent, when the lease could not be taken: reported
        // instead of a token-endpoint failure, since the endpoint was never asked.
        let mut lease_error: Option<StoreError> = None;
        loop {
            let unsaved = self.lock_state().unsaved;
            if let Some(grant) = unsaved {
                self.persist_current(grant).await?;
            }
            let now = self.inner.settings.clock.now();
            let access = {
                // Decide and publish in one critical section, so a concurrent 401 on this
                // token cannot slip in between and see it cached again.
                let mut state = self.lock_state();
                let access = state.session.access_token_or_refresh(now);
                if let TokenAccess::Ready(token) = &access {
                    self.publish(&state, token, now);
                }
                access
            };
            match access {
                TokenAccess::Ready(token) => return Ok(token),
                TokenAccess::Pending => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(self.out_of_time(1));
                    }
                    let report = self.pump(deadline).await?;
                    let refused = report.not_sent;
                    if report.lease_lost {
                        // Nothing was sent and nothing is in flight: look again (adopted
                        // tokens are served; otherwise the lease is waited for again).
                        leases_lost += 1;
                        if leases_lost >= MAX_LOST_LEASES && !report.adopted {
                            return Err(Error::from(refused.unwrap_or_else(|| {
                                StoreError::LeaseLost {
                                    profile: self.inner.profile.clone(),
                                }
                            })));
                        }
                        continue;
                    }
                    lease_error = refused.or(lease_error);
                    if report.sent == 0 && !report.adopted {
                        // Every token request is sent by the driver holding the flight, in a task
                        // that runs to completion; nothing else can be holding one.
                        return Err(ErrorKind::Cancelled.into());
                    }
                    if report.tokens_changed {
                        stale_token_sets += 1;
                        if stale_token_sets > MAX_STALE_TOKEN_SETS {
                            return Err(ErrorKind::TokensNeverFresh {
                                skew: self.inner.settings.skew(),
                            }
                            .into());
                        }
                    }
                }
                TokenAccess::BackingOff {
                    retry_at,
                    attempts,
                    error,
                } => {
                    // Only transient failures are worth retrying within one call; an odd answer
                    // (a 404 page, a redirect) will not change in a second.
                    if let Some(refused) = lease_error.take() {
                        // No refresh is sent without the lease: waiting for the backoff here
                        // would only hold the caller.
                        return Err(ErrorKind::Store(refused).into());
                    }
                    if attempts >= self.inner.settings.max_refresh_attempts || !error.is_transient()
                    {
                        return Err(ErrorKind::TokenEndpointUnavailable { error, attempts }.into());
                    }
                    let wait = retry_at.duration_since(now);
                    if tokio::time::Instant::now() + wait > deadline {
                        return Err(ErrorKind::TokenEndpointUnavailable { error, attempts }.into());
                    }
                    tracing::info!(
                        attempts,
                        wait_ms = wait.as_millis() as u64,
                        "token endpoint failing; backing off"
                    );
                    tokio::time::sleep(wait).await;
                }
                TokenAccess::ReauthorizationRequired(reason) => {
                    let look_at_store = !reloaded_after_rejection;
                    reloaded_after_rejection = true;
                    if self.settle_rejection(&reason, look_at_store).await? {
                        continue;
                    }
                    return Err(ErrorKind::ReauthorizationRequired(reason).into());
                }
            }
        }
    }

    /// The session says a login is needed. Unless `look_at_store` finds that another instance
    /// has just rotated the tokens (then they are adopted and this returns `true`), the
    /// rejection is final: the cache is cleared and a rejected refresh token is recorded.
    pub(super) async fn settle_rejection(
        &self,
        reason: &ReauthReason,
        look_at_store: bool,
    ) -> Result<bool> {
        self.clear_cache();
        if look_at_store
            && matches!(reason, ReauthReason::RefreshRejected(_))
            && self.wait_for_newer_tokens().await?
        {
            return Ok(true);
        }
        self.record_rejection(reason).await;
        Ok(false)
    }

    /// Records in the store that the refresh token was rejected, so other processes (and this
    /// one after a restart) report re-authorization without trying the dead token. Done only
    /// after the grace period for another instance's rotation; best effort (a conflict means
    /// the store has something newer, which wins).
    pub(super) async fn record_rejection(&self, reason: &ReauthReason) {
        // Only a rejected refresh token: a rejected client secret says nothing about the
        // stored tokens (the next run may bring the right secret).
        if !matches!(reason, ReauthReason::RefreshRejected(_)) {
            return;
        }
        let (record, expected) = {
            let state = self.lock_state();
            if state.version.is_none() || state.record.reauthorization_required.is_some() {
                return;
            }
            let mut record = state.record.clone();
            record.reauthorization_required = Some(reason.to_string());
            (record, state.version)
        };
        match self
            .inner
            .settings
            .store
            .save(&self.inner.profile, &record, expected)
            .await
        {
            Ok(version) => {
                let mut state = self.lock_state();
                state.version = Some(version);
                state.record = record;
            }
            Err(error) => tracing::info!(%error, "could not record the rejection in the store"),
        }
    }

    /// After our refresh token was rejected: another instance may have just rotated it and be
    /// about to save. Poll the store briefly for a newer record.
    pub(super) async fn wait_for_newer_tokens(&self) -> Result<bool> {
        let step = Duration::from_millis(50);
        let mut waited = Duration::ZERO;
        loop {
            if self.sync_from_store().await? {
                tracing::info!(
                    "refresh token was rotated by another instance; using the stored tokens"
                );
                return Ok(true);
            }
            if waited >= self.inner.settings.rejected_refresh_grace {
                return Ok(false);
            }
            tokio::time::sleep(step).await;
            waited += step;
        }
    }

    /// The error for a token operation that ran out of time before its request was answered.
    pub(super) fn out_of_time(&self, attempts: u32) -> Error {
        ErrorKind::TokenEndpointUnavailable {
            error: TokenError::Transport(self.no_answer()),
            attempts,
        }
        .into()
    }
}
