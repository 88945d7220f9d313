//! Hostile tests of the facade's driver (issue 17): callers that give up at random points while
//! the token endpoint is slow, failing or rotating; a 401 storm under a thousand callers; a
//! logout or a login during a refresh; a panicking hook. The emulator over 127.0.0.1, sled in a
//! temp dir. Every wait is bounded (a hang fails the test instead of blocking it).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mailup_auth::{
    Error, ErrorKind, MailUpAccounts, MailUpClient, ManualClock, Password, SledRefreshLease,
    SledTokenStore, TokenStore,
};
use mailup_auth_emulator::{Emulator, Fault, DEFAULT_PASSWORD, DEFAULT_USERNAME};
use mailup_auth_store_redis::internal::RedisServer;
use mailup_auth_store_redis::RedisTokenStore;
use mailup_auth_tests::{builder, emulator_with_lifetime, logged_in};

const INFO: &str = "Console/Authentication/Info";
/// The bound on any one call of these tests: a deadlock fails the test instead of hanging it.
const HANG: Duration = Duration::from_secs(20);

async fn emulator() -> Emulator {
    Emulator::builder().start().await.expect("emulator starts")
}

fn sled_store(dir: &tempfile::TempDir) -> Arc<dyn TokenStore> {
    Arc::new(SledTokenStore::open(dir.path().join("tokens")).expect("sled opens"))
}

/// The refresh token stored under the default profile, if any.
async fn stored_refresh_token(store: &Arc<dyn TokenStore>) -> Option<String> {
    let record = store.load("default").await.unwrap()?.value;
    Some(record.tokens?.refresh_token?.secret().to_owned())
}

/// `what` finishes within [`HANG`] (no deadlock).
async fn bounded<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(HANG, future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish: a deadlock or a lost wake-up"))
}

/// The token endpoint's behaviour during one round of the cancellation sweep.
#[derive(Clone, Copy, Debug)]
enum Answer {
    /// A good answer (with a rotated refresh token), late.
    Slow,
    /// A 500.
    ServerError,
    /// A body that is not JSON.
    Garbage,
    /// The connection is dropped.
    Dropped,
}

impl Answer {
    fn arm(self, emulator: &Emulator) {
        emulator.clear_faults();
        emulator.set_token_latency(Duration::from_millis(3));
        match self {
            Answer::Slow => {}
            Answer::ServerError => emulator.fail_next_token_requests(1, Fault::Status500),
            Answer::Garbage => emulator.fail_next_token_requests(1, Fault::MalformedBody),
            Answer::Dropped => emulator.fail_next_token_requests(1, Fault::DropConnection),
        }
    }
}

/// Which token operation the caller gives up on.
#[derive(Clone, Copy, Debug)]
enum Operation {
    AccessToken,
    Refresh,
    Login,
    Logout,
}

async fn start(client: &MailUpClient, operation: Operation) {
    // The outcome does not matter (a fault may fail it); only what it leaves behind does.
    let _ = match operation {
        Operation::AccessToken => client.access_token().await.map(drop),
        Operation::Refresh => client.refresh().await.map(drop),
        Operation::Login => client
            .login_with_password(DEFAULT_USERNAME, &Password::new(DEFAULT_PASSWORD))
            .await
            .map(drop),
        Operation::Logout => client.logout().await,
    };
}

/// Every operation, dropped after 0 to 5 ms (by a timeout or a `select!`) while the token
/// endpoint is slow, failing, answering garbage or dropping the connection: the next call
/// works, and what the store holds is the emulator's live refresh token (a rotation that
/// finished after the caller gave up was still saved).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_that_give_up_at_any_point_leave_a_working_client_and_the_live_refresh_token() {
    let emulator = emulator().await;
    let clock = Arc::new(ManualClock::starting_now());
    let dir = tempfile::tempdir().unwrap();
    let store = sled_store(&dir);
    let client = logged_in(builder(&emulator).clock(clock.clone()).store(store.clone())).await;
    give_up_sweep(&emulator, &clock, &client, &store).await;
}

/// [`callers_that_give_up_at_any_point_leave_a_working_client_and_the_live_refresh_token`]
/// with the sled directory's refresh lease (an OS file lock) taken and released around each
/// refresh: a caller that gives up while the driver waits for the lease or holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_that_give_up_around_the_sled_lease_leave_a_working_client() {
    let emulator = emulator().await;
    let clock = Arc::new(ManualClock::starting_now());
    let dir = tempfile::tempdir().unwrap();
    let store = sled_store(&dir);
    let lease = Arc::new(SledRefreshLease::new(dir.path().join("tokens")));
    let client = logged_in(
        builder(&emulator)
            .clock(clock.clone())
            .store(store.clone())
            .refresh_lease(Some(lease)),
    )
    .await;
    give_up_sweep(&emulator, &clock, &client, &store).await;
}

