//! The session state machine that ties the flow together, shaped like quinn-proto's
//! `Connection`: `&self` getters; `handle_*` inputs, each taking `now`; commands from the
//! application; `poll_*` outputs. The caller performs all I/O and calls the polls after every
//! input.

use std::collections::VecDeque;

use url::Url;

use crate::authorize::{AuthorizationError, CallbackError, PendingAuthorization};
use crate::config::ClientConfig;
use crate::http::{HttpRequest, HttpResponse, TransportError};
use crate::requests::{code_exchange_request, password_request, refresh_request, Grant};
use crate::secret::{AccessToken, AuthorizationCode, CsrfState, Password, RefreshToken};
use crate::time::UnixTime;
use crate::token::{parse_token_response, OAuthErrorCode, TokenError, TokenSet};

/// Identifies a token request, so its response can be matched (and stale ones ignored).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(u64);

impl RequestId {
    /// The raw number (unique within one session).
    pub fn get(self) -> u64 {
        self.0
    }
}

/// A token request for the caller to send; answer it with
/// [`Session::handle_token_response`] and the same [`id`](Self::id).
#[derive(Clone, Debug)]
pub struct TokenRequest {
    id: RequestId,
    grant: Grant,
    request: HttpRequest,
}

impl TokenRequest {
    /// The id to answer with.
    pub fn id(&self) -> RequestId {
        self.id
    }

    /// The grant this request uses (what its answer will change: a login or a refresh).
    pub fn grant(&self) -> Grant {
        self.grant
    }

    /// The HTTP request to send as is (a `POST` whose form body holds the client secret and
    /// the code, refresh token or password: never log it).
    pub fn request(&self) -> &HttpRequest {
        &self.request
    }

    /// Splits into the id, the grant and the HTTP request.
    pub fn into_parts(self) -> (RequestId, Grant, HttpRequest) {
        (self.id, self.grant, self.request)
    }
}

/// Why the user has to authorize again.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReauthReason {
    /// There are no tokens (never logged in).
    NoTokens,
    /// The access token expired (or was rejected) and there is no refresh token.
    NoRefreshToken,
    /// The token endpoint rejected the refresh token (`invalid_grant`: expired, revoked, or
    /// already rotated by someone else).
    RefreshRejected(TokenError),
    /// The token endpoint rejected the client credentials (`invalid_client`,
    /// `unauthorized_client`).
    ClientRejected(TokenError),
    /// The tokens were forgotten by [`Session::logout`].
    LoggedOut,
    /// An earlier session (another process, or before a restart) found the refresh token
    /// rejected and recorded it with the tokens; the text is its reason.
    RejectedEarlier(String),
}

impl std::fmt::Display for ReauthReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoTokens => f.write_str("not logged in"),
            Self::NoRefreshToken => {
                f.write_str("the access token expired and there is no refresh token")
            }
            Self::RefreshRejected(e) => write!(f, "the refresh token was rejected ({e})"),
            Self::ClientRejected(e) => write!(f, "the client credentials were rejected ({e})"),
            Self::LoggedOut => f.write_str("logged out"),
            Self::RejectedEarlier(reason) => write!(f, "{reason} (recorded earlier)"),
        }
    }
}

/// Something the driver must act on. Drain with [`Session::poll_event`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// New tokens: persist them now, before handing the access token to anyone.
    TokensChanged {
        /// The token set now current (the refresh token kept from before when the answer had
        /// none).
        tokens: TokenSet,
        /// The grant whose answer brought them: a login, or a refresh.
        grant: Grant,
    },
    /// A code exchange or password grant failed; the previous state is unchanged.
    AuthorizationFailed {
        /// The grant that failed (code exchange or password).
        grant: Grant,
        /// The token endpoint's refusal or the transport failure; it never holds a secret.
        error: TokenError,
    },
    /// A refresh failed without a rejection (a transient failure or an odd answer); tokens are
    /// kept (and the access token served while usable) and the refresh is retried at
    /// `retry_at`.
    RefreshFailed {
        /// The latest failure (never a rejection: those end in `ReauthorizationRequired`).
        error: TokenError,
        /// Consecutive transient failures so far.
        attempts: u32,
        /// When the next attempt is due.
        retry_at: UnixTime,
    },
    /// The user must authorize again.
    ReauthorizationRequired(ReauthReason),
}

