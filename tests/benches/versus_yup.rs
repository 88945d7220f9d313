//! Side by side in one run (issue 13): the floors, this project and yup-oauth2 on the same
//! emulator, with the real clock.
//!
//! - cached read: the floor (`ArcSwap<Arc<String>>` load + `Arc` clone), our
//!   `cached_access_token()` and `access_token().await` on one thread and on two at once, and
//!   yup-oauth2's `Authenticator::token()`; the two-thread figures say whether the threads
//!   really had a core each (their CPU time over wall time), since two threads taking turns
//!   on one core double the time per read whatever the code does;
//! - refresh storms: 1,000 and 10,000 tasks asking for a token on an expired one; the refresh
//!   requests sent and the callers that failed are counted through the emulator's counters;
//!   beside them the no-refresh floor (the same tasks on a fresh token); ours twice, on a sled
//!   store with its default (saves on the blocking pool) and with its saves on the calling
//!   thread (`WriteThread::CallingThread`, the opt-in);
//! - the API call `GET Console/Authentication/Info`: raw reqwest with a static Bearer header
//!   on a client with our default transport's settings (the floor; also on
//!   `reqwest::Client::new()`), our `get`, our transport alone (no facade), and yup-oauth2's
//!   `token()` followed by the floor's raw call; one at a time and 64 at once (P3);
//! - refresh + durable save (P4): our forced `refresh()` on a sled store (the default, and with
//!   its saves on the calling thread) beside the floor (a raw refresh POST and a bare sled
//!   insert + flush), the pieces (each alone; the store's
//!   `save` and `load`; a spawned task), and a `refresh()` whose store and transport are
//!   wrapped to time them, which says how much of a refresh is the store, the token request
//!   and the facade itself.
//!
//! yup-oauth2 has no flow that starts from a refresh token the application already holds and
//! a token URI of its choosing except through its storage: its authorized-user flow sends to a
//! fixed Google URI, so the bench uses the device flow's authenticator (whose
//! `ApplicationSecret::token_uri` is the emulator's token endpoint, and whose own device-code
//! request, sent only when a refresh fails, is pointed at a path the emulator answers 404),
//! with a `TokenStorage` that holds one token in a `std::sync::Mutex` (what its memory storage
//! does) and that the bench seeds with the emulator's refresh token and an expiry in the past.
//!
//! The bench asserts no timing. It panics on a behaviour failure of this project (a storm
//! that sends more than one refresh request, a caller that fails) and reports yup-oauth2's
//! behaviour as counted. Run with `cargo bench -p mailup-auth-tests --bench versus_yup` (also
//! part of `cargo xtask bench`); `VERSUS_ROUNDS` (default 7) sets the rounds per figure, the
//! figure is the median of the rounds, and the contenders alternate within each round (the
//! order rotating from round to round). Ratios are shown both as the ratio of the medians and
//! as the median of the per-round ratios (steadier on a loaded machine: the figures of one
//! round are taken milliseconds apart). `VERSUS_ONLY=api,durable` runs only the named parts
//! (`cached`, `api`, `storms`, `durable`); the storms take `VERSUS_STORM_ROUNDS` rounds (at
//! most 5 by default: each waits for a 2 s token to expire).

use std::future::Future;
use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use hyper_util::client::legacy::{connect::HttpConnector, Client as HyperClient};
use hyper_util::rt::TokioExecutor;
use mailup_auth::core::bearer_header;
use mailup_auth::http::header::{HeaderValue, ACCEPT, AUTHORIZATION};
use mailup_auth::http::Method;
use mailup_auth::{
    AccessToken, ClientSecret, HttpRequest, HttpResponse, MailUpClient, Password, ProfileRecord,
    RefreshToken, SledTokenStore, StoreError, StoredProfile, TokenSet, TokenStore, Transport,
    TransportError, UnixTime, Versioned, WriteThread,
};
use mailup_auth_emulator::{
    Emulator, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_PASSWORD, DEFAULT_USERNAME,
};
use mailup_auth_tests::{client_builder, emulator_with_lifetime, logged_in};
use yup_oauth2::authenticator::Authenticator;
use yup_oauth2::storage::{TokenInfo, TokenStorage, TokenStorageError};
use yup_oauth2::{ApplicationSecret, CustomHyperClientBuilder, DeviceFlowAuthenticator};

const API_PATH: &str = "Console/Authentication/Info";
type Yup = Authenticator<HttpConnector>;

/// yup-oauth2's storage for one token, seeded by the bench (its memory storage cannot be).
#[derive(Default)]
struct OneToken(Mutex<Option<TokenInfo>>);

impl OneToken {
    fn expire(&self) {
        let mut token = self.0.lock().unwrap();
        let token = token.as_mut().expect("a stored token");
        token.expires_at = Some(time::OffsetDateTime::now_utc() - time::Duration::hours(1));
    }
}

