//! `SledTokenStore::salvage` on real stores damaged the ways sled refuses (bit flips,
//! truncation): a typed `Damaged` error first, then a fresh store holding exactly the records
//! that are intact and verified, the damaged one kept aside, never a wrong record. Seeded:
//! `MAILUP_SALVAGE_TRIALS` (default 24) and `MAILUP_SALVAGE_SEED`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mailup_auth_core::TokenSet;
use mailup_auth_core::UnixTime;
use mailup_auth_core::{AccessToken, ClientSecret, RefreshToken};
use mailup_auth_core::{KeyProblem, ProfileRecord, StoreError, StoredClient, TokenStore};
use mailup_auth_store_sled::{KeySource, LostReason, SalvageReport, SledTokenStore};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

const PROFILES: [&str; 4] = ["alpha", "beta", "gamma", "delta"];

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn record(profile: &str, n: u32) -> ProfileRecord {
    ProfileRecord {
        tokens: Some(TokenSet {
            access_token: AccessToken::new(format!("access-{profile}-{n}-4f1c")),
            refresh_token: Some(RefreshToken::new(format!("refresh-{profile}-{n}-9b2e"))),
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

fn salvage(path: &Path, key: Option<&KeySource>) -> Result<SalvageReport, StoreError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match SledTokenStore::salvage(path, key) {
            Err(StoreError::Locked { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            result => return result,
        }
    }
}

/// A store with four profiles, each refreshed a few times (older versions stay in sled's
/// log), and a fifth logged in then deleted. Returns every record ever saved, by profile and
/// version, and the final version of each.
fn build(path: &Path, key: Option<&KeySource>) -> BTreeMap<(String, u64), ProfileRecord> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let store = open_with(path, key).unwrap();
    let mut saved = BTreeMap::new();
    runtime.block_on(async {
        for (index, profile) in PROFILES.iter().enumerate() {
            let mut expected = None;
            for n in 1..=(2 + index as u32) {
                let record = record(profile, n);
                let version = store.save(profile, &record, expected).await.unwrap();
                saved.insert(((*profile).to_owned(), version), record);
                expected = Some(version);
            }
        }
        store.save("gone", &record("gone", 1), None).await.unwrap();
        store.delete("gone").await.unwrap();
    });
    drop(store);
    saved
}

fn latest(saved: &BTreeMap<(String, u64), ProfileRecord>, profile: &str) -> u64 {
    saved
        .keys()
        .filter(|(p, _)| p == profile)
        .map(|(_, v)| *v)
        .max()
        .unwrap()
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

/// The non-empty files of the current generation.
fn current_files(store: &Path) -> Vec<PathBuf> {
    let current = std::fs::read_to_string(store.join("CURRENT")).unwrap();
    let mut files = Vec::new();
    let mut dirs = vec![store.join(current.trim())];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                dirs.push(entry.path());
            } else if entry.metadata().unwrap().len() > 0 {
                files.push(entry.path());
            }
        }
    }
    files.sort();
    files
}

fn current_db(store: &Path) -> PathBuf {
    let current = std::fs::read_to_string(store.join("CURRENT")).unwrap();
    store.join(current.trim()).join("db")
}

/// Checks a salvage report and the fresh store against what was saved: every recovered
/// record is one that was saved under that profile at that version, byte for byte; the fresh
/// store holds exactly the recovered ones; the damaged store was moved aside.
fn check_recovered(
    path: &Path,
    key: Option<&KeySource>,
    report: &SalvageReport,
    saved: &BTreeMap<(String, u64), ProfileRecord>,
) {
    assert!(report.moved_to.is_dir(), "the damaged store is kept");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let store = open_with(path, key).expect("the recovered store opens");
    runtime.block_on(async {
        let mut names: Vec<String> = report.recovered.iter().map(|r| r.profile.clone()).collect();
        names.sort();
        assert_eq!(store.profiles().await.unwrap(), names);
        for recovered in &report.recovered {
            let original = saved
                .get(&(recovered.profile.clone(), recovered.version))
                .unwrap_or_else(|| panic!("{recovered:?} was never saved"));
            let loaded = store.load(&recovered.profile).await.unwrap().unwrap();
            assert_eq!(&loaded.value, original, "{}", recovered.profile);
        }
    });
    assert!(
        !report.recovered.iter().any(|r| r.profile == "gone"),
        "a deleted profile stays deleted"
    );
}

#[test]
fn a_healthy_store_salvages_to_every_latest_record_and_keeps_the_deleted_one_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let saved = build(&path, None);
    let report = salvage(&path, None).unwrap();
    check_recovered(&path, None, &report, &saved);
    let recovered: Vec<(&str, u64)> = report
        .recovered
        .iter()
        .map(|r| (r.profile.as_str(), r.version))
        .collect();
    let mut expected: Vec<(&str, u64)> = PROFILES.iter().map(|p| (*p, latest(&saved, p))).collect();
    expected.sort();
    assert_eq!(recovered, expected);
    assert_eq!(report.deleted, ["gone"]);
    assert!(report.lost.is_empty(), "{:?}", report.lost);
    assert!(!report.truncated_scan);
    assert!(report.moved_to.to_string_lossy().contains("store.corrupt-"));
}