/// The same with a Redis store and its lease (`SET NX PX`, owner-checked release), on a
/// `redis-server` the test starts (skipped without the binary, failing under `CI`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_that_give_up_around_the_redis_lease_leave_a_working_client() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let emulator = emulator().await;
    let clock = Arc::new(ManualClock::starting_now());
    let store = RedisTokenStore::connect(server.url()).await.unwrap();
    let lease = Arc::new(store.refresh_lease());
    let store: Arc<dyn TokenStore> = Arc::new(store);
    let client = logged_in(
        builder(&emulator)
            .clock(clock.clone())
            .store(store.clone())
            .refresh_lease(Some(lease)),
    )
    .await;
    give_up_sweep(&emulator, &clock, &client, &store).await;
}

/// Every operation given up at 0 to 5 ms under every answer (see the first sweep's docs),
/// each followed by the checks.
async fn give_up_sweep(
    emulator: &Emulator,
    clock: &Arc<ManualClock>,
    client: &MailUpClient,
    store: &Arc<dyn TokenStore>,
) {
    // The manual clock also moves with real time, so that a backoff (measured on it) ends.
    let ticker = tokio::spawn({
        let clock = clock.clone();
        async move {
            loop {
                tokio::time::sleep(Duration::from_millis(5)).await;
                clock.advance(Duration::from_millis(5));
            }
        }
    });
    let answers = [
        Answer::Slow,
        Answer::ServerError,
        Answer::Garbage,
        Answer::Dropped,
    ];
    let operations = [
        Operation::AccessToken,
        Operation::Refresh,
        Operation::Login,
        Operation::Logout,
    ];
    let mut rounds = 0;
    for answer in answers {
        for operation in operations {
            for millis in 0..=5u64 {
                answer.arm(emulator);
                // Due for a refresh, so that access_token() too talks to the token endpoint.
                clock.advance(Duration::from_secs(7200));
                let give_up = Duration::from_millis(millis);
                if millis % 2 == 0 {
                    let _ = tokio::time::timeout(give_up, start(client, operation)).await;
                } else {
                    tokio::select! {
                        () = start(client, operation) => {}
                        () = tokio::time::sleep(give_up) => {}
                    }
                }
                emulator.clear_faults();
                emulator.set_token_latency(Duration::ZERO);
                eprintln!("round {answer:?}/{operation:?}/{millis} ms");
                // The next caller is not wedged: logged out, it logs in again; otherwise it
                // gets a token (a refresh, or a new login if the refresh token was lost).
                let token = bounded("the next access_token()", client.access_token()).await;
                let token = match token.map_err(Error::into_kind) {
                    Ok(token) => token,
                    Err(ErrorKind::ReauthorizationRequired(reason)) => {
                        assert!(
                            matches!(operation, Operation::Logout),
                            "{answer:?}/{operation:?}/{millis} ms: a re-login was needed ({reason})"
                        );
                        bounded(
                            "a login after the logout",
                            client.login_with_password(
                                DEFAULT_USERNAME,
                                &Password::new(DEFAULT_PASSWORD),
                            ),
                        )
                        .await
                        .expect("the login after a logout");
                        client.access_token().await.expect("a token after login")
                    }
                    Err(error) => panic!("{answer:?}/{operation:?}/{millis} ms: {error}"),
                };
                assert!(
                    emulator.is_access_token_live(token.secret()),
                    "{answer:?}/{operation:?}/{millis} ms: a dead access token"
                );
                let stored = stored_refresh_token(store)
                    .await
                    .expect("a stored refresh token");
                assert!(
                    emulator.is_refresh_token_live(&stored),
                    "{answer:?}/{operation:?}/{millis} ms: the store holds a dead refresh token"
                );
                rounds += 1;
            }
        }
    }
    ticker.abort();
    assert_eq!(rounds, 4 * 4 * 6);
}