#[async_trait::async_trait]
impl TokenStorage for OneToken {
    async fn set(&self, _scopes: &[&str], token: TokenInfo) -> Result<(), TokenStorageError> {
        *self.0.lock().unwrap() = Some(token);
        Ok(())
    }

    async fn get(&self, _scopes: &[&str]) -> Option<TokenInfo> {
        self.0.lock().unwrap().clone()
    }
}

/// A `TokenStorage` handle the bench keeps while the authenticator owns the box.
struct SharedToken(Arc<OneToken>);

#[async_trait::async_trait]
impl TokenStorage for SharedToken {
    async fn set(&self, scopes: &[&str], token: TokenInfo) -> Result<(), TokenStorageError> {
        self.0.set(scopes, token).await
    }

    async fn get(&self, scopes: &[&str]) -> Option<TokenInfo> {
        self.0.get(scopes).await
    }
}

/// A password-grant login at the emulator, outside any client: the refresh token yup-oauth2
/// starts from.
async fn emulator_tokens(http: &reqwest::Client, emulator: &Emulator) -> (String, String) {
    raw_grant(
        http,
        emulator,
        &[
            ("grant_type", "password"),
            ("username", DEFAULT_USERNAME),
            ("password", DEFAULT_PASSWORD),
        ],
    )
    .await
}

/// One token request to the emulator with reqwest, outside any client (the default client's
/// credentials added to `form`): the access and refresh tokens of the answer.
async fn raw_grant(
    http: &reqwest::Client,
    emulator: &Emulator,
    form: &[(&str, &str)],
) -> (String, String) {
    let credentials = [
        ("client_id", DEFAULT_CLIENT_ID),
        ("client_secret", DEFAULT_CLIENT_SECRET),
    ];
    let form: Vec<(&str, &str)> = form.iter().chain(&credentials).copied().collect();
    let answer: serde_json::Value = http
        .post(emulator.token_url())
        .form(&form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (
        answer["access_token"].as_str().unwrap().to_owned(),
        answer["refresh_token"].as_str().unwrap().to_owned(),
    )
}

async fn yup_for(emulator: &Emulator, http: &reqwest::Client) -> (Yup, Arc<OneToken>) {
    let (access, refresh) = emulator_tokens(http, emulator).await;
    let storage = Arc::new(OneToken::default());
    *storage.0.lock().unwrap() = Some(TokenInfo {
        access_token: Some(access),
        refresh_token: Some(refresh),
        expires_at: Some(time::OffsetDateTime::now_utc() + time::Duration::hours(1)),
        id_token: None,
    });
    let secret = ApplicationSecret {
        client_id: DEFAULT_CLIENT_ID.into(),
        client_secret: DEFAULT_CLIENT_SECRET.into(),
        token_uri: emulator.token_url().to_string(),
        auth_uri: emulator.logon_url().to_string(),
        ..ApplicationSecret::default()
    };
    let hyper = HyperClient::builder(TokioExecutor::new()).build_http::<String>();
    let auth = DeviceFlowAuthenticator::with_client(secret, CustomHyperClientBuilder::from(hyper))
        .device_code_url(
            emulator
                .base_url()
                .join("no-device-flow")
                .unwrap()
                .to_string(),
        )
        .with_storage(Box::new(SharedToken(storage.clone())))
        .build()
        .await
        .unwrap();
    (auth, storage)
}

async fn ours_for(emulator: &Emulator, dir: &std::path::Path) -> MailUpClient {
    ours_writing_on(emulator, dir, WriteThread::BlockingPool).await
}

/// Our client on a sled store whose saves wait for the disk on `write_thread`.
async fn ours_writing_on(
    emulator: &Emulator,
    dir: &std::path::Path,
    write_thread: WriteThread,
) -> MailUpClient {
    let store = Arc::new(
        SledTokenStore::open(dir)
            .unwrap()
            .with_write_thread(write_thread),
    );
    logged_in(
        client_builder(emulator)
            .api_base(emulator.console_api_base().as_str())
            .store(store),
    )
    .await
}

/// Polls a future that must be ready at once (a cached read never waits).
fn poll_once<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("a cached read must not wait"),
    }
}

/// The cost of one call, `n` calls on each of `threads` threads at once.
struct PerRead {
    /// Nanoseconds of wall time per call (each thread's share of the elapsed time).
    wall: f64,
    /// The threads' CPU time (`CLOCK_THREAD_CPUTIME_ID`, summed) over the elapsed wall time:
    /// about `threads` when every thread had a core throughout, about 1 when they took turns
    /// on one core (another process held the other). Only a ratio of two such figures is
    /// read: on this VM the thread clock runs a little faster than the wall clock.
    busy: f64,
}

fn thread_cpu_time() -> Duration {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(now.tv_sec).unwrap_or(0),
        u32::try_from(now.tv_nsec).unwrap_or(0),
    )
}

