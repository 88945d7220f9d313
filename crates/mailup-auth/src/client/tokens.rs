//! The token lifecycle: single flight under the refresh lock, bounded driving of the core
//! session, the cross-process refresh lease, and persist before publish.

use super::store_sync::Synced;
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
    pub async fn access_token(&self) -> Result<AccessToken> {
        if let Some(token) = self.cached_access_token() {
            return Ok(token);
        }
        // Boxed: the slow path's state machine is large, and inline it would make every
        // cached call build and move a future of that size.
        Box::pin(self.access_token_uncached()).await
    }

    /// [`access_token`](Self::access_token) when the cache had nothing to hand out.
    async fn access_token_uncached(&self) -> Result<AccessToken> {
        let span = tracing::debug_span!("mailup_auth.access_token", profile = %self.inner.profile);
        async {
            let guard = self.inner.refresh_lock.clone().lock_owned().await;
            // Single flight: whoever held the lock before us may have refreshed already.
            if let Some(token) = self.cached_access_token() {
                return Ok(token);
            }
            self.locked_with(guard, |client| async move {
                let deadline = client.deadline();
                // Another instance may have rotated the tokens: use theirs, don't burn ours.
                client.sync_before_refresh().await?;
                client.obtain_locked(deadline).await
            })
            .await
        }
        .instrument(span)
        .await
    }

    /// Forces a refresh now (e.g. the CLI's `refresh`), even if the access token is fresh. A
    /// rejected refresh is [`Error::ReauthorizationRequired`] and a failed one
    /// [`Error::TokenEndpointUnavailable`], even while the current access token is still valid
    /// (it keeps being served until it expires).
    pub async fn refresh(&self) -> Result<AccessToken> {
        self.locked(|client| async move {
            let deadline = client.deadline();
            client.sync_from_store().await?;
            client.force_refresh_locked(deadline).await
        })
        .await
    }

    /// Refreshes when the core says a refresh is due (for schedulers; see
    /// [`spawn_background_refresh`](Self::spawn_background_refresh)).
    pub async fn refresh_if_due(&self) -> Result<()> {
        self.locked(|client| async move {
            let deadline = client.deadline();
            client.sync_before_refresh().await?;
            let now = client.inner.settings.clock.now();
            client.shared().session.handle_timeout(now);
            client.obtain_locked(deadline).await.map(drop)
        })
        .await
    }

    /// When a token operation that starts now must be over.
    pub(super) fn deadline(&self) -> tokio::time::Instant {
        tokio::time::Instant::now() + self.inner.settings.token_timeout
    }

    /// Runs `op` under the refresh lock, in a task of its own: a caller that gives up (a
    /// timeout, `select!`, a dropped future, an aborted background task) cannot abandon a token
    /// request half-way, so a rotated refresh token is still handled and saved.
    pub(super) async fn locked<T, F, Fut>(&self, op: F) -> Result<T>
    where
        F: FnOnce(MailUpClient) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        let guard = self.inner.refresh_lock.clone().lock_owned().await;
        self.locked_with(guard, op).await
    }

    /// [`locked`](Self::locked) with the lock already held: the task takes the guard along.
    pub(super) async fn locked_with<T, F, Fut>(
        &self,
        guard: OwnedMutexGuard<()>,
        op: F,
    ) -> Result<T>
    where
        F: FnOnce(MailUpClient) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        let client = self.clone();
        let task = tokio::spawn(
            async move {
                // Holding the lock, no request of ours is in flight: any the session still
                // counts as sent were lost (a panic, a runtime shut down mid-request).
                client.shared().session.forget_unanswered_requests();
                let result = op(client.clone()).await;
                drop(guard);
                // Whatever the operation did to the tokens, the background scheduler (if any)
                // learns the next due time here, the one place every token operation ends.
                client.report_due();
                result
            }
            .in_current_span(),
        );
        match task.await {
            Ok(result) => result,
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(_) => Err(Error::Cancelled),
        }
    }

    /// Sends one refresh now (or finishes the one a 401 already queued) and reports its
    /// outcome. Must hold `refresh_lock`.
    pub(super) async fn force_refresh_locked(
        &self,
        deadline: tokio::time::Instant,
    ) -> Result<AccessToken> {
        let started = {
            let mut shared = self.shared();
            shared.session.is_refreshing() || shared.session.refresh_now().is_ok()
        };
        if !started {
            let reason = self.shared().session.reauthorization_reason().cloned();
            return Err(Error::ReauthorizationRequired(
                reason.unwrap_or(ReauthReason::NoRefreshToken),
            ));
        }
        let (report, lease_error) = self.drive_with_lease(deadline).await?;
        if let Some(error) = lease_error {
            if report.lease_lost && report.adopted {
                // The lease's new holder refreshed: its tokens are the refresh asked for.
                return self.obtain_locked(deadline).await;
            }
            // Nothing was sent: the lease could not be taken, or was lost before sending.
            return Err(Error::Store(error));
        }
        if let Some(error) = report.refresh_error {
            // Not a rejection: the old tokens are kept and still served while valid.
            return Err(Error::TokenEndpointUnavailable { error, attempts: 1 });
        }
        let rejected = self.shared().session.reauthorization_reason().cloned();
        if let Some(reason) = rejected {
            // Even if the current access token has not expired yet.
            if !self.settle_rejection(&reason, true).await? {
                return Err(Error::ReauthorizationRequired(reason));
            }
        }
        self.obtain_locked(deadline).await
    }

    /// Drives the session until it hands out a token or gives a final answer. Must hold
    /// `refresh_lock`. Bounded: in time by `deadline`, transient failures by
    /// `max_refresh_attempts`, rejections by one look at the store, and tokens that are stale
    /// on arrival by `MAX_STALE_TOKEN_SETS`.
    pub(super) async fn obtain_locked(
        &self,
        deadline: tokio::time::Instant,
    ) -> Result<AccessToken> {
        let mut reloaded_after_rejection = false;
        let mut stale_token_sets = 0;
        let mut leases_lost = 0;
        // Why the last refresh was not sent, when the lease could not be taken: reported
        // instead of a token-endpoint failure, since the endpoint was never asked.
        let mut lease_error: Option<StoreError> = None;
        loop {
            let unsaved = self.shared().unsaved;
            if let Some(grant) = unsaved {
                self.persist_current(grant).await?;
            }
            let now = self.inner.settings.clock.now();
            let access = {
                // Decide and publish in one critical section, so a concurrent 401 on this
                // token cannot slip in between and see it cached again.
                let mut shared = self.shared();
                let access = shared.session.access_token_or_refresh(now);
                if let TokenAccess::Ready(token) = &access {
                    self.publish_locked(&shared, token, now);
                }
                access
            };
            match access {
                TokenAccess::Ready(token) => return Ok(token),
                TokenAccess::Pending => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(self.out_of_time(1));
                    }
                    let (report, refused) = self.drive_with_lease(deadline).await?;
                    if report.lease_lost {
                        // Nothing was sent and nothing is in flight: look again (adopted
                        // tokens are served; otherwise the lease is waited for again).
                        leases_lost += 1;
                        if leases_lost >= MAX_LOST_LEASES && !report.adopted {
                            return Err(Error::Store(refused.unwrap_or_else(|| {
                                StoreError::LeaseLost {
                                    profile: self.inner.profile.clone(),
                                }
                            })));
                        }
                        continue;
                    }
                    lease_error = refused.or(lease_error);
                    if report.sent == 0 && !report.adopted {
                        // Every token request is driven under the refresh lock, in a task
                        // that runs to completion; nothing else can be holding one.
                        return Err(Error::Cancelled);
                    }
                    if report.tokens_changed {
                        stale_token_sets += 1;
                        if stale_token_sets > MAX_STALE_TOKEN_SETS {
                            return Err(Error::TokensNeverFresh {
                                skew: self.inner.settings.skew,
                            });
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
                        return Err(Error::Store(refused));
                    }
                    if attempts >= self.inner.settings.max_refresh_attempts || !error.is_transient()
                    {
                        return Err(Error::TokenEndpointUnavailable { error, attempts });
                    }
                    let wait = retry_at.duration_since(now);
                    if tokio::time::Instant::now() + wait > deadline {
                        return Err(Error::TokenEndpointUnavailable { error, attempts });
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
                    return Err(Error::ReauthorizationRequired(reason));
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
            let shared = self.shared();
            if shared.version.is_none() || shared.record.reauthorization_required.is_some() {
                return;
            }
            let mut record = shared.record.clone();
            record.reauthorization_required = Some(reason.to_string());
            (record, shared.version)
        };
        match self
            .inner
            .settings
            .store
            .save(&self.inner.profile, &record, expected)
            .await
        {
            Ok(version) => {
                let mut shared = self.shared();
                shared.version = Some(version);
                shared.record = record;
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
            if waited >= self.inner.settings.rejected_reload_wait {
                return Ok(false);
            }
            tokio::time::sleep(step).await;
            waited += step;
        }
    }

    /// The error for a token operation that ran out of time before its request was answered.
    pub(super) fn out_of_time(&self, attempts: u32) -> Error {
        Error::TokenEndpointUnavailable {
            error: TokenError::Transport(self.no_answer()),
            attempts,
        }
    }

    pub(super) fn no_answer(&self) -> TransportError {
        TransportError::new(
            TransportErrorKind::Timeout,
            format!(
                "the token endpoint did not answer within {} s",
                self.inner.settings.token_timeout.as_secs_f32()
            ),
        )
    }

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
        if !self.shared().session.is_refreshing() {
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
                    if !self.shared().session.is_refreshing() {
                        // What was adopted needs no refresh from us (a logout, a rejection
                        // mark): the caller decides what it means.
                        return Ok(None);
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return Err(Error::Store(StoreError::LeaseTimeout {
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
        let shared = self.shared();
        !shared.session.is_refreshing() && shared.session.hand_out_until(now).is_some()
    }

    /// Asks the lease, right before a refresh is sent, whether it is still ours: `None` when
    /// it is, otherwise why the refresh must not go out. A process stopped past the lease's
    /// TTL (SIGSTOP, a GC pause, a frozen VM) after taking it may find it taken over, and its
    /// refresh token maybe already used. This narrows the window to the time between this
    /// answer and the request leaving; it cannot close it. A lease that cannot answer (its
    /// server unreachable) is treated as lost: nothing is sent without knowing.
    async fn lost_lease(&self, guard: &LeaseGuard) -> Option<StoreError> {
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

    /// Sends every queued token request and handles the answers. Must hold `refresh_lock`.
    /// Each answer is awaited until `deadline` at most; one that does not come in time is a
    /// timeout (the tokens are kept).
    pub(super) async fn drive(&self, deadline: tokio::time::Instant) -> Result<DriveReport> {
        Ok(self.drive_with_lease(deadline).await?.0)
    }

    /// [`drive`](Self::drive), also saying why a refresh was not sent when the lease could not
    /// be taken (another holder kept it past our time, or the lease's store is unreachable).
    pub(super) async fn drive_with_lease(
        &self,
        deadline: tokio::time::Instant,
    ) -> Result<(DriveReport, Option<StoreError>)> {
        let mut report = DriveReport::default();
        // Held until the refresh's answer is saved (the loop's end).
        // A lease we cannot have is, for us, a refresh that did not come back: the tokens are
        // kept (and served while valid), and nothing is sent.
        let (mut lease, lease_refused) = match self.lease_for_refresh(deadline, &mut report).await {
            Ok(lease) => (lease, None),
            Err(Error::Store(error)) if error.is_transient() => {
                tracing::warn!(%error, "refresh lease not taken; no refresh sent");
                (None, Some(error))
            }
            Err(error) => return Err(error),
        };
        loop {
            let request = self.shared().session.poll_request();
            let Some(request) = request else { break };
            let (id, grant, http) = request.into_parts();
            let span =
                tracing::info_span!("mailup_auth.token_request", grant = %grant, id = id.get());
            let lost = match &lease {
                Some(guard) if grant == Grant::RefreshToken => self.lost_lease(guard).await,
                _ => None,
            };
            if let Some(lost) = lost {
                // Not sent, and not a failure of the endpoint: the session forgets the request
                // (no backoff), and the caller waits for the lease again or adopts what its
                // new holder saves.
                self.shared().session.forget_unanswered_requests();
                report.lease_lost = true;
                if let Some(guard) = lease.take() {
                    // Owner-checked: a successor's lease is left alone.
                    guard.release().await;
                }
                if self.sync_from_store().await? {
                    tracing::info!("another process refreshed; using its tokens");
                    report.adopted = true;
                }
                return Ok((report, Some(lost)));
            }
            report.sent += 1;
            let result = match (grant, &lease_refused) {
                (Grant::RefreshToken, Some(refused)) => Err(TransportError::new(
                    TransportErrorKind::Timeout,
                    format!("no refresh was sent: {refused}"),
                )),
                _ => {
                    tracing::debug!(parent: &span, url = %http.url(), "sending token request");
                    let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
                    tokio::time::timeout(
                        remaining,
                        self.inner
                            .settings
                            .transport
                            .send(http)
                            .instrument(span.clone()),
                    )
                    .await
                    .unwrap_or_else(|_| Err(self.no_answer()))
                }
            };
            match &result {
                Ok(response) => {
                    tracing::debug!(parent: &span, status = response.status.as_u16(), "token endpoint answered")
                }
                Err(error) => tracing::warn!(parent: &span, %error, "token request failed"),
            }
            let now = self.inner.settings.clock.now();
            self.shared().session.handle_token_response(now, id, result);
            self.process_events(&mut report).await?;
        }
        if let Some(lease) = lease {
            // Given back before the caller goes on (or the process exits): the others wait
            // for it.
            lease.release().await;
        }
        Ok((report, lease_refused))
    }

    /// Adopts what another instance saved before a refresh. A store that cannot be reached
    /// right now is not an error here: the refresh then cannot take its lease either and is
    /// not sent, and a still-valid token keeps being served.
    pub(super) async fn sync_before_refresh(&self) -> Result<()> {
        match self.sync_from_store().await {
            Ok(_) => Ok(()),
            Err(Error::Store(error)) if error.is_transient() => {
                tracing::warn!(%error, "token store unreachable; using the tokens in memory");
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    pub(super) async fn process_events(&self, report: &mut DriveReport) -> Result<()> {
        let mut save_error = None;
        loop {
            let event = self.shared().session.poll_event();
            let Some(event) = event else { break };
            match event {
                Event::TokensChanged { grant, .. } => {
                    tracing::info!(%grant, "new tokens");
                    report.tokens_changed = true;
                    self.shared().unsaved = Some(grant);
                    if let Err(error) = self.persist_current(grant).await {
                        save_error.get_or_insert(error);
                    }
                }
                Event::AuthorizationFailed { grant, error } => {
                    tracing::warn!(%grant, %error, "login failed");
                    report.login_error = Some(error);
                }
                Event::RefreshFailed {
                    error,
                    attempts,
                    retry_at,
                } => {
                    tracing::warn!(%error, attempts, retry_at_ms = retry_at.as_millis(), "refresh failed; tokens kept");
                    // The cached token's `until` may reach past the retry: ask again then.
                    self.clear_cache();
                    report.refresh_error = Some(error);
                }
                Event::ReauthorizationRequired(reason) => {
                    tracing::warn!(%reason, "re-authorization required");
                    self.clear_cache();
                }
                _ => {}
            }
        }
        match save_error {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Saves the session's current tokens (compare-and-swap, flushed by the store) and only
    /// then publishes them. On a conflict after a refresh, the stored record wins; after a
    /// login, ours does. A record the store lost without a logout (an emptied or restarted
    /// Redis: no record and no tombstone) is no record to defer to: the new tokens are put
    /// back with [`TokenStore::restore_lost`], unless someone saved or logged out meanwhile.
    pub(super) async fn persist_current(&self, grant: Grant) -> Result<()> {
        // Whether the last look at the store found the record lost (then it is restored).
        let mut lost = false;
        for _ in 0..MAX_SAVE_ATTEMPTS {
            let (record, expected) = {
                let shared = self.shared();
                let mut record = shared.record.clone();
                record.tokens = shared.session.tokens().cloned();
                record.last_refreshed_at = match grant {
                    Grant::RefreshToken => record.tokens.as_ref().map(|t| t.obtained_at),
                    _ => None,
                };
                record.reauthorization_required = None;
                if self.inner.settings.remember_client {
                    record.client = Some(stored_client(shared.session.config()));
                }
                (record, shared.version)
            };
            let store = &self.inner.settings.store;
            let saved = match expected {
                Some(lost_version) if lost => {
                    tracing::warn!(
                        lost_version,
                        "putting the new tokens back into the token store that lost them"
                    );
                    store
                        .restore_lost(&self.inner.profile, &record, lost_version)
                        .await
                }
                _ => store.save(&self.inner.profile, &record, expected).await,
            };
            match saved {
                Ok(version) => {
                    tracing::debug!(version, "tokens persisted");
                    {
                        let mut shared = self.shared();
                        shared.version = Some(version);
                        shared.record = record.clone();
                        shared.unsaved = None;
                    }
                    self.clear_cache();
                    self.run_hooks(record.tokens.as_ref(), Some(grant), Some(version));
                    return Ok(());
                }
                Err(StoreError::Conflict { found, .. }) => {
                    tracing::info!(?expected, ?found, "store changed concurrently");
                    if grant == Grant::RefreshToken {
                        // Another instance saved first (or logged out): use what is there.
                        // `sync_with_store` keeps our unsaved tokens when the store only marks
                        // the old ones dead, or lost the record without a logout; then save
                        // them again on the new version, or restore the lost record.
                        lost = self.sync_with_store().await? == Synced::Lost;
                        if self.shared().unsaved.is_none() {
                            return Ok(());
                        }
                        continue;
                    }
                    // A new login is authoritative: take the new version and save again.
                    let loaded = self.inner.settings.store.load(&self.inner.profile).await?;
                    let mut shared = self.shared();
                    shared.version = loaded.as_ref().map(|v| v.version);
                    if let Some(loaded) = loaded {
                        shared.record.client = loaded.value.client;
                    }
                }
                Err(error) => {
                    tracing::error!(%error, "could not persist new tokens; they are kept in memory and not handed out until saved");
                    return Err(error.into());
                }
            }
        }
        Err(Error::Store(StoreError::Contended {
            profile: self.inner.profile.clone(),
            attempts: MAX_SAVE_ATTEMPTS,
        }))
    }
}
