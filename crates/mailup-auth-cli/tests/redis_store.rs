//! `--store redis://...` / `MAILUP_STORE=redis://...`: CLI processes with nothing in common but
//! a Redis URL share the profile and coordinate their refreshes through the Redis lease. A
//! real `redis-server` is started by the test (skipped without it, failed under `CI`).

use std::process::Stdio;

use mailup_auth_emulator::{
    Emulator, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_PASSWORD, DEFAULT_USERNAME,
};
use mailup_auth_store_redis::internal::RedisServer;
use tokio::process::Command;

mod common;
use common::{assert_success, run, BIN};

/// The binary on its own "host": a fresh HOME, a clean environment, the store given by URL.
fn command(home: &std::path::Path, store: &str) -> Command {
    let mut command = Command::new(BIN);
    command.env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    command
        .env("HOME", home)
        .env("XDG_DATA_HOME", home)
        .env("NO_COLOR", "1")
        .env("MAILUP_STORE", store)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_processes_on_two_hosts_share_a_redis_store_without_lockouts() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let emulator = Emulator::builder().start().await.unwrap();
    let (host_a, host_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let out = run(command(host_a.path(), &server.url())
        .args(["login", "--password", "--username", DEFAULT_USERNAME])
        .env("MAILUP_PASSWORD", DEFAULT_PASSWORD)
        .env("MAILUP_CLIENT_ID", DEFAULT_CLIENT_ID)
        .env("MAILUP_CLIENT_SECRET", DEFAULT_CLIENT_SECRET)
        .env("MAILUP_AUTH_BASE", emulator.base_url().as_str()))
    .await;
    assert_success(&out);
    // The other host knows nothing but the URL: the profile (client, endpoints) comes from Redis.
    let out = run(command(host_b.path(), &server.url()).arg("token")).await;
    assert_success(&out);
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(emulator.is_access_token_live(&token));

    // Forced refreshes from both hosts at once: each one sent rotates the refresh token, so
    // any two sent with the same one would lock a process out. The lease serializes them.
    let before = emulator.counters();
    let runs: Vec<_> = (0..6)
        .map(|i| {
            let home = if i % 2 == 0 {
                host_a.path()
            } else {
                host_b.path()
            };
            let mut command = command(home, &server.url());
            command.arg("refresh");
            tokio::spawn(async move { run(&mut command).await })
        })
        .collect();
    for run in runs {
        assert_success(&run.await.unwrap());
    }
    let after = emulator.counters();
    // A command that waited for the lease adopts what the holder saved instead of sending.
    let sent = after.token_refresh_token - before.token_refresh_token;
    assert!((1..=6).contains(&sent), "{sent}");
    assert_eq!(
        after.token_errors, before.token_errors,
        "a refresh was rejected"
    );
    let out = run(command(host_b.path(), &server.url()).arg("token")).await;
    assert_success(&out);
    assert!(emulator.is_access_token_live(String::from_utf8_lossy(&out.stdout).trim()));
}

/// `--help` shows the environment's values for options that have none secret; MAILUP_STORE
/// may hold a Redis URL with a password, which it printed (`[env: MAILUP_STORE=redis://:pw@..]`).
#[tokio::test]
async fn help_never_shows_the_redis_password_from_the_environment() {
    let home = tempfile::tempdir().unwrap();
    for flag in ["--help", "-h"] {
        let out = run(command(home.path(), "redis://:pw-secret@127.0.0.1:6379/0").arg(flag)).await;
        assert_success(&out);
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains("MAILUP_STORE"), "{help}");
        assert!(!help.contains("pw-secret"), "{help}");
    }
}

/// `unix:///path` (a socket URL the Redis client accepts) is a Redis store, not a sled
/// directory named `unix:` created in the working directory.
#[tokio::test]
async fn a_unix_socket_url_is_a_redis_store_not_a_directory() {
    let home = tempfile::tempdir().unwrap();
    let socket = home.path().join("no-redis.sock");
    let url = format!("unix://{}", socket.display());
    let out = run(command(home.path(), &url)
        .arg("status")
        .current_dir(home.path()))
    .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("unavailable"), "{err}");
    assert!(!home.path().join("unix:").exists());
}