/// Where a session stands, as [`Session::state`] reports it for status displays. A login in
/// progress is reported before the state of the tokens held.
///
/// Exhaustive: a status page that names each state must learn of a new one at compile time,
/// not show it as "unknown". With the `serde` feature it serializes as its name
/// (`"Authorized"`), for a status page.
#[allow(
    clippy::exhaustive_enums,
    reason = "exhaustive on purpose: a status display (the CLI's JSON `state`) must name a new state deliberately"
)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum SessionState {
    /// No tokens and nothing in progress.
    NoTokens,
    /// The browser was sent to the LogOn page; waiting for the callback.
    AwaitingCallback,
    /// A code exchange (or password grant) is in flight.
    ExchangingCode,
    /// Tokens are held, no refresh is in flight and none was rejected (the access token may
    /// still be expired or backing off: ask `access_token_or_refresh`).
    Authorized,
    /// A refresh is in flight.
    Refreshing,
    /// The refresh token is unusable: the user must authorize again.
    ReauthorizationRequired,
}

/// The answer of [`Session::access_token_or_refresh`].
///
/// Exhaustive on purpose: every driver matches it to decide whether to hand out a token, wait
/// or fail, and a new answer must break that `match` at compile time.
#[allow(
    clippy::exhaustive_enums,
    reason = "exhaustive on purpose: a driver's `match` must break at compile time when an answer is added"
)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenAccess {
    /// A token to use now: fresh, or still usable while its refresh is failing or impossible.
    Ready(AccessToken),
    /// A token request is queued or in flight: send it (poll it), then ask again after its
    /// response.
    Pending,
    /// The last refresh failed transiently; the next attempt is due at `retry_at`.
    BackingOff {
        /// When the next attempt is due (ask again then, or call `handle_timeout`).
        retry_at: UnixTime,
        /// Consecutive failed refreshes (transient or odd answers) so far.
        attempts: u32,
        /// The latest of those failures.
        error: TokenError,
    },
    /// The user must authorize again.
    ReauthorizationRequired(ReauthReason),
}

/// Why [`Session::refresh_now`] did not start a refresh. Nothing changed in the session.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RefreshNotStarted {
    /// A refresh is already queued or in flight; its answer will be the outcome.
    #[error("a refresh is already in flight")]
    AlreadyInFlight,
    /// The tokens held have no refresh token (the server did not issue one).
    #[error("there is no refresh token")]
    NoRefreshToken,
    /// The user must authorize again (never logged in, logged out, or the refresh token was
    /// rejected): a refresh could only fail.
    #[error("re-authorization is required: {0}")]
    ReauthorizationRequired(ReauthReason),
}

/// The OAuth session state machine.
///
/// Guarantees, whatever the order of inputs:
/// - at most one refresh request is in flight;
/// - a refresh becomes due at [`TokenSet::refresh_at`] (`expires_at - min(skew, lifetime / 2)`);
///   until then the access token is handed out;
/// - between `refresh_at` and [`TokenSet::usable_until`] (`expires_at` minus a few seconds of
///   safety) the current token is handed out only while a refresh is failing (backing off) or
///   impossible (no refresh token); otherwise the caller waits for the refresh;
/// - no access token is handed out at or past `usable_until`, nor after the API rejected it;
/// - a rotated refresh token replaces the old one, a response without one keeps the old one,
///   and a response to a request that is no longer current (stale) changes nothing;
/// - a callback with the wrong `state` changes nothing; a code is exchanged at most once;
/// - only a [rejection](TokenError::is_rejection) (`invalid_grant`, `invalid_client`,
///   `unauthorized_client`) leads to re-authorization, never to a loop;
/// - every other failure (transient, or an odd answer such as a redirect or a proxy's page)
///   keeps the tokens and backs off exponentially (capped).
///
/// ```
/// use http::StatusCode;
/// use mailup_auth_core::{ClientConfig, ClientSecret, Event, HttpResponse, Password, Session,
///     TokenAccess, UnixTime};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let config = ClientConfig::builder("id", ClientSecret::new("secret")).build()?;
/// let mut session = Session::new(config);
/// let now = UnixTime::from_secs(1_700_000_000);
/// // A command queues a request...
/// session.login_with_password("m1234", &Password::new("pw"));
/// // ...the driver sends it with any HTTP client and feeds the answer back...
/// let request = session.poll_request().expect("the password grant");
/// let answer = HttpResponse::new(
///     StatusCode::OK,
///     r#"{"access_token":"at","expires_in":3600,"refresh_token":"rt"}"#,
/// );
/// session.handle_token_response(now, request.id(), Ok(answer));
/// // ...persists the tokens when told to, then hands the access token out.
/// assert!(matches!(session.poll_event(), Some(Event::TokensChanged { .. })));
/// assert!(matches!(session.access_token_or_refresh(now), TokenAccess::Ready(_)));
/// assert!(session.poll_timeout().is_some()); // the proactive refresh
/// # Ok(())
/// # }
/// ```
///
/// # Call order
///
/// Methods fall in four groups, as in quinn-proto's `Connection`: `&self` getters; inputs
/// (`handle_*`, each taking `now`); commands from the application; outputs (`poll_*`). After
/// every input and every command the driver drains the outputs, in this order:
///
/// 1. [`poll_request`](Self::poll_request) until `None`: send each request and feed its answer
///    (or transport failure) back through [`handle_token_response`](Self::handle_token_response)
///    with the request's id;
/// 2. [`poll_event`](Self::poll_event) until `None`: persist
///    [`Event::TokensChanged`] before any access token is handed to a caller (MailUp rotates the
///    refresh token: the new one must be durable first);
/// 3. [`poll_timeout`](Self::poll_timeout): re-arm one timer at that time and call
///    [`handle_timeout`](Self::handle_timeout) when it fires.
///
/// # State
///
/// Two independent parts, each an enum, so that an impossible combination cannot be written:
/// the credentials (tokens held or not, a refresh idle, in flight or backing off, or the need
/// to authorize again) and a login in progress (waiting for the browser's callback, exchanging a
/// code or a password). A login may run while tokens are held and refreshed: the tokens stay in
/// use until the login's answer replaces them.
#[derive(Debug)]
pub struct Session {
    config: ClientConfig,
    credentials: Credentials,
    login: Login,
    outgoing: VecDeque<TokenRequest>,
    events: VecDeque<Event>,
    next_id: u64,
}

