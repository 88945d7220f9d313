//! Hostile review of `WriteThread::CallingThread` (a save's compare-and-swap and fsync on the
//! thread that awaits it): saves racing compactions, deletes, wipes and pooled saves from many
//! threads and tasks; every kind of runtime context; cancellation at every poll (including
//! during the post-save wipe, and with the runtime going away); encrypted stores; huge records;
//! bad profile names; kill -9 of a process saving in place. Real sled stores in temp dirs.
//! Every scenario runs on its own thread, waited for with a generous bound (a hang fails the
//! test instead of hanging it; nothing is timed).

use std::collections::BTreeSet;
use std::future::Future;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use mailup_auth_core::{
    AccessToken, ProfileRecord, RefreshToken, StoreError, StoredProfile, TokenSet, TokenStore,
    UnixTime,
};
use mailup_auth_store_sled::{KeySource, SledTokenStore, WriteThread};
use tokio::runtime::Builder;
use tokio::task::LocalSet;

const HANG: Duration = Duration::from_secs(240);

mod support;
use support::{block_on, current_thread, multi_thread};

/// [`support::bounded`] with this file's bound.
fn bounded(name: &str, scenario: impl FnOnce() + Send + 'static) {
    support::bounded(name, HANG, scenario);
}

fn tokens(access: String, refresh: Option<String>) -> TokenSet {
    TokenSet {
        access_token: AccessToken::new(access),
        refresh_token: refresh.map(RefreshToken::new),
        expires_at: UnixTime::from_secs(1_700_003_600),
        obtained_at: UnixTime::from_secs(1_700_000_000),
        token_type: Some("bearer".into()),
        scope: None,
    }
}

/// A record with both tokens, marked by `n`.
fn record(n: u64) -> ProfileRecord {
    ProfileRecord::with_tokens(tokens(
        format!("at-{n}-feedface"),
        Some(format!("rt-{n}-feedface")),
    ))
}

/// A record without a refresh token: saving it over `record(_)` removes a secret (the save
/// then wipes the store).
fn without_refresh(n: u64) -> ProfileRecord {
    ProfileRecord::with_tokens(tokens(format!("at-{n}-feedface"), None))
}

fn in_place(store: SledTokenStore) -> SledTokenStore {
    store.with_write_thread(WriteThread::CallingThread)
}

