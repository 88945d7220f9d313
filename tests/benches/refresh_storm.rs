//! The cross-process refresh storm of issue 12, with the real clock: 4 worker processes
//! (`src/bin/scale_out_worker.rs`) × 2,500 tasks share one profile through a real
//! `redis-server` and the emulator on 127.0.0.1, and all call `access_token()` on an expired
//! token at once.
//!
//! Printed, in one run:
//! - (a) one refresh through Redis alone: one task in one process on an expired token (lease,
//!   store reload, token request, compare-and-swap save, lease release);
//! - (b) the storm: from telling the 4 processes to go until every one of the 10,000 tasks
//!   holds the new token;
//! - (c) their ratio (goal ≤ 2×);
//! - (d) the token requests the emulator counted per storm (must be 1: anything else panics,
//!   it is behaviour, not timing);
//! - (e) the Redis commands issued while one process serves N cached reads (must be 0: panics
//!   otherwise);
//! - and, to see where a storm's time goes, the Redis commands it issued, by name.
//!
//! Both (a) and (b) are measured the same way, by this process, from the command written to
//! the workers' stdin to the last answer read from their stdout: the pipes cost the same in
//! both. Each is the median of `STORM_BENCH_ROUNDS` rounds (default 7), interleaved, each on a
//! token that expired (2 s lifetime, real sleeps in between). `STORM_BENCH_PROCESSES` (default
//! 4, at least 2) and `STORM_BENCH_TASKS` (default 2,500) change the storm's shape, to see
//! what its time is made of; `STORM_BENCH_TOKEN_LATENCY_MS` (default 0) delays the emulator's
//! token answers, as MailUp's, tens of milliseconds away, would be; `STORM_TRACE=1` makes each
//! worker print when its tasks were served.
//!
//! Run with `cargo bench -p mailup-auth-tests --bench refresh_storm` (also part of
//! `cargo xtask bench`); figures are in docs/performance.md. Without `--bench` (as
//! `cargo test --benches` runs it) one short round checks the behaviour only. Without
//! `redis-server` it says so and does nothing (under `CI` it fails).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mailup_auth_store_redis::internal::RedisServer;
use mailup_auth_tests::{client_builder, emulator_with_lifetime, logged_in, Worker};

const LIFETIME: Duration = Duration::from_secs(2);
/// Past the expiry (and the emulator's one-second granularity) before each round.
const PAST_EXPIRY: Duration = Duration::from_millis(2_300);
const CACHED_READS: usize = 10_000;

/// Reads up to the `done` line of a `go`; panics on any failed call. Returns the calls
/// served and the distinct tokens.
fn served_by(worker: &mut Worker) -> (usize, Vec<String>) {
    let round = worker.round_result();
    assert!(
        round.failed == 0 && round.errors.is_empty(),
        "a call failed: {round:?}"
    );
    (round.ok, round.tokens)
}

/// The worker binary (src/bin/scale_out_worker.rs).
const WORKER: &str = env!("CARGO_BIN_EXE_scale_out_worker");

/// Redis's own command counters (`INFO commandstats`), reset by [`reset`](Self::reset).
struct RedisStats {
    connection: redis::Connection,
}

impl RedisStats {
    fn connect(url: &str) -> Self {
        let connection = redis::Client::open(url)
            .and_then(|client| client.get_connection())
            .expect("a connection for INFO");
        Self { connection }
    }

    fn reset(&mut self) {
        let _: () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query(&mut self.connection)
            .unwrap();
    }

    /// Commands processed since the last reset, by name, without this connection's own
    /// `CONFIG` and `INFO`.
    fn commands(&mut self) -> BTreeMap<String, u64> {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut self.connection)
            .unwrap();
        info.lines()
            .filter_map(|line| {
                let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
                let calls = rest
                    .strip_prefix("calls=")?
                    .split(',')
                    .next()?
                    .parse()
                    .ok()?;
                Some((name.to_owned(), calls))
            })
            .filter(|(name, _)| !name.starts_with("config") && name != "info")
            .collect()
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn millis(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1e3)
}

