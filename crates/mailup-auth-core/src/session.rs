//! The session state machine that ties the flow together, shaped like quinn-proto's
//! `Connection`: `&self` getters; `handle_*` inputs, each taking `now`; commands from the
//! application; `poll_*` outputs. The caller performs all I/O and calls the polls after every
//! input.
//!
//! Guarantees, whatever the order of inputs:
//! - at most one refresh request is in flight;
//! - a refresh becomes due at [`TokenSet::refresh_at`] (`expires_at - min(skew, lifetime / 2)`);
//!   until then the access token is handed out;
//! - between `refresh_at` and [`TokenSet::usable_until`] (`expires_at` minus a few seconds of
//!   safety) the current token is handed out only while a refresh is failing (backing off) or
//!   impossible (no refresh token); otherwise the caller waits for the refresh;
//! - no access token is handed out at or past `usable_until`, nor after the API rejected it;
//! - a rotated refresh token replaces the old one, a response without one keeps the old one,
//!   and a response to a request that is no longer current (stale) changes nothing;
//! - a callback with the wrong `state` changes nothing; a code is exchanged at most once;
//! - only a [rejection](TokenError::is_rejection) (`invalid_grant`, `invalid_client`,
//!   `unauthorized_client`) leads to re-authorization, never to a loop;
//! - every other failure (transient, or an odd answer such as a redirect or a proxy's page)
//!   keeps the tokens and backs off exponentially (capped).

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

    /// The grant this request uses.
    pub fn grant(&self) -> Grant {
        self.grant
    }

    /// The HTTP request.
    pub fn request(&self) -> &HttpRequest {
        &self.request
    }

    /// Splits into the id and the HTTP request.
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
        /// The new token set.
        tokens: TokenSet,
        /// How they were obtained.
        grant: Grant,
    },
    /// A code exchange or password grant failed; the previous state is unchanged.
    AuthorizationFailed {
        /// Which grant.
        grant: Grant,
        /// Why.
        error: TokenError,
    },
    /// A refresh failed without a rejection (a transient failure or an odd answer); tokens are
    /// kept (and the access token served while usable) and the refresh is retried at
    /// `retry_at`.
    RefreshFailed {
        /// Why.
        error: TokenError,
        /// Consecutive transient failures so far.
        attempts: u32,
        /// When the next attempt is due.
        retry_at: UnixTime,
    },
    /// The user must authorize again.
    ReauthorizationRequired(ReauthReason),
}

/// The session's state, as a getter reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SessionState {
    /// No tokens and nothing in progress.
    NoTokens,
    /// The browser was sent to the LogOn page; waiting for the callback.
    AwaitingCallback,
    /// A code exchange (or password grant) is in flight.
    ExchangingCode,
    /// Tokens are held.
    Authorized,
    /// A refresh is in flight.
    Refreshing,
    /// The refresh token is unusable: the user must authorize again.
    ReauthorizationRequired,
}

/// The answer to "give me an access token".
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenAccess {
    /// A fresh token.
    Ready(AccessToken),
    /// A token request is queued or in flight: send it (poll it), then ask again after its
    /// response.
    Pending,
    /// The last refresh failed transiently; the next attempt is due at `retry_at`.
    BackingOff {
        /// When the next attempt is due (ask again then, or call `handle_timeout`).
        retry_at: UnixTime,
        /// Consecutive failures so far.
        attempts: u32,
        /// The last failure.
        error: TokenError,
    },
    /// The user must authorize again.
    ReauthorizationRequired(ReauthReason),
}

#[derive(Clone, Debug)]
struct BackoffState {
    retry_at: UnixTime,
    attempts: u32,
    error: TokenError,
}

/// The OAuth session state machine. See the [module docs](self).
#[derive(Debug)]
pub struct Session {
    config: ClientConfig,
    tokens: Option<TokenSet>,
    /// The API answered 401 to the current access token.
    access_rejected: bool,
    pending: Option<PendingAuthorization>,
    reauth: Option<ReauthReason>,
    refresh_in_flight: Option<RequestId>,
    /// The refresh token the in-flight refresh carries.
    refresh_sent_with: Option<RefreshToken>,
    grant_in_flight: Option<(RequestId, Grant)>,
    backoff: Option<BackoffState>,
    outgoing: VecDeque<TokenRequest>,
    events: VecDeque<Event>,
    next_id: u64,
}