/// Polls `future` once with a waker that does nothing: `Some(output)` if it finished.
fn poll_once<F: Future>(future: std::pin::Pin<&mut F>) -> Option<F::Output> {
    let waker = Waker::noop();
    let mut cx = Context::from_waker(waker);
    match future.poll(&mut cx) {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
}

/// Opens with a bounded wait: a dropped store (or a wipe still running on the blocking pool
/// with a clone of it) may hold the store a little after the caller let go.
fn open_retry(path: &Path, key: Option<&KeySource>) -> SledTokenStore {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match SledTokenStore::open_with(path, key) {
            Err(StoreError::Locked { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            result => return result.unwrap(),
        }
    }
}

/// The generation `CURRENT` names.
fn current_generation(store: &Path) -> String {
    std::fs::read_to_string(store.join("CURRENT"))
        .unwrap()
        .trim()
        .to_owned()
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

fn key_file(dir: &Path) -> KeySource {
    KeySource::File(dir.join("store.key"))
}

fn stored_version(entry: &StoredProfile) -> Option<u64> {
    match entry {
        StoredProfile::Record(stored) => Some(stored.version),
        _ => None,
    }
}

/// One compare-and-swap increment of `profile` through `store`: reads the version, saves
/// `record(version + 1)` (or, on odd versions when `strip` says so, the same without a refresh
/// token, which wipes); on success, records the version it got in `won`.
async fn increment(
    store: &SledTokenStore,
    profile: &str,
    strip: bool,
    won: &Mutex<Vec<u64>>,
) -> Result<u64, StoreError> {
    let expected = store.load(profile).await?.map(|stored| stored.version);
    let next = expected.unwrap_or(0) + 1;
    let value = if strip && next % 2 == 1 {
        without_refresh(next)
    } else {
        record(next)
    };
    let version = store.save(profile, &value, expected).await?;
    won.lock().unwrap().push(version);
    Ok(version)
}

/// Checks that the versions won on `profile` are exactly 1..=n (one winner per version, no
/// gap), and that the store holds version n with the record its winner saved.
fn check_chain(store: &SledTokenStore, profile: &str, won: &Mutex<Vec<u64>>, strip: bool) {
    let mut won = won.lock().unwrap().clone();
    won.sort_unstable();
    let n = won.len() as u64;
    assert!(n > 0, "{profile}: no save won");
    assert_eq!(
        won,
        (1..=n).collect::<Vec<_>>(),
        "{profile}: two saves won the same version, or a version was skipped"
    );
    let stored = block_on(store.load(profile)).unwrap().unwrap();
    assert_eq!(stored.version, n, "{profile}: the stored version");
    let want = if strip && n % 2 == 1 {
        without_refresh(n)
    } else {
        record(n)
    };
    assert_eq!(stored.value, want, "{profile}: the stored record");
}

/// In-place saves from tasks on a multi-thread runtime, from current-thread runtimes on their
/// own threads and from a `LocalSet`, racing pooled saves on the same profiles, compactions in
/// a loop, deletes of other profiles, and saves that remove secrets (each a wipe): every
/// version is won exactly once, the store holds the last winner's record, and a reopen sees
/// the same.
fn race(encrypted: bool) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let key = encrypted.then(|| key_file(dir.path()));
    let pooled = SledTokenStore::open_with(&path, key.as_ref()).unwrap();
    assert_eq!(pooled.is_encrypted(), encrypted);
    let store = in_place(pooled.clone());
    assert_eq!(store.is_encrypted(), encrypted);
    let stop = Arc::new(AtomicBool::new(false));
    let won: Arc<[Mutex<Vec<u64>>; 3]> = Arc::new(Default::default());
    // Profile 0: plain increments; profile 1: every other save removes a secret (a wipe).
    // Profile 2: pooled and in-place saves mixed.
    const ROUNDS: u64 = 25;

    let compactions = Arc::new(AtomicU64::new(0));
    let compactor = {
        let (store, stop, compactions) = (pooled.clone(), stop.clone(), compactions.clone());
        std::thread::spawn(move || {
            let runtime = current_thread();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) && n < 400 {
                runtime.block_on(store.compact()).unwrap();
                compactions.fetch_add(1, Ordering::Relaxed);
                n += 1;
            }
        })
    };
    let deleter = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            let runtime = current_thread();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) && n < 400 {
                let profile = format!("gone-{}", n % 3);
                runtime.block_on(async {
                    let expected = store.load(&profile).await.unwrap().map(|s| s.version);
                    match store.save(&profile, &record(n), expected).await {
                        Ok(_) | Err(StoreError::Conflict { .. }) => {}
                        Err(other) => panic!("{profile}: {other}"),
                    }
                    store.delete(&profile).await.unwrap();
                    assert!(matches!(
                        store.load_entry(&profile).await.unwrap(),
                        StoredProfile::Deleted
                    ));
                });
                n += 1;
            }
        })
    };

    let mut workers = Vec::new();
    // Tasks on a multi-thread runtime.
    {
        let (store, pooled, won) = (store.clone(), pooled.clone(), won.clone());
        workers.push(std::thread::spawn(move || {
            multi_thread(2).block_on(async move {
                let mut tasks = Vec::new();
                for t in 0..8u64 {
                    let (store, pooled, won) = (store.clone(), pooled.clone(), won.clone());
                    tasks.push(tokio::spawn(async move {
                        for _ in 0..ROUNDS {
                            let profile = (t % 3) as usize;
                            let handle = if profile == 2 && t % 2 == 0 {
                                &pooled
                            } else {
                                &store
                            };
                            match increment(
                                handle,
                                &format!("p{profile}"),
                                profile == 1,
                                &won[profile],
                            )
                            .await
                            {
                                Ok(_) | Err(StoreError::Conflict { .. }) => {}
                                Err(other) => panic!("task {t}: {other}"),
                            }
                        }
                    }));
                }
                for task in tasks {
                    task.await.unwrap();
                }
            });
        }));
    }
    // Current-thread runtimes on their own threads, and one LocalSet with spawn_local.
    for t in 0..3u64 {
        let (store, won) = (store.clone(), won.clone());
        workers.push(std::thread::spawn(move || {
            let runtime = current_thread();
            let local = LocalSet::new();
            local.block_on(&runtime, async move {
                let mut tasks = Vec::new();
                for l in 0..3u64 {
                    let (store, won) = (store.clone(), won.clone());
                    let spawn = move || async move {
                        for _ in 0..ROUNDS {
                            let profile = ((t + l) % 3) as usize;
                            match increment(
                                &store,
                                &format!("p{profile}"),
                                profile == 1,
                                &won[profile],
                            )
                            .await
                            {
                                Ok(_) | Err(StoreError::Conflict { .. }) => {}
                                Err(other) => panic!("local task {t}/{l}: {other}"),
                            }
                        }
                    };
                    if t == 0 {
                        tasks.push(tokio::task::spawn_local(spawn()));
                    } else {
                        tasks.push(tokio::spawn(spawn()));
                    }
                }
                for task in tasks {
                    task.await.unwrap();
                }
            });
        }));
    }
    // Plain threads with no runtime at all.
    {
        let (store, won) = (store.clone(), won.clone());
        workers.push(std::thread::spawn(move || {
            for _ in 0..ROUNDS {
                match block_on(increment(&store, "p0", false, &won[0])) {
                    Ok(_) | Err(StoreError::Conflict { .. }) => {}
                    Err(other) => panic!("no runtime: {other}"),
                }
            }
        }));
    }
    for worker in workers {
        worker.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    compactor.join().unwrap();
    deleter.join().unwrap();
    assert!(compactions.load(Ordering::Relaxed) > 0);

    for (profile, won) in won.iter().enumerate() {
        check_chain(&store, &format!("p{profile}"), won, profile == 1);
    }
    let names = block_on(store.profiles()).unwrap();
    assert_eq!(names, ["p0", "p1", "p2"], "tombstones are not listed");
    let final_versions: Vec<u64> = (0..3)
        .map(|p| {
            block_on(store.load(&format!("p{p}")))
                .unwrap()
                .unwrap()
                .version
        })
        .collect();
    drop((store, pooled));
    let reopened = open_retry(&path, key.as_ref());
    for (profile, version) in final_versions.iter().enumerate() {
        let stored = block_on(reopened.load(&format!("p{profile}")))
            .unwrap()
            .unwrap();
        assert_eq!(stored.version, *version, "p{profile} after a reopen");
    }
    for gone in 0..3 {
        assert!(matches!(
            block_on(reopened.load_entry(&format!("gone-{gone}"))).unwrap(),
            StoredProfile::Deleted | StoredProfile::Absent
        ));
    }
}

