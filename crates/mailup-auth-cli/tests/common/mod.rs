//! The harness the CLI's integration tests share, so that each test file says only what it
//! tests: the `mailup-auth` binary run in a clean, isolated environment with a bounded time
//! ([`clean_command`], [`Setup`], [`run`]), its output read and checked ([`stdout`],
//! [`assert_success`], [`assert_exit`]), a browser login driven by hand ([`read_logon_url`],
//! [`authorize_in_browser`]), and a sled store read and written directly between two runs
//! ([`load_record`], [`save_record`], [`make_token_expire_in`]).
//! The damaged-store tests (corruption.rs, recover.rs) add [`damaged_store`].
//!
//! A test file includes it with `mod common;`; each uses its own part.
#![allow(dead_code)]

pub(crate) mod damaged_store;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, SystemTime};

use mailup_auth::{ProfileRecord, SledTokenStore, StoreError, TokenStore as _, UnixTime};
use mailup_auth_emulator::{Consent, ScriptedBrowser};
use mailup_auth_emulator::{
    Emulator, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_PASSWORD, DEFAULT_USERNAME,
};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, Command};
use url::Url;

/// The binary under test.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_mailup-auth");

/// The bound on one run of the binary (a hang fails the test instead of stalling it).
pub(crate) const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// The binary with nothing inherited that could steer it: no `MAILUP_*` variable, no proxy
/// (`*_proxy` in any case), no `RUST_LOG`, `BROWSER`, `CLICOLOR_FORCE` or `COLUMNS`; `HOME`,
/// `XDG_DATA_HOME` and `XDG_CONFIG_HOME` inside `home`; `NO_COLOR=1`; stdin closed; killed
/// when dropped. The tests talk to 127.0.0.1 only and assert on quiet stderr.
pub(crate) fn clean_command(home: &Path) -> Command {
    let mut command = Command::new(BIN);
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        if name.starts_with("MAILUP_")
            || name.to_ascii_lowercase().ends_with("_proxy")
            || ["RUST_LOG", "BROWSER", "CLICOLOR_FORCE", "COLUMNS"].contains(&name.as_str())
        {
            command.env_remove(name);
        }
    }
    command
        .env("HOME", home)
        .env("XDG_DATA_HOME", home.join("data"))
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// One emulator and one home directory (holding the store) per test.
pub(crate) struct Setup {
    /// The emulator the binary logs in to, over 127.0.0.1.
    pub(crate) emulator: Emulator,
    /// The temporary `HOME`; the store is its `store` directory.
    pub(crate) home: TempDir,
}

impl Setup {
    /// A default emulator and a fresh home.
    pub(crate) async fn start() -> Self {
        let emulator = Emulator::builder().start().await.expect("emulator starts");
        Self::with_emulator(emulator)
    }

    /// `emulator` (one configured by the test) and a fresh home.
    pub(crate) fn with_emulator(emulator: Emulator) -> Self {
        Self {
            emulator,
            home: TempDir::new().expect("temp dir"),
        }
    }

    /// The store directory.
    pub(crate) fn store_dir(&self) -> PathBuf {
        self.home.path().join("store")
    }

    /// The store directory, as the `--store` argument.
    pub(crate) fn store(&self) -> String {
        self.store_dir().display().to_string()
    }

    /// The emulator's auth base URL.
    pub(crate) fn auth_base(&self) -> String {
        self.emulator.base_url().to_string()
    }

    /// The binary in a clean environment ([`clean_command`]) with `--store`; nothing else.
    pub(crate) fn bare(&self) -> Command {
        let mut command = clean_command(self.home.path());
        command.arg("--store").arg(self.store());
        command
    }

    /// [`Setup::bare`] with the emulator's client id and auth base, without the client secret
    /// (the test says where the secret comes from).
    pub(crate) fn with_client_id(&self) -> Command {
        let mut command = self.bare();
        command
            .env("MAILUP_CLIENT_ID", DEFAULT_CLIENT_ID)
            .env("MAILUP_AUTH_BASE", self.auth_base());
        command
    }

    /// [`Setup::bare`] with the emulator's client registration and auth base (what `login`
    /// needs).
    pub(crate) fn with_client(&self) -> Command {
        let mut command = self.with_client_id();
        command.env("MAILUP_CLIENT_SECRET", DEFAULT_CLIENT_SECRET);
        command
    }

    /// Logs the default profile in with the password grant (`login --password`, the password
    /// from `MAILUP_PASSWORD`); panics unless it succeeds.
    pub(crate) async fn password_login(&self) {
        let out = run(self
            .with_client()
            .args(["login", "--password", "--username", DEFAULT_USERNAME])
            .env("MAILUP_PASSWORD", DEFAULT_PASSWORD))
        .await;
        assert_success(&out);
    }
}

/// Runs `command` to its end within [`RUN_TIMEOUT`], capturing stdout and stderr.
pub(crate) async fn run(command: &mut Command) -> Output {
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    tokio::time::timeout(RUN_TIMEOUT, command.output())
        .await
        .expect("the command finished in time")
        .expect("the command ran")
}

