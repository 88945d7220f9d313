//! Two races of the refresh path through Redis, end to end (the emulator over loopback, a
//! real `redis-server` started by each test: skipped without the binary, failed under `CI`):
//!
//! - Redis emptied (`FLUSHALL`) between the refresh holder's load and its save: the new
//!   tokens MailUp just rotated are put back, not dropped as if the user had logged out; a
//!   real logout at the same moment (a tombstone) still wins.
//! - The refresh lease lost between taking it and sending the refresh (a holder stopped past
//!   the TTL): nothing is sent; the caller adopts the new holder's tokens, or gets a typed,
//!   transient error and takes the lease again next time.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use mailup_auth::{
    Error, ErrorKind, HttpRequest, HttpResponse, LeaseAttempt, LeaseGuard, MailUpClient,
    ProfileRecord, ReauthReason, RedisTokenStore, RefreshLease, ReqwestTransport, StoreError,
    StoredProfile, TokenStore, Transport, TransportError, UnixTime, Versioned,
};
use mailup_auth_emulator::Emulator;
use mailup_auth_store_redis::internal::RedisServer;
use mailup_auth_store_redis::RedisRefreshLease;
use mailup_auth_tests::{client_builder, log_in_to_redis, until};
use tokio::sync::Semaphore;

/// The profile every client here uses (the builder's default).
const PROFILE: &str = "default";

/// A client instance of its own on `store` and `lease` (as another process would have).
async fn instance(
    emulator: &Emulator,
    transport: Arc<dyn Transport>,
    store: Arc<dyn TokenStore>,
    lease: Arc<dyn RefreshLease>,
) -> MailUpClient {
    client_builder(emulator)
        .transport(transport)
        .store(store)
        .refresh_lease(Some(lease))
        .build()
        .await
        .unwrap()
}

async fn redis_connection(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// A transport whose answers wait at a gate: the token endpoint has answered (MailUp rotated
/// the refresh token), the client does not know yet. `answered` counts answers held.
struct AnswerGate {
    inner: ReqwestTransport,
    gate: Arc<Semaphore>,
    answered: Arc<AtomicUsize>,
}

#[async_trait]
impl Transport for AnswerGate {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        let answer = self.inner.send(request).await;
        self.answered.fetch_add(1, Ordering::SeqCst);
        self.gate.acquire().await.expect("gate open").forget();
        answer
    }
}

/// One refresh through a gated transport, on its own Redis connection and lease; returns the
/// client, its refresh in flight (answered by the emulator, held at the gate), and the gate.
async fn refresh_held_at_the_gate(
    server: &RedisServer,
    emulator: &Emulator,
) -> (
    tokio::task::JoinHandle<Result<mailup_auth::AccessToken, Error>>,
    Arc<Semaphore>,
) {
    let store = RedisTokenStore::connect(server.url()).await.unwrap();
    let lease = Arc::new(store.refresh_lease());
    let gate = Arc::new(Semaphore::new(0));
    let answered = Arc::new(AtomicUsize::new(0));
    let transport = Arc::new(AnswerGate {
        inner: ReqwestTransport::new().unwrap(),
        gate: Arc::clone(&gate),
        answered: Arc::clone(&answered),
    });
    let client = instance(emulator, transport, Arc::new(store), lease).await;
    let refresh = tokio::spawn(async move { client.refresh().await });
    until("the emulator answers the refresh", || {
        answered.load(Ordering::SeqCst) == 1
    })
    .await;
    (refresh, gate)
}

/// `FLUSHALL` after MailUp rotated the refresh token and before the holder saved: the holder
/// puts its new tokens back (version + 1), keeps serving them, and another instance finds
/// them in Redis. One token request in all, none rejected, nobody logs in again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_emptied_mid_refresh_keeps_the_new_tokens() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let emulator = Emulator::builder().start().await.unwrap();
    let first = log_in_to_redis(&server.url(), &emulator).await;
    let reader = RedisTokenStore::connect(server.url()).await.unwrap();
    let before = reader.load(PROFILE).await.unwrap().unwrap().version;
    let counters = emulator.counters();

    let (refresh, gate) = refresh_held_at_the_gate(&server, &emulator).await;
    let _: () = redis::cmd("FLUSHALL")
        .query_async(&mut redis_connection(&server).await)
        .await
        .unwrap();
    assert_eq!(
        reader.load_entry(PROFILE).await.unwrap(),
        StoredProfile::Absent
    );
    gate.add_permits(1);
    let token = refresh.await.unwrap().expect("the refresh is kept");
    assert_ne!(token.secret(), first);
    assert!(emulator.is_access_token_live(token.secret()));

    // Saved, after the version the holder had seen.
    let stored = reader
        .load(PROFILE)
        .await
        .unwrap()
        .expect("the record is back");
    assert_eq!(stored.version, before + 1);
    let tokens = stored.value.tokens.expect("with the new tokens");
    assert_eq!(tokens.access_token.secret(), token.secret());

    // Another instance ("process") starts from Redis and is served without a request.
    let other = instance(
        &emulator,
        Arc::new(ReqwestTransport::new().unwrap()),
        Arc::new(reader.clone()),
        Arc::new(reader.refresh_lease()),
    )
    .await;
    assert_eq!(other.access_token().await.unwrap(), token);
    let after = emulator.counters();
    assert_eq!(after.token_requests - counters.token_requests, 1);
    assert_eq!(after.token_errors, counters.token_errors);
}

