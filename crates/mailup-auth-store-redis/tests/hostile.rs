//! Hostile or damaged Redis contents and a stalling server, on a real `redis-server`: what
//! another program, a careless operator or an attacker with write access can leave under the
//! store's keys is a typed error that names the profile, never a panic, a half-applied write
//! or a record that no login can replace; a save outlasts a Redis pause. Skipped without
//! `redis-server`, failed under `CI`.

use std::time::Duration;

use mailup_auth_core::TokenSet;
use mailup_auth_core::UnixTime;
use mailup_auth_core::{AccessToken, RefreshToken};
use mailup_auth_core::{ProfileRecord, RefreshLease, StoreError, TokenStore};
use mailup_auth_store_redis::internal::RedisServer;
use mailup_auth_store_redis::{RedisTokenStore, MAX_RECORD_BYTES};

const RECORD_KEY: &str = "mailup-auth:record:alice";
const PROFILES_KEY: &str = "mailup-auth:profiles";

fn record(n: u32) -> ProfileRecord {
    ProfileRecord::with_tokens(TokenSet {
        access_token: AccessToken::new(format!("access-{n}")),
        refresh_token: Some(RefreshToken::new(format!("refresh-{n}"))),
        expires_at: UnixTime::from_secs(1_700_003_600),
        obtained_at: UnixTime::from_secs(1_700_000_000),
        token_type: None,
        scope: None,
    })
}

async fn raw(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn command(connection: &mut redis::aio::MultiplexedConnection, args: &[&str]) {
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    let _: redis::Value = cmd.query_async(connection).await.unwrap();
}

fn corrupt_message(result: Result<impl std::fmt::Debug, StoreError>) -> String {
    match result {
        Err(StoreError::Corrupt { profile, message }) => {
            assert_eq!(profile, "alice");
            message
        }
        other => panic!("expected a corrupt record, got {other:?}"),
    }
}

/// A string, a list or a set where the record's hash should be: corrupt (not "unavailable"),
/// a save refuses it without writing, and a delete clears it so that a new login can save.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_key_of_another_type_is_corrupt_and_a_delete_clears_it() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let store = RedisTokenStore::connect(server.url()).await.unwrap();
    let mut redis = raw(&server).await;
    for (kind, write) in [
        ("string", vec!["SET", RECORD_KEY, "{\"format\":1}"]),
        ("list", vec!["RPUSH", RECORD_KEY, "a", "b"]),
        ("set", vec!["SADD", RECORD_KEY, "a"]),
    ] {
        command(&mut redis, &["DEL", RECORD_KEY]).await;
        command(&mut redis, &write).await;
        let message = corrupt_message(store.load("alice").await);
        assert!(message.contains(kind), "{kind}: {message}");
        corrupt_message(store.save("alice", &record(1), None).await);
        let kept: String = redis::cmd("TYPE")
            .arg(RECORD_KEY)
            .query_async(&mut redis)
            .await
            .unwrap();
        assert_eq!(kept, kind, "a refused save wrote nothing");
        store.delete("alice").await.unwrap();
        assert_eq!(store.load("alice").await.unwrap(), None);
        assert_eq!(store.save("alice", &record(1), None).await.unwrap(), 1);
        assert_eq!(store.profiles().await.unwrap(), vec!["alice".to_owned()]);
    }
}

/// A version field that is not a number from 1 to `u64::MAX`, or is missing: corrupt, and
/// after a delete (what `logout` does with a corrupt record) a new login saves again. Before,
/// the delete kept the damaged version in a tombstone and every later save failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_version_is_corrupt_and_a_delete_lets_a_new_login_save() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let store = RedisTokenStore::connect(server.url()).await.unwrap();
    let mut redis = raw(&server).await;
    for damage in ["abc", "0", "-1", "1e3", "18446744073709551616", "", "none"] {
        command(&mut redis, &["DEL", RECORD_KEY]).await;
        store.save("alice", &record(1), None).await.unwrap();
        if damage == "none" {
            command(&mut redis, &["HDEL", RECORD_KEY, "v"]).await;
        } else {
            command(&mut redis, &["HSET", RECORD_KEY, "v", damage]).await;
        }
        let message = corrupt_message(store.load("alice").await);
        assert!(message.contains("version"), "{damage}: {message}");
        store.delete("alice").await.unwrap();
        assert_eq!(store.load("alice").await.unwrap(), None, "{damage}");
        let version = store.save("alice", &record(2), None).await.unwrap();
        assert_eq!(
            store
                .load("alice")
                .await
                .unwrap()
                .map(|r| (r.version, r.value)),
            Some((version, record(2))),
            "{damage}"
        );
    }
}

