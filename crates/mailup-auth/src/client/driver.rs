//! The driver: the one place that pumps the core's [`Session`] (`poll_request` →
//! `handle_token_response` → `poll_event`), as quinn's connection driver pumps quinn-proto's
//! `Connection`. Every token operation of the facade (an access token, a forced or background
//! refresh, a login, a logout, loading the profile) asks a [`Driver`]; nothing else calls the
//! session's polls.
//!
//! # Call order
//!
//! One token operation, from [`MailUpClient::run_driver`] to its end:
//!
//! 1. **Take the refresh flight** ([`RefreshGuard`]): one driver per client at a time; callers
//!    queue in arrival order and re-check the cache once they hold it (single flight). The
//!    operation runs in the caller's task, and in a task of its own from the moment its caller
//!    gives up ([`RunToCompletion`]), so a caller that gives up cannot abandon a token request
//!    half-way.
//! 2. **Forget lost requests**: holding the flight, no request of ours is in flight, so any
//!    the session still counts as sent were lost (a panic, a runtime shut down mid-request):
//!    `Session::forget_unanswered_requests`.
//! 3. **Input or command**, under the state lock: `exchange_code`, `login_with_password`,
//!    `refresh_now`, `handle_timeout`, `access_token_or_refresh`, or adopting the store's
//!    record ([`sync_from_store`](Driver::sync_from_store)).
//! 4. **Pump** ([`Driver::pump`]): take the cross-process lease if a refresh is queued; then
//!    `poll_request` until `None`, sending each request (bounded by the operation's deadline)
//!    and feeding its answer back with `handle_token_response`; after each answer, drain
//!    `poll_event` ([`Driver::handle_events`]), persisting `TokensChanged` before anything is
//!    handed out; release the lease.
//! 5. **Hand out**: ask the session again (`access_token_or_refresh`) and cache what it hands
//!    out in the same critical section of the state lock ([`MailUpClient::publish`]).
//! 6. **Re-arm one timer**: the flight is released, then the client's next background
//!    wake-up (from `poll_timeout`, see [`next_wakeup`](super::background::next_wakeup)) goes
//!    to its scheduler, if any.
//!
//! Inputs that need no answer at once are given to the session under the state lock alone,
//! without a driver: an API's 401 (`handle_unauthorized`, `MailUpClient::token_rejected`) only
//! marks the token rejected and drops it from the cache, and the next caller's driver pumps
//! what that queued.

use std::ops::Deref;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::locks::RefreshGuard;
use super::*;

/// What happened while pumping token requests.
#[derive(Debug, Default)]
pub(super) struct DriveReport {
    /// A code exchange or password grant failed.
    pub(super) login_error: Option<TokenError>,
    /// A refresh failed transiently (tokens kept).
    pub(super) refresh_error: Option<TokenError>,
    /// Token requests sent.
    pub(super) sent: u32,
    /// New tokens arrived (and were persisted).
    pub(super) tokens_changed: bool,
    /// Tokens another process saved were adopted instead of sending a refresh.
    pub(super) adopted: bool,
    /// The refresh lease was lost between taking it and sending the refresh (see
    /// [`LeaseGuard::still_held`]): the refresh was not sent, and the session has none in
    /// flight; take the lease again, or adopt what its new holder saves.
    pub(super) lease_lost: bool,
    /// Why a queued refresh was not sent: the lease could not be taken (another holder kept it
    /// past our time, or the lease's store is unreachable), or it was lost before sending.
    pub(super) not_sent: Option<StoreError>,
}

/// A client while it holds its refresh flight: the only value through which the session is
/// pumped, and the receiver of every function that needs the flight (so none can be called
/// without it). Dereferences to the [`MailUpClient`]. See the [module docs](self) for the call
/// order.
pub(super) struct Driver {
    client: MailUpClient,
    /// Released when the driver is dropped, at the end of its operation.
    _flight: RefreshGuard,
}

impl Deref for Driver {
    type Target = MailUpClient;

    fn deref(&self) -> &MailUpClient {
        &self.client
    }
}

