//! [`MailUpClient`]: one object that keeps a MailUp session valid. It drives the core's
//! [`Session`] with a [`Transport`], a [`TokenStore`], a [`Clock`] and an [`Entropy`] source.
//!
//! Concurrency design:
//! - a fresh cached access token is read from an `ArcSwap` (no lock that serializes readers);
//! - everything that talks to the token endpoint runs under one async mutex (`refresh_lock`):
//!   callers that find the cache stale queue on it and re-check the cache once they hold it,
//!   so any number of concurrent callers cause one refresh (single flight);
//! - new tokens are saved to the store (compare-and-swap, flushed) before the cache is updated
//!   and before any caller receives them (persist before publish).

use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use http::header::{HeaderValue, ACCEPT, CONTENT_TYPE};
use http::Method;
use mailup_auth_core::api::{api_url, with_bearer, ApiCall, ApiStep};
use mailup_auth_core::{
    AccessToken, ApiError, Backoff, CallbackError, ClientConfig, ClientConfigBuilder, ClientSecret,
    Endpoints, Event, Grant, HttpRequest, HttpResponse, LeaseGuard, Password, PendingAuthorization,
    ProfileRecord, ReauthReason, RefreshLease, Session, SessionState, StoreError, StoredClient,
    TokenAccess, TokenError, TokenSet, TokenStore, Transport, TransportError, TransportErrorKind,
    UnixTime, Url,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::future::Future;

use tokio::sync::OwnedMutexGuard;
use tracing::Instrument as _;

use crate::clock::{Clock, Entropy, OsEntropy, SystemClock};
use crate::error::{Error, Result};
use crate::loopback::LoopbackRedirect;

/// A callback run whenever tokens change (after they are persisted).
pub type TokensHook = Arc<dyn Fn(&TokenChange<'_>) + Send + Sync>;

/// What a [`TokensHook`] is told.
#[derive(Debug)]
#[non_exhaustive]
pub struct TokenChange<'a> {
    /// The profile.
    pub profile: &'a str,
    /// The new tokens (`None` after a logout). Handle with care: they are secrets.
    pub tokens: Option<&'a TokenSet>,
    /// How they were obtained (`None` after a logout or when adopted from the store).
    pub grant: Option<Grant>,
    /// The store version now holding them.
    pub version: Option<u64>,
}

/// Opt-in waiting on HTTP 429: retry after `Retry-After` while it is within bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimitRetry {
    /// Most retries per call.
    pub max_retries: u32,
    /// Longest single wait; a longer `Retry-After` is returned as an error instead.
    pub max_wait: Duration,
}

/// A started web-app authorization: send the browser to `url`; keep `pending` (e.g. in the
/// user's session) to complete it.
#[derive(Debug)]
pub struct AuthorizationStart {
    /// The LogOn URL for the browser (never holds the client secret).
    pub url: Url,
    /// What to keep until the callback arrives.
    pub pending: PendingAuthorization,
}

/// Options of [`MailUpClient::login_with_loopback`].
#[derive(Clone, Debug)]
pub struct LoopbackLogin {
    /// Port to listen on, 127.0.0.1 only (0 = any free port). Ignored when `redirect_uri` is set.
    pub port: u16,
    /// How long to wait for the browser to come back.
    pub timeout: Duration,
    /// A registered loopback redirect URI (`http://127.0.0.1:PORT/path` or
    /// `http://localhost:PORT/path`) to use as is: the listener takes its port and path.
    pub redirect_uri: Option<Url>,
}

impl Default for LoopbackLogin {
    fn default() -> Self {
        Self {
            port: 0,
            timeout: Duration::from_secs(300),
            redirect_uri: None,
        }
    }
}

/// A snapshot of a profile's state, without secrets.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionStatus {
    /// The profile.
    pub profile: String,
    /// The client id.
    pub client_id: String,
    /// The endpoints.
    pub endpoints: Endpoints,
    /// The session state.
    pub state: SessionState,
    /// Whether a usable access token is held right now.
    pub has_fresh_token: bool,
    /// When the access token expires.
    pub expires_at: Option<UnixTime>,
    /// When the tokens were obtained.
    pub obtained_at: Option<UnixTime>,
    /// When the tokens were last refreshed.
    pub last_refreshed_at: Option<UnixTime>,
    /// Whether a refresh token is held.
    pub has_refresh_token: bool,
    /// The store version of the profile's record.
    pub store_version: Option<u64>,
    /// Why re-authorization is required, if it is.
    pub reauthorization_reason: Option<String>,
    /// The last refresh failure while the session is backing off from it (the access token,
    /// if still valid, is being served meanwhile).
    pub refresh_error: Option<String>,
}

/// What happened while driving token requests.
#[derive(Debug, Default)]
struct DriveReport {
    /// A code exchange or password grant failed.
    login_error: Option<TokenError>,
    /// A refresh failed transiently (tokens kept).
    refresh_error: Option<TokenError>,
    /// Token requests sent.
    sent: u32,
    /// New tokens arrived (and were persisted).
    tokens_changed: bool,
    /// Tokens another process saved were adopted instead of sending a refresh.
    adopted: bool,
}

#[derive(Debug)]
struct CachedToken {
    token: AccessToken,
    /// Until when it may be handed out without asking the session (see
    /// [`Session::hand_out_until`]).
    until: UnixTime,
}

/// State guarded by the short-lived std mutex (never held across an await).
#[derive(Debug)]
struct Shared {
    session: Session,
    version: Option<u64>,
    record: ProfileRecord,
    /// Tokens obtained but not yet saved (a save failed): saved before anything is handed out.
    unsaved: Option<Grant>,
}

