//! Hostile review 3 of secrets at rest: each test here is a defect found by attacking the
//! store's files as a careless user or an attacker with access to them would.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mailup_auth_core::TokenSet;
use mailup_auth_core::UnixTime;
use mailup_auth_core::{AccessToken, ClientSecret, RefreshToken};
use mailup_auth_core::{KeyProblem, ProfileRecord, StoreError, StoredClient, TokenStore};
use mailup_auth_store_sled::{KeySource, SledTokenStore};

fn tokens(profile: &str, n: u32) -> TokenSet {
    TokenSet {
        access_token: AccessToken::new(format!("access-{profile}-{n}-4f1c")),
        refresh_token: Some(RefreshToken::new(format!("refresh-{profile}-{n}-9b2e"))),
        expires_at: UnixTime::from_secs(1_700_003_600),
        obtained_at: UnixTime::from_secs(1_700_000_000),
        token_type: Some("bearer".into()),
        scope: None,
    }
}

fn record(profile: &str, n: u32) -> ProfileRecord {
    ProfileRecord {
        tokens: Some(tokens(profile, n)),
        client: Some(StoredClient {
            client_id: format!("client-{profile}"),
            client_secret: Some(ClientSecret::new(format!("client-secret-{profile}-77aa"))),
            ..StoredClient::default()
        }),
        ..ProfileRecord::default()
    }
}

fn open_with(path: &Path, key: Option<&KeySource>) -> Result<SledTokenStore, StoreError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match SledTokenStore::open_with(path, key) {
            Err(StoreError::Locked { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            result => return result,
        }
    }
}

async fn close(store: SledTokenStore) {
    tokio::task::spawn_blocking(move || drop(store))
        .await
        .unwrap();
}

async fn fill(store: &SledTokenStore, profile: &str, rotations: u32) {
    let mut expected = store.load(profile).await.unwrap().map(|v| v.version);
    for n in 1..=rotations {
        expected = Some(
            store
                .save(profile, &record(profile, n), expected)
                .await
                .unwrap(),
        );
    }
}

fn generation(store: &Path) -> String {
    std::fs::read_to_string(store.join("CURRENT"))
        .unwrap()
        .trim()
        .to_owned()
}

/// A store with profiles `a` and `b`, closed; returns its directory.
async fn store_with_two_profiles(dir: &Path) -> PathBuf {
    let path = dir.join("store");
    let store = open_with(&path, None).unwrap();
    fill(&store, "a", 2).await;
    fill(&store, "b", 1).await;
    close(store).await;
    path
}

// ---- crash safety / damaged pointer -------------------------------------------------------

/// `CURRENT` naming a generation that is not there (a damaged pointer, a bad restore, a
/// hand edit) is rightly an error, but before reporting it `open` wipes every other
/// generation, the real data included: putting the pointer back finds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pointer_to_a_missing_generation_does_not_wipe_the_real_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_with_two_profiles(dir.path()).await;
    let real = generation(&path);
    std::fs::write(path.join("CURRENT"), "gen-9\n").unwrap();

    let damaged = open_with(&path, None);
    assert!(damaged.is_err(), "a pointer to nothing is an error");
    drop(damaged);

    assert!(
        path.join(&real).join("conf").is_file(),
        "the generation holding every profile ({real}) was wiped by an open that failed"
    );
    std::fs::write(path.join("CURRENT"), format!("{real}\n")).unwrap();
    let store = open_with(&path, None).expect("the store opens once its pointer is restored");
    assert_eq!(
        store.load("a").await.unwrap().unwrap().value,
        record("a", 2)
    );
    assert_eq!(
        store.load("b").await.unwrap().unwrap().value,
        record("b", 1)
    );
    close(store).await;
}

/// A store whose `CURRENT` is gone (removed by a careless user or a cleanup script, not
/// restored from a backup) opens as a new, empty store, and the generation holding every
/// profile is wiped on the way. "Never an empty store in its place" (docs/security.md): no
/// crash leaves a generation with records and no pointer (a new store writes its pointer
/// before its first record; a compaction switches an existing pointer), so this is damage,
/// and it must be an error (or the generation must be adopted), never a silent logout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_whose_pointer_was_removed_is_not_opened_empty() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_with_two_profiles(dir.path()).await;
    let real = generation(&path);
    std::fs::remove_file(path.join("CURRENT")).unwrap();

    match open_with(&path, None) {
        Ok(store) => {
            let profiles = store.profiles().await.unwrap();
            close(store).await;
            assert_eq!(
                profiles,
                ["a", "b"],
                "the store opened empty: {real}, which held every profile, was wiped and a \
                 new empty store created in its place"
            );
        }
        Err(_) => assert!(
            path.join(&real).join("conf").is_file(),
            "the failed open wiped {real}"
        ),
    }
}

// ---- key file placement -------------------------------------------------------------------

fn key_problem(result: Result<SledTokenStore, StoreError>) -> KeyProblem {
    match result {
        Err(StoreError::Key { problem, .. }) => problem,
        Err(other) => panic!("expected a key error, got {other:?}"),
        Ok(_) => panic!("expected a key error, the store opened"),
    }
}

