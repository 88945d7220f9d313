//! The facade on a sled store whose saves run on the calling thread
//! (`WriteThread::CallingThread`, issue 13's opt-in) end to end, with the cases its hostile
//! review tried: the emulator over loopback (127.0.0.1), real sled files in temp dirs.
//!
//! - a 1,000-caller refresh storm with a logout thrown into the middle of it (multi-thread
//!   runtime): nothing panics, the logout wins in the end (no token cached or stored) and the
//!   replaced refresh tokens are wiped from the store's files; a new login works after;
//! - a 1,000-caller storm of `spawn_local` tasks in a `LocalSet` on a current-thread runtime
//!   (where `block_in_place` would panic): one refresh, the rotated token on disk; then a
//!   forced refresh and an API call from a `spawn_local` task, and a logout (a tombstone);
//! - two clients sharing one store (one handle in place, one on the pool) and its lease: a
//!   storm on both sends one refresh;
//! - an encrypted store (`KeySource::File`) in place under a storm, then logout;
//! - kill -9 of a process refreshing with saves in place (`crash-helper` with
//!   `CRASH_HELPER_WRITE_THREAD=calling`): the store opens and its refresh token is live, or
//!   was rotated by the server in the window before the save.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mailup_auth::{
    KeySource, MailUpClient, ManualClock, SledTokenStore, StoredProfile, TokenStore as _,
    WriteThread,
};
use mailup_auth_emulator::Emulator;
use mailup_auth_tests::{
    client_builder, live_or_rotated_in_window, password_login, start_crash_helper,
};

const HELPER: &str = env!("CARGO_BIN_EXE_crash-helper");

fn in_place_store(dir: &Path, key: Option<&KeySource>) -> SledTokenStore {
    SledTokenStore::open_with(dir, key)
        .unwrap()
        .with_write_thread(WriteThread::CallingThread)
}

/// A client on `store` with the store's own cross-process lease.
async fn client_on(
    emulator: &Emulator,
    store: SledTokenStore,
    clock: Arc<ManualClock>,
) -> MailUpClient {
    client_builder(emulator)
        .api_base(emulator.console_api_base().as_str())
        .refresh_lease(Some(Arc::new(store.refresh_lease())))
        .store(Arc::new(store))
        .clock(clock)
        .build()
        .await
        .unwrap()
}

/// The store at `dir` read by a fresh open (on a blocking thread).
async fn stored_entry(dir: PathBuf, key: Option<KeySource>) -> StoredProfile {
    tokio::task::spawn_blocking(move || {
        let store = SledTokenStore::open_with(&dir, key.as_ref()).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(store.load_entry("default")).unwrap()
    })
    .await
    .unwrap()
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                if bytes.windows(needle.len()).any(|window| window == needle) {
                    found.push(path);
                }
            }
        }
    }
    found
}

