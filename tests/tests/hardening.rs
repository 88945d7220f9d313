//! Regression tests for the hardening issue, end to end: the facade against the emulator over
//! 127.0.0.1, with sled stores in temp dirs. Each test names the item it covers.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mailup_auth::core::{CallbackError, ConfigError};
use mailup_auth::{
    ClientSecret, ErrorKind, LoopbackLogin, MailUpClient, ManualClock, SledTokenStore, TokenStore,
};
use mailup_auth_emulator::{Consent, ScriptedBrowser};
use mailup_auth_emulator::{Fault, DEFAULT_PASSWORD, DEFAULT_USERNAME};
use mailup_auth_tests::{builder, emulator_with_lifetime, logged_in};

/// Item 1: plain http to a host that is not a loopback address is a typed configuration error
/// before any I/O, unless explicitly allowed.
#[tokio::test]
async fn plain_http_to_a_remote_host_is_refused_before_any_io() {
    // 192.0.2.1 (TEST-NET-1) is never contacted: the build fails first.
    for builder in [
        MailUpClient::builder("id", ClientSecret::new("s")).auth_base("http://192.0.2.1:9"),
        MailUpClient::builder("id", ClientSecret::new("s")).token_url("http://192.0.2.1/t"),
        MailUpClient::builder("id", ClientSecret::new("s")).api_base("http://192.0.2.1/api"),
        MailUpClient::builder("id", ClientSecret::new("s"))
            .redirect_uri("http://app.example.com/callback"),
        MailUpClient::builder("id", ClientSecret::new("s")).trust_origin("http://192.0.2.1"),
    ] {
        let error = builder.memory_store().build().await.unwrap_err();
        assert!(
            matches!(
                error.kind(),
                ErrorKind::Config(ConfigError::InsecureHttp { .. })
            ),
            "{error:?}"
        );
        assert!(error.to_string().contains("use https"), "{error}");
    }
    // The explicit opt-in, named for what it is.
    MailUpClient::builder("id", ClientSecret::new("s"))
        .auth_base("http://192.0.2.1:9")
        .allow_insecure_http()
        .memory_store()
        .build()
        .await
        .expect("allowed when asked for");
}

/// Item 3: a one-off odd answer from the token endpoint (a misrouted proxy's 404 page, a 400
/// `invalid_request`) records nothing and keeps the tokens; the next refresh works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_off_refusal_does_not_lock_the_profile_out() {
    let emulator = emulator_with_lifetime(Duration::from_secs(3600)).await;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn TokenStore> = Arc::new(SledTokenStore::open(dir.path().join("t")).unwrap());
    let client = logged_in(builder(&emulator).store(store.clone())).await;
    let before = store.load("default").await.unwrap().unwrap();

    for fault in [Fault::NotFoundHtml, Fault::InvalidRequest] {
        emulator.fail_next_token_requests(1, fault);
        let error = client.refresh().await.unwrap_err();
        assert!(
            matches!(error.kind(), ErrorKind::TokenEndpointUnavailable { .. }),
            "{fault:?}: {error:?}"
        );
        assert!(!error.is_reauthorization_required());
        let stored = store.load("default").await.unwrap().unwrap();
        assert_eq!(
            stored.version, before.version,
            "{fault:?}: nothing recorded"
        );
        assert_eq!(stored.value.reauthorization_required, None);
        // The access token is still served.
        client.access_token().await.expect("still valid");
    }
    // The next refresh works with the kept refresh token.
    client.refresh().await.expect("the endpoint works again");
    let after = store.load("default").await.unwrap().unwrap();
    assert!(after.version > before.version);
    assert!(
        emulator.is_refresh_token_live(after.value.tokens.unwrap().refresh_token.unwrap().secret())
    );
}

