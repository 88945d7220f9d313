//! Shared helpers of the workspace's end-to-end tests and benches (`tests/tests`,
//! `tests/benches`); the helper binaries are in `src/bin`.
//!
//! - Starting points: [`emulator_with_lifetime`], [`client_builder`] (the emulator's default
//!   client, library defaults otherwise), [`builder`] (the same with a short backoff),
//!   [`password_login`], [`logged_in`] (build and log in), [`log_in_to_redis`].
//! - Waiting without a timed assertion: [`until`] (bounded polling).
//! - The scale-out worker processes: [`Worker`] and the [`Round`] it answers.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use mailup_auth::{Backoff, ClientSecret, MailUpClient, MailUpClientBuilder, Password};
use mailup_auth_emulator::{
    Emulator, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_PASSWORD, DEFAULT_USERNAME,
};

/// An emulator on 127.0.0.1 (a free port) whose access tokens live `lifetime`.
pub async fn emulator_with_lifetime(lifetime: Duration) -> Emulator {
    Emulator::builder()
        .access_token_lifetime(lifetime)
        .start()
        .await
        .expect("emulator starts")
}

/// A facade builder for the emulator's default client (`DEFAULT_CLIENT_ID` and its secret)
/// against `emulator`'s auth base; every other setting is the library's default, and no store
/// is chosen yet.
pub fn client_builder(emulator: &Emulator) -> MailUpClientBuilder {
    MailUpClient::builder(DEFAULT_CLIENT_ID, ClientSecret::new(DEFAULT_CLIENT_SECRET))
        .auth_base(emulator.base_url().as_str())
}

/// [`client_builder`] with a short backoff (20 ms doubling up to 200 ms), so the tests that
/// make the token endpoint fail do not wait out the default backoff.
pub fn builder(emulator: &Emulator) -> MailUpClientBuilder {
    client_builder(emulator).backoff(Backoff {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(200),
    })
}

/// Logs `client` in with the emulator's default user through the password grant; panics if
/// the login fails.
pub async fn password_login(client: &MailUpClient) {
    client
        .login_with_password(DEFAULT_USERNAME, &Password::new(DEFAULT_PASSWORD))
        .await
        .expect("password login");
}

/// Builds the client `builder` describes and logs it in ([`password_login`]); panics if either
/// fails.
pub async fn logged_in(builder: MailUpClientBuilder) -> MailUpClient {
    let client = builder.build().await.expect("the client builds");
    password_login(&client).await;
    client
}

/// Waits until `done` says so, polling every 10 ms; panics naming `what` after 20 s (a bound
/// against a hang, not a timed assertion).
pub async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Starts the crash helper (`helper`: its path, `env!("CARGO_BIN_EXE_crash-helper")` in a test)
/// on the store at `store` against `emulator`, with `envs` set, and waits (at most 60 s, a
/// bound against a hang) until it prints `ready`, holding tokens. Killed if dropped.
pub async fn start_crash_helper(
    helper: &str,
    store: &Path,
    emulator: &Emulator,
    envs: &[(&str, &str)],
    trial: u64,
) -> tokio::process::Child {
    use tokio::io::AsyncBufReadExt as _;
    let mut child = tokio::process::Command::new(helper)
        .arg(store)
        .arg(emulator.base_url().as_str())
        .envs(envs.iter().copied())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("the helper starts");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("the helper gets ready in time")
        .unwrap();
    assert_eq!(ready.as_deref(), Some("ready"), "trial {trial}");
    child
}