/// Tokens held, with what the API said about the access token.
#[derive(Debug)]
struct Held {
    tokens: TokenSet,
    /// The API answered 401 to this access token: it is never handed out again.
    access_rejected: bool,
}

/// The credentials part of the session's state.
#[derive(Debug)]
enum Credentials {
    /// Tokens that may be handed out and refreshed.
    Authorized { held: Held, refresh: Refresh },
    /// The user must authorize again. Tokens kept from before (the refresh token was rejected,
    /// an earlier process recorded a rejection, or there is no refresh token) stay readable,
    /// and their access token is still handed out while fresh and not rejected by the API; no
    /// refresh is ever sent from here.
    ReauthRequired {
        reason: ReauthReason,
        held: Option<Held>,
    },
}

/// The refresh of [`Credentials::Authorized`] tokens.
#[derive(Debug)]
enum Refresh {
    /// Nothing sent; a refresh starts at the tokens' refresh time or on a 401.
    Idle,
    /// One refresh queued or sent (never more than one).
    InFlight {
        id: RequestId,
        /// The refresh token it carries: restoring another one abandons this refresh.
        sent_with: RefreshToken,
        /// The failures before this attempt, so the backoff keeps growing if it fails too.
        failed_before: Option<RefreshFailure>,
    },
    /// The last refresh failed without a rejection; the next attempt is due at `retry_at`.
    BackingOff(RefreshFailure),
}

/// Consecutive refresh failures that were not a rejection.
#[derive(Clone, Debug)]
struct RefreshFailure {
    retry_at: UnixTime,
    attempts: u32,
    error: TokenError,
}

/// A login in progress, independent of the tokens held.
#[derive(Debug)]
enum Login {
    /// No login in progress.
    Idle,
    /// The browser was sent to the LogOn page; the callback is checked against this.
    AwaitingCallback(PendingAuthorization),
    /// A code exchange or password grant is queued or in flight. `pending` is an authorization
    /// begun meanwhile (or before a password grant), still waiting for its callback.
    Exchanging {
        id: RequestId,
        grant: Grant,
        pending: Option<PendingAuthorization>,
    },
}

impl Credentials {
    fn held(&self) -> Option<&Held> {
        match self {
            Self::Authorized { held, .. } => Some(held),
            Self::ReauthRequired { held, .. } => held.as_ref(),
        }
    }

    fn held_mut(&mut self) -> Option<&mut Held> {
        match self {
            Self::Authorized { held, .. } => Some(held),
            Self::ReauthRequired { held, .. } => held.as_mut(),
        }
    }

    fn refresh_in_flight(&self) -> Option<RequestId> {
        match self {
            Self::Authorized {
                refresh: Refresh::InFlight { id, .. },
                ..
            } => Some(*id),
            _ => None,
        }
    }
}

impl Session {
    /// A session without tokens (re-authorization required, reason
    /// [`ReauthReason::NoTokens`]); log in or [`restore_tokens`](Self::restore_tokens).
    pub fn new(config: ClientConfig) -> Self {
        Self {
            config,
            credentials: Credentials::ReauthRequired {
                reason: ReauthReason::NoTokens,
                held: None,
            },
            login: Login::Idle,
            outgoing: VecDeque::new(),
            events: VecDeque::new(),
            next_id: 1,
        }
    }

