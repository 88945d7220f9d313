//! [`MailUpClient`]: one object that keeps a MailUp session valid. It drives the core's
//! [`Session`] with a [`Transport`], a [`TokenStore`], a [`Clock`] and an [`Entropy`] source.
//!
//! Concurrency design (start reading at [`driver`]):
//! - a fresh cached access token is read from an `ArcSwap` (no lock that serializes readers);
//! - everything that talks to the token endpoint is done by one [`Driver`](driver::Driver),
//!   which holds the client's refresh flight (an async mutex, see [`locks`]): callers that find
//!   the cache stale queue on it and re-check the cache once they hold it, so any number of
//!   concurrent callers cause one refresh (single flight);
//! - new tokens are saved to the store (compare-and-swap, flushed) before the cache is updated
//!   and before any caller receives them (persist before publish).

mod api;
mod background;
#[cfg(any(feature = "reqwest-middleware", feature = "tower"))]
pub(crate) mod bearer;
mod builder;
mod driver;
mod lease;
mod locks;
mod login;
mod services;
mod store_sync;
mod thread_copies;
mod token_future;
mod tokens;

pub use self::background::BackgroundRefresh;
#[cfg(feature = "sled")]
pub use self::builder::default_store_dir;
pub use self::builder::MailUpClientBuilder;
pub use self::services::{Page, Pages, Service, ServiceClient, DEFAULT_MAX_PAGES};

use std::future::Future;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use http::header::{HeaderValue, ACCEPT, CONTENT_TYPE};
use http::Method;
use mailup_auth_core::{api_url, with_bearer, ApiCall, ApiStep};
use mailup_auth_core::{
    AccessToken, ApiError, Backoff, CallbackError, ClientConfig, ClientConfigBuilder, ClientSecret,
    Endpoints, Event, Grant, HttpRequest, HttpResponse, LeaseAttempt, LeaseGuard, Password,
    PendingAuthorization, ProfileRecord, ReauthReason, RefreshLease, Session, SessionState,
    StoreError, StoredClient, StoredProfile, TokenAccess, TokenError, TokenSet, TokenStore,
    Transport, TransportError, TransportErrorKind, UnixTime, Url,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::Instrument as _;

use self::locks::{ProfileState, StateGuard};
use self::store_sync::Synced;
use self::thread_copies::ThreadCopies;
use self::token_future::AccessTokenFuture;

use crate::clock::{Clock, Entropy, OsEntropy, SystemClock};
use crate::error::{Error, ErrorKind, Result};

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
#[allow(
    clippy::exhaustive_structs,
    reason = "options applications build with a literal; two bounds is all it is"
)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimitRetry {
    /// Most retries per call.
    pub max_retries: u32,
    /// Longest single wait; a longer `Retry-After` is returned as an error instead.
    pub max_wait: Duration,
}

/// A started web-app authorization: send the browser to `url`; keep `pending` (e.g. in the
/// user's session) to complete it.
#[non_exhaustive]
#[derive(Debug)]
pub struct AuthorizationStart {
    /// The LogOn URL for the browser (never holds the client secret).
    pub url: Url,
    /// What to keep until the callback arrives.
    pub pending: PendingAuthorization,
}

/// Options of [`MailUpClient::login_with_loopback`].
#[allow(
    clippy::exhaustive_structs,
    reason = "options applications build with a literal and `..Default::default()`"
)]
#[cfg(feature = "loopback")]
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

#[cfg(feature = "loopback")]
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
///
/// It serializes (serde) with these field names, so an application can serve it as a status
/// endpoint as it is; its `Debug` shows URLs as strings. Neither holds a token or the client
/// secret: only whether tokens are held and when they expire. Times serialize as
/// [`UnixTime`] does: milliseconds since the UNIX epoch.
///
/// ```
/// # async fn status_endpoint(client: mailup_auth::MailUpClient) -> serde_json::Result<String> {
/// let json = serde_json::to_string(&client.status())?;
/// // {"profile":"default","client_id":"...","endpoints":{"logon":"https://...",...},
/// //  "state":"Authorized","has_fresh_token":true,"expires_at":1700003600000,...}
/// # Ok(json)
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
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

