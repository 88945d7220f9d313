//! A damaged token store (bit flips, truncation) in the current generation's sled files: every
//! `mailup-auth` command over it gives a clear one-line error or the right data, never a panic
//! and never another profile's or made-up tokens. Logging in again is tried on every refused
//! profile and counted (it works only where the store itself still opens: sled refuses a
//! damaged database as a whole; `mailup-auth recover` brings back the other profiles, see
//! tests/recover.rs and docs/reliability.md). Seeded: `MAILUP_CORRUPT_TRIALS` (default 12) and
//! `MAILUP_CORRUPT_SEED`.

use mailup_auth_emulator::Emulator;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

mod common;
use common::damaged_store::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_store_gives_clear_errors_or_the_right_tokens_never_a_panic() {
    let emulator = Emulator::builder()
        .start()
        .await
        .expect("the emulator starts");
    let base = emulator.base_url().to_string();
    let home = tempfile::tempdir().unwrap();
    let pristine = home.path().join("pristine");
    let originals = logged_in_store(home.path(), &pristine, &base).await;

    let trials = env_u64("MAILUP_CORRUPT_TRIALS", 12);
    let mut rng = StdRng::seed_from_u64(env_u64("MAILUP_CORRUPT_SEED", 3));
    let (mut right, mut refused, mut recovered) = (0, 0, 0);
    for trial in 0..trials {
        let store = home.path().join(format!("damaged-{trial}"));
        copy_dir(&pristine, &store);
        let files = current_files(&store);
        let file = &files[rng.gen_range(0..files.len())];
        let what = damage(&mut rng, file);
        for (profile, original) in PROFILES.iter().zip(&originals) {
            let out = run(home.path(), &store, &base, &["token", "--profile", profile]).await;
            let code = out.status.code().expect("exited");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_ne!(code, 101, "trial {trial} ({what}): a panic: {stderr}");
            if code == 0 {
                let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                // The profile's own token, or a fresh one from a refresh: never another's.
                let others = originals.iter().filter(|o| *o != original);
                assert!(
                    others.into_iter().all(|o| *o != token),
                    "trial {trial} ({what}): {profile} got another profile's token"
                );
                assert!(
                    token == *original || emulator.is_access_token_live(&token),
                    "trial {trial} ({what}): {profile} got made-up data"
                );
                right += 1;
            } else {
                assert_eq!(
                    stderr.lines().count(),
                    1,
                    "trial {trial} ({what}): {stderr}"
                );
                assert!(
                    stderr.starts_with("error: "),
                    "trial {trial} ({what}): {stderr}"
                );
                refused += 1;
                if refused == 1 {
                    println!("trial {trial} ({what}): {profile}: {}", stderr.trim());
                }
                // Logging in again recovers a damaged record when the store itself opens.
                let login = run(home.path(), &store, &base, &login_args(profile)).await;
                assert_ne!(login.status.code(), Some(101), "trial {trial} ({what})");
                if login.status.success() {
                    recovered += 1;
                }
            }
        }
    }
    println!(
        "corruption: {trials} damaged stores x {} profiles: {right} read right, {refused} \
         refused with a one-line error ({recovered} of them recovered by logging in again), \
         0 panics, 0 wrong tokens",
        PROFILES.len()
    );
    emulator.shutdown().await;
}