#[test]
fn in_place_saves_racing_compactions_deletes_wipes_and_pooled_saves() {
    bounded("race, clear", || race(false));
}

#[test]
fn in_place_saves_racing_compactions_deletes_wipes_and_pooled_saves_encrypted() {
    bounded("race, encrypted", || race(true));
}

/// Per handle, black box: an in-place handle's save is done in its first poll (no trip to
/// the pool); its clones too; the handle it was made from, and a handle made from a clone
/// with `BlockingPool` again, still go to the pool (their first poll is pending).
#[test]
fn the_setting_is_per_handle_and_kept_by_clones() {
    bounded("per handle", || {
        let dir = tempfile::tempdir().unwrap();
        let pooled = SledTokenStore::open(dir.path()).unwrap();
        let calling = in_place(pooled.clone());
        let clone = calling.clone();
        let back = calling.clone().with_write_thread(WriteThread::BlockingPool);
        assert_eq!(pooled.write_thread(), WriteThread::BlockingPool);
        assert_eq!(clone.write_thread(), WriteThread::CallingThread);
        assert_eq!(back.write_thread(), WriteThread::BlockingPool);
        assert_eq!(calling.write_thread(), WriteThread::CallingThread);
        let runtime = current_thread();
        let _entered = runtime.enter();
        let mut version = None;
        for (name, handle, in_place) in [
            ("in place", &calling, true),
            ("clone", &clone, true),
            ("original", &pooled, false),
            ("set back", &back, false),
        ] {
            let value = record(1);
            let mut save = Box::pin(handle.save("p", &value, version));
            match poll_once(save.as_mut()) {
                Some(saved) => {
                    assert!(in_place, "{name}: a pooled save finished in its first poll");
                    version = Some(saved.unwrap());
                }
                None => {
                    assert!(!in_place, "{name}: an in-place save waited");
                    version = Some(runtime.block_on(save).unwrap());
                }
            }
        }
        assert_eq!(version, Some(4));
    });
}

