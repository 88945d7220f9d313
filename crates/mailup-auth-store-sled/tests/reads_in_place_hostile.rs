//! Hostile review of the sled store's reads in place (`load`, `load_entry`,
//! `load_entry_if_changed` on the calling thread; an unchanged record compared by version
//! without decoding; the blocking pool only while a compaction holds the database): reads
//! racing compactions and saves from many tasks and threads, a tombstone, an encrypted store,
//! damaged records, and every kind of context. Real sled stores in temp dirs. Every scenario
//! runs on its own thread, waited for with a generous bound (a hang fails the test instead of
//! hanging it; nothing is timed).

use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use mailup_auth_core::{
    AccessToken, ProfileRecord, RefreshToken, StoreError, StoredProfile, TokenSet, TokenStore,
    UnixTime,
};
use mailup_auth_store_sled::{KeySource, SledTokenStore};
use tokio::runtime::Builder;
use tokio::task::LocalSet;

const HANG: Duration = Duration::from_secs(180);

mod support;
use support::{block_on, current_thread, multi_thread};

/// [`support::bounded`] with this file's bound.
fn bounded(name: &str, scenario: impl FnOnce() + Send + 'static) {
    support::bounded(name, HANG, scenario);
}

fn record(n: u64) -> ProfileRecord {
    ProfileRecord::with_tokens(TokenSet {
        access_token: AccessToken::new(format!("at-{n}")),
        refresh_token: Some(RefreshToken::new(format!("rt-{n}"))),
        expires_at: UnixTime::from_secs(1_700_003_600 + n),
        obtained_at: UnixTime::from_secs(1_700_000_000 + n),
        token_type: Some("bearer".into()),
        scope: None,
    })
}

fn version_of(entry: &StoredProfile) -> Option<u64> {
    match entry {
        StoredProfile::Record(stored) => Some(stored.version),
        _ => None,
    }
}

/// Opens with a bounded wait: sled may hold its lock a few milliseconds after a raw handle
/// or a dropped store let go.
fn open_retry(path: &Path, key: Option<&KeySource>) -> SledTokenStore {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match SledTokenStore::open_with(path, key) {
            Err(StoreError::Locked { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            result => return result.unwrap(),
        }
    }
}

/// Opens the store's current generation with sled directly, as another program would.
fn raw_db(store: &Path) -> sled::Db {
    let name = std::fs::read_to_string(store.join("CURRENT")).unwrap();
    let path = store.join(name.trim());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match sled::open(&path) {
            Ok(db) => return db,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Err(error) => panic!("cannot open {}: {error}", path.display()),
        }
    }
}

fn read_raw(store: &Path, profile: &str) -> Vec<u8> {
    let db = raw_db(store);
    let bytes = db.open_tree("profiles").unwrap().get(profile).unwrap();
    bytes.unwrap().to_vec()
}

fn write_raw(store: &Path, profile: &str, bytes: &[u8]) {
    let db = raw_db(store);
    db.open_tree("profiles")
        .unwrap()
        .insert(profile.as_bytes(), bytes)
        .unwrap();
    db.flush().unwrap();
}