/// A thousand API callers while the emulator revokes the access token (a 401 storm): every call
/// succeeds after its one retry, and the storm costs far fewer refreshes than callers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_api_callers_in_a_401_storm_all_succeed_with_few_refreshes() {
    let emulator = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let store = sled_store(&dir);
    let client = logged_in(builder(&emulator).store(store.clone())).await;
    client.access_token().await.unwrap();
    for wave in 0..3 {
        emulator.expire_all_access_tokens();
        let before = emulator.counters();
        let calls: Vec<_> = (0..1000)
            .map(|_| {
                let client = client.clone();
                tokio::spawn(async move { client.get::<serde_json::Value>(INFO).await })
            })
            .collect();
        let mut failures = Vec::new();
        for call in calls {
            match bounded("an API call in the storm", call).await.unwrap() {
                Ok(info) => assert_eq!(info["Username"], DEFAULT_USERNAME),
                Err(error) => failures.push(error.to_string()),
            }
        }
        let after = emulator.counters();
        let refreshes = after.token_refresh_token - before.token_refresh_token;
        assert!(
            failures.is_empty(),
            "wave {wave}: {} of 1000 calls failed, first: {:?}",
            failures.len(),
            failures.first()
        );
        assert!(refreshes >= 1, "wave {wave}: the storm caused no refresh");
        assert!(
            refreshes <= 10,
            "wave {wave}: {refreshes} refreshes for one revoked token"
        );
        let stored = stored_refresh_token(&store).await.unwrap();
        assert!(emulator.is_refresh_token_live(&stored), "wave {wave}");
    }
}

/// A logout, and then a login, while a refresh is in flight: each waits for the refresh to be
/// saved, then does its work; the end state is the last operation's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_or_a_login_during_a_refresh_waits_for_it_and_wins() {
    let emulator = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let store = sled_store(&dir);
    let client = logged_in(builder(&emulator).store(store.clone())).await;
    emulator.set_token_latency(Duration::from_millis(100));

    let refreshing = tokio::spawn({
        let client = client.clone();
        async move { client.refresh().await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    bounded("a logout during a refresh", client.logout())
        .await
        .unwrap();
    bounded("the refresh", refreshing)
        .await
        .unwrap()
        .expect("the refresh before the logout");
    assert_eq!(stored_refresh_token(&store).await, None, "logged out");
    assert!(matches!(
        client.access_token().await.map_err(Error::into_kind),
        Err(ErrorKind::ReauthorizationRequired(_))
    ));

    let logging_in = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .login_with_password(DEFAULT_USERNAME, &Password::new(DEFAULT_PASSWORD))
                .await
        }
    });
    bounded("the login", logging_in).await.unwrap().unwrap();
    let refreshing = tokio::spawn({
        let client = client.clone();
        async move { client.refresh().await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    bounded(
        "a login during a refresh",
        client.login_with_password(DEFAULT_USERNAME, &Password::new(DEFAULT_PASSWORD)),
    )
    .await
    .unwrap();
    bounded("the refresh", refreshing).await.unwrap().unwrap();
    emulator.set_token_latency(Duration::ZERO);
    let stored = stored_refresh_token(&store).await.unwrap();
    assert!(emulator.is_refresh_token_live(&stored));
    let token = client.access_token().await.unwrap();
    assert!(emulator.is_access_token_live(token.secret()));
}

/// A hook that panics while the driver saves new tokens: the panic reaches the caller, the
/// refresh flight is released, the tokens were saved, and the next caller works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_hook_releases_the_flight_and_the_next_caller_works() {
    let emulator = emulator().await;
    let clock = Arc::new(ManualClock::starting_now());
    let dir = tempfile::tempdir().unwrap();
    let store = sled_store(&dir);
    let panic_once = Arc::new(AtomicBool::new(false));
    let client = logged_in(
        builder(&emulator)
            .clock(clock.clone())
            .store(store.clone())
            .on_tokens_changed({
                let panic_once = panic_once.clone();
                move |_| {
                    if panic_once.swap(false, Ordering::SeqCst) {
                        panic!("a hook that panics (on purpose)");
                    }
                }
            }),
    )
    .await;
    for operation in ["access_token", "refresh"] {
        clock.advance(Duration::from_secs(7200));
        panic_once.store(true, Ordering::SeqCst);
        let caller = tokio::spawn({
            let client = client.clone();
            async move {
                match operation {
                    "access_token" => client.access_token().await.map(drop),
                    _ => client.refresh().await.map(drop),
                }
            }
        });
        let outcome = bounded("the panicking call", caller).await;
        assert!(
            outcome.as_ref().is_err_and(|e| e.is_panic()),
            "{operation}: the hook's panic reaches the caller"
        );
        let token = bounded("the next caller", client.access_token())
            .await
            .expect("the next caller gets a token");
        assert!(emulator.is_access_token_live(token.secret()), "{operation}");
        let stored = stored_refresh_token(&store).await.unwrap();
        assert!(emulator.is_refresh_token_live(&stored), "{operation}");
        bounded("a logout after the panic", client.logout())
            .await
            .unwrap();
        bounded(
            "a login after the panic",
            client.login_with_password(DEFAULT_USERNAME, &Password::new(DEFAULT_PASSWORD)),
        )
        .await
        .unwrap();
    }
}

/// `refresh()` called while the background task refreshes the same client ahead of expiry
/// (3 s tokens: the background refreshes 1 to 1.5 s after each new token): the forced refreshes
/// come 0.9 to 1.6 s apart, sweeping across the background's window, so some meet it. The two
/// never run at once (one flight): every forced refresh succeeds, no refresh token is used
/// twice, and the store ends on the emulator's live refresh token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_refreshes_racing_the_background_refresh_never_lose_the_refresh_token() {
    let emulator = emulator_with_lifetime(Duration::from_secs(3)).await;
    let dir = tempfile::tempdir().unwrap();
    let store = sled_store(&dir);
    let client = logged_in(builder(&emulator).store(store.clone())).await;
    let _background = client.spawn_background_refresh();
    let before = emulator.counters();
    let mut forced = 0;
    for step in 0..8u64 {
        tokio::time::sleep(Duration::from_millis(900 + 100 * step)).await;
        let token = bounded("a forced refresh", client.refresh())
            .await
            .expect("a forced refresh");
        assert!(emulator.is_access_token_live(token.secret()));
        forced += 1;
    }
    let after = emulator.counters();
    let refreshes = after.token_refresh_token - before.token_refresh_token;
    assert!(
        refreshes >= forced,
        "{refreshes} refreshes, {forced} forced"
    );
    assert_eq!(
        after.token_errors, before.token_errors,
        "no refresh token was used twice"
    );
    let stored = stored_refresh_token(&store).await.unwrap();
    assert!(emulator.is_refresh_token_live(&stored));
}