/// The same moment, but another process logs out (a tombstone) instead of Redis being
/// emptied: the logout wins, the holder ends logged out, and nothing is put back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_while_refreshing_still_ends_logged_out() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let emulator = Emulator::builder().start().await.unwrap();
    log_in_to_redis(&server.url(), &emulator).await;
    let reader = RedisTokenStore::connect(server.url()).await.unwrap();

    let (refresh, gate) = refresh_held_at_the_gate(&server, &emulator).await;
    let other = instance(
        &emulator,
        Arc::new(ReqwestTransport::new().unwrap()),
        Arc::new(reader.clone()),
        Arc::new(reader.refresh_lease()),
    )
    .await;
    other.logout().await.unwrap();
    assert_eq!(
        reader.load_entry(PROFILE).await.unwrap(),
        StoredProfile::Deleted
    );
    gate.add_permits(1);
    let error = refresh.await.unwrap().unwrap_err();
    assert!(
        matches!(
            error.kind(),
            ErrorKind::ReauthorizationRequired(ReauthReason::LoggedOut)
        ),
        "{error:?}"
    );
    assert_eq!(
        reader.load_entry(PROFILE).await.unwrap(),
        StoredProfile::Deleted,
        "the logout was overwritten"
    );
}

/// What a stopped process misses while it is stopped, run while the holder is "paused"
/// between its reload and the check before sending.
type Pause = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A Redis store that, once armed, runs `pause` right after answering a `load_entry` (the
/// reload the facade does once it holds the lease): as if the process had been stopped
/// there (SIGSTOP, a GC pause) while the world went on.
struct PausingStore {
    inner: RedisTokenStore,
    armed: Arc<AtomicBool>,
    pause: Mutex<Option<Pause>>,
}

#[async_trait]
impl TokenStore for PausingStore {
    async fn load(&self, profile: &str) -> Result<Option<Versioned<ProfileRecord>>, StoreError> {
        self.inner.load(profile).await
    }
    async fn load_entry(&self, profile: &str) -> Result<StoredProfile, StoreError> {
        let entry = self.inner.load_entry(profile).await;
        if self.armed.swap(false, Ordering::SeqCst) {
            let pause = self.pause.lock().unwrap().take();
            if let Some(pause) = pause {
                pause.await;
            }
        }
        entry
    }
    async fn save(
        &self,
        profile: &str,
        record: &ProfileRecord,
        expected: Option<u64>,
    ) -> Result<u64, StoreError> {
        self.inner.save(profile, record, expected).await
    }
    async fn restore_lost(
        &self,
        profile: &str,
        record: &ProfileRecord,
        lost_version: u64,
    ) -> Result<u64, StoreError> {
        self.inner.restore_lost(profile, record, lost_version).await
    }
    async fn delete(&self, profile: &str) -> Result<(), StoreError> {
        self.inner.delete(profile).await
    }
    async fn profiles(&self) -> Result<Vec<String>, StoreError> {
        self.inner.profiles().await
    }
    async fn consume_once(
        &self,
        key: &str,
        expires_at: UnixTime,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        self.inner.consume_once(key, expires_at, now).await
    }
}

/// The Redis lease, arming the store's pause whenever it is taken.
struct ArmingLease {
    inner: RedisRefreshLease,
    armed: Arc<AtomicBool>,
}

#[async_trait]
impl RefreshLease for ArmingLease {
    async fn acquire(&self, profile: &str, wait: Duration) -> Result<LeaseGuard, StoreError> {
        let guard = self.inner.acquire(profile, wait).await?;
        self.armed.store(true, Ordering::SeqCst);
        Ok(guard)
    }
    async fn try_acquire_or_wait(
        &self,
        profile: &str,
        wait: Duration,
    ) -> Result<LeaseAttempt, StoreError> {
        let attempt = self.inner.try_acquire_or_wait(profile, wait).await?;
        if matches!(attempt, LeaseAttempt::Acquired(_)) {
            self.armed.store(true, Ordering::SeqCst);
        }
        Ok(attempt)
    }
}

/// A client whose first lease is lost while it is "paused" after its reload: `pause` runs
/// there, after the lease key is deleted (its TTL lapsed while the process was stopped).
async fn client_paused_after_taking_the_lease(
    server: &RedisServer,
    emulator: &Emulator,
    then: Option<Pause>,
) -> MailUpClient {
    let store = RedisTokenStore::connect(server.url()).await.unwrap();
    let armed = Arc::new(AtomicBool::new(false));
    let lease = Arc::new(ArmingLease {
        inner: store.refresh_lease(),
        armed: Arc::clone(&armed),
    });
    let mut direct = redis_connection(server).await;
    let pause: Pause = Box::pin(async move {
        let _: () = redis::cmd("DEL")
            .arg(format!("mailup-auth:lease:{PROFILE}"))
            .query_async(&mut direct)
            .await
            .unwrap();
        if let Some(then) = then {
            then.await;
        }
    });
    let store = PausingStore {
        inner: store,
        armed,
        pause: Mutex::new(Some(pause)),
    };
    instance(
        emulator,
        Arc::new(ReqwestTransport::new().unwrap()),
        Arc::new(store),
        lease,
    )
    .await
}

/// The holder's lease lapses while it is paused between its reload and the send, and another
/// process takes it over and refreshes: the paused holder does not send its (now used)
/// refresh token; it adopts the other's tokens. One token request in all, none rejected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_lost_before_sending_sends_nothing_and_adopts_the_new_holders_tokens() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let emulator = Emulator::builder().start().await.unwrap();
    log_in_to_redis(&server.url(), &emulator).await;
    let successor_store = RedisTokenStore::connect(server.url()).await.unwrap();
    let successor = instance(
        &emulator,
        Arc::new(ReqwestTransport::new().unwrap()),
        Arc::new(successor_store.clone()),
        Arc::new(successor_store.refresh_lease()),
    )
    .await;
    let successor_refresh = Arc::new(Mutex::new(None));
    let takeover: Pause = Box::pin({
        let successor_refresh = Arc::clone(&successor_refresh);
        async move {
            let token = successor.refresh().await.expect("the successor refreshes");
            *successor_refresh.lock().unwrap() = Some(token);
        }
    });
    let paused = client_paused_after_taking_the_lease(&server, &emulator, Some(takeover)).await;
    let counters = emulator.counters();

    let token = paused.refresh().await.expect("the new holder's tokens");
    let successors = successor_refresh.lock().unwrap().take().unwrap();
    assert_eq!(token, successors);
    assert!(emulator.is_access_token_live(token.secret()));
    let after = emulator.counters();
    assert_eq!(
        after.token_requests - counters.token_requests,
        1,
        "the paused holder sent its refresh after losing the lease"
    );
    assert_eq!(after.token_errors, counters.token_errors);
    assert_eq!(paused.access_token().await.unwrap(), token);
}