/// Reads racing compactions, from runtime tasks, `spawn_local` tasks and plain threads
/// outside any runtime, while a writer keeps saving: nothing hangs, every answer is a version
/// that was saved, versions answered never go back within one reader, and a look never
/// answers "unchanged" for a version superseded before the look started.
#[test]
fn reads_racing_compactions_and_saves_from_tasks_and_threads() {
    bounded("compaction race", || {
        const SAVES: u64 = 60;
        const COMPACTIONS: usize = 12;
        let dir = tempfile::tempdir().unwrap();
        let store = SledTokenStore::open(dir.path().join("store")).unwrap();
        let runtime = multi_thread(2);
        let first = runtime.block_on(store.save("p", &record(1), None)).unwrap();
        assert_eq!(first, 1);
        // The highest version whose save has returned.
        let saved = Arc::new(AtomicU64::new(first));
        let stop = Arc::new(AtomicBool::new(false));

        // One reader's loop: alternately looks with the last version it saw and loads.
        async fn reader(store: SledTokenStore, saved: Arc<AtomicU64>, stop: Arc<AtomicBool>) {
            let mut seen = 0u64;
            let mut rounds = 0u64;
            while !stop.load(Ordering::Acquire) && rounds < 100_000 {
                rounds += 1;
                let floor = saved.load(Ordering::Acquire);
                let answer = if rounds.is_multiple_of(2) {
                    store.load_entry_if_changed("p", seen).await.unwrap()
                } else {
                    Some(store.load_entry("p").await.unwrap())
                };
                match answer {
                    None => assert!(
                        seen >= floor,
                        "unchanged at {seen}, superseded by {floor} before the look"
                    ),
                    Some(entry) => {
                        let version = version_of(&entry).expect("a live record");
                        assert!(
                            version >= floor,
                            "answered {version} after {floor} was saved"
                        );
                        assert!(version >= seen, "went back from {seen} to {version}");
                        if let StoredProfile::Record(stored) = entry {
                            assert_eq!(stored.value, record(version), "wrong record");
                        }
                        seen = version;
                    }
                }
                tokio::task::yield_now().await;
            }
        }

        let mut tasks = Vec::new();
        for _ in 0..8 {
            tasks.push(runtime.spawn(reader(store.clone(), saved.clone(), stop.clone())));
        }
        // Plain threads outside any runtime, and threads with their own current-thread
        // runtime and a LocalSet.
        let mut threads = Vec::new();
        for i in 0..4 {
            let (store, saved, stop) = (store.clone(), saved.clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                if i % 2 == 0 {
                    block_on(reader(store, saved, stop));
                } else {
                    let local = LocalSet::new();
                    current_thread().block_on(local.run_until(async move {
                        tokio::task::spawn_local(reader(store, saved, stop))
                            .await
                            .unwrap()
                    }));
                }
            }));
        }
        // Compactions from tasks and from a thread outside the runtime.
        let compactor = {
            let store = store.clone();
            runtime.spawn(async move {
                for _ in 0..COMPACTIONS / 2 {
                    store.compact().await.unwrap();
                    tokio::task::yield_now().await;
                }
            })
        };
        let compactor_thread = {
            let store = store.clone();
            std::thread::spawn(move || {
                for _ in 0..COMPACTIONS / 2 {
                    block_on(store.compact()).unwrap();
                }
            })
        };
        runtime.block_on(async {
            let mut expected = first;
            for n in 2..=SAVES {
                expected = store.save("p", &record(n), Some(expected)).await.unwrap();
                assert_eq!(expected, n);
                saved.store(expected, Ordering::Release);
            }
            compactor.await.unwrap();
        });
        compactor_thread.join().unwrap();
        stop.store(true, Ordering::Release);
        runtime.block_on(async {
            for task in tasks {
                task.await.unwrap();
            }
        });
        for thread in threads {
            thread.join().unwrap();
        }
        // After everything: the last save, looked at by every kind of call.
        runtime.block_on(async {
            assert!(store
                .load_entry_if_changed("p", SAVES)
                .await
                .unwrap()
                .is_none());
            assert_eq!(store.load("p").await.unwrap().unwrap().version, SAVES);
        });
        runtime
            .block_on(async { tokio::task::spawn_blocking(move || drop(store)).await })
            .unwrap();
    });
}

/// Many reads started while a compaction holds the database (they go to the blocking pool)
/// on a runtime with a single blocking thread: they wait and then answer what is stored.
#[test]
fn reads_queued_behind_a_compaction_on_a_one_thread_blocking_pool() {
    bounded("one blocking thread", || {
        let dir = tempfile::tempdir().unwrap();
        let store = SledTokenStore::open(dir.path().join("store")).unwrap();
        let runtime = Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(1)
            .build()
            .unwrap();
        runtime.block_on(async {
            let version = store.save("p", &record(1), None).await.unwrap();
            for _ in 0..5 {
                let compaction = tokio::spawn({
                    let store = store.clone();
                    async move { store.compact().await }
                });
                let mut reads = Vec::new();
                for i in 0..32 {
                    let store = store.clone();
                    reads.push(tokio::spawn(async move {
                        if i % 2 == 0 {
                            assert!(store
                                .load_entry_if_changed("p", version)
                                .await
                                .unwrap()
                                .is_none());
                        } else {
                            let stored = store.load("p").await.unwrap().unwrap();
                            assert_eq!(stored.version, version);
                            assert_eq!(stored.value, record(1));
                        }
                    }));
                }
                compaction.await.unwrap().unwrap();
                for read in reads {
                    read.await.unwrap();
                }
            }
        });
        drop(runtime);
        drop(store);
    });
}