impl Driver {
    /// The driver of `client` while `flight` (its own refresh flight) is held.
    pub(super) fn new(client: MailUpClient, flight: RefreshGuard) -> Self {
        debug_assert!(flight.is_of(&client), "another client's refresh flight");
        Self {
            client,
            _flight: flight,
        }
    }

    /// When a token operation that starts now must be over.
    pub(super) fn deadline(&self) -> tokio::time::Instant {
        tokio::time::Instant::now() + self.inner.settings.token_timeout
    }
}

impl MailUpClient {
    /// Runs `op` with this client's driver (steps 1, 2 and 6 of the [call order](driver)),
    /// polled in the caller's task (no task spawned, no hop to another worker on the way
    /// back) until the caller gives up: a caller that gives up (a timeout, `select!`, a
    /// dropped future, an aborted background task) hands the rest to a task of its own
    /// ([`RunToCompletion`]), so it cannot abandon a token request half-way, and a rotated
    /// refresh token is still handled and saved.
    pub(super) async fn run_driver<T, F, Fut>(&self, op: F) -> Result<T>
    where
        F: FnOnce(Driver) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        let flight = self.lock_refresh_flight().await;
        self.run_driver_with(flight, op).await
    }

    /// [`run_driver`](Self::run_driver) with the flight already held: the operation takes it
    /// along.
    pub(super) async fn run_driver_with<T, F, Fut>(&self, flight: RefreshGuard, op: F) -> Result<T>
    where
        F: FnOnce(Driver) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        let driver = Driver::new(self.clone(), flight);
        RunToCompletion::new(
            async move {
                let client = driver.client.clone();
                driver.lock_state().session.forget_unanswered_requests();
                // The driver (and with it the flight) is dropped when `op` ends.
                let result = op(driver).await;
                // Whatever the operation did to the tokens, the background scheduler (if any)
                // learns the next wake-up here, the one place every token operation ends.
                client.report_due();
                result
            }
            .in_current_span(),
        )
        .await
    }
}

/// A token operation polled in its caller's task that is never abandoned half-way: dropped
/// after it started and before it ended (its caller gave up), it goes on in a task of its own
/// on the runtime that started it, to its end; its result is then dropped.
///
/// Spawning every operation up front gave the same guarantee at the price of a task and a
/// wake-up on another worker per operation (a large part of the facade's own time in a
/// refresh); this spawns only for a caller that gives up. An operation dropped before it was
/// first polled never started and is dropped as it is (its flight released). One that
/// panicked is not resumed: the panic reaches the caller, as a panic in a spawned task
/// reached it before.
pub(super) struct RunToCompletion<F: Future + Send + 'static>
where
    F::Output: Send + 'static,
{
    /// `None` once it ended, or while it is being polled (so a panic leaves nothing to spawn).
    operation: Option<Pin<Box<F>>>,
    /// The runtime of its first poll: where the rest goes if the caller gives up.
    runtime: Option<tokio::runtime::Handle>,
}

impl<F: Future + Send + 'static> RunToCompletion<F>
where
    F::Output: Send + 'static,
{
    pub(super) fn new(operation: F) -> Self {
        Self {
            operation: Some(Box::pin(operation)),
            runtime: None,
        }
    }
}

impl<F: Future + Send + 'static> Future for RunToCompletion<F>
where
    F::Output: Send + 'static,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // Every field is `Unpin` (the operation is boxed).
        let this = self.get_mut();
        let Some(mut operation) = this.operation.take() else {
            panic!("a token operation polled after it ended");
        };
        if this.runtime.is_none() {
            this.runtime = tokio::runtime::Handle::try_current().ok();
        }
        let polled = operation.as_mut().poll(cx);
        if polled.is_pending() {
            this.operation = Some(operation);
        }
        polled
    }
}

impl<F: Future + Send + 'static> Drop for RunToCompletion<F>
where
    F::Output: Send + 'static,
{
    fn drop(&mut self) {
        // Started (polled once, in a runtime) and not ended: its caller gave up.
        if let (Some(operation), Some(runtime)) = (self.operation.take(), self.runtime.take()) {
            tracing::debug!("caller gave up; the token operation goes on in a task of its own");
            // A runtime shutting down drops the task instead of running it, as it dropped the
            // spawned operation before: a refresh answer then lost is the loss window
            // docs/security.md describes.
            drop(runtime.spawn(operation));
        }
    }
}