/// A save that removes a secret is wiped before it returns, in every context: afterwards the
/// old refresh token is in no file of the store, and the generation changed.
#[test]
fn a_secret_removing_save_in_place_wipes_before_returning_in_every_context() {
    type Runner = fn(SledTokenStore, Box<dyn FnOnce(SledTokenStore) -> BoxedSave + Send>);
    type BoxedSave = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;
    let contexts: Vec<(&str, Runner)> = vec![
        ("current-thread", |store, save| {
            current_thread().block_on(save(store));
        }),
        ("multi-thread block_on", |store, save| {
            multi_thread(2).block_on(save(store));
        }),
        ("multi-thread worker", |store, save| {
            multi_thread(2).block_on(async move { tokio::spawn(save(store)).await.unwrap() });
        }),
        ("LocalSet::block_on", |store, save| {
            LocalSet::new().block_on(&current_thread(), save(store));
        }),
        ("spawn_local", |store, save| {
            let runtime = current_thread();
            LocalSet::new().block_on(&runtime, async move {
                tokio::task::spawn_local(save(store)).await.unwrap();
            });
        }),
        ("run_until in multi-thread", |store, save| {
            multi_thread(2).block_on(async move {
                LocalSet::new().run_until(save(store)).await;
            });
        }),
        ("spawn_blocking + Handle::block_on", |store, save| {
            multi_thread(2).block_on(async move {
                let handle = tokio::runtime::Handle::current();
                tokio::task::spawn_blocking(move || handle.block_on(save(store)))
                    .await
                    .unwrap();
            });
        }),
        ("current-thread nested in spawn_blocking", |store, save| {
            multi_thread(2).block_on(async move {
                tokio::task::spawn_blocking(move || current_thread().block_on(save(store)))
                    .await
                    .unwrap();
            });
        }),
        ("no runtime", |store, save| block_on(save(store))),
        ("block_in_place on a worker", |store, save| {
            multi_thread(2).block_on(async move {
                tokio::spawn(async move {
                    tokio::task::block_in_place(|| {
                        tokio::runtime::Handle::current().block_on(save(store))
                    })
                })
                .await
                .unwrap();
            });
        }),
    ];
    for (name, run) in contexts {
        bounded(name, move || {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("store");
            let store = in_place(SledTokenStore::open(&path).unwrap());
            let secret = format!("rt-wiped-{}", name.len());
            let with = ProfileRecord::with_tokens(tokens("at-0".into(), Some(secret.clone())));
            let version = block_on(store.save("p", &with, None)).unwrap();
            // The secret is in the store's files (flushed).
            assert!(!files_containing(&path, secret.as_bytes()).is_empty());
            let before = current_generation(&path);
            let check = path.clone();
            run(
                store,
                Box::new(move |store| {
                    Box::pin(async move {
                        let after = store
                            .save("p", &without_refresh(0), Some(version))
                            .await
                            .unwrap();
                        assert_eq!(after, version + 1);
                        // Checked right as the save returns, on the same task.
                        assert_ne!(
                            current_generation(&check),
                            before,
                            "{name}: the save returned before its wipe"
                        );
                        let left = files_containing(&check, secret.as_bytes());
                        assert!(
                            left.is_empty(),
                            "{name}: the old secret is still in {left:?}"
                        );
                    })
                }),
            );
        });
    }
}

