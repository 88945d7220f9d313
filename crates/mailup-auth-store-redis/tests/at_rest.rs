//! Encryption at rest on a real `redis-server`: with a key, what Redis holds is sealed (no
//! token or client secret in clear, read back with raw Redis commands), the records round
//! trip, and a missing, wrong or unneeded key is a typed `StoreError::Key`, as in the sled
//! store, never a panic and never a store that silently writes in clear. Skipped without
//! `redis-server`, failed under `CI`.

use mailup_auth_core::TokenSet;
use mailup_auth_core::UnixTime;
use mailup_auth_core::{AccessToken, ClientSecret, RefreshToken};
use mailup_auth_core::{KeyProblem, ProfileRecord, StoreError, StoredClient, TokenStore};
use mailup_auth_store_redis::internal::RedisServer;
use mailup_auth_store_redis::{KeySource, RedisTokenStore};

const REFRESH: &str = "refresh-token-b41f0c";
const ACCESS: &str = "access-token-6e2a99";
const CLIENT_SECRET: &str = "client-secret-c0ffee";

fn record(n: u32) -> ProfileRecord {
    ProfileRecord {
        tokens: Some(TokenSet {
            access_token: AccessToken::new(format!("{ACCESS}-{n}")),
            refresh_token: Some(RefreshToken::new(format!("{REFRESH}-{n}"))),
            expires_at: UnixTime::from_secs(1_700_003_600),
            obtained_at: UnixTime::from_secs(1_700_000_000),
            token_type: Some("bearer".into()),
            scope: None,
        }),
        client: Some(StoredClient {
            client_id: "client-1".into(),
            client_secret: Some(ClientSecret::new(CLIENT_SECRET)),
            ..StoredClient::default()
        }),
        ..ProfileRecord::default()
    }
}

async fn connect(
    server: &RedisServer,
    key: Option<&KeySource>,
) -> Result<RedisTokenStore, StoreError> {
    RedisTokenStore::builder(server.url())
        .encryption_key_opt(key.cloned())
        .connect()
        .await
}

async fn raw(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Every value Redis holds under the default prefix, as bytes: the record hashes' fields, the
/// strings (the marker), the profile set's members.
async fn everything_in_redis(server: &RedisServer) -> Vec<u8> {
    let mut connection = raw(server).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("mailup-auth:*")
        .query_async(&mut connection)
        .await
        .unwrap();
    let mut all = Vec::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut connection)
            .await
            .unwrap();
        let command = match kind.as_str() {
            "hash" => "HGETALL",
            "set" => "SMEMBERS",
            _ => "MGET",
        };
        let values: Vec<Vec<u8>> = redis::cmd(command)
            .arg(&key)
            .query_async(&mut connection)
            .await
            .unwrap();
        all.extend(values.into_iter().flatten());
    }
    all
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