/// The lease lapses while the holder is paused and nobody takes over: nothing is sent, the
/// forced refresh fails with a typed, transient error, and the next one takes the lease again
/// and refreshes (the refresh token was never used, so it still works).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_lapsed_without_a_successor_sends_nothing_then_is_taken_again() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let emulator = Emulator::builder().start().await.unwrap();
    let first = log_in_to_redis(&server.url(), &emulator).await;
    let paused = client_paused_after_taking_the_lease(&server, &emulator, None).await;
    let counters = emulator.counters();

    let error = paused.refresh().await.unwrap_err();
    assert!(
        matches!(error.kind(), ErrorKind::Store(StoreError::LeaseLost { .. })),
        "{error:?}"
    );
    assert!(error.is_transient());
    assert_eq!(
        emulator.counters().token_requests,
        counters.token_requests,
        "a refresh was sent without the lease"
    );
    // The old token is still served while valid: nothing was lost.
    assert_eq!(paused.access_token().await.unwrap().secret(), first);

    let token = paused.refresh().await.expect("the lease is taken again");
    assert_ne!(token.secret(), first);
    assert!(emulator.is_access_token_live(token.secret()));
    let after = emulator.counters();
    assert_eq!(after.token_requests - counters.token_requests, 1);
    assert_eq!(after.token_errors, counters.token_errors);
}
