//! What the damaged-store tests (corruption.rs, recover.rs) share: running the `mailup-auth`
//! binary against a store and the emulator, copying a store, listing the current generation's
//! files, and damaging one of them (seeded bit flips or a truncation).
#![allow(dead_code)] // each test file uses its own part

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use mailup_auth_emulator::{DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_PASSWORD};
use rand::rngs::StdRng;
use rand::Rng as _;
use tokio::process::Command;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_mailup-auth");
pub(crate) const PROFILES: [&str; 3] = ["alpha", "beta", "gamma"];

pub(crate) fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

pub(crate) async fn run(home: &Path, store: &Path, base: &str, args: &[&str]) -> Output {
    run_with(home, store, base, args, &[]).await
}

pub(crate) async fn run_with(
    home: &Path,
    store: &Path,
    base: &str,
    args: &[&str],
    extra_env: &[(&str, &str)],
) -> Output {
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
        .envs(extra_env.iter().copied())
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

pub(crate) fn copy_dir(from: &Path, to: &Path) {
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
pub(crate) fn current_files(store: &Path) -> Vec<PathBuf> {
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

pub(crate) fn damage(rng: &mut StdRng, file: &Path) -> String {
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