/// Twenty accounts of one `MailUpAccounts` with background refresh, on 3 s tokens: within four
/// lifetimes every account is refreshed by the scheduler (none is never woken), none more often
/// than its due times allow (none woken early: at most one refresh per second per account), no
/// refresh token is used twice, and each stored one is live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_account_is_refreshed_in_the_background_neither_never_nor_too_often() {
    const ACCOUNTS: usize = 20;
    let emulator = emulator_with_lifetime(Duration::from_secs(3)).await;
    let dir = tempfile::tempdir().unwrap();
    let store = sled_store(&dir);
    let accounts = MailUpAccounts::builder(builder(&emulator).store(store.clone()))
        .build()
        .await
        .unwrap();
    let mut first_tokens = Vec::new();
    for n in 0..ACCOUNTS {
        let client = accounts.client(&format!("account-{n}")).await.unwrap();
        client
            .login_with_password(DEFAULT_USERNAME, &Password::new(DEFAULT_PASSWORD))
            .await
            .unwrap();
        first_tokens.push(client.access_token().await.unwrap());
    }
    let before = emulator.counters();
    // Four token lifetimes, real time.
    let lifetimes = 4;
    tokio::time::sleep(Duration::from_secs(3 * lifetimes)).await;
    let refreshes = emulator.counters().token_refresh_token - before.token_refresh_token;
    let stats = accounts.scheduler_stats();
    assert_eq!(stats.failures, 0, "{stats:?}");
    assert_eq!(emulator.counters().token_errors, before.token_errors);
    // Each account refreshes every 1 to 1.5 s of a 3 s token: 8 to 12 times in 12 s.
    let most = (ACCOUNTS as u64) * 3 * lifetimes;
    assert!(refreshes <= most, "{refreshes} refreshes: woken too often");
    for (n, first) in first_tokens.iter().enumerate() {
        let profile = format!("account-{n}");
        let record = store.load(&profile).await.unwrap().unwrap().value;
        let tokens = record.tokens.unwrap();
        assert_ne!(
            tokens.access_token, *first,
            "{profile} was never refreshed in the background"
        );
        assert!(
            emulator.is_refresh_token_live(tokens.refresh_token.unwrap().secret()),
            "{profile}"
        );
    }
}
