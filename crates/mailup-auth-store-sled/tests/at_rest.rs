//! What stays on disk: removed secrets are wiped from every file of the store directory
//! (compaction), the 0.1.0 layout is migrated without losing a profile, an encrypted store
//! holds no token in clear and refuses a missing or wrong key with a typed error, and a kill -9
//! at any point of a compaction or migration leaves a readable store with every live profile.
//!
//! Tests that need a process to die re-run this test binary with `--exact crash_child
//! --ignored`; `CHILD_STORE` and `CHILD_CRASH_AT` tell the child what to do.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mailup_auth_core::TokenSet;
use mailup_auth_core::UnixTime;
use mailup_auth_core::{AccessToken, ClientSecret, RefreshToken};
use mailup_auth_core::{KeyProblem, ProfileRecord, StoreError, StoredClient, TokenStore};
use mailup_auth_store_sled::{KeySource, SledTokenStore};

const CHILD_STORE: &str = "MAILUP_AUTH_STORE_SLED_TEST_CHILD_STORE";
/// The crash hook of the library (debug builds): the child kills itself at that point.
const CHILD_CRASH_AT: &str = "MAILUP_AUTH_STORE_SLED_CRASH_AT";
const FORMAT_1: &str = include_str!("fixtures/format1-v0.1.0.tsv");

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

fn client(profile: &str) -> StoredClient {
    StoredClient {
        client_id: format!("client-{profile}"),
        client_secret: Some(ClientSecret::new(format!("client-secret-{profile}-77aa"))),
        ..StoredClient::default()
    }
}

fn record(profile: &str, n: u32) -> ProfileRecord {
    ProfileRecord {
        tokens: Some(tokens(profile, n)),
        client: Some(client(profile)),
        ..ProfileRecord::default()
    }
}

/// Every token string profile `profile` was ever given, rotations `1..=rotations`.
fn issued(profile: &str, rotations: u32) -> Vec<String> {
    (1..=rotations)
        .flat_map(|n| {
            let t = tokens(profile, n);
            [
                t.access_token.secret().to_owned(),
                t.refresh_token.unwrap().secret().to_owned(),
            ]
        })
        .collect()
}

/// Every regular file under `dir`, with its content.
fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                files.push((entry.path(), std::fs::read(entry.path()).unwrap()));
            }
        }
    }
    files
}

/// The needles found in any file under `dir`, with the file.
fn scan(dir: &Path, needles: &[String]) -> Vec<(String, PathBuf)> {
    let files = files_under(dir);
    let mut found = Vec::new();
    for needle in needles {
        for (path, bytes) in &files {
            if bytes
                .windows(needle.len())
                .any(|window| window == needle.as_bytes())
            {
                found.push((needle.clone(), path.clone()));
            }
        }
    }
    found
}

fn generation(store: &Path) -> String {
    std::fs::read_to_string(store.join("CURRENT"))
        .unwrap()
        .trim()
        .to_owned()
}

/// Opens with a bounded wait: sled may hold a lock a few milliseconds after a raw handle or a
/// killed child let go.
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

fn open(path: &Path) -> SledTokenStore {
    open_with(path, None).unwrap()
}

/// Closes a store off the async workers (sled joins its threads).
async fn close(store: SledTokenStore) {
    tokio::task::spawn_blocking(move || drop(store))
        .await
        .unwrap();
}

