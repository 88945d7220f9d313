//! Property tests: drive the session through arbitrary interleavings of time, token responses,
//! API 401s, callbacks and user calls, and check the invariants listed in the session module's
//! docs (`src/session.rs`, mirrored in docs/architecture.md) after every step against the
//! reference model the shared [`harness`] keeps.

mod harness;

use std::time::Duration;

use harness::{Action, ExpiresIn, Harness, Reply};
use mailup_auth_core::{SessionState, TokenAccess};
use proptest::prelude::*;

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