/// The profile set replaced by a string: a save and a delete fail with a typed error naming
/// the key, *before* writing anything (a Lua script that fails half-way keeps its first
/// writes: the record used to be saved while the caller was told it was not).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_set_of_another_type_fails_saves_before_anything_is_written() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let store = RedisTokenStore::connect(server.url()).await.unwrap();
    let mut redis = raw(&server).await;
    let version = store.save("alice", &record(1), None).await.unwrap();
    command(&mut redis, &["DEL", PROFILES_KEY]).await;
    command(&mut redis, &["SET", PROFILES_KEY, "not a set"]).await;
    let not_a_set = |result: Result<(), StoreError>| match result {
        Err(StoreError::Io {
            context: message, ..
        }) => {
            assert!(message.contains(PROFILES_KEY), "{message}");
        }
        other => panic!("expected an I/O error naming the set, got {other:?}"),
    };
    not_a_set(
        store
            .save("alice", &record(2), Some(version))
            .await
            .map(|_| ()),
    );
    not_a_set(store.delete("alice").await);
    match store.profiles().await {
        Err(StoreError::Io {
            context: message, ..
        }) => assert!(message.contains("WRONGTYPE"), "{message}"),
        other => panic!("expected an I/O error, got {other:?}"),
    }
    let stored = store.load("alice").await.unwrap().unwrap();
    assert_eq!((stored.version, stored.value), (version, record(1)));
}

/// A record far larger than any real one (a hostile or runaway writer) is refused as corrupt
/// without being transferred: every process that loads the profile would otherwise hold it
/// in memory (50 MB made the CLI use 160 MB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_record_is_refused_without_being_read() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let store = RedisTokenStore::connect(server.url()).await.unwrap();
    let mut redis = raw(&server).await;
    store.save("alice", &record(1), None).await.unwrap();
    let huge = format!(
        "{{\"format\":1,\"version\":1,\"pad\":\"{}\",\"record\":{{}}}}",
        "A".repeat(MAX_RECORD_BYTES)
    );
    command(&mut redis, &["HSET", RECORD_KEY, "e", &huge]).await;
    let message = corrupt_message(store.load("alice").await);
    assert!(message.contains("not read"), "{message}");
    // The way out is the usual one for a corrupt record.
    store.delete("alice").await.unwrap();
    store.save("alice", &record(2), None).await.unwrap();
}

/// A lease key nobody renews and that has no TTL (written by hand, or by another program
/// under the prefix) used to block every refresh of the profile for ever; now it lapses after
/// one lease TTL, as a dead holder's does. A string and a hash alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_key_without_a_ttl_lapses_like_a_dead_holders() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let store = RedisTokenStore::builder(server.url())
        .lease_ttl(Duration::from_millis(300))
        .connect()
        .await
        .unwrap();
    let lease = store.refresh_lease();
    let mut redis = raw(&server).await;
    for write in [
        vec!["SET", "mailup-auth:lease:alice", "left-behind"],
        vec!["HSET", "mailup-auth:lease:alice", "a", "b"],
    ] {
        command(&mut redis, &["DEL", "mailup-auth:lease:alice"]).await;
        command(&mut redis, &write).await;
        let guard = lease
            .acquire("alice", Duration::from_secs(30))
            .await
            .unwrap_or_else(|error| panic!("{write:?}: {error}"));
        guard.release().await;
    }
}

