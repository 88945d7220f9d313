//! Benchmarks of the facade's hot and cold paths.
//!
//! - `cached/*`: a fresh cached access token, on one thread and on two threads at once;
//! - `refresh/*`: against the emulator on 127.0.0.1 with a sled store in a temp dir, the time
//!   until 1,000 concurrent callers on an expired token all hold the new token, next to the
//!   time of one forced refresh.
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

fn fixture() -> Fixture {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::starting_now());
    let (emulator, client) = runtime.block_on(async {
        let emulator = Emulator::builder().start().await.unwrap();
        let store = Arc::new(SledTokenStore::open(dir.path().join("tokens")).unwrap());
        let client =
            MailUpClient::builder(DEFAULT_CLIENT_ID, ClientSecret::new(DEFAULT_CLIENT_SECRET))
                .auth_base(emulator.base_url().as_str())
                .clock(clock.clone())
                .store(store)
                .build()
                .await
                .unwrap();
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
        clock,
        _dir: dir,
    }
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
    let fixture = fixture();
    let client = &fixture.client;
    let mut group = c.benchmark_group("cached");
    group.bench_function("cached_access_token/1 thread", |b| {
        b.iter(|| black_box(client.cached_access_token().unwrap()))
    });
    group.bench_function("access_token().await/1 thread", |b| {
        b.iter(|| black_box(poll_once(client.access_token()).unwrap()))
    });
    group.bench_function("access_token().await/2 threads", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            std::thread::scope(|scope| {
                for _ in 0..2 {
                    scope.spawn(|| {
                        for _ in 0..iters {
                            black_box(poll_once(client.access_token()).unwrap());
                        }
                    });
                }
            });
            // Time per call as each thread sees it (both run at once).
            start.elapsed()
        })
    });
    group.finish();
    fixture.runtime.block_on(fixture.emulator.shutdown());
}

fn refresh(c: &mut Criterion) {
    let fixture = fixture();
    let mut group = c.benchmark_group("refresh");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(10));
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
