//! The facade on a sled store whose saves run on the calling thread
//! (`WriteThread::CallingThread`, issue 13's opt-in), end to end: the emulator over loopback,
//! real sled files in a temp dir.
//!
//! - 1,000 callers on an expired token on a multi-thread runtime: one refresh request, every
//!   caller served, and the rotated refresh token on disk (a reopened store holds the live
//!   one);
//! - a current-thread runtime inside a `LocalSet` (where `block_in_place` would panic): log in,
//!   refresh, call the API and log out (a delete, which compacts on the blocking pool); the
//!   store holds a tombstone afterwards.

use std::sync::Arc;
use std::time::Duration;

use mailup_auth::{
    MailUpClient, ManualClock, SledTokenStore, StoredProfile, TokenStore as _, WriteThread,
};
use mailup_auth_emulator::Emulator;
use mailup_auth_tests::{client_builder, password_login};

/// A client on a fresh sled store in `dir` with its saves on the calling thread and the
/// store's own cross-process lease, the pattern `MailUpClientBuilder::store` documents.
async fn in_place_client(
    emulator: &Emulator,
    dir: &std::path::Path,
    clock: Arc<ManualClock>,
) -> MailUpClient {
    let store = SledTokenStore::open(dir)
        .unwrap()
        .with_write_thread(WriteThread::CallingThread);
    client_builder(emulator)
        .api_base(emulator.console_api_base().as_str())
        .refresh_lease(Some(Arc::new(store.refresh_lease())))
        .store(Arc::new(store))
        .clock(clock)
        .build()
        .await
        .unwrap()
}

/// The refresh token in the store at `dir`, read by a fresh open.
fn stored_refresh_token(dir: &std::path::Path) -> String {
    let store = SledTokenStore::open(dir).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let record = runtime
        .block_on(store.load("default"))
        .unwrap()
        .expect("a record");
    record
        .value
        .tokens
        .and_then(|tokens| tokens.refresh_token)
        .expect("a refresh token")
        .secret()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_on_saves_in_place_sends_one_refresh_and_keeps_the_rotated_token() {
    let emulator = Emulator::builder().start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let clock = Arc::new(ManualClock::starting_now());
    let client = in_place_client(&emulator, &path, clock.clone()).await;
    password_login(&client).await;
    let first = client
        .cached_access_token()
        .expect("a token after the login");
    clock.advance(Duration::from_secs(2 * 3600));
    assert!(client.cached_access_token().is_none(), "the token expired");

    let before = emulator.counters().token_refresh_token;
    let callers: Vec<_> = (0..1_000)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.access_token().await })
        })
        .collect();
    let mut served = std::collections::BTreeSet::new();
    for caller in callers {
        let token = caller.await.unwrap().expect("every caller is served");
        served.insert(token.secret().to_owned());
    }
    assert_eq!(
        emulator.counters().token_refresh_token - before,
        1,
        "one refresh request for 1,000 callers"
    );
    assert_eq!(served.len(), 1, "every caller got the same new token");
    assert!(!served.contains(first.secret()), "a new token, not the old");

    drop(client);
    let stored = tokio::task::spawn_blocking(move || stored_refresh_token(&path))
        .await
        .unwrap();
    assert!(
        emulator.is_refresh_token_live(&stored),
        "the store holds the refresh token MailUp rotated to"
    );
    emulator.shutdown().await;
}

#[test]
fn saves_in_place_work_in_a_local_set_on_a_current_thread_runtime() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async {
        let emulator = Emulator::builder().start().await.unwrap();
        let clock = Arc::new(ManualClock::starting_now());
        let client = in_place_client(&emulator, &path, clock.clone()).await;
        password_login(&client).await;
        let first = client.cached_access_token().unwrap();
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
        assert_ne!(refreshed.secret(), first.secret());
        assert!(info.is_object(), "{info}");
        client.logout().await.unwrap();
        assert!(client.cached_access_token().is_none());
        drop(client);
        emulator.shutdown().await;
    });
    drop(runtime);
    let store = SledTokenStore::open(&path).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    assert!(matches!(
        runtime.block_on(store.load_entry("default")).unwrap(),
        StoredProfile::Deleted
    ));
}
