//! Hostile review of issue 13's light save decode (a save reads the stored version and which
//! secrets the stored record holds, not their values): hostile stored bytes never make a save
//! skip the wipe the full decode asked for, never let a save through a version it does not
//! expect, and garbage is refused with nothing lost; racing saves on one version have exactly
//! one winner. Real sled in a temp dir.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mailup_auth_core::{
    AccessToken, ClientSecret, ProfileRecord, RefreshToken, StoreError, StoredClient, TokenSet,
    TokenStore, UnixTime,
};
use mailup_auth_store_sled::internal::envelope;
use mailup_auth_store_sled::SledTokenStore;

fn tokens(n: u32) -> TokenSet {
    TokenSet {
        access_token: AccessToken::new(format!("access-{n}")),
        refresh_token: Some(RefreshToken::new(format!("refresh-{n}"))),
        expires_at: UnixTime::from_secs(1_700_003_600),
        obtained_at: UnixTime::from_secs(1_700_000_000),
        token_type: None,
        scope: None,
    }
}

/// What a refresh saves: every secret.
fn full(n: u32) -> ProfileRecord {
    ProfileRecord {
        tokens: Some(tokens(n)),
        client: Some(StoredClient {
            client_id: "cid".into(),
            client_secret: Some(ClientSecret::new("client-secret")),
            ..StoredClient::default()
        }),
        ..ProfileRecord::default()
    }
}

/// What `logout --forget-client`-like saves leave: no secret at all.
fn no_secrets() -> ProfileRecord {
    ProfileRecord {
        client: Some(StoredClient {
            client_id: "cid".into(),
            ..StoredClient::default()
        }),
        ..ProfileRecord::default()
    }
}

fn open(path: &Path) -> SledTokenStore {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match SledTokenStore::open(path) {
            Err(StoreError::Locked { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            result => return result.unwrap(),
        }
    }
}

fn raw_db(store: &Path) -> sled::Db {
    let name = std::fs::read_to_string(store.join("CURRENT")).unwrap();
    let path = store.join(name.trim());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match sled::open(&path) {
            Ok(db) => return db,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Err(error) => panic!("cannot open {}: {error}", path.display()),
        }
    }
}

/// A closed store whose profile `p` holds exactly `bytes`.
fn store_holding(dir: &Path, bytes: &[u8]) -> PathBuf {
    let path = dir.join("store");
    drop(open(&path));
    let db = raw_db(&path);
    let tree = db.open_tree("profiles").unwrap();
    tree.insert("p", bytes).unwrap();
    db.flush().unwrap();
    drop(tree);
    drop(db);
    path
}

fn raw(path: &Path) -> Option<Vec<u8>> {
    let db = raw_db(path);
    let value = db.open_tree("profiles").unwrap().get("p").unwrap();
    value.map(|v| v.to_vec())
}

fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                pending.push(entry.path());
            } else if String::from_utf8_lossy(&std::fs::read(entry.path()).unwrap())
                .contains(needle)
            {
                found.push(entry.path());
            }
        }
    }
    found
}

/// The slots the full decode sees (`None`: it cannot decode the record).
fn full_slots(bytes: &[u8]) -> Option<[bool; 3]> {
    let record = envelope::decode("p", bytes).ok()??.value;
    let tokens = record.tokens.as_ref();
    Some([
        tokens.is_some(),
        tokens.is_some_and(|t| t.refresh_token.is_some()),
        record
            .client
            .as_ref()
            .is_some_and(|c| c.client_secret.is_some()),
    ])
}

/// Stored records at version 3 that hold `SECRET` somewhere, several of them lying about it.
const HOSTILE: [&str; 12] = [
    // Well formed (as `save` writes it), every secret.
    r#"{"format":1,"version":3,"record":{"tokens":{"access_token":"SECRET-a","refresh_token":"SECRET-r","expires_at":1,"obtained_at":1},"client":{"client_id":"c","client_secret":"SECRET-c"}}}"#,
    // Tokens missing their times: the full decode fails, the light one sees the slots.
    r#"{"format":1,"version":3,"record":{"tokens":{"access_token":"SECRET-a","refresh_token":"SECRET-r"}}}"#,
    // A refresh token that is an object, a client secret that is a number.
    r#"{"format":1,"version":3,"record":{"tokens":{"access_token":"a","refresh_token":{"v":"SECRET-r"},"expires_at":1,"obtained_at":1},"client":{"client_id":"c","client_secret":7}}}"#,
    // Tokens and client as arrays (serde reads structs from sequences too).
    r#"{"format":1,"version":3,"record":{"tokens":["SECRET-a","SECRET-r",1,1],"client":["c","SECRET-c"]}}"#,
    r#"{"format":1,"version":3,"record":{"tokens":["SECRET-a"],"client":["SECRET-c"]}}"#,
    r#"{"format":1,"version":3,"record":[{"access_token":"SECRET-a","refresh_token":"SECRET-r","expires_at":1,"obtained_at":1},{"client_id":"c","client_secret":"SECRET-c"}]}"#,
    // Duplicate keys: a secret, then a null in its place.
    r#"{"format":1,"version":3,"record":{"tokens":{"access_token":"SECRET-a","refresh_token":"SECRET-r","refresh_token":null,"expires_at":1,"obtained_at":1}}}"#,
    r#"{"format":1,"version":3,"record":{"client":{"client_id":"c","client_secret":"SECRET-c"},"client":null}}"#,
    r#"{"format":1,"version":3,"record":{"tokens":null},"record":{"tokens":{"access_token":"SECRET-a","refresh_token":"SECRET-r","expires_at":1,"obtained_at":1}}}"#,
    // Escaped key names.
    r#"{"format":1,"version":3,"record":{"tokens":{"access\u005ftoken":"SECRET-a","refresh\u005ftoken":"SECRET-r","expires_at":1,"obtained_at":1}}}"#,
    // Wrong types where the light decode skips values.
    r#"{"format":1,"version":3,"record":{"tokens":{"access_token":1,"refresh_token":"SECRET-r","expires_at":"x","obtained_at":1}}}"#,
    // A sealed record in a store without a key.
    r#"{"format":2,"version":3,"sealed":"SECRET-sealed"}"#,
];

