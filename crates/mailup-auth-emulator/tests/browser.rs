//! The scripted browser against the emulator, end to end, including a loopback redirect target.
#![cfg(feature = "browser")]

mod common;

use axum::extract::RawQuery;
use axum::routing::get;
use axum::Router;
use common::*;
use mailup_auth_emulator::{BrowserError, Consent, ScriptedBrowser, Step};
use mailup_auth_emulator::{Emulator, DEFAULT_CLIENT_ID, DEFAULT_PASSWORD, DEFAULT_USERNAME};

/// A loopback "application" that echoes its callback query string.
async fn callback_server() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app =
        Router::new().route(
            "/callback",
            get(|RawQuery(q): RawQuery| async move {
                format!("callback got {}", q.unwrap_or_default())
            }),
        );
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/callback"), task)
}

#[tokio::test]
async fn allow_returns_the_unfollowed_redirect_and_follow_reaches_the_app() {
    let emu = Emulator::builder().start().await.unwrap();
    let (redirect, server) = callback_server().await;
    let logon = emu.authorize_url(DEFAULT_CLIENT_ID, &redirect, "st-1");
    let browser = ScriptedBrowser::new();
    let location = browser
        .authorize(&logon, DEFAULT_USERNAME, DEFAULT_PASSWORD, Consent::Allow)
        .await
        .unwrap();
    assert!(location.as_str().starts_with(&redirect));
    assert_eq!(query_param(&location, "state").as_deref(), Some("st-1"));
    let code = query_param(&location, "code").unwrap();
    let followed = browser.follow(&location).await.unwrap();
    assert_eq!(followed.status, 200);
    assert!(followed.body.contains(&code));
    // The code is still good: following did not redeem it.
    let (status, _) = token_post(
        &emu,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &redirect),
        ],
    )
    .await;
    assert_eq!(status, 200);
    server.abort();
}

#[tokio::test]
async fn deny_returns_access_denied() {
    let emu = Emulator::builder().start().await.unwrap();
    let logon = emu.authorize_url(DEFAULT_CLIENT_ID, REDIRECT, "st-2");
    let location = ScriptedBrowser::new()
        .authorize(&logon, DEFAULT_USERNAME, DEFAULT_PASSWORD, Consent::Deny)
        .await
        .unwrap();
    assert_eq!(
        query_param(&location, "error").as_deref(),
        Some("access_denied")
    );
    assert_eq!(query_param(&location, "state").as_deref(), Some("st-2"));
}

#[tokio::test]
async fn typed_errors() {
    let emu = Emulator::builder().start().await.unwrap();
    let browser = ScriptedBrowser::new();
    let logon = emu.authorize_url(DEFAULT_CLIENT_ID, REDIRECT, "s");
    let error = browser
        .authorize(&logon, DEFAULT_USERNAME, "wrong", Consent::Allow)
        .await
        .unwrap_err();
    match error {
        BrowserError::LoginRejected { message } => {
            assert!(message.contains("Wrong username or password"))
        }
        other => panic!("unexpected {other:?}"),
    }
    let error = browser
        .authorize(
            &emu.authorize_url("nobody", REDIRECT, "s"),
            DEFAULT_USERNAME,
            DEFAULT_PASSWORD,
            Consent::Allow,
        )
        .await
        .unwrap_err();
    match &error {
        BrowserError::UnexpectedStatus {
            step: Step::LogOnPage,
            status: 400,
            message: Some(message),
        } => {
            assert!(message.contains("client_id"), "{message}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(error.to_string().contains("400"));
    // Nothing listening: a transport error.
    let dead = url::Url::parse("http://127.0.0.1:9/Authorization/OAuth/LogOn").unwrap();
    let error = browser
        .authorize(&dead, DEFAULT_USERNAME, DEFAULT_PASSWORD, Consent::Allow)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            BrowserError::Http {
                step: Step::LogOnPage,
                ..
            }
        ),
        "{error:?}"
    );
    // An immediate error redirect is handed back as-is.
    let mut url = emu.logon_url();
    url.query_pairs_mut()
        .append_pair("client_id", DEFAULT_CLIENT_ID)
        .append_pair("response_type", "token")
        .append_pair("redirect_uri", REDIRECT);
    let location = browser
        .authorize(&url, DEFAULT_USERNAME, DEFAULT_PASSWORD, Consent::Allow)
        .await
        .unwrap();
    assert_eq!(
        query_param(&location, "error").as_deref(),
        Some("unsupported_response_type")
    );
}

/// Callers spawn these on multi-threaded runtimes: every public future must be `Send`.
#[test]
fn public_futures_are_send() {
    fn is_send<T: Send>(_: &T) {}
    let browser = ScriptedBrowser::new();
    let url = url::Url::parse("http://127.0.0.1:9/").unwrap();
    let authorize = browser.authorize(&url, "u", "p", Consent::Allow);
    is_send(&authorize);
    let follow = browser.follow(&url);
    is_send(&follow);
    let start = Emulator::builder().start();
    is_send(&start);
}