/// A Redis that stops answering (`CLIENT PAUSE`, as a fork, a failover or `DEBUG SLEEP` do)
/// for longer than one command's timeout, right when a refresh's new tokens are saved: the
/// save waits it out (bounded by `save_patience`) instead of failing, which cost the session
/// (the CLI exited with the only copy of the rotated refresh token). Paused for writes only,
/// the read goes through and the script is sent and times out: the retry recognises its own
/// record when the script lands late, and never saves twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_outlasts_a_redis_pause_longer_than_the_command_timeout() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let store = RedisTokenStore::builder(server.url())
        .operation_timeout(Duration::from_millis(200))
        .connect()
        .await
        .unwrap();
    let mut redis = raw(&server).await;
    let mut version = store.save("alice", &record(0), None).await.unwrap();
    for (n, mode) in [(1, "ALL"), (2, "WRITE")] {
        command(&mut redis, &["CLIENT", "PAUSE", "1500", mode]).await;
        let saved = store
            .save("alice", &record(n), Some(version))
            .await
            .unwrap_or_else(|error| panic!("paused {mode}: {error}"));
        assert_eq!(saved, version + 1, "paused {mode}: saved once");
        let stored = store.load("alice").await.unwrap().unwrap();
        assert_eq!((stored.version, stored.value), (saved, record(n)));
        version = saved;
    }
    // Without patience, the same pause is a typed, transient error (and nothing is lost
    // that a reload cannot tell: the version either advanced or not).
    let impatient = RedisTokenStore::builder(server.url())
        .operation_timeout(Duration::from_millis(200))
        .save_patience(Duration::ZERO)
        .connect()
        .await
        .unwrap();
    command(&mut redis, &["CLIENT", "PAUSE", "1500", "ALL"]).await;
    match impatient.save("alice", &record(9), Some(version)).await {
        Err(error @ StoreError::Timeout { .. }) => assert!(error.is_transient()),
        other => panic!("expected a timeout, got {other:?}"),
    }
}

/// A database number the server does not have is named as such (it was "the server refused
/// the command (ERR)").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_number_out_of_range_is_named() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let url = format!("redis://127.0.0.1:{}/16", server.port());
    match RedisTokenStore::connect(url).await {
        Err(StoreError::Unavailable { message, .. }) => {
            assert!(message.contains("out of range"), "{message}")
        }
        other => panic!("expected an unavailable store, got {other:?}"),
    }
}

/// A server emptied from outside (`FLUSHALL`, or a restart without persistence) keeps no
/// tombstone: `load_entry` says `Absent`, not `Deleted`, so the facade does not take it for a
/// logout; `restore_lost` puts the record back after the version last seen, and an encrypted
/// store's marker comes back with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emptied_server_is_told_from_a_logout_and_the_record_can_be_restored() {
    use mailup_auth_core::StoredProfile;
    let Some(server) = RedisServer::start() else {
        return;
    };
    let keys = tempfile::tempdir().unwrap();
    let key = mailup_auth_store_redis::KeySource::File(keys.path().join("store.key"));
    let store = RedisTokenStore::builder(server.url())
        .encryption_key(key)
        .connect()
        .await
        .unwrap();
    let record = ProfileRecord::default();
    store.save("p", &record, None).await.unwrap();
    store.save("p", &record, Some(1)).await.unwrap();
    store.save("out", &record, None).await.unwrap();
    store.delete("out").await.unwrap();
    assert_eq!(
        store.load_entry("out").await.unwrap(),
        StoredProfile::Deleted
    );
    let mut direct = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("FLUSHALL")
        .query_async(&mut direct)
        .await
        .unwrap();
    assert_eq!(store.load_entry("p").await.unwrap(), StoredProfile::Absent);
    assert_eq!(
        store.load_entry("out").await.unwrap(),
        StoredProfile::Absent
    );
    // A save that expected the lost record is still a conflict...
    assert!(matches!(
        store.save("p", &record, Some(2)).await,
        Err(StoreError::Conflict { found: None, .. })
    ));
    // ... and the restore writes version 3, sealed again under the restored marker.
    assert_eq!(store.restore_lost("p", &record, 2).await.unwrap(), 3);
    let marker: Option<String> = redis::cmd("GET")
        .arg("mailup-auth:encryption")
        .query_async(&mut direct)
        .await
        .unwrap();
    assert!(marker.is_some(), "the encryption marker was not put back");
    let loaded = store.load("p").await.unwrap().unwrap();
    assert_eq!((loaded.version, loaded.value), (3, record));
}
