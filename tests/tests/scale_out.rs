//! Scale-out through Redis (issue 12), end to end: worker OS processes
//! (`src/bin/scale_out_worker.rs`) that share nothing but a Redis URL, the emulator over
//! loopback, and a real `redis-server` started by each test (skipped without the binary,
//! failed under `CI`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use mailup_auth::{
    Backoff, ErrorKind, HttpRequest, HttpResponse, LeaseAttempt, LeaseGuard, RedisTokenStore,
    RefreshLease, ReqwestTransport, StoreError, Transport, TransportError,
};
use mailup_auth_store_redis::internal::RedisServer;
use mailup_auth_store_redis::RedisRefreshLease;
use mailup_auth_tests::{
    client_builder, emulator_with_lifetime, log_in_to_redis, password_login, until, Round, Worker,
};
use tokio::sync::Semaphore;

/// The worker binary (src/bin/scale_out_worker.rs).
const WORKER: &str = env!("CARGO_BIN_EXE_scale_out_worker");

const LIFETIME: Duration = Duration::from_secs(2);
const EXPIRIES: u64 = 5;

/// Four worker processes × 250 tasks, in two groups of two ("hosts": each process has its own
/// directory and memory, nothing is shared but the Redis URL). Each round starts after the
/// token expired: exactly one token request per expiry, no failed call, no lockout, and every
/// token served is one the server considers live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_on_two_hosts_send_one_refresh_per_expiry() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let emulator = emulator_with_lifetime(LIFETIME).await;
    log_in_to_redis(&server.url(), &emulator).await;
    let hosts = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut workers: Vec<Worker> = (0..4)
        .map(|i| Worker::start(WORKER, &server.url(), &emulator, 250, hosts[i % 2].path()))
        .collect();
    for round in 1..=EXPIRIES {
        tokio::time::sleep(LIFETIME + Duration::from_millis(200)).await;
        let before = emulator.counters();
        for worker in &mut workers {
            worker.send("go");
        }
        let mut served = 0;
        for worker in &mut workers {
            let Round {
                ok,
                failed,
                tokens,
                errors,
            } = worker.round_result();
            assert_eq!(failed, 0, "round {round}: {errors:?}");
            for token in &tokens {
                assert!(
                    emulator.is_access_token_live(token),
                    "round {round}: dead token"
                );
            }
            served += ok;
        }
        assert_eq!(served, 1000);
        let after = emulator.counters();
        assert_eq!(
            after.token_requests - before.token_requests,
            1,
            "round {round}: one token request per expiry across all processes"
        );
        assert_eq!(
            after.token_errors, before.token_errors,
            "round {round}: lockout"
        );
    }
}