/// [`run`] with `input` on the command's standard input.
pub(crate) async fn run_with_stdin(command: &mut Command, input: &str) -> Output {
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("the command starts");
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin
        .write_all(input.as_bytes())
        .await
        .expect("stdin written");
    drop(stdin);
    tokio::time::timeout(RUN_TIMEOUT, child.wait_with_output())
        .await
        .expect("the command finished in time")
        .expect("the command ran")
}

/// What the command printed on stdout (lossily decoded).
pub(crate) fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What the command printed on stderr (lossily decoded).
pub(crate) fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Panics, showing the exit code and both outputs, unless the command succeeded.
pub(crate) fn assert_success(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        stdout(out),
        stderr(out)
    );
}

/// Panics, showing both outputs, unless the command exited with `code`; returns its stderr.
pub(crate) fn assert_exit(out: &Output, code: i32) -> String {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        stdout(out),
        stderr(out)
    );
    stderr(out)
}

/// Panics if `text` holds any of `secrets`.
pub(crate) fn assert_no_secrets<S: AsRef<str>>(text: &str, secrets: &[S]) {
    for secret in secrets {
        assert!(
            !text.contains(secret.as_ref()),
            "a secret was printed: {text}"
        );
    }
}

/// Reads a running `login --no-browser`'s stderr up to the LogOn URL (the line after the
/// prompt); the rest of stderr keeps being drained (so the child never writes into a closed
/// pipe) and is returned by the task.
pub(crate) async fn read_logon_url(child: &mut Child) -> (Url, tokio::task::JoinHandle<String>) {
    let stderr = child.stderr.take().expect("piped stderr");
    let mut lines = BufReader::new(stderr).lines();
    let read = async {
        let mut seen = Vec::new();
        let mut prompt = false;
        while let Some(line) = lines.next_line().await.expect("stderr readable") {
            if prompt {
                return Url::parse(line.trim()).expect("the line after the prompt is the URL");
            }
            prompt = line.trim() == "Open this URL in your browser:";
            seen.push(line);
        }
        panic!("no LogOn URL printed; stderr: {seen:?}");
    };
    let url = tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("the LogOn URL is printed in time");
    let rest = tokio::spawn(async move {
        let mut rest = String::new();
        while let Ok(Some(line)) = lines.next_line().await {
            rest.push_str(&line);
            rest.push('\n');
        }
        rest
    });
    (url, rest)
}

/// The emulator's default user at a browser (a [`ScriptedBrowser`] with a 10 s step timeout):
/// opens `logon_url`, logs in and answers the consent page with `consent`; returns the browser
/// and where the emulator redirected it (the loopback listener's callback), not yet followed.
pub(crate) async fn authorize_in_browser(
    logon_url: &Url,
    consent: Consent,
) -> (ScriptedBrowser, Url) {
    let browser = ScriptedBrowser::with_timeout(Duration::from_secs(10));
    let location = browser
        .authorize(logon_url, DEFAULT_USERNAME, DEFAULT_PASSWORD, consent)
        .await
        .expect("the scripted user gets through the LogOn pages");
    (browser, location)
}

/// The current time, as the store records it.
pub(crate) fn now() -> UnixTime {
    UnixTime::from_system_time(SystemTime::now())
}

/// Opens the sled store at `store` directly (the binary is not running meanwhile), waiting up
/// to 10 s while a child process that just ended still holds its lock.
pub(crate) async fn open_sled(store: &str) -> SledTokenStore {
    let path = store.to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    tokio::task::spawn_blocking(move || loop {
        match SledTokenStore::open(&path) {
            Err(StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            result => return result.expect("the store opens"),
        }
    })
    .await
    .unwrap()
}

/// Closes a store opened by [`open_sled`] (off the async runtime: sled flushes on drop).
pub(crate) async fn close_sled(sled: SledTokenStore) {
    tokio::task::spawn_blocking(move || drop(sled))
        .await
        .unwrap();
}

/// Loads `profile`'s record through the sled store itself; panics if there is none.
pub(crate) async fn load_record(store: &str, profile: &str) -> ProfileRecord {
    let sled = open_sled(store).await;
    let record = sled.load(profile).await.unwrap().expect("a record").value;
    close_sled(sled).await;
    record
}

/// Saves `record` as `profile`'s through the sled store itself, over whatever version is
/// stored.
pub(crate) async fn save_record(store: &str, profile: &str, record: &ProfileRecord) {
    let sled = open_sled(store).await;
    let expected = sled.load(profile).await.unwrap().map(|v| v.version);
    sled.save(profile, record, expected).await.unwrap();
    close_sled(sled).await;
}

/// Makes the default profile's stored access token look `left` away from its expiry (issued
/// an hour before), without touching the tokens themselves (still live at the emulator);
/// returns the access token.
pub(crate) async fn make_token_expire_in(store: &str, left: Duration) -> String {
    let mut record = load_record(store, "default").await;
    let tokens = record.tokens.as_mut().unwrap();
    tokens.expires_at = now().saturating_add(left);
    tokens.obtained_at = tokens.expires_at.saturating_sub(Duration::from_secs(3600));
    let access = tokens.access_token.secret().to_owned();
    save_record(store, "default", &record).await;
    access
}