/// A save of a record without secrets onto each hostile record: whenever the rule before
/// issue 13 (a full decode; a record it cannot decode counts as holding secrets) asked for
/// the wipe, every `SECRET` is gone from the store's files; the version check is the head's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_over_hostile_records_wipes_whenever_the_full_decode_asked_for_it() {
    // A record nested deeper than serde_json's recursion limit: the head reads (serde_json
    // skips an ignored value without that limit), the record does not.
    let nested = format!(
        r#"{{"format":1,"version":3,"record":{}{}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let cases = HOSTILE.iter().map(|s| s.to_string()).chain([nested]);
    for stored in cases {
        let stored = stored.as_str();
        let dir = tempfile::tempdir().unwrap();
        let path = store_holding(dir.path(), stored.as_bytes());
        let old_rule_wipes =
            full_slots(stored.as_bytes()).is_none_or(|slots| slots.contains(&true));
        let store = open(&path);
        // A version the record does not have is refused first, with what is there.
        for wrong in [None, Some(2), Some(4)] {
            assert_eq!(
                store.save("p", &no_secrets(), wrong).await,
                Err(StoreError::Conflict {
                    profile: "p".into(),
                    expected: wrong,
                    found: Some(3)
                }),
                "{stored}"
            );
        }
        assert_eq!(
            store.save("p", &no_secrets(), Some(3)).await,
            Ok(4),
            "{stored}"
        );
        tokio::task::spawn_blocking(move || drop(store))
            .await
            .unwrap();
        if old_rule_wipes {
            let left = files_containing(&path, "SECRET");
            assert!(
                left.is_empty(),
                "{}: left in {left:?}",
                &stored[..stored.len().min(200)]
            );
        }
        let saved = envelope::decode("p", &raw(&path).unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(saved.version, 4);
        assert_eq!(saved.value, no_secrets());
    }
}

/// Bytes that are no envelope at all (garbage, huge, a version that cannot be counted on): every save is a typed error and the stored bytes stay as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_is_refused_and_left_as_it_was() {
    let huge = format!(
        r#"{{"format":1,"version":3,"record":{{"tokens":null}},"pad":"{}"}}"#,
        "x".repeat(8 << 20)
    );
    let cases: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"\xff\xfe garbage".to_vec(),
        vec![b'x'; 4 << 20],
        br#"{"format":1,"version":0,"record":{}}"#.to_vec(),
        br#"{"format":1,"version":3.5,"record":{}}"#.to_vec(),
        br#"{"format":1,"version":-1,"record":{}}"#.to_vec(),
        br#"{"format":1,"version":3,"version":9,"record":{}}"#.to_vec(),
        br#"{"format":9,"version":3,"record":{}}"#.to_vec(),
        br#"{"format":1,"version":3,"record":{}} trailing"#.to_vec(),
    ];
    for stored in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = store_holding(dir.path(), &stored);
        let store = open(&path);
        for expected in [None, Some(3), Some(9)] {
            let result = store.save("p", &full(1), expected).await;
            assert!(
                matches!(result, Err(StoreError::Corrupt { .. })),
                "{:?}: {result:?}",
                String::from_utf8_lossy(&stored[..stored.len().min(60)])
            );
        }
        tokio::task::spawn_blocking(move || drop(store))
            .await
            .unwrap();
        assert_eq!(raw(&path).as_deref(), Some(&stored[..]));
    }
    // A huge but valid envelope is read as one (its padding is not a secret slot).
    let dir = tempfile::tempdir().unwrap();
    let path = store_holding(dir.path(), huge.as_bytes());
    let store = open(&path);
    assert_eq!(store.save("p", &full(1), Some(3)).await, Ok(4));
    assert_eq!(store.load("p").await.unwrap().unwrap().value, full(1));
}

/// Racing saves on one version, from tasks on every worker: exactly one wins, every other one is a conflict that names the
/// winner's version, and the winner's record is what is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_saves_on_one_version_have_exactly_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(&dir.path().join("store")));
    let mut version = store.save("p", &full(0), None).await.unwrap();
    for round in 0..5_u32 {
        let barrier = Arc::new(tokio::sync::Barrier::new(16));
        let racers: Vec<_> = (0..16_u32)
            .map(|n| {
                let store = store.clone();
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    (
                        n,
                        store.save("p", &full(round * 100 + n), Some(version)).await,
                    )
                })
            })
            .collect();
        let mut winners = Vec::new();
        for racer in racers {
            match racer.await.unwrap() {
                (n, Ok(saved)) => winners.push((n, saved)),
                (_, Err(StoreError::Conflict { found, .. })) => {
                    assert_eq!(found, Some(version + 1), "round {round}");
                }
                (_, Err(other)) => panic!("round {round}: {other:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        let (n, saved) = winners[0];
        assert_eq!(saved, version + 1);
        let stored = store.load("p").await.unwrap().unwrap();
        assert_eq!(
            (stored.version, stored.value),
            (saved, full(round * 100 + n))
        );
        version = saved;
    }
}
