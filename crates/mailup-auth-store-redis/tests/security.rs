//! AUTH and TLS from the URL on a real `redis-server`: a password (and an ACL user) from the
//! URL is sent, a wrong or missing one is a typed error that never shows it, and `rediss://`
//! to a server whose certificate a private CA signed works once that CA is trusted
//! (`tls_root_certificate`), and is a typed error when it is not. The CA and the server
//! certificate are made at test time (rcgen, in `RedisServer::start_tls_with_private_ca`). Skipped without `redis-server`, failed under
//! `CI`; the TLS tests are also skipped (saying so) by a `redis-server` built without TLS.

use std::time::Duration;

use mailup_auth_core::TokenSet;
use mailup_auth_core::UnixTime;
use mailup_auth_core::{AccessToken, RefreshToken};
use mailup_auth_core::{ProfileRecord, RefreshLease, StoreError, TokenStore};
use mailup_auth_store_redis::internal::{PrivatePki, RedisServer};
use mailup_auth_store_redis::RedisTokenStore;

const PASSWORD: &str = "default-pw-5d1c9a";
const ALICE_PASSWORD: &str = "alice-pw-93e0b7";
const WRONG: &str = "wrong-pw-7f41e2";

fn record() -> ProfileRecord {
    ProfileRecord::with_tokens(TokenSet {
        access_token: AccessToken::new("access-7c1d"),
        refresh_token: Some(RefreshToken::new("refresh-0e9b")),
        expires_at: UnixTime::from_secs(1_700_003_600),
        obtained_at: UnixTime::from_secs(1_700_000_000),
        token_type: Some("bearer".into()),
        scope: None,
    })
}

async fn round_trip(store: &RedisTokenStore) {
    let version = store.save("p", &record(), None).await.unwrap();
    let loaded = store.load("p").await.unwrap().unwrap();
    assert_eq!((loaded.version, loaded.value), (version, record()));
}

/// The error, checked to be the typed "unavailable" one, with nothing of `secrets` in its
/// message or `Debug`, nor in those of any error in its `source()` chain (a wrapped client
/// error must not bring the password back).
fn unavailable(result: Result<RedisTokenStore, StoreError>, secrets: &[&str]) -> String {
    let error = match result {
        Err(error) => error,
        Ok(store) => panic!("expected an error, connected to {}", store.location()),
    };
    assert!(matches!(error, StoreError::Unavailable { .. }), "{error:?}");
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    let mut depth = 0;
    while let Some(current) = cause {
        let shown = format!("{current} {current:?}");
        for secret in secrets {
            assert!(!shown.contains(secret), "at depth {depth}: {shown}");
        }
        cause = current.source();
        depth += 1;
        assert!(depth < 16, "a cause chain this long is a cycle");
    }
    error.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_in_the_url_is_sent_and_never_shown() {
    let Some(server) = RedisServer::start_with_args(vec![
        "--requirepass".into(),
        PASSWORD.into(),
        // redis-server joins the words after `--user` into one directive.
        "--user".into(),
        "alice".into(),
        "on".into(),
        format!(">{ALICE_PASSWORD}"),
        "~*".into(),
        "&*".into(),
        "+@all".into(),
    ]) else {
        return;
    };
    let port = server.port();
    let plain = format!("redis://127.0.0.1:{port}/0");

    // The right password (the default user), then an ACL user with its own.
    let url = format!("redis://:{PASSWORD}@127.0.0.1:{port}/0");
    let store = RedisTokenStore::connect(&url).await.unwrap();
    round_trip(&store).await;
    assert_eq!(store.location(), plain);
    let builder = RedisTokenStore::builder(&url);
    for shown in [format!("{store:?}"), format!("{builder:?}")] {
        assert!(!shown.contains(PASSWORD), "{shown}");
    }
    let alice = format!("redis://alice:{ALICE_PASSWORD}@127.0.0.1:{port}/0");
    let store = RedisTokenStore::connect(&alice).await.unwrap();
    assert_eq!(store.load("p").await.unwrap().unwrap().value, record());
    assert_eq!(store.location(), plain);
    // The lease authenticates too (its pub/sub connection is a second one).
    let guard = store
        .refresh_lease()
        .acquire("p", Duration::from_secs(1))
        .await
        .unwrap();
    guard.release().await;

    // Wrong, missing, and a wrong ACL password: typed, and the password is nowhere.
    for (url, secret) in [
        (format!("redis://:{WRONG}@127.0.0.1:{port}/0"), WRONG),
        (plain.clone(), PASSWORD),
        (format!("redis://alice:{WRONG}@127.0.0.1:{port}/0"), WRONG),
        (
            format!("redis://nobody:{PASSWORD}@127.0.0.1:{port}/0"),
            PASSWORD,
        ),
    ] {
        let message = unavailable(RedisTokenStore::connect(&url).await, &[secret, PASSWORD]);
        assert!(
            message.contains("authentication failed"),
            "{url}: {message}"
        );
        assert!(message.contains(&plain), "{message}");
    }

    // A store opened lazily (the facade's) reports it at its first command.
    let lazy = RedisTokenStore::builder(format!("redis://:{WRONG}@127.0.0.1:{port}/0"))
        .open_lazy()
        .unwrap();
    let error = lazy.load("p").await.unwrap_err();
    assert!(matches!(error, StoreError::Unavailable { .. }), "{error:?}");
    assert!(!format!("{error:?}").contains(WRONG));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_private_ca_saves_loads_and_leases() {
    let Some((server, ca)) = RedisServer::start_tls_with_private_ca() else {
        return;
    };
    let url = server.url();
    assert!(url.starts_with("rediss://"), "{url}");
    let store = RedisTokenStore::builder(&url)
        .tls_root_certificate(ca.clone())
        .connect()
        .await
        .unwrap();
    round_trip(&store).await;
    let lease = store.refresh_lease();
    let guard = lease.acquire("p", Duration::from_secs(1)).await.unwrap();
    // One holder at a time, over TLS too: a second store waits and gets it on release.
    let other = RedisTokenStore::builder(&url)
        .tls_root_certificate(ca)
        .connect()
        .await
        .unwrap()
        .refresh_lease();
    let error = other
        .acquire("p", Duration::from_millis(50))
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::LeaseTimeout { .. }),
        "{error:?}"
    );
    let waiter = tokio::spawn(async move { other.acquire("p", Duration::from_secs(5)).await });
    guard.release().await;
    waiter.await.unwrap().unwrap().release().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_to_an_untrusted_certificate_is_a_typed_error() {
    let Some((server, _ca)) = RedisServer::start_tls_with_private_ca() else {
        return;
    };
    let url = server.url();
    // The system's roots do not know the private CA; nor does another private CA.
    let message = unavailable(RedisTokenStore::connect(&url).await, &[]);
    assert!(message.contains("TLS failed"), "{message}");
    let message = unavailable(
        RedisTokenStore::builder(&url)
            .tls_root_certificate(PrivatePki::new().ca_certificate)
            .connect()
            .await,
        &[],
    );
    assert!(message.contains("TLS failed"), "{message}");
    // A certificate that is not PEM, or one given for plain redis://: refused before any I/O.
    let message = unavailable(
        RedisTokenStore::builder(&url)
            .tls_root_certificate(b"not a certificate".to_vec())
            .connect()
            .await,
        &[],
    );
    assert!(message.contains("PEM"), "{message}");
    let message = unavailable(
        RedisTokenStore::builder("redis://127.0.0.1:1/0")
            .tls_root_certificate(PrivatePki::new().ca_certificate)
            .connect()
            .await,
        &[],
    );
    assert!(message.contains("rediss://"), "{message}");
}
