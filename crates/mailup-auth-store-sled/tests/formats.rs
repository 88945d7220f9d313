//! Records written by released versions keep loading, and what this version writes is what they
//! wrote: `tests/fixtures/format1-v0.1.0.tsv` holds the raw envelopes (profile, TAB, bytes)
//! that mailup-auth-store-sled 0.1.0 wrote. Also: an exhausted version counter is a typed error,
//! never a wrap to 0.

use std::path::Path;
use std::time::{Duration, Instant};

use mailup_auth_core::TokenSet;
use mailup_auth_core::UnixTime;
use mailup_auth_core::{AccessToken, ClientSecret, RefreshToken};
use mailup_auth_core::{ProfileRecord, StoreError, StoredClient, TokenStore};
use mailup_auth_store_sled::SledTokenStore;

const FORMAT_1: &str = include_str!("fixtures/format1-v0.1.0.tsv");

fn fixture_rows() -> Vec<(&'static str, &'static str)> {
    FORMAT_1
        .lines()
        .map(|line| line.split_once('\t').expect("profile TAB envelope"))
        .collect()
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

fn raw_db(store: &Path) -> sled::Db {
    let path = &database_dir(store);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match sled::open(path) {
            Ok(db) => return db,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Err(error) => panic!("cannot open {}: {error}", path.display()),
        }
    }
}

fn write_raw(path: &Path, rows: &[(&str, &str)]) {
    let db = raw_db(path);
    let tree = db.open_tree("profiles").unwrap();
    for (profile, envelope) in rows {
        tree.insert(profile.as_bytes(), envelope.as_bytes())
            .unwrap();
    }
    db.flush().unwrap();
}

fn read_raw(path: &Path, profile: &str) -> String {
    let db = raw_db(path);
    let bytes = db.open_tree("profiles").unwrap().get(profile).unwrap();
    String::from_utf8(bytes.unwrap().to_vec()).unwrap()
}

fn open(path: &Path) -> SledTokenStore {
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

fn fixture_record() -> ProfileRecord {
    ProfileRecord {
        tokens: Some(TokenSet {
            access_token: AccessToken::new("fixture-access-token-v1"),
            refresh_token: Some(RefreshToken::new("fixture-refresh-token-v1")),
            expires_at: UnixTime::from_secs(1_800_000_000),
            obtained_at: UnixTime::from_secs(1_799_996_400),
            token_type: Some("bearer".into()),
            scope: None,
        }),
        client: Some(StoredClient {
            client_id: "fixture-client".into(),
            client_secret: Some(ClientSecret::new("fixture-client-secret")),
            logon_url: Some("http://127.0.0.1:9/Authorization/OAuth/LogOn".into()),
            token_url: Some("http://127.0.0.1:9/Authorization/OAuth/Token".into()),
            api_base: Some("http://127.0.0.1:9/API/v1.1/Rest/ConsoleService.svc".into()),
            redirect_uri: Some("http://127.0.0.1:8765/callback".into()),
        }),
        last_refreshed_at: Some(UnixTime::from_secs(1_799_996_400)),
        reauthorization_required: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_written_by_0_1_0_load_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    write_raw(dir.path(), &fixture_rows());
    let store = open(dir.path());

    let full = store.load("full").await.unwrap().unwrap();
    assert_eq!(full.version, 1);
    assert_eq!(full.value, fixture_record());

    let rejected = store.load("rejected").await.unwrap().unwrap();
    assert_eq!(rejected.version, 2);
    assert!(rejected.value.client.is_none());
    assert!(rejected
        .value
        .reauthorization_required
        .as_deref()
        .unwrap()
        .contains("invalid_grant"));

    assert_eq!(store.load("deleted").await.unwrap(), None);
    assert_eq!(store.profiles().await.unwrap(), vec!["full", "rejected"]);
    // The tombstone keeps its version: the next save continues from it.
    assert_eq!(
        store
            .save("deleted", &fixture_record(), None)
            .await
            .unwrap(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn this_version_writes_the_released_format_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store.save("full", &fixture_record(), None).await.unwrap();
    }
    let (_, released) = fixture_rows()
        .into_iter()
        .find(|(profile, _)| *profile == "full")
        .unwrap();
    assert_eq!(read_raw(dir.path(), "full"), released);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_version_is_a_typed_error_and_delete_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let (_, full) = fixture_rows()
        .into_iter()
        .find(|(profile, _)| *profile == "full")
        .unwrap();
    let at_max = full.replace(r#""version":1,"#, &format!(r#""version":{},"#, u64::MAX));
    write_raw(dir.path(), &[("maxed", at_max.as_str())]);
    let store = open(dir.path());
    let loaded = store.load("maxed").await.unwrap().unwrap();
    assert_eq!(loaded.version, u64::MAX);
    let error = store
        .save("maxed", &fixture_record(), Some(u64::MAX))
        .await
        .unwrap_err();
    assert_eq!(
        error,
        StoreError::VersionExhausted {
            profile: "maxed".into()
        }
    );
    // Nothing was overwritten, and the record is still readable.
    assert_eq!(
        store.load("maxed").await.unwrap().unwrap().version,
        u64::MAX
    );
    // A delete (logout) clears it for good, and a new login starts again.
    store.delete("maxed").await.unwrap();
    assert_eq!(store.load("maxed").await.unwrap(), None);
    assert_eq!(
        store.save("maxed", &fixture_record(), None).await.unwrap(),
        1
    );
}