    /// A session that starts from stored tokens.
    pub fn with_tokens(config: ClientConfig, tokens: TokenSet) -> Self {
        let mut session = Self::new(config);
        session.restore_tokens(tokens);
        session
    }

    // ---- getters -------------------------------------------------------------------------

    /// The configuration the session was built with (endpoints, skew, backoff).
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// The current tokens, if any (they may be expired; use
    /// [`access_token_or_refresh`](Self::access_token_or_refresh) to get a usable one).
    pub fn tokens(&self) -> Option<&TokenSet> {
        self.credentials.held().map(|held| &held.tokens)
    }

    /// Where the session stands, for status displays. A login in progress is reported before
    /// the tokens' state (a refresh or a re-authorization need), since its answer decides what
    /// comes next.
    pub fn state(&self) -> SessionState {
        match (&self.login, &self.credentials) {
            (Login::Exchanging { .. }, _) => SessionState::ExchangingCode,
            (
                _,
                Credentials::Authorized {
                    refresh: Refresh::InFlight { .. },
                    ..
                },
            ) => SessionState::Refreshing,
            (Login::AwaitingCallback(_), _) => SessionState::AwaitingCallback,
            (_, Credentials::ReauthRequired { held: None, .. }) => SessionState::NoTokens,
            (_, Credentials::ReauthRequired { .. }) => SessionState::ReauthorizationRequired,
            (_, Credentials::Authorized { .. }) => SessionState::Authorized,
        }
    }

    /// Why re-authorization is required, if it is.
    pub fn reauthorization_reason(&self) -> Option<&ReauthReason> {
        match &self.credentials {
            Credentials::ReauthRequired { reason, .. } => Some(reason),
            Credentials::Authorized { .. } => None,
        }
    }

    /// The pending authorization, while waiting for a callback.
    pub fn pending_authorization(&self) -> Option<&PendingAuthorization> {
        match &self.login {
            Login::AwaitingCallback(pending) => Some(pending),
            Login::Exchanging { pending, .. } => pending.as_ref(),
            Login::Idle => None,
        }
    }

    /// The last refresh failure while backing off from it (tokens kept; the access token is
    /// served while still usable), also while the next attempt is in flight. `None` once a
    /// refresh succeeded or new tokens arrived.
    pub fn last_refresh_error(&self) -> Option<&TokenError> {
        match &self.credentials {
            Credentials::Authorized {
                refresh:
                    Refresh::BackingOff(failure)
                    | Refresh::InFlight {
                        failed_before: Some(failure),
                        ..
                    },
                ..
            } => Some(&failure.error),
            _ => None,
        }
    }

    /// Whether a refresh request is queued or in flight.
    pub fn is_refreshing(&self) -> bool {
        self.credentials.refresh_in_flight().is_some()
    }

    /// Until when the access token [`access_token_or_refresh`](Self::access_token_or_refresh)
    /// just answered may be reused without asking again (a driver's cache): its refresh time
    /// while it is fresh; inside the refresh margin, the next retry or
    /// [`TokenSet::usable_until`], whichever comes first. `None` when no token can be handed
    /// out now.
    pub fn hand_out_until(&self, now: UnixTime) -> Option<UnixTime> {
        let skew = self.config.refresh_skew();
        let held = self.credentials.held()?;
        let tokens = &held.tokens;
        if held.access_rejected {
            return None;
        }
        if tokens.is_fresh(now, skew) {
            return Some(tokens.refresh_at(skew));
        }
        let Credentials::Authorized { refresh, .. } = &self.credentials else {
            return None;
        };
        let exchanging = matches!(self.login, Login::Exchanging { .. });
        if exchanging || !tokens.is_usable(now, skew) {
            return None;
        }
        let usable_until = tokens.usable_until(skew);
        match (refresh, &tokens.refresh_token) {
            (Refresh::InFlight { .. }, _) => None,
            (_, None) => Some(usable_until),
            (Refresh::BackingOff(failure), Some(_)) if now < failure.retry_at => {
                Some(failure.retry_at.min(usable_until))
            }
            _ => None,
        }
    }

    // ---- inputs --------------------------------------------------------------------------

    /// Handles the redirect back from the LogOn page (full URL or query string). On success a
    /// code exchange request is queued; on any error nothing changes (a wrong `state` cannot
    /// cancel the real authorization).
    pub fn handle_callback(
        &mut self,
        now: UnixTime,
        callback: &str,
    ) -> Result<RequestId, CallbackError> {
        let pending = self
            .pending_authorization()
            .ok_or(CallbackError::NoPendingAuthorization)?;
        let code = pending.verify_callback(now, callback)?;
        let pending = self.take_pending().expect("checked above");
        Ok(self.exchange_code(code, pending.redirect_uri()))
    }