/// Saves `rotations` rotations of each profile's tokens (as refreshes would).
async fn fill(store: &SledTokenStore, profiles: &[String], rotations: u32) {
    for profile in profiles {
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
}

async fn assert_intact(store: &SledTokenStore, profiles: &[String], rotations: u32) {
    for profile in profiles {
        let loaded = store.load(profile).await.unwrap().expect("a live profile");
        assert_eq!(loaded.value, record(profile, rotations), "{profile}");
    }
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

/// `logout` as the facade does it: the record saved again without its tokens (the client
/// registration is kept).
async fn logout(store: &SledTokenStore, profile: &str) {
    let loaded = store.load(profile).await.unwrap().unwrap();
    let mut record = loaded.value;
    record.tokens = None;
    record.last_refreshed_at = None;
    store
        .save(profile, &record, Some(loaded.version))
        .await
        .unwrap();
}

async fn logging_out_wipes_every_token_the_profile_ever_had(others: usize) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = open(&path);
    let others = names("other-", others);
    fill(&store, &others, 3).await;
    fill(&store, &["leaving".to_owned()], 5).await;
    let before = generation(&path);
    let secrets = issued("leaving", 5);
    // sled keeps replaced values in its log: the test would prove nothing otherwise.
    assert!(!scan(&path, &secrets).is_empty());

    logout(&store, "leaving").await;
    assert_ne!(generation(&path), before, "the logout compacted the store");
    assert_eq!(scan(&path, &secrets), []);
    // The client registration stays, and so does every other profile.
    let kept = store.load("leaving").await.unwrap().unwrap().value;
    assert_eq!(kept.client, Some(client("leaving")));
    assert!(kept.tokens.is_none());
    assert_intact(&store, &others, 3).await;

    // Removing the profile entirely wipes its client secret as well.
    let secret = vec!["client-secret-leaving-77aa".to_owned()];
    assert!(!scan(&path, &secret).is_empty());
    store.delete("leaving").await.unwrap();
    assert_eq!(scan(&path, &secret), []);
    assert_eq!(store.load("leaving").await.unwrap(), None);
    assert_intact(&store, &others, 3).await;
    close(store).await;

    // And after a reopen, the same.
    let store = open(&path);
    assert_intact(&store, &others, 3).await;
    assert_eq!(store.profiles().await.unwrap().len(), others.len());
    close(store).await;
    assert_eq!(scan(&path, &secrets), []);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_out_the_only_profile_wipes_its_tokens() {
    logging_out_wipes_every_token_the_profile_ever_had(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_out_one_of_fifty_profiles_wipes_its_tokens_and_keeps_the_others() {
    logging_out_wipes_every_token_the_profile_ever_had(49).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_does_not_compact_but_the_next_removal_wipes_the_old_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = open(&path);
    fill(&store, &["a".to_owned()], 1).await;
    let before = generation(&path);
    fill(&store, &["a".to_owned()], 3).await;
    assert_eq!(
        generation(&path),
        before,
        "saves that remove nothing do not compact"
    );
    // The rotated-away tokens are still in sled's log until something compacts.
    fill(&store, &["b".to_owned()], 1).await;
    store.delete("b").await.unwrap();
    let old: Vec<String> = issued("a", 2);
    assert_eq!(scan(&path, &old), []);
    assert_intact(&store, &["a".to_owned()], 1 + 2).await;
    // Compacting on demand works too.
    store.compact().await.unwrap();
    assert_intact(&store, &["a".to_owned()], 3).await;
    close(store).await;
}

// ---- migration of the 0.1.0 layout ---------------------------------------------------------

/// Writes the format-1 fixture with sled directly into `store`, as mailup-auth-store-sled 0.1.0
/// laid it out (sled's files directly in the store directory), plus a history: a profile whose
/// tokens were replaced, and one that was deleted.
fn write_0_1_0_store(store: &Path) {
    let db = sled::open(store).unwrap();
    let profiles = db.open_tree("profiles").unwrap();
    let rotated = |n: u32| {
        format!(
            r#"{{"format":1,"version":{n},"record":{{"tokens":{{"access_token":"legacy-access-{n}","refresh_token":"legacy-refresh-{n}","expires_at":1800000000000,"obtained_at":1799996400000,"token_type":"bearer","scope":null}},"client":null,"last_refreshed_at":null}}}}"#
        )
    };
    for n in 1..=3 {
        profiles.insert("rotated", rotated(n).as_bytes()).unwrap();
    }
    profiles
        .insert("gone", rotated(7).replace("legacy-", "gone-").as_bytes())
        .unwrap();
    profiles
        .insert("gone", &br#"{"format":1,"version":7,"deleted":true}"#[..])
        .unwrap();
    for line in FORMAT_1.lines() {
        let (profile, envelope) = line.split_once('\t').unwrap();
        profiles
            .insert(profile.as_bytes(), envelope.as_bytes())
            .unwrap();
    }
    db.flush().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_0_1_0_store_is_migrated_with_every_profile_and_its_old_files_wiped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    tokio::task::spawn_blocking({
        let path = path.clone();
        move || write_0_1_0_store(&path)
    })
    .await
    .unwrap();
    assert!(path.join("db").is_file() && path.join("conf").is_file());

    let store = open(&path);
    assert_eq!(generation(&path), "gen-1");
    for old in ["db", "conf", "blobs"] {
        assert!(!path.join(old).exists(), "{old} was removed");
    }
    assert_eq!(
        store.profiles().await.unwrap(),
        ["full", "rejected", "rotated"]
    );
    let rotated = store.load("rotated").await.unwrap().unwrap();
    assert_eq!(rotated.version, 3);
    assert_eq!(
        rotated.value.tokens.unwrap().access_token.secret(),
        "legacy-access-3"
    );
    let full = store.load("full").await.unwrap().unwrap();
    assert_eq!(
        full.value.tokens.unwrap().refresh_token.unwrap().secret(),
        "fixture-refresh-token-v1"
    );
    // The deleted profile's tombstone kept its version.
    assert_eq!(store.load("gone").await.unwrap(), None);
    assert_eq!(
        store.save("gone", &record("gone", 1), None).await.unwrap(),
        8
    );
    close(store).await;
    // Only live records were copied: the old log's replaced and deleted tokens are gone.
    let history = [
        "legacy-access-1",
        "legacy-refresh-2",
        "gone-access-7",
        "gone-refresh-7",
    ]
    .map(String::from);
    assert_eq!(scan(&path, &history), []);
    // Opening again changes nothing.
    let store = open(&path);
    assert_eq!(generation(&path), "gen-1");
    assert_eq!(store.profiles().await.unwrap().len(), 4);
    close(store).await;
}

// ---- encryption ----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_store_holds_no_token_in_clear_and_reopens_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let key_path = dir.path().join("keys").join("store.key");
    let key = KeySource::File(key_path.clone());
    let profiles = names("p", 5);
    let store = open_with(&path, Some(&key)).unwrap();
    assert!(store.is_encrypted());
    assert!(key_path.is_file(), "a new store creates its key");
    fill(&store, &profiles, 3).await;
    logout(&store, "p0").await;
    close(store).await;

    let mut secrets: Vec<String> = profiles.iter().flat_map(|p| issued(p, 3)).collect();
    secrets.extend(profiles.iter().map(|p| format!("client-secret-{p}-77aa")));
    assert_eq!(scan(&path, &secrets), []);
    // The key is not in the store either.
    let key_text = std::fs::read_to_string(&key_path).unwrap();
    assert_eq!(scan(&path, &[key_text.trim().to_owned()]), []);

    let store = open_with(&path, Some(&key)).unwrap();
    assert_intact(&store, &profiles[1..], 3).await;
    let p0 = store.load("p0").await.unwrap().unwrap().value;
    assert!(p0.tokens.is_none());
    assert_eq!(p0.client, Some(client("p0")));
    close(store).await;
}

fn key_problem(result: Result<SledTokenStore, StoreError>) -> KeyProblem {
    match result {
        Err(StoreError::Key { problem, .. }) => problem,
        Err(other) => panic!("expected a key error, got {other:?}"),
        Ok(_) => panic!("expected a key error, the store opened"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_wrong_or_unneeded_key_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let key_path = dir.path().join("store.key");
    let key = KeySource::File(key_path.clone());
    let store = open_with(&path, Some(&key)).unwrap();
    fill(&store, &["p".to_owned()], 1).await;
    close(store).await;

    // No key: names the key file the store was created with.
    let problem = key_problem(open_with(&path, None));
    assert_eq!(
        problem,
        KeyProblem::Missing {
            expected: format!("the key file {}", key_path.display())
        }
    );
    // Another key (made by another new store).
    let other = KeySource::File(dir.path().join("other.key"));
    close(open_with(&dir.path().join("other-store"), Some(&other)).unwrap()).await;
    let problem = key_problem(open_with(&path, Some(&other)));
    assert!(matches!(problem, KeyProblem::Wrong { .. }), "{problem}");
    assert!(problem.to_string().contains("other.key"), "{problem}");
    // The key file is gone: never a new key for an existing store.
    let moved = dir.path().join("moved.key");
    std::fs::rename(&key_path, &moved).unwrap();
    let problem = key_problem(open_with(&path, Some(&key)));
    assert!(matches!(problem, KeyProblem::NotFound { .. }), "{problem}");
    assert!(!key_path.exists());
    std::fs::rename(&moved, &key_path).unwrap();
    // Readable by others: refused.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let problem = key_problem(open_with(&path, Some(&key)));
        assert!(matches!(problem, KeyProblem::Unusable { .. }), "{problem}");
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    // The right key still opens it, and no error text above held key material.
    let store = open_with(&path, Some(&key)).unwrap();
    assert_intact(&store, &["p".to_owned()], 1).await;
    close(store).await;

    // A store with records in clear, opened with a key.
    let plain_path = dir.path().join("plain");
    let plain = open(&plain_path);
    fill(&plain, &["p".to_owned()], 1).await;
    close(plain).await;
    let problem = key_problem(open_with(&plain_path, Some(&other)));
    assert!(
        matches!(problem, KeyProblem::NotEncrypted { .. }),
        "{problem}"
    );
    // ... and it still opens without one.
    let plain = open(&plain_path);
    assert_intact(&plain, &["p".to_owned()], 1).await;
    close(plain).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_record_moved_to_another_profile_does_not_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let key = KeySource::File(dir.path().join("store.key"));
    let store = open_with(&path, Some(&key)).unwrap();
    fill(&store, &["alice".to_owned()], 1).await;
    store
        .save("bob", &ProfileRecord::default(), None)
        .await
        .unwrap();
    close(store).await;
    tokio::task::spawn_blocking({
        let path = path.clone();
        move || {
            let db = sled::open(path.join(generation(&path))).unwrap();
            let profiles = db.open_tree("profiles").unwrap();
            let alice = profiles.get("alice").unwrap().unwrap();
            profiles.insert("bob", alice).unwrap();
            db.flush().unwrap();
        }
    })
    .await
    .unwrap();
    let store = open_with(&path, Some(&key)).unwrap();
    let error = store.load("bob").await.unwrap_err();
    assert!(matches!(error, StoreError::Corrupt { .. }), "{error:?}");
    assert_intact(&store, &["alice".to_owned()], 1).await;
    close(store).await;
}

// ---- kill -9 -------------------------------------------------------------------------------

/// Runs in the child process: opens the store in `CHILD_STORE` (encrypted when
/// `CHILD_STORE_KEY` names a key file), then logs profile `victim` in and out again and again,
/// printing `COMPACTED n` after each logout returned. With `CHILD_CRASH_AT` set, the library
/// kills the process at that point; otherwise the parent kills it (bounded to 200 rounds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "helper run as a child process by other tests"]
async fn crash_child() {
    let Ok(path) = std::env::var(CHILD_STORE) else {
        return;
    };
    let store = SledTokenStore::open(&path).unwrap();
    println!("OPENED");
    for n in 1..=200u32 {
        let expected = store.load("victim").await.unwrap().map(|v| v.version);
        store
            .save("victim", &record("victim", n), expected)
            .await
            .unwrap();
        logout(&store, "victim").await;
        println!("COMPACTED {n}");
    }
}

struct CrashChild {
    child: Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl CrashChild {
    fn spawn(path: &Path, crash_at: Option<&str>) -> Self {
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .args(["--exact", "crash_child", "--nocapture", "--ignored"])
            .env(CHILD_STORE, path)
            .env_remove(CHILD_CRASH_AT)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some(point) = crash_at {
            command.env(CHILD_CRASH_AT, point);
        }
        let mut child = command.spawn().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Self { child, lines }
    }

    /// Reads the child's output until `line`; false when the child died first.
    fn wait_for(&mut self, line: &str) -> bool {
        self.lines
            .by_ref()
            .map_while(Result::ok)
            .any(|read| read.trim() == line)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        self.child.wait().unwrap();
    }
}

impl Drop for CrashChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// After a crash: the store opens, every keeper is intact, nothing but the current generation
/// is left, and no token the victim ever had is in any file.
async fn assert_recovered(path: &Path, keepers: &[String], victim_rounds: u32) {
    let store = open(path);
    assert_intact(&store, keepers, 2).await;
    // The victim is either logged out or (a crash before the save returned) logged in.
    if let Some(victim) = store.load("victim").await.unwrap() {
        assert_eq!(victim.value.client, Some(client("victim")));
    }
    close(store).await;
    let generations: Vec<String> = std::fs::read_dir(path)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.starts_with("gen-"))
        .collect();
    assert_eq!(
        generations,
        [generation(path)],
        "only the current generation"
    );
    // A crash between the save and the logout leaves the last tokens live: they are not
    // "removed" secrets. Every earlier one is.
    let removed = issued("victim", victim_rounds.saturating_sub(1));
    assert_eq!(scan(path, &removed), []);
}

async fn store_with_keepers() -> (tempfile::TempDir, PathBuf, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = open(&path);
    let keepers = names("keeper-", 10);
    fill(&store, &keepers, 2).await;
    close(store).await;
    (dir, path, keepers)
}

#[cfg(debug_assertions)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_at_each_step_of_a_compaction_leaves_a_readable_store() {
    for point in ["copied", "switched", "scrubbing"] {
        let (_dir, path, keepers) = store_with_keepers().await;
        let mut child = CrashChild::spawn(&path, Some(point));
        assert!(
            child.wait_for("OPENED"),
            "{point}: the child opened the store"
        );
        // The first logout dies at `point`.
        assert!(
            !child.wait_for("COMPACTED 1"),
            "{point}: the child was killed"
        );
        child.kill();
        assert_recovered(&path, &keepers, 1).await;
        // The victim's tokens of that round were removed by a logout that died half-way:
        // the reopened store finished the job.
        assert_eq!(scan(&path, &issued("victim", 1)), [], "{point}");
    }
}

#[cfg(debug_assertions)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_during_migration_leaves_the_0_1_0_store_or_the_migrated_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    tokio::task::spawn_blocking({
        let path = path.clone();
        move || write_0_1_0_store(&path)
    })
    .await
    .unwrap();
    let mut child = CrashChild::spawn(&path, Some("migrated"));
    assert!(!child.wait_for("OPENED"), "the child died while migrating");
    child.kill();
    let store = open(&path);
    assert_eq!(generation(&path), "gen-1");
    assert_eq!(
        store.profiles().await.unwrap(),
        ["full", "rejected", "rotated"]
    );
    assert_eq!(store.load("rotated").await.unwrap().unwrap().version, 3);
    close(store).await;
    assert!(!path.join("db").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_arbitrary_moments_of_logouts_leaves_a_readable_store() {
    let (_dir, path, keepers) = store_with_keepers().await;
    // Bounded: eight kills, each after a different number of completed logouts.
    for round in 1..=8u32 {
        let mut child = CrashChild::spawn(&path, None);
        assert!(child.wait_for("OPENED"));
        let done = round % 4 + 1;
        assert!(child.wait_for(&format!("COMPACTED {done}")));
        // Killed wherever it is: usually inside the next save or compaction.
        child.kill();
        assert_recovered(&path, &keepers, done + 1).await;
    }
}

/// With the `keyring` feature: the OS keychain holds the key, or, where no keychain service
/// runs (a CI container), opening is a typed error, never a panic and never a store without
/// encryption.
#[cfg(feature = "keyring")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_keychain_holds_the_key_or_its_absence_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let key = KeySource::Keychain {
        service: "mailup-auth-store-sled-test".into(),
        account: path.display().to_string(),
    };
    match open_with(&path, Some(&key)) {
        Ok(store) => {
            assert!(store.is_encrypted());
            fill(&store, &["p".to_owned()], 1).await;
            close(store).await;
            let store = open_with(&path, Some(&key)).unwrap();
            assert_intact(&store, &["p".to_owned()], 1).await;
            close(store).await;
        }
        Err(StoreError::Key {
            problem: problem @ KeyProblem::Unusable { .. },
            ..
        }) => {
            eprintln!("no keychain here: {problem}");
            assert!(problem.to_string().contains("keychain"), "{problem}");
        }
        Err(other) => panic!("{other:?}"),
    }
}