/// A tombstone answers `Deleted` to a look with the version it replaced (and to one with
/// any other version), a new record after it is answered as changed, and a never-saved
/// profile is `Absent`.
#[test]
fn a_tombstone_is_never_unchanged() {
    bounded("tombstone", || {
        let dir = tempfile::tempdir().unwrap();
        let store = SledTokenStore::open(dir.path().join("store")).unwrap();
        let runtime = current_thread();
        runtime.block_on(async {
            assert!(matches!(
                store.load_entry_if_changed("p", 1).await.unwrap(),
                Some(StoredProfile::Absent)
            ));
            let v1 = store.save("p", &record(1), None).await.unwrap();
            let v2 = store.save("p", &record(2), Some(v1)).await.unwrap();
            store.delete("p").await.unwrap();
            for known in [v1, v2, v2 + 1, u64::MAX, 0] {
                assert!(
                    matches!(
                        store.load_entry_if_changed("p", known).await.unwrap(),
                        Some(StoredProfile::Deleted)
                    ),
                    "known {known}"
                );
            }
            assert!(matches!(
                store.load_entry("p").await.unwrap(),
                StoredProfile::Deleted
            ));
            assert!(store.load("p").await.unwrap().is_none());
            // Saved again after the logout: changed for every version seen before.
            let v3 = store.save("p", &record(3), None).await.unwrap();
            assert!(v3 > v2, "versions went back: {v3} after {v2}");
            for known in [v1, v2] {
                match store.load_entry_if_changed("p", known).await.unwrap() {
                    Some(StoredProfile::Record(stored)) => {
                        assert_eq!(stored.version, v3);
                        assert_eq!(stored.value, record(3));
                    }
                    other => panic!("known {known}: {other:?}"),
                }
            }
            assert!(store
                .load_entry_if_changed("p", v3)
                .await
                .unwrap()
                .is_none());
        });
        runtime
            .block_on(async { tokio::task::spawn_blocking(move || drop(store)).await })
            .unwrap();
    });
}

/// Deletes (which compact to scrub the removed secrets) racing looks from other tasks with
/// the deleted version: once the delete has returned, no look started afterwards answers
/// "unchanged" or a record.
#[test]
fn deletes_racing_looks() {
    bounded("delete race", || {
        let dir = tempfile::tempdir().unwrap();
        let store = SledTokenStore::open(dir.path().join("store")).unwrap();
        let runtime = multi_thread(2);
        runtime.block_on(async {
            for round in 0..8u64 {
                let version = match store.load_entry("p").await.unwrap() {
                    StoredProfile::Record(stored) => stored.version,
                    _ => store.save("p", &record(round), None).await.unwrap(),
                };
                let deleted = Arc::new(AtomicBool::new(false));
                let mut looks = Vec::new();
                for _ in 0..6 {
                    let (store, deleted) = (store.clone(), deleted.clone());
                    looks.push(tokio::spawn(async move {
                        for _ in 0..2_000 {
                            let after = deleted.load(Ordering::Acquire);
                            let answer = store.load_entry_if_changed("p", version).await.unwrap();
                            if after {
                                assert!(
                                    matches!(answer, Some(StoredProfile::Deleted)),
                                    "after the delete: {answer:?}"
                                );
                                return;
                            }
                            assert!(
                                matches!(answer, None | Some(StoredProfile::Deleted)),
                                "{answer:?}"
                            );
                            tokio::task::yield_now().await;
                        }
                    }));
                }
                store.delete("p").await.unwrap();
                deleted.store(true, Ordering::Release);
                for look in looks {
                    look.await.unwrap();
                }
            }
        });
        runtime
            .block_on(async { tokio::task::spawn_blocking(move || drop(store)).await })
            .unwrap();
    });
}

