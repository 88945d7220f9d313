//! kill -9 at random points: a helper process (`src/bin/crash-helper.rs`) refreshes and logs in
//! against the emulator, with token latency so that requests are in flight, and is killed with
//! SIGKILL after a seeded random delay. After each kill the store must open and read, and the
//! stored refresh token must be live at the emulator, or have been rotated by the emulator in
//! the window between the request and the save (the loss window no client can close; counted
//! apart, told by the emulator's list of issued refresh tokens). 30 trials by default;
//! `MAILUP_CRASH_TRIALS` for more, `MAILUP_CRASH_SEED` for another sequence.

use std::time::Duration;

use mailup_auth::TokenStore as _;
use mailup_auth_emulator::Emulator;
use mailup_auth_tests::{live_or_rotated_in_window, start_crash_helper};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

const HELPER: &str = env!("CARGO_BIN_EXE_crash-helper");

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

#[derive(Debug, Default)]
struct Outcomes {
    live: u64,
    rotated_in_window: u64,
    refreshes_seen: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_process_leaves_a_readable_store_with_a_live_or_just_rotated_refresh_token() {
    let trials = env_u64("MAILUP_CRASH_TRIALS", 30);
    let seed = env_u64("MAILUP_CRASH_SEED", 9);
    let mut rng = StdRng::seed_from_u64(seed);
    let emulator = Emulator::builder()
        .start()
        .await
        .expect("the emulator starts");
    emulator.set_token_latency(Duration::from_millis(15));
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let mut outcomes = Outcomes::default();

    for trial in 0..trials {
        let mut child = start_crash_helper(HELPER, &store_dir, &emulator, &[], trial).await;
        let delay = Duration::from_millis(rng.gen_range(0..250));
        tokio::time::sleep(delay).await;
        assert_eq!(
            child.try_wait().unwrap(),
            None,
            "trial {trial}: the helper died on its own"
        );
        child.start_kill().expect("SIGKILL is sent");
        let status = child.wait().await.unwrap();
        assert!(!status.success(), "trial {trial}: killed");

        let path = store_dir.clone();
        let record = tokio::task::spawn_blocking(move || {
            let store = mailup_auth::SledTokenStore::open(&path)
                .unwrap_or_else(|e| panic!("the store opens after kill -9: {e}"));
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            runtime.block_on(store.load("default"))
        })
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("trial {trial}: the record reads after kill -9: {e}"))
        .unwrap_or_else(|| panic!("trial {trial}: the record is there"));
        let refresh = record
            .value
            .tokens
            .and_then(|t| t.refresh_token)
            .map(|r| r.secret().to_owned())
            .unwrap_or_else(|| panic!("trial {trial}: a refresh token is stored"));
        if std::env::var_os("MAILUP_CRASH_VERBOSE").is_some() {
            eprintln!(
                "trial {trial}: killed after {delay:?}, live {}, refreshes {}",
                emulator.is_refresh_token_live(&refresh),
                emulator.counters().token_refresh_token
            );
        }
        if live_or_rotated_in_window(&emulator, &refresh, trial) {
            outcomes.live += 1;
        } else {
            outcomes.rotated_in_window += 1;
        }
    }
    outcomes.refreshes_seen = emulator.counters().token_refresh_token;
    println!(
        "kill -9: {trials} trials (seed {seed}): {} stored refresh token live, {} rotated by \
         the server in the window before the save; {} refreshes and {} logins served",
        outcomes.live,
        outcomes.rotated_in_window,
        outcomes.refreshes_seen,
        emulator.counters().token_password
    );
    assert_eq!(outcomes.live + outcomes.rotated_in_window, trials);
    emulator.shutdown().await;
}
