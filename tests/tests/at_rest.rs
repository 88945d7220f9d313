//! The facade over an encrypted store: `MailUpClientBuilder::store_key`, for a sled directory
//! and for a Redis URL (there over `rediss://` with a private CA, `redis_root_certificate`).

use mailup_auth::core::{KeyProblem, StoreError};
use mailup_auth::{ErrorKind, KeySource};
use mailup_auth_emulator::Emulator;
use mailup_auth_tests::{client_builder, password_login};

fn files_contain(dir: &std::path::Path, needle: &str) -> bool {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else if let Ok(bytes) = std::fs::read(&path) {
            if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                return true;
            }
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_store_through_the_builder_holds_no_token_and_needs_its_key() {
    let emulator = Emulator::builder().start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("tokens");
    let key = dir.path().join("keys").join("store.key");
    let builder = || client_builder(&emulator).store_path(&store);
    let access = {
        let client = builder()
            .store_key(KeySource::File(key.clone()))
            .build()
            .await
            .unwrap();
        password_login(&client).await;
        client.access_token().await.unwrap().secret().to_owned()
    };
    // Closed: sled lets go of the directory a moment after the last handle.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!files_contain(&store, &access), "no token in clear on disk");
    // Without the key: a typed error, never an empty store.
    let error = builder().build().await.unwrap_err();
    assert!(
        matches!(
            error.kind(),
            ErrorKind::Store(StoreError::Key {
                problem: KeyProblem::Missing { .. },
                ..
            })
        ),
        "{error:?}"
    );
    // With it: the same tokens.
    let client = builder()
        .store_key(KeySource::File(key))
        .build()
        .await
        .unwrap();
    assert_eq!(client.access_token().await.unwrap().secret(), access);
}

/// Hostile review 3. Within one process the builder hands out the store already open for a
/// directory, whatever key the new client asked for: a client built with `store_key` on a
/// directory another client opened in clear gets the clear store (its tokens are then written
/// in clear although it asked for encryption), and a client built with a *wrong* key on an
/// encrypted directory opens it and reads its tokens. Out of process both are
/// `StoreError::Key` (`NotEncrypted`, `Wrong`); "the first opener decides" (the `store_key`
/// doc) turns a key check into nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_does_not_fit_is_refused_even_when_the_store_is_open_in_this_process() {
    let emulator = Emulator::builder().start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let builder = |store: &std::path::Path| client_builder(&emulator).store_path(store);
    let mut accepted = Vec::new();

    // A clear store, open in this process; then a client that asks for encryption.
    let clear = dir.path().join("clear");
    let first = builder(&clear).build().await.unwrap();
    password_login(&first).await;
    let keyed = builder(&clear)
        .store_key(KeySource::File(dir.path().join("clear.key")))
        .build()
        .await;
    if keyed.is_ok() {
        accepted.push("a key for a store holding records in clear");
    }

    // An encrypted store, open in this process; then a client with another store's key.
    let sealed = dir.path().join("sealed");
    let owner = builder(&sealed)
        .store_key(KeySource::File(dir.path().join("sealed.key")))
        .build()
        .await
        .unwrap();
    password_login(&owner).await;
    let other_key = KeySource::File(dir.path().join("other.key"));
    drop(
        builder(&dir.path().join("other"))
            .store_key(other_key.clone())
            .build()
            .await
            .unwrap(),
    );
    if let Ok(intruder) = builder(&sealed).store_key(other_key).build().await {
        if intruder.access_token().await.is_ok() {
            accepted.push("another store's key, which then reads the tokens");
        }
    }
    drop((first, owner));
    assert_eq!(
        accepted,
        Vec::<&str>::new(),
        "key checks skipped in-process"
    );
}

/// The same key option on a Redis URL, over TLS with a private CA: the record in Redis is
/// sealed, a client without the key fails with a typed key error, one with it gets the tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_key_applies_to_a_redis_store_url_over_tls_with_a_private_ca() {
    let Some((server, ca)) =
        mailup_auth_store_redis::internal::RedisServer::start_tls_with_private_ca()
    else {
        return;
    };
    let emulator = Emulator::builder().start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = KeySource::File(dir.path().join("redis.key"));
    let builder = || {
        client_builder(&emulator)
            .store_url(server.url())
            .redis_root_certificate(ca.clone())
    };
    let client = builder().store_key(key.clone()).build().await.unwrap();
    password_login(&client).await;
    let access = client.access_token().await.unwrap().secret().to_owned();

    // What Redis holds, read with a raw connection that trusts the same CA.
    let raw = redis::Client::build_with_tls(
        server.url(),
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(ca.clone().into_bytes()),
        },
    )
    .unwrap();
    let mut connection = raw.get_multiplexed_async_connection().await.unwrap();
    let envelope: Vec<u8> = redis::cmd("HGET")
        .arg("mailup-auth:record:default")
        .arg("e")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!(!envelope.is_empty());
    assert!(!envelope
        .windows(access.len())
        .any(|w| w == access.as_bytes()));

    let error = builder().build().await.unwrap_err();
    assert!(
        matches!(
            error.kind(),
            ErrorKind::Store(StoreError::Key {
                problem: KeyProblem::Missing { .. },
                ..
            })
        ),
        "{error:?}"
    );
    let other = builder().store_key(key).build().await.unwrap();
    assert_eq!(other.access_token().await.unwrap().secret(), access);
}
