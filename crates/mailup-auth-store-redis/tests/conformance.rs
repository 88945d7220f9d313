//! The TokenStore contract (`mailup-auth-store-conformance`) on a real `redis-server` started
//! for each scenario (loopback, a free port, a temporary directory, no persistence). Skipped
//! without the binary, failed under `CI`.

use std::sync::Arc;

use mailup_auth_core::TokenStore;
use mailup_auth_store_redis::internal::RedisServer;
use mailup_auth_store_redis::RedisTokenStore;

mailup_auth_store_conformance::token_store_conformance!(redis, |_path| async {
    let server = RedisServer::start()?;
    let store = RedisTokenStore::connect(server.url()).await.unwrap();
    Some((Arc::new(store) as Arc<dyn TokenStore>, server))
});

// The same contract with every record sealed (a key file in a temporary directory).
mailup_auth_store_conformance::token_store_conformance!(redis_encrypted, |_path| async {
    let server = RedisServer::start()?;
    let dir = tempfile::tempdir().unwrap();
    let key = mailup_auth_store_redis::KeySource::File(dir.path().join("redis.key"));
    let store = RedisTokenStore::builder(server.url())
        .encryption_key(key)
        .connect()
        .await
        .unwrap();
    assert!(store.is_encrypted());
    Some((Arc::new(store) as Arc<dyn TokenStore>, (server, dir)))
});

/// Two stores on one server with different prefixes do not see each other.
#[tokio::test]
async fn key_prefixes_separate_namespaces() {
    use mailup_auth_core::ProfileRecord;
    let Some(server) = RedisServer::start() else {
        return;
    };
    let a = RedisTokenStore::builder(server.url())
        .key_prefix("app-a:")
        .connect()
        .await
        .unwrap();
    let b = RedisTokenStore::builder(server.url())
        .key_prefix("app-b:")
        .connect()
        .await
        .unwrap();
    a.save("p", &ProfileRecord::default(), None).await.unwrap();
    assert_eq!(b.load("p").await.unwrap(), None);
    assert!(b.profiles().await.unwrap().is_empty());
    assert_eq!(a.profiles().await.unwrap(), ["p"]);
}
