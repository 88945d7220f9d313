//! What only a disk-backed store has to get right: reopening, crashes, a second process,
//! permissions, corrupt and foreign records, versions across deletes.
//!
//! Tests that need another process re-run this test binary with `--exact child_process
//! --ignored`; the environment variable `CHILD_ENV` tells the child what to do.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mailup_auth_core::TokenSet;
use mailup_auth_core::UnixTime;
use mailup_auth_core::{AccessToken, RefreshToken};
use mailup_auth_core::{ProfileRecord, StoreError, TokenStore};
use mailup_auth_store_sled::{SledTokenStore, FORMAT_VERSION};

const CHILD_ENV: &str = "MAILUP_AUTH_STORE_SLED_TEST_CHILD";

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

/// The directory of the sled database a store directory uses: the generation named by its
/// pointer file `CURRENT`, or the store directory itself when there is no pointer (the 0.1.0
/// layout, which `SledTokenStore::open` migrates).
fn database_dir(store: &Path) -> std::path::PathBuf {
    match std::fs::read_to_string(store.join("CURRENT")) {
        Ok(name) => store.join(name.trim()),
        Err(_) => store.to_path_buf(),
    }
}

/// Opens the database with sled directly, as a different program would. sled may hold its lock
/// for a few milliseconds after the last handle was dropped, hence the (bounded) retry.
fn raw_db(store: &Path) -> sled::Db {
    let path = &database_dir(store);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match sled::open(path) {
            Ok(db) => return db,
            Err(error) if Instant::now() < deadline => {
                let _ = error;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(error) => panic!("cannot open {}: {error}", path.display()),
        }
    }
}

/// Writes raw bytes under a profile key, as a different program (or disk damage) would.
fn write_raw(path: &Path, profile: &str, bytes: &[u8]) {
    let db = raw_db(path);
    let tree = db.open_tree("profiles").unwrap();
    tree.insert(profile.as_bytes(), bytes).unwrap();
    db.flush().unwrap();
}