/// Item 8: a pending web-app authorization completes once, also through a second client that
/// shares the store (another process), and expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_authorization_is_single_use_and_expires() {
    let emulator = emulator_with_lifetime(Duration::from_secs(3600)).await;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn TokenStore> = Arc::new(SledTokenStore::open(dir.path().join("t")).unwrap());
    let redirect = "http://127.0.0.1:9/callback";
    let app = builder(&emulator)
        .redirect_uri(redirect)
        .store(store.clone())
        .build()
        .await
        .unwrap();
    let other_worker = builder(&emulator)
        .redirect_uri(redirect)
        .store(store.clone())
        .profile("other")
        .build()
        .await
        .unwrap();

    let start = app.begin_authorization().unwrap();
    let browser = ScriptedBrowser::new();
    let callback = browser
        .authorize(
            &start.url,
            DEFAULT_USERNAME,
            DEFAULT_PASSWORD,
            Consent::Allow,
        )
        .await
        .unwrap();
    app.complete_authorization(&start.pending, callback.as_str())
        .await
        .expect("first completion");
    for client in [&app, &other_worker] {
        let error = client
            .complete_authorization(&start.pending, callback.as_str())
            .await
            .unwrap_err();
        assert!(
            matches!(
                error.kind(),
                ErrorKind::Callback(CallbackError::AlreadyUsed)
            ),
            "{error:?}"
        );
    }
    assert_eq!(emulator.counters().token_authorization_code, 1);

    // Expiry: a short-lived pending authorization is refused after its time.
    let quick = builder(&emulator)
        .redirect_uri(redirect)
        .authorization_timeout(Duration::from_millis(200))
        .store(store.clone())
        .profile("quick")
        .build()
        .await
        .unwrap();
    let start = quick.begin_authorization().unwrap();
    let callback = browser
        .authorize(
            &start.url,
            DEFAULT_USERNAME,
            DEFAULT_PASSWORD,
            Consent::Allow,
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let error = quick
        .complete_authorization(&start.pending, callback.as_str())
        .await
        .unwrap_err();
    assert!(
        matches!(error.kind(), ErrorKind::Callback(CallbackError::Expired)),
        "{error:?}"
    );
}

/// Item 10: with the token endpoint down and the token inside the refresh margin (57 s left),
/// the still valid token is served (the failure is visible in the status), and only a token at
/// its end becomes an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_still_valid_token_is_served_while_the_token_endpoint_is_down() {
    let emulator = emulator_with_lifetime(Duration::from_secs(3600)).await;
    let clock = Arc::new(ManualClock::starting_now());
    let client = logged_in(
        builder(&emulator)
            .clock(clock.clone())
            // The manual clock does not move while the client backs off: give up after the
            // second failed attempt instead of waiting out the operation's time.
            .max_refresh_attempts(2)
            .memory_store(),
    )
    .await;
    let token = client.access_token().await.unwrap();
    clock.advance(Duration::from_secs(3600 - 57));
    emulator.fail_next_token_requests(1000, Fault::Status503);
    let served = client.access_token().await.expect("still valid: served");
    assert_eq!(served.secret(), token.secret());
    let status = client.status();
    assert!(status.refresh_error.is_some(), "{status:?}");
    // Served from the cache until the next retry, without a request each time.
    let requests = emulator.counters().token_requests;
    for _ in 0..20 {
        assert_eq!(
            client.access_token().await.unwrap().secret(),
            token.secret()
        );
    }
    assert_eq!(emulator.counters().token_requests, requests);
    // Four seconds before expiry (inside the 5 s safety): an error, never the dying token.
    clock.advance(Duration::from_secs(53));
    let error = client.access_token().await.unwrap_err();
    assert!(error.is_transient(), "{error:?}");
    assert!(
        matches!(error.kind(), ErrorKind::TokenEndpointUnavailable { .. }),
        "{error:?}"
    );
    // The endpoint comes back: the next call refreshes.
    emulator.clear_faults();
    clock.advance(Duration::from_secs(1));
    let fresh = client.access_token().await.unwrap();
    assert_ne!(fresh.secret(), token.secret());
}

/// Item 11: a token endpoint that never answers costs one bounded wait, not three attempts of
/// the transport's timeout each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_token_endpoint_is_bounded_by_the_operation_timeout() {
    let emulator = emulator_with_lifetime(Duration::from_secs(3600)).await;
    let client = logged_in(
        builder(&emulator)
            .token_operation_timeout(Duration::from_millis(800))
            .memory_store(),
    )
    .await;
    emulator.set_token_latency(Duration::from_secs(20));
    let started = Instant::now();
    let error = client.refresh().await.unwrap_err();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "bounded: {took:?}");
    assert!(
        error.to_string().contains("did not answer"),
        "says the endpoint did not answer: {error}"
    );
    // The tokens are kept: the (valid) access token is still served.
    client.access_token().await.expect("kept");
    emulator.set_token_latency(Duration::ZERO);
}

