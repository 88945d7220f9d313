//! sled's own recovery never destroys a damaged store's records (issue 14): sled 0.34 takes
//! the first message it cannot read for the torn end of its log and zeroes everything after
//! it. Real sled stores in temp dirs, damaged before any record message (bytes 21 and 30, and
//! a seeded sweep over the first bytes of the log) or followed by garbage: every open is
//! `Damaged` naming `mailup-auth recover`, the files' bytes are unchanged afterwards, and a
//! salvage recovers every profile whose record is intact. Seeded: `MAILUP_SWEEP_SEED`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mailup_auth_core::ports::{ProfileRecord, StoreError, StoredClient, TokenStore};
use mailup_auth_core::secret::{AccessToken, ClientSecret, RefreshToken};
use mailup_auth_core::time::UnixTime;
use mailup_auth_core::token::TokenSet;
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