impl Driver {
    /// Sends every queued token request and handles the answers (step 4 of the
    /// [call order](self)): the only caller of `poll_request` and `handle_token_response`.
    /// Each answer is awaited until `deadline` at most; one that does not come in time is a
    /// timeout (the tokens are kept).
    pub(super) async fn pump(&self, deadline: tokio::time::Instant) -> Result<DriveReport> {
        let mut report = DriveReport::default();
        // Held until the refresh's answer is saved (the loop's end).
        // A lease we cannot have is, for us, a refresh that did not come back: the tokens are
        // kept (and served while valid), and nothing is sent.
        let mut lease = match self
            .lease_for_refresh(deadline, &mut report)
            .await
            .map_err(Error::into_kind)
        {
            Ok(lease) => lease,
            Err(ErrorKind::Store(error)) if error.is_transient() => {
                tracing::warn!(%error, "refresh lease not taken; no refresh sent");
                report.not_sent = Some(error);
                None
            }
            Err(kind) => return Err(kind.into()),
        };
        loop {
            let request = self.lock_state().session.poll_request();
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
                self.lock_state().session.forget_unanswered_requests();
                report.lease_lost = true;
                if let Some(guard) = lease.take() {
                    // Owner-checked: a successor's lease is left alone.
                    guard.release().await;
                }
                if self.sync_from_store().await? {
                    tracing::info!("another process refreshed; using its tokens");
                    report.adopted = true;
                }
                report.not_sent = Some(lost);
                return Ok(report);
            }
            report.sent += 1;
            let result = match (grant, &report.not_sent) {
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
            self.lock_state()
                .session
                .handle_token_response(now, id, result);
            self.handle_events(&mut report).await?;
        }
        if let Some(lease) = lease {
            // Given back before the caller goes on (or the process exits): the others wait
            // for it.
            lease.release().await;
        }
        Ok(report)
    }

    /// Drains the session's events after an answer: the only caller of `poll_event`. New
    /// tokens are persisted here, before anything can hand them out.
    async fn handle_events(&self, report: &mut DriveReport) -> Result<()> {
        let mut save_error = None;
        loop {
            let event = self.lock_state().session.poll_event();
            let Some(event) = event else { break };
            match event {
                Event::TokensChanged { grant, .. } => {
                    tracing::info!(%grant, "new tokens");
                    report.tokens_changed = true;
                    self.lock_state().unsaved = Some(grant);
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
                let state = self.lock_state();
                let mut record = state.record.clone();
                record.tokens = state.session.tokens().cloned();
                record.last_refreshed_at = match grant {
                    Grant::RefreshToken => record.tokens.as_ref().map(|t| t.obtained_at),
                    _ => None,
                };
                record.reauthorization_required = None;
                if self.inner.settings.remember_client {
                    record.client = Some(stored_client(state.session.config()));
                }
                (record, state.version)
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
                        let mut state = self.lock_state();
                        state.version = Some(version);
                        state.record = record.clone();
                        state.unsaved = None;
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
                        if self.lock_state().unsaved.is_none() {
                            return Ok(());
                        }
                        continue;
                    }
                    // A new login is authoritative: take the new version and save again.
                    let loaded = self.inner.settings.store.load(&self.inner.profile).await?;
                    let mut state = self.lock_state();
                    state.version = loaded.as_ref().map(|v| v.version);
                    if let Some(loaded) = loaded {
                        state.record.client = loaded.value.client;
                    }
                }
                Err(error) => {
                    tracing::error!(%error, "could not persist new tokens; they are kept in memory and not handed out until saved");
                    return Err(error.into());
                }
            }
        }
        Err(Error::from(StoreError::Contended {
            profile: self.inner.profile.clone(),
            attempts: MAX_SAVE_ATTEMPTS,
        }))
    }

    /// The transport error for a token request whose answer did not come in time.
    pub(super) fn no_answer(&self) -> TransportError {
        TransportError::new(
            TransportErrorKind::Timeout,
            format!(
                "the token endpoint did not answer within {} s",
                self.inner.settings.token_timeout.as_secs_f32()
            ),
        )
    }
}
