//! End-to-end tests of the facade: real HTTP over 127.0.0.1 against the emulator, a real sled
//! database in a temp dir, and counters read from the emulator to prove what went over the wire.

use std::sync::atomic::Ordering::SeqCst;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use mailup_auth::{
    Error, ErrorKind, LoopbackLogin, MailUpClient, ManualClock, ReauthReason, SledTokenStore,
    StoreError, StoredProfile, TokenStore,
};
use mailup_auth_emulator::{Consent, ScriptedBrowser};
use mailup_auth_emulator::{
    Emulator, Fault, DEFAULT_CLIENT_SECRET, DEFAULT_PASSWORD, DEFAULT_USERNAME,
};
use mailup_auth_tests::{builder, emulator_with_lifetime, logged_in, password_login, until};

const INFO: &str = "Console/Authentication/Info";

async fn emulator() -> Emulator {
    Emulator::builder().start().await.expect("emulator starts")
}

fn sled_store(dir: &tempfile::TempDir) -> Arc<dyn TokenStore> {
    Arc::new(SledTokenStore::open(dir.path().join("tokens")).expect("sled opens"))
}

/// The refresh token stored under the default profile.
async fn stored_refresh_token(store: &Arc<dyn TokenStore>) -> String {
    let record = store
        .load("default")
        .await
        .unwrap()
        .expect("a stored record")
        .value;
    record
        .tokens
        .unwrap()
        .refresh_token
        .unwrap()
        .secret()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_three_legged_flow_through_the_loopback_helper() {
    let emulator = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let store = sled_store(&dir);
    let client = builder(&emulator)
        .store(store.clone())
        .build()
        .await
        .unwrap();
    assert!(matches!(
        client.access_token().await.map_err(Error::into_kind),
        Err(ErrorKind::ReauthorizationRequired(ReauthReason::NoTokens))
    ));

    let browser_done = Arc::new(Mutex::new(None));
    let done = browser_done.clone();
    client
        .login_with_loopback(
            LoopbackLogin {
                port: 0,
                timeout: Duration::from_secs(20),
                ..LoopbackLogin::default()
            },
            move |url| {
                assert!(
                    !url.as_str().contains(DEFAULT_CLIENT_SECRET),
                    "secret in the LogOn URL"
                );
                let url = url.clone();
                let handle = tokio::spawn(async move {
                    let browser = ScriptedBrowser::new();
                    let location = browser
                        .authorize(&url, DEFAULT_USERNAME, DEFAULT_PASSWORD, Consent::Allow)
                        .await
                        .expect("login form and consent");
                    assert_eq!(location.host_str(), Some("127.0.0.1"));
                    browser.follow(&location).await.expect("loopback answers")
                });
                *done.lock().unwrap() = Some(handle);
            },
        )
        .await
        .expect("three-legged login");

    let handle = browser_done.lock().unwrap().take().unwrap();
    let page = handle.await.unwrap();
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("Authorization complete"),
        "{}",
        page.body
    );

    let counters = emulator.counters();
    assert_eq!(counters.codes_issued, 1);
    assert_eq!(counters.token_authorization_code, 1);

    let info: serde_json::Value = client.get(INFO).await.unwrap();
    assert_eq!(info["Username"], DEFAULT_USERNAME);
    let lists: serde_json::Value = client
        .get("Console/User/Lists?pageNumber=0&pageSize=20")
        .await
        .unwrap();
    assert_eq!(lists["IsPaginated"], true);

    // The tokens are on disk, under the profile.
    let stored = store.load("default").await.unwrap().unwrap();
    assert_eq!(stored.version, 1);
    assert!(stored.value.tokens.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_consent_is_a_typed_error_and_stores_nothing() {
    let emulator = emulator().await;
    let client = builder(&emulator).memory_store().build().await.unwrap();
    let result = client
        .login_with_loopback(
            LoopbackLogin {
                port: 0,
                timeout: Duration::from_secs(20),
                ..LoopbackLogin::default()
            },
            |url| {
                let url = url.clone();
                tokio::spawn(async move {
                    let browser = ScriptedBrowser::new();
                    let location = browser
                        .authorize(&url, DEFAULT_USERNAME, DEFAULT_PASSWORD, Consent::Deny)
                        .await
                        .unwrap();
                    browser.follow(&location).await.unwrap()
                });
            },
        )
        .await;
    assert!(
        matches!(
            result.as_ref().map_err(Error::kind),
            Err(ErrorKind::Callback(
                mailup_auth::core::CallbackError::Denied { .. }
            ))
        ),
        "{result:?}"
    );
    assert_eq!(emulator.counters().token_authorization_code, 0);
    assert!(client.status().expires_at.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proactive_refresh_when_expiry_approaches_and_401_driven_refresh() {
    let emulator = emulator().await;
    let clock = Arc::new(ManualClock::starting_now());
    let client = logged_in(builder(&emulator).clock(clock.clone()).memory_store()).await;
    let first = client.access_token().await.unwrap();

    // 30 s before expiry (inside the 60 s skew): proactive refresh, no 401 needed.
    clock.advance(Duration::from_secs(3600 - 30));
    let before = emulator.counters();
    let second = client.access_token().await.unwrap();
    assert_ne!(first, second);
    let after = emulator.counters();
    assert_eq!(after.token_refresh_token - before.token_refresh_token, 1);
    assert_eq!(after.api_unauthorized, before.api_unauthorized);

    // The emulator expires the token early: the API answers 401, one refresh, one retry.
    emulator.expire_all_access_tokens();
    let before = emulator.counters();
    let info: serde_json::Value = client.get(INFO).await.unwrap();
    assert_eq!(info["Username"], DEFAULT_USERNAME);
    let after = emulator.counters();
    assert_eq!(after.api_unauthorized - before.api_unauthorized, 1);
    assert_eq!(after.token_refresh_token - before.token_refresh_token, 1);
    assert_eq!(after.api_calls - before.api_calls, 2);
    assert_ne!(client.access_token().await.unwrap(), second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_callers_on_an_expired_token_cause_one_refresh() {
    let emulator = emulator().await;
    let clock = Arc::new(ManualClock::starting_now());
    let dir = tempfile::tempdir().unwrap();
    let client = logged_in(
        builder(&emulator)
            .clock(clock.clone())
            .store(sled_store(&dir)),
    )
    .await;
    let old = client.access_token().await.unwrap();
    clock.advance(Duration::from_secs(7200));
    let before = emulator.counters();

    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.access_token().await })
        })
        .collect();
    let mut tokens = Vec::with_capacity(tasks.len());
    for task in tasks {
        tokens.push(task.await.unwrap().expect("every caller gets a token"));
    }
    let after = emulator.counters();
    assert_eq!(
        after.token_refresh_token - before.token_refresh_token,
        1,
        "exactly one refresh"
    );
    assert!(
        tokens.iter().all(|t| *t == tokens[0]),
        "every caller gets the same new token"
    );
    assert_ne!(tokens[0], old);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_survives_a_restart() {
    let emulator = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens");
    let rotated;
    let original;
    {
        let store: Arc<dyn TokenStore> = Arc::new(SledTokenStore::open(&path).unwrap());
        let client = logged_in(builder(&emulator).store(store.clone())).await;
        original = stored_refresh_token(&store).await;
        client.refresh().await.unwrap();
        rotated = stored_refresh_token(&store).await;
        assert_ne!(original, rotated);
        assert!(
            !emulator.is_refresh_token_live(&original),
            "the old refresh token is dead"
        );
    }
    // A new process: a new store handle and a new facade over the same directory.
    let store: Arc<dyn TokenStore> = open_again(&path).await;
    let clock = Arc::new(ManualClock::starting_now());
    clock.advance(Duration::from_secs(7200));
    let client = builder(&emulator)
        .store(store.clone())
        .clock(clock)
        .build()
        .await
        .unwrap();
    let before = emulator.counters();
    client
        .access_token()
        .await
        .expect("refresh with the rotated token");
    let after = emulator.counters();
    assert_eq!(after.token_refresh_token - before.token_refresh_token, 1);
    assert_eq!(
        after.token_errors, before.token_errors,
        "the rotated token was used, not the old one"
    );
    let newest = stored_refresh_token(&store).await;
    assert_ne!(newest, rotated);
    assert!(emulator.is_refresh_token_live(&newest));
    assert!(!emulator.is_refresh_token_live(&rotated));
}

/// sled releases its lock when the last handle is dropped; a background flusher may hold it
/// for a moment, so retry briefly.
async fn open_again(path: &std::path::Path) -> Arc<dyn TokenStore> {
    for _ in 0..100 {
        match SledTokenStore::open(path) {
            Ok(store) => return Arc::new(store),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    panic!("sled store could not be reopened");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_refresh_token_requires_reauthorization_without_looping() {
    let emulator = emulator().await;
    let clock = Arc::new(ManualClock::starting_now());
    let client = logged_in(
        builder(&emulator)
            .clock(clock.clone())
            .rejected_refresh_grace(Duration::from_millis(100))
            .memory_store(),
    )
    .await;
    emulator.revoke_all_refresh_tokens();
    clock.advance(Duration::from_secs(7200));
    let before = emulator.counters();
    for _ in 0..5 {
        let err = client.access_token().await.unwrap_err();
        assert!(
            matches!(
                err.kind(),
                ErrorKind::ReauthorizationRequired(ReauthReason::RefreshRejected(_))
            ),
            "{err:?}"
        );
        assert!(err.is_reauthorization_required());
        let err = client.get::<serde_json::Value>(INFO).await.unwrap_err();
        assert!(err.is_reauthorization_required());
    }
    let after = emulator.counters();
    assert_eq!(
        after.token_refresh_token - before.token_refresh_token,
        1,
        "one refresh attempt, no loop"
    );
    assert_eq!(
        after.api_calls, before.api_calls,
        "no API call without a token"
    );

    // Logging in again recovers.
    password_login(&client).await;
    assert!(client.get::<serde_json::Value>(INFO).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_token_endpoint_failures_back_off_then_succeed() {
    let emulator = emulator().await;
    let clock = Arc::new(ManualClock::starting_now());
    let client = logged_in(builder(&emulator).clock(clock.clone()).memory_store()).await;
    let old = client.access_token().await.unwrap();

    // Token endpoint down while the access token is still valid: calls keep working.
    emulator.fail_next_token_requests(100, Fault::DropConnection);
    for _ in 0..3 {
        let info: serde_json::Value = client.get(INFO).await.unwrap();
        assert_eq!(info["Username"], DEFAULT_USERNAME);
    }
    assert_eq!(
        emulator.counters().token_faults,
        0,
        "no token request needed"
    );
    emulator.clear_faults();

    // 503 twice, then healthy: one call succeeds after backing off. The facade's clock is
    // manual, so advance it in the background as real time passes.
    clock.advance(Duration::from_secs(7200));
    emulator.fail_next_token_requests(2, Fault::Status503);
    let ticker = {
        let clock = clock.clone();
        tokio::spawn(async move {
            for _ in 0..200 {
                tokio::time::sleep(Duration::from_millis(10)).await;
                clock.advance(Duration::from_millis(10));
            }
        })
    };
    let before = emulator.counters();
    let new = client.access_token().await.expect("succeeds after backoff");
    ticker.abort();
    let after = emulator.counters();
    assert_ne!(new, old);
    assert_eq!(after.token_faults - before.token_faults, 2);
    assert_eq!(after.token_refresh_token - before.token_refresh_token, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_endpoint_that_stays_down_gives_a_bounded_transient_error() {
    let emulator = emulator().await;
    let clock = Arc::new(ManualClock::starting_now());
    let client = logged_in(
        builder(&emulator)
            .clock(clock.clone())
            .max_refresh_attempts(3)
            .memory_store(),
    )
    .await;
    clock.advance(Duration::from_secs(7200));
    emulator.fail_next_token_requests(1000, Fault::HtmlErrorPage);
    let ticker = {
        let clock = clock.clone();
        tokio::spawn(async move {
            for _ in 0..500 {
                tokio::time::sleep(Duration::from_millis(5)).await;
                clock.advance(Duration::from_millis(50));
            }
        })
    };
    let err = client.access_token().await.unwrap_err();
    ticker.abort();
    assert!(
        matches!(
            err.kind(),
            ErrorKind::TokenEndpointUnavailable { attempts: 3, .. }
        ),
        "{err:?}"
    );
    assert!(err.is_transient());
    assert_eq!(emulator.counters().token_faults, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_store_race_a_refresh_and_agree() {
    let emulator = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let store = sled_store(&dir);
    let clock = Arc::new(ManualClock::starting_now());
    let a = logged_in(builder(&emulator).clock(clock.clone()).store(store.clone())).await;
    let b = builder(&emulator)
        .clock(clock.clone())
        .store(store.clone())
        .build()
        .await
        .unwrap();
    assert_eq!(a.status().store_version, b.status().store_version);
    let original = stored_refresh_token(&store).await;

    clock.advance(Duration::from_secs(7200));
    let before = emulator.counters();
    let (ta, tb) = tokio::join!(
        {
            let a = a.clone();
            async move { a.access_token().await }
        },
        {
            let b = b.clone();
            async move { b.access_token().await }
        }
    );
    let (ta, tb) = (ta.expect("instance a"), tb.expect("instance b"));
    assert_eq!(ta, tb, "both end up with the winning tokens");
    let after = emulator.counters();
    let successful_refreshes = after.access_tokens_issued - before.access_tokens_issued;
    assert_eq!(successful_refreshes, 1, "exactly one rotation wins");

    let stored = store.load("default").await.unwrap().unwrap();
    assert_eq!(stored.version, 2, "one write after the login");
    let stored_refresh = stored
        .value
        .tokens
        .unwrap()
        .refresh_token
        .unwrap()
        .secret()
        .to_owned();
    assert_ne!(stored_refresh, original);
    assert!(
        emulator.is_refresh_token_live(&stored_refresh),
        "nothing older was written back"
    );
    assert_eq!(a.status().store_version, Some(2));
    assert_eq!(b.status().store_version, Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_forgets_the_tokens_in_the_store() {
    let emulator = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let store = sled_store(&dir);
    let client = logged_in(builder(&emulator).store(store.clone())).await;
    client.logout().await.unwrap();
    assert!(store.load("default").await.unwrap().is_none());
    assert!(client
        .access_token()
        .await
        .unwrap_err()
        .is_reauthorization_required());
    let again = builder(&emulator)
        .store(store.clone())
        .build()
        .await
        .unwrap();
    assert!(again
        .access_token()
        .await
        .unwrap_err()
        .is_reauthorization_required());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_task_refreshes_ahead_of_expiry() {
    let emulator = emulator_with_lifetime(Duration::from_secs(3)).await;
    let client = builder(&emulator).memory_store().build().await.unwrap();
    // Tokens live 3 s, skew 60 s: the effective skew is 1.5 s, so a refresh is due 1.5 s after
    // login (the background task may go up to 0.75 s earlier, never before 1 s).
    password_login(&client).await;
    let before = emulator.counters();
    let _task = client.spawn_background_refresh();
    let mut refreshed = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if emulator.counters().token_refresh_token > before.token_refresh_token {
            refreshed = true;
            break;
        }
    }
    assert!(refreshed, "the background task refreshed");
    // The freshly refreshed token is cached: no caller waits.
    assert!(client.cached_access_token().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_are_typed_errors_or_a_bounded_wait() {
    let emulator = emulator().await;
    let strict = logged_in(builder(&emulator).memory_store()).await;
    emulator.set_rate_limit(Some((2, Duration::from_secs(1))));
    let mut limited = None;
    for _ in 0..3 {
        if let Err(err) = strict.get::<serde_json::Value>(INFO).await {
            limited = Some(err);
        }
    }
    let err = limited.expect("the third call in the window is limited");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(1)), "{err:?}");
    assert!(err.is_transient());
    assert!(matches!(
        err.kind(),
        ErrorKind::Api(mailup_auth::ApiError::RateLimited { .. })
    ));

    let patient = builder(&emulator)
        .memory_store()
        .rate_limit_retry(mailup_auth::RateLimitRetry {
            max_retries: 3,
            max_wait: Duration::from_secs(2),
        })
        .build()
        .await
        .unwrap();
    password_login(&patient).await;
    for _ in 0..3 {
        let info: serde_json::Value = patient.get(INFO).await.expect("waits out the limit");
        assert_eq!(info["Username"], DEFAULT_USERNAME);
    }
    assert!(emulator.counters().rate_limited >= 2);

    // A Retry-After above the bound is returned, not waited for.
    let hasty = builder(&emulator)
        .memory_store()
        .rate_limit_retry(mailup_auth::RateLimitRetry {
            max_retries: 3,
            max_wait: Duration::from_millis(100),
        })
        .build()
        .await
        .unwrap();
    password_login(&hasty).await;
    let mut results = Vec::new();
    for _ in 0..3 {
        results.push(hasty.get::<serde_json::Value>(INFO).await);
    }
    assert!(results
        .iter()
        .any(|r| matches!(r, Err(e) if e.retry_after().is_some())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_refresh_that_is_rejected_or_fails_is_reported() {
    let emulator = emulator().await;
    let client = logged_in(
        builder(&emulator)
            .rejected_refresh_grace(Duration::from_millis(50))
            .memory_store(),
    )
    .await;
    emulator.fail_next_token_requests(1, Fault::Status503);
    let err = client.refresh().await.unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::TokenEndpointUnavailable { .. }),
        "{err:?}"
    );
    // The still-valid token keeps being served.
    assert!(client.access_token().await.is_ok());

    emulator.revoke_all_refresh_tokens();
    let err = client.refresh().await.unwrap_err();
    assert!(err.is_reauthorization_required(), "{err:?}");
    // The access token has not expired: it keeps being served until it does, and the status
    // says a login is needed.
    assert!(client.access_token().await.is_ok());
    assert!(client.status().reauthorization_reason.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_gives_up_mid_refresh_does_not_wedge_the_client() {
    let emulator = emulator().await;
    let clock = Arc::new(ManualClock::starting_now());
    let dir = tempfile::tempdir().unwrap();
    let store = sled_store(&dir);
    let client = logged_in(builder(&emulator).clock(clock.clone()).store(store.clone())).await;
    clock.advance(Duration::from_secs(7200));
    emulator.set_token_latency(Duration::from_millis(300));
    let gave_up = tokio::time::timeout(Duration::from_millis(50), client.access_token()).await;
    assert!(
        gave_up.is_err(),
        "the caller timed out while the refresh was in flight"
    );
    emulator.set_token_latency(Duration::ZERO);
    // The refresh it started still completes and is saved; the next caller uses it.
    let token = client.access_token().await.expect("not wedged");
    assert_eq!(
        emulator.counters().token_refresh_token,
        1,
        "the abandoned refresh was not lost"
    );
    assert!(emulator.is_access_token_live(token.secret()));
    let stored = stored_refresh_token(&store).await;
    assert!(
        emulator.is_refresh_token_live(&stored),
        "the rotated refresh token was saved"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_that_are_stale_on_arrival_give_a_bounded_typed_error() {
    // A zero lifetime: no token is ever fresh, whatever the skew (a lifetime merely shorter
    // than the skew works: see hardening.rs).
    let emulator = emulator_with_lifetime(Duration::from_millis(1)).await;
    let client = logged_in(builder(&emulator).memory_store()).await;
    let err = client.access_token().await.unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::TokensNeverFresh { .. }),
        "{err:?}"
    );
    assert!(emulator.counters().token_refresh_token <= 3, "bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_task_does_not_flood_a_server_with_short_lived_tokens() {
    // 2 s tokens: due after 1 s (effective skew), and the task never refreshes a set younger
    // than 1 s.
    let emulator = emulator_with_lifetime(Duration::from_secs(2)).await;
    let client = logged_in(builder(&emulator).memory_store()).await;
    let _task = client.spawn_background_refresh();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let refreshes = emulator.counters().token_refresh_token;
    assert!(
        (1..=3).contains(&refreshes),
        "{refreshes} refreshes in 2.5 s"
    );
    assert!(client.access_token().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_may_call_the_client_and_logout_reports_store_failures() {
    let emulator = emulator().await;
    let slot: Arc<std::sync::OnceLock<MailUpClient>> = Arc::new(std::sync::OnceLock::new());
    let hook_slot = slot.clone();
    let calls = Arc::new(Mutex::new(0));
    let hook_calls = calls.clone();
    let client = builder(&emulator)
        .memory_store()
        .on_tokens_changed(move |_| {
            if let Some(client) = hook_slot.get() {
                let _ = client.status(); // must not deadlock
            }
            *hook_calls.lock().unwrap() += 1;
        })
        .build()
        .await
        .unwrap();
    slot.set(client.clone()).unwrap();
    password_login(&client).await;
    tokio::time::timeout(Duration::from_secs(5), client.logout())
        .await
        .expect("no deadlock")
        .unwrap();
    assert!(*calls.lock().unwrap() >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_token_only_goes_to_trusted_origins() {
    let emulator = emulator().await;
    let client = logged_in(builder(&emulator).memory_store()).await;
    let before = emulator.counters().api_calls;
    let err = client
        .get::<serde_json::Value>("http://127.0.0.1:1/steal")
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::UntrustedOrigin(ref o) if o == "http://127.0.0.1:1"),
        "{err:?}"
    );
    // A full URL on the API's own origin is fine.
    let full = format!(
        "{}/Console/Authentication/Info",
        emulator.console_api_base().as_str().trim_end_matches('/')
    );
    let info: serde_json::Value = client.get(&full).await.unwrap();
    assert_eq!(info["Username"], DEFAULT_USERNAME);
    assert_eq!(emulator.counters().api_calls, before + 1);

    let trusting = logged_in(
        builder(&emulator)
            .memory_store()
            .trust_origin("http://127.0.0.1:1/"),
    )
    .await;
    let err = trusting
        .get::<serde_json::Value>("http://127.0.0.1:1/x")
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Transport(_)),
        "trusted, so it was sent: {err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejection_is_recorded_so_the_next_process_knows_without_trying() {
    let emulator = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let store = sled_store(&dir);
    let clock = Arc::new(ManualClock::starting_now());
    let first = logged_in(
        builder(&emulator)
            .clock(clock.clone())
            .store(store.clone())
            .rejected_refresh_grace(Duration::from_millis(50)),
    )
    .await;
    emulator.revoke_all_refresh_tokens();
    assert!(first
        .refresh()
        .await
        .unwrap_err()
        .is_reauthorization_required());
    drop(first);

    // "Another process": a new client over the same store.
    let second = builder(&emulator)
        .clock(clock.clone())
        .store(store.clone())
        .build()
        .await
        .unwrap();
    let status = second.status();
    assert!(status.reauthorization_reason.is_some(), "{status:?}");
    clock.advance(Duration::from_secs(7200));
    let before = emulator.counters();
    let err = second.access_token().await.unwrap_err();
    assert!(
        matches!(
            err.kind(),
            ErrorKind::ReauthorizationRequired(ReauthReason::RejectedEarlier(_))
        ),
        "{err:?}"
    );
    assert_eq!(
        emulator.counters().token_requests,
        before.token_requests,
        "the dead token was not tried"
    );

    // Logging in again clears the mark for everyone.
    password_login(&second).await;
    assert!(store
        .load("default")
        .await
        .unwrap()
        .unwrap()
        .value
        .reauthorization_required
        .is_none());
    let third = builder(&emulator)
        .clock(clock)
        .store(store.clone())
        .build()
        .await
        .unwrap();
    assert!(third.status().reauthorization_reason.is_none());
    assert!(third.access_token().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_for_several_profiles_share_one_store_directory() {
    let emulator = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens");
    let a = builder(&emulator)
        .profile("customer-1")
        .store_path(&path)
        .build()
        .await
        .unwrap();
    let b = builder(&emulator)
        .profile("customer-2")
        .store_path(&path)
        .build()
        .await
        .unwrap();
    password_login(&a).await;
    password_login(&b).await;
    assert_ne!(
        a.access_token().await.unwrap(),
        b.access_token().await.unwrap()
    );
    drop((a, b));
    let again = builder(&emulator)
        .profile("customer-2")
        .store_path(&path)
        .build()
        .await
        .unwrap();
    assert!(again.cached_access_token().is_some());
}

/// A memory store that counts how it is read: full loads (`load_entry`, `load`, and a look
/// that found a change) apart from the looks that ask whether anything changed
/// (`load_entry_if_changed`, the memory store's own answer, which copies nothing when nothing
/// changed).
#[derive(Default)]
struct CountedLooks {
    inner: mailup_auth::core::MemoryTokenStore,
    full_loads: std::sync::atomic::AtomicU32,
    looks: std::sync::atomic::AtomicU32,
}

#[async_trait::async_trait]
impl TokenStore for CountedLooks {
    async fn load(
        &self,
        profile: &str,
    ) -> Result<Option<mailup_auth::core::Versioned<mailup_auth::ProfileRecord>>, StoreError> {
        self.full_loads.fetch_add(1, SeqCst);
        self.inner.load(profile).await
    }
    async fn load_entry(&self, profile: &str) -> Result<StoredProfile, StoreError> {
        self.full_loads.fetch_add(1, SeqCst);
        self.inner.load_entry(profile).await
    }
    async fn load_entry_if_changed(
        &self,
        profile: &str,
        known: u64,
    ) -> Result<Option<StoredProfile>, StoreError> {
        self.looks.fetch_add(1, SeqCst);
        let changed = self.inner.load_entry_if_changed(profile, known).await?;
        if changed.is_some() {
            // The record came back in full.
            self.full_loads.fetch_add(1, SeqCst);
        }
        Ok(changed)
    }
    async fn save(
        &self,
        profile: &str,
        record: &mailup_auth::ProfileRecord,
        expected: Option<u64>,
    ) -> Result<u64, StoreError> {
        self.inner.save(profile, record, expected).await
    }
    async fn delete(&self, profile: &str) -> Result<(), StoreError> {
        self.inner.delete(profile).await
    }
    async fn restore_lost(
        &self,
        profile: &str,
        record: &mailup_auth::ProfileRecord,
        lost_version: u64,
    ) -> Result<u64, StoreError> {
        self.inner.restore_lost(profile, record, lost_version).await
    }
    async fn profiles(&self) -> Result<Vec<String>, StoreError> {
        self.inner.profiles().await
    }
    async fn consume_once(
        &self,
        key: &str,
        expires_at: mailup_auth::UnixTime,
        now: mailup_auth::UnixTime,
    ) -> Result<bool, StoreError> {
        self.inner.consume_once(key, expires_at, now).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_look_before_a_refresh_loads_nothing_unchanged_and_still_adopts_a_rotation() {
    let emulator = emulator().await;
    let store = Arc::new(CountedLooks::default());
    let first = logged_in(builder(&emulator).store(store.clone())).await;
    // A second client of the same profile on the same store, as another instance would be.
    let second = builder(&emulator)
        .store(store.clone())
        .build()
        .await
        .unwrap();
    let full_loads = || store.full_loads.load(SeqCst);

    // Nothing changed since the first client saved: the look decodes no record.
    let before = full_loads();
    first.refresh().await.unwrap();
    assert_eq!(
        full_loads(),
        before,
        "an unchanged record was loaded in full"
    );
    assert!(
        store.looks.load(SeqCst) >= 1,
        "the refresh looked at the store"
    );

    // The first client rotated the refresh token the second one holds: the second one's look
    // finds the change, adopts the new tokens and refreshes with them (its own, now dead,
    // refresh token is never sent: no `invalid_grant`, no wait for a rotation).
    let rotated = second.refresh().await.expect("the rotation was adopted");
    assert!(full_loads() > before, "the changed record was loaded");
    assert_eq!(emulator.counters().token_refresh_token, 2);
    assert!(emulator.is_access_token_live(rotated.secret()));
    // And back: the first client adopts the second one's rotation the same way.
    let again = first.refresh().await.expect("the rotation was adopted");
    assert_eq!(emulator.counters().token_refresh_token, 3);
    assert!(emulator.is_access_token_live(again.secret()));
    let stored = store.inner.load("default").await.unwrap().unwrap();
    assert_eq!(first.status().store_version, Some(stored.version));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_on_one_sled_store_adopt_each_others_rotation() {
    let emulator = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let store = sled_store(&dir);
    let first = logged_in(builder(&emulator).store(store.clone())).await;
    let second = builder(&emulator)
        .store(store.clone())
        .build()
        .await
        .unwrap();
    for round in 0..3 {
        let (refreshing, other) = if round % 2 == 0 {
            (&first, &second)
        } else {
            (&second, &first)
        };
        refreshing.refresh().await.unwrap();
        // The other one holds a dead refresh token now; its refresh adopts the stored one.
        let token = other.refresh().await.expect("the rotation was adopted");
        assert!(emulator.is_access_token_live(token.secret()));
    }
    assert_eq!(emulator.counters().token_refresh_token, 6);
    let stored = stored_refresh_token(&store).await;
    assert!(emulator.is_refresh_token_live(&stored));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_waiting_on_an_operation_that_publishes_nothing_refresh_once_themselves() {
    // Two-second tokens on the real clock: the token expires during the test.
    let emulator = emulator_with_lifetime(Duration::from_secs(2)).await;
    let client = logged_in(builder(&emulator).memory_store()).await;
    until("the token expired", || {
        client.status().expires_at.expect("tokens").to_system_time() <= SystemTime::now()
    })
    .await;
    // A forced refresh holds the refresh flight, then fails: it publishes nothing.
    emulator.set_token_latency(Duration::from_millis(300));
    emulator.fail_next_token_requests(1, Fault::Status503);
    let requests = emulator.counters().token_requests;
    let forced = tokio::spawn({
        let client = client.clone();
        async move { client.refresh().await }
    });
    until("the forced refresh is in flight", || {
        emulator.counters().token_requests > requests
    })
    .await;
    // These callers find the flight taken and wait for its end; finding nothing published,
    // they queue on the flight, and the first of them refreshes (after the backoff) for all.
    let callers: Vec<_> = (0..50)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.access_token().await })
        })
        .collect();
    assert!(matches!(
        forced.await.unwrap().map_err(Error::into_kind),
        Err(ErrorKind::TokenEndpointUnavailable { .. })
    ));
    emulator.set_token_latency(Duration::ZERO);
    let mut tokens = Vec::new();
    for caller in callers {
        tokens.push(
            caller
                .await
                .unwrap()
                .expect("a token after the failed refresh"),
        );
    }
    assert!(
        tokens.iter().all(|token| *token == tokens[0]),
        "one refresh for all"
    );
    assert!(emulator.is_access_token_live(tokens[0].secret()));
    // The failed forced refresh (answered 503 before its grant was read), then one refresh
    // for the fifty callers.
    assert_eq!(emulator.counters().token_requests - requests, 2);
    assert_eq!(emulator.counters().token_refresh_token, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_operation_dropped_before_it_started_sends_nothing() {
    let emulator = emulator().await;
    let client = logged_in(builder(&emulator).memory_store()).await;
    // Never polled: the operation never started, and dropping it starts nothing (only an
    // operation whose caller gave up half-way goes on in a task of its own).
    drop(client.refresh());
    drop(client.access_token());
    // Had either gone on in the background, it would have held the flight first and sent its
    // refresh before this one could.
    client.refresh().await.unwrap();
    assert_eq!(emulator.counters().token_refresh_token, 1);
}
