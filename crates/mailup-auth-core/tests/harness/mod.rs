//! The shared driving harness of the core's tests, as quinn-proto's `tests/util.rs` `Pair`: a
//! [`Harness`] holds a [`Session`] on a simulated clock, plays the token endpoint and the API
//! (answers of every kind, stale answers, 401s on current and old tokens), and keeps a small
//! reference model of what a correct session must look like; `Harness::apply` checks the
//! invariants of the session module docs (and docs/architecture.md) after every step.
//!
//! Used by `session_properties.rs` (arbitrary sequences and scenarios) and `session.rs`
//! (single behaviours). Each test binary uses a different part of it.
#![allow(dead_code)]

use std::collections::HashSet;
use std::time::Duration;

use http::StatusCode;
use mailup_auth_core::{
    AccessToken, CsrfState, Event, Grant, HttpResponse, Password, ReauthReason, RequestId, Session,
    SessionState, TokenAccess, TokenRequest, TokenSet, TransportError, TransportErrorKind,
    UnixTime,
};

mod fixtures;
pub(crate) use fixtures::{config, token_set, SKEW};

pub(crate) const STATE: &str = "the-right-state";

#[derive(Clone, Debug)]
pub(crate) enum ExpiresIn {
    Number(u64),
    Text(u64),
    Missing,
}

#[derive(Clone, Debug)]
pub(crate) enum Reply {
    Success {
        rotate: bool,
        expires: ExpiresIn,
    },
    InvalidGrant,
    InvalidClient,
    ServerError(u16),
    Transport,
    Garbage(u8),
    /// An odd refusal that says nothing about the refresh token: a redirect, a proxy's page,
    /// an empty 401, `invalid_request`, an error body with a 200. Never a rejection.
    Odd(u8),
}

#[derive(Clone, Debug)]
pub(crate) enum Action {
    Advance(u64),
    JumpToTimeout,
    AskToken,
    BeginAuthorization,
    CallbackRight,
    CallbackWrongState,
    CallbackDenied,
    PasswordLogin,
    Respond(Reply),
    RespondStale(Reply),
    Api401Current,
    Api401Old,
    ForceRefresh,
    Restore,
    /// Ask for a token (which may queue a refresh) and restore newer tokens before the queued
    /// request is polled: the stale refresh must never be sent.
    AskThenRestore,
    Logout,
}

/// A token set obtained at the epoch, with a refresh token.
pub(crate) fn tokens(access: &str, refresh: &str, expires_at: UnixTime) -> TokenSet {
    token_set(access, Some(refresh), UnixTime::EPOCH, expires_at)
}

/// A session holding `tokens`, with the harness [`config`].
pub(crate) fn session_with(tokens: TokenSet) -> Session {
    Session::with_tokens(config(), tokens)
}

/// The harness: the session under test plus what a correct session must look like.
pub(crate) struct Harness {
    pub(crate) session: Session,
    pub(crate) now: UnixTime,
    pub(crate) counter: u64,
    /// Requests polled and not yet answered, oldest first.
    pub(crate) outstanding: Vec<TokenRequest>,
    /// Ids answered or superseded, for stale replies.
    pub(crate) old_ids: Vec<RequestId>,
    /// Model: the refresh token the session must hold.
    pub(crate) expected_refresh: Option<String>,
    /// Model: tokens the API rejected (never handed out again).
    pub(crate) rejected: HashSet<String>,
    /// Every access token the session ever held, for 401s on old tokens.
    pub(crate) old_access: Vec<String>,
    /// Codes already put in an exchange request.
    pub(crate) exchanged_codes: HashSet<String>,
    /// Model: the refresh token was rejected; no refresh may be sent until a new login/restore.
    pub(crate) refresh_dead: bool,
}

impl Harness {
    pub(crate) fn new() -> Self {
        Self {
            session: Session::new(config()),
            now: UnixTime::from_secs(1_700_000_000),
            counter: 0,
            outstanding: Vec::new(),
            old_ids: Vec::new(),
            expected_refresh: None,
            rejected: HashSet::new(),
            old_access: Vec::new(),
            exchanged_codes: HashSet::new(),
            refresh_dead: false,
        }
    }