// Found by the hostile review (it failed before the fix): a `CallingThread` save that removes
// a secret returned `Ok` without wiping it when the runtime it found (`Handle::try_current`)
// could no longer run blocking tasks (shut down, or shutting down): the record was saved in
// place, the wipe handed to `spawn_blocking`, whose `JoinError` was ignored, and the replaced
// refresh token stayed in the store's files until the next open. Fixed: a wipe the pool
// cannot run runs on the calling thread. (The default, `BlockingPool`, runs the whole save as
// one pooled task, so there it fails — "token store task did not complete" — without saving.)
#[test]
fn a_secret_removing_save_in_place_with_a_shut_down_runtime_entered_wipes_or_fails() {
    bounded("shut-down runtime entered", || {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let store = in_place(SledTokenStore::open(&path).unwrap());
        let secret = "rt-must-be-wiped-8d1f";
        let with = ProfileRecord::with_tokens(tokens("at-0".into(), Some(secret.into())));
        let version = block_on(store.save("p", &with, None)).unwrap();
        let before = current_generation(&path);
        let runtime = current_thread();
        let handle = runtime.handle().clone();
        runtime.shutdown_background();
        // Code that runs while a runtime shuts down (a destructor, a synchronous callback)
        // with its handle still entered.
        let _entered = handle.enter();
        let saved = block_on(store.save("p", &without_refresh(0), Some(version)));
        let left = files_containing(&path, secret.as_bytes());
        match saved {
            Ok(after) => {
                assert_eq!(after, version + 1);
                assert!(
                    current_generation(&path) != before && left.is_empty(),
                    "the save returned Ok({after}) but did not wipe: generation still \
                     {before}, the replaced refresh token is still in {left:?}"
                );
            }
            Err(error) => {
                // Failing is acceptable, but then the old record must still be there.
                let stored = block_on(store.load("p")).unwrap().unwrap();
                assert_eq!(
                    stored.version, version,
                    "a failed save changed the store: {error}"
                );
            }
        }
    });
}

/// Cancellation at every poll: a secret-removing save (and a plain one) dropped after 0, 1,
/// 2, ... polls, on a current-thread runtime, while another thread compacts: the store always
/// holds either the old or the new record (never anything else), a reopen works, and once
/// reopened no replaced refresh token is left in its files.
#[test]
fn in_place_saves_dropped_at_every_poll_leave_a_whole_record_and_a_store_that_opens() {
    bounded("cancel at every poll", || {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let mut secrets = Vec::new();
        for polls in 0..6usize {
            let runtime = current_thread();
            let store = in_place(open_retry(&path, None));
            let compactor = {
                let store = store.clone();
                std::thread::spawn(move || {
                    for _ in 0..3 {
                        block_on(store.compact()).unwrap();
                    }
                })
            };
            let secret = format!("rt-cancel-{polls}-77aa");
            let with =
                ProfileRecord::with_tokens(tokens(format!("at-{polls}"), Some(secret.clone())));
            let current = runtime
                .block_on(store.load("p"))
                .unwrap()
                .map(|s| s.version);
            let version = runtime.block_on(store.save("p", &with, current)).unwrap();
            secrets.push(secret);
            let stripped = without_refresh(polls as u64);
            {
                let _entered = runtime.enter();
                let mut save = Box::pin(store.save("p", &stripped, Some(version)));
                let mut done = None;
                for _ in 0..polls {
                    if let Some(result) = poll_once(save.as_mut()) {
                        done = Some(result);
                        break;
                    }
                    std::thread::yield_now();
                }
                drop(save);
                if let Some(result) = done {
                    assert_eq!(result.unwrap(), version + 1);
                }
            }
            let stored = runtime.block_on(store.load("p")).unwrap().unwrap();
            assert!(
                (stored.version == version && stored.value == with)
                    || (stored.version == version + 1 && stored.value == stripped),
                "polls {polls}: the store holds v{} {:?}",
                stored.version,
                stored.value
            );
            compactor.join().unwrap();
            // The runtime goes away with the wipe possibly still queued on its pool.
            drop(runtime);
            drop(store);
        }
        let reopened = open_retry(&path, None);
        let stored = block_on(reopened.load("p")).unwrap().unwrap();
        assert!(stored.value.tokens.is_some());
        drop(reopened);
        let reopened = open_retry(&path, None);
        for secret in &secrets[..secrets.len() - 1] {
            let left = files_containing(&path, secret.as_bytes());
            assert!(left.is_empty(), "{secret} left in {left:?} after a reopen");
        }
        drop(reopened);
    });
}