impl Session {
    /// A session without tokens.
    pub fn new(config: ClientConfig) -> Self {
        Self {
            config,
            tokens: None,
            access_rejected: false,
            pending: None,
            reauth: Some(ReauthReason::NoTokens),
            refresh_in_flight: None,
            refresh_sent_with: None,
            grant_in_flight: None,
            backoff: None,
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

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// The current tokens, if any (they may be expired; use [`access_token`](Self::access_token)
    /// to get a usable one).
    pub fn tokens(&self) -> Option<&TokenSet> {
        self.tokens.as_ref()
    }

    /// The state.
    pub fn state(&self) -> SessionState {
        if self.grant_in_flight.is_some() {
            SessionState::ExchangingCode
        } else if self.refresh_in_flight.is_some() {
            SessionState::Refreshing
        } else if self.pending.is_some() {
            SessionState::AwaitingCallback
        } else if self.tokens.is_none() {
            SessionState::NoTokens
        } else if self.reauth.is_some() {
            SessionState::ReauthorizationRequired
        } else {
            SessionState::Authorized
        }
    }

    /// Why re-authorization is required, if it is.
    pub fn reauthorization_reason(&self) -> Option<&ReauthReason> {
        self.reauth.as_ref()
    }

    /// The pending authorization, while waiting for a callback.
    pub fn pending_authorization(&self) -> Option<&PendingAuthorization> {
        self.pending.as_ref()
    }

    /// The last refresh failure while backing off from it (tokens kept; the access token is
    /// served while still usable). `None` once a refresh succeeded or new tokens arrived.
    pub fn last_refresh_error(&self) -> Option<&TokenError> {
        self.backoff.as_ref().map(|b| &b.error)
    }

    /// Whether a refresh request is queued or in flight.
    pub fn is_refreshing(&self) -> bool {
        self.refresh_in_flight.is_some()
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
            .pending
            .as_ref()
            .ok_or(CallbackError::NoPendingAuthorization)?;
        let code = pending.verify_callback(now, callback)?;
        let pending = self.pending.take().expect("checked above");
        Ok(self.exchange_code(now, code, pending.redirect_uri()))
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
        if self.refresh_in_flight == Some(id) {
            self.refresh_in_flight = None;
            self.handle_refresh_result(now, parsed);
        } else if let Some((grant_id, grant)) = self.grant_in_flight {
            if grant_id == id {
                self.grant_in_flight = None;
                self.handle_grant_result(now, grant, parsed);
            }
        }
    }

    /// Handles time passing: starts a refresh that has come due (proactive refresh at
    /// `expires_at - skew`, or a retry after backoff).
    pub fn handle_timeout(&mut self, now: UnixTime) {
        if self.refresh_due(now) {
            self.start_refresh();
        }
    }

    /// The API answered 401 to `token`. If it is the current access token, it is never handed
    /// out again and a refresh starts (unless backing off); a 401 to an older token changes
    /// nothing (a refresh already replaced it).
    pub fn handle_unauthorized(&mut self, now: UnixTime, token: &AccessToken) {
        let current = match &self.tokens {
            Some(tokens) if tokens.access_token == *token => tokens,
            _ => return,
        };
        self.access_rejected = true;
        if self.refresh_in_flight.is_some() || self.reauth.is_some() {
            return;
        }
        if current.refresh_token.is_none() {
            self.require_reauth(ReauthReason::NoRefreshToken);
            return;
        }
        if self.backoff.as_ref().is_none_or(|b| now >= b.retry_at) {
            self.start_refresh();
        }
    }

    // ---- commands ------------------------------------------------------------------------

    /// Starts an authorization: returns the LogOn URL for the browser. The session keeps the
    /// pending authorization and checks the callback against it. `state` must be fresh and
    /// unguessable (the caller's RNG); `redirect_uri` overrides the configured one.
    pub fn begin_authorization(
        &mut self,
        now: UnixTime,
        state: CsrfState,
        redirect_uri: Option<Url>,
    ) -> Result<Url, AuthorizationError> {
        let (url, pending) = PendingAuthorization::start(&self.config, now, state, redirect_uri)?;
        self.pending = Some(pending);
        Ok(url)
    }

    /// Abandons a pending authorization (e.g. the user closed the browser).
    pub fn cancel_authorization(&mut self) {
        self.pending = None;
    }

    /// Queues the exchange of a code verified elsewhere (web apps that keep the
    /// [`PendingAuthorization`] in the user's session). The code is consumed: it is exchanged
    /// at most once.
    pub fn exchange_code(
        &mut self,
        _now: UnixTime,
        code: AuthorizationCode,
        redirect_uri: &Url,
    ) -> RequestId {
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
        if self.refresh_in_flight.is_some() && self.refresh_sent_with != tokens.refresh_token {
            let abandoned = self.refresh_in_flight.take();
            self.refresh_sent_with = None;
            self.outgoing.retain(|r| Some(r.id) != abandoned);
        }
        if self
            .tokens
            .as_ref()
            .is_none_or(|t| t.access_token != tokens.access_token)
        {
            self.access_rejected = false;
        }
        self.tokens = Some(tokens);
        self.reauth = None;
        self.backoff = None;
    }

    /// Marks the session as needing a new authorization (e.g. the store recorded that an
    /// earlier process had the refresh token rejected, usually right after the API rejected
    /// the access token). Neither the current access token is handed out nor a refresh tried
    /// until new tokens arrive through a login or [`restore_tokens`](Self::restore_tokens).
    pub fn mark_reauthorization_required(&mut self, reason: ReauthReason) {
        // A refresh still queued (e.g. by a 401) would only try the dead token.
        if let Some(id) = self.refresh_in_flight.take() {
            self.outgoing.retain(|r| r.id != id);
            self.refresh_sent_with = None;
        }
        self.reauth = Some(reason);
        self.access_rejected = true;
        self.backoff = None;
    }

    /// Abandons token requests that were polled but will never be answered because the driver
    /// lost them (a panic, a runtime shut down mid-request). Their answers, should they come,
    /// are ignored; requests still queued are kept. Call it only when no request of yours is
    /// in flight.
    pub fn forget_unanswered_requests(&mut self) {
        let queued = |id: RequestId| self.outgoing.iter().any(|r| r.id == id);
        if self.refresh_in_flight.is_some_and(|id| !queued(id)) {
            self.refresh_in_flight = None;
            self.refresh_sent_with = None;
        }
        if self.grant_in_flight.is_some_and(|(id, _)| !queued(id)) {
            self.grant_in_flight = None;
        }
    }

    /// Asks for an access token. Answers the current token while no refresh is due; inside the
    /// refresh margin starts (or waits for) a refresh, and answers the still-valid current
    /// token while that refresh is failing; reports backoff once the token is no longer
    /// usable, or the need to authorize again.
    pub fn access_token(&mut self, now: UnixTime) -> TokenAccess {
        let skew = self.config.refresh_skew();
        let Some(tokens) = &self.tokens else {
            if self.grant_in_flight.is_some() {
                return TokenAccess::Pending;
            }
            return TokenAccess::ReauthorizationRequired(
                self.reauth.clone().unwrap_or(ReauthReason::NoTokens),
            );
        };
        if tokens.is_fresh(now, skew) && !self.access_rejected {
            return TokenAccess::Ready(tokens.access_token.clone());
        }
        // Inside the refresh margin: still valid, unless the API said otherwise.
        let usable = tokens.is_usable(now, skew) && !self.access_rejected;
        if self.refresh_in_flight.is_some() || self.grant_in_flight.is_some() {
            return TokenAccess::Pending;
        }
        if let Some(reason) = &self.reauth {
            return TokenAccess::ReauthorizationRequired(reason.clone());
        }
        if tokens.refresh_token.is_none() {
            if usable {
                return TokenAccess::Ready(tokens.access_token.clone());
            }
            self.require_reauth(ReauthReason::NoRefreshToken);
            return TokenAccess::ReauthorizationRequired(ReauthReason::NoRefreshToken);
        }
        if let Some(backoff) = &self.backoff {
            if now < backoff.retry_at {
                if usable {
                    return TokenAccess::Ready(tokens.access_token.clone());
                }
                return TokenAccess::BackingOff {
                    retry_at: backoff.retry_at,
                    attempts: backoff.attempts,
                    error: backoff.error.clone(),
                };
            }
        }
        self.start_refresh();
        TokenAccess::Pending
    }

    /// Until when the access token [`access_token`](Self::access_token) just answered may be
    /// reused without asking again (a driver's cache): its refresh time while it is fresh;
    /// inside the refresh margin, the next retry or [`TokenSet::usable_until`], whichever comes
    /// first. `None` when no token can be handed out now.
    pub fn hand_out_until(&self, now: UnixTime) -> Option<UnixTime> {
        let skew = self.config.refresh_skew();
        let tokens = self.tokens.as_ref()?;
        if self.access_rejected {
            return None;
        }
        if tokens.is_fresh(now, skew) {
            return Some(tokens.refresh_at(skew));
        }
        let busy = self.refresh_in_flight.is_some() || self.grant_in_flight.is_some();
        if busy || self.reauth.is_some() || !tokens.is_usable(now, skew) {
            return None;
        }
        let usable_until = tokens.usable_until(skew);
        match (&self.backoff, &tokens.refresh_token) {
            (_, None) => Some(usable_until),
            (Some(backoff), Some(_)) if now < backoff.retry_at => {
                Some(backoff.retry_at.min(usable_until))
            }
            _ => None,
        }
    }

    /// Forces a refresh now (ignoring freshness and backoff). Returns `false` when no refresh
    /// can start: one is already in flight, or there is no refresh token, or re-authorization
    /// is required.
    pub fn refresh_now(&mut self) -> bool {
        let has_refresh_token = self
            .tokens
            .as_ref()
            .is_some_and(|t| t.refresh_token.is_some());
        if self.refresh_in_flight.is_some() || self.reauth.is_some() || !has_refresh_token {
            return false;
        }
        self.start_refresh();
        true
    }

    /// Forgets the tokens and anything in progress. Answers to requests already sent are
    /// ignored. (MailUp has no revocation endpoint: logging out is local.)
    pub fn logout(&mut self) {
        self.tokens = None;
        self.access_rejected = false;
        self.pending = None;
        self.refresh_in_flight = None;
        self.grant_in_flight = None;
        self.backoff = None;
        self.outgoing.clear();
        self.reauth = Some(ReauthReason::LoggedOut);
    }

    // ---- outputs -------------------------------------------------------------------------

    /// The next token request to send.
    pub fn poll_request(&mut self) -> Option<TokenRequest> {
        self.outgoing.pop_front()
    }

    /// The next event to act on.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called: the proactive
    /// refresh time (`expires_at - skew`) or the end of a backoff. `None` when nothing is
    /// scheduled.
    pub fn poll_timeout(&self) -> Option<UnixTime> {
        if self.refresh_in_flight.is_some() || self.reauth.is_some() {
            return None;
        }
        let tokens = self.tokens.as_ref()?;
        tokens.refresh_token.as_ref()?;
        match &self.backoff {
            Some(backoff) => Some(backoff.retry_at),
            None if self.access_rejected => Some(tokens.obtained_at),
            None => Some(tokens.refresh_at(self.config.refresh_skew())),
        }
    }

    // ---- internals -----------------------------------------------------------------------

    fn next_id(&mut self) -> RequestId {
        let id = RequestId(self.next_id);
        self.next_id += 1;
        id
    }

    fn refresh_due(&self, now: UnixTime) -> bool {
        self.poll_timeout().is_some_and(|due| now >= due)
    }

    fn start_refresh(&mut self) {
        let Some(refresh_token) = self.tokens.as_ref().and_then(|t| t.refresh_token.as_ref())
        else {
            return;
        };
        let request = refresh_request(&self.config, refresh_token);
        self.refresh_sent_with = Some(refresh_token.clone());
        let id = self.next_id();
        self.refresh_in_flight = Some(id);
        self.outgoing.push_back(TokenRequest {
            id,
            grant: Grant::RefreshToken,
            request,
        });
    }

    fn start_grant(&mut self, grant: Grant, request: HttpRequest) -> RequestId {
        // A new login supersedes an older grant still in flight.
        if let Some((old, _)) = self.grant_in_flight.take() {
            self.outgoing.retain(|r| r.id != old);
        }
        let id = self.next_id();
        self.grant_in_flight = Some((id, grant));
        self.outgoing.push_back(TokenRequest { id, grant, request });
        id
    }

    fn require_reauth(&mut self, reason: ReauthReason) {
        self.reauth = Some(reason.clone());
        self.backoff = None;
        self.events
            .push_back(Event::ReauthorizationRequired(reason));
    }

    fn handle_refresh_result(
        &mut self,
        now: UnixTime,
        result: Result<crate::token::TokenResponse, TokenError>,
    ) {
        match result {
            Ok(response) => {
                let tokens = response.into_token_set(
                    now,
                    self.config.default_expires_in(),
                    self.tokens.as_ref(),
                );
                self.set_tokens(tokens, Grant::RefreshToken);
            }
            // Anything but a rejection keeps the tokens: a transient failure, and also an odd
            // answer (a redirect, a proxy's page, `invalid_request`) that says nothing about
            // the refresh token. Both back off.
            Err(error) if !error.is_rejection() => {
                let attempts = self
                    .backoff
                    .as_ref()
                    .map_or(0, |b| b.attempts)
                    .saturating_add(1);
                let retry_at = now.saturating_add(self.config.backoff().delay(attempts));
                self.backoff = Some(BackoffState {
                    retry_at,
                    attempts,
                    error: error.clone(),
                });
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
                if let Some(old) = self.refresh_in_flight.take() {
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
        self.tokens = Some(tokens.clone());
        self.access_rejected = false;
        self.reauth = None;
        self.backoff = None;
        self.events
            .push_back(Event::TokensChanged { tokens, grant });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::secret::{ClientSecret, RefreshToken};

    fn tokens(access: &str, refresh: &str, expires_at: UnixTime) -> TokenSet {
        TokenSet {
            access_token: AccessToken::new(access),
            refresh_token: Some(RefreshToken::new(refresh)),
            expires_at,
            obtained_at: UnixTime::EPOCH,
            token_type: None,
            scope: None,
        }
    }

    fn session_with(tokens: TokenSet) -> Session {
        let config = ClientConfig::builder("c", ClientSecret::new("s"))
            .build()
            .unwrap();
        Session::with_tokens(config, tokens)
    }

    #[test]
    fn restoring_drops_a_queued_refresh_that_carries_the_old_token() {
        let now = UnixTime::from_secs(10_000);
        let mut session = session_with(tokens("a1", "r1", UnixTime::from_secs(100)));
        assert_eq!(session.access_token(now), TokenAccess::Pending);
        // Another instance rotated the tokens; they are adopted before the refresh is sent.
        session.restore_tokens(tokens(
            "a2",
            "r2",
            now.saturating_add(Duration::from_secs(3600)),
        ));
        assert!(
            session.poll_request().is_none(),
            "the stale refresh must not be sent"
        );
        assert!(!session.is_refreshing());
        assert_eq!(
            session.access_token(now),
            TokenAccess::Ready(AccessToken::new("a2"))
        );
    }

    #[test]
    fn restoring_abandons_a_sent_refresh_of_another_refresh_token() {
        let now = UnixTime::from_secs(10_000);
        let mut session = session_with(tokens("a1", "r1", UnixTime::from_secs(100)));
        assert_eq!(session.access_token(now), TokenAccess::Pending);
        let sent = session.poll_request().unwrap();
        // Another instance rotated r1 to r2; our r1 refresh will be rejected.
        let fresh = now.saturating_add(Duration::from_secs(3600));
        session.restore_tokens(tokens("a2", "r2", fresh));
        assert!(!session.is_refreshing());
        let rejected = r#"{"error":"invalid_grant"}"#;
        session.handle_token_response(
            now,
            sent.id(),
            Ok(HttpResponse::new(http::StatusCode::BAD_REQUEST, rejected)),
        );
        assert_eq!(
            session.reauthorization_reason(),
            None,
            "valid tokens are held"
        );
        assert_eq!(
            session.access_token(now),
            TokenAccess::Ready(AccessToken::new("a2"))
        );
    }

    #[test]
    fn restoring_the_same_refresh_token_keeps_the_sent_refresh() {
        let now = UnixTime::from_secs(10_000);
        let mut session = session_with(tokens("a1", "r1", UnixTime::from_secs(100)));
        assert_eq!(session.access_token(now), TokenAccess::Pending);
        let sent = session.poll_request().unwrap();
        session.restore_tokens(tokens("a1", "r1", UnixTime::from_secs(100)));
        assert!(session.is_refreshing());
        let body = r#"{"access_token":"a3","refresh_token":"r3","expires_in":3600}"#;
        session.handle_token_response(
            now,
            sent.id(),
            Ok(HttpResponse::new(http::StatusCode::OK, body)),
        );
        let current = session.tokens().unwrap();
        assert_eq!(current.refresh_token.as_ref().unwrap().secret(), "r3");
    }

    #[test]
    fn a_recorded_rejection_stops_hand_outs_and_refreshes_until_new_tokens() {
        let now = UnixTime::from_secs(10);
        let mut session = session_with(tokens("a1", "r1", UnixTime::from_secs(3600)));
        session.mark_reauthorization_required(ReauthReason::RejectedEarlier("rejected".into()));
        assert!(matches!(
            session.access_token(now),
            TokenAccess::ReauthorizationRequired(ReauthReason::RejectedEarlier(_))
        ));
        assert!(!session.refresh_now());
        assert!(session.poll_request().is_none());
        assert_eq!(session.poll_timeout(), None);
        session.restore_tokens(tokens("a2", "r2", UnixTime::from_secs(3600)));
        assert_eq!(
            session.access_token(now),
            TokenAccess::Ready(AccessToken::new("a2"))
        );
    }

    #[test]
    fn lost_requests_can_be_forgotten_and_queued_ones_are_kept() {
        let now = UnixTime::from_secs(10_000);
        let mut session = session_with(tokens("a1", "r1", UnixTime::from_secs(100)));
        assert_eq!(session.access_token(now), TokenAccess::Pending);
        session.forget_unanswered_requests();
        assert!(session.is_refreshing(), "still queued: kept");
        let lost = session.poll_request().unwrap();
        session.forget_unanswered_requests();
        assert!(!session.is_refreshing());
        // A new refresh can start; the lost one's late answer is ignored.
        assert_eq!(session.access_token(now), TokenAccess::Pending);
        let retry = session.poll_request().unwrap();
        let late = r#"{"access_token":"late","refresh_token":"late-r"}"#;
        session.handle_token_response(
            now,
            lost.id(),
            Ok(HttpResponse::new(http::StatusCode::OK, late)),
        );
        assert_eq!(
            session.tokens().unwrap().access_token,
            AccessToken::new("a1")
        );
        let body = r#"{"access_token":"a2","refresh_token":"r2"}"#;
        session.handle_token_response(
            now,
            retry.id(),
            Ok(HttpResponse::new(http::StatusCode::OK, body)),
        );
        assert_eq!(
            session.tokens().unwrap().access_token,
            AccessToken::new("a2")
        );
    }

    #[test]
    fn a_recorded_rejection_drops_a_queued_refresh() {
        let now = UnixTime::from_secs(10);
        let mut session = session_with(tokens("a1", "r1", UnixTime::from_secs(3600)));
        session.handle_unauthorized(now, &AccessToken::new("a1"));
        assert!(session.is_refreshing());
        session.mark_reauthorization_required(ReauthReason::RejectedEarlier("x".into()));
        assert!(
            session.poll_request().is_none(),
            "the dead refresh token is not tried"
        );
    }

    #[test]
    fn a_too_large_token_answer_backs_off_and_keeps_the_tokens() {
        use crate::http::{TransportErrorKind, TOKEN_RESPONSE_LIMIT};

        let now = UnixTime::from_secs(10_000);
        let mut session = session_with(tokens("a1", "r1", UnixTime::from_secs(100)));
        assert_eq!(session.access_token(now), TokenAccess::Pending);
        let sent = session.poll_request().unwrap();
        assert_eq!(sent.request().response_limit(), TOKEN_RESPONSE_LIMIT);
        let too_large = TransportError::new(
            TransportErrorKind::ResponseTooLarge,
            "POST http://127.0.0.1:9/Token (more than 65536 bytes)",
        );
        session.handle_token_response(now, sent.id(), Err(too_large));
        assert_eq!(session.reauthorization_reason(), None);
        assert!(matches!(
            session.poll_event(),
            Some(Event::RefreshFailed { attempts: 1, .. })
        ));
        assert_eq!(
            session.tokens().unwrap().refresh_token,
            Some(RefreshToken::new("r1"))
        );
    }

    #[test]
    fn a_401_on_the_current_token_starts_one_refresh() {
        let now = UnixTime::from_secs(10);
        let mut session = session_with(tokens("a1", "r1", UnixTime::from_secs(3600)));
        assert_eq!(
            session.access_token(now),
            TokenAccess::Ready(AccessToken::new("a1"))
        );
        session.handle_unauthorized(now, &AccessToken::new("a1"));
        session.handle_unauthorized(now, &AccessToken::new("a1"));
        assert!(session.poll_request().is_some());
        assert!(
            session.poll_request().is_none(),
            "one refresh for many 401s"
        );
        assert_eq!(session.access_token(now), TokenAccess::Pending);
        assert_eq!(session.state(), SessionState::Refreshing);
    }
}