fn stored_refresh(entry: &StoredProfile) -> Option<String> {
    match entry {
        StoredProfile::Record(stored) => stored
            .value
            .tokens
            .as_ref()
            .and_then(|tokens| tokens.refresh_token.as_ref())
            .map(|token| token.secret().to_owned()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_with_a_logout_in_the_middle_ends_logged_out_and_wiped() {
    let emulator = Emulator::builder().start().await.unwrap();
    emulator.set_token_latency(Duration::from_millis(5));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let clock = Arc::new(ManualClock::starting_now());
    let client = client_on(&emulator, in_place_store(&path, None), clock.clone()).await;
    password_login(&client).await;
    // Several rotations first, so that several replaced refresh tokens are in the files.
    for _ in 0..3 {
        client.refresh().await.unwrap();
    }
    clock.advance(Duration::from_secs(2 * 3600));

    let callers: Vec<_> = (0..1_000)
        .map(|n| {
            let client = client.clone();
            tokio::spawn(async move {
                if n == 500 {
                    client.logout().await.map(|()| None)
                } else {
                    client.access_token().await.map(Some)
                }
            })
        })
        .collect();
    let mut served = 0;
    let mut refused = 0;
    for caller in callers {
        match caller.await.expect("no caller panicked") {
            Ok(Some(_)) => served += 1,
            Ok(None) => {}
            Err(error) => {
                assert!(
                    error.is_reauthorization_required(),
                    "a caller failed otherwise than 'log in again': {error}"
                );
                refused += 1;
            }
        }
    }
    assert_eq!(served + refused, 999);
    assert!(
        emulator.counters().token_refresh_token <= 4,
        "more than one refresh in the storm: {:?}",
        emulator.counters()
    );
    assert!(client.cached_access_token().is_none(), "logged out");
    drop(client);

    let entry = stored_entry(path.clone(), None).await;
    assert_eq!(
        stored_refresh(&entry),
        None,
        "a token is stored after the logout"
    );
    for issued in emulator.issued_refresh_tokens() {
        let left = files_containing(&path, issued.as_bytes());
        assert!(left.is_empty(), "refresh token {issued} still in {left:?}");
    }

    // The store is usable after all that: a new login, on a new in-place handle.
    let client = client_on(
        &emulator,
        tokio::task::spawn_blocking({
            let path = path.clone();
            move || in_place_store(&path, None)
        })
        .await
        .unwrap(),
        clock,
    )
    .await;
    password_login(&client).await;
    drop(client);
    let entry = stored_entry(path, None).await;
    let refresh = stored_refresh(&entry).expect("a refresh token after the new login");
    assert!(emulator.is_refresh_token_live(&refresh));
    emulator.shutdown().await;
}

#[test]
fn a_storm_of_spawn_local_tasks_on_a_current_thread_runtime_sends_one_refresh() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async {
        let emulator = Emulator::builder().start().await.unwrap();
        emulator.set_token_latency(Duration::from_millis(5));
        let clock = Arc::new(ManualClock::starting_now());
        let store = in_place_store(&path, None);
        // The client has the store open: the test reads it through a clone.
        let reader = store.clone();
        let client = client_on(&emulator, store, clock.clone()).await;
        password_login(&client).await;
        let first = client.cached_access_token().unwrap();
        clock.advance(Duration::from_secs(2 * 3600));
        let before = emulator.counters().token_refresh_token;
        let callers: Vec<_> = (0..1_000)
            .map(|_| {
                let client = client.clone();
                tokio::task::spawn_local(async move { client.access_token().await })
            })
            .collect();
        let mut served = std::collections::BTreeSet::new();
        for caller in callers {
            let token = caller.await.unwrap().expect("every caller is served");
            served.insert(token.secret().to_owned());
        }
        assert_eq!(emulator.counters().token_refresh_token - before, 1);
        assert_eq!(served.len(), 1);
        assert!(!served.contains(first.secret()));
        let entry = reader.load_entry("default").await.unwrap();
        let refresh = stored_refresh(&entry).expect("a stored refresh token");
        assert!(
            emulator.is_refresh_token_live(&refresh),
            "the rotated token is on disk"
        );
        // The rest of a session there: a forced refresh and an API call from a `spawn_local`
        // task, then a logout (its delete and wipe go to the blocking pool).
        let task = tokio::task::spawn_local({
            let client = client.clone();
            async move {
                let refreshed = client.refresh().await.unwrap();
                let info: serde_json::Value =
                    client.get("Console/Authentication/Info").await.unwrap();
                (refreshed, info)
            }
        });
        let (refreshed, info) = task.await.unwrap();
        assert!(!served.contains(refreshed.secret()));
        assert!(info.is_object(), "{info}");
        client.logout().await.unwrap();
        assert!(client.cached_access_token().is_none());
        drop(client);
        assert!(matches!(
            reader.load_entry("default").await.unwrap(),
            StoredProfile::Deleted
        ));
        emulator.shutdown().await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_one_in_place_one_pooled_on_one_store_send_one_refresh() {
    let emulator = Emulator::builder().start().await.unwrap();
    emulator.set_token_latency(Duration::from_millis(5));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let clock = Arc::new(ManualClock::starting_now());
    let in_place = in_place_store(&path, None);
    let pooled = in_place
        .clone()
        .with_write_thread(WriteThread::BlockingPool);
    assert_eq!(in_place.write_thread(), WriteThread::CallingThread);
    let a = client_on(&emulator, in_place, clock.clone()).await;
    password_login(&a).await;
    let b = client_on(&emulator, pooled, clock.clone()).await;
    assert!(b.cached_access_token().is_some(), "b loaded a's login");
    clock.advance(Duration::from_secs(2 * 3600));
    let before = emulator.counters().token_refresh_token;
    let callers: Vec<_> = (0..500)
        .flat_map(|_| [a.clone(), b.clone()])
        .map(|client| tokio::spawn(async move { client.access_token().await }))
        .collect();
    let mut served = std::collections::BTreeSet::new();
    for caller in callers {
        served.insert(caller.await.unwrap().unwrap().secret().to_owned());
    }
    assert_eq!(
        emulator.counters().token_refresh_token - before,
        1,
        "two clients on one store refreshed more than once"
    );
    assert_eq!(served.len(), 1, "the two clients got different tokens");
    drop((a, b));
    let entry = stored_entry(path, None).await;
    assert!(emulator.is_refresh_token_live(&stored_refresh(&entry).unwrap()));
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_store_in_place_under_a_storm_then_logout() {
    let emulator = Emulator::builder().start().await.unwrap();
    emulator.set_token_latency(Duration::from_millis(5));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let key = KeySource::File(dir.path().join("key"));
    let clock = Arc::new(ManualClock::starting_now());
    let store = in_place_store(&path, Some(&key));
    assert!(store.is_encrypted());
    let client = client_on(&emulator, store, clock.clone()).await;
    password_login(&client).await;
    clock.advance(Duration::from_secs(2 * 3600));
    let before = emulator.counters().token_refresh_token;
    let callers: Vec<_> = (0..1_000)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.access_token().await })
        })
        .collect();
    for caller in callers {
        caller.await.unwrap().expect("every caller is served");
    }
    assert_eq!(emulator.counters().token_refresh_token - before, 1);
    // No token in clear anywhere in the store's files.
    for issued in emulator.issued_refresh_tokens() {
        let left = files_containing(&path, issued.as_bytes());
        assert!(left.is_empty(), "{issued} in clear in {left:?}");
    }
    client.logout().await.unwrap();
    drop(client);
    let entry = stored_entry(path.clone(), Some(key.clone())).await;
    assert_eq!(stored_refresh(&entry), None);
    // Opening without the key is refused, never an empty store.
    let refused = tokio::task::spawn_blocking(move || SledTokenStore::open(&path).err())
        .await
        .unwrap();
    assert!(
        refused.is_some(),
        "an encrypted store opened without its key"
    );
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_process_saving_in_place_leaves_a_live_or_just_rotated_refresh_token() {
    let trials = 10u64;
    let emulator = Emulator::builder().start().await.unwrap();
    emulator.set_token_latency(Duration::from_millis(15));
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let mut live = 0;
    for trial in 0..trials {
        let mut child = start_crash_helper(
            HELPER,
            &store_dir,
            &emulator,
            &[("CRASH_HELPER_WRITE_THREAD", "calling")],
            trial,
        )
        .await;
        // Let it refresh a varying number of times (counted by the emulator, no clock).
        let target = emulator.counters().token_refresh_token + 1 + trial % 4;
        mailup_auth_tests::until("the helper refreshes", || {
            emulator.counters().token_refresh_token >= target
        })
        .await;
        assert_eq!(
            child.try_wait().unwrap(),
            None,
            "trial {trial}: died on its own"
        );
        child.start_kill().unwrap();
        assert!(!child.wait().await.unwrap().success());

        let entry = stored_entry(store_dir.clone(), None).await;
        let refresh = stored_refresh(&entry)
            .unwrap_or_else(|| panic!("trial {trial}: no refresh token stored: {entry:?}"));
        if live_or_rotated_in_window(&emulator, &refresh, trial) {
            live += 1;
        }
    }
    assert!(live > 0, "no trial ended with a live stored token");
    emulator.shutdown().await;
}

/// Callers that give up (timeouts of a few hundred microseconds, `select!` against a yield)
/// in refresh storms on an in-place store, round after round: each round sends exactly one
/// refresh, the token the store holds is always the live one, and the client keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storms_of_callers_that_give_up_keep_the_live_token_on_disk() {
    let emulator = Emulator::builder().start().await.unwrap();
    emulator.set_token_latency(Duration::from_millis(2));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let clock = Arc::new(ManualClock::starting_now());
    let store = in_place_store(&path, None);
    let reader = store.clone();
    let client = client_on(&emulator, store, clock.clone()).await;
    password_login(&client).await;
    for round in 0..15u64 {
        clock.advance(Duration::from_secs(2 * 3600));
        let before = emulator.counters().token_refresh_token;
        let callers: Vec<_> = (0..100u64)
            .map(|n| {
                let client = client.clone();
                tokio::spawn(async move {
                    let wait = Duration::from_micros((n * 37 + round * 101) % 3_000);
                    if n % 4 == 0 {
                        tokio::select! {
                            biased;
                            () = tokio::task::yield_now() => None,
                            token = client.access_token() => Some(token),
                        }
                    } else {
                        tokio::time::timeout(wait, client.access_token()).await.ok()
                    }
                })
            })
            .collect();
        for caller in callers {
            if let Some(result) = caller.await.expect("no caller panicked") {
                result.unwrap_or_else(|e| panic!("round {round}: a caller failed: {e}"));
            }
        }
        let token = client
            .access_token()
            .await
            .unwrap_or_else(|e| panic!("round {round}: the client stopped working: {e}"));
        assert_eq!(
            emulator.counters().token_refresh_token - before,
            1,
            "round {round}: not exactly one refresh"
        );
        assert!(emulator.is_access_token_live(token.secret()));
        let entry = reader.load_entry("default").await.unwrap();
        let refresh = stored_refresh(&entry).expect("a stored refresh token");
        assert!(
            emulator.is_refresh_token_live(&refresh),
            "round {round}: the store holds a dead refresh token"
        );
    }
    emulator.shutdown().await;
}