/// `select!`/timeouts dropping in-place saves that race compactions and wipes from many tasks:
/// every save that reported a version is stored (or superseded by a later winner), the chain
/// of versions has no hole, and the store reopens.
#[test]
fn in_place_saves_cancelled_by_select_and_timeouts_racing_wipes() {
    bounded("select and timeouts", || {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let store = in_place(SledTokenStore::open(&path).unwrap());
        let won = Arc::new(Mutex::new(Vec::new()));
        multi_thread(2).block_on(async {
            let mut tasks = Vec::new();
            for t in 0..12u64 {
                let (store, won) = (store.clone(), won.clone());
                tasks.push(tokio::spawn(async move {
                    for round in 0..20u64 {
                        let fut = increment(&store, "p", true, &won);
                        if (t + round) % 3 == 0 {
                            tokio::select! {
                                biased;
                                _ = tokio::task::yield_now() => {}
                                _ = fut => {}
                            }
                        } else if (t + round) % 3 == 1 {
                            let _ = tokio::time::timeout(Duration::from_micros(50), fut).await;
                        } else {
                            match fut.await {
                                Ok(_) | Err(StoreError::Conflict { .. }) => {}
                                Err(other) => panic!("{other}"),
                            }
                        }
                        if round % 5 == 0 {
                            store.compact().await.unwrap();
                        }
                    }
                }));
            }
            for task in tasks {
                task.await.unwrap();
            }
        });
        let stored = block_on(store.load("p")).unwrap().unwrap();
        let mut won = won.lock().unwrap().clone();
        won.sort_unstable();
        won.dedup();
        assert!(
            won.iter().all(|v| *v <= stored.version),
            "a reported version is above the stored one"
        );
        // Versions reported by saves that returned are a subset of the chain 1..=stored.
        assert!(won.last().copied().unwrap_or(0) <= stored.version);
        drop(store);
        let reopened = open_retry(&path, None);
        let again = block_on(reopened.load("p")).unwrap().unwrap();
        assert_eq!(again.version, stored.version);
        assert_eq!(again.value, stored.value);
    });
}

/// Huge records (8 MiB of token) saved in place, in clear and encrypted: stored whole, read
/// back after a reopen, and a huge record replaced by one without its refresh token is wiped.
#[test]
fn huge_records_in_place_clear_and_encrypted() {
    for encrypted in [false, true] {
        bounded("huge records", move || {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("store");
            let key = encrypted.then(|| key_file(dir.path()));
            let store = in_place(SledTokenStore::open_with(&path, key.as_ref()).unwrap());
            let big = "x".repeat(8 << 20);
            let secret = format!("rt-huge-{encrypted}-99");
            let huge = ProfileRecord::with_tokens(tokens(big.clone(), Some(secret.clone())));
            let runtime = current_thread();
            let v1 = runtime.block_on(store.save("p", &huge, None)).unwrap();
            let v2 = runtime.block_on(store.save("p", &huge, Some(v1))).unwrap();
            assert_eq!(v2, v1 + 1);
            drop(store);
            let store = in_place(open_retry(&path, key.as_ref()));
            let stored = runtime.block_on(store.load("p")).unwrap().unwrap();
            assert_eq!((stored.version, &stored.value), (v2, &huge));
            let stripped = ProfileRecord::with_tokens(tokens(big, None));
            let v3 = runtime
                .block_on(store.save("p", &stripped, Some(v2)))
                .unwrap();
            if !encrypted {
                let left = files_containing(&path, secret.as_bytes());
                assert!(
                    left.is_empty(),
                    "the huge record's secret is left in {left:?}"
                );
            }
            drop(store);
            let store = open_retry(&path, key.as_ref());
            let stored = runtime.block_on(store.load("p")).unwrap().unwrap();
            assert_eq!((stored.version, stored.value), (v3, stripped));
        });
    }
}

/// Bad profile names are refused by an in-place save exactly as by a pooled one (the same
/// error), and write nothing; the longest valid name and odd valid names work.
#[test]
fn bad_profile_names_are_refused_in_place_as_on_the_pool() {
    bounded("bad names", || {
        let dir = tempfile::tempdir().unwrap();
        let pooled = SledTokenStore::open(dir.path()).unwrap();
        let calling = in_place(pooled.clone());
        let runtime = current_thread();
        let long = "n".repeat(129);
        let multibyte_long = "é".repeat(65);
        for bad in [
            "",
            "a\nb",
            "nul\0",
            "\u{7f}",
            "tab\t",
            &long,
            &multibyte_long,
        ] {
            let a = runtime.block_on(calling.save(bad, &record(1), None));
            let b = runtime.block_on(pooled.save(bad, &record(1), None));
            match (&a, &b) {
                (Err(StoreError::InvalidProfile(x)), Err(StoreError::InvalidProfile(y))) => {
                    assert_eq!(x, y, "{bad:?}")
                }
                _ => panic!("{bad:?}: in place {a:?}, pooled {b:?}"),
            }
        }
        assert!(runtime.block_on(calling.profiles()).unwrap().is_empty());
        let longest = "z".repeat(128);
        for good in [
            longest.as_str(),
            "../../etc/passwd",
            "with space",
            "ünï",
            "gen-1",
        ] {
            let v = runtime
                .block_on(calling.save(good, &record(7), None))
                .unwrap();
            assert_eq!(v, 1, "{good:?}");
            assert_eq!(
                runtime.block_on(pooled.load(good)).unwrap().unwrap().value,
                record(7)
            );
        }
        assert_eq!(runtime.block_on(calling.profiles()).unwrap().len(), 5);
    });
}