struct Inner {
    profile: String,
    transport: Arc<dyn Transport>,
    store: Arc<dyn TokenStore>,
    lease: Option<Arc<dyn RefreshLease>>,
    clock: Arc<dyn Clock>,
    entropy: Arc<dyn Entropy>,
    shared: Mutex<Shared>,
    cache: ArcSwapOption<CachedToken>,
    refresh_lock: Arc<tokio::sync::Mutex<()>>,
    hooks: Vec<TokensHook>,
    remember_client: bool,
    max_refresh_attempts: u32,
    rejected_reload_wait: Duration,
    rate_limit: Option<RateLimitRetry>,
    skew: Duration,
    trusted_origins: Vec<url::Origin>,
    token_timeout: Duration,
    max_response_bytes: usize,
}

/// Keeps one MailUp profile's session valid. Cheap to clone (an `Arc`); share it freely.
#[derive(Clone)]
pub struct MailUpClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MailUpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailUpClient")
            .field("profile", &self.inner.profile)
            .finish_non_exhaustive()
    }
}

/// How many token sets that are already stale on arrival (`expires_in` shorter than the skew)
/// one call accepts before it gives up with [`Error::TokensNeverFresh`].
const MAX_STALE_TOKEN_SETS: u32 = 2;
/// The background task never refreshes a token set younger than this.
const MIN_BACKGROUND_INTERVAL: Duration = Duration::from_secs(1);
/// How many times a conflicting save is retried after reloading.
const MAX_SAVE_ATTEMPTS: u32 = 4;
/// The default bound on one token operation (see
/// [`MailUpClientBuilder::token_operation_timeout`]).
pub const DEFAULT_TOKEN_OPERATION_TIMEOUT: Duration = Duration::from_secs(30);

impl MailUpClient {
    /// Starts a builder for the given client registration.
    pub fn builder(
        client_id: impl Into<String>,
        client_secret: ClientSecret,
    ) -> MailUpClientBuilder {
        MailUpClientBuilder::new(client_id, client_secret)
    }

    // ---- getters -------------------------------------------------------------------------

    /// The profile name.
    pub fn profile(&self) -> &str {
        &self.inner.profile
    }

    /// The configuration.
    pub fn config(&self) -> ClientConfig {
        self.shared().session.config().clone()
    }

    /// A snapshot of the session, without secrets.
    pub fn status(&self) -> SessionStatus {
        let now = self.inner.clock.now();
        let shared = self.shared();
        let tokens = shared.session.tokens();
        SessionStatus {
            profile: self.inner.profile.clone(),
            client_id: shared.session.config().client_id().to_owned(),
            endpoints: shared.session.config().endpoints().clone(),
            state: shared.session.state(),
            has_fresh_token: tokens.is_some_and(|t| t.is_fresh(now, self.inner.skew))
                && shared.session.reauthorization_reason().is_none(),
            expires_at: tokens.map(|t| t.expires_at),
            obtained_at: tokens.map(|t| t.obtained_at),
            last_refreshed_at: shared.record.last_refreshed_at,
            has_refresh_token: tokens.is_some_and(|t| t.refresh_token.is_some()),
            store_version: shared.version,
            reauthorization_reason: shared
                .session
                .reauthorization_reason()
                .map(|r| r.to_string()),
            refresh_error: shared.session.last_refresh_error().map(|e| e.to_string()),
        }
    }

    /// The cached access token if it is fresh: no lock, no await. `None` means
    /// [`access_token`](Self::access_token) has work to do.
    pub fn cached_access_token(&self) -> Option<AccessToken> {
        let now = self.inner.clock.now();
        match &*self.inner.cache.load() {
            Some(cached) if now < cached.until => Some(cached.token.clone()),
            _ => None,
        }
    }