/// Opens the store after `write_raw`/`read_raw`: sled may still hold the lock those took for a
/// few milliseconds, and the store only waits for releases of its own handles.
fn open_after_raw(path: &Path) -> SledTokenStore {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match SledTokenStore::open(path) {
            Err(StoreError::Locked { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            result => return result.unwrap(),
        }
    }
}

fn read_raw(path: &Path, profile: &str) -> String {
    let db = raw_db(path);
    let bytes = db.open_tree("profiles").unwrap().get(profile).unwrap();
    String::from_utf8(bytes.unwrap().to_vec()).unwrap()
}

/// Runs in the child process: opens the store at the path in `CHILD_ENV`, then saves records
/// 1, 2, 3, ... for profile `crash`, printing `SAVED n` after each save returned, and from the
/// fifth on keeps saving slowly until killed (bounded to about 30 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "helper run as a child process by other tests"]
async fn child_process() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let store = SledTokenStore::open(&path).unwrap();
    let mut expected = None;
    for n in 1..=300u64 {
        let version = store.save("crash", &record(n), expected).await.unwrap();
        assert_eq!(version, n);
        expected = Some(version);
        println!("SAVED {n}");
        if n >= 5 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The child process; killed with SIGKILL (on Unix) when dropped.
struct ChildStore {
    child: Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl ChildStore {
    fn spawn(path: &Path) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "child_process", "--nocapture", "--ignored"])
            .env(CHILD_ENV, path)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Self { child, lines }
    }

    /// Reads the child's output until it reports that save `n` returned.
    fn wait_for_save(&mut self, n: u64) {
        let wanted = format!("SAVED {n}");
        for line in self.lines.by_ref() {
            if line.unwrap().trim() == wanted {
                return;
            }
        }
        panic!("the child exited before `{wanted}`");
    }

    /// SIGKILL on Unix: no destructor, no flush, no unlock by the child itself.
    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for ChildStore {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_after_drop_keeps_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    {
        let store = SledTokenStore::open(&path).unwrap();
        store.save("a", &record(1), None).await.unwrap();
        store.save("a", &record(2), Some(1)).await.unwrap();
        store.save("b", &record(7), None).await.unwrap();
        store.save("gone", &record(3), None).await.unwrap();
        store.delete("gone").await.unwrap();
    }
    let store = SledTokenStore::open(&path).unwrap();
    let a = store.load("a").await.unwrap().unwrap();
    assert_eq!((a.version, a.value), (2, record(2)));
    assert_eq!(store.load("b").await.unwrap().unwrap().value, record(7));
    assert_eq!(store.load("gone").await.unwrap(), None);
    assert_eq!(store.profiles().await.unwrap(), ["a", "b"]);
    assert_eq!(store.save("a", &record(3), Some(2)).await.unwrap(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_that_returned_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let mut child = ChildStore::spawn(&path);
    child.wait_for_save(5);
    child.kill();

    let store = SledTokenStore::open(&path).unwrap();
    let stored = store.load("crash").await.unwrap().unwrap();
    // The child may have completed a later save after printing; each version's record is whole.
    assert!(stored.version >= 5, "lost a save: {}", stored.version);
    assert_eq!(stored.value, record(stored.version));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_held_by_another_process_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let mut child = ChildStore::spawn(&path);
    child.wait_for_save(1);

    let started = Instant::now();
    let error = SledTokenStore::open(&path).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "open waited");
    match &error {
        StoreError::Locked { path: shown, .. } => {
            assert_eq!(shown, &path.display().to_string());
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    assert!(
        error.to_string().contains("held by another process"),
        "{error}"
    );

    child.kill();
    let store = SledTokenStore::open(&path).unwrap();
    assert!(store.load("crash").await.unwrap().is_some());
}

#[test]
fn a_second_open_in_the_same_process_is_locked_too() {
    let dir = tempfile::tempdir().unwrap();
    let first = SledTokenStore::open(dir.path()).unwrap();
    let clone = first.clone();
    drop(first);
    // The path is compared after canonicalisation.
    let same = dir.path().join(".");
    match SledTokenStore::open(&same) {
        Err(StoreError::Locked { message, .. }) => {
            assert!(
                message.contains("already open in this process"),
                "{message}"
            );
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    drop(clone);
    SledTokenStore::open(dir.path()).unwrap();
}

/// sled lets go of its files a little after the last handle is dropped; reopening right away
/// must still work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_and_reopen_in_a_loop() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = None;
    for n in 1..=40u64 {
        let store = SledTokenStore::open(dir.path()).unwrap();
        assert_eq!(
            store.load("p").await.unwrap().map(|stored| stored.version),
            expected
        );
        expected = Some(store.save("p", &record(n), expected).await.unwrap());
    }
    assert_eq!(expected, Some(40));
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_and_files_are_private() {
    use std::os::unix::fs::PermissionsExt;

    fn check(dir: &Path) {
        let mode = std::fs::metadata(dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", dir.display());
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
            if entry.file_type().unwrap().is_dir() {
                check(&entry.path());
            } else {
                assert_eq!(mode & 0o077, 0, "{} is {mode:o}", entry.path().display());
            }
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested").join("store");
    let store = SledTokenStore::open(&path).unwrap();
    store.save("p", &record(1), None).await.unwrap();
    assert!(std::fs::read_dir(&path).unwrap().count() > 0);
    check(&path);
    drop(store);

    // An existing directory that is too open is tightened.
    let loose = dir.path().join("loose");
    std::fs::create_dir(&loose).unwrap();
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o755)).unwrap();
    let store = SledTokenStore::open(&loose).unwrap();
    store.save("p", &record(1), None).await.unwrap();
    drop(store);
    // Files from the first open are tightened by the next one.
    let store = SledTokenStore::open(&loose).unwrap();
    check(&loose);
    drop(store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_record_names_its_profile_and_spares_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    {
        let store = SledTokenStore::open(&path).unwrap();
        store.save("good", &record(1), None).await.unwrap();
        store.save("bad", &record(2), None).await.unwrap();
    }
    write_raw(&path, "bad", b"\x00\xffnot json at all");
    let store = open_after_raw(&path);

    let error = store.load("bad").await.unwrap_err();
    assert!(
        matches!(&error, StoreError::Corrupt { profile, .. } if profile == "bad"),
        "{error:?}"
    );
    assert!(error.to_string().contains("`bad`"));
    assert_eq!(store.load("good").await.unwrap().unwrap().value, record(1));
    // It is listed, so it can be found and deleted.
    assert_eq!(store.profiles().await.unwrap(), ["bad", "good"]);
    // A save cannot build on it...
    assert!(matches!(
        store.save("bad", &record(3), Some(1)).await,
        Err(StoreError::Corrupt { .. })
    ));
    // ...until it is deleted.
    store.delete("bad").await.unwrap();
    assert_eq!(store.load("bad").await.unwrap(), None);
    assert_eq!(store.save("bad", &record(3), None).await.unwrap(), 1);
    assert_eq!(store.save("good", &record(4), Some(1)).await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_record_error_does_not_quote_its_content() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    // Well-formed JSON with a wrongly typed field next to a token.
    write_raw(
        &path,
        "p",
        br#"{"format":1,"version":2,"record":{"tokens":{"access_token":"at-SECRET","refresh_token":"rt-SECRET","expires_at":"rt-SECRET","obtained_at":0}}}"#,
    );
    let store = open_after_raw(&path);
    let error = store.load("p").await.unwrap_err();
    assert!(matches!(error, StoreError::Corrupt { .. }), "{error:?}");
    let shown = format!("{error} {error:?}");
    assert!(!shown.contains("SECRET"), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_from_a_newer_format_is_refused_not_misread() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let newer = format!(
        r#"{{"format":{},"version":4,"record":{{"whatever":"changed"}}}}"#,
        FORMAT_VERSION + 1
    );
    write_raw(&path, "future", newer.as_bytes());
    let store = open_after_raw(&path);
    let error = store.load("future").await.unwrap_err();
    match &error {
        StoreError::Corrupt { profile, message } => {
            assert_eq!(profile, "future");
            assert!(message.contains("newer version"), "{message}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // Nor is it overwritten by this older release.
    assert!(matches!(
        store.save("future", &record(1), Some(4)).await,
        Err(StoreError::Corrupt { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minimal_format_1_record_loads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    // Only the required fields; plus a field this release does not know.
    write_raw(
        &path,
        "old",
        br#"{"format":1,"version":3,"record":{"tokens":{"access_token":"a","expires_at":1000,"obtained_at":0}},"note":"x"}"#,
    );
    write_raw(&path, "bare", br#"{"format":1,"version":1,"record":{}}"#);
    let store = open_after_raw(&path);

    let old = store.load("old").await.unwrap().unwrap();
    assert_eq!(old.version, 3);
    let tokens = old.value.tokens.as_ref().unwrap();
    assert_eq!(tokens.access_token.secret(), "a");
    assert_eq!(tokens.refresh_token, None);
    assert_eq!(tokens.expires_at, UnixTime::from_millis(1000));
    assert_eq!(tokens.token_type, None);
    assert_eq!(old.value.client, None);
    assert_eq!(old.value.last_refreshed_at, None);

    let bare = store.load("bare").await.unwrap().unwrap();
    assert_eq!((bare.version, bare.value), (1, ProfileRecord::default()));
    assert_eq!(store.save("old", &record(1), Some(3)).await.unwrap(), 4);
}

/// A writer that loaded version 1 before a logout and a new login must not overwrite the new
/// login's tokens, even though the new record is again the profile's first since the delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_never_repeat_across_a_delete() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledTokenStore::open(dir.path().join("store")).unwrap();
    store.save("p", &record(1), None).await.unwrap();
    let stale = store.load("p").await.unwrap().unwrap();
    store.delete("p").await.unwrap();
    let version = store.save("p", &record(2), None).await.unwrap();
    assert_eq!(version, 2);
    assert_eq!(
        store.save("p", &record(3), Some(stale.version)).await,
        Err(StoreError::Conflict {
            profile: "p".into(),
            expected: Some(1),
            found: Some(2),
        })
    );
    assert_eq!(store.load("p").await.unwrap().unwrap().value, record(2));
}

#[test]
fn debug_shows_the_path_not_the_records() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledTokenStore::open(dir.path()).unwrap();
    block_on(store.save("p", &record(1), None)).unwrap();
    let shown = format!("{store:?}");
    assert!(shown.contains("SledTokenStore"), "{shown}");
    assert!(
        !shown.contains("at-1") && !shown.contains("rt-1"),
        "{shown}"
    );
    assert_eq!(store.path(), dir.path());
}

#[test]
fn works_without_a_tokio_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledTokenStore::open(dir.path()).unwrap();
    assert_eq!(block_on(store.save("p", &record(1), None)).unwrap(), 1);
    assert_eq!(block_on(store.load("p")).unwrap().unwrap().value, record(1));
    assert_eq!(block_on(store.profiles()).unwrap(), ["p"]);
    block_on(store.delete("p")).unwrap();
}

/// Polls a future on this thread, outside any runtime.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};

    struct ThreadWaker(std::thread::Thread);
    impl Wake for ThreadWaker {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }

    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut context = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        assert!(Instant::now() < deadline, "future did not complete");
        std::thread::park_timeout(Duration::from_millis(10));
    }
}

/// Pins the on-disk envelope, which later releases must keep reading.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_envelope_on_disk_is_format_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    {
        let store = SledTokenStore::open(&path).unwrap();
        store.save("p", &record(1), None).await.unwrap();
    }
    let saved = read_raw(&path, "p");
    assert!(
        saved.starts_with(r#"{"format":1,"version":1,"record":{"tokens":{"access_token":"at-1""#),
        "{saved}"
    );
    assert!(!saved.contains("deleted"), "{saved}");

    {
        let store = open_after_raw(&path);
        store.delete("p").await.unwrap();
    }
    // The tombstone keeps the version and nothing else: the tokens are gone from the record.
    assert_eq!(
        read_raw(&path, "p"),
        r#"{"format":1,"version":1,"deleted":true}"#
    );
}