/// Item 17: the loopback login's page says "logged in" only after the code exchange stored
/// the tokens; a failed exchange shows a failure page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loopback_page_reflects_the_code_exchange() {
    let emulator = emulator_with_lifetime(Duration::from_secs(3600)).await;
    let client = builder(&emulator).memory_store().build().await.unwrap();
    // The code exchange fails (the token endpoint refuses it).
    emulator.fail_next_token_requests(1, Fault::InvalidRequest);
    let page = Arc::new(Mutex::new(None));
    let seen = page.clone();
    let error = client
        .login_with_loopback(
            LoopbackLogin {
                timeout: Duration::from_secs(20),
                ..LoopbackLogin::default()
            },
            move |url| {
                let url = url.clone();
                *seen.lock().unwrap() = Some(tokio::spawn(async move {
                    let browser = ScriptedBrowser::new();
                    let location = browser
                        .authorize(&url, DEFAULT_USERNAME, DEFAULT_PASSWORD, Consent::Allow)
                        .await
                        .unwrap();
                    browser.follow(&location).await.unwrap()
                }));
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(error.kind(), ErrorKind::Login(_)), "{error:?}");
    let handle = page.lock().unwrap().take().unwrap();
    let shown = handle.await.unwrap();
    assert!(shown.body.contains("Login failed"), "{}", shown.body);
    assert!(!shown.body.contains("logged in"), "{}", shown.body);
}

/// Item 18: tokens that live shorter than the skew just work (effective skew = half the
/// lifetime): no "lower the skew" error, one refresh per half-lifetime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_shorter_than_the_skew_just_work() {
    let emulator = emulator_with_lifetime(Duration::from_secs(2)).await;
    let client = logged_in(
        builder(&emulator)
            .refresh_skew(Duration::from_secs(60))
            .memory_store(),
    )
    .await;
    let first = client.access_token().await.expect("fresh on arrival");
    let _: serde_json::Value = client.get("Console/Authentication/Info").await.unwrap();
    assert_eq!(emulator.counters().token_refresh_token, 0);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = client.access_token().await.expect("refreshed, no error");
    assert_ne!(first.secret(), second.secret());
    assert_eq!(emulator.counters().token_refresh_token, 1);
}

/// Item 15 (library side): clients in one process that share a sled directory refresh one at
/// a time through the store's refresh lease, so a due token causes exactly one refresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_sharing_a_store_directory_refresh_once() {
    let emulator = emulator_with_lifetime(Duration::from_secs(3600)).await;
    let dir = tempfile::tempdir().unwrap();
    let _first = logged_in(builder(&emulator).store_path(dir.path().join("t"))).await;
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(
            builder(&emulator)
                .store_path(dir.path().join("t"))
                .build()
                .await
                .unwrap(),
        );
    }
    emulator.expire_all_access_tokens();
    emulator.set_token_latency(Duration::from_millis(200));
    let calls: Vec<_> = clients
        .iter()
        .cloned()
        .map(|client| {
            tokio::spawn(async move {
                client
                    .get::<serde_json::Value>("Console/Authentication/Info")
                    .await
            })
        })
        .collect();
    for call in calls {
        call.await.unwrap().expect("every call succeeds");
    }
    assert_eq!(
        emulator.counters().token_refresh_token,
        1,
        "one refresh for all clients"
    );
    assert_eq!(emulator.counters().token_errors, 0, "no invalid_grant");
}

/// Item 4 (facade side): API answers are bounded by a configurable limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_answers_over_the_configured_limit_are_refused() {
    let emulator = emulator_with_lifetime(Duration::from_secs(3600)).await;
    let small = logged_in(builder(&emulator).max_response_bytes(16).memory_store()).await;
    let error = small
        .get::<serde_json::Value>("Console/Authentication/Info")
        .await
        .unwrap_err();
    match error.kind() {
        ErrorKind::Transport(e) => assert_eq!(
            e.kind,
            mailup_auth::core::TransportErrorKind::ResponseTooLarge,
            "{error:?}"
        ),
        other => panic!("{other:?}"),
    }
    let roomy = logged_in(builder(&emulator).memory_store()).await;
    let _: serde_json::Value = roomy.get("Console/Authentication/Info").await.unwrap();
}

/// `Retry-After` as an HTTP date (reliability suite): the facade reads it against its clock,
/// so an opt-in bounded wait waits for it instead of treating it as absent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_http_date_is_read_by_the_facade() {
    let emulator = emulator_with_lifetime(Duration::from_secs(3600)).await;
    let client = logged_in(builder(&emulator).memory_store()).await;
    emulator.fail_next_api_requests(1, Fault::TooManyRequestsDate);
    let error = client
        .get::<serde_json::Value>("Console/Authentication/Info")
        .await
        .unwrap_err();
    let wait = error.retry_after().expect("the date is read as a wait");
    assert!(wait <= Duration::from_secs(3), "{wait:?}");
}
