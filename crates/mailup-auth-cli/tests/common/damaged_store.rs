//! What the damaged-store tests (corruption.rs, recover.rs) share besides the common harness:
//! running the `mailup-auth` binary against a store and the emulator, logging every profile in
//! to a new store, copying a store, listing the current generation's files, and damaging one of
//! them (seeded bit flips or a truncation).

use std::path::{Path, PathBuf};
use std::process::Output;

use mailup_auth_emulator::{
    DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_PASSWORD, DEFAULT_USERNAME,
};
use rand::rngs::StdRng;
use rand::Rng as _;

use super::clean_command;

/// The profiles every damaged store holds.
pub(crate) const PROFILES: [&str; 3] = ["alpha", "beta", "gamma"];

/// The number in the environment variable `name`, or `default`.
pub(crate) fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// Runs the binary with `args` on `store`, logged in to the emulator at `base`: the client
/// registration and the password in the environment (see [`run_with`]).
pub(crate) async fn run(home: &Path, store: &Path, base: &str, args: &[&str]) -> Output {
    run_with(home, store, base, args, &[]).await
}

/// [`run`] with `extra_env` added to the clean environment ([`clean_command`] with `home`).
pub(crate) async fn run_with(
    home: &Path,
    store: &Path,
    base: &str,
    args: &[&str],
    extra_env: &[(&str, &str)],
) -> Output {
    let mut command = clean_command(home);
    command
        .env("MAILUP_STORE", store)
        .env("MAILUP_CLIENT_ID", DEFAULT_CLIENT_ID)
        .env("MAILUP_CLIENT_SECRET", DEFAULT_CLIENT_SECRET)
        .env("MAILUP_AUTH_BASE", base)
        .env("MAILUP_PASSWORD", DEFAULT_PASSWORD)
        .envs(extra_env.iter().copied())
        .args(args);
    super::run(&mut command).await
}

/// The arguments of a password login of `profile` as the emulator's default user (the
/// password comes from the environment [`run`] sets).
pub(crate) fn login_args(profile: &str) -> [&str; 6] {
    [
        "login",
        "--password",
        "--username",
        DEFAULT_USERNAME,
        "--profile",
        profile,
    ]
}

/// Logs every profile of [`PROFILES`] in to a new store at `store`; returns their access
/// tokens.
pub(crate) async fn logged_in_store(home: &Path, store: &Path, base: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    for profile in PROFILES {
        let out = run(home, store, base, &login_args(profile)).await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let token = run(home, store, base, &["token", "--profile", profile]).await;
        assert!(token.status.success());
        tokens.push(String::from_utf8_lossy(&token.stdout).trim().to_owned());
    }
    tokens
}

/// Copies the directory `from` (recursively) to `to`.
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

/// Damages `file` at random from `rng`: up to eight bit flips, or a truncation; says which.
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
