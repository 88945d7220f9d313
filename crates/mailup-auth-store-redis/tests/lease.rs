//! The Redis refresh lease on a real `redis-server`: one holder at a time, renewal while held,
//! takeover after a dead holder's TTL, owner-checked release, typed errors when Redis is gone.

use std::time::{Duration, Instant};

use mailup_auth_core::{LeaseAttempt, RefreshLease, StoreError};
use mailup_auth_store_redis::internal::RedisServer;
use mailup_auth_store_redis::RedisTokenStore;

async fn store(server: &RedisServer, ttl: Duration) -> RedisTokenStore {
    RedisTokenStore::builder(server.url())
        .lease_ttl(ttl)
        .connect()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_holder_at_a_time_and_a_waiter_gets_it_on_release() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    // Two "processes": two connections, two lease objects.
    let a = store(&server, Duration::from_secs(10))
        .await
        .refresh_lease();
    let b = store(&server, Duration::from_secs(10))
        .await
        .refresh_lease();
    let held = a.acquire("p", Duration::from_secs(1)).await.unwrap();
    let error = b
        .acquire("p", Duration::from_millis(100))
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::LeaseTimeout { .. }),
        "{error:?}"
    );
    // Another profile is independent.
    let _q = b.acquire("q", Duration::ZERO).await.unwrap();
    let waiter = tokio::spawn(async move {
        let started = Instant::now();
        let guard = b.acquire("p", Duration::from_secs(5)).await;
        (guard.map(drop), started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(held);
    let (got, waited) = waiter.await.unwrap();
    got.unwrap();
    assert!(waited < Duration::from_secs(5), "{waited:?}");
}

/// `try_acquire_or_wait`: one attempt, then (while another process holds the lease) a
/// bounded wait ending in `HeldElsewhere`, so the caller can look at the store; once the
/// holder lets go, the next attempt takes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_is_sent_back_to_the_store_while_the_lease_is_held_elsewhere() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let a = store(&server, Duration::from_secs(10))
        .await
        .refresh_lease();
    let b = store(&server, Duration::from_secs(10))
        .await
        .refresh_lease();
    let held = match a.try_acquire_or_wait("p", Duration::ZERO).await.unwrap() {
        LeaseAttempt::Acquired(guard) => guard,
        other => panic!("a free lease was not taken: {other:?}"),
    };
    for wait in [Duration::ZERO, Duration::from_millis(50)] {
        let attempt = b.try_acquire_or_wait("p", wait).await.unwrap();
        assert!(
            matches!(attempt, LeaseAttempt::HeldElsewhere),
            "{attempt:?}"
        );
    }
    held.release().await;
    let attempt = b.try_acquire_or_wait("p", Duration::ZERO).await.unwrap();
    assert!(matches!(attempt, LeaseAttempt::Acquired(_)), "{attempt:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_holder_keeps_its_lease_past_the_ttl() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let a = store(&server, Duration::from_millis(300))
        .await
        .refresh_lease();
    let b = store(&server, Duration::from_millis(300))
        .await
        .refresh_lease();
    let _held = a.acquire("p", Duration::from_secs(1)).await.unwrap();
    // Three TTLs later it is still held: renewed every third of the TTL.
    let error = b
        .acquire("p", Duration::from_millis(900))
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::LeaseTimeout { .. }),
        "{error:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_holders_lease_lapses_and_its_late_release_spares_the_successor() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let ttl = Duration::from_millis(400);
    let a_store = store(&server, ttl).await;
    let a = a_store.refresh_lease();
    let b = store(&server, ttl).await.refresh_lease();
    let held = a.acquire("p", Duration::from_secs(1)).await.unwrap();
    // As if A had died and its lease had lapsed: the key is gone, A does not know.
    let mut direct = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("DEL")
        .arg("mailup-auth:lease:p")
        .query_async(&mut direct)
        .await
        .unwrap();
    let started = Instant::now();
    let successor = b.acquire("p", Duration::from_secs(5)).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    // A's late release must not delete B's lease (owner-checked).
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let owner: Option<String> = redis::cmd("GET")
        .arg("mailup-auth:lease:p")
        .query_async(&mut direct)
        .await
        .unwrap();
    assert!(
        owner.is_some(),
        "the successor's lease was deleted by the old holder"
    );
    drop(successor);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_gone_is_a_typed_error_at_once_and_it_recovers() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let store = RedisTokenStore::builder(server.url())
        .operation_timeout(Duration::from_millis(500))
        .connect()
        .await
        .unwrap();
    let lease = store.refresh_lease();
    server.stop();
    let started = Instant::now();
    let error = lease
        .acquire("p", Duration::from_secs(20))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::Unavailable { .. } | StoreError::Timeout { .. }
        ),
        "{error:?}"
    );
    assert!(error.is_transient());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let error = mailup_auth_core::TokenStore::load(&store, "p")
        .await
        .unwrap_err();
    assert!(error.is_transient(), "{error:?}");
    assert!(!error.to_string().contains("password"));
    server.restart();
    // The connection manager reconnects by itself (a command may fail once more first).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match lease.acquire("p", Duration::from_secs(1)).await {
            Ok(_guard) => break,
            Err(error) if Instant::now() < deadline => {
                assert!(error.is_transient(), "{error:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("no recovery after restart: {error}"),
        }
    }
}