/// In an encrypted store an unchanged record is answered without being decrypted (a record
/// whose ciphertext was damaged at the same version is still "unchanged" to the look, while
/// `load_entry` reports it Corrupt), and a changed record is decrypted and answered.
#[test]
fn an_encrypted_store_looks_without_decrypting_and_decrypts_a_change() {
    bounded("encrypted", || {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let key = KeySource::File(dir.path().join("store.key"));
        let runtime = current_thread();
        let store = open_retry(&path, Some(&key));
        assert!(store.is_encrypted());
        let (v1, v2) = runtime.block_on(async {
            let v1 = store.save("p", &record(1), None).await.unwrap();
            assert!(store
                .load_entry_if_changed("p", v1)
                .await
                .unwrap()
                .is_none());
            let v2 = store.save("p", &record(2), Some(v1)).await.unwrap();
            match store.load_entry_if_changed("p", v1).await.unwrap() {
                Some(StoredProfile::Record(stored)) => {
                    assert_eq!(stored.version, v2);
                    assert_eq!(stored.value, record(2));
                }
                other => panic!("{other:?}"),
            }
            (v1, v2)
        });
        drop(store);

        // Damage the ciphertext, keeping the envelope's head (format and version).
        let bytes = read_raw(&path, "p");
        let text = String::from_utf8(bytes).unwrap();
        assert!(!text.contains("rt-2"), "the record is stored in clear");
        let mut envelope: serde_json::Value = serde_json::from_str(&text).unwrap();
        let sealed = envelope["sealed"].as_str().unwrap().to_owned();
        let mut damaged: Vec<char> = sealed.chars().collect();
        let middle = damaged.len() / 2;
        damaged[middle] = if damaged[middle] == 'A' { 'B' } else { 'A' };
        envelope["sealed"] = serde_json::Value::String(damaged.into_iter().collect());
        write_raw(&path, "p", envelope.to_string().as_bytes());

        let store = open_retry(&path, Some(&key));
        runtime.block_on(async {
            // Compared by version only: no decryption, so no error.
            assert!(store
                .load_entry_if_changed("p", v2)
                .await
                .unwrap()
                .is_none());
            // Decrypted: the damage is a typed error, not a panic or a wrong record.
            for error in [
                store.load_entry_if_changed("p", v1).await.unwrap_err(),
                store.load_entry("p").await.unwrap_err(),
                store.load("p").await.unwrap_err(),
            ] {
                assert!(matches!(error, StoreError::Corrupt { .. }), "{error:?}");
            }
        });
        drop(store);
    });
}