#[derive(Debug)]
struct CachedToken {
    token: AccessToken,
    /// Until when it may be handed out without asking the session (see
    /// [`Session::hand_out_until`]).
    until: UnixTime,
    /// This publication's number, never reused: a thread's copy of the token is handed out
    /// only while the cache holds the publication it was copied from ([`thread_copies`]).
    publication: u64,
}

/// What every client built from one builder (or one [`MailUpAccounts`](crate::MailUpAccounts))
/// shares: the building blocks and the policy. Immutable once built.
pub(crate) struct ClientSettings {
    /// The validated configuration each session starts from.
    pub(crate) config: ClientConfig,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) store: Arc<dyn TokenStore>,
    pub(crate) lease: Option<Arc<dyn RefreshLease>>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) entropy: Arc<dyn Entropy>,
    pub(crate) hooks: Vec<TokensHook>,
    pub(crate) remember_client: bool,
    pub(crate) max_refresh_attempts: u32,
    pub(crate) rejected_refresh_grace: Duration,
    pub(crate) rate_limit: Option<RateLimitRetry>,
    pub(crate) trusted_origins: Vec<url::Origin>,
    pub(crate) token_timeout: Duration,
    pub(crate) max_response_bytes: usize,
}

impl ClientSettings {
    /// The configured refresh skew (the configuration is its one home).
    pub(crate) fn skew(&self) -> Duration {
        self.config.refresh_skew()
    }
}

/// One profile's client: its session and what protects it.
struct Inner {
    profile: String,
    settings: Arc<ClientSettings>,
    /// The session, its store version and record ([`locks`]: the state lock, a std mutex,
    /// never held across an await).
    state: Mutex<ProfileState>,
    /// The handed-out token, read without a lock.
    cache: ArcSwapOption<CachedToken>,
    /// Each reading thread's own copy of the cache's token ([`thread_copies`]).
    copies: ThreadCopies,
    /// The refresh flight ([`locks`]): whoever holds it is this client's one
    /// [`Driver`](driver::Driver) (single flight).
    refresh_flight: Arc<tokio::sync::Mutex<()>>,
    /// Announces each release of the refresh flight to the callers waiting for it to end
    /// ([`locks`]).
    flight_ended: Arc<tokio::sync::Notify>,
    /// The background scheduler this client reports its next due time to, if any.
    scheduler: Mutex<Weak<crate::scheduler::Scheduler>>,
    /// The task of `spawn_background_refresh`, while any of its handles is alive.
    standalone: Mutex<Weak<background::RunningTask>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let scheduler = self
            .scheduler
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .upgrade();
        if let Some(scheduler) = scheduler {
            scheduler.unschedule(&self.profile);
        }
    }
}