#[test]
fn damaged_stores_give_a_typed_error_and_salvage_only_verified_records() {
    let trials = env_u64("MAILUP_SALVAGE_TRIALS", 24);
    let seed = env_u64("MAILUP_SALVAGE_SEED", 11);
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let pristine = dir.path().join("pristine");
    let saved = build(&pristine, None);
    let (mut refused, mut recovered, mut lost, mut opened) = (0, 0, 0, 0);
    for trial in 0..trials {
        let path = dir.path().join(format!("trial-{trial}"));
        copy_dir(&pristine, &path);
        let files = current_files(&path);
        let file = &files[rng.gen_range(0..files.len())];
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let mut bytes = std::fs::read(file).unwrap();
        let what = if rng.gen_bool(0.5) {
            // Bit flips; in the log, in its middle, where the records are.
            let flips = rng.gen_range(1..=8);
            let range = if name == "db" {
                bytes.len() / 4..bytes.len() * 3 / 4
            } else {
                0..bytes.len()
            };
            for _ in 0..flips {
                let at = rng.gen_range(range.clone());
                bytes[at] ^= 1 << rng.gen_range(0..8);
            }
            format!("{flips} bit flips in {name}")
        } else {
            let len = rng.gen_range(0..bytes.len());
            bytes.truncate(len);
            format!("{name} truncated to {len} bytes")
        };
        std::fs::write(file, &bytes).unwrap();
        match open_with(&path, None) {
            Ok(store) => {
                // sled read past the damage (it treats a bad message at the end of its log as
                // a torn write). Salvage works on such a store all the same.
                opened += 1;
                drop(store);
            }
            Err(StoreError::Damaged { message, .. }) => {
                assert!(message.contains("mailup-auth recover"), "{message}");
                refused += 1;
            }
            Err(other) => panic!("trial {trial} ({what}): not a typed damage: {other:?}"),
        }
        let report = salvage(&path, None)
            .unwrap_or_else(|e| panic!("trial {trial} ({what}): salvage failed: {e}"));
        check_recovered(&path, None, &report, &saved);
        recovered += report.recovered.len();
        lost += report.lost.len();
        println!(
            "trial {trial} ({what}): recovered {:?}, lost {:?}, {} damaged messages",
            report
                .recovered
                .iter()
                .map(|r| (&r.profile, r.version))
                .collect::<Vec<_>>(),
            report.lost,
            report.damaged_messages
        );
    }
    println!(
        "salvage trials (seed {seed}): {trials} damaged stores ({refused} refused by sled, \
         {opened} opened anyway), all salvaged: {recovered} profiles recovered, {lost} \
         reported lost, 0 wrong"
    );
}