fn per_read(threads: usize, n: u32, read: impl Fn() + Sync) -> PerRead {
    let start = Instant::now();
    let cpu: Duration = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let cpu_start = thread_cpu_time();
                    for _ in 0..n {
                        read();
                    }
                    thread_cpu_time() - cpu_start
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    let elapsed = start.elapsed();
    PerRead {
        wall: elapsed.as_nanos() as f64 / f64::from(n),
        busy: cpu.as_secs_f64() / elapsed.as_secs_f64(),
    }
}

/// A round count set in the environment variable `name` (at least 1), if it is set.
fn rounds_from_env(name: &str) -> Option<usize> {
    let set = std::env::var(name).ok()?;
    let rounds: usize = set.parse().unwrap_or_else(|_| panic!("{name} is a number"));
    Some(rounds.max(1))
}

/// The figures of one row, one per round.
#[derive(Default)]
struct Row(Vec<f64>);

impl Row {
    fn median(&self) -> f64 {
        let mut sorted = self.0.clone();
        sorted.sort_by(f64::total_cmp);
        sorted[sorted.len() / 2]
    }

    /// The median of this row's figure over `floor`'s, round by round: figures taken
    /// milliseconds apart share the machine's load, so on a loaded machine this ratio is far
    /// steadier than the ratio of the two medians.
    fn paired_ratio(&self, floor: &Row) -> f64 {
        Row(self.0.iter().zip(&floor.0).map(|(a, b)| a / b).collect()).median()
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Waits (real sleep, bounded) until our client's token is past its expiry.
async fn until_expired(client: &MailUpClient) {
    for _ in 0..200 {
        let expires_at = client.status().expires_at.expect("a token");
        if expires_at.to_system_time() <= SystemTime::now() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the token did not expire within 10 s");
}

struct StormFigures {
    ours: Row,
    ours_floor: Row,
    /// Ours with the sled store's saves on the calling thread (`WriteThread::CallingThread`).
    in_place: Row,
    in_place_floor: Row,
    yup: Row,
    yup_floor: Row,
    yup_refreshes: Row,
    yup_failed: Row,
}

/// `tasks` tasks spawned at once, each asking `client` for an access token; how many failed.
async fn ask_at_once(client: &MailUpClient, tasks: usize) -> usize {
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.access_token().await.is_ok() })
        })
        .collect();
    let mut failed = 0;
    for handle in handles {
        failed += usize::from(!handle.await.unwrap());
    }
    failed
}

async fn storms(tasks: usize, rounds: usize) -> StormFigures {
    // 2 s tokens for us: our client's token expires between rounds on the real clock. Hour-long
    // ones for yup-oauth2, which takes any token within a minute of its expiry for expired
    // (the bench expires its stored token itself).
    let emulator = emulator_with_lifetime(Duration::from_secs(2)).await;
    let yup_emulator = Emulator::builder().start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let ours = ours_for(&emulator, &dir.path().join("tokens")).await;
    let in_place = ours_writing_on(
        &emulator,
        &dir.path().join("in-place"),
        WriteThread::CallingThread,
    )
    .await;
    let (yup, yup_storage) = yup_for(&yup_emulator, &http).await;
    let yup = Arc::new(yup);
    let mut figures = StormFigures {
        ours: Row::default(),
        ours_floor: Row::default(),
        in_place: Row::default(),
        in_place_floor: Row::default(),
        yup: Row::default(),
        yup_floor: Row::default(),
        yup_refreshes: Row::default(),
        yup_failed: Row::default(),
    };
    for round in 0..rounds {
        // Ours, on each store: the storm on an expired token, then the same tasks on the fresh
        // one. The two clients take turns going first from round to round.
        for which in [round % 2, (round + 1) % 2] {
            let (client, storm, floor) = if which == 0 {
                (&ours, &mut figures.ours, &mut figures.ours_floor)
            } else {
                (
                    &in_place,
                    &mut figures.in_place,
                    &mut figures.in_place_floor,
                )
            };
            until_expired(client).await;
            let before = emulator.counters();
            let start = Instant::now();
            let failed = ask_at_once(client, tasks).await;
            storm.0.push(ms(start.elapsed()));
            let refreshes = emulator.counters().token_refresh_token - before.token_refresh_token;
            assert_eq!(
                refreshes, 1,
                "this project sent {refreshes} refresh requests"
            );
            assert_eq!(failed, 0, "{failed} of our callers failed");
            let start = Instant::now();
            assert_eq!(ask_at_once(client, tasks).await, 0);
            floor.0.push(ms(start.elapsed()));
        }

        // yup-oauth2: the same storm, its stored token expired by the bench.
        yup_storage.expire();
        let before = yup_emulator.counters();
        let start = Instant::now();
        let handles: Vec<_> = (0..tasks)
            .map(|_| {
                let auth = yup.clone();
                tokio::spawn(async move { auth.token(&[] as &[&str]).await.is_ok() })
            })
            .collect();
        let mut failed = 0;
        for handle in handles {
            failed += usize::from(!handle.await.unwrap());
        }
        figures.yup.0.push(ms(start.elapsed()));
        let after = yup_emulator.counters();
        figures
            .yup_refreshes
            .0
            .push((after.token_refresh_token - before.token_refresh_token) as f64);
        figures.yup_failed.0.push(failed as f64);
        let start = Instant::now();
        let handles: Vec<_> = (0..tasks)
            .map(|_| {
                let auth = yup.clone();
                tokio::spawn(async move { auth.token(&[] as &[&str]).await.is_ok() })
            })
            .collect();
        for handle in handles {
            black_box(handle.await.unwrap());
        }
        figures.yup_floor.0.push(ms(start.elapsed()));
    }
    emulator.shutdown().await;
    yup_emulator.shutdown().await;
    figures
}