/// Keeps one MailUp profile's session valid. Cheap to clone (an `Arc`); share it freely.
///
/// ```no_run
/// use mailup_auth::{ClientSecret, LoopbackLogin, MailUpClient};
///
/// # async fn run() -> mailup_auth::Result<()> {
/// // The secret from the environment (never a command-line flag, never a URL).
/// let secret = std::env::var("MAILUP_CLIENT_SECRET").unwrap_or_default();
/// let client = MailUpClient::builder("my-client-id", ClientSecret::new(secret))
///     .profile("shop") // tokens stored under this name (sled, in the platform data dir)
///     .build()
///     .await?;
/// if !client.status().has_refresh_token {
///     // CLI / desktop: a browser login through a 127.0.0.1 redirect.
///     client
///         .login_with_loopback(LoopbackLogin::default(), |url| println!("Open {url}"))
///         .await?;
/// }
/// // Tokens are refreshed as needed (once for all concurrent callers); a 401 gets one
/// // refresh and one retry.
/// let info: serde_json::Value = client.get("Console/Authentication/Info").await?;
/// println!("{}", info["Username"]);
/// let count: u64 = client.statistics().get("Message/12/Count/Recipients").await?;
/// # let _ = count;
/// # Ok(())
/// # }
/// ```
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
/// one call accepts before it gives up with [`ErrorKind::TokensNeverFresh`].
const MAX_STALE_TOKEN_SETS: u32 = 2;
/// The background task never refreshes a token set younger than this.
const MIN_BACKGROUND_INTERVAL: Duration = Duration::from_secs(1);
/// The largest jitter the background subtracts from a due time.
const MAX_BACKGROUND_JITTER: Duration = Duration::from_secs(30);
/// How many times a conflicting save is retried after reloading.
const MAX_SAVE_ATTEMPTS: u32 = 4;
/// How many times one token operation takes the refresh lease again after losing it before
/// the refresh was sent, before it gives up with [`StoreError::LeaseLost`].
const MAX_LOST_LEASES: u32 = 3;
/// The default bound on one token operation (see
/// [`MailUpClientBuilder::token_operation_timeout`]).
pub const DEFAULT_TOKEN_OPERATION_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest bound a token operation takes: `Instant::now() + timeout` must not overflow (it
/// panics), whatever was asked for.
const MAX_TOKEN_OPERATION_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

impl MailUpClient {
    /// Starts a builder for the given client registration.
    pub fn builder(
        client_id: impl Into<String>,
        client_secret: ClientSecret,
    ) -> MailUpClientBuilder {
        MailUpClientBuilder::new(client_id, client_secret)
    }

    // ---- getters -------------------------------------------------------------------------

    /// How many handles to this client exist (the registry of a `MailUpAccounts` evicts only a
    /// client nobody else holds).
    pub(crate) fn holders(&self) -> usize {
        Arc::strong_count(&self.inner)
    }

    /// The profile name.
    pub fn profile(&self) -> &str {
        &self.inner.profile
    }

    /// The configuration.
    pub fn config(&self) -> ClientConfig {
        self.lock_state().session.config().clone()
    }

    /// A snapshot of the session, without secrets.
    pub fn status(&self) -> SessionStatus {
        let now = self.inner.settings.clock.now();
        let state = self.lock_state();
        let session = &state.session;
        let tokens = session.tokens();
        SessionStatus {
            profile: self.inner.profile.clone(),
            client_id: session.config().client_id().to_owned(),
            endpoints: session.config().endpoints().clone(),
            state: session.state(),
            has_fresh_token: tokens.is_some_and(|t| t.is_fresh(now, self.inner.settings.skew()))
                && session.reauthorization_reason().is_none(),
            expires_at: tokens.map(|t| t.expires_at),
            obtained_at: tokens.map(|t| t.obtained_at),
            last_refreshed_at: state.record.last_refreshed_at,
            has_refresh_token: tokens.is_some_and(|t| t.refresh_token.is_some()),
            store_version: state.version,
            reauthorization_reason: session.reauthorization_reason().map(|r| r.to_string()),
            refresh_error: session.last_refresh_error().map(|e| e.to_string()),
        }
    }

    /// The cached access token if it is fresh: no lock, no await. `None` means
    /// [`access_token`](Self::access_token) has work to do.
    ///
    /// Cheap enough for every request: the check reads
    /// [`Clock::now_or_later`](crate::Clock::now_or_later) (a coarse clock, never behind the
    /// precise one) and the token is handed out as a clone of the calling thread's own copy
    /// (the copy is made, one allocation, at the thread's first read of each new token).
    pub fn cached_access_token(&self) -> Option<AccessToken> {
        let cache = self.inner.cache.load();
        let cached = cache.as_ref()?;
        // Never late: `now_or_later` may run ahead of now, not behind it.
        if self.inner.settings.clock.now_or_later() >= cached.until {
            return None;
        }
        // The calling thread's own copy: no reference count written by other threads too.
        Some(self.inner.copies.token(cached))
    }

    /// Caches `token` if it is the session's current access token, for as long as the session
    /// would hand it out again. Takes the state lock's guard: called in the critical section
    /// where the session handed the token out, so a concurrent 401 on it cannot slip between.
    fn publish(&self, state: &StateGuard<'_>, token: &AccessToken, now: UnixTime) {
        let current = state
            .session
            .tokens()
            .is_some_and(|tokens| tokens.access_token == *token);
        if let (true, Some(until)) = (current, state.session.hand_out_until(now)) {
            self.inner.cache.store(Some(Arc::new(CachedToken {
                token: token.clone(),
                until,
                publication: self.inner.copies.next_publication(),
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
        for hook in &self.inner.settings.hooks {
            hook(&change);
        }
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