    pub(crate) fn fresh(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}-{}", self.counter)
    }

    pub(crate) fn snapshot(&self) -> (SessionState, Option<TokenSet>, Option<UnixTime>) {
        (
            self.session.state(),
            self.session.tokens().cloned(),
            self.session.poll_timeout(),
        )
    }

    pub(crate) fn body_for(&mut self, reply: &Reply) -> Result<HttpResponse, TransportError> {
        let ok = |body: String| Ok(HttpResponse::new(StatusCode::OK, body));
        match reply {
            Reply::Success { rotate, expires } => {
                let access = self.fresh("at");
                let mut body = format!(r#"{{"access_token":"{access}""#);
                if *rotate {
                    body += &format!(r#","refresh_token":"{}""#, self.fresh("rt"));
                }
                match expires {
                    ExpiresIn::Number(n) => body += &format!(r#","expires_in":{n}"#),
                    ExpiresIn::Text(n) => body += &format!(r#","expires_in":"{n}""#),
                    ExpiresIn::Missing => {}
                }
                body += r#","unknown":[1,2]}"#;
                ok(body)
            }
            Reply::InvalidGrant => Ok(HttpResponse::new(
                StatusCode::BAD_REQUEST,
                r#"{"error":"invalid_grant","error_description":"expired"}"#,
            )),
            Reply::InvalidClient => Ok(HttpResponse::new(
                StatusCode::UNAUTHORIZED,
                r#"{"error":"invalid_client"}"#,
            )),
            Reply::ServerError(status) => Ok(HttpResponse::new(
                StatusCode::from_u16(*status).unwrap(),
                "<html>Service Unavailable</html>",
            )),
            Reply::Transport => Err(TransportError::new(
                TransportErrorKind::ConnectionClosed,
                "dropped",
            )),
            Reply::Odd(kind) => {
                let (status, body) = match kind {
                    0 => (302, ""),
                    1 => (307, "<html>moved</html>"),
                    2 => (404, "<html>Not Found</html>"),
                    3 => (403, "<html>Forbidden</html>"),
                    4 => (401, ""),
                    5 => (400, r#"{"error":"invalid_request"}"#),
                    _ => (200, r#"{"error":"invalid_grant"}"#),
                };
                Ok(HttpResponse::new(
                    StatusCode::from_u16(status).unwrap(),
                    body,
                ))
            }
            Reply::Garbage(kind) => ok(match kind {
                0 => String::new(),
                1 => "<html>proxy</html>".into(),
                2 => r#"{"access_token":"trunc"#.into(),
                _ => r#"{"refresh_token":"no-access"}"#.into(),
            }),
        }
    }

    /// Expected refresh token after a successful answer to a request of `grant`.
    pub(crate) fn parse_refresh(response: &HttpResponse) -> Option<String> {
        let value: serde_json::Value = serde_json::from_slice(&response.body).ok()?;
        value.get("refresh_token")?.as_str().map(str::to_owned)
    }

    pub(crate) fn drain(&mut self) {
        while let Some(request) = self.session.poll_request() {
            let form: Vec<(String, String)> = form_urlencoded::parse(request.request().body())
                .into_owned()
                .collect();
            let field = |k: &str| {
                form.iter()
                    .find(|(key, _)| key == k)
                    .map(|(_, v)| v.clone())
            };
            assert_eq!(
                field("grant_type").as_deref(),
                Some(request.grant().as_str())
            );
            match request.grant() {
                Grant::AuthorizationCode => {
                    let code = field("code").expect("exchange carries the code");
                    assert!(
                        self.exchanged_codes.insert(code),
                        "a code was exchanged twice"
                    );
                }
                Grant::RefreshToken => {
                    assert!(
                        !self.refresh_dead,
                        "refresh sent after the refresh token was rejected"
                    );
                    assert_eq!(
                        field("refresh_token"),
                        self.expected_refresh,
                        "refresh must use the newest refresh token"
                    );
                }
                _ => {}
            }
            self.outstanding.push(request);
        }
        while let Some(event) = self.session.poll_event() {
            if let Event::TokensChanged { tokens, .. } = event {
                self.old_access
                    .push(tokens.access_token.secret().to_owned());
            }
        }
    }

    pub(crate) fn outstanding_refreshes(&self) -> usize {
        // Only those the session still considers current: the one it says is in flight.
        self.outstanding
            .iter()
            .filter(|r| r.grant() == Grant::RefreshToken)
            .count()
    }

    pub(crate) fn apply(&mut self, action: Action) {
        let now = self.now;
        match action {
            Action::Advance(secs) => self.now = self.now.saturating_add(Duration::from_secs(secs)),
            Action::JumpToTimeout => {
                if let Some(at) = self.session.poll_timeout() {
                    self.now = self.now.max(at);
                }
                self.session.handle_timeout(self.now);
            }
            Action::AskToken => {
                let answer = self.session.access_token_or_refresh(now);
                match &answer {
                    TokenAccess::Ready(token) => {
                        let tokens = self.session.tokens().expect("ready implies tokens");
                        assert_eq!(&tokens.access_token, token);
                        // Never at or past expiry minus the safety margin.
                        assert!(
                            now < tokens.usable_until(SKEW),
                            "token handed out at or past usable_until"
                        );
                        assert!(now < tokens.expires_at, "an expired token was handed out");
                        // Inside the refresh margin only while a refresh is failing (backing
                        // off) or impossible (no refresh token).
                        if now >= tokens.refresh_at(SKEW) {
                            let backing_off =
                                self.session.poll_timeout().is_some_and(|retry| retry > now);
                            assert!(
                                backing_off || tokens.refresh_token.is_none(),
                                "token handed out inside the refresh margin without a failed refresh"
                            );
                        }
                        let until = self.session.hand_out_until(now).expect("handed out");
                        assert!(until > now && until <= tokens.usable_until(SKEW));
                        assert!(
                            !self.rejected.contains(token.secret()),
                            "a rejected token was handed out"
                        );
                    }
                    TokenAccess::Pending => assert!(
                        self.session.is_refreshing()
                            || self.session.state() == SessionState::ExchangingCode
                    ),
                    TokenAccess::BackingOff { retry_at, .. } => assert!(*retry_at > now),
                    TokenAccess::ReauthorizationRequired(_) => {}
                }
            }
            Action::BeginAuthorization => {
                let url = self
                    .session
                    .begin_authorization(now, CsrfState::new(STATE), None)
                    .unwrap();
                assert!(!url.as_str().contains("client-secret"));
            }
            Action::CallbackRight => {
                let code = self.fresh("code");
                let pending = self.session.pending_authorization().cloned();
                let live = pending.as_ref().is_some_and(|p| now < p.expires_at());
                let result = self
                    .session
                    .handle_callback(now, &format!("code={code}&state={STATE}"));
                assert_eq!(result.is_ok(), live);
                if live {
                    assert!(self.session.pending_authorization().is_none());
                } else if pending.is_some() {
                    // An expired authorization is refused and changes nothing.
                    assert_eq!(
                        result.unwrap_err(),
                        mailup_auth_core::CallbackError::Expired
                    );
                }
            }
            Action::CallbackWrongState | Action::CallbackDenied => {
                let before = self.snapshot();
                let pending_before = self.session.pending_authorization().cloned();
                let callback = match action {
                    Action::CallbackWrongState => {
                        format!("code={}&state=forged", self.fresh("code"))
                    }
                    _ => format!("error=access_denied&state={STATE}"),
                };
                assert!(self.session.handle_callback(now, &callback).is_err());
                assert_eq!(
                    self.snapshot(),
                    before,
                    "a rejected callback changed the session"
                );
                assert_eq!(
                    self.session.pending_authorization().cloned(),
                    pending_before
                );
                assert!(self.session.poll_request().is_none());
            }
            Action::PasswordLogin => {
                self.session
                    .login_with_password("m1234", &Password::new("pw"));
            }
            Action::Respond(reply) => {
                if self.outstanding.is_empty() {
                    return;
                }
                let request = self.outstanding.remove(0);
                let response = self.body_for(&reply);
                let tokens_before = self.session.tokens().cloned();
                let was_current = self.is_current(&request);
                self.session
                    .handle_token_response(now, request.id(), response.clone());
                self.old_ids.push(request.id());
                if !was_current {
                    assert_eq!(
                        self.session.tokens().cloned(),
                        tokens_before,
                        "a stale answer changed the tokens"
                    );
                    return;
                }
                let success = matches!(reply, Reply::Success { .. });
                match (request.grant(), success) {
                    (Grant::RefreshToken, true) => {
                        if let Some(rotated) = Self::parse_refresh(response.as_ref().unwrap()) {
                            self.expected_refresh = Some(rotated);
                        }
                        // Exchange/password grants in flight stay outstanding.
                    }
                    (_, true) => {
                        self.expected_refresh = Self::parse_refresh(response.as_ref().unwrap());
                        self.refresh_dead = false;
                        // A refresh of the previous login is superseded.
                        self.outstanding
                            .retain(|r| r.grant() != Grant::RefreshToken);
                    }
                    (Grant::RefreshToken, false) => {
                        // Only invalid_grant / invalid_client end the session; anything else
                        // (transient or odd) keeps the tokens and backs off.
                        let transient = matches!(
                            reply,
                            Reply::ServerError(_)
                                | Reply::Transport
                                | Reply::Garbage(_)
                                | Reply::Odd(_)
                        );
                        assert_eq!(
                            self.session.tokens().cloned(),
                            tokens_before,
                            "a failed refresh changed the tokens"
                        );
                        if transient {
                            let retry = self.session.poll_timeout().expect("backoff scheduled");
                            assert!(retry > now, "transient failure must back off");
                        } else {
                            // A login already under way is reported first.
                            assert!(matches!(
                                self.session.state(),
                                SessionState::ReauthorizationRequired
                                    | SessionState::AwaitingCallback
                                    | SessionState::ExchangingCode
                            ));
                            assert!(matches!(
                                self.session.reauthorization_reason(),
                                Some(
                                    ReauthReason::RefreshRejected(_)
                                        | ReauthReason::ClientRejected(_)
                                )
                            ));
                            self.refresh_dead = true;
                        }
                    }
                    (_, false) => {
                        assert_eq!(
                            self.session.tokens().cloned(),
                            tokens_before,
                            "a failed login changed the tokens"
                        );
                    }
                }
            }
            Action::RespondStale(reply) => {
                if let Some(id) = self.old_ids.last().copied() {
                    let before = self.snapshot();
                    let response = self.body_for(&reply);
                    self.session.handle_token_response(now, id, response);
                    assert_eq!(
                        self.snapshot(),
                        before,
                        "a stale answer changed the session"
                    );
                }
            }
            Action::Api401Current => {
                if let Some(tokens) = self.session.tokens() {
                    let token = tokens.access_token.clone();
                    self.rejected.insert(token.secret().to_owned());
                    self.session.handle_unauthorized(now, &token);
                }
            }
            Action::Api401Old => {
                if let Some(old) = self.old_access.first().cloned() {
                    let current = self
                        .session
                        .tokens()
                        .map(|t| t.access_token.secret().to_owned());
                    if current.as_deref() != Some(old.as_str()) {
                        let before = self.snapshot();
                        self.session
                            .handle_unauthorized(now, &AccessToken::new(old));
                        assert_eq!(
                            self.snapshot(),
                            before,
                            "a 401 for an old token changed the session"
                        );
                    }
                }
            }
            Action::ForceRefresh => {
                let _ = self.session.refresh_now();
            }
            Action::AskThenRestore => {
                let _ = self.session.access_token_or_refresh(now);
                self.apply(Action::Restore);
                return;
            }
            Action::Restore => {
                let access = self.fresh("restored-at");
                let refresh = self.fresh("restored-rt");
                self.session.restore_tokens(token_set(
                    &access,
                    Some(&refresh),
                    now,
                    now.saturating_add(Duration::from_secs(3600)),
                ));
                self.old_access.push(access);
                self.expected_refresh = Some(refresh);
                self.refresh_dead = false;
                // Refreshes carrying the old refresh token are abandoned: their answers are
                // stale from now on.
                let (abandoned, kept): (Vec<_>, Vec<_>) = self
                    .outstanding
                    .drain(..)
                    .partition(|r| r.grant() == Grant::RefreshToken);
                self.outstanding = kept;
                self.old_ids.extend(abandoned.iter().map(TokenRequest::id));
                assert!(!self.session.is_refreshing());
            }
            Action::Logout => {
                self.session.logout();
                self.old_ids
                    .extend(self.outstanding.drain(..).map(|r| r.id()));
                self.expected_refresh = None;
                assert_eq!(self.session.state(), SessionState::NoTokens);
                assert!(matches!(
                    self.session.access_token_or_refresh(now),
                    TokenAccess::ReauthorizationRequired(ReauthReason::LoggedOut)
                ));
            }
        }
        self.drain();
        self.check();
    }

    pub(crate) fn is_current(&self, request: &TokenRequest) -> bool {
        // The harness mirrors the session's rules: after logout nothing is current (cleared
        // above); a refresh is superseded by a successful login (removed above); a newer grant
        // supersedes an older one.
        match request.grant() {
            Grant::RefreshToken => self.session.is_refreshing(),
            _ => {
                self.session.state() == SessionState::ExchangingCode
                    && !self
                        .outstanding
                        .iter()
                        .any(|r| r.grant() != Grant::RefreshToken && r.id() > request.id())
            }
        }
    }

    pub(crate) fn check(&self) {
        assert!(
            self.outstanding_refreshes() <= 1,
            "more than one refresh in flight"
        );
        if let Some(tokens) = self.session.tokens() {
            assert_eq!(
                tokens.refresh_token.as_ref().map(|t| t.secret().to_owned()),
                self.expected_refresh,
                "the refresh token is not the newest one"
            );
        }
        if self.session.is_refreshing() {
            assert!(self.session.poll_timeout().is_none());
        }
    }
}