fn main() {
    let benching = std::env::args().any(|arg| arg == "--bench");
    let rounds: usize = match std::env::var("STORM_BENCH_ROUNDS") {
        Ok(n) => n.parse().expect("STORM_BENCH_ROUNDS is a number"),
        Err(_) if benching => 7,
        Err(_) => 1,
    };
    let number = |name: &str, default: usize| match std::env::var(name) {
        Ok(n) => n
            .parse::<usize>()
            .unwrap_or_else(|_| panic!("{name} is a number")),
        Err(_) => default,
    };
    let processes = number("STORM_BENCH_PROCESSES", 4).max(2);
    let tasks = number("STORM_BENCH_TASKS", if benching { 2_500 } else { 250 }).max(1);
    let token_latency = Duration::from_millis(
        number("STORM_BENCH_TOKEN_LATENCY_MS", 0)
            .try_into()
            .unwrap(),
    );
    let Some(server) = RedisServer::start() else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let emulator = runtime.block_on(async {
        let emulator = emulator_with_lifetime(LIFETIME).await;
        let _client = logged_in(client_builder(&emulator).store_url(server.url())).await;
        emulator.set_token_latency(token_latency);
        emulator
    });
    let homes: Vec<_> = (0..processes)
        .map(|_| tempfile::tempdir().unwrap())
        .collect();
    let mut workers: Vec<Worker> = homes
        .iter()
        .map(|home| Worker::start(WORKER, &server.url(), &emulator, tasks, home.path()))
        .collect();
    let mut stats = RedisStats::connect(&server.url());

    let mut single = Vec::new();
    let mut storm = Vec::new();
    let mut floor = Vec::new();
    let mut storm_commands = BTreeMap::<String, u64>::new();
    for round in 1..=rounds {
        // (a) one refresh alone.
        std::thread::sleep(PAST_EXPIRY);
        let before = emulator.counters().token_requests;
        let started = Instant::now();
        workers[0].send("go 1");
        let (ok, _) = served_by(&mut workers[0]);
        single.push(started.elapsed());
        assert_eq!(ok, 1);
        let requests = emulator.counters().token_requests - before;
        assert_eq!(
            requests, 1,
            "round {round}: one refresh alone sent {requests}"
        );

        // (b) the storm.
        std::thread::sleep(PAST_EXPIRY);
        stats.reset();
        let before = emulator.counters().token_requests;
        let started = Instant::now();
        for worker in &mut workers {
            worker.send("go");
        }
        let mut served = 0;
        let mut tokens = Vec::new();
        for worker in &mut workers {
            let (ok, mut distinct) = served_by(worker);
            served += ok;
            tokens.append(&mut distinct);
        }
        storm.push(started.elapsed());
        // (d) behaviour, not timing.
        let requests = emulator.counters().token_requests - before;
        assert_eq!(
            requests, 1,
            "round {round}: the storm sent {requests} token requests, not 1"
        );
        assert_eq!(served, processes * tasks);
        tokens.sort();
        tokens.dedup();
        assert_eq!(
            tokens.len(),
            1,
            "round {round}: every task holds the new token"
        );
        assert!(emulator.is_access_token_live(&tokens[0]));
        for (name, calls) in stats.commands() {
            *storm_commands.entry(name).or_default() += calls;
        }

        // (f) the floor: the same storm on the token just refreshed (no refresh to wait for),
        // what spawning and answering the tasks costs on this machine.
        let started = Instant::now();
        for worker in &mut workers {
            worker.send("go");
        }
        for worker in &mut workers {
            served_by(worker);
        }
        floor.push(started.elapsed());
        eprintln!(
            "round {round}: one refresh {}, storm {}, same storm on a fresh token {}",
            millis(single[round - 1]),
            millis(storm[round - 1]),
            millis(floor[round - 1])
        );
    }

    // (e) cached reads: the token was just refreshed.
    stats.reset();
    workers[1].send(&format!("read {CACHED_READS}"));
    let answer = workers[1].read_line();
    assert_eq!(answer, format!("read {CACHED_READS} 0"));
    let cached_commands: u64 = stats.commands().values().sum();
    assert_eq!(
        cached_commands,
        0,
        "cached-token reads touched Redis: {:?}",
        stats.commands()
    );

    let single = median(single);
    let storm = median(storm);
    let floor = median(floor);
    let ratio = storm.as_secs_f64() / single.as_secs_f64();
    println!(
        "refresh storm through Redis: {processes} processes x {tasks} tasks, token latency {token_latency:?}, {rounds} rounds (medians)"
    );
    println!("(a) one refresh through Redis alone:   {}", millis(single));
    println!("(b) storm, until every task is served: {}", millis(storm));
    println!("(c) ratio storm / one refresh:         {ratio:.2}x (goal <= 2x)");
    println!(
        "(f) floor, the same storm on a fresh token: {} ({:.2}x one refresh)",
        millis(floor),
        floor.as_secs_f64() / single.as_secs_f64()
    );
    println!("(d) token requests per storm:          1 (checked every round)");
    println!("(e) Redis commands in {CACHED_READS} cached reads: {cached_commands}");
    let per_storm: Vec<String> = storm_commands
        .iter()
        .map(|(name, calls)| format!("{name} {:.1}", *calls as f64 / rounds as f64))
        .collect();
    println!(
        "Redis commands per storm, all processes: {}",
        per_storm.join(", ")
    );
}
