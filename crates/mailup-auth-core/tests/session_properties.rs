//! Property tests: drive the session through arbitrary interleavings of time, token responses,
//! API 401s, callbacks and user calls, and check DESIGN.md's invariants after every step
//! against a small reference model kept by the harness.

use std::collections::HashSet;
use std::time::Duration;

use http::StatusCode;
use mailup_auth_core::{
    AccessToken, Backoff, ClientConfig, ClientSecret, CsrfState, Event, Grant, HttpResponse,
    Password, ReauthReason, RefreshToken, RequestId, Session, SessionState, TokenAccess,
    TokenRequest, TokenSet, TransportError, TransportErrorKind, UnixTime,
};
use proptest::prelude::*;

const SKEW: Duration = Duration::from_secs(60);
const STATE: &str = "the-right-state";

#[derive(Clone, Debug)]
enum ExpiresIn {
    Number(u64),
    Text(u64),
    Missing,
}

#[derive(Clone, Debug)]
enum Reply {
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
enum Action {
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

fn expires() -> impl Strategy<Value = ExpiresIn> {
    prop_oneof![
        (0u64..7200).prop_map(ExpiresIn::Number),
        (0u64..7200).prop_map(ExpiresIn::Text),
        Just(ExpiresIn::Missing),
    ]
}

fn reply() -> impl Strategy<Value = Reply> {
    prop_oneof![
        4 => (any::<bool>(), expires()).prop_map(|(rotate, expires)| Reply::Success { rotate, expires }),
        1 => Just(Reply::InvalidGrant),
        1 => Just(Reply::InvalidClient),
        1 => prop_oneof![Just(500u16), Just(502), Just(503), Just(429)].prop_map(Reply::ServerError),
        1 => Just(Reply::Transport),
        1 => (0u8..4).prop_map(Reply::Garbage),
        1 => (0u8..7).prop_map(Reply::Odd),
    ]
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        3 => (0u64..4000).prop_map(Action::Advance),
        2 => Just(Action::JumpToTimeout),
        4 => Just(Action::AskToken),
        1 => Just(Action::BeginAuthorization),
        2 => Just(Action::CallbackRight),
        1 => Just(Action::CallbackWrongState),
        1 => Just(Action::CallbackDenied),
        1 => Just(Action::PasswordLogin),
        5 => reply().prop_map(Action::Respond),
        1 => reply().prop_map(Action::RespondStale),
        2 => Just(Action::Api401Current),
        1 => Just(Action::Api401Old),
        1 => Just(Action::ForceRefresh),
        1 => Just(Action::Restore),
        1 => Just(Action::AskThenRestore),
        1 => Just(Action::Logout),
    ]
}

/// The harness: the session under test plus what a correct session must look like.
struct Harness {
    session: Session,
    now: UnixTime,
    counter: u64,
    /// Requests polled and not yet answered, oldest first.
    outstanding: Vec<TokenRequest>,
    /// Ids answered or superseded, for stale replies.
    old_ids: Vec<RequestId>,
    /// Model: the refresh token the session must hold.
    expected_refresh: Option<String>,
    /// Model: tokens the API rejected (never handed out again).
    rejected: HashSet<String>,
    /// Every access token the session ever held, for 401s on old tokens.
    old_access: Vec<String>,
    /// Codes already put in an exchange request.
    exchanged_codes: HashSet<String>,
    /// Model: the refresh token was rejected; no refresh may be sent until a new login/restore.
    refresh_dead: bool,
}

impl Harness {
    fn new() -> Self {
        let config = ClientConfig::builder("client", ClientSecret::new("client-secret"))
            .redirect_uri("http://127.0.0.1:8400/callback")
            .auth_base("http://127.0.0.1:1")
            .refresh_skew(SKEW)
            .backoff(Backoff {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(30),
            })
            .build()
            .unwrap();
        Self {
            session: Session::new(config),
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

    fn fresh(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}-{}", self.counter)
    }

    fn snapshot(&self) -> (SessionState, Option<TokenSet>, Option<UnixTime>) {
        (
            self.session.state(),
            self.session.tokens().cloned(),
            self.session.poll_timeout(),
        )
    }

    fn body_for(&mut self, reply: &Reply) -> Result<HttpResponse, TransportError> {
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
    fn parse_refresh(response: &HttpResponse) -> Option<String> {
        let value: serde_json::Value = serde_json::from_slice(&response.body).ok()?;
        value.get("refresh_token")?.as_str().map(str::to_owned)
    }

    fn drain(&mut self) {
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

    fn outstanding_refreshes(&self) -> usize {
        // Only those the session still considers current: the one it says is in flight.
        self.outstanding
            .iter()
            .filter(|r| r.grant() == Grant::RefreshToken)
            .count()
    }

    fn apply(&mut self, action: Action) {
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
                self.session.restore_tokens(TokenSet {
                    access_token: AccessToken::new(access.clone()),
                    refresh_token: Some(RefreshToken::new(refresh.clone())),
                    expires_at: now.saturating_add(Duration::from_secs(3600)),
                    obtained_at: now,
                    token_type: None,
                    scope: None,
                });
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

    fn is_current(&self, request: &TokenRequest) -> bool {
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

    fn check(&self) {
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

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn session_invariants_hold_for_any_sequence(actions in prop::collection::vec(action(), 1..60)) {
        let mut harness = Harness::new();
        for action in actions {
            harness.apply(action);
        }
    }
}

/// Deterministic simulation on a clock that jumps straight to the next `poll_timeout`, with a
/// server that always answers: a session lives through a day of proactive refreshes.
#[test]
fn a_day_of_proactive_refreshes_on_a_simulated_clock() {
    let mut harness = Harness::new();
    harness.apply(Action::BeginAuthorization);
    harness.apply(Action::CallbackRight);
    harness.apply(Action::Respond(Reply::Success {
        rotate: true,
        expires: ExpiresIn::Number(3600),
    }));
    let start = harness.now;
    let mut refreshes = 0;
    while harness.now < start.saturating_add(Duration::from_secs(24 * 3600)) {
        harness.apply(Action::JumpToTimeout);
        harness.apply(Action::Respond(Reply::Success {
            rotate: true,
            expires: ExpiresIn::Number(3600),
        }));
        refreshes += 1;
        assert!(refreshes < 100, "bounded loop");
    }
    // One refresh every 3540 s (3600 - 60 s skew).
    assert_eq!(refreshes, 25);
    assert!(matches!(
        harness.session.access_token_or_refresh(harness.now),
        TokenAccess::Ready(_)
    ));
}

/// The hardening rule: the skew says when to start refreshing, not when a token stops being
/// usable. With 57 s left and a failing token endpoint, the current token is served until a
/// few seconds before it expires, and then no longer.
#[test]
fn a_still_valid_token_is_served_while_the_refresh_fails() {
    let mut harness = Harness::new();
    harness.apply(Action::PasswordLogin);
    harness.apply(Action::Respond(Reply::Success {
        rotate: true,
        expires: ExpiresIn::Number(3600),
    }));
    let token = harness.session.tokens().unwrap().access_token.clone();
    harness.apply(Action::Advance(3600 - 57));
    // Inside the margin: a refresh starts and the caller waits for it.
    assert_eq!(
        harness.session.access_token_or_refresh(harness.now),
        TokenAccess::Pending
    );
    harness.outstanding.extend(harness.session.poll_request());
    harness.apply(Action::Respond(Reply::ServerError(503)));
    // It failed: the current token is served, until the retry.
    assert_eq!(
        harness.session.access_token_or_refresh(harness.now),
        TokenAccess::Ready(token.clone())
    );
    let until = harness.session.hand_out_until(harness.now).unwrap();
    assert_eq!(until, harness.now.saturating_add(Duration::from_secs(1)));
    // An odd answer (a proxy's 404 page) is no different: tokens kept, no re-login.
    harness.now = until;
    assert_eq!(
        harness.session.access_token_or_refresh(harness.now),
        TokenAccess::Pending
    );
    harness.outstanding.extend(harness.session.poll_request());
    harness.apply(Action::Respond(Reply::Odd(2)));
    assert_eq!(harness.session.reauthorization_reason(), None);
    assert_eq!(
        harness.session.access_token_or_refresh(harness.now),
        TokenAccess::Ready(token.clone())
    );
    // Five seconds before expiry it is no longer handed out.
    let expires_at = harness.session.tokens().unwrap().expires_at;
    harness.now = expires_at.saturating_sub(Duration::from_secs(5));
    assert!(!matches!(
        harness.session.access_token_or_refresh(harness.now),
        TokenAccess::Ready(_)
    ));
}

/// Tokens that live shorter than the skew: the effective skew is half their lifetime, so they
/// are fresh on arrival and refreshed half-way.
#[test]
fn short_lived_tokens_are_fresh_on_arrival() {
    let mut harness = Harness::new();
    harness.apply(Action::PasswordLogin);
    harness.apply(Action::Respond(Reply::Success {
        rotate: true,
        expires: ExpiresIn::Number(30),
    }));
    let obtained = harness.now;
    assert!(matches!(
        harness.session.access_token_or_refresh(harness.now),
        TokenAccess::Ready(_)
    ));
    assert_eq!(
        harness.session.poll_timeout(),
        Some(obtained.saturating_add(Duration::from_secs(15)))
    );
}

#[test]
fn invalid_grant_requires_reauthorization_and_never_loops() {
    let mut harness = Harness::new();
    harness.apply(Action::PasswordLogin);
    harness.apply(Action::Respond(Reply::Success {
        rotate: true,
        expires: ExpiresIn::Number(100),
    }));
    harness.apply(Action::Advance(100));
    harness.apply(Action::AskToken);
    harness.apply(Action::Respond(Reply::InvalidGrant));
    for _ in 0..10 {
        harness.apply(Action::AskToken);
        harness.apply(Action::JumpToTimeout);
        harness.apply(Action::Api401Current);
    }
    assert!(
        harness.outstanding.is_empty(),
        "no request after invalid_grant"
    );
    assert_eq!(
        harness.session.state(),
        SessionState::ReauthorizationRequired
    );
}

#[test]
fn transient_failures_back_off_exponentially_and_keep_tokens() {
    let mut harness = Harness::new();
    harness.apply(Action::PasswordLogin);
    harness.apply(Action::Respond(Reply::Success {
        rotate: true,
        expires: ExpiresIn::Number(3600),
    }));
    let tokens = harness.session.tokens().cloned();
    harness.apply(Action::Advance(3600));
    let mut delays = Vec::new();
    for _ in 0..7 {
        harness.apply(Action::AskToken);
        let failed_at = harness.now;
        harness.apply(Action::Respond(Reply::ServerError(503)));
        let retry = harness.session.poll_timeout().unwrap();
        delays.push(retry.duration_since(failed_at).as_secs());
        harness.now = retry;
    }
    assert_eq!(delays, vec![1, 2, 4, 8, 16, 30, 30]);
    assert_eq!(harness.session.tokens().cloned(), tokens);
    // Expired: the failing refreshes never made it hand the dead token out.
    assert!(matches!(
        harness.session.access_token_or_refresh(harness.now),
        TokenAccess::BackingOff { .. } | TokenAccess::Pending
    ));
    harness.outstanding.extend(harness.session.poll_request());
    harness.apply(Action::AskToken);
    harness.apply(Action::Respond(Reply::Success {
        rotate: false,
        expires: ExpiresIn::Missing,
    }));
    assert!(matches!(
        harness.session.access_token_or_refresh(harness.now),
        TokenAccess::Ready(_)
    ));
    // Missing expires_in: the default 3600 s.
    let tokens = harness.session.tokens().unwrap();
    assert_eq!(
        tokens.expires_at.duration_since(tokens.obtained_at),
        Duration::from_secs(3600)
    );
}
