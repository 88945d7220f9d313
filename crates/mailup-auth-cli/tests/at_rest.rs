//! Secrets at rest, through the `mailup-auth` binary against the emulator: after `logout`, no
//! file under the store directory holds any access or refresh token the profile was ever
//! issued (for 1 profile, and for 1 of 50 with the others intact); after `logout
//! --forget-client` its client secret is gone too; with `--store-key` no token or client
//! secret is in any file in clear, and the store refuses to open without its key (exit 2).
//!
//! Every child process runs with a temporary `--store`, a temporary `HOME`, no inherited
//! `MAILUP_*` variables, and a bounded timeout.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use mailup_auth_emulator::{
    Emulator, RegisteredClient, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_PASSWORD,
    DEFAULT_USERNAME,
};
use tempfile::TempDir;
use tokio::process::Command;

mod common;
use common::*;

const VICTIM_CLIENT_ID: &str = "victim-client";
const VICTIM_CLIENT_SECRET: &str = "victim-client-secret-5d9c";

/// A [`Setup`] whose emulator also registers the victim client.
async fn setup() -> Setup {
    let emulator = Emulator::builder()
        .client(RegisteredClient::new(
            VICTIM_CLIENT_ID,
            VICTIM_CLIENT_SECRET,
        ))
        .start()
        .await
        .expect("emulator starts");
    Setup::with_emulator(emulator)
}

impl Setup {
    /// The binary with a clean environment, `--store` and `--profile`.
    fn command(&self, profile: &str) -> Command {
        let mut command = self.bare();
        command.arg("--profile").arg(profile);
        command
    }

    /// Logs `profile` in with the password grant, with the given client.
    async fn login(&self, profile: &str, client: (&str, &str), extra_env: &[(&str, &str)]) {
        let mut command = self.command(profile);
        command
            .env("MAILUP_CLIENT_ID", client.0)
            .env("MAILUP_CLIENT_SECRET", client.1)
            .env("MAILUP_AUTH_BASE", self.emulator.base_url().as_str())
            .env("MAILUP_PASSWORD", DEFAULT_PASSWORD)
            .args(["login", "--password", "--username", DEFAULT_USERNAME]);
        for (var, value) in extra_env {
            command.env(var, value);
        }
        assert_success(&run(&mut command).await);
    }

    /// `mailup-auth token`: the current access token.
    async fn token(&self, profile: &str, extra_env: &[(&str, &str)]) -> String {
        let mut command = self.command(profile);
        command.arg("token");
        for (var, value) in extra_env {
            command.env(var, value);
        }
        let out = run(&mut command).await;
        assert_success(&out);
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// `mailup-auth refresh`, then `token`: the new access token.
    async fn refresh(&self, profile: &str, extra_env: &[(&str, &str)]) -> String {
        let mut command = self.command(profile);
        command.arg("refresh");
        for (var, value) in extra_env {
            command.env(var, value);
        }
        assert_success(&run(&mut command).await);
        self.token(profile, extra_env).await
    }

    async fn run_ok(&self, profile: &str, args: &[&str], extra_env: &[(&str, &str)]) {
        let mut command = self.command(profile);
        command.args(args);
        for (var, value) in extra_env {
            command.env(var, value);
        }
        assert_success(&run(&mut command).await);
    }
}

/// The needles found in any regular file under `dir` (read as bytes), with the file.
fn scan(dir: &Path, needles: &[String]) -> Vec<(String, PathBuf)> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                files.push((entry.path(), std::fs::read(entry.path()).unwrap()));
            }
        }
    }
    let mut found = Vec::new();
    for needle in needles {
        for (path, bytes) in &files {
            if bytes
                .windows(needle.len())
                .any(|window| window == needle.as_bytes())
            {
                found.push((needle.clone(), path.clone()));
            }
        }
    }
    found
}

/// Logs `profile` in and refreshes it twice; returns every access and refresh token it was
/// issued (refresh tokens: what the emulator issued meanwhile; access tokens: what `token`
/// printed after each step).
async fn login_and_refresh(
    setup: &Setup,
    profile: &str,
    client: (&str, &str),
    env: &[(&str, &str)],
) -> Vec<String> {
    let before = setup.emulator.issued_refresh_tokens().len();
    setup.login(profile, client, env).await;
    let mut issued = vec![setup.token(profile, env).await];
    for _ in 0..2 {
        issued.push(setup.refresh(profile, env).await);
    }
    let refresh_tokens = setup.emulator.issued_refresh_tokens()[before..].to_vec();
    assert_eq!(refresh_tokens.len(), 3, "one per login and refresh");
    assert!(setup.emulator.is_refresh_token_live(&refresh_tokens[2]));
    issued.extend(refresh_tokens);
    issued
}

