//! `MailUpAccounts` at scale: 10,000 accounts in one process with the sled store, against the
//! emulator on 127.0.0.1.
//!
//! - criterion: `accounts.client(profile)` on a loaded account, next to the floor measured in
//!   the same run (a `RwLock<HashMap<String, MailUpClient>>` read lookup plus clone);
//! - one-shot figures, printed: memory per idle account (RSS growth while loading the clients,
//!   after the store's own cache was warmed), idle cost (store reads and scheduler wake-ups in
//!   a period with nothing due), and a mass expiry (all accounts due at once: the time until
//!   every one is refreshed with the default concurrency, and the token requests sent).
//!
//! `ACCOUNTS_BENCH_N` sets the number of accounts (default 10,000). Run with
//! `cargo bench -p mailup-auth --bench accounts`; figures are in docs/performance.md.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use criterion::{black_box, Criterion};
use mailup_auth::core::{ProfileRecord, StoreError, TokenStore, Versioned};
use mailup_auth::{
    ClientSecret, MailUpAccounts, MailUpClient, ManualClock, Password, SledRefreshLease,
    SledTokenStore, UnixTime,
};
use mailup_auth_emulator::{
    Emulator, User as EmulatorUser, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET,
};

/// A sled store that counts reads.
struct CountingSled {
    inner: SledTokenStore,
    loads: AtomicU64,
}