/// Conflicts, tombstones and `restore_lost` through an in-place handle, interleaved with a
/// pooled handle on the same store: the same answers the default gives.
#[test]
fn conflicts_tombstones_and_restore_lost_in_place() {
    bounded("contract", || {
        let dir = tempfile::tempdir().unwrap();
        let pooled = SledTokenStore::open(dir.path()).unwrap();
        let calling = in_place(pooled.clone());
        let runtime = current_thread();
        runtime.block_on(async {
            let v1 = calling.save("p", &record(1), None).await.unwrap();
            assert!(matches!(
                calling.save("p", &record(2), None).await,
                Err(StoreError::Conflict { .. })
            ));
            assert!(matches!(
                calling.save("p", &record(2), Some(v1 + 1)).await,
                Err(StoreError::Conflict { .. })
            ));
            let v2 = pooled.save("p", &record(2), Some(v1)).await.unwrap();
            assert!(matches!(
                calling.save("p", &record(3), Some(v1)).await,
                Err(StoreError::Conflict { .. })
            ));
            pooled.delete("p").await.unwrap();
            assert!(matches!(
                calling.load_entry("p").await.unwrap(),
                StoredProfile::Deleted
            ));
            // A tombstone is not "no record" to a save expecting a version.
            assert!(matches!(
                calling.save("p", &record(4), Some(v2)).await,
                Err(StoreError::Conflict { .. })
            ));
            // restore_lost refuses over a tombstone.
            assert!(calling.restore_lost("p", &record(5), v2).await.is_err());
            // A save expecting nothing over a tombstone starts after the tombstone's version.
            let v3 = calling.save("p", &record(6), None).await.unwrap();
            assert!(v3 > v2, "the version went back: {v3} after {v2}");
            assert_eq!(
                stored_version(&pooled.load_entry("p").await.unwrap()),
                Some(v3)
            );
            // restore_lost on an absent profile, then an in-place save on top.
            let restored = calling.restore_lost("q", &record(8), 41).await.unwrap();
            assert_eq!(restored, 42);
            let next = calling.save("q", &record(9), Some(42)).await.unwrap();
            assert_eq!(next, 43);
        });
    });
}

// ---------------------------------------------------------------------------------------------
// kill -9 of a process saving in place: the test binary runs itself as the child.

const CHILD_ENV: &str = "WRITE_THREAD_HOSTILE_CHILD_STORE";
const CHILD_KEY_ENV: &str = "WRITE_THREAD_HOSTILE_CHILD_KEY";

/// Not a test of its own: the body of the child process of
/// `a_kill_9_right_after_in_place_saves_keeps_every_returned_save` (does nothing unless its
/// environment names a store). Saves in place in a loop, alternating records with and without a
/// refresh token (so wipes run too), and prints each version as soon as its save returned.
#[test]
fn child_process_saving_in_place() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let key = std::env::var_os(CHILD_KEY_ENV).map(|key| KeySource::File(key.into()));
    let store = in_place(open_retry(Path::new(&path), key.as_ref()));
    let runtime = current_thread();
    let mut stdout = std::io::stdout().lock();
    runtime.block_on(async {
        let mut expected = store.load("p").await.unwrap().map(|s| s.version);
        for n in 0..1_000_000u64 {
            let value = if n % 5 == 4 {
                without_refresh(n)
            } else {
                record(n)
            };
            let version = store.save("p", &value, expected).await.unwrap();
            writeln!(stdout, "saved {version} {n}").unwrap();
            stdout.flush().unwrap();
            expected = Some(version);
        }
    });
}