async fn logout_wipes_the_tokens(others: usize) {
    let setup = setup().await;
    let mut kept = Vec::new();
    for i in 0..others {
        let profile = format!("other-{i}");
        setup
            .login(&profile, (DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET), &[])
            .await;
        kept.push((profile.clone(), setup.token(&profile, &[]).await));
    }
    let issued = login_and_refresh(
        &setup,
        "victim",
        (VICTIM_CLIENT_ID, VICTIM_CLIENT_SECRET),
        &[],
    )
    .await;
    let live_before = scan(&setup.store_dir(), &issued).len();
    assert!(live_before > 0, "the tokens are on disk before the logout");

    setup.run_ok("victim", &["logout"], &[]).await;
    let found = scan(&setup.store_dir(), &issued);
    assert_eq!(found, [], "{} tokens issued", issued.len());
    eprintln!(
        "scan ({} profiles): {} tokens issued to the victim, {} hits before logout, {} after",
        others + 1,
        issued.len(),
        live_before,
        found.len()
    );
    // The client registration is kept: a new login needs no client options.
    let secret = vec![VICTIM_CLIENT_SECRET.to_owned()];
    assert!(!scan(&setup.store_dir(), &secret).is_empty());
    // Every other profile is intact: the same access token, no new login.
    for (profile, token) in &kept {
        assert_eq!(&setup.token(profile, &[]).await, token, "{profile}");
    }

    setup
        .run_ok("victim", &["logout", "--forget-client"], &[])
        .await;
    assert_eq!(scan(&setup.store_dir(), &secret), []);
    assert_eq!(scan(&setup.store_dir(), &issued), []);
    let mut status = setup.command("victim");
    status.arg("status");
    assert_eq!(run(&mut status).await.status.code(), Some(3));
    for (profile, token) in &kept {
        assert_eq!(&setup.token(profile, &[]).await, token, "{profile}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_wipes_every_token_the_only_profile_was_issued() {
    logout_wipes_the_tokens(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_of_one_of_fifty_profiles_wipes_its_tokens_and_keeps_the_others() {
    logout_wipes_the_tokens(49).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_store_holds_no_secret_in_clear_and_needs_its_key() {
    let setup = setup().await;
    let key_path = setup.home.path().join("keys").join("store.key");
    let key_option = format!("file:{}", key_path.display());
    let env = [("MAILUP_STORE_KEY", key_option.as_str())];
    let issued = login_and_refresh(
        &setup,
        "default",
        (DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET),
        &env,
    )
    .await;
    let mut secrets = issued.clone();
    secrets.push(DEFAULT_CLIENT_SECRET.to_owned());
    assert_eq!(scan(&setup.store_dir(), &secrets), []);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    // Without the key: exit 2, naming the key file, never an empty store.
    let mut command = setup.command("default");
    command.arg("token");
    let out = run(&mut command).await;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("encrypted"), "{stderr}");
    assert!(stderr.contains("store.key"), "{stderr}");
    assert!(stderr.contains("--store-key"), "{stderr}");
    // With a key file that does not exist: exit 2, and no key is made for an existing store.
    let missing = setup.home.path().join("other.key");
    let mut command = setup.command("default");
    command
        .arg("--store-key")
        .arg(format!("file:{}", missing.display()))
        .arg("token");
    let out = run(&mut command).await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!missing.exists());
    for secret in &secrets {
        assert!(!String::from_utf8_lossy(&out.stderr).contains(secret.as_str()));
    }

    // With the key, everything works, and a logout wipes what little there was.
    let token = setup.token("default", &env).await;
    assert_eq!(&token, &issued[2]);
    setup.run_ok("default", &["logout"], &env).await;
    assert_eq!(scan(&setup.store_dir(), &secrets), []);
}

/// Hostile review 3. A careless user puts the key itself in `MAILUP_STORE_KEY` (or
/// `--store-key`), not `file:PATH`: the value is refused (exit 2, good), but the refusal quotes
/// it back on stderr, and `--help` prints the variable's value (`[env: MAILUP_STORE_KEY=...]`,
/// where `MAILUP_CLIENT_SECRET` is hidden): key material in messages, in terminal scrollback
/// and CI logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_key_value_that_is_key_material_is_never_echoed() {
    let home = TempDir::new().unwrap();
    let key_text = "mailup-auth-store-key-v1:q83vEjRmaWxlc2VjcmV0a2V5bWF0ZXJpYWwxMjM0NTY=";
    let material = "q83vEjRmaWxlc2VjcmV0a2V5bWF0ZXJpYWwxMjM0NTY";
    let command = |args: &[&str], env: bool| {
        let mut command = Command::new(BIN);
        for (var, _) in std::env::vars_os() {
            if var.to_string_lossy().starts_with("MAILUP_") {
                command.env_remove(&var);
            }
        }
        command
            .env("HOME", home.path())
            .env("XDG_DATA_HOME", home.path().join("data"))
            .arg("--store")
            .arg(home.path().join("store"))
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if env {
            command.env("MAILUP_STORE_KEY", key_text);
        }
        command
    };
    let mut leaks = Vec::new();
    for (what, args, env) in [
        ("MAILUP_STORE_KEY, status", &["status"][..], true),
        (
            "--store-key, status",
            &["--store-key", key_text, "status"][..],
            false,
        ),
        ("MAILUP_STORE_KEY, --help", &["--help"][..], true),
    ] {
        let out = run(&mut command(args, env)).await;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if what.ends_with("status") {
            assert_eq!(out.status.code(), Some(2), "{what}: {text}");
        }
        if text.contains(material) {
            leaks.push(what);
        }
    }
    assert_eq!(leaks, Vec::<&str>::new(), "key material printed");
}