    /// Handles the response (or transport failure) for a token request. Responses whose id is
    /// not current are ignored.
    pub fn handle_token_response(
        &mut self,
        now: UnixTime,
        id: RequestId,
        response: Result<HttpResponse, TransportError>,
    ) {
        let parsed = response
            .map_err(TokenError::from)
            .and_then(|r| parse_token_response(&r));
        if self.credentials.refresh_in_flight() == Some(id) {
            let failed_before = self.end_refresh();
            self.handle_refresh_result(now, parsed, failed_before);
            return;
        }
        let grant = match &self.login {
            Login::Exchanging {
                id: current, grant, ..
            } if *current == id => *grant,
            _ => return,
        };
        if let Login::Exchanging { pending, .. } = std::mem::replace(&mut self.login, Login::Idle) {
            self.login = pending.map_or(Login::Idle, Login::AwaitingCallback);
        }
        self.handle_grant_result(now, grant, parsed);
    }

    /// Handles time passing: starts a refresh that has come due (proactive refresh at
    /// `expires_at - skew`, or a retry after backoff).
    pub fn handle_timeout(&mut self, now: UnixTime) {
        if self.poll_timeout().is_some_and(|due| now >= due) {
            self.start_refresh();
        }
    }

    /// The API answered 401 to `token`. If it is the current access token, it is never handed
    /// out again and a refresh starts (unless backing off); a 401 to an older token changes
    /// nothing (a refresh already replaced it).
    pub fn handle_unauthorized(&mut self, now: UnixTime, token: &AccessToken) {
        match self.credentials.held_mut() {
            Some(held) if held.tokens.access_token == *token => held.access_rejected = true,
            _ => return,
        }
        let Credentials::Authorized { held, refresh } = &self.credentials else {
            return;
        };
        let due = match refresh {
            Refresh::InFlight { .. } => return,
            Refresh::BackingOff(failure) => now >= failure.retry_at,
            Refresh::Idle => true,
        };
        if held.tokens.refresh_token.is_none() {
            self.require_reauth(ReauthReason::NoRefreshToken);
        } else if due {
            self.start_refresh();
        }
    }

    // ---- commands ------------------------------------------------------------------------

    /// Starts an authorization: returns the LogOn URL for the browser. The session keeps the
    /// pending authorization and checks the callback against it (a newer one replaces an older
    /// one). `state` must be fresh and unguessable (the caller's RNG); `redirect_uri`
    /// overrides the configured one.
    pub fn begin_authorization(
        &mut self,
        now: UnixTime,
        state: CsrfState,
        redirect_uri: Option<Url>,
    ) -> Result<Url, AuthorizationError> {
        let (url, pending) = PendingAuthorization::start(&self.config, now, state, redirect_uri)?;
        self.login = match std::mem::replace(&mut self.login, Login::Idle) {
            Login::Idle | Login::AwaitingCallback(_) => Login::AwaitingCallback(pending),
            Login::Exchanging { id, grant, .. } => Login::Exchanging {
                id,
                grant,
                pending: Some(pending),
            },
        };
        Ok(url)
    }

    /// Abandons a pending authorization (e.g. the user closed the browser).
    pub fn cancel_authorization(&mut self) {
        self.take_pending();
    }

    /// Queues the exchange of a code verified elsewhere (web apps that keep the
    /// [`PendingAuthorization`] in the user's session). The code is consumed: it is exchanged
    /// at most once.
    pub fn exchange_code(&mut self, code: AuthorizationCode, redirect_uri: &Url) -> RequestId {
        let request = code_exchange_request(&self.config, code, redirect_uri);
        self.start_grant(Grant::AuthorizationCode, request)
    }

    /// Queues a password grant (MailUp's 2-legged option).
    pub fn login_with_password(&mut self, username: &str, password: &Password) -> RequestId {
        let request = password_request(&self.config, username, password);
        self.start_grant(Grant::Password, request)
    }

