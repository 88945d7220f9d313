//! Benchmarks of the facade's hot and cold paths.
//!
//! - `cached/*`: a fresh cached access token with the system clock, on one thread and on two
//!   threads at once, beside the floor (an `ArcSwap<Arc<String>>` load and an `Arc` clone, the
//!   least any lock-free cache of a shared token can cost) and beside the same read with a
//!   `ManualClock` (labelled: no clock read at all);
//! - `refresh/*`: against the emulator on 127.0.0.1 with a sled store in a temp dir, the time
//!   until 1,000 concurrent callers on an expired token all hold the new token, next to the
//!   time of one forced refresh and its floor (a raw refresh-token POST with reqwest, the JSON
//!   answer parsed, then a bare `sled::Db` insert of the new tokens and a `flush`: no library).
//!
//! Run with `cargo bench -p mailup-auth`; figures are recorded in docs/performance.md.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use mailup_auth::{ClientSecret, MailUpClient, ManualClock, Password, SledTokenStore};
use mailup_auth_emulator::{
    Emulator, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_PASSWORD, DEFAULT_USERNAME,
};

struct Fixture {
    runtime: tokio::runtime::Runtime,
    emulator: Emulator,
    client: MailUpClient,
    clock: Arc<ManualClock>,
    _dir: tempfile::TempDir,
}

/// A client logged in through the emulator; `clock` is `None` for the system clock.
fn fixture_with(clock: Option<Arc<ManualClock>>) -> Fixture {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let manual = clock.clone();
    let (emulator, client) = runtime.block_on(async {
        let emulator = Emulator::builder().start().await.unwrap();
        let store = Arc::new(SledTokenStore::open(dir.path().join("tokens")).unwrap());
        let mut builder =
            MailUpClient::builder(DEFAULT_CLIENT_ID, ClientSecret::new(DEFAULT_CLIENT_SECRET))
                .auth_base(emulator.base_url().as_str())
                .store(store);
        if let Some(clock) = manual {
            builder = builder.clock(clock);
        }
        let client = builder.build().await.unwrap();
        client
            .login_with_password(DEFAULT_USERNAME, &Password::new(DEFAULT_PASSWORD))
            .await
            .unwrap();
        (emulator, client)
    });
    Fixture {
        runtime,
        emulator,
        client,
        clock: clock.unwrap_or_else(|| Arc::new(ManualClock::starting_now())),
        _dir: dir,
    }
}

/// A client on a `ManualClock` (the refresh benchmarks jump it past the expiry).
fn fixture() -> Fixture {
    fixture_with(Some(Arc::new(ManualClock::starting_now())))
}

/// Runs `read` `iters` times on each of two threads at once; the time per read as each thread
/// sees it (both run at once, so a read that does not slow the other costs the same as alone).
fn two_threads(iters: u64, read: impl Fn() + Sync) -> Duration {
    let start = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                for _ in 0..iters {
                    read();
                }
            });
        }
    });
    start.elapsed()
}

/// Polls a future that is expected to be ready at once (the cached path never awaits).
fn poll_once<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the cached path must not wait"),
    }
}

fn cached(c: &mut Criterion) {
    let mut group = c.benchmark_group("cached");
    // The floor: the least a lock-free cache of a shared token costs per read.
    let floor = arc_swap::ArcSwap::from_pointee(Arc::new(String::from("a-cached-access-token")));
    group.bench_function(
        "floor: ArcSwap<Arc<String>> load + Arc clone/1 thread",
        |b| b.iter(|| black_box(Arc::clone(&floor.load()))),
    );
    group.bench_function(
        "floor: ArcSwap<Arc<String>> load + Arc clone/2 threads",
        |b| {
            b.iter_custom(|iters| {
                two_threads(iters, || {
                    black_box(Arc::clone(&floor.load()));
                })
            })
        },
    );

    let real = fixture_with(None);
    let client = &real.client;
    group.bench_function("cached_access_token/1 thread", |b| {
        b.iter(|| black_box(client.cached_access_token().unwrap()))
    });
    group.bench_function("cached_access_token/2 threads", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, || {
                black_box(client.cached_access_token().unwrap());
            })
        })
    });
    group.bench_function("access_token().await/1 thread", |b| {
        b.iter(|| black_box(poll_once(client.access_token()).unwrap()))
    });
    group.bench_function("access_token().await/2 threads", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, || {
                black_box(poll_once(client.access_token()).unwrap());
            })
        })
    });
    real.runtime.block_on(real.emulator.shutdown());

    // Labelled apart: a `ManualClock` is an atomic load, no clock read at all.
    let fixture = fixture();
    let client = &fixture.client;
    group.bench_function("ManualClock: cached_access_token/1 thread", |b| {
        b.iter(|| black_box(client.cached_access_token().unwrap()))
    });
    group.finish();
    fixture.runtime.block_on(fixture.emulator.shutdown());
}