/// The byte range of the first occurrence of `needle` in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn a_flipped_byte_inside_a_token_is_never_recovered_as_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let saved = build(&path, None);
    let db = current_db(&path);
    let mut bytes = std::fs::read(&db).unwrap();
    // Every copy of delta's latest refresh token gets one changed byte (same length, still
    // valid JSON): only a checksum can tell.
    let token = format!("refresh-delta-{}-9b2e", latest(&saved, "delta"));
    let mut changed = 0;
    while let Some(at) = find(&bytes, token.as_bytes()) {
        bytes[at + 8] = b'D';
        changed += 1;
    }
    assert!(changed > 0, "the token is in the log");
    std::fs::write(&db, &bytes).unwrap();
    // sled would take the bad message for the torn end of its log and silently drop it and
    // everything after it (rewriting the file); the store refuses to let it.
    let before = std::fs::read(&db).unwrap();
    let refused = open_with(&path, None);
    assert!(
        matches!(refused, Err(StoreError::Damaged { .. })),
        "{refused:?}"
    );
    assert_eq!(std::fs::read(&db).unwrap(), before, "nothing was rewritten");
    let report = salvage(&path, None).unwrap();
    check_recovered(&path, None, &report, &saved);
    let delta = report.recovered.iter().find(|r| r.profile == "delta");
    // delta comes back at an older, intact version (flagged), or not at all; never with the
    // changed token.
    if let Some(delta) = delta {
        assert!(delta.version < latest(&saved, "delta"));
        assert!(delta.newer_unverified, "{delta:?}");
    } else {
        assert!(report
            .lost
            .iter()
            .any(|l| l.profile == "delta" && l.reason == LostReason::Damaged));
    }
    assert!(report.damaged_messages >= 1);
}

#[test]
fn an_encrypted_store_needs_its_key_and_recovers_only_records_that_authenticate() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let key = KeySource::File(dir.path().join("keys").join("store.key"));
    let saved = build(&path, Some(&key));
    let db = current_db(&path);
    let mut bytes = std::fs::read(&db).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x10;
    std::fs::write(&db, &bytes).unwrap();
    let path_copy = dir.path().join("copy");
    copy_dir(&path, &path_copy);

    // No key, another key: refused, nothing changed.
    assert!(matches!(
        salvage(&path, None),
        Err(StoreError::Key {
            problem: KeyProblem::Missing { .. },
            ..
        })
    ));
    let other = KeySource::File(dir.path().join("keys").join("other.key"));
    std::fs::write(
        dir.path().join("keys").join("other.key"),
        "mailup-auth-store-key-v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(
            dir.path().join("keys").join("other.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
    }
    let wrong = salvage(&path, Some(&other));
    assert!(
        matches!(
            wrong,
            Err(StoreError::Key {
                problem: KeyProblem::Wrong { .. },
                ..
            })
        ),
        "{wrong:?}"
    );
    assert!(path.join("CURRENT").is_file(), "nothing was moved");

    // With the encryption marker damaged too, the sealed records still tell a wrong key.
    let db_copy = current_db(&path_copy);
    let mut bytes = std::fs::read(&db_copy).unwrap();
    let mut damaged = 0;
    while let Some(at) = find(&bytes, b"xchacha20poly1305") {
        bytes[at] = b'X';
        damaged += 1;
    }
    assert!(damaged > 0, "the marker is in the log");
    std::fs::write(&db_copy, &bytes).unwrap();
    let wrong = salvage(&path_copy, Some(&other));
    assert!(
        matches!(
            wrong,
            Err(StoreError::Key {
                problem: KeyProblem::Wrong { .. },
                ..
            })
        ),
        "{wrong:?}"
    );
    let report = salvage(&path_copy, Some(&key)).unwrap();
    check_recovered(&path_copy, Some(&key), &report, &saved);

    let report = salvage(&path, Some(&key)).unwrap();
    check_recovered(&path, Some(&key), &report, &saved);
    assert!(!report.recovered.is_empty());
    let store = open_with(&path, Some(&key)).unwrap();
    assert!(
        store.is_encrypted(),
        "the fresh store is sealed with the same key"
    );
    drop(store);
    assert!(matches!(
        open_with(&path, None),
        Err(StoreError::Key { .. })
    ));
}