/// Time spent in one kind of call, and how many.
#[derive(Clone, Copy, Default)]
struct Spent {
    calls: u32,
    time: Duration,
}

/// What a refresh spends in the store and the transport, as seen from the facade.
#[derive(Clone, Copy, Default)]
struct Ledger {
    loads: Spent,
    saves: Spent,
    other_store: Spent,
    sends: Spent,
}

fn book(ledger: &Mutex<Ledger>, pick: fn(&mut Ledger) -> &mut Spent, time: Duration) {
    let mut ledger = ledger.lock().unwrap();
    let spent = pick(&mut ledger);
    spent.calls += 1;
    spent.time += time;
}

/// A `TokenStore` that times every call of the store it wraps (the facade's view of it).
struct TimedStore {
    store: SledTokenStore,
    ledger: Arc<Mutex<Ledger>>,
}

#[async_trait::async_trait]
impl TokenStore for TimedStore {
    async fn load(&self, profile: &str) -> Result<Option<Versioned<ProfileRecord>>, StoreError> {
        let start = Instant::now();
        let answer = self.store.load(profile).await;
        book(&self.ledger, |l| &mut l.loads, start.elapsed());
        answer
    }

    async fn save(
        &self,
        profile: &str,
        record: &ProfileRecord,
        expected: Option<u64>,
    ) -> Result<u64, StoreError> {
        let start = Instant::now();
        let answer = self.store.save(profile, record, expected).await;
        book(&self.ledger, |l| &mut l.saves, start.elapsed());
        answer
    }

    async fn delete(&self, profile: &str) -> Result<(), StoreError> {
        self.store.delete(profile).await
    }

    async fn load_entry(&self, profile: &str) -> Result<StoredProfile, StoreError> {
        let start = Instant::now();
        let answer = self.store.load_entry(profile).await;
        book(&self.ledger, |l| &mut l.loads, start.elapsed());
        answer
    }

    async fn restore_lost(
        &self,
        profile: &str,
        record: &ProfileRecord,
        lost_version: u64,
    ) -> Result<u64, StoreError> {
        let start = Instant::now();
        let answer = self.store.restore_lost(profile, record, lost_version).await;
        book(&self.ledger, |l| &mut l.other_store, start.elapsed());
        answer
    }

    async fn profiles(&self) -> Result<Vec<String>, StoreError> {
        self.store.profiles().await
    }

    async fn consume_once(
        &self,
        key: &str,
        expires_at: UnixTime,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        self.store.consume_once(key, expires_at, now).await
    }
}

/// A `Transport` that times every request of the transport it wraps.
struct TimedTransport {
    transport: mailup_auth::ReqwestTransport,
    ledger: Arc<Mutex<Ledger>>,
}

#[async_trait::async_trait]
impl Transport for TimedTransport {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        let start = Instant::now();
        let answer = self.transport.send(request).await;
        book(&self.ledger, |l| &mut l.sends, start.elapsed());
        answer
    }
}

/// The rows of the durable-refresh table (P4), in the order they are measured.
const DURABLE_ROWS: [&str; 9] = [
    "floor: raw refresh POST (reqwest, JSON answer) + bare sled insert + flush",
    "mailup-auth `refresh()` (sled store: re-read, POST, CAS save + flush, publish)",
    "mailup-auth `refresh()`, sled saves on the calling thread (`WriteThread::CallingThread`, opt-in)",
    "piece: raw refresh POST alone",
    "piece: bare sled insert + flush alone",
    "piece: `SledTokenStore::save` (read, compare, encode, CAS, flush)",
    "piece: `SledTokenStore::load` (read, decode: what the facade's re-read costs)",
    "piece: spawning a task and awaiting it (what `refresh()` did around the operation until it ran in the caller's task)",
    "mailup-auth `refresh()` with its store and transport timed (the ledger below)",
];

/// A refresh-token grant sent with reqwest, outside any client: the new access and refresh
/// tokens.
async fn raw_refresh(
    http: &reqwest::Client,
    emulator: &Emulator,
    refresh_token: &str,
) -> (String, String) {
    raw_grant(
        http,
        emulator,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ],
    )
    .await
}

