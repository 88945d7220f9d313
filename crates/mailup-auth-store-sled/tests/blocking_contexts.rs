//! Found by the hostile review of issue 13 (`block_in_place` panicked in a `LocalSet`): the
//! store's calls from every kind of tokio context an application can be in. Each scenario saves, loads and looks
//! (`load_entry_if_changed`, which reads in place) through a real sled store
//! in a temp dir and must finish (no panic, no deadlock): each runs on its own thread, waited
//! for with a generous bound (a hang fails the test instead of hanging it; nothing is timed).

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use mailup_auth_core::{
    AccessToken, ProfileRecord, RefreshToken, StoredProfile, TokenSet, TokenStore, UnixTime,
};
use mailup_auth_store_sled::SledTokenStore;
use tokio::task::LocalSet;

/// How long a scenario may take before it counts as hung (each does a few flushed saves).
const HUNG: Duration = Duration::from_secs(60);

mod support;
use support::{block_on, current_thread, multi_thread};

fn record(n: u32) -> ProfileRecord {
    ProfileRecord::with_tokens(TokenSet {
        access_token: AccessToken::new(format!("access-{n}-c0ffee")),
        refresh_token: Some(RefreshToken::new(format!("refresh-{n}-c0ffee"))),
        expires_at: UnixTime::from_secs(1_700_003_600),
        obtained_at: UnixTime::from_secs(1_700_000_000),
        token_type: None,
        scope: None,
    })
}

/// A save, a load that sees it, and a second save on top: the calls a refresh makes.
async fn round_trip(store: &SledTokenStore, profile: &str) {
    let expected = store.load(profile).await.unwrap().map(|v| v.version);
    let version = store.save(profile, &record(1), expected).await.unwrap();
    let loaded = store.load(profile).await.unwrap().unwrap();
    assert_eq!(loaded.version, version);
    assert_eq!(loaded.value, record(1));
    // The look a refresh takes first (a read in place): unchanged, then changed.
    assert!(store
        .load_entry_if_changed(profile, version)
        .await
        .unwrap()
        .is_none());
    let newer = store
        .save(profile, &record(2), Some(version))
        .await
        .unwrap();
    match store.load_entry_if_changed(profile, version).await.unwrap() {
        Some(StoredProfile::Record(stored)) => {
            assert_eq!(stored.version, newer);
            assert_eq!(stored.value, record(2));
        }
        other => panic!("the newer record was not answered: {other:?}"),
    }
}

/// Runs `scenario` with a fresh store on its own thread; fails if it panics or hangs.
fn scenario(name: &str, scenario: impl FnOnce(SledTokenStore) + Send + 'static) {
    let dir = tempfile::tempdir().unwrap();
    let store = SledTokenStore::open(dir.path()).unwrap();
    let (done, finished) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name(format!("scenario {name}"))
        .spawn(move || {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                scenario(store);
            }));
            let _ = done.send(outcome.map_err(|panic| {
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default()
            }));
        })
        .unwrap();
    match finished.recv_timeout(HUNG) {
        Ok(Ok(())) => thread.join().unwrap(),
        Ok(Err(panic)) => panic!("{name}: the store's call panicked: {panic}"),
        Err(_) => panic!("{name}: the store's call did not finish (deadlock?)"),
    }
}

#[test]
fn a_current_thread_runtime() {
    scenario("current-thread", |store| {
        current_thread().block_on(round_trip(&store, "p"));
    });
}

#[test]
fn a_multi_thread_runtime_block_on_outside_any_worker() {
    scenario("multi-thread block_on", |store| {
        multi_thread(2).block_on(round_trip(&store, "p"));
    });
}

#[test]
fn a_task_on_a_multi_thread_worker() {
    scenario("multi-thread worker", |store| {
        multi_thread(2).block_on(async move {
            tokio::spawn(async move { round_trip(&store, "p").await })
                .await
                .unwrap();
        });
    });
}

#[test]
fn a_local_set_on_a_multi_thread_runtime() {
    scenario("LocalSet::block_on, multi-thread", |store| {
        let runtime = multi_thread(2);
        LocalSet::new().block_on(&runtime, round_trip(&store, "p"));
    });
}