/// The process holding the lease is killed (SIGKILL) while the emulator holds its refresh:
/// of the two processes waiting to refresh, one takes over once the lease's TTL lapses (the
/// default, 10 s) and refreshes with the stored refresh token, the other adopts its save (one
/// token request between them), and nobody has to log in again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_holder_is_replaced_after_the_lease_ttl_without_a_new_login() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let emulator = emulator_with_lifetime(Duration::from_secs(3600)).await;
    log_in_to_redis(&server.url(), &emulator).await;
    let home = tempfile::tempdir().unwrap();
    let mut holder = Worker::start(WORKER, &server.url(), &emulator, 1, home.path());
    let mut successor = Worker::start(WORKER, &server.url(), &emulator, 1, home.path());
    let mut other = Worker::start(WORKER, &server.url(), &emulator, 1, home.path());
    emulator.set_token_latency(Duration::from_secs(3600));
    let before = emulator.counters().token_requests;
    holder.send("refresh");
    let deadline = Instant::now() + Duration::from_secs(10);
    while emulator.counters().token_requests == before {
        assert!(
            Instant::now() < deadline,
            "the holder's refresh never arrived"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    holder.kill();
    let killed_at = Instant::now();
    emulator.set_token_latency(Duration::ZERO);
    let after_kill = emulator.counters().token_requests;
    successor.send("refresh");
    other.send("refresh");
    let answer = successor.read_line();
    let takeover = killed_at.elapsed();
    eprintln!("takeover after SIGKILL of the lease holder: {takeover:?}");
    assert_eq!(answer, "refreshed", "the successor could not refresh");
    assert_eq!(other.read_line(), "refreshed", "the other waiter failed");
    assert_eq!(
        emulator.counters().token_requests - after_kill,
        1,
        "one of the waiters refreshed, the other adopted its tokens"
    );
    assert!(takeover < Duration::from_secs(60), "{takeover:?}");
    // It waited for the lease (it did not send the refresh token while the holder had it).
    assert!(takeover >= Duration::from_secs(5), "{takeover:?}");
    successor.send("go");
    let Round {
        ok,
        failed,
        tokens,
        errors,
    } = successor.round_result();
    assert_eq!((ok, failed), (1, 0), "{errors:?}");
    assert!(emulator.is_access_token_live(&tokens[0]));
    other.send("go");
    let Round {
        ok,
        failed,
        tokens: other_tokens,
        errors,
    } = other.round_result();
    assert_eq!((ok, failed), (1, 0), "{errors:?}");
    assert_eq!(other_tokens, tokens, "both hold the one new token");
    assert_eq!(
        emulator.counters().token_errors,
        0,
        "no refresh was rejected"
    );
}

/// Redis stops mid-run: a still-valid token keeps being served (inside the refresh margin
/// too) and no refresh is sent without the lease; once the token expired, calls fail with a
/// typed, transient store error; when Redis is back, the same client refreshes and recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_serves_valid_tokens_fails_typed_and_recovers() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    // Due at 7 s (the skew), handed out until 9 s (expiry minus 5 s of safety).
    let lifetime = Duration::from_secs(14);
    let skew = Duration::from_secs(7);
    let emulator = emulator_with_lifetime(lifetime).await;
    let client = client_builder(&emulator)
        .store_url(server.url())
        .refresh_skew(skew)
        .backoff(Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(200),
        })
        .build()
        .await
        .unwrap();
    password_login(&client).await;
    let logged_in_at = Instant::now();
    let token = client.access_token().await.unwrap();
    server.shutdown_saving();
    let before = emulator.counters();
    // Inside the refresh margin: due, still valid.
    tokio::time::sleep(
        (logged_in_at + skew + Duration::from_millis(500))
            .saturating_duration_since(Instant::now()),
    )
    .await;
    for _ in 0..3 {
        assert_eq!(client.access_token().await.unwrap(), token);
    }
    assert_eq!(
        emulator.counters().token_requests,
        before.token_requests,
        "a refresh was sent without the lease"
    );
    // Expired: a typed, transient error (not a login, not the token endpoint).
    tokio::time::sleep(
        (logged_in_at + lifetime + Duration::from_millis(200))
            .saturating_duration_since(Instant::now()),
    )
    .await;
    let error = client.access_token().await.unwrap_err();
    assert!(
        matches!(
            error.kind(),
            ErrorKind::Store(StoreError::Unavailable { .. } | StoreError::Timeout { .. })
        ),
        "{error:?}"
    );
    assert!(error.is_transient());
    assert_eq!(emulator.counters().token_requests, before.token_requests);
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    let fresh = loop {
        match client.access_token().await {
            Ok(fresh) => break fresh,
            Err(error) if Instant::now() < deadline && error.is_transient() => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("no recovery after Redis came back: {error:?}"),
        }
    };
    assert_ne!(fresh, token);
    assert!(emulator.is_access_token_live(fresh.secret()));
    assert_eq!(
        emulator.counters().token_requests,
        before.token_requests + 1
    );
}

/// A lease that counts what its user got, and can hold its guard's release until a gate opens
/// (a holder that saved but has not let go yet).
struct CountingLease {
    inner: RedisRefreshLease,
    acquired: AtomicUsize,
    held_elsewhere: AtomicUsize,
    release_gate: Option<Arc<Semaphore>>,
}

impl CountingLease {
    fn new(inner: RedisRefreshLease, release_gate: Option<Arc<Semaphore>>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            acquired: AtomicUsize::new(0),
            held_elsewhere: AtomicUsize::new(0),
            release_gate,
        })
    }

    fn gated(&self, guard: LeaseGuard) -> LeaseGuard {
        self.acquired.fetch_add(1, Ordering::SeqCst);
        match &self.release_gate {
            None => guard,
            Some(gate) => {
                let gate = Arc::clone(gate);
                LeaseGuard::with_release((), move || async move {
                    gate.acquire().await.expect("gate open").forget();
                    guard.release().await;
                })
            }
        }
    }
}

