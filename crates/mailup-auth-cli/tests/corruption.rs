//! A damaged token store (bit flips, truncation) in the current generation's sled files: every
//! `mailup-auth` command over it gives a clear one-line error or the right data, never a panic
//! and never another profile's or made-up tokens. Logging in again is tried on every refused
//! profile and counted (it works only where the store itself still opens: sled refuses a
//! damaged database as a whole; `mailup-auth recover` brings back the other profiles, see
//! tests/recover.rs and docs/reliability.md). Seeded: `MAILUP_CORRUPT_TRIALS` (default 12) and
//! `MAILUP_CORRUPT_SEED`.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use mailup_auth_emulator::{
    Emulator, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_PASSWORD, DEFAULT_USERNAME,
};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_mailup-auth");
const PROFILES: [&str; 3] = ["alpha", "beta", "gamma"];

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

async fn run(home: &Path, store: &Path, base: &str, args: &[&str]) -> Output {
    let mut command = Command::new(BIN);
    for (key, _) in std::env::vars() {
        if key.starts_with("MAILUP_") || key.to_ascii_lowercase().ends_with("_proxy") {
            command.env_remove(key);
        }
    }
    let output = command
        .env("HOME", home)
        .env("XDG_DATA_HOME", home.join("data"))
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .env("MAILUP_STORE", store)
        .env("MAILUP_CLIENT_ID", DEFAULT_CLIENT_ID)
        .env("MAILUP_CLIENT_SECRET", DEFAULT_CLIENT_SECRET)
        .env("MAILUP_AUTH_BASE", base)
        .env("MAILUP_PASSWORD", DEFAULT_PASSWORD)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(60), output)
        .await
        .expect("the command is bounded")
        .expect("the command runs")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The files of the current generation (the `CURRENT` pointer names it).
fn current_files(store: &Path) -> Vec<PathBuf> {
    let current = std::fs::read_to_string(store.join("CURRENT")).expect("a CURRENT pointer");
    let generation = store.join(current.trim());
    let mut files = Vec::new();
    let mut dirs = vec![generation];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                dirs.push(entry.path());
            } else if entry.metadata().unwrap().len() > 0 {
                files.push(entry.path());
            }
        }
    }
    files.sort();
    files
}

fn damage(rng: &mut StdRng, file: &Path) -> String {
    let mut bytes = std::fs::read(file).unwrap();
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    if rng.gen_bool(0.5) {
        let flips = rng.gen_range(1..=8);
        for _ in 0..flips {
            let at = rng.gen_range(0..bytes.len());
            bytes[at] ^= 1 << rng.gen_range(0..8);
        }
        std::fs::write(file, bytes).unwrap();
        format!("{flips} bit flips in {name}")
    } else {
        let len = rng.gen_range(0..bytes.len());
        std::fs::write(file, &bytes[..len]).unwrap();
        format!("{name} truncated to {len} bytes")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_store_gives_clear_errors_or_the_right_tokens_never_a_panic() {
    let emulator = Emulator::builder()
        .start()
        .await
        .expect("the emulator starts");
    let base = emulator.base_url().to_string();
    let home = tempfile::tempdir().unwrap();
    let pristine = home.path().join("pristine");
    let mut originals = Vec::new();
    for profile in PROFILES {
        let out = run(
            home.path(),
            &pristine,
            &base,
            &[
                "login",
                "--password",
                "--username",
                DEFAULT_USERNAME,
                "--profile",
                profile,
            ],
        )
        .await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let token = run(
            home.path(),
            &pristine,
            &base,
            &["token", "--profile", profile],
        )
        .await;
        assert!(token.status.success());
        originals.push(String::from_utf8_lossy(&token.stdout).trim().to_owned());
    }

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
                let login = run(
                    home.path(),
                    &store,
                    &base,
                    &[
                        "login",
                        "--password",
                        "--username",
                        DEFAULT_USERNAME,
                        "--profile",
                        profile,
                    ],
                )
                .await;
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
