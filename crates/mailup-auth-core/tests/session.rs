//! Single behaviours of the session, each driven by hand through the shared [`harness`]'s
//! helpers: restoring tokens while a refresh is queued or sent, recorded rejections, lost
//! requests, odd answers, 401s, and the typed refusals of `refresh_now`.

mod harness;

use std::time::Duration;

use harness::{config, session_with, tokens};
use mailup_auth_core::{
    AccessToken, Event, HttpResponse, ReauthReason, RefreshNotStarted, RefreshToken, Session,
    SessionState, TokenAccess, TransportError, UnixTime,
};

#[test]
fn restoring_drops_a_queued_refresh_that_carries_the_old_token() {
    let now = UnixTime::from_secs(10_000);
    let mut session = session_with(tokens("a1", "r1", UnixTime::from_secs(100)));
    assert_eq!(session.access_token_or_refresh(now), TokenAccess::Pending);
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
        session.access_token_or_refresh(now),
        TokenAccess::Ready(AccessToken::new("a2"))
    );
}

#[test]
fn restoring_abandons_a_sent_refresh_of_another_refresh_token() {
    let now = UnixTime::from_secs(10_000);
    let mut session = session_with(tokens("a1", "r1", UnixTime::from_secs(100)));
    assert_eq!(session.access_token_or_refresh(now), TokenAccess::Pending);
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
        session.access_token_or_refresh(now),
        TokenAccess::Ready(AccessToken::new("a2"))
    );
}

#[test]
fn restoring_the_same_refresh_token_keeps_the_sent_refresh() {
    let now = UnixTime::from_secs(10_000);
    let mut session = session_with(tokens("a1", "r1", UnixTime::from_secs(100)));
    assert_eq!(session.access_token_or_refresh(now), TokenAccess::Pending);
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
        session.access_token_or_refresh(now),
        TokenAccess::ReauthorizationRequired(ReauthReason::RejectedEarlier(_))
    ));
    assert!(matches!(
        session.refresh_now(),
        Err(RefreshNotStarted::ReauthorizationRequired(
            ReauthReason::RejectedEarlier(_)
        ))
    ));
    assert!(session.poll_request().is_none());
    assert_eq!(session.poll_timeout(), None);
    session.restore_tokens(tokens("a2", "r2", UnixTime::from_secs(3600)));
    assert_eq!(
        session.access_token_or_refresh(now),
        TokenAccess::Ready(AccessToken::new("a2"))
    );
}

#[test]
fn lost_requests_can_be_forgotten_and_queued_ones_are_kept() {
    let now = UnixTime::from_secs(10_000);
    let mut session = session_with(tokens("a1", "r1", UnixTime::from_secs(100)));
    assert_eq!(session.access_token_or_refresh(now), TokenAccess::Pending);
    session.forget_unanswered_requests();
    assert!(session.is_refreshing(), "still queued: kept");
    let lost = session.poll_request().unwrap();
    session.forget_unanswered_requests();
    assert!(!session.is_refreshing());
    // A new refresh can start; the lost one's late answer is ignored.
    assert_eq!(session.access_token_or_refresh(now), TokenAccess::Pending);
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
    use mailup_auth_core::{TransportErrorKind, TOKEN_RESPONSE_LIMIT};

    let now = UnixTime::from_secs(10_000);
    let mut session = session_with(tokens("a1", "r1", UnixTime::from_secs(100)));
    assert_eq!(session.access_token_or_refresh(now), TokenAccess::Pending);
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
        session.access_token_or_refresh(now),
        TokenAccess::Ready(AccessToken::new("a1"))
    );
    session.handle_unauthorized(now, &AccessToken::new("a1"));
    session.handle_unauthorized(now, &AccessToken::new("a1"));
    assert!(session.poll_request().is_some());
    assert!(
        session.poll_request().is_none(),
        "one refresh for many 401s"
    );
    assert_eq!(session.access_token_or_refresh(now), TokenAccess::Pending);
    assert_eq!(session.state(), SessionState::Refreshing);
}

#[test]
fn refresh_now_reports_why_it_did_not_start_and_changes_nothing() {
    let now = UnixTime::from_secs(10);
    let mut session = Session::new(config());
    assert_eq!(
        session.refresh_now(),
        Err(RefreshNotStarted::ReauthorizationRequired(
            ReauthReason::NoTokens
        ))
    );
    let mut no_refresh = tokens("a1", "unused", UnixTime::from_secs(3600));
    no_refresh.refresh_token = None;
    let mut session = Session::with_tokens(config(), no_refresh);
    assert_eq!(
        session.refresh_now(),
        Err(RefreshNotStarted::NoRefreshToken)
    );
    assert!(session.poll_request().is_none());

    let mut session = session_with(tokens("a1", "r1", UnixTime::from_secs(3600)));
    let id = session.refresh_now().unwrap();
    assert_eq!(
        session.refresh_now(),
        Err(RefreshNotStarted::AlreadyInFlight)
    );
    assert_eq!(session.poll_request().map(|r| r.id()), Some(id));
    assert!(session.poll_request().is_none(), "one refresh, not two");
    assert_eq!(
        session.access_token_or_refresh(now),
        TokenAccess::Ready(AccessToken::new("a1")),
        "a forced refresh does not stop a fresh token from being served"
    );
}

#[test]
fn the_last_refresh_error_stays_visible_while_the_retry_is_in_flight() {
    let now = UnixTime::from_secs(10_000);
    let mut session = session_with(tokens("a1", "r1", UnixTime::from_secs(100)));
    assert_eq!(session.access_token_or_refresh(now), TokenAccess::Pending);
    let first = session.poll_request().unwrap();
    session.handle_token_response(
        now,
        first.id(),
        Ok(HttpResponse::new(http::StatusCode::SERVICE_UNAVAILABLE, "")),
    );
    assert!(session.last_refresh_error().is_some());
    let retry_at = session.poll_timeout().unwrap();
    session.handle_timeout(retry_at);
    assert_eq!(session.state(), SessionState::Refreshing);
    assert!(session.last_refresh_error().is_some());
    let second = session.poll_request().unwrap();
    session.handle_token_response(
        retry_at,
        second.id(),
        Ok(HttpResponse::new(http::StatusCode::SERVICE_UNAVAILABLE, "")),
    );
    let events: Vec<Event> = std::iter::from_fn(|| session.poll_event()).collect();
    assert!(
        matches!(
            events.last(),
            Some(Event::RefreshFailed { attempts: 2, .. })
        ),
        "the backoff keeps counting across the retry: {events:?}"
    );
}