    /// Adopts tokens from outside (the store at start-up, or the store after another instance
    /// refreshed first). Clears re-authorization and backoff. A refresh (queued or sent) that
    /// carries another refresh token than the restored one is abandoned and its answer ignored:
    /// the restored set comes from a newer rotation or a new login, and the old token's answer
    /// can only be a rejection or a parallel chain. One carrying the same token stays current.
    pub fn restore_tokens(&mut self, tokens: TokenSet) {
        let (previous, refresh) = match self.take_credentials() {
            Credentials::Authorized { held, refresh } => {
                let refresh = match refresh {
                    Refresh::InFlight { id, sent_with, .. }
                        if tokens.refresh_token.as_ref() == Some(&sent_with) =>
                    {
                        Refresh::InFlight {
                            id,
                            sent_with,
                            failed_before: None,
                        }
                    }
                    Refresh::InFlight { id, .. } => {
                        self.outgoing.retain(|r| r.id != id);
                        Refresh::Idle
                    }
                    Refresh::Idle | Refresh::BackingOff(_) => Refresh::Idle,
                };
                (Some(held), refresh)
            }
            Credentials::ReauthRequired { held, .. } => (held, Refresh::Idle),
        };
        // A 401 to this very access token still holds; any other token starts clean.
        let access_rejected = previous
            .is_some_and(|p| p.access_rejected && p.tokens.access_token == tokens.access_token);
        self.credentials = Credentials::Authorized {
            held: Held {
                tokens,
                access_rejected,
            },
            refresh,
        };
    }

    /// Marks the session as needing a new authorization (e.g. the store recorded that an
    /// earlier process had the refresh token rejected, usually right after the API rejected
    /// the access token). Neither the current access token is handed out nor a refresh tried
    /// until new tokens arrive through a login or [`restore_tokens`](Self::restore_tokens).
    pub fn mark_reauthorization_required(&mut self, reason: ReauthReason) {
        let held = match self.take_credentials() {
            Credentials::Authorized { held, refresh } => {
                // A refresh still queued (e.g. by a 401) would only try the dead token.
                if let Refresh::InFlight { id, .. } = refresh {
                    self.outgoing.retain(|r| r.id != id);
                }
                Some(held)
            }
            Credentials::ReauthRequired { held, .. } => held,
        };
        self.credentials = Credentials::ReauthRequired {
            reason,
            held: held.map(|held| Held {
                access_rejected: true,
                ..held
            }),
        };
    }

    /// Abandons token requests that were polled but will never be answered because the driver
    /// lost them (a panic, a runtime shut down mid-request). Their answers, should they come,
    /// are ignored; requests still queued are kept. Call it only when no request of yours is
    /// in flight.
    pub fn forget_unanswered_requests(&mut self) {
        let outgoing = &self.outgoing;
        let lost = |id: RequestId| !outgoing.iter().any(|r| r.id == id);
        if let Credentials::Authorized { refresh, .. } = &mut self.credentials {
            if let Refresh::InFlight {
                id, failed_before, ..
            } = refresh
            {
                if lost(*id) {
                    *refresh = failed_before
                        .take()
                        .map_or(Refresh::Idle, Refresh::BackingOff);
                }
            }
        }
        if let Login::Exchanging { id, pending, .. } = &mut self.login {
            if lost(*id) {
                self.login = pending.take().map_or(Login::Idle, Login::AwaitingCallback);
            }
        }
    }

    /// Asks for an access token, and **queues a refresh when one is needed**: this is a
    /// command, so drain the outputs afterwards ([call order](Self#call-order)).
    ///
    /// Answers the current token while no refresh is due; inside the refresh margin starts (or
    /// waits for) a refresh, and answers the still-valid current token while that refresh is
    /// failing; reports backoff once the token is no longer usable, or the need to authorize
    /// again (an expired token without a refresh token also emits
    /// [`Event::ReauthorizationRequired`]).
    #[must_use = "the answer says whether a token is ready or what to wait for"]
    pub fn access_token_or_refresh(&mut self, now: UnixTime) -> TokenAccess {
        let skew = self.config.refresh_skew();
        let exchanging = matches!(self.login, Login::Exchanging { .. });
        let (held, refresh) = match &self.credentials {
            Credentials::ReauthRequired { reason, held } => {
                return match held {
                    Some(held) if held.tokens.is_fresh(now, skew) && !held.access_rejected => {
                        TokenAccess::Ready(held.tokens.access_token.clone())
                    }
                    _ if exchanging => TokenAccess::Pending,
                    _ => TokenAccess::ReauthorizationRequired(reason.clone()),
                };
            }
            Credentials::Authorized { held, refresh } => (held, refresh),
        };
        let tokens = &held.tokens;
        if tokens.is_fresh(now, skew) && !held.access_rejected {
            return TokenAccess::Ready(tokens.access_token.clone());
        }
        // Inside the refresh margin: still valid, unless the API said otherwise.
        let usable = tokens.is_usable(now, skew) && !held.access_rejected;
        if exchanging || matches!(refresh, Refresh::InFlight { .. }) {
            return TokenAccess::Pending;
        }
        if tokens.refresh_token.is_none() {
            if usable {
                return TokenAccess::Ready(tokens.access_token.clone());
            }
            self.require_reauth(ReauthReason::NoRefreshToken);
            return TokenAccess::ReauthorizationRequired(ReauthReason::NoRefreshToken);
        }
        if let Refresh::BackingOff(failure) = refresh {
            if now < failure.retry_at {
                if usable {
                    return TokenAccess::Ready(tokens.access_token.clone());
                }
                return TokenAccess::BackingOff {
                    retry_at: failure.retry_at,
                    attempts: failure.attempts,
                    error: failure.error.clone(),
                };
            }
        }
        self.start_refresh();
        TokenAccess::Pending
    }