/// A record like the one the facade saves after a refresh.
fn token_record(access: &str, refresh: &str) -> ProfileRecord {
    let now = UnixTime::from_system_time(SystemTime::now());
    ProfileRecord::with_tokens(TokenSet {
        access_token: AccessToken::new(access),
        refresh_token: Some(RefreshToken::new(refresh)),
        expires_at: now.saturating_add(Duration::from_secs(3600)),
        obtained_at: now,
        token_type: Some("bearer".into()),
        scope: None,
    })
}

/// Refresh + durable save (P4): our forced `refresh()` on a sled store beside the floor (a raw
/// refresh POST and a bare sled insert + flush, no library), and the pieces that tell the
/// store's share of the difference from the facade's. Microseconds per operation, per round.
/// Per refresh of the timed client: the time inside the store's loads, its saves, its other
/// calls, the token requests, and the rest (the facade's own); and the calls per refresh.
#[derive(Default)]
struct RefreshLedger {
    loads: Row,
    saves: Row,
    other_store: Row,
    sends: Row,
    own: Row,
    calls: Ledger,
    refreshes: u32,
}

async fn durable(rounds: usize, http: &reqwest::Client) -> (Vec<Row>, RefreshLedger) {
    const OPS: u32 = 20;
    let emulator = Emulator::builder().start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ours = ours_for(&emulator, &dir.path().join("tokens")).await;
    let in_place = ours_writing_on(
        &emulator,
        &dir.path().join("in-place"),
        WriteThread::CallingThread,
    )
    .await;
    let (_, mut chain) = emulator_tokens(http, &emulator).await;
    let bare = sled::open(dir.path().join("bare")).unwrap();
    let store = SledTokenStore::open(dir.path().join("pieces")).unwrap();
    let (access, refresh) = raw_refresh(http, &emulator, &chain).await;
    chain = refresh;
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let timed = MailUpClient::builder(DEFAULT_CLIENT_ID, ClientSecret::new(DEFAULT_CLIENT_SECRET))
        .auth_base(emulator.base_url().as_str())
        .api_base(emulator.console_api_base().as_str())
        .store(Arc::new(TimedStore {
            store: SledTokenStore::open(dir.path().join("timed")).unwrap(),
            ledger: ledger.clone(),
        }))
        .transport(Arc::new(TimedTransport {
            transport: mailup_auth::ReqwestTransport::new().unwrap(),
            ledger: ledger.clone(),
        }))
        .build()
        .await
        .unwrap();
    timed
        .login_with_password(DEFAULT_USERNAME, &Password::new(DEFAULT_PASSWORD))
        .await
        .unwrap();
    *ledger.lock().unwrap() = Ledger::default();
    let mut split = RefreshLedger::default();
    let mut version = store
        .save("bench", &token_record(&access, &chain), None)
        .await
        .unwrap();
    let mut rows: Vec<Row> = DURABLE_ROWS.iter().map(|_| Row::default()).collect();
    let mut serial = 0_u64;
    let bare_save = |access: &str, refresh: &str| {
        let bytes = serde_json::to_vec(&serde_json::json!({
            "access_token": access,
            "refresh_token": refresh,
            "expires_at": UnixTime::from_system_time(SystemTime::now()).as_millis() + 3_600_000,
        }))
        .unwrap();
        bare.insert("bench", bytes).unwrap();
        bare.flush().unwrap();
    };
    for round in 0..rounds {
        for contender in (0..DURABLE_ROWS.len()).map(|k| (k + round) % DURABLE_ROWS.len()) {
            let start = Instant::now();
            for _ in 0..OPS {
                match contender {
                    0 => {
                        let (access, refresh) = raw_refresh(http, &emulator, &chain).await;
                        bare_save(&access, &refresh);
                        chain = refresh;
                    }
                    1 => {
                        black_box(ours.refresh().await.unwrap());
                    }
                    2 => {
                        black_box(in_place.refresh().await.unwrap());
                    }
                    3 => {
                        let (access, refresh) = raw_refresh(http, &emulator, &chain).await;
                        black_box(access);
                        chain = refresh;
                    }
                    // A new value each time, as after a refresh (sled skips the disk
                    // for a flush with nothing new to write).
                    4 => {
                        serial += 1;
                        bare_save(&format!("access-{serial}"), &chain);
                    }
                    5 => {
                        version = store
                            .save("bench", &token_record(&chain, &chain), Some(version))
                            .await
                            .unwrap();
                    }
                    6 => {
                        black_box(store.load("bench").await.unwrap());
                    }
                    7 => {
                        tokio::spawn(async { black_box(1) }).await.unwrap();
                    }
                    _ => {
                        let before = *ledger.lock().unwrap();
                        let start = Instant::now();
                        black_box(timed.refresh().await.unwrap());
                        let total = start.elapsed();
                        let after = *ledger.lock().unwrap();
                        let us = |pick: fn(&Ledger) -> Spent| {
                            (pick(&after).time - pick(&before).time).as_secs_f64() * 1e6
                        };
                        let inside = [
                            us(|l| l.loads),
                            us(|l| l.saves),
                            us(|l| l.other_store),
                            us(|l| l.sends),
                        ];
                        split.loads.0.push(inside[0]);
                        split.saves.0.push(inside[1]);
                        split.other_store.0.push(inside[2]);
                        split.sends.0.push(inside[3]);
                        split
                            .own
                            .0
                            .push(total.as_secs_f64() * 1e6 - inside.iter().sum::<f64>());
                        split.refreshes += 1;
                    }
                }
            }
            rows[contender]
                .0
                .push(start.elapsed().as_secs_f64() * 1e6 / f64::from(OPS));
        }
    }
    emulator.shutdown().await;
    split.calls = *ledger.lock().unwrap();
    (rows, split)
}