#[tokio::test]
async fn a_plain_redis_url_to_a_remote_host_is_a_usage_error_before_any_io() {
    let home = tempfile::tempdir().unwrap();
    // 192.0.2.1 (TEST-NET-1) is never contacted.
    let out = run(command(home.path(), "redis://:pw-secret@192.0.2.1:6379/0").arg("status")).await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rediss://"), "{err}");
    assert!(!err.contains("pw-secret"), "{err}");
}

/// `--store-key` with a Redis URL: the records are sealed in Redis; another "host" with a copy
/// of the key file reads the profile, one without it gets a usage error naming the problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_key_encrypts_a_redis_store_and_another_host_needs_the_key() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let emulator = Emulator::builder().start().await.unwrap();
    let (host_a, host_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let key_a = host_a.path().join("redis.key");
    let out = run(command(host_a.path(), &server.url())
        .args(["login", "--password", "--username", DEFAULT_USERNAME])
        .env("MAILUP_STORE_KEY", format!("file:{}", key_a.display()))
        .env("MAILUP_PASSWORD", DEFAULT_PASSWORD)
        .env("MAILUP_CLIENT_ID", DEFAULT_CLIENT_ID)
        .env("MAILUP_CLIENT_SECRET", DEFAULT_CLIENT_SECRET)
        .env("MAILUP_AUTH_BASE", emulator.base_url().as_str()))
    .await;
    assert_success(&out);
    assert!(key_a.is_file(), "the new store's key was created");

    // Host B without the key: refused, with the hint.
    let out = run(command(host_b.path(), &server.url()).arg("token")).await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--store-key"), "{err}");
    // With a copy of the key file: the token.
    let key_b = host_b.path().join("copy.key");
    std::fs::copy(&key_a, &key_b).unwrap();
    let out = run(command(host_b.path(), &server.url())
        .arg("token")
        .args(["--store-key", &format!("file:{}", key_b.display())]))
    .await;
    assert_success(&out);
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(emulator.is_access_token_live(&token));

    // Redis holds neither the access token nor the client secret in clear.
    let mut connection = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let envelope: Vec<u8> = redis::cmd("HGET")
        .arg("mailup-auth:record:default")
        .arg("e")
        .query_async(&mut connection)
        .await
        .unwrap();
    for secret in [token.as_str(), DEFAULT_CLIENT_SECRET] {
        assert!(
            !envelope
                .windows(secret.len())
                .any(|window| window == secret.as_bytes()),
            "{secret} is in Redis in clear"
        );
    }
}

/// `--store-ca`: a `rediss://` store whose certificate a private CA signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_ca_trusts_a_private_ca_for_rediss() {
    let Some((server, ca)) = RedisServer::start_tls_with_private_ca() else {
        return;
    };
    let emulator = Emulator::builder().start().await.unwrap();
    let home = tempfile::tempdir().unwrap();
    let ca_file = home.path().join("ca.pem");
    std::fs::write(&ca_file, ca).unwrap();
    // Without the CA: the certificate is not trusted (exit 1, a store failure).
    let out = run(command(home.path(), &server.url()).arg("status")).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TLS failed"), "{err}");
    let out = run(command(home.path(), &server.url())
        .args(["login", "--password", "--username", DEFAULT_USERNAME])
        .env("MAILUP_STORE_CA", &ca_file)
        .env("MAILUP_PASSWORD", DEFAULT_PASSWORD)
        .env("MAILUP_CLIENT_ID", DEFAULT_CLIENT_ID)
        .env("MAILUP_CLIENT_SECRET", DEFAULT_CLIENT_SECRET)
        .env("MAILUP_AUTH_BASE", emulator.base_url().as_str()))
    .await;
    assert_success(&out);
    let out = run(command(home.path(), &server.url())
        .arg("token")
        .args(["--store-ca", &ca_file.display().to_string()]))
    .await;
    assert_success(&out);
    assert!(emulator.is_access_token_live(String::from_utf8_lossy(&out.stdout).trim()));
}