#[test]
fn garbage_and_huge_files_cost_bounded_work() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let saved = build(&path, None);
    let generation = current_db(&path).parent().unwrap().to_path_buf();
    // A blob file far over the limit (sparse: it costs no disk), and 8 MiB of garbage
    // appended to the log.
    std::fs::create_dir_all(generation.join("blobs")).unwrap();
    let huge = std::fs::File::create(generation.join("blobs").join("999")).unwrap();
    huge.set_len(1 << 40).unwrap();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let garbage: Vec<u8> = (0..8 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let db = generation.join("db");
    let mut bytes = std::fs::read(&db).unwrap();
    bytes.extend_from_slice(&garbage);
    std::fs::write(&db, &bytes).unwrap();
    let report = salvage(&path, None).unwrap();
    assert!(report.truncated_scan, "the huge blob was skipped");
    assert!(report.scanned_bytes < 1 << 30);
    check_recovered(&path, None, &report, &saved);
    assert_eq!(report.recovered.len(), PROFILES.len());
}

#[test]
fn an_open_store_is_not_salvaged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    build(&path, None);
    let store = open_with(&path, None).unwrap();
    assert!(matches!(
        SledTokenStore::salvage(&path, None),
        Err(StoreError::Locked { .. })
    ));
    drop(store);
    assert!(matches!(
        SledTokenStore::salvage(dir.path().join("nothing"), None),
        Err(StoreError::Io { .. })
    ));
}

#[test]
fn salvage_keeps_every_version_so_a_stale_writer_gets_a_conflict() {
    // Versions restarted at 1 used to let a process still holding version 1 of a profile
    // overwrite its recovered, newer tokens without a conflict.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let saved = build(&path, None);
    let report = salvage(&path, None).unwrap();
    check_recovered(&path, None, &report, &saved);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let store = open_with(&path, None).unwrap();
    runtime.block_on(async {
        for profile in PROFILES {
            let loaded = store.load(profile).await.unwrap().unwrap();
            assert_eq!(loaded.version, latest(&saved, profile), "{profile}");
        }
        // delta was saved five times: a writer that read version 1 must not win.
        assert!(latest(&saved, "delta") > 1);
        let stale = store.save("delta", &record("delta", 99), Some(1)).await;
        assert!(
            matches!(stale, Err(StoreError::Conflict { .. })),
            "{stale:?}"
        );
        // The deleted profile's tombstone kept its version: a new login goes past it.
        let version = store.save("gone", &record("gone", 2), None).await.unwrap();
        assert!(version > 1, "after the tombstone, got version {version}");
    });
}

#[cfg(unix)]
#[test]
fn a_store_behind_a_symbolic_link_is_rebuilt_where_the_link_points() {
    // Renaming the store path used to move the link itself: the damaged store stayed where
    // the link pointed and the fresh one was written beside the link, on another disk maybe.
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("volume").join("store");
    std::fs::create_dir_all(real.parent().unwrap()).unwrap();
    let saved = build(&real, None);
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let report = salvage(&link, None).unwrap();
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        report.moved_to.parent(),
        Some(
            std::fs::canonicalize(real.parent().unwrap())
                .unwrap()
                .as_path()
        ),
        "the damaged copy is kept beside the real directory"
    );
    assert!(report.moved_to.join("CURRENT").is_file());
    check_recovered(&link, None, &report, &saved);
    check_recovered(&real, None, &report, &saved);
}

#[test]
fn what_a_salvage_that_died_left_is_wiped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let saved = build(&path, None);
    // A salvage killed while it wrote the fresh database leaves `recovering/` in the store,
    // with copies of tokens: an open wipes it, and so does the next salvage.
    let leftover = path.join("recovering").join("gen-1");
    std::fs::create_dir_all(&leftover).unwrap();
    std::fs::write(leftover.join("db"), b"access-alpha-1-4f1c").unwrap();
    drop(open_with(&path, None).unwrap());
    assert!(!path.join("recovering").exists());
    std::fs::create_dir_all(&leftover).unwrap();
    std::fs::write(leftover.join("db"), b"access-alpha-1-4f1c").unwrap();
    let report = salvage(&path, None).unwrap();
    assert!(!path.join("recovering").exists());
    check_recovered(&path, None, &report, &saved);
    let names: Vec<String> = std::fs::read_dir(&path)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        !names.iter().any(|n| n == "recovering"),
        "nothing of the fresh store's scaffolding stays: {names:?}"
    );
    assert_eq!(report.recovered.len(), PROFILES.len());
}