#[tokio::test]
async fn an_unreachable_server_and_a_remote_plain_url_are_typed_errors() {
    // Nothing listens on port 1 of the loopback address.
    let error = RedisTokenStore::connect("redis://:pw-secret@127.0.0.1:1/0")
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Unavailable { .. }), "{error:?}");
    assert!(!error.to_string().contains("pw-secret"), "{error}");
    // 192.0.2.1 (TEST-NET-1) is never contacted: refused before any I/O.
    let error = RedisTokenStore::connect("redis://192.0.2.1:6379")
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Insecure { .. }), "{error:?}");
}

/// `still_held` asks Redis whether the key still holds this guard's owner id: yes while it
/// is held; no once the key is gone (as after a pause past the TTL), and no once another
/// holder took it over; an unreachable server is a typed error, never a `true`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_knows_when_its_lease_lapsed_or_was_taken_over() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let a = RedisTokenStore::builder(server.url())
        .operation_timeout(Duration::from_millis(500))
        .connect()
        .await
        .unwrap()
        .refresh_lease();
    let b = store(&server, Duration::from_secs(10))
        .await
        .refresh_lease();
    let mut direct = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let held = a.acquire("p", Duration::from_secs(1)).await.unwrap();
    assert!(held.still_held().await.unwrap());
    // As if A had been stopped past the TTL: the key lapsed.
    let _: () = redis::cmd("DEL")
        .arg("mailup-auth:lease:p")
        .query_async(&mut direct)
        .await
        .unwrap();
    assert!(!held.still_held().await.unwrap());
    // ... and B took it over meanwhile: still not A's, and A's check leaves B's alone.
    let successor = b.acquire("p", Duration::from_secs(1)).await.unwrap();
    assert!(!held.still_held().await.unwrap());
    assert!(successor.still_held().await.unwrap());
    held.release().await;
    assert!(successor.still_held().await.unwrap());

    let again = a.acquire("q", Duration::from_secs(1)).await.unwrap();
    server.stop();
    let error = again.still_held().await.unwrap_err();
    assert!(error.is_transient(), "{error:?}");
    drop(successor);
}

/// A lease whose renewal stopped (it was held longer than `max_lease_hold`) is no longer
/// counted as held, even while its key has not lapsed yet: nothing renews it any more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_held_past_its_longest_hold_is_not_held_any_more() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let lease = RedisTokenStore::builder(server.url())
        .lease_ttl(Duration::from_secs(30))
        .max_lease_hold(Duration::ZERO)
        .connect()
        .await
        .unwrap()
        .refresh_lease();
    let held = lease.acquire("p", Duration::from_secs(1)).await.unwrap();
    // The renewal wakes after a third of the TTL and stops: bounded wait for that.
    let deadline = Instant::now() + Duration::from_secs(30);
    while held.still_held().await.unwrap() {
        assert!(Instant::now() < deadline, "the renewal never stopped");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
