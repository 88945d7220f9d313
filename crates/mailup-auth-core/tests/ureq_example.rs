//! The blocking `ureq` example (examples/ureq_blocking.rs) against the emulator over 127.0.0.1:
//! the code exchange from a real LogOn and consent, a refresh that rotates the refresh token,
//! and an API call whose expired token gets one refresh and one retry; a second 401 is an
//! error, not a loop.

#[path = "../examples/ureq_blocking.rs"]
mod example;

use mailup_auth_emulator::{Consent, ScriptedBrowser};
use mailup_auth_emulator::{
    Emulator, Fault, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_PASSWORD, DEFAULT_USERNAME,
};

const REDIRECT: &str = "http://127.0.0.1:8765/callback";

#[test]
fn the_blocking_example_logs_in_refreshes_and_retries_once() {
    // The emulator runs on its own runtime's threads; the example blocks this one.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let emulator = runtime.block_on(Emulator::builder().start()).unwrap();
    let transport = example::UreqTransport::new();
    let mut session = example::session(
        emulator.base_url().as_str(),
        DEFAULT_CLIENT_ID,
        DEFAULT_CLIENT_SECRET,
        REDIRECT,
    )
    .unwrap();

    // 1. The code exchange: the user logs in on the LogOn page and allows.
    let logon = example::logon_url(&mut session, "st4te").unwrap();
    let callback = runtime
        .block_on(ScriptedBrowser::new().authorize(
            &logon,
            DEFAULT_USERNAME,
            DEFAULT_PASSWORD,
            Consent::Allow,
        ))
        .unwrap();
    example::exchange(&mut session, &transport, callback.as_str()).unwrap();
    assert_eq!(emulator.counters().token_authorization_code, 1);
    let first = session.tokens().unwrap().refresh_token.clone().unwrap();

    // 2. A refresh rotates the refresh token: the new one is held, the old one is dead.
    example::refresh(&mut session, &transport).unwrap();
    let second = session.tokens().unwrap().refresh_token.clone().unwrap();
    assert_ne!(first.secret(), second.secret());
    assert!(!emulator.is_refresh_token_live(first.secret()));
    assert!(emulator.is_refresh_token_live(second.secret()));

    // 3. An API call whose token MailUp calls expired: one 401, one refresh, one retry.
    emulator.expire_all_access_tokens();
    let before = emulator.counters();
    let info = example::api_get(&mut session, &transport, "Console/Authentication/Info").unwrap();
    assert_eq!(info["Username"], DEFAULT_USERNAME);
    let after = emulator.counters();
    assert_eq!(after.api_unauthorized - before.api_unauthorized, 1);
    assert_eq!(after.token_refresh_token - before.token_refresh_token, 1);
    assert_eq!(after.api_calls - before.api_calls, 2);

    // 4. A 401 that persists: two attempts and the error, never a third.
    emulator.fail_next_api_requests(3, Fault::Empty401);
    let before = emulator.counters();
    let error =
        example::api_get(&mut session, &transport, "Console/Authentication/Info").unwrap_err();
    assert!(error.to_string().contains("unauthorized"), "{error}");
    assert_eq!(emulator.counters().api_calls - before.api_calls, 2);
    emulator.clear_faults();

    runtime.block_on(emulator.shutdown());
}

#[test]
fn the_adapter_hands_4xx_answers_to_the_core_as_responses() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let emulator = runtime.block_on(Emulator::builder().start()).unwrap();
    let transport = example::UreqTransport::new();
    let request = mailup_auth_core::HttpRequest::new(
        http::Method::GET,
        emulator
            .console_api_base()
            .join("ConsoleService.svc/Console/Authentication/Info")
            .unwrap(),
    );
    let response = transport.send(request).unwrap();
    assert_eq!(response.status, http::StatusCode::UNAUTHORIZED);
    let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(body["ErrorName"], "Unauthorized");
    runtime.block_on(emulator.shutdown());
}