    /// Forces a refresh now (ignoring freshness and backoff) and returns its request's id.
    /// Refused, with nothing changed, when one is already in flight, when there is no refresh
    /// token, or when re-authorization is required.
    pub fn refresh_now(&mut self) -> Result<RequestId, RefreshNotStarted> {
        match &self.credentials {
            Credentials::ReauthRequired { reason, .. } => {
                Err(RefreshNotStarted::ReauthorizationRequired(reason.clone()))
            }
            Credentials::Authorized {
                refresh: Refresh::InFlight { .. },
                ..
            } => Err(RefreshNotStarted::AlreadyInFlight),
            Credentials::Authorized { .. } => self
                .start_refresh()
                .ok_or(RefreshNotStarted::NoRefreshToken),
        }
    }

    /// Forgets the tokens and anything in progress. Answers to requests already sent are
    /// ignored. (MailUp has no revocation endpoint: logging out is local.)
    pub fn logout(&mut self) {
        self.credentials = Credentials::ReauthRequired {
            reason: ReauthReason::LoggedOut,
            held: None,
        };
        self.login = Login::Idle;
        self.outgoing.clear();
    }

    // ---- outputs -------------------------------------------------------------------------

    /// The next token request to send. Call until `None` after every input and command.
    #[must_use = "a polled request must be sent and its answer handed back"]
    pub fn poll_request(&mut self) -> Option<TokenRequest> {
        self.outgoing.pop_front()
    }

    /// The next event to act on. Call until `None` after every input and command.
    #[must_use = "events must be acted on (persist `TokensChanged` before handing out a token)"]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called: the proactive
    /// refresh time (`expires_at - skew`), the end of a backoff, or at once after a 401 to
    /// the current token. `None` when nothing is scheduled (no refresh token, a refresh in
    /// flight, or re-authorization required).
    #[must_use = "the driver's timer must be re-armed at this time"]
    pub fn poll_timeout(&self) -> Option<UnixTime> {
        let Credentials::Authorized { held, refresh } = &self.credentials else {
            return None;
        };
        held.tokens.refresh_token.as_ref()?;
        match refresh {
            Refresh::InFlight { .. } => None,
            Refresh::BackingOff(failure) => Some(failure.retry_at),
            Refresh::Idle if held.access_rejected => Some(held.tokens.obtained_at),
            Refresh::Idle => Some(held.tokens.refresh_at(self.config.refresh_skew())),
        }
    }

    // ---- internals -----------------------------------------------------------------------

    fn next_id(&mut self) -> RequestId {
        let id = RequestId(self.next_id);
        self.next_id += 1;
        id
    }

    /// Moves the credentials out, leaving a placeholder the caller overwrites.
    fn take_credentials(&mut self) -> Credentials {
        std::mem::replace(
            &mut self.credentials,
            Credentials::ReauthRequired {
                reason: ReauthReason::NoTokens,
                held: None,
            },
        )
    }

    fn take_pending(&mut self) -> Option<PendingAuthorization> {
        match &mut self.login {
            Login::Idle => None,
            Login::Exchanging { pending, .. } => pending.take(),
            Login::AwaitingCallback(_) => match std::mem::replace(&mut self.login, Login::Idle) {
                Login::AwaitingCallback(pending) => Some(pending),
                _ => unreachable!("matched above"),
            },
        }
    }

    /// Queues a refresh with the held refresh token; `None` (nothing queued) without one, or
    /// when re-authorization is required.
    fn start_refresh(&mut self) -> Option<RequestId> {
        let id = RequestId(self.next_id);
        let Credentials::Authorized { held, refresh } = &mut self.credentials else {
            return None;
        };
        let refresh_token = held.tokens.refresh_token.clone()?;
        self.next_id += 1;
        let request = refresh_request(&self.config, &refresh_token);
        let failed_before = match std::mem::replace(refresh, Refresh::Idle) {
            Refresh::Idle => None,
            Refresh::BackingOff(failure) => Some(failure),
            Refresh::InFlight {
                id: superseded,
                failed_before,
                ..
            } => {
                self.outgoing.retain(|r| r.id != superseded);
                failed_before
            }
        };
        *refresh = Refresh::InFlight {
            id,
            sent_with: refresh_token,
            failed_before,
        };
        self.outgoing.push_back(TokenRequest {
            id,
            grant: Grant::RefreshToken,
            request,
        });
        Some(id)
    }