fn main() {
    // `cargo bench` passes `--bench`; run otherwise (`cargo test --benches`), one round checks
    // the behaviour without measuring anything worth reading.
    let benching = std::env::args().any(|arg| arg == "--bench");
    let rounds = rounds_from_env("VERSUS_ROUNDS").unwrap_or(if benching { 7 } else { 1 });
    // `VERSUS_ONLY=api,durable` runs only the named parts (cached, api, storms, durable).
    let only = std::env::var("VERSUS_ONLY").unwrap_or_default();
    let part = |name: &str| only.is_empty() || only.split(',').any(|p| p.trim() == name);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let emulator = runtime.block_on(Emulator::builder().start()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let ours = runtime.block_on(ours_for(&emulator, &dir.path().join("tokens")));
    let (yup, _yup_storage) = runtime.block_on(yup_for(&emulator, &http));
    let floor = ArcSwap::from_pointee(Arc::new(String::from("a-cached-access-token")));
    let scopes: &[&str] = &[];

    // ---- cached read -------------------------------------------------------------------
    const READS: u32 = 500_000;
    let mut cached: Vec<(&str, Row)> = [
        "floor: ArcSwap<Arc<String>> load + Arc clone",
        "floor, 2 threads at once (per read)",
        "mailup-auth `cached_access_token()`",
        "mailup-auth `cached_access_token()`, 2 threads at once",
        "mailup-auth `access_token().await`",
        "mailup-auth `access_token().await`, 2 threads at once",
        "yup-oauth2 12 `token().await`",
        "yup-oauth2 12 `token().await`, 2 threads at once",
    ]
    .into_iter()
    .map(|name| (name, Row::default()))
    .collect();
    // How busy the threads of each figure kept the cores (see `PerRead::busy`).
    let mut cached_busy: Vec<Row> = (0..cached.len()).map(|_| Row::default()).collect();
    for _ in 0..if part("cached") { rounds } else { 0 } {
        let floor_read = || {
            black_box(Arc::clone(&floor.load()));
        };
        let ours_cached = || {
            black_box(ours.cached_access_token().unwrap());
        };
        let ours_async = || {
            black_box(poll_once(ours.access_token()).unwrap());
        };
        let yup_read = || {
            black_box(poll_once(yup.token(scopes)).unwrap());
        };
        let reads = [
            per_read(1, READS, floor_read),
            per_read(2, READS, floor_read),
            per_read(1, READS, ours_cached),
            per_read(2, READS, ours_cached),
            per_read(1, READS, ours_async),
            per_read(2, READS, ours_async),
            per_read(1, READS / 4, yup_read),
            per_read(2, READS / 4, yup_read),
        ];
        for (i, read) in reads.into_iter().enumerate() {
            cached[i].1 .0.push(read.wall);
            cached_busy[i].0.push(read.busy);
        }
    }

    // ---- API call ------------------------------------------------------------------------
    let base = emulator.console_api_base();
    let api_url = reqwest::Url::parse(&format!(
        "{}/{API_PATH}",
        base.as_str().trim_end_matches('/')
    ))
    .unwrap();
    let raw_token = runtime
        .block_on(ours.access_token())
        .unwrap()
        .secret()
        .to_owned();
    // The floor: raw reqwest on a client with the settings of our default transport
    // (timeouts, no redirects, its User-Agent), so the two differ only by what the library
    // does around the call. `reqwest::Client::new()` (no timeouts) is shown beside it.
    let floor_http = mailup_auth::ReqwestTransport::new()
        .unwrap()
        .client()
        .clone();
    let raw_call = |http: &reqwest::Client, token: String| {
        let http = http.clone();
        let url = api_url.clone();
        async move {
            let answer = http.get(url).bearer_auth(token).send().await.unwrap();
            assert!(answer.status().is_success(), "{}", answer.status());
            answer.json::<serde_json::Value>().await.unwrap()
        }
    };
    const CALLS: u32 = 200;
    const BATCHES: u32 = 10;
    // Our transport alone (no facade): the request `get` builds, with the token's Bearer
    // header, sent by `ReqwestTransport` and decoded. Tells the facade's share from the
    // transport's.
    let transport = mailup_auth::ReqwestTransport::new().unwrap();
    let transport_call = || async {
        let token = ours.access_token().await.unwrap();
        let request = HttpRequest::new(Method::GET, api_url.clone())
            .with_header(ACCEPT, HeaderValue::from_static("application/json"))
            .with_header(AUTHORIZATION, bearer_header(&token));
        let answer = transport.send(request).await.unwrap();
        assert!(answer.status.is_success(), "{}", answer.status);
        serde_json::from_slice::<serde_json::Value>(&answer.body).unwrap()
    };
    const CONTENDERS: usize = 5;
    let mut api: Vec<(&str, Row)> = [
        "raw reqwest, static Bearer, the transport's client settings (floor; one at a time)",
        "mailup-auth `get` (one at a time)",
        "yup-oauth2 `token()` + raw reqwest (one at a time)",
        "raw reqwest, static Bearer, `reqwest::Client::new()` (one at a time)",
        "our transport alone: `ReqwestTransport::send` + decode, no facade (one at a time)",
        "raw reqwest, the transport's client settings (floor; 64 at once, per batch)",
        "mailup-auth `get`, 64 at once (per batch)",
        "yup-oauth2 `token()` + raw reqwest, 64 at once (per batch)",
        "raw reqwest, `reqwest::Client::new()`, 64 at once (per batch)",
        "our transport alone, 64 at once (per batch)",
    ]
    .into_iter()
    .map(|name| (name, Row::default()))
    .collect();
    runtime.block_on(async {
        let call = |contender: usize| {
            let raw_call = &raw_call;
            let (floor_http, http, raw_token, ours, yup, transport_call) =
                (&floor_http, &http, &raw_token, &ours, &yup, &transport_call);
            async move {
                match contender {
                    0 => {
                        black_box(raw_call(floor_http, raw_token.clone()).await);
                    }
                    1 => {
                        black_box(ours.get::<serde_json::Value>(API_PATH).await.unwrap());
                    }
                    2 => {
                        let token = yup.token(scopes).await.unwrap();
                        black_box(raw_call(floor_http, token.token().unwrap().to_owned()).await);
                    }
                    3 => {
                        black_box(raw_call(http, raw_token.clone()).await);
                    }
                    _ => {
                        black_box(transport_call().await);
                    }
                }
            }
        };
        // The order rotates from round to round: whoever runs first after a phase change
        // (one at a time → 64 at once) pays for waking the pool's idle connections.
        for round in 0..if part("api") { rounds } else { 0 } {
            for contender in (0..CONTENDERS).map(|k| (k + round) % CONTENDERS) {
                let start = Instant::now();
                for _ in 0..CALLS {
                    call(contender).await;
                }
                api[contender]
                    .1
                     .0
                    .push(start.elapsed().as_secs_f64() * 1e6 / f64::from(CALLS));
            }
            for contender in (0..CONTENDERS).map(|k| (k + round) % CONTENDERS) {
                let start = Instant::now();
                for _ in 0..BATCHES {
                    futures_util::future::join_all((0..64).map(|_| call(contender))).await;
                }
                api[CONTENDERS + contender]
                    .1
                     .0
                    .push(ms(start.elapsed()) / f64::from(BATCHES));
            }
        }
    });
    runtime.block_on(emulator.shutdown());

    // ---- storms ------------------------------------------------------------------------
    // 5 by default (each round waits for a 2 s token to expire); `VERSUS_STORM_ROUNDS` for more.
    let storm_rounds = rounds_from_env("VERSUS_STORM_ROUNDS").unwrap_or(rounds.min(5));
    let storm_figures = part("storms").then(|| {
        (
            runtime.block_on(storms(1_000, storm_rounds)),
            runtime.block_on(storms(10_000, storm_rounds)),
        )
    });

    // ---- refresh + durable save ---------------------------------------------------------
    let durable_rows = part("durable").then(|| runtime.block_on(durable(rounds, &http)));

    // ---- report ------------------------------------------------------------------------
    println!();
    println!(
        "versus_yup: {rounds} rounds (storms: {storm_rounds}), medians; real clock throughout"
    );
    if part("cached") {
        println!();
        println!("| cached read | ns per read | × floor |");
        println!("|---|---|---|");
        let floor_1 = cached[0].1.median();
        let floor_2 = cached[1].1.median();
        for (i, (name, row)) in cached.iter().enumerate() {
            let base = if i % 2 == 0 { floor_1 } else { floor_2 };
            println!(
                "| {name} | {:.1} | {:.2}× |",
                row.median(),
                row.median() / base
            );
        }
        let ours_1 = cached[2].1.median();
        let ours_2 = cached[3].1.median();
        let async_1 = cached[4].1.median();
        let async_2 = cached[5].1.median();
        println!(
            "\n2 threads / 1 thread, per read: floor {:.2}×, cached_access_token {:.2}×, access_token().await {:.2}×",
            floor_2 / floor_1,
            ours_2 / ours_1,
            async_2 / async_1
        );
        // Whether the two threads really ran at once: the two-thread figures' CPU time over
        // wall time, as a share of the one-thread figures' (the floor's and ours, pooled).
        let busy = |i: usize| cached_busy[i].median();
        let at_once = (busy(1) + busy(3) + busy(5)) / (busy(0) + busy(2) + busy(4));
        println!(
            "the two threads had a core each for {:.2} of 2 (their CPU time over wall time, against one thread's){}",
            at_once,
            if at_once < 1.8 {
                ": they took turns on one core (another process held the other), so the 2-thread figures above mean nothing; run again on a quiet machine"
            } else {
                ""
            }
        );
    }
    if part("api") {
        println!();
        println!(
            "| API call `GET {API_PATH}` | time | × floor (medians) | × floor (median of per-round ratios) |"
        );
        println!("|---|---|---|---|");
        for (i, (name, row)) in api.iter().enumerate() {
            let (floor, unit) = if i < CONTENDERS {
                (&api[0].1, "µs")
            } else {
                (&api[CONTENDERS].1, "ms")
            };
            println!(
                "| {name} | {:.2} {unit} | {:.2}× | {:.2}× |",
                row.median(),
                row.median() / floor.median(),
                row.paired_ratio(floor)
            );
        }
    }
    if let Some((rows, split)) = &durable_rows {
        println!();
        println!(
            "| refresh + durable save (P4) | µs per operation | × floor (medians) | × floor (median of per-round ratios) |"
        );
        println!("|---|---|---|---|");
        for (name, row) in DURABLE_ROWS.iter().zip(rows) {
            println!(
                "| {name} | {:.1} | {:.2}× | {:.2}× |",
                row.median(),
                row.median() / rows[0].median(),
                row.paired_ratio(&rows[0])
            );
        }
        let n = f64::from(split.refreshes);
        let calls = |spent: Spent| f64::from(spent.calls) / n;
        println!(
            "\nPer `refresh()` of the timed client, medians over {} refreshes (µs): store loads \
             {:.1} ({:.2} calls), saves {:.1} ({:.2} calls), other store calls {:.1} ({:.2} \
             calls), token requests {:.1} ({:.2} calls); the facade's own (the refresh less \
             these: locks, session, publishing) {:.1}.",
            split.refreshes,
            split.loads.median(),
            calls(split.calls.loads),
            split.saves.median(),
            calls(split.calls.saves),
            split.other_store.median(),
            calls(split.calls.other_store),
            split.sends.median(),
            calls(split.calls.sends),
            split.own.median(),
        );
    }
    if let Some((small, large)) = &storm_figures {
        println!();
        println!(
            "| refresh storm on an expired token | time | × no-refresh floor (medians) | × floor (median of per-round ratios) | refresh requests | failed callers |"
        );
        println!("|---|---|---|---|---|---|");
        for (tasks, figures) in [(1_000, small), (10_000, large)] {
            for (store, storm, floor) in [
                ("sled", &figures.ours, &figures.ours_floor),
                (
                    "sled, saves on the calling thread, opt-in",
                    &figures.in_place,
                    &figures.in_place_floor,
                ),
            ] {
                println!(
                    "| {tasks} callers: mailup-auth ({store}) | {:.2} ms | {:.2}× | {:.2}× | 1 | 0 |",
                    storm.median(),
                    storm.median() / floor.median(),
                    storm.paired_ratio(floor)
                );
                println!(
                    "| {tasks} callers: mailup-auth ({store}), no-refresh floor (fresh token) | {:.2} ms | — | — | 0 | 0 |",
                    floor.median()
                );
            }
            println!(
                "| {tasks} callers: yup-oauth2 (memory) | {:.2} ms | {:.2}× | {:.2}× | {:.0} (range {:.0}–{:.0}) | {:.0} (range {:.0}–{:.0}) |",
                figures.yup.median(),
                figures.yup.median() / figures.yup_floor.median(),
                figures.yup.paired_ratio(&figures.yup_floor),
                figures.yup_refreshes.median(),
                figures.yup_refreshes.0.iter().copied().fold(f64::MAX, f64::min),
                figures.yup_refreshes.0.iter().copied().fold(0.0, f64::max),
                figures.yup_failed.median(),
                figures.yup_failed.0.iter().copied().fold(f64::MAX, f64::min),
                figures.yup_failed.0.iter().copied().fold(0.0, f64::max),
            );
            println!(
                "| {tasks} callers: yup-oauth2, no-refresh floor (fresh token) | {:.2} ms | — | — | 0 | 0 |",
                figures.yup_floor.median()
            );
        }
    }
}