#[async_trait]
impl TokenStore for CountingSled {
    async fn load(&self, profile: &str) -> Result<Option<Versioned<ProfileRecord>>, StoreError> {
        self.loads.fetch_add(1, Ordering::Relaxed);
        self.inner.load(profile).await
    }
    async fn save(
        &self,
        profile: &str,
        record: &ProfileRecord,
        expected: Option<u64>,
    ) -> Result<u64, StoreError> {
        self.inner.save(profile, record, expected).await
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

fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn profile(k: usize) -> String {
    format!("customer-{k:05}")
}

struct Fixture {
    runtime: tokio::runtime::Runtime,
    emulator: Emulator,
    store: Arc<CountingSled>,
    clock: Arc<ManualClock>,
    accounts: MailUpAccounts,
    n: usize,
    _dir: tempfile::TempDir,
}

fn fixture(n: usize) -> Fixture {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::starting_now());
    let (emulator, store, accounts) = runtime.block_on(async {
        let emulator = Emulator::builder()
            .user(EmulatorUser::new("bench", "pw"))
            .start()
            .await
            .unwrap();
        let path = dir.path().join("tokens");
        let store = Arc::new(CountingSled {
            inner: SledTokenStore::open(&path).unwrap(),
            loads: AtomicU64::new(0),
        });
        let accounts = MailUpAccounts::builder(
            MailUpClient::builder(DEFAULT_CLIENT_ID, ClientSecret::new(DEFAULT_CLIENT_SECRET))
                .auth_base(emulator.base_url().as_str())
                .store(store.clone())
                .refresh_lease(Some(Arc::new(SledRefreshLease::new(&path))))
                .clock(clock.clone()),
        )
        .build()
        .await
        .unwrap();
        // Connect every account (password grant), a few at a time.
        let mut tasks = tokio::task::JoinSet::new();
        let next = Arc::new(AtomicU64::new(0));
        for _ in 0..16 {
            let accounts = accounts.clone();
            let next = next.clone();
            tasks.spawn(async move {
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed) as usize;
                    if k >= n {
                        break;
                    }
                    let client = accounts.client(&profile(k)).await.unwrap();
                    client
                        .login_with_password("bench", &Password::new("pw"))
                        .await
                        .unwrap();
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        (emulator, store, accounts)
    });
    Fixture {
        runtime,
        emulator,
        store,
        clock,
        accounts,
        n,
        _dir: dir,
    }
}

/// Memory per idle account: a fresh `MailUpAccounts` over the same store, the store's cache
/// warmed by reading every record once, then RSS growth while loading every client.
fn memory_per_account(f: &Fixture) {
    let accounts = f.runtime.block_on(async {
        let accounts = MailUpAccounts::builder(
            MailUpClient::builder(DEFAULT_CLIENT_ID, ClientSecret::new(DEFAULT_CLIENT_SECRET))
                .auth_base(f.emulator.base_url().as_str())
                .store(f.store.clone())
                .clock(f.clock.clone()),
        )
        .build()
        .await
        .unwrap();
        for k in 0..f.n {
            f.store.load(&profile(k)).await.unwrap();
        }
        accounts
    });
    let before = rss_bytes();
    f.runtime.block_on(async {
        for k in 0..f.n {
            black_box(accounts.client(&profile(k)).await.unwrap());
        }
    });
    let after = rss_bytes();
    if let (Some(before), Some(after)) = (before, after) {
        println!(
            "memory per idle account: {} bytes ({} accounts loaded, RSS +{} KiB)",
            after.saturating_sub(before) / f.n as u64,
            f.n,
            after.saturating_sub(before) / 1024
        );
    }
    drop(accounts);
}

/// Idle cost: nothing is due for an hour; count store reads and wake-ups over a while.
fn idle_cost(f: &Fixture) {
    let loads = f.store.loads.load(Ordering::Relaxed);
    let wakeups = f.accounts.scheduler_stats().wakeups;
    let period = Duration::from_secs(5);
    f.runtime
        .block_on(async { tokio::time::sleep(period).await });
    let loads = f.store.loads.load(Ordering::Relaxed) - loads;
    let wakeups = f.accounts.scheduler_stats().wakeups - wakeups;
    let per_minute = 60.0 / period.as_secs_f64();
    println!(
        "idle cost with {} accounts and nothing due: {:.0} store reads/min, {:.0} scheduler wake-ups/min ({} scheduled)",
        f.n,
        loads as f64 * per_minute,
        wakeups as f64 * per_minute,
        f.accounts.scheduler_stats().scheduled
    );
}

/// Mass expiry: every account due at once (the manual clock jumps an hour; the time measured
/// is the real time until all are refreshed).
fn mass_expiry(f: &Fixture) {
    let requests = f.emulator.counters().token_refresh_token;
    f.clock.advance(Duration::from_secs(3600));
    let started = Instant::now();
    let ran = f.runtime.block_on(f.accounts.run_due_refreshes());
    let took = started.elapsed();
    let sent = f.emulator.counters().token_refresh_token - requests;
    println!(
        "mass expiry: {ran} jobs, {sent} token requests for {} accounts, all refreshed in {:.2} s with concurrency {} (sled, flushed saves)",
        f.n,
        took.as_secs_f64(),
        mailup_auth::DEFAULT_REFRESH_CONCURRENCY
    );
}

fn lookup(c: &mut Criterion, f: &Fixture) {
    let mut group = c.benchmark_group("accounts");
    let target = profile(f.n / 2);
    f.runtime.block_on(async {
        f.accounts.client(&target).await.unwrap();
    });
    // The floor: a plain map of clients behind a read lock, looked up and cloned.
    let clients: HashMap<String, MailUpClient> = f.runtime.block_on(async {
        let mut clients = HashMap::new();
        for k in 0..f.n {
            clients.insert(profile(k), f.accounts.client(&profile(k)).await.unwrap());
        }
        clients
    });
    let map = RwLock::new(clients);
    group.bench_function("floor: RwLock<HashMap> lookup + clone", |b| {
        b.iter(|| black_box(map.read().unwrap().get(black_box(target.as_str())).cloned()))
    });
    group.bench_function("accounts.client(profile), loaded", |b| {
        b.iter(|| {
            let future = f.accounts.client(black_box(&target));
            black_box(poll_once(future).unwrap())
        })
    });
    group.finish();
}

/// Polls a future once: `client()` on a loaded account never waits.
fn poll_once<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(output) => output,
        std::task::Poll::Pending => panic!("a loaded account is ready at once"),
    }
}

fn main() {
    let n: usize = std::env::var("ACCOUNTS_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let started = Instant::now();
    let f = fixture(n);
    println!(
        "{n} accounts connected in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let mut criterion = Criterion::default().configure_from_args();
    lookup(&mut criterion, &f);
    memory_per_account(&f);
    idle_cost(&f);
    mass_expiry(&f);
    criterion.final_summary();
}