    // ---- tokens --------------------------------------------------------------------------

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
                client.sync_from_store().await?;
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
            client.sync_from_store().await?;
            let now = client.inner.clock.now();
            client.shared().session.handle_timeout(now);
            client.obtain_locked(deadline).await.map(drop)
        })
        .await
    }

    /// When a token operation that starts now must be over.
    fn deadline(&self) -> tokio::time::Instant {
        tokio::time::Instant::now() + self.inner.token_timeout
    }

    /// Runs `op` under the refresh lock, in a task of its own: a caller that gives up (a
    /// timeout, `select!`, a dropped future, an aborted background task) cannot abandon a token
    /// request half-way, so a rotated refresh token is still handled and saved.
    async fn locked<T, F, Fut>(&self, op: F) -> Result<T>
    where
        F: FnOnce(MailUpClient) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        let guard = self.inner.refresh_lock.clone().lock_owned().await;
        self.locked_with(guard, op).await
    }

    /// [`locked`](Self::locked) with the lock already held: the task takes the guard along.
    async fn locked_with<T, F, Fut>(&self, guard: OwnedMutexGuard<()>, op: F) -> Result<T>
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
                let result = op(client).await;
                drop(guard);
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
    async fn force_refresh_locked(&self, deadline: tokio::time::Instant) -> Result<AccessToken> {
        let started = {
            let mut shared = self.shared();
            shared.session.is_refreshing() || shared.session.refresh_now()
        };
        if !started {
            let reason = self.shared().session.reauthorization_reason().cloned();
            return Err(Error::ReauthorizationRequired(
                reason.unwrap_or(ReauthReason::NoRefreshToken),
            ));
        }
        let report = self.drive(deadline).await?;
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
    async fn obtain_locked(&self, deadline: tokio::time::Instant) -> Result<AccessToken> {
        let mut reloaded_after_rejection = false;
        let mut stale_token_sets = 0;
        loop {
            let unsaved = self.shared().unsaved;
            if let Some(grant) = unsaved {
                self.persist_current(grant).await?;
            }
            let now = self.inner.clock.now();
            let access = {
                // Decide and publish in one critical section, so a concurrent 401 on this
                // token cannot slip in between and see it cached again.
                let mut shared = self.shared();
                let access = shared.session.access_token(now);
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
                    let report = self.drive(deadline).await?;
                    if report.sent == 0 && !report.adopted {
                        // Every token request is driven under the refresh lock, in a task
                        // that runs to completion; nothing else can be holding one.
                        return Err(Error::Cancelled);
                    }
                    if report.tokens_changed {
                        stale_token_sets += 1;
                        if stale_token_sets > MAX_STALE_TOKEN_SETS {
                            return Err(Error::TokensNeverFresh {
                                skew: self.inner.skew,
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
                    if attempts >= self.inner.max_refresh_attempts || !error.is_transient() {
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
    async fn settle_rejection(&self, reason: &ReauthReason, look_at_store: bool) -> Result<bool> {
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
    async fn record_rejection(&self, reason: &ReauthReason) {
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
    async fn wait_for_newer_tokens(&self) -> Result<bool> {
        let step = Duration::from_millis(50);
        let mut waited = Duration::ZERO;
        loop {
            if self.sync_from_store().await? {
                tracing::info!(
                    "refresh token was rotated by another instance; using the stored tokens"
                );
                return Ok(true);
            }
            if waited >= self.inner.rejected_reload_wait {
                return Ok(false);
            }
            tokio::time::sleep(step).await;
            waited += step;
        }
    }

    /// The error for a token operation that ran out of time before its request was answered.
    fn out_of_time(&self, attempts: u32) -> Error {
        Error::TokenEndpointUnavailable {
            error: TokenError::Transport(self.no_answer()),
            attempts,
        }
    }

    fn no_answer(&self) -> TransportError {
        TransportError::new(
            TransportErrorKind::Timeout,
            format!(
                "the token endpoint did not answer within {} s",
                self.inner.token_timeout.as_secs_f32()
            ),
        )
    }

    /// Takes the cross-process refresh lease when a refresh is queued (and a lease is
    /// configured), then adopts what another holder may have saved meanwhile: a queued refresh
    /// that carries a refresh token the store has superseded is then dropped unsent.
    async fn lease_for_refresh(
        &self,
        deadline: tokio::time::Instant,
        report: &mut DriveReport,
    ) -> Result<Option<LeaseGuard>> {
        let Some(lease) = &self.inner.lease else {
            return Ok(None);
        };
        if !self.shared().session.is_refreshing() {
            return Ok(None);
        }
        let wait = deadline.saturating_duration_since(tokio::time::Instant::now());
        let guard = lease.acquire(&self.inner.profile, wait).await?;
        if self.sync_from_store().await? {
            tracing::info!("another process refreshed while we waited; using its tokens");
            report.adopted = true;
        }
        Ok(Some(guard))
    }

    /// Sends every queued token request and handles the answers. Must hold `refresh_lock`.
    /// Each answer is awaited until `deadline` at most; one that does not come in time is a
    /// timeout (the tokens are kept).
    async fn drive(&self, deadline: tokio::time::Instant) -> Result<DriveReport> {
        let mut report = DriveReport::default();
        // Held until the refresh's answer is saved (the loop's end).
        // Another holder that keeps the lease past our time is, for us, a refresh that did not
        // come back: the tokens are kept (and served while valid), and nothing is sent.
        let (_lease, lease_refused) = match self.lease_for_refresh(deadline, &mut report).await {
            Ok(lease) => (lease, None),
            Err(Error::Store(StoreError::LeaseTimeout { waited, .. })) => (None, Some(waited)),
            Err(error) => return Err(error),
        };
        loop {
            let request = self.shared().session.poll_request();
            let Some(request) = request else { break };
            let (id, grant, http) = request.into_parts();
            report.sent += 1;
            let span =
                tracing::info_span!("mailup_auth.token_request", grant = %grant, id = id.get());
            let result = match (grant, lease_refused) {
                (Grant::RefreshToken, Some(waited)) => Err(TransportError::new(
                    TransportErrorKind::Timeout,
                    format!(
                        "another process kept the refresh lock for {} s; no refresh was sent",
                        waited.as_secs()
                    ),
                )),
                _ => {
                    tracing::debug!(parent: &span, url = %http.url(), "sending token request");
                    let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
                    tokio::time::timeout(
                        remaining,
                        self.inner.transport.send(http).instrument(span.clone()),
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
            let now = self.inner.clock.now();
            self.shared().session.handle_token_response(now, id, result);
            self.process_events(&mut report).await?;
        }
        Ok(report)
    }

    async fn process_events(&self, report: &mut DriveReport) -> Result<()> {
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
    /// login, ours does.
    async fn persist_current(&self, grant: Grant) -> Result<()> {
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
                if self.inner.remember_client {
                    record.client = Some(stored_client(shared.session.config()));
                }
                (record, shared.version)
            };
            match self
                .inner
                .store
                .save(&self.inner.profile, &record, expected)
                .await
            {
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
                        // Another instance saved first: use what is there. `sync_from_store`
                        // keeps our unsaved tokens when the store only marks the old ones dead;
                        // then save them again on the new version.
                        self.sync_from_store().await?;
                        if self.shared().unsaved.is_none() {
                            return Ok(());
                        }
                        continue;
                    }
                    // A new login is authoritative: take the new version and save again.
                    let loaded = self.inner.store.load(&self.inner.profile).await?;
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
        Err(Error::Store(StoreError::Io(
            "the record kept changing concurrently".into(),
        )))
    }

    /// Adopts the stored record when its version differs from ours. Returns whether it did.
    async fn sync_from_store(&self) -> Result<bool> {
        let loaded = self.inner.store.load(&self.inner.profile).await?;
        let changed = {
            let mut shared = self.shared();
            match loaded {
                // Our rotated tokens are not saved yet and the store only says the old ones
                // are dead: keep ours (the next save overwrites the mark).
                Some(stored)
                    if Some(stored.version) != shared.version
                        && shared.unsaved.is_some()
                        && stored.value.reauthorization_required.is_some() =>
                {
                    shared.version = Some(stored.version);
                    shared.record.client = stored.value.client;
                    false
                }
                Some(stored) if Some(stored.version) != shared.version => {
                    shared.version = Some(stored.version);
                    match &stored.value.tokens {
                        Some(tokens) => shared.session.restore_tokens(tokens.clone()),
                        None => shared.session.logout(),
                    }
                    if let Some(reason) = &stored.value.reauthorization_required {
                        shared.session.mark_reauthorization_required(
                            ReauthReason::RejectedEarlier(reason.clone()),
                        );
                    }
                    shared.record = stored.value;
                    shared.unsaved = None;
                    true
                }
                None if shared.version.is_some() => {
                    shared.version = None;
                    shared.record = ProfileRecord::default();
                    shared.session.logout();
                    shared.unsaved = None;
                    true
                }
                _ => false,
            }
        };
        if changed {
            self.clear_cache();
            let tokens = self.shared().session.tokens().cloned();
            let version = self.shared().version;
            self.run_hooks(tokens.as_ref(), None, version);
        }
        Ok(changed)
    }

    /// Caches `token` if it is the session's current access token, for as long as the session
    /// would hand it out again. Called with the session lock held, right where the session
    /// handed the token out.
    fn publish_locked(&self, shared: &Shared, token: &AccessToken, now: UnixTime) {
        let current = shared
            .session
            .tokens()
            .is_some_and(|tokens| tokens.access_token == *token);
        if let (true, Some(until)) = (current, shared.session.hand_out_until(now)) {
            self.inner.cache.store(Some(Arc::new(CachedToken {
                token: token.clone(),
                until,
            })));
        }
    }

    fn clear_cache(&self) {
        self.inner.cache.store(None);
    }

    fn run_hooks(&self, tokens: Option<&TokenSet>, grant: Option<Grant>, version: Option<u64>) {
        let change = TokenChange {
            profile: &self.inner.profile,
            tokens,
            grant,
            version,
        };
        for hook in &self.inner.hooks {
            hook(&change);
        }
    }

    fn shared(&self) -> MutexGuard<'_, Shared> {
        // Every critical section is a few plain assignments on the session; a panic inside one
        // cannot leave it half-updated, so a poisoned lock is still consistent.
        self.inner
            .shared
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    // ---- logging in and out --------------------------------------------------------------

    /// Starts a web-app authorization with the configured redirect URI.
    pub fn begin_authorization(&self) -> Result<AuthorizationStart> {
        self.begin_authorization_with_redirect(None)
    }

    /// Starts a web-app authorization with a redirect URI chosen at run time.
    pub fn begin_authorization_with_redirect(
        &self,
        redirect_uri: Option<Url>,
    ) -> Result<AuthorizationStart> {
        let state = self.inner.entropy.csrf_state();
        let now = self.inner.clock.now();
        let shared = self.shared();
        let (url, pending) =
            PendingAuthorization::start(shared.session.config(), now, state, redirect_uri)?;
        Ok(AuthorizationStart { url, pending })
    }

    /// Completes a web-app authorization: checks the callback (URL or query string) against
    /// `pending` (state, then expiry: [`CallbackError::Expired`]), marks it used in the token
    /// store so that it completes once even across processes sharing the store
    /// ([`CallbackError::AlreadyUsed`] otherwise), exchanges the code, and stores the tokens
    /// before returning.
    pub async fn complete_authorization(
        &self,
        pending: &PendingAuthorization,
        callback: &str,
    ) -> Result<()> {
        let now = self.inner.clock.now();
        let code = pending.verify_callback(now, callback)?;
        let first_use = self
            .inner
            .store
            .consume_once(pending.state().secret(), pending.expires_at(), now)
            .await?;
        if !first_use {
            return Err(CallbackError::AlreadyUsed.into());
        }
        let redirect_uri = pending.redirect_uri().clone();
        self.locked(move |client| async move {
            let deadline = client.deadline();
            let now = client.inner.clock.now();
            client
                .shared()
                .session
                .exchange_code(now, code, &redirect_uri);
            client.finish_login(deadline).await
        })
        .instrument(tracing::info_span!("mailup_auth.code_exchange"))
        .await
    }

    /// Logs in with MailUp's password grant (for server-to-server use).
    pub async fn login_with_password(&self, username: &str, password: &Password) -> Result<()> {
        let username = username.to_owned();
        let password = password.clone();
        self.locked(move |client| async move {
            let deadline = client.deadline();
            client
                .shared()
                .session
                .login_with_password(&username, &password);
            client.finish_login(deadline).await
        })
        .instrument(tracing::info_span!("mailup_auth.password_grant"))
        .await
    }

    /// The CLI/desktop flow (RFC 8252): listens on 127.0.0.1, calls `show_url` with the LogOn
    /// URL (print it, open a browser), waits for the redirect, exchanges the code and stores
    /// the tokens; only then does the browser's page say "logged in" (a failure page
    /// otherwise).
    pub async fn login_with_loopback(
        &self,
        options: LoopbackLogin,
        show_url: impl FnOnce(&Url),
    ) -> Result<()> {
        let listener = match &options.redirect_uri {
            Some(uri) => LoopbackRedirect::bind_for(uri).await?,
            None => LoopbackRedirect::bind(options.port).await?,
        };
        let start =
            self.begin_authorization_with_redirect(Some(listener.redirect_uri().clone()))?;
        show_url(&start.url);
        let callback = listener
            .wait_for_callback(start.pending.state(), options.timeout)
            .await?;
        let result = self
            .complete_authorization(&start.pending, callback.as_str())
            .await;
        match &result {
            Ok(()) => callback.succeeded().await,
            Err(error) => callback.failed(&error.to_string()).await,
        }
        result
    }

    async fn finish_login(&self, deadline: tokio::time::Instant) -> Result<()> {
        let report = self.drive(deadline).await?;
        if let Some(error) = report.login_error {
            return Err(Error::Login(error));
        }
        let now = self.inner.clock.now();
        let shared = self.shared();
        // A login whose token is already due (a zero expires_in) still stored its tokens; the
        // next access_token() refreshes.
        if let Some(tokens) = shared.session.tokens() {
            self.publish_locked(&shared, &tokens.access_token.clone(), now);
        }
        Ok(())
    }

    /// Forgets the profile's tokens, in the store first and then here (MailUp has no revocation
    /// endpoint). The remembered client registration, if any, is kept. If the store cannot be
    /// written, nothing is forgotten and the error is returned.
    pub async fn logout(&self) -> Result<()> {
        self.locked(|client| async move {
            let version = client.forget_stored_tokens().await?;
            {
                let mut shared = client.shared();
                shared.session.logout();
                shared.version = version;
                shared.record.tokens = None;
                shared.record.last_refreshed_at = None;
                shared.record.reauthorization_required = None;
                shared.unsaved = None;
            }
            client.clear_cache();
            client.run_hooks(None, None, version);
            tracing::info!("logged out");
            Ok(())
        })
        .await
    }

    /// Removes the tokens from the stored record (or the record, when it holds nothing else).
    /// Returns the record's new version.
    async fn forget_stored_tokens(&self) -> Result<Option<u64>> {
        let profile = &self.inner.profile;
        let mut last_conflict = None;
        for _ in 0..MAX_SAVE_ATTEMPTS {
            let Some(stored) = self.inner.store.load(profile).await? else {
                return Ok(None);
            };
            if stored.value.client.is_none() {
                self.inner.store.delete(profile).await?;
                return Ok(None);
            }
            let mut record = stored.value;
            record.tokens = None;
            record.last_refreshed_at = None;
            record.reauthorization_required = None;
            match self
                .inner
                .store
                .save(profile, &record, Some(stored.version))
                .await
            {
                Ok(version) => return Ok(Some(version)),
                Err(conflict @ StoreError::Conflict { .. }) => last_conflict = Some(conflict),
                // A damaged record whose version cannot grow: forgetting the tokens means
                // removing it (its client registration with it); the next login starts anew.
                Err(StoreError::VersionExhausted { .. }) => {
                    self.inner.store.delete(profile).await?;
                    return Ok(None);
                }
                Err(error) => return Err(error.into()),
            }
        }
        Err(last_conflict
            .unwrap_or_else(|| StoreError::Io("the record kept changing".into()))
            .into())
    }

    // ---- API calls -----------------------------------------------------------------------

    /// Sends an authenticated request: adds `Authorization: Bearer`, refreshes once and retries
    /// once on 401, waits on 429 only when [`RateLimitRetry`] is configured. Non-2xx answers
    /// are typed errors.
    ///
    /// The access token goes only to the API base's origin (scheme, host and port) and to
    /// origins added with [`MailUpClientBuilder::trust_origin`]; any other URL is refused with
    /// [`Error::UntrustedOrigin`] before anything is sent.
    pub async fn send(&self, request: HttpRequest) -> Result<HttpResponse> {
        self.check_origin(request.url())?;
        let span = tracing::info_span!("mailup_auth.api", method = %request.method(), path = %request.url().path());
        self.send_inner(request).instrument(span).await
    }

    async fn send_inner(&self, request: HttpRequest) -> Result<HttpResponse> {
        let mut call = ApiCall::new();
        let mut rate_limited = 0;
        loop {
            let token = self.access_token().await?;
            let response = self
                .inner
                .transport
                .send(with_bearer(request.clone(), &token))
                .await?;
            tracing::debug!(status = response.status.as_u16(), "API answered");
            match call.handle_response(&response) {
                ApiStep::Done => return Ok(response),
                ApiStep::RefreshAndRetry => {
                    tracing::info!(
                        "access token rejected (401); refreshing once and retrying once"
                    );
                    self.token_rejected(&token);
                }
                ApiStep::Fail(ApiError::RateLimited { retry_after, error }) => {
                    let policy = self.inner.rate_limit;
                    match (policy, retry_after) {
                        (Some(policy), Some(wait))
                            if rate_limited < policy.max_retries && wait <= policy.max_wait =>
                        {
                            rate_limited += 1;
                            tracing::info!(wait_s = wait.as_secs(), "rate limited; waiting");
                            tokio::time::sleep(wait).await;
                        }
                        (Some(policy), None) if rate_limited < policy.max_retries => {
                            rate_limited += 1;
                            tokio::time::sleep(policy.max_wait.min(Duration::from_secs(1))).await;
                        }
                        _ => return Err(ApiError::RateLimited { retry_after, error }.into()),
                    }
                }
                ApiStep::Fail(error) => return Err(error.into()),
            }
        }
    }

    fn check_origin(&self, url: &Url) -> Result<()> {
        let origin = url.origin();
        let api_origin = self.shared().session.config().endpoints().api_base.origin();
        if origin == api_origin || self.inner.trusted_origins.contains(&origin) {
            Ok(())
        } else {
            Err(Error::UntrustedOrigin(origin.ascii_serialization()))
        }
    }

    fn token_rejected(&self, token: &AccessToken) {
        let now = self.inner.clock.now();
        let mut shared = self.shared();
        shared.session.handle_unauthorized(now, token);
        // Under the session lock, so it cannot interleave with `obtain_locked` publishing.
        let current = self.inner.cache.load();
        if current.as_ref().is_some_and(|c| c.token == *token) {
            self.inner.cache.compare_and_swap(&*current, None);
        }
        drop(shared);
    }

    /// [`send`](Self::send) for `http` crate types.
    pub async fn send_http(
        &self,
        request: http::Request<Vec<u8>>,
    ) -> Result<http::Response<Vec<u8>>> {
        let (parts, body) = request.into_parts();
        let url = mailup_auth_core::config::parse_http_url("request url", &parts.uri.to_string())?;
        let mut request = HttpRequest::new(parts.method, url).with_body(body);
        *request.headers_mut() = parts.headers;
        let response = self.send(request).await?;
        let mut builder = http::Response::builder().status(response.status);
        if let Some(headers) = builder.headers_mut() {
            *headers = response.headers;
        }
        builder
            .body(response.body.to_vec())
            .map_err(|e| Error::Decode(e.to_string()))
    }

    /// An API request for `path` (relative to the API base, or a full http(s) URL) with an
    /// optional JSON body; returns the raw response.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        json_body: Option<Vec<u8>>,
    ) -> Result<HttpResponse> {
        let api_base = self.shared().session.config().endpoints().api_base.clone();
        let url = api_url(&api_base, path)?;
        let mut request = HttpRequest::new(method, url)
            .with_response_limit(self.inner.max_response_bytes)
            .with_header(ACCEPT, HeaderValue::from_static("application/json"));
        if let Some(body) = json_body {
            request = request
                .with_header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .with_body(body);
        }
        self.send(request).await
    }

    /// `GET` a Console API path and decode the JSON answer.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        decode(&self.request(Method::GET, path, None).await?)
    }

    /// `POST` a JSON body to a Console API path and decode the JSON answer.
    pub async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T> {
        decode(
            &self
                .request(Method::POST, path, Some(encode(body)?))
                .await?,
        )
    }

    /// `PUT` a JSON body to a Console API path and decode the JSON answer.
    pub async fn put<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T> {
        decode(&self.request(Method::PUT, path, Some(encode(body)?)).await?)
    }

    /// `DELETE` a Console API path and decode the JSON answer (`null` for an empty body).
    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        decode(&self.request(Method::DELETE, path, None).await?)
    }

    // ---- background refresh --------------------------------------------------------------

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
    fn jitter_max(&self) -> Duration {
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
    fn background_wait(&self) -> Duration {
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

    async fn refresh_ahead(&self) -> Result<()> {
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

fn stored_client(config: &ClientConfig) -> StoredClient {
    StoredClient {
        client_id: config.client_id().to_owned(),
        client_secret: Some(config.client_secret().clone()),
        logon_url: Some(config.endpoints().logon.to_string()),
        token_url: Some(config.endpoints().token.to_string()),
        api_base: Some(config.endpoints().api_base.to_string()),
        redirect_uri: config.redirect_uri().map(Url::to_string),
    }
}

fn encode<B: Serialize + ?Sized>(body: &B) -> Result<Vec<u8>> {
    serde_json::to_vec(body)
        .map_err(|e| Error::Decode(format!("cannot encode the request body: {e}")))
}

fn decode<T: DeserializeOwned>(response: &HttpResponse) -> Result<T> {
    let body: &[u8] = if response.body.iter().all(u8::is_ascii_whitespace) {
        b"null"
    } else {
        &response.body
    };
    // serde_json's message can quote part of the body; report only where it failed.
    serde_json::from_slice(body).map_err(|e| {
        Error::Decode(format!(
            "{:?} error at line {}, column {}",
            e.classify(),
            e.line(),
            e.column()
        ))
    })
}

/// Builds a [`MailUpClient`]. Every default is replaceable.
pub struct MailUpClientBuilder {
    config: ClientConfigBuilder,
    profile: String,
    transport: Option<Arc<dyn Transport>>,
    store: StoreChoice,
    clock: Arc<dyn Clock>,
    entropy: Arc<dyn Entropy>,
    hooks: Vec<TokensHook>,
    remember_client: bool,
    max_refresh_attempts: u32,
    rejected_reload_wait: Duration,
    rate_limit: Option<RateLimitRetry>,
    skew: Duration,
    trusted_origins: Vec<String>,
    lease: LeaseChoice,
    token_timeout: Duration,
    max_response_bytes: usize,
}

enum LeaseChoice {
    /// The store's own when it is a sled directory opened by the builder; none otherwise.
    Default,
    Custom(Option<Arc<dyn RefreshLease>>),
}

enum StoreChoice {
    Default,
    #[cfg_attr(not(feature = "sled"), allow(dead_code))]
    Path(std::path::PathBuf),
    Custom(Arc<dyn TokenStore>),
}

impl std::fmt::Debug for MailUpClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailUpClientBuilder")
            .field("config", &self.config)
            .field("profile", &self.profile)
            .finish_non_exhaustive()
    }
}

impl MailUpClientBuilder {
    fn new(client_id: impl Into<String>, client_secret: ClientSecret) -> Self {
        Self {
            config: ClientConfig::builder(client_id, client_secret),
            profile: "default".into(),
            transport: None,
            store: StoreChoice::Default,
            clock: Arc::new(SystemClock),
            entropy: Arc::new(OsEntropy),
            hooks: Vec::new(),
            remember_client: false,
            max_refresh_attempts: 4,
            rejected_reload_wait: Duration::from_millis(500),
            rate_limit: None,
            skew: mailup_auth_core::config::DEFAULT_REFRESH_SKEW,
            trusted_origins: Vec::new(),
            lease: LeaseChoice::Default,
            token_timeout: DEFAULT_TOKEN_OPERATION_TIMEOUT,
            max_response_bytes: mailup_auth_core::http::DEFAULT_API_RESPONSE_LIMIT,
        }
    }

    /// The profile name the tokens are stored under (default `default`).
    pub fn profile(mut self, profile: impl Into<String>) -> Self {
        self.profile = profile.into();
        self
    }

    /// The registered redirect URI (web-app flow).
    pub fn redirect_uri(mut self, uri: impl Into<String>) -> Self {
        self.config = self.config.redirect_uri(uri);
        self
    }

    /// A server laid out like MailUp at another base URL (e.g. the emulator).
    pub fn auth_base(mut self, base: impl Into<String>) -> Self {
        self.config = self.config.auth_base(base);
        self
    }

    /// Overrides the LogOn URL.
    pub fn logon_url(mut self, url: impl Into<String>) -> Self {
        self.config = self.config.logon_url(url);
        self
    }

    /// Overrides the token URL.
    pub fn token_url(mut self, url: impl Into<String>) -> Self {
        self.config = self.config.token_url(url);
        self
    }

    /// Overrides the API base.
    pub fn api_base(mut self, url: impl Into<String>) -> Self {
        self.config = self.config.api_base(url);
        self
    }

    /// Sets all endpoints.
    pub fn endpoints(mut self, endpoints: Endpoints) -> Self {
        self.config = self.config.endpoints(endpoints);
        self
    }

    /// How long before expiry a refresh becomes due (default 60 s; at most half of each token's
    /// lifetime, so short-lived tokens work with any skew). The current token keeps being
    /// served inside this margin while a refresh fails.
    pub fn refresh_skew(mut self, skew: Duration) -> Self {
        self.config = self.config.refresh_skew(skew);
        self.skew = skew;
        self
    }

    /// The lifetime assumed when `expires_in` is missing (default 3600 s).
    pub fn default_expires_in(mut self, lifetime: Duration) -> Self {
        self.config = self.config.default_expires_in(lifetime);
        self
    }

    /// The backoff after transient token-endpoint failures (default 1 s doubling to 60 s).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.config = self.config.backoff(backoff);
        self
    }

    /// How many consecutive transient refresh failures one call tolerates before it returns
    /// [`Error::TokenEndpointUnavailable`] (default 4).
    pub fn max_refresh_attempts(mut self, attempts: u32) -> Self {
        self.max_refresh_attempts = attempts.max(1);
        self
    }

    /// How long to watch the store for another instance's rotation after our refresh token was
    /// rejected, before reporting re-authorization (default 500 ms).
    pub fn rejected_refresh_grace(mut self, wait: Duration) -> Self {
        self.rejected_reload_wait = wait;
        self
    }

    /// The longest one token operation may take (a refresh with its retries, a code exchange,
    /// a password grant), however the token endpoint behaves: default 30 s. A refresh whose
    /// answer does not come in time counts as a failed attempt (the tokens are kept; a still
    /// valid access token is served). This bounds each token request too, on top of the
    /// transport's own timeouts.
    pub fn token_operation_timeout(mut self, timeout: Duration) -> Self {
        self.token_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// The largest API answer [`request`](MailUpClient::request) and the JSON helpers accept
    /// (default 32 MiB): a bigger one is a `ResponseTooLarge` transport error, read no further
    /// than the limit. Token endpoint answers have their own limit (64 KiB). A request passed
    /// to [`send`](MailUpClient::send) carries its own
    /// ([`HttpRequest::with_response_limit`]).
    pub fn max_response_bytes(mut self, limit: usize) -> Self {
        self.max_response_bytes = limit;
        self
    }

    /// How long a started authorization may be completed in (default 10 minutes).
    pub fn authorization_timeout(mut self, timeout: Duration) -> Self {
        self.config = self.config.authorization_timeout(timeout);
        self
    }

    /// Accepts plain `http` endpoints, redirect URIs and trusted origins on hosts that are not
    /// loopback addresses.
    ///
    /// **Insecure**: the client secret, tokens, passwords and codes then travel unencrypted.
    /// Without it such a URL is [`Error::Config`] at [`build`](Self::build), before any I/O.
    pub fn allow_insecure_http(mut self) -> Self {
        self.config = self.config.allow_insecure_http();
        self
    }

    /// Coordinates refreshes with other processes sharing the store through this lease: a
    /// refresh is sent only while holding it, and a process that waited for it adopts the
    /// tokens the holder saved. The default is the store directory's file lock
    /// ([`SledRefreshLease`](mailup_auth_store_sled::SledRefreshLease)) when the builder opens a
    /// sled store itself, and none for a store passed with [`store`](Self::store) (pass
    /// `None` to turn the default off).
    pub fn refresh_lease(mut self, lease: Option<Arc<dyn RefreshLease>>) -> Self {
        self.lease = LeaseChoice::Custom(lease);
        self
    }

    /// Opt-in waiting on HTTP 429.
    pub fn rate_limit_retry(mut self, policy: RateLimitRetry) -> Self {
        self.rate_limit = Some(policy);
        self
    }

    /// Also sends the access token to this origin (scheme, host and port of the URL given),
    /// besides the API base's. Use it for another MailUp API on another host.
    pub fn trust_origin(mut self, url: impl Into<String>) -> Self {
        self.trusted_origins.push(url.into());
        self
    }

    /// Uses this transport instead of the default reqwest one.
    pub fn transport(mut self, transport: Arc<dyn Transport>) -> Self {
        self.transport = Some(transport);
        self
    }

    /// Uses this token store.
    pub fn store(mut self, store: Arc<dyn TokenStore>) -> Self {
        self.store = StoreChoice::Custom(store);
        self
    }

    /// Uses an in-memory store (nothing survives the process).
    pub fn memory_store(self) -> Self {
        self.store(Arc::new(mailup_auth_core::MemoryTokenStore::new()))
    }

    /// Uses a sled store in this directory.
    #[cfg(feature = "sled")]
    pub fn store_path(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.store = StoreChoice::Path(path.into());
        self
    }

    /// Uses this clock (tests).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Uses this randomness source (tests).
    pub fn entropy(mut self, entropy: Arc<dyn Entropy>) -> Self {
        self.entropy = entropy;
        self
    }

    /// Calls `hook` whenever the tokens change (after they are persisted).
    pub fn on_tokens_changed(
        mut self,
        hook: impl Fn(&TokenChange<'_>) + Send + Sync + 'static,
    ) -> Self {
        self.hooks.push(Arc::new(hook));
        self
    }

    /// Stores the client id, secret and endpoints with the profile, so a later run can rebuild
    /// the client from the profile alone (what the CLI does). Off by default.
    pub fn remember_client(mut self, remember: bool) -> Self {
        self.remember_client = remember;
        self
    }

    /// Builds the client and loads the profile's stored tokens, if any.
    pub async fn build(self) -> Result<MailUpClient> {
        let config = self.config.build()?;
        let trusted_origins = self
            .trusted_origins
            .iter()
            .map(|url| config.check_url("trusted origin", url).map(|u| u.origin()))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        mailup_auth_core::ports::validate_profile_name(&self.profile)?;
        let transport = match self.transport {
            Some(transport) => transport,
            None => default_transport()?,
        };
        let (store, default_lease): (Arc<dyn TokenStore>, Option<Arc<dyn RefreshLease>>) =
            match self.store {
                StoreChoice::Custom(store) => (store, None),
                StoreChoice::Default => default_store()?,
                StoreChoice::Path(path) => open_sled(path)?,
            };
        let lease = match self.lease {
            LeaseChoice::Default => default_lease,
            LeaseChoice::Custom(lease) => lease,
        };
        let client = MailUpClient {
            inner: Arc::new(Inner {
                profile: self.profile,
                transport,
                store,
                lease,
                clock: self.clock,
                entropy: self.entropy,
                shared: Mutex::new(Shared {
                    session: Session::new(config),
                    version: None,
                    record: ProfileRecord::default(),
                    unsaved: None,
                }),
                cache: ArcSwapOption::empty(),
                refresh_lock: Arc::new(tokio::sync::Mutex::new(())),
                hooks: self.hooks,
                remember_client: self.remember_client,
                max_refresh_attempts: self.max_refresh_attempts,
                rejected_reload_wait: self.rejected_reload_wait,
                rate_limit: self.rate_limit,
                skew: self.skew,
                trusted_origins,
                token_timeout: self.token_timeout,
                max_response_bytes: self.max_response_bytes,
            }),
        };
        client.sync_from_store().await?;
        let now = client.inner.clock.now();
        {
            let shared = client.shared();
            if let Some(tokens) = shared.session.tokens() {
                let usable = shared.session.reauthorization_reason().is_none();
                if usable && tokens.is_fresh(now, client.inner.skew) {
                    client.publish_locked(&shared, &tokens.access_token.clone(), now);
                }
            }
        }
        Ok(client)
    }
}

#[cfg(feature = "reqwest")]
fn default_transport() -> Result<Arc<dyn Transport>> {
    let transport = mailup_auth_http::ReqwestTransport::new()
        .map_err(|_| Error::Missing("the HTTP client could not be initialised"))?;
    Ok(Arc::new(transport))
}

#[cfg(not(feature = "reqwest"))]
fn default_transport() -> Result<Arc<dyn Transport>> {
    Err(Error::Missing(
        "no transport: enable the `reqwest` feature or call `transport(..)`",
    ))
}

/// The platform data directory the default store lives in
/// (e.g. `~/.local/share/mailup-auth/tokens` on Linux).
#[cfg(feature = "sled")]
pub fn default_store_dir() -> Option<std::path::PathBuf> {
    directories::ProjectDirs::from("com", "mailup-auth", "mailup-auth")
        .map(|dirs| dirs.data_dir().join("tokens"))
}

/// A sled store and its directory's refresh lease, or a memory-less error.
type StoreAndLease = (Arc<dyn TokenStore>, Option<Arc<dyn RefreshLease>>);

#[cfg(feature = "sled")]
fn default_store() -> Result<StoreAndLease> {
    let dir = default_store_dir().ok_or(Error::Missing(
        "no home directory for the default token store",
    ))?;
    open_sled(dir)
}

#[cfg(not(feature = "sled"))]
fn default_store() -> Result<StoreAndLease> {
    Err(Error::Missing(
        "no token store: enable the `sled` feature or call `store(..)` / `memory_store()`",
    ))
}

/// Opens the sled store at `path`, or shares the one this process already has open there:
/// sled allows one opener per database, and several clients (one per profile, say) commonly
/// use the same directory.
#[cfg(feature = "sled")]
fn open_sled(path: std::path::PathBuf) -> Result<StoreAndLease> {
    use std::collections::HashMap;
    use std::sync::OnceLock;

    use mailup_auth_store_sled::SledTokenStore;

    static OPEN: OnceLock<Mutex<HashMap<std::path::PathBuf, Weak<SledTokenStore>>>> =
        OnceLock::new();
    // One key per directory, however it is spelled (relative, `..`, symlinks).
    let mut dir = std::fs::DirBuilder::new();
    dir.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut dir, 0o700);
    dir.create(&path)
        .map_err(|e| StoreError::Io(format!("{}: {e}", path.display())))?;
    let key = std::fs::canonicalize(&path).unwrap_or(path);
    let mut open = OPEN
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    open.retain(|_, store| store.strong_count() > 0);
    let lease: Arc<dyn RefreshLease> =
        Arc::new(mailup_auth_store_sled::SledRefreshLease::new(&key));
    if let Some(store) = open.get(&key).and_then(Weak::upgrade) {
        return Ok((store, Some(lease)));
    }
    let store = Arc::new(SledTokenStore::open(&key)?);
    open.insert(key, Arc::downgrade(&store));
    Ok((store, Some(lease)))
}

#[cfg(not(feature = "sled"))]
fn open_sled(_path: std::path::PathBuf) -> Result<StoreAndLease> {
    Err(Error::Missing("no sled store: enable the `sled` feature"))
}