fn kill_9_trials(encrypted: bool) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let key_path = dir.path().join("store.key");
    let key = encrypted.then(|| KeySource::File(key_path.clone()));
    // Create the store (and its key) before the first child.
    drop(SledTokenStore::open_with(&path, key.as_ref()).unwrap());
    let exe = std::env::current_exe().unwrap();
    let mut seen = BTreeSet::new();
    for trial in 0..8u64 {
        let mut command = std::process::Command::new(&exe);
        command
            .args([
                "--exact",
                "child_process_saving_in_place",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &path)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        if encrypted {
            command.env(CHILD_KEY_ENV, &key_path);
        }
        let mut child = command.spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // Let it save a varying number of times, then kill it right after one returned.
        let wanted = 3 + trial * 7;
        let mut last: Option<(u64, u64)> = None;
        let mut count = 0;
        while count < wanted {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("trial {trial}: the child ended before saving"))
                .unwrap();
            if let Some(rest) = line.strip_prefix("saved ") {
                let mut parts = rest.split(' ').map(|x| x.parse::<u64>().unwrap());
                last = Some((parts.next().unwrap(), parts.next().unwrap()));
                count += 1;
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        // Lines already written by the child before it died count too.
        for line in lines.map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("saved ") {
                let mut parts = rest.split(' ').map(|x| x.parse::<u64>().unwrap());
                last = Some((parts.next().unwrap(), parts.next().unwrap()));
            }
        }
        let (version, n) = last.unwrap();
        let store = open_retry(&path, key.as_ref());
        let stored = block_on(store.load("p"))
            .unwrap_or_else(|e| panic!("trial {trial}: the store reads after kill -9: {e}"))
            .unwrap_or_else(|| panic!("trial {trial}: no record after kill -9"));
        // The last save that returned is stored; at most one more (in flight at the kill).
        assert!(
            stored.version == version || stored.version == version + 1,
            "trial {trial}: saved v{version} returned, the store holds v{}",
            stored.version
        );
        if stored.version == version {
            let want = if n % 5 == 4 {
                without_refresh(n)
            } else {
                record(n)
            };
            assert_eq!(stored.value, want, "trial {trial}");
        }
        assert!(seen.insert(stored.version), "trial {trial}: no progress");
        drop(store);
    }
}

#[test]
fn a_kill_9_right_after_in_place_saves_keeps_every_returned_save() {
    bounded("kill -9, clear", || kill_9_trials(false));
}

#[test]
fn a_kill_9_right_after_in_place_saves_keeps_every_returned_save_encrypted() {
    bounded("kill -9, encrypted", || kill_9_trials(true));
}

/// The reference for the defect above: the default handle, in the same context (a shut-down
/// runtime entered), does not report a save it could not finish: it fails, and the store
/// still holds the old record.
#[test]
fn the_default_in_a_shut_down_runtime_fails_without_saving() {
    bounded("shut-down runtime entered, default", || {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let store = SledTokenStore::open(&path).unwrap();
        let version = block_on(store.save("p", &record(1), None)).unwrap();
        let runtime = current_thread();
        let handle = runtime.handle().clone();
        runtime.shutdown_background();
        let _entered = handle.enter();
        let saved = block_on(store.save("p", &without_refresh(1), Some(version)));
        assert!(saved.is_err(), "the default answered {saved:?}");
        let stored = block_on(store.load("p")).unwrap().unwrap();
        assert_eq!((stored.version, stored.value), (version, record(1)));
    });
}

/// A plain save in place needs no blocking thread: inside the only blocking thread of a
/// runtime whose pool has one (a pooled save would wait for itself there), it completes,
/// again and again, and a compaction from another thread in between does not change that.
#[test]
fn an_in_place_save_needs_no_blocking_thread() {
    bounded("one blocking thread", || {
        let dir = tempfile::tempdir().unwrap();
        let store = in_place(SledTokenStore::open(dir.path()).unwrap());
        let runtime = Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let handle = runtime.handle().clone();
        let inner = store.clone();
        let last = runtime
            .block_on(runtime.spawn_blocking(move || {
                let mut version = None;
                for n in 0..50 {
                    version = Some(
                        handle
                            .block_on(inner.save("p", &record(n), version))
                            .unwrap(),
                    );
                }
                version.unwrap()
            }))
            .unwrap();
        assert_eq!(last, 50);
        let stored = block_on(store.load("p")).unwrap().unwrap();
        assert_eq!((stored.version, stored.value), (50, record(49)));
    });
}