/// Damaged records answer a typed `Corrupt` error (never a panic) to a look with another
/// version, to `load_entry` and to `load`, from every context.
#[test]
fn a_damaged_record_is_a_typed_error() {
    bounded("damaged", || {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        {
            let store = open_retry(&path, None);
            current_thread()
                .block_on(store.save("seed", &record(1), None))
                .unwrap();
        }
        let damaged: [(&str, &[u8]); 8] = [
            ("garbage", b"\xff\x00not json"),
            ("empty", b""),
            ("truncated", br#"{"format":1,"version":5,"record":{"tok"#),
            (
                "bad_record",
                br#"{"format":1,"version":5,"record":{"tokens":42}}"#,
            ),
            ("no_record", br#"{"format":1,"version":5}"#),
            ("version_zero", br#"{"format":1,"version":0,"record":{}}"#),
            (
                "future_format",
                br#"{"format":999,"version":5,"record":{}}"#,
            ),
            (
                "sealed_in_clear",
                br#"{"format":2,"version":5,"sealed":"AAAA"}"#,
            ),
        ];
        for (profile, bytes) in damaged {
            write_raw(&path, profile, bytes);
        }
        let store = open_retry(&path, None);
        let check = |store: SledTokenStore| async move {
            for (profile, _) in damaged {
                for known in [1, 4, 6, u64::MAX] {
                    let answer = store.load_entry_if_changed(profile, known).await;
                    assert!(
                        matches!(answer, Err(StoreError::Corrupt { .. })),
                        "{profile} known {known}: {answer:?}"
                    );
                }
                let entry = store.load_entry(profile).await;
                assert!(
                    matches!(entry, Err(StoreError::Corrupt { .. })),
                    "{profile}: {entry:?}"
                );
                let loaded = store.load(profile).await;
                assert!(
                    matches!(loaded, Err(StoreError::Corrupt { .. })),
                    "{profile}: {loaded:?}"
                );
            }
        };
        current_thread().block_on(check(store.clone()));
        multi_thread(2).block_on(check(store.clone()));
        block_on(check(store.clone()));
        let local = LocalSet::new();
        let checked = store.clone();
        current_thread()
            .block_on(
                local.run_until(async move { tokio::task::spawn_local(check(checked)).await }),
            )
            .unwrap();
        // Still a working store afterwards.
        let runtime = current_thread();
        runtime.block_on(async {
            assert_eq!(store.load("seed").await.unwrap().unwrap().version, 1);
        });
        drop(store);
    });
}

async fn look_and_load(store: &SledTokenStore, profile: &str) {
    let mut version = match store.load_entry(profile).await.unwrap() {
        StoredProfile::Record(stored) => stored.version,
        _ => store.save(profile, &record(1), None).await.unwrap(),
    };
    for n in 0..20u64 {
        assert!(store
            .load_entry_if_changed(profile, version)
            .await
            .unwrap()
            .is_none());
        let newer = store
            .save(profile, &record(n), Some(version))
            .await
            .unwrap();
        match store.load_entry_if_changed(profile, version).await.unwrap() {
            Some(StoredProfile::Record(stored)) => {
                assert_eq!(stored.version, newer);
                assert_eq!(stored.value, record(n));
            }
            other => panic!("{other:?}"),
        }
        let loaded = store.load(profile).await.unwrap().unwrap();
        assert_eq!(loaded.version, newer);
        version = newer;
    }
}

/// Reads in every context: a current-thread runtime, a LocalSet's `spawn_local` task,
/// outside any runtime, inside `spawn_blocking` and `block_in_place`, a current-thread runtime
/// entered under a multi-thread handle, and many threads at once, each with its own kind.
#[test]
fn reads_from_every_context_and_many_threads_at_once() {
    bounded("contexts", || {
        let dir = tempfile::tempdir().unwrap();
        let store = SledTokenStore::open(dir.path().join("store")).unwrap();
        // Current-thread runtime.
        current_thread().block_on(look_and_load(&store, "current"));
        // LocalSet.
        {
            let store = store.clone();
            let local = LocalSet::new();
            current_thread()
                .block_on(local.run_until(async move {
                    tokio::task::spawn_local(async move { look_and_load(&store, "local").await })
                        .await
                }))
                .unwrap();
        }
        // Outside any runtime.
        block_on(look_and_load(&store, "outside"));
        // spawn_blocking and block_in_place of a multi-thread runtime.
        let runtime = multi_thread(2);
        {
            let store = store.clone();
            runtime
                .block_on(async move {
                    tokio::task::spawn_blocking(move || {
                        tokio::runtime::Handle::current()
                            .block_on(look_and_load(&store, "blocking"))
                    })
                    .await
                })
                .unwrap();
        }
        {
            let store = store.clone();
            runtime
                .block_on(async move {
                    tokio::spawn(async move {
                        tokio::task::block_in_place(|| {
                            tokio::runtime::Handle::current()
                                .block_on(look_and_load(&store, "in_place"))
                        })
                    })
                    .await
                })
                .unwrap();
        }
        // A current-thread runtime on a thread that entered a multi-thread runtime.
        {
            let store = store.clone();
            let handle = runtime.handle().clone();
            std::thread::spawn(move || {
                let _entered = handle.enter();
                current_thread().block_on(look_and_load(&store, "nested"));
            })
            .join()
            .unwrap();
        }
        // Many threads at once, with a compaction going on now and then.
        let mut threads = Vec::new();
        for i in 0..12 {
            let store = store.clone();
            threads.push(std::thread::spawn(move || {
                let profile = format!("thread-{i}");
                match i % 4 {
                    0 => block_on(look_and_load(&store, &profile)),
                    1 => current_thread().block_on(look_and_load(&store, &profile)),
                    2 => {
                        let local = LocalSet::new();
                        current_thread().block_on(local.run_until(look_and_load(&store, &profile)))
                    }
                    _ => {
                        block_on(store.compact()).unwrap();
                        multi_thread(1).block_on(look_and_load(&store, &profile))
                    }
                }
            }));
        }
        for thread in threads {
            thread.join().unwrap();
        }
        runtime.block_on(async {
            let mut profiles = store.profiles().await.unwrap();
            profiles.sort();
            assert_eq!(profiles.len(), 6 + 12, "{profiles:?}");
        });
        runtime
            .block_on(async { tokio::task::spawn_blocking(move || drop(store)).await })
            .unwrap();
    });
}

/// An invalid profile name is refused by every read before anything is read, also while a
/// compaction is under way.
#[test]
fn invalid_names_are_refused_by_the_reads() {
    bounded("names", || {
        let dir = tempfile::tempdir().unwrap();
        let store = SledTokenStore::open(dir.path().join("store")).unwrap();
        let runtime = multi_thread(2);
        runtime.block_on(async {
            let compaction = tokio::spawn({
                let store = store.clone();
                async move { store.compact().await }
            });
            let long = "x".repeat(129);
            for name in ["", "a\0b", "a\nb", long.as_str()] {
                assert!(
                    store.load_entry_if_changed(name, 1).await.is_err(),
                    "{name:?}"
                );
                assert!(store.load_entry(name).await.is_err(), "{name:?}");
                assert!(store.load(name).await.is_err(), "{name:?}");
            }
            compaction.await.unwrap().unwrap();
        });
        runtime
            .block_on(async { tokio::task::spawn_blocking(move || drop(store)).await })
            .unwrap();
    });
}

/// Reads cancelled while they wait for a compaction on the blocking pool (their futures
/// dropped, their tasks aborted) leave nothing held: later reads, saves and compactions work.
#[test]
fn reads_cancelled_while_waiting_for_a_compaction_leave_nothing_held() {
    bounded("cancelled", || {
        let dir = tempfile::tempdir().unwrap();
        let store = SledTokenStore::open(dir.path().join("store")).unwrap();
        let runtime = multi_thread(2);
        runtime.block_on(async {
            let mut version = store.save("p", &record(1), None).await.unwrap();
            for round in 0..10u64 {
                let compaction = tokio::spawn({
                    let store = store.clone();
                    async move { store.compact().await }
                });
                let mut reads = Vec::new();
                for i in 0..16 {
                    let store = store.clone();
                    reads.push(tokio::spawn(async move {
                        if i % 2 == 0 {
                            store.load_entry_if_changed("p", 0).await.map(|_| ())
                        } else {
                            store.load("p").await.map(|_| ())
                        }
                    }));
                }
                for read in &reads {
                    read.abort();
                }
                // A read polled once and dropped.
                {
                    let mut look = std::pin::pin!(store.load_entry_if_changed("p", version));
                    let waker = Waker::noop();
                    let _ = look.as_mut().poll(&mut Context::from_waker(waker));
                }
                compaction.await.unwrap().unwrap();
                for read in reads {
                    match read.await {
                        Ok(result) => result.unwrap(),
                        Err(error) => assert!(error.is_cancelled(), "{error}"),
                    }
                }
                assert!(store
                    .load_entry_if_changed("p", version)
                    .await
                    .unwrap()
                    .is_none());
                version = store
                    .save("p", &record(round + 2), Some(version))
                    .await
                    .unwrap();
                assert_eq!(store.load("p").await.unwrap().unwrap().version, version);
            }
        });
        runtime
            .block_on(async { tokio::task::spawn_blocking(move || drop(store)).await })
            .unwrap();
    });
}