/// "The key file must be outside the store directory (refused otherwise)". A key path that
/// reaches into the store through `..` (or a relative path, or any path whose directory does
/// not exist yet, which is the usual case for a new key) is not resolved, is not recognised as
/// inside, and the key is created inside the store: copying the store directory copies its key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_key_file_inside_the_store_reached_through_dotdot_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    std::fs::create_dir(dir.path().join("elsewhere")).unwrap();
    let sneaky = dir
        .path()
        .join("elsewhere")
        .join("..")
        .join("store")
        .join("keys")
        .join("store.key");
    let key = KeySource::File(sneaky);
    let result = open_with(&path, Some(&key));
    let created_inside = path.join("keys").join("store.key").exists();
    if let Ok(store) = result {
        close(store).await;
        panic!("the store opened; key file created inside the store: {created_inside}");
    }
    let problem = key_problem(result);
    assert!(matches!(problem, KeyProblem::Unusable { .. }), "{problem}");
    assert!(
        !created_inside,
        "the key was written into the store directory"
    );
}

/// A key file that is a symlink to a file inside the store is followed, and the "inside the
/// store" rule is checked on the link's own path only: the key lives with the records (a copy
/// or a backup of the store directory carries its key) and is accepted.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_file_symlinked_into_the_store_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let key_path = dir.path().join("keys").join("store.key");
    let key = KeySource::File(key_path.clone());
    let store = open_with(&path, Some(&key)).unwrap();
    fill(&store, "a", 1).await;
    close(store).await;

    // The key moved into the store, a symlink left where it was.
    let inside = path.join("store.key");
    std::fs::rename(&key_path, &inside).unwrap();
    std::os::unix::fs::symlink(&inside, &key_path).unwrap();

    let result = open_with(&path, Some(&key));
    if let Ok(store) = result {
        close(store).await;
        panic!("a key kept inside the store (through a symlink) was accepted");
    }
    let problem = key_problem(result);
    assert!(
        problem.to_string().contains("inside the store"),
        "{problem}"
    );
}

// ---- kill -9 between a logout's save and its wipe -----------------------------------------

const CHILD_STORE: &str = "MAILUP_AUTH_STORE_SLED_HOSTILE3_STORE";
const CHILD_PROFILE: &str = "MAILUP_AUTH_STORE_SLED_HOSTILE3_PROFILE";

/// Every token string `profile` was given in rounds `1..=rounds`, but round `live`'s.
fn issued_but(profile: &str, rounds: u32, live: Option<u32>) -> Vec<String> {
    (1..=rounds)
        .filter(|n| Some(*n) != live)
        .flat_map(|n| {
            let t = tokens(profile, n);
            [
                t.access_token.secret().to_owned(),
                t.refresh_token.unwrap().secret().to_owned(),
            ]
        })
        .collect()
}

fn files_containing(dir: &Path, needles: &[String]) -> Vec<(String, PathBuf)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                let bytes = std::fs::read(entry.path()).unwrap();
                // std's substring search is optimized even in a debug build.
                let text = String::from_utf8_lossy(&bytes);
                for needle in needles {
                    if text.contains(needle.as_str()) {
                        found.push((needle.clone(), entry.path()));
                    }
                }
            }
        }
    }
    found
}

/// Child process: logs the profile in and out (a save with tokens, then one without, as the
/// facade's `logout()` does) until killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "helper run as a child process by other tests"]
async fn hostile3_child() {
    let (Ok(path), Ok(profile)) = (std::env::var(CHILD_STORE), std::env::var(CHILD_PROFILE)) else {
        return;
    };
    let store = SledTokenStore::open(&path).unwrap();
    println!("OPENED");
    for n in 1..=40u32 {
        let expected = store.load(&profile).await.unwrap().map(|v| v.version);
        let version = store
            .save(&profile, &record(&profile, n), expected)
            .await
            .unwrap();
        let mut out = record(&profile, n);
        out.tokens = None;
        store.save(&profile, &out, Some(version)).await.unwrap();
        println!("ROUND {n}");
    }
}

/// "A kill -9 at any point leaves the old or the new generation current with every live
/// profile; leftovers and an unfinished wipe (a marker records it) are finished at the next
/// open." The marker is written only after the logout's save is flushed: a kill between the
/// two (the logout's record durable, the marker not) leaves the logged-out tokens in sled's
/// log with nothing to say they must go, and the next open does not wipe them. After the
/// reopen the profile shows no tokens, yet its tokens are in the store's files until some
/// later, unrelated compaction. (Kills at random moments, bounded to 60 kills or 12 s; it
/// typically hits the window within 30 kills.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_between_a_logouts_save_and_its_wipe_leaves_the_tokens_on_disk() {
    use std::io::{BufRead as _, BufReader};
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let started = Instant::now();
    let mut leaks = Vec::new();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut kills = 0;
    while kills < 60 && started.elapsed() < Duration::from_secs(12) && leaks.is_empty() {
        kills += 1;
        let profile = format!("victim{kills}");
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "hostile3_child", "--nocapture", "--ignored"])
            .env(CHILD_STORE, &path)
            .env(CHILD_PROFILE, &profile)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        assert!(lines
            .by_ref()
            .map_while(Result::ok)
            .any(|line| line.trim() == "ROUND 1"));
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_micros(seed % 30_000));
        let _ = child.kill();
        child.wait().unwrap();
        drop(lines);

        let store = open_with(&path, None).unwrap();
        let live = store
            .load(&profile)
            .await
            .unwrap()
            .and_then(|v| v.value.tokens)
            .map(|t| {
                let secret = t.access_token.secret().to_owned();
                (1..=40)
                    .find(|n| tokens(&profile, *n).access_token.secret() == secret)
                    .unwrap()
            });
        close(store).await;
        let found = files_containing(&path, &issued_but(&profile, 40, live));
        if !found.is_empty() {
            leaks.push((kills, live, found));
        }
    }
    assert_eq!(
        leaks,
        [],
        "after {kills} kills: removed tokens still on disk after the reopen (kill, live round, \
         what and where)"
    );
}