    /// Ends the refresh in flight (its answer arrived); returns the failures before it.
    fn end_refresh(&mut self) -> Option<RefreshFailure> {
        match &mut self.credentials {
            Credentials::Authorized { refresh, .. } => {
                match std::mem::replace(refresh, Refresh::Idle) {
                    Refresh::InFlight { failed_before, .. } => failed_before,
                    Refresh::Idle | Refresh::BackingOff(_) => None,
                }
            }
            Credentials::ReauthRequired { .. } => None,
        }
    }

    fn start_grant(&mut self, grant: Grant, request: HttpRequest) -> RequestId {
        let id = self.next_id();
        let pending = match std::mem::replace(&mut self.login, Login::Idle) {
            Login::Idle => None,
            Login::AwaitingCallback(pending) => Some(pending),
            // A new login supersedes an older grant still in flight.
            Login::Exchanging {
                id: old, pending, ..
            } => {
                self.outgoing.retain(|r| r.id != old);
                pending
            }
        };
        self.login = Login::Exchanging { id, grant, pending };
        self.outgoing.push_back(TokenRequest { id, grant, request });
        id
    }

    fn require_reauth(&mut self, reason: ReauthReason) {
        let held = match self.take_credentials() {
            Credentials::Authorized { held, .. }
            | Credentials::ReauthRequired {
                held: Some(held), ..
            } => Some(held),
            Credentials::ReauthRequired { held: None, .. } => None,
        };
        self.credentials = Credentials::ReauthRequired {
            reason: reason.clone(),
            held,
        };
        self.events
            .push_back(Event::ReauthorizationRequired(reason));
    }

    fn handle_refresh_result(
        &mut self,
        now: UnixTime,
        result: Result<crate::token::TokenResponse, TokenError>,
        failed_before: Option<RefreshFailure>,
    ) {
        match result {
            Ok(response) => {
                let tokens =
                    response.into_token_set(now, self.config.default_expires_in(), self.tokens());
                self.set_tokens(tokens, Grant::RefreshToken);
            }
            // Anything but a rejection keeps the tokens: a transient failure, and also an odd
            // answer (a redirect, a proxy's page, `invalid_request`) that says nothing about
            // the refresh token. Both back off.
            Err(error) if !error.is_rejection() => {
                let attempts = failed_before
                    .map_or(0, |failure| failure.attempts)
                    .saturating_add(1);
                let retry_at = now.saturating_add(self.config.backoff().delay(attempts));
                if let Credentials::Authorized { refresh, .. } = &mut self.credentials {
                    *refresh = Refresh::BackingOff(RefreshFailure {
                        retry_at,
                        attempts,
                        error: error.clone(),
                    });
                }
                self.events.push_back(Event::RefreshFailed {
                    error,
                    attempts,
                    retry_at,
                });
            }
            Err(error) => {
                let client_refused = matches!(
                    error.oauth_error(),
                    Some(OAuthErrorCode::InvalidClient | OAuthErrorCode::UnauthorizedClient)
                );
                let reason = if client_refused {
                    ReauthReason::ClientRejected(error)
                } else {
                    ReauthReason::RefreshRejected(error)
                };
                self.require_reauth(reason);
            }
        }
    }

    fn handle_grant_result(
        &mut self,
        now: UnixTime,
        grant: Grant,
        result: Result<crate::token::TokenResponse, TokenError>,
    ) {
        match result {
            Ok(response) => {
                let tokens = response.into_token_set(now, self.config.default_expires_in(), None);
                // A refresh of the previous login's tokens is stale now.
                if let Some(old) = self.credentials.refresh_in_flight() {
                    self.outgoing.retain(|r| r.id != old);
                }
                self.set_tokens(tokens, grant);
            }
            Err(error) => self
                .events
                .push_back(Event::AuthorizationFailed { grant, error }),
        }
    }

    fn set_tokens(&mut self, tokens: TokenSet, grant: Grant) {
        self.credentials = Credentials::Authorized {
            held: Held {
                tokens: tokens.clone(),
                access_rejected: false,
            },
            refresh: Refresh::Idle,
        };
        self.events
            .push_back(Event::TokensChanged { tokens, grant });
    }
}