/// What a killed process left as its refresh token, `refresh`: live at `emulator` (`true`), or
/// rotated by the emulator in the window between the request and the save, the loss window no
/// client can close (`false`: a newer token issued after it is live). Panics otherwise: the
/// store would hold silently wrong data.
pub fn live_or_rotated_in_window(emulator: &Emulator, refresh: &str, trial: u64) -> bool {
    if emulator.is_refresh_token_live(refresh) {
        return true;
    }
    let issued = emulator.issued_refresh_tokens();
    let at = issued
        .iter()
        .position(|t| *t == refresh)
        .unwrap_or_else(|| panic!("trial {trial}: the stored refresh token was issued"));
    let newer_live = issued[at + 1..]
        .iter()
        .any(|t| emulator.is_refresh_token_live(t));
    assert!(
        newer_live,
        "trial {trial}: the stored refresh token is dead and nothing newer is live: \
         silently wrong data"
    );
    false
}

/// Logs the default profile in through the emulator's password grant, saving the tokens to the
/// Redis store at `redis`; returns the access token obtained.
pub async fn log_in_to_redis(redis: &str, emulator: &Emulator) -> String {
    let client = client_builder(emulator)
        .store_url(redis)
        .build()
        .await
        .expect("a client on the Redis store");
    password_login(&client).await;
    client
        .access_token()
        .await
        .expect("the access token just obtained")
        .secret()
        .to_owned()
}

/// What a worker answered to a `go`: its calls served and failed, the distinct tokens served,
/// and the error lines it printed.
#[derive(Debug)]
pub struct Round {
    /// Calls served.
    pub ok: usize,
    /// Calls that failed.
    pub failed: usize,
    /// The distinct access tokens handed out.
    pub tokens: Vec<String>,
    /// The `error …` lines, one per failed call.
    pub errors: Vec<String>,
}

/// One `scale_out_worker` process (src/bin/scale_out_worker.rs) and its pipes; killed on drop.
pub struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Worker {
    /// Starts the worker binary `exe` (`env!("CARGO_BIN_EXE_scale_out_worker")` in a test or a
    /// bench) in a directory of its own (its "host": no file is shared with the others) with
    /// `tasks` tasks on the Redis store at `redis`, and waits for `ready`.
    pub fn start(exe: &str, redis: &str, emulator: &Emulator, tasks: usize, home: &Path) -> Self {
        let mut child = Command::new(exe)
            .args([
                redis,
                emulator.base_url().as_str(),
                DEFAULT_CLIENT_ID,
                DEFAULT_CLIENT_SECRET,
                &tasks.to_string(),
            ])
            .current_dir(home)
            .env("HOME", home)
            .env("XDG_DATA_HOME", home)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the worker starts");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut worker = Self {
            child,
            stdin,
            stdout,
        };
        assert_eq!(worker.read_line(), "ready");
        worker
    }

    /// Sends one command line (`go`, `go N`, `read N`, …).
    pub fn send(&mut self, command: &str) {
        writeln!(self.stdin, "{command}").expect("the worker reads its commands");
        self.stdin.flush().expect("the worker reads its commands");
    }

    /// The next line the worker printed, without its line end.
    pub fn read_line(&mut self) -> String {
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .expect("the worker's output");
        line.trim_end().to_owned()
    }

    /// Reads up to the `done` line of a `go`, collecting the `error` lines before it.
    pub fn round_result(&mut self) -> Round {
        let mut errors = Vec::new();
        loop {
            let line = self.read_line();
            if let Some(error) = line.strip_prefix("error ") {
                errors.push(error.to_owned());
                continue;
            }
            let mut parts = line
                .strip_prefix("done ")
                .unwrap_or_else(|| panic!("unexpected worker output: {line:?}"))
                .split(' ');
            let ok = parts
                .next()
                .and_then(|n| n.parse().ok())
                .expect("calls served");
            let failed = parts
                .next()
                .and_then(|n| n.parse().ok())
                .expect("calls failed");
            let tokens = parts.filter(|t| !t.is_empty()).map(str::to_owned).collect();
            return Round {
                ok,
                failed,
                tokens,
                errors,
            };
        }
    }

    /// SIGKILLs the process and reaps it (the holder-killed tests).
    pub fn kill(&mut self) {
        self.child.kill().expect("the worker is killed");
        self.child.wait().expect("the killed worker is reaped");
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