/// A refresh-token grant sent with reqwest, outside any client: the new access and refresh
/// tokens.
async fn raw_refresh(
    http: &reqwest::Client,
    emulator: &Emulator,
    refresh_token: &str,
) -> (String, String) {
    let answer: serde_json::Value = http
        .post(emulator.token_url())
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", DEFAULT_CLIENT_ID),
            ("client_secret", DEFAULT_CLIENT_SECRET),
        ])
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

/// A password-grant login sent with reqwest, outside any client: the first refresh token of
/// the floor's chain.
async fn raw_login(http: &reqwest::Client, emulator: &Emulator) -> String {
    let answer: serde_json::Value = http
        .post(emulator.token_url())
        .form(&[
            ("grant_type", "password"),
            ("username", DEFAULT_USERNAME),
            ("password", DEFAULT_PASSWORD),
            ("client_id", DEFAULT_CLIENT_ID),
            ("client_secret", DEFAULT_CLIENT_SECRET),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["refresh_token"].as_str().unwrap().to_owned()
}

fn refresh(c: &mut Criterion) {
    let fixture = fixture();
    let mut group = c.benchmark_group("refresh");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(10));
    // The floor of one refresh + durable save: the token request and a flushed write of its
    // answer, with nothing around them.
    let http = reqwest::Client::new();
    let bare_dir = tempfile::tempdir().unwrap();
    let bare = sled::open(bare_dir.path().join("bare")).unwrap();
    let mut chain = fixture
        .runtime
        .block_on(raw_login(&http, &fixture.emulator));
    group.bench_function("floor: raw refresh POST + bare sled insert + flush", |b| {
        b.iter_custom(|iters| {
            fixture.runtime.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let (access, refresh) = raw_refresh(&http, &fixture.emulator, &chain).await;
                    let bytes = serde_json::to_vec(&serde_json::json!({
                        "access_token": access,
                        "refresh_token": refresh,
                        "expires_in": 3600,
                    }))
                    .unwrap();
                    bare.insert("bench", bytes).unwrap();
                    bare.flush().unwrap();
                    chain = refresh;
                }
                start.elapsed()
            })
        })
    });
    group.bench_function("one forced refresh", |b| {
        b.iter_custom(|iters| {
            fixture.runtime.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(fixture.client.refresh().await.unwrap());
                }
                start.elapsed()
            })
        })
    });
    group.bench_function("1000 concurrent callers on an expired token", |b| {
        b.iter_custom(|iters| {
            fixture.runtime.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    fixture.clock.advance(Duration::from_secs(7200));
                    let before = fixture.emulator.counters().token_refresh_token;
                    let start = Instant::now();
                    let tasks: Vec<_> = (0..1000)
                        .map(|_| {
                            let client = fixture.client.clone();
                            tokio::spawn(async move { client.access_token().await.unwrap() })
                        })
                        .collect();
                    for task in tasks {
                        black_box(task.await.unwrap());
                    }
                    total += start.elapsed();
                    assert_eq!(fixture.emulator.counters().token_refresh_token, before + 1);
                }
                total
            })
        })
    });
    group.finish();
    fixture.runtime.block_on(fixture.emulator.shutdown());
}

criterion_group!(benches, cached, refresh);
criterion_main!(benches);