#[test]
fn a_spawn_local_task_on_a_multi_thread_runtime() {
    scenario("spawn_local, multi-thread", |store| {
        let runtime = multi_thread(2);
        let local = LocalSet::new();
        local.block_on(&runtime, async move {
            tokio::task::spawn_local(async move { round_trip(&store, "p").await })
                .await
                .unwrap();
        });
    });
}

#[test]
fn a_local_set_awaited_inside_multi_thread_block_on() {
    scenario("LocalSet::run_until inside block_on", |store| {
        multi_thread(2).block_on(async move {
            LocalSet::new().run_until(round_trip(&store, "p")).await;
        });
    });
}

#[test]
fn spawn_blocking_then_the_runtime_handle_block_on() {
    scenario("spawn_blocking + Handle::block_on", |store| {
        multi_thread(2).block_on(async move {
            let handle = tokio::runtime::Handle::current();
            tokio::task::spawn_blocking(move || handle.block_on(round_trip(&store, "p")))
                .await
                .unwrap();
        });
    });
}

#[test]
fn a_current_thread_runtime_nested_in_a_blocking_thread() {
    scenario("current-thread inside spawn_blocking", |store| {
        multi_thread(2).block_on(async move {
            tokio::task::spawn_blocking(move || current_thread().block_on(round_trip(&store, "p")))
                .await
                .unwrap();
        });
    });
}

#[test]
fn a_current_thread_runtime_with_a_multi_thread_handle_entered() {
    scenario(
        "current-thread with a multi-thread handle entered",
        |store| {
            let outer = multi_thread(2);
            let handle = outer.handle().clone();
            current_thread().block_on(async move {
                let _entered = handle.enter();
                round_trip(&store, "p").await;
            });
            // `outer` is dropped here, outside any runtime.
            drop(outer);
        },
    );
}

#[test]
fn a_synchronous_executor_inside_a_worker_task() {
    scenario("block_on of another executor inside a worker", |store| {
        multi_thread(2).block_on(async move {
            tokio::spawn(async move { block_on(round_trip(&store, "p")) })
                .await
                .unwrap();
        });
    });
}

#[test]
fn joined_and_selected_with_other_futures_of_the_same_task() {
    scenario("join!/select! in one task", |store| {
        multi_thread(2).block_on(async move {
            tokio::spawn(async move {
                // Two calls and a channel whose two ends are in the same task: nothing may wait
                // for a future that cannot run while a call blocks.
                let (send, receive) = tokio::sync::oneshot::channel::<u32>();
                let (_, _, received) = tokio::join!(
                    round_trip(&store, "a"),
                    async {
                        round_trip(&store, "b").await;
                        send.send(7).unwrap();
                    },
                    receive
                );
                assert_eq!(received.unwrap(), 7);
                let mut ticks = 0;
                let mut calls = std::pin::pin!(round_trip(&store, "c"));
                loop {
                    tokio::select! {
                        () = &mut calls => break,
                        () = tokio::task::yield_now() => ticks += 1,
                    }
                }
                assert!(ticks < 1_000_000, "select! came back {ticks} times");
            })
            .await
            .unwrap();
        });
    });
}

#[test]
fn every_worker_busy_on_a_one_worker_runtime() {
    scenario("one worker, many tasks", |store| {
        let runtime = multi_thread(1);
        runtime.block_on(async move {
            let store = Arc::new(store);
            // A lock held across a store call, and other tasks queued behind it and behind
            // the only worker: all finish.
            let lock = Arc::new(tokio::sync::Mutex::new(0_u32));
            let mut tasks = Vec::new();
            for n in 0..16 {
                let store = store.clone();
                let lock = lock.clone();
                tasks.push(tokio::spawn(async move {
                    let mut held = lock.lock().await;
                    round_trip(&store, &format!("p{n}")).await;
                    *held += 1;
                }));
            }
            for task in tasks {
                task.await.unwrap();
            }
            assert_eq!(*lock.lock().await, 16);
        });
    });
}
