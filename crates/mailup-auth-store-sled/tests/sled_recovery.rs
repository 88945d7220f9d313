//! sled's own recovery never destroys a damaged store's records (issue 14): sled 0.34 takes
//! the first message it cannot read for the torn end of its log and zeroes everything after
//! it. Real sled stores in temp dirs, damaged before any record message (bytes 21 and 30, and
//! a seeded sweep over the first bytes of the log) or followed by garbage: every open is
//! `Damaged` naming `mailup-auth recover`, the files' bytes are unchanged afterwards, and a
//! salvage recovers every profile whose record is intact; a kill -9 at each step of an open
//! (this test binary run as a child: `open_child`) never leaves the store worse. Seeded:
//! `MAILUP_SWEEP_SEED`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mailup_auth_core::TokenSet;
use mailup_auth_core::UnixTime;
use mailup_auth_core::{AccessToken, ClientSecret, RefreshToken};
use mailup_auth_core::{ProfileRecord, StoreError, StoredClient, TokenStore};
use mailup_auth_store_sled::SledTokenStore;
use rand::rngs::StdRng;
use rand::{Rng as _, RngCore as _, SeedableRng as _};

const PROFILES: [&str; 3] = ["alpha", "beta", "gamma"];

fn record(profile: &str) -> ProfileRecord {
    ProfileRecord {
        tokens: Some(TokenSet {
            access_token: AccessToken::new(format!("access-{profile}-4f1c")),
            refresh_token: Some(RefreshToken::new(format!("refresh-{profile}-9b2e"))),
            expires_at: UnixTime::from_secs(1_700_003_600),
            obtained_at: UnixTime::from_secs(1_700_000_000),
            token_type: Some("bearer".into()),
            scope: None,
        }),
        client: Some(StoredClient {
            client_id: format!("client-{profile}"),
            client_secret: Some(ClientSecret::new(format!("client-secret-{profile}-77aa"))),
            ..StoredClient::default()
        }),
        ..ProfileRecord::default()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

fn open(path: &Path) -> Result<SledTokenStore, StoreError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match SledTokenStore::open(path) {
            Err(StoreError::Locked { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            result => return result,
        }
    }
}

/// A store with three profiles, closed.
fn build(path: &Path) {
    let store = open(path).unwrap();
    runtime().block_on(async {
        for profile in PROFILES {
            store.save(profile, &record(profile), None).await.unwrap();
        }
    });
}

fn current_dir(store: &Path) -> PathBuf {
    let current = std::fs::read_to_string(store.join("CURRENT")).unwrap();
    store.join(current.trim())
}

/// Every file of sled's database (name, bytes), sorted.
fn sled_files(store: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(current_dir(store))
        .unwrap()
        .map(|entry| entry.unwrap())
        .filter(|entry| entry.file_type().unwrap().is_file())
        .map(|entry| {
            (
                entry.file_name().to_string_lossy().into_owned(),
                std::fs::read(entry.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

fn flip(path: &Path, byte: usize, bit: u8) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[byte] ^= 1 << bit;
    std::fs::write(path, bytes).unwrap();
}

/// Opens the damaged store twice: each is `Damaged` naming `mailup-auth recover`, and sled's
/// files are byte for byte what they were. Returns false when the store opened instead (the
/// damage is one sled reads past); then every record must be there.
fn refused_untouched(path: &Path) -> bool {
    let before = sled_files(path);
    for _ in 0..2 {
        match open(path) {
            Err(StoreError::Damaged { message, .. }) => {
                assert!(message.contains("mailup-auth recover"), "{message}");
            }
            Ok(store) => {
                runtime().block_on(async {
                    for profile in PROFILES {
                        let loaded = store.load(profile).await.unwrap().unwrap();
                        assert_eq!(loaded.value, record(profile), "{profile}");
                    }
                });
                return false;
            }
            Err(other) => panic!("expected Damaged, got {other:?}"),
        }
        assert!(sled_files(path) == before, "sled's files changed");
    }
    true
}

/// Salvages and checks that at least `at_least` profiles came back with their records, and
/// that they serve them.
fn recovers(path: &Path, at_least: usize) {
    let report = SledTokenStore::salvage(path, None).unwrap();
    assert!(
        report.recovered.len() >= at_least,
        "recovered {:?}, lost {:?}",
        report.recovered,
        report.lost
    );
    let store = open(path).unwrap();
    runtime().block_on(async {
        for recovered in &report.recovered {
            let loaded = store.load(&recovered.profile).await.unwrap().unwrap();
            assert_eq!(loaded.value, record(&recovered.profile));
        }
    });
}

#[test]
fn a_bit_flip_before_any_record_message_is_refused_untouched_and_every_profile_recovers() {
    for byte in [21, 30] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        build(&path);
        flip(&current_dir(&path).join("db"), byte, 0);
        assert!(refused_untouched(&path), "byte {byte}: the store opened");
        recovers(&path, PROFILES.len());
    }
}

#[test]
fn a_seeded_sweep_over_the_start_of_the_log_never_costs_an_intact_record() {
    let seed = std::env::var("MAILUP_SWEEP_SEED")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(14u64);
    let mut rng = StdRng::seed_from_u64(seed);
    let pristine = tempfile::tempdir().unwrap();
    let original = pristine.path().join("store");
    build(&original);
    for _ in 0..24 {
        let byte = rng.gen_range(0..300usize);
        let bit = rng.gen_range(0..8u8);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        copy_dir(&original, &path);
        flip(&current_dir(&path).join("db"), byte, bit);
        if refused_untouched(&path) {
            // One flipped bit hits one message: at most one profile's record.
            recovers(&path, PROFILES.len() - 1);
        }
    }
}

#[test]
fn a_log_followed_by_garbage_keeps_its_records() {
    let mut rng = StdRng::seed_from_u64(7);
    // Small garbage: sled may open the store (then it keeps every record) or it is refused.
    // Garbage beyond what a token store holds: refused without letting sled touch it.
    for garbage in [256 << 10, 65 << 20] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        build(&path);
        let db = current_dir(&path).join("db");
        let mut bytes = std::fs::read(&db).unwrap();
        let len = bytes.len();
        bytes.resize(len + garbage, 0);
        rng.fill_bytes(&mut bytes[len..]);
        std::fs::write(&db, bytes).unwrap();
        if refused_untouched(&path) {
            recovers(&path, PROFILES.len());
        } else {
            assert!(garbage < 64 << 20, "a huge log was opened");
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

const CHILD_STORE: &str = "MAILUP_SLED_RECOVERY_CHILD_STORE";
const CHILD_CRASH_AT: &str = "MAILUP_AUTH_STORE_SLED_CRASH_AT";

/// Runs in the child process: opens the store in `CHILD_STORE` and prints `OPENED` or
/// `DAMAGED`; the library kills it at `CHILD_CRASH_AT`.
#[test]
#[ignore = "helper run as a child process by other tests"]
fn open_child() {
    let Ok(path) = std::env::var(CHILD_STORE) else {
        return;
    };
    match open(Path::new(&path)) {
        Ok(_) => println!("OPENED"),
        Err(StoreError::Damaged { .. }) => println!("DAMAGED"),
        Err(other) => println!("ERROR {other}"),
    }
}

/// Runs `open_child` on `path`, killed at `point`; returns what it printed.
fn open_in_child(path: &Path, point: &str) -> String {
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "open_child", "--nocapture", "--ignored"])
        .env(CHILD_STORE, path)
        .env(CHILD_CRASH_AT, point)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn leftovers(path: &Path) -> Vec<String> {
    std::fs::read_dir(current_dir(path))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("pre-open"))
        .collect()
}

#[cfg(debug_assertions)]
#[test]
fn a_kill_at_each_step_of_an_open_never_leaves_the_store_worse() {
    // A damaged store: killed anywhere, the next open puts the bytes back and refuses it.
    for point in [
        "preopen-copied",
        "preopen-sled",
        "preopen-failed",
        "preopen-restored",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        build(&path);
        flip(&current_dir(&path).join("db"), 21, 0);
        let damaged = sled_files(&path);
        let printed = open_in_child(&path, point);
        assert!(!printed.contains("OPENED"), "{point}: {printed}");
        assert!(
            !printed.contains("DAMAGED"),
            "{point}: the child was not killed"
        );
        // The next open puts back what the killed one copied aside (sled may have rewritten
        // the log meanwhile), and refuses the store.
        assert!(
            matches!(open(&path), Err(StoreError::Damaged { .. })),
            "{point}"
        );
        assert!(sled_files(&path) == damaged, "{point}: the bytes changed");
        assert!(refused_untouched(&path), "{point}: the store opened");
        assert_eq!(leftovers(&path), Vec::<String>::new(), "{point}");
        recovers(&path, PROFILES.len());
    }
    // A healthy store: killed anywhere, it opens with every record.
    for point in [
        "preopen-copied",
        "preopen-sled",
        "preopen-opened",
        "preopen-wiping",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        build(&path);
        let printed = open_in_child(&path, point);
        assert!(
            !printed.contains("OPENED"),
            "{point}: the child was not killed"
        );
        let store = open(&path).unwrap();
        runtime().block_on(async {
            for profile in PROFILES {
                let loaded = store.load(profile).await.unwrap().unwrap();
                assert_eq!(loaded.value, record(profile), "{point}: {profile}");
            }
        });
        assert_eq!(leftovers(&path), Vec::<String>::new(), "{point}");
    }
}

#[test]
fn many_kills_during_saves_never_give_a_false_damaged() {
    // Children save in a loop and are killed at random moments (kill -9 by the parent);
    // every reopen must succeed with every profile.
    let mut rng = StdRng::seed_from_u64(14);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    build(&path);
    for round in 0..30 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "save_child", "--nocapture", "--ignored"])
            .env(CHILD_STORE, &path)
            .env_remove(CHILD_CRASH_AT)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.gen_range(20..400)));
        let _ = child.kill();
        child.wait().unwrap();
        let store = open(&path).unwrap_or_else(|error| panic!("round {round}: {error:?}"));
        runtime().block_on(async {
            for profile in PROFILES {
                let loaded = store.load(profile).await.unwrap().unwrap();
                assert_eq!(loaded.value.client, record(profile).client, "{profile}");
            }
        });
        drop(store);
        assert_eq!(leftovers(&path), Vec::<String>::new(), "round {round}");
    }
}

/// Runs in the child process: saves the three profiles again and again (bounded) until killed.
#[test]
#[ignore = "helper run as a child process by other tests"]
fn save_child() {
    let Ok(path) = std::env::var(CHILD_STORE) else {
        return;
    };
    let store = open(Path::new(&path)).unwrap();
    runtime().block_on(async {
        for _ in 0..2_000 {
            for profile in PROFILES {
                let expected = store.load(profile).await.unwrap().map(|v| v.version);
                store
                    .save(profile, &record(profile), expected)
                    .await
                    .unwrap();
            }
        }
    });
}