#[async_trait]
impl RefreshLease for CountingLease {
    async fn acquire(&self, profile: &str, wait: Duration) -> Result<LeaseGuard, StoreError> {
        let guard = self.inner.acquire(profile, wait).await?;
        Ok(self.gated(guard))
    }

    async fn try_acquire_or_wait(
        &self,
        profile: &str,
        wait: Duration,
    ) -> Result<LeaseAttempt, StoreError> {
        match self.inner.try_acquire_or_wait(profile, wait).await? {
            LeaseAttempt::Acquired(guard) => Ok(LeaseAttempt::Acquired(self.gated(guard))),
            other => {
                self.held_elsewhere.fetch_add(1, Ordering::SeqCst);
                Ok(other)
            }
        }
    }
}

/// A transport whose requests wait for a gate to open: the test decides when the holder's
/// refresh reaches the emulator.
struct GatedTransport {
    inner: ReqwestTransport,
    gate: Arc<Semaphore>,
}

#[async_trait]
impl Transport for GatedTransport {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        self.gate.acquire().await.expect("gate open").forget();
        self.inner.send(request).await
    }
}

/// Three client instances on one Redis, as three processes would be (nothing shared but the
/// server): the holder takes the lease and its refresh is held at the gate; the two others
/// find the lease taken and wait. The holder saves but keeps the lease (its release is held
/// too): the waiters adopt the saved tokens on the notification, without ever taking the
/// lease, and without a token request of their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_in_other_instances_adopt_the_save_without_taking_the_lease() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let emulator = emulator_with_lifetime(LIFETIME).await;
    log_in_to_redis(&server.url(), &emulator).await;
    let send_gate = Arc::new(Semaphore::new(0));
    let release_gate = Arc::new(Semaphore::new(0));
    let instance =
        |lease: Arc<CountingLease>, store: RedisTokenStore, gate: Option<Arc<Semaphore>>| {
            let transport: Arc<dyn Transport> = match gate {
                Some(gate) => Arc::new(GatedTransport {
                    inner: ReqwestTransport::new().unwrap(),
                    gate,
                }),
                None => Arc::new(ReqwestTransport::new().unwrap()),
            };
            client_builder(&emulator)
                .transport(transport)
                .store(Arc::new(store))
                .refresh_lease(Some(lease))
                .build()
        };
    let mut leases = Vec::new();
    let mut clients = Vec::new();
    for i in 0..3 {
        // A connection (and subscription) of its own, as in another process.
        let store = RedisTokenStore::connect(server.url()).await.unwrap();
        let holder = i == 0;
        let lease = CountingLease::new(
            store.refresh_lease(),
            holder.then(|| Arc::clone(&release_gate)),
        );
        let client = instance(
            Arc::clone(&lease),
            store,
            holder.then(|| Arc::clone(&send_gate)),
        )
        .await
        .unwrap();
        leases.push(lease);
        clients.push(client);
    }
    tokio::time::sleep(LIFETIME + Duration::from_millis(300)).await;
    let before = emulator.counters();

    let holder = tokio::spawn({
        let client = clients[0].clone();
        async move { client.access_token().await }
    });
    until("the holder takes the lease", || {
        leases[0].acquired.load(Ordering::SeqCst) == 1
    })
    .await;
    let waiters: Vec<_> = clients[1..]
        .iter()
        .map(|client| {
            let client = client.clone();
            tokio::spawn(async move { client.access_token().await })
        })
        .collect();
    until("both waiters find the lease taken", || {
        leases[1..]
            .iter()
            .all(|lease| lease.held_elsewhere.load(Ordering::SeqCst) >= 1)
    })
    .await;

    // The holder's refresh goes out and is saved; its lease stays held.
    send_gate.add_permits(1);
    let mut adopted = Vec::new();
    for waiter in waiters {
        adopted.push(waiter.await.unwrap().expect("the waiter is served"));
    }
    assert_eq!(adopted[0], adopted[1]);
    assert!(emulator.is_access_token_live(adopted[0].secret()));
    for lease in &leases[1..] {
        assert_eq!(
            lease.acquired.load(Ordering::SeqCst),
            0,
            "a waiter took the lease"
        );
    }
    assert!(!holder.is_finished(), "the holder let go of the lease");

    release_gate.add_permits(1);
    let token = holder.await.unwrap().unwrap();
    assert_eq!(token, adopted[0]);
    let after = emulator.counters();
    assert_eq!(after.token_requests - before.token_requests, 1);
    assert_eq!(after.token_errors, before.token_errors);
}