fn key_problem(result: Result<RedisTokenStore, StoreError>) -> KeyProblem {
    match result {
        Err(StoreError::Key { problem, .. }) => problem,
        Err(other) => panic!("expected a key error, got {other:?}"),
        Ok(_) => panic!("expected a key error, the store connected"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_records_hold_no_secret_in_clear_and_round_trip() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("keys").join("redis.key");
    let key = KeySource::File(key_path.clone());
    let store = connect(&server, Some(&key)).await.unwrap();
    assert!(store.is_encrypted());
    assert!(key_path.is_file(), "a new store creates its key");
    let mut version = None;
    for n in 1..=3 {
        version = Some(store.save("p", &record(n), version).await.unwrap());
    }
    assert_eq!(store.load("p").await.unwrap().unwrap().value, record(3));

    // What Redis holds: a sealed envelope, and nothing of the secrets.
    let mut connection = raw(&server).await;
    let envelope: Vec<u8> = redis::cmd("HGET")
        .arg("mailup-auth:record:p")
        .arg("e")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!(contains(&envelope, r#""format":2"#));
    assert!(contains(&envelope, r#""sealed":"#));
    let everything = everything_in_redis(&server).await;
    for secret in [REFRESH, ACCESS, CLIENT_SECRET] {
        assert!(!contains(&everything, secret), "{secret} is in Redis");
    }
    let key_text = std::fs::read_to_string(&key_path).unwrap();
    assert!(
        !contains(&everything, key_text.trim()),
        "the key is in Redis"
    );

    // Another process with the same key reads it, and rotates it further.
    let other = connect(&server, Some(&key)).await.unwrap();
    let loaded = other.load("p").await.unwrap().unwrap();
    assert_eq!(loaded.value, record(3));
    other
        .save("p", &record(4), Some(loaded.version))
        .await
        .unwrap();
    assert_eq!(store.load("p").await.unwrap().unwrap().value, record(4));
    // Deleting leaves a tombstone in clear, which holds no secret.
    store.delete("p").await.unwrap();
    assert_eq!(other.load("p").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_wrong_or_unneeded_key_is_a_typed_error() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("redis.key");
    let key = KeySource::File(key_path.clone());
    let store = connect(&server, Some(&key)).await.unwrap();
    store.save("p", &record(1), None).await.unwrap();

    // No key: names the key file the store was created with.
    let problem = key_problem(connect(&server, None).await);
    assert_eq!(
        problem,
        KeyProblem::Missing {
            expected: format!("the key file {}", key_path.display())
        }
    );
    // Another key (one that exists, made for something else).
    let other_path = dir.path().join("other.key");
    let other = KeySource::File(other_path.clone());
    other.create(None).unwrap();
    let problem = key_problem(connect(&server, Some(&other)).await);
    assert!(matches!(problem, KeyProblem::Wrong { .. }), "{problem}");
    assert!(problem.to_string().contains("other.key"), "{problem}");
    // The key file is gone: never a new key for a store that has one.
    let moved = dir.path().join("moved.key");
    std::fs::rename(&key_path, &moved).unwrap();
    let problem = key_problem(connect(&server, Some(&key)).await);
    assert!(matches!(problem, KeyProblem::NotFound { .. }), "{problem}");
    assert!(!key_path.exists());
    std::fs::rename(&moved, &key_path).unwrap();
    // A store opened lazily (the facade's) reports it at its first command, and writes
    // nothing.
    let lazy = RedisTokenStore::builder(server.url())
        .encryption_key(other.clone())
        .open_lazy()
        .unwrap();
    for error in [
        lazy.load("p").await.unwrap_err(),
        lazy.save("q", &record(1), None).await.unwrap_err(),
    ] {
        assert!(
            matches!(
                error,
                StoreError::Key {
                    problem: KeyProblem::Wrong { .. },
                    ..
                }
            ),
            "{error:?}"
        );
    }
    assert_eq!(store.profiles().await.unwrap(), ["p"]);
    // No error text above held key material.
    let key_text = std::fs::read_to_string(&key_path).unwrap();
    let secret = key_text
        .trim()
        .trim_start_matches("mailup-auth-store-key-v1:");
    for problem in [
        key_problem(connect(&server, None).await),
        key_problem(connect(&server, Some(&other)).await),
    ] {
        assert!(!format!("{problem} {problem:?}").contains(secret));
    }
    // The right key still reads it.
    let again = connect(&server, Some(&key)).await.unwrap();
    assert_eq!(again.load("p").await.unwrap().unwrap().value, record(1));

    // A store holding records in clear, given a key: refused, and no key file is made.
    let plain = RedisTokenStore::builder(server.url())
        .key_prefix("plain:")
        .connect()
        .await
        .unwrap();
    plain.save("p", &record(1), None).await.unwrap();
    let fresh = KeySource::File(dir.path().join("fresh.key"));
    let result = RedisTokenStore::builder(server.url())
        .key_prefix("plain:")
        .encryption_key(fresh)
        .connect()
        .await;
    assert!(
        matches!(key_problem(result), KeyProblem::NotEncrypted { .. }),
        "a key for a store in clear"
    );
    assert!(!dir.path().join("fresh.key").exists());
    assert_eq!(plain.load("p").await.unwrap().unwrap().value, record(1));
}

/// A process that connected while the store was in clear, and saves after another one made
/// it encrypted: its record in clear is refused (the save script checks), never mixed in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_without_the_key_cannot_add_clear_records_to_an_encrypted_store() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let plain = connect(&server, None).await.unwrap();
    let key = KeySource::File(dir.path().join("redis.key"));
    let sealed = connect(&server, Some(&key)).await.unwrap();
    let error = plain.save("p", &record(1), None).await.unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::Key {
                problem: KeyProblem::Missing { .. },
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(sealed.load("p").await.unwrap(), None);
    sealed.save("p", &record(1), None).await.unwrap();
    assert!(matches!(
        plain.load("p").await.unwrap_err(),
        StoreError::Key { .. }
    ));
}

/// An emptied server (restarted without persistence, FLUSHALL): an encrypted store marks it
/// encrypted again at its next save, without a restart of the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emptied_server_is_marked_encrypted_again_on_the_next_save() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let key = KeySource::File(dir.path().join("redis.key"));
    let store = connect(&server, Some(&key)).await.unwrap();
    store.save("p", &record(1), None).await.unwrap();
    let _: () = redis::cmd("FLUSHALL")
        .query_async(&mut raw(&server).await)
        .await
        .unwrap();
    store.save("p", &record(2), None).await.unwrap();
    assert_eq!(store.load("p").await.unwrap().unwrap().value, record(2));
    let problem = key_problem(connect(&server, None).await);
    assert!(matches!(problem, KeyProblem::Missing { .. }), "{problem}");
}

/// A sealed record copied to another profile's key does not open there: a typed corrupt
/// record, the other profiles unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_record_moved_to_another_profile_does_not_open() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let key = KeySource::File(dir.path().join("redis.key"));
    let store = connect(&server, Some(&key)).await.unwrap();
    store.save("alice", &record(1), None).await.unwrap();
    store
        .save("bob", &ProfileRecord::default(), None)
        .await
        .unwrap();
    let mut connection = raw(&server).await;
    let _: () = redis::cmd("COPY")
        .arg("mailup-auth:record:alice")
        .arg("mailup-auth:record:bob")
        .arg("REPLACE")
        .query_async(&mut connection)
        .await
        .unwrap();
    let error = store.load("bob").await.unwrap_err();
    assert!(matches!(error, StoreError::Corrupt { .. }), "{error:?}");
    assert!(!format!("{error:?}").contains(REFRESH));
    assert_eq!(store.load("alice").await.unwrap().unwrap().value, record(1));
}

/// The encryption marker deleted (by hand, a partial restore) while the records are sealed: a
/// process with the key used to be told the store "is not encrypted; open it without a key",
/// advice that reads every record as corrupt and lets `logout` remove them. Now the marker is
/// put back once a record opens with the key; another key is `Wrong`, and a new key is never
/// created for such a store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_marker_is_restored_by_a_process_with_the_key() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let key = KeySource::File(dir.path().join("redis.key"));
    let store = connect(&server, Some(&key)).await.unwrap();
    let version = store.save("alice", &record(1), None).await.unwrap();
    let mut connection = raw(&server).await;
    let delete_marker = || redis::cmd("DEL").arg("mailup-auth:encryption").clone();
    let _: i64 = delete_marker().query_async(&mut connection).await.unwrap();

    let other = KeySource::File(dir.path().join("other.key"));
    let problem = key_problem(connect(&server, Some(&other)).await);
    assert!(matches!(problem, KeyProblem::NotFound { .. }), "{problem}");
    assert!(!dir.path().join("other.key").exists(), "no key created");
    other.create(None).unwrap();
    let problem = key_problem(connect(&server, Some(&other)).await);
    assert!(matches!(problem, KeyProblem::Wrong { .. }), "{problem}");

    let reopened = connect(&server, Some(&key)).await.unwrap();
    let loaded = reopened.load("alice").await.unwrap().unwrap();
    assert_eq!((loaded.version, loaded.value), (version, record(1)));
    let problem = key_problem(connect(&server, None).await);
    assert!(
        matches!(problem, KeyProblem::Missing { .. }),
        "marker back: {problem}"
    );

    // A process that was already connected saves through the missing marker too.
    let _: i64 = delete_marker().query_async(&mut connection).await.unwrap();
    store
        .save("alice", &record(2), Some(version))
        .await
        .unwrap();
    assert_eq!(
        reopened.load("alice").await.unwrap().unwrap().value,
        record(2)
    );
}
