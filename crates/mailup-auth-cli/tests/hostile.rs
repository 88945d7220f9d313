//! Hostile review of the `mailup-auth` binary: answers and situations the emulator does not
//! produce (a tiny scripted token server on 127.0.0.1), the browser's view of a CLI login,
//! terminal escapes from servers, and many processes at once.
//!
//! Every child process runs with a temporary `--store`, a temporary `HOME`, no inherited
//! `MAILUP_*` variables, and a bounded timeout; every server is on 127.0.0.1.

use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mailup_auth::{ProfileRecord, StoredClient};
use mailup_auth_emulator::Consent;
use mailup_auth_emulator::{
    DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_PASSWORD, DEFAULT_USERNAME,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

mod common;
use common::*;

// ---- a scripted token server ---------------------------------------------------------------

/// One canned answer: raw HTTP bytes, written at once or a byte at a time.
#[derive(Clone)]
struct Canned {
    raw: Vec<u8>,
    dribble: bool,
}

fn http(status: &str, content_type: &str, body: &[u8]) -> Canned {
    let mut raw = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(body);
    Canned {
        raw,
        dribble: false,
    }
}

fn json(status: &str, body: &str) -> Canned {
    http(status, "application/json", body.as_bytes())
}

/// A token endpoint on 127.0.0.1 answering every request with `answer`, counting requests.
struct FakeTokenServer {
    url: String,
    requests: Arc<AtomicUsize>,
    answer: Arc<Mutex<Canned>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeTokenServer {
    async fn start(answer: Canned) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/token", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let answer = Arc::new(Mutex::new(answer));
        let task = tokio::spawn({
            let requests = requests.clone();
            let answer = answer.clone();
            async move {
                loop {
                    let Ok((mut stream, _)) = listener.accept().await else {
                        return;
                    };
                    let requests = requests.clone();
                    let canned = answer.lock().unwrap().clone();
                    tokio::spawn(async move {
                        // Read the head and the body (content-length), then answer.
                        let mut buffer = Vec::new();
                        let mut chunk = [0u8; 4096];
                        loop {
                            let Ok(Ok(n)) = tokio::time::timeout(
                                Duration::from_secs(5),
                                stream.read(&mut chunk),
                            )
                            .await
                            else {
                                return;
                            };
                            if n == 0 {
                                return;
                            }
                            buffer.extend_from_slice(&chunk[..n]);
                            if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                                let head = String::from_utf8_lossy(&buffer[..end]).to_lowercase();
                                let length = head
                                    .lines()
                                    .find_map(|l| l.strip_prefix("content-length:"))
                                    .and_then(|v| v.trim().parse::<usize>().ok())
                                    .unwrap_or(0);
                                if buffer.len() >= end + 4 + length {
                                    break;
                                }
                            }
                        }
                        requests.fetch_add(1, Ordering::SeqCst);
                        if canned.dribble {
                            for byte in canned.raw {
                                if stream.write_all(&[byte]).await.is_err() {
                                    return;
                                }
                                tokio::time::sleep(Duration::from_millis(500)).await;
                            }
                        } else {
                            let _ = stream.write_all(&canned.raw).await;
                            let _ = stream.shutdown().await;
                        }
                    });
                }
            }
        });
        Self {
            url,
            requests,
            answer,
            task,
        }
    }

    fn set(&self, answer: Canned) {
        *self.answer.lock().unwrap() = answer;
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for FakeTokenServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A profile whose stored endpoints are the emulator's, except the token URL: `token_url`.
async fn profile_with_token_url(setup: &Setup, token_url: &str, expires_in: Duration) {
    let endpoints = mailup_auth::Endpoints::from_auth_base(setup.emulator.base_url().as_str())
        .expect("emulator endpoints");
    let record = ProfileRecord {
        tokens: Some(mailup_auth::TokenSet {
            access_token: mailup_auth::AccessToken::new("stored-access-token"),
            refresh_token: Some(mailup_auth::RefreshToken::new("stored-refresh-token")),
            expires_at: now().saturating_add(expires_in),
            obtained_at: now()
                .saturating_add(expires_in)
                .saturating_sub(Duration::from_secs(3600)),
            token_type: None,
            scope: None,
        }),
        client: Some(StoredClient {
            client_id: DEFAULT_CLIENT_ID.to_owned(),
            client_secret: Some(mailup_auth::ClientSecret::new(DEFAULT_CLIENT_SECRET)),
            logon_url: Some(endpoints.logon.to_string()),
            token_url: Some(token_url.to_owned()),
            api_base: Some(endpoints.api_base.to_string()),
            ..StoredClient::default()
        }),
        ..ProfileRecord::default()
    };
    save_record(&setup.store(), "default", &record).await;
}

// ---- the browser's view of a CLI login -----------------------------------------------------

/// The loopback page of a successful CLI `login` must say so: the CLI drops the
/// `LoopbackCallback` without calling `succeeded()`, so the browser is told "Login failed"
/// (or the connection dies with the process) although the tokens were stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_sees_logged_in_after_a_successful_cli_login() {
    let setup = Setup::start().await;
    let mut child = setup
        .with_client()
        .args(["login", "--no-browser", "--timeout", "30"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("login starts");
    let (logon_url, _rest_of_stderr) = read_logon_url(&mut child).await;
    let (browser, location) = authorize_in_browser(&logon_url, Consent::Allow).await;
    let page = browser.follow(&location).await;
    let status = tokio::time::timeout(RUN_TIMEOUT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "the login itself succeeded");
    assert_eq!(setup.emulator.counters().token_authorization_code, 1);
    let page = page.expect("the loopback listener answers the browser");
    assert!(
        page.body.contains("Authorization complete") && !page.body.contains("Login failed"),
        "the tokens are stored, yet the browser shows: {}",
        page.body
    );
}

// ---- server text on the terminal -----------------------------------------------------------

/// Nothing from a server reaches the terminal unescaped (docs/security.md, "Failure modes and
/// what the user sees": a server's text holding escape sequences or newlines is printed on one
/// line without control characters). The warning printed when a still-valid token is served
/// after a failed refresh quotes the server's `error` and `error_description`, which here hold
/// ESC, BEL and CR/LF: stderr gets one warning line without them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_refresh_warning_does_not_put_server_control_characters_on_the_terminal() {
    let setup = Setup::start().await;
    let server = FakeTokenServer::start(json(
        "503 Service Unavailable",
        r#"{"error":"temporarily_unavailable","error_description":"\u001b]0;owned\u0007\u001b[2J\nerror: injected line"}"#,
    ))
    .await;
    profile_with_token_url(&setup, &server.url, Duration::from_secs(57)).await;
    let out = run(setup.bare().arg("token")).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "stored-access-token");
    assert!(server.requests() >= 1);
    let err = stderr(&out);
    assert!(
        !err.contains('\u{1b}') && !err.contains('\u{7}'),
        "raw escape sequences from the server on stderr: {err:?}"
    );
    assert_eq!(err.lines().count(), 1, "one warning line: {err:?}");
}

/// Same rule for `status`: the recorded rejection reason holds the server's
/// `error_description` (ESC and a newline that would forge an `authorized:` line); the text
/// output shows neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_does_not_put_server_control_characters_on_the_terminal() {
    let setup = Setup::start().await;
    let server = FakeTokenServer::start(json(
        "400 Bad Request",
        r#"{"error":"invalid_grant","error_description":"\u001b[2J\nauthorized:     yes"}"#,
    ))
    .await;
    profile_with_token_url(&setup, &server.url, Duration::ZERO).await;
    let out = run(setup.bare().arg("token")).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let out = run(setup.bare().arg("status")).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        !text.contains('\u{1b}'),
        "raw escape sequence from the server in `status`: {text:?}"
    );
    assert!(
        !text.lines().any(|l| l.trim() == "authorized:     yes"),
        "the server injected a line into `status`: {text}"
    );
}

// ---- odd token endpoint answers through the CLI --------------------------------------------

/// None of these answers is a 4xx `invalid_grant` / `invalid_client` / `unauthorized_client`:
/// `refresh` must fail with 5 (not 3), record nothing and keep the refresh token; `token` on an
/// expired access token must never print anything but a real token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_token_answers_never_end_the_session() {
    let setup = Setup::start().await;
    let big = format!(
        r#"{{"access_token":"a","refresh_token":"r","pad":"{}"}}"#,
        "x".repeat(100 * 1024)
    );
    let cases: Vec<(&str, Canned)> = vec![
        (
            "302 redirect",
            Canned {
                raw: b"HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:1/elsewhere\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_vec(),
                dribble: false,
            },
        ),
        (
            "307 redirect with an invalid_grant body",
            Canned {
                raw: b"HTTP/1.1 307 Temporary Redirect\r\nlocation: http://127.0.0.1:1/x\r\ncontent-type: application/json\r\ncontent-length: 25\r\nconnection: close\r\n\r\n{\"error\":\"invalid_grant\"}".to_vec(),
                dribble: false,
            },
        ),
        ("404 html", http("404 Not Found", "text/html", b"<html><body>nope</body></html>")),
        ("403 html", http("403 Forbidden", "text/html", b"<html>forbidden</html>")),
        ("empty 401", http("401 Unauthorized", "text/plain", b"")),
        ("invalid_request", json("400 Bad Request", r#"{"error":"invalid_request"}"#)),
        ("error with 200", json("200 OK", r#"{"error":"invalid_grant"}"#)),
        ("500 invalid_grant", json("500 Internal Server Error", r#"{"error":"invalid_grant"}"#)),
        ("502 invalid_client", json("502 Bad Gateway", r#"{"error":"invalid_client"}"#)),
        ("CRLF in token", json("200 OK", r#"{"access_token":"a\r\nX-Evil: 1","refresh_token":"r2","expires_in":3600}"#)),
        ("space in token", json("200 OK", r#"{"access_token":"a b","refresh_token":"r2","expires_in":3600}"#)),
        ("non-ASCII token", json("200 OK", r#"{"access_token":"ä","refresh_token":"r2","expires_in":3600}"#)),
        ("CRLF in refresh token", json("200 OK", r#"{"access_token":"ok","refresh_token":"r\r\n2","expires_in":3600}"#)),
        ("numeric token", json("200 OK", r#"{"access_token":12345,"refresh_token":"r2"}"#)),
        ("array body", json("200 OK", r#"[{"access_token":"ok"}]"#)),
        ("over 64 KiB", json("200 OK", &big)),
        ("truncated json", json("200 OK", r#"{"access_token":"ok","#)),
    ];
    let mut problems = Vec::new();
    for (name, canned) in cases {
        let server = FakeTokenServer::start(canned).await;
        profile_with_token_url(&setup, &server.url, Duration::ZERO).await;
        let out = run(setup.bare().arg("refresh")).await;
        let record = load_record(&setup.store(), "default").await;
        let refresh = record
            .tokens
            .as_ref()
            .and_then(|t| t.refresh_token.as_ref())
            .map(|t| t.secret().to_owned());
        if out.status.code() != Some(5) {
            problems.push(format!(
                "{name}: refresh exit {:?}: {}",
                out.status.code(),
                stderr(&out).trim()
            ));
        }
        if record.reauthorization_required.is_some() {
            problems.push(format!(
                "{name}: recorded {:?}",
                record.reauthorization_required
            ));
        }
        if refresh.as_deref() != Some("stored-refresh-token") {
            problems.push(format!("{name}: refresh token now {refresh:?}"));
        }
        if server.requests() == 0 {
            problems.push(format!("{name}: nothing was sent"));
        }
        let out = run(setup.bare().arg("token")).await;
        if out.status.success() {
            problems.push(format!(
                "{name}: `token` printed {:?} for an expired token",
                stdout(&out)
            ));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

/// Tolerated answers: a missing refresh token keeps the old one; `expires_in` negative,
/// a float, a string, huge or absurd gives a usable token and keeps the rotated refresh token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tolerated_token_answers_work_and_keep_the_right_refresh_token() {
    let setup = Setup::start().await;
    let cases = [
        (
            r#"{"access_token":"new-a","expires_in":3600}"#,
            "stored-refresh-token",
        ),
        (
            r#"{"access_token":"new-a","refresh_token":"r2","expires_in":-5}"#,
            "r2",
        ),
        (
            r#"{"access_token":"new-a","refresh_token":"r2","expires_in":"3600"}"#,
            "r2",
        ),
        (
            r#"{"access_token":"new-a","refresh_token":"r2","expires_in":3600.7}"#,
            "r2",
        ),
        (
            r#"{"access_token":"new-a","refresh_token":"r2","expires_in":"soon"}"#,
            "r2",
        ),
        (
            r#"{"access_token":"new-a","refresh_token":"r2","expires_in":1e300}"#,
            "r2",
        ),
        (
            r#"{"access_token":"new-a","refresh_token":"r2","expires_in":99999999999999999999999}"#,
            "r2",
        ),
        (
            r#"{"access_token":"new-a","refresh_token":"r2","expires_in":18446744073709551615}"#,
            "r2",
        ),
        (r#"{"access_token":"new-a","refresh_token":"r2"}"#, "r2"),
        (
            r#"{"access_token":"new-a","refresh_token":null,"expires_in":60}"#,
            "stored-refresh-token",
        ),
    ];
    let mut problems = Vec::new();
    for (body, kept) in cases {
        let server = FakeTokenServer::start(json("200 OK", body)).await;
        profile_with_token_url(&setup, &server.url, Duration::ZERO).await;
        let out = run(setup.bare().arg("token")).await;
        if !out.status.success() || stdout(&out).trim() != "new-a" {
            problems.push(format!(
                "{body}: exit {:?} stdout {:?} stderr {:?}",
                out.status.code(),
                stdout(&out),
                stderr(&out)
            ));
            continue;
        }
        let record = load_record(&setup.store(), "default").await;
        let tokens = record.tokens.unwrap();
        if tokens.refresh_token.as_ref().map(|t| t.secret()) != Some(kept) {
            problems.push(format!("{body}: refresh token not {kept}"));
        }
        if tokens.expires_at <= now() {
            problems.push(format!("{body}: stored already expired"));
        }
        let out = run(setup.bare().args(["status", "--json"])).await;
        if !out.status.success() {
            problems.push(format!(
                "{body}: status exit {:?}: {}",
                out.status.code(),
                stderr(&out)
            ));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

/// A token endpoint that sends its answer one byte every half second: bounded like a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_body_is_bounded_like_a_hang() {
    let setup = Setup::start().await;
    let mut slow = json(
        "200 OK",
        &format!(
            r#"{{"access_token":"slow","refresh_token":"r2","pad":"{}"}}"#,
            "x".repeat(200)
        ),
    );
    slow.dribble = true;
    let server = FakeTokenServer::start(slow).await;
    profile_with_token_url(&setup, &server.url, Duration::ZERO).await;
    let started = std::time::Instant::now();
    let out = run(setup.bare().arg("token")).await;
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(took < Duration::from_secs(35), "took {took:?}");
    server.set(json("200 OK", "{}"));
}

// ---- many processes ------------------------------------------------------------------------

fn lock_file(store: &str) -> std::path::PathBuf {
    // `refresh-locks/<hex of the profile name>.lock`, see mailup-auth-store-sled's lease.
    std::path::Path::new(store)
        .join("refresh-locks")
        .join("64656661756c74.lock")
}

/// Forty processes (`call`, `token`, `status`) on a token due for refresh: exactly one refresh,
/// no `invalid_grant`, and not one exit 1 from a busy store; then a second wave with forced
/// `refresh`es mixed in: still no error from the token endpoint and no exit 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_mixed_processes_refresh_once_and_none_fails() {
    let setup = Setup::start().await;
    setup.password_login().await;
    make_token_expire_in(&setup.store(), Duration::ZERO).await;
    setup.emulator.set_token_latency(Duration::from_millis(300));
    setup.emulator.set_api_latency(Duration::from_millis(100));
    let before = setup.emulator.counters();
    let mut runs = tokio::task::JoinSet::new();
    for i in 0..40 {
        let mut command = setup.bare();
        let args: &[&str] = match i % 3 {
            0 => &["call", "GET", "Console/Authentication/Info"],
            1 => &["token"],
            _ => &["status"],
        };
        command.args(args);
        let name = args.join(" ");
        runs.spawn(async move { (name, run(&mut command).await) });
    }
    let mut failures = Vec::new();
    while let Some(joined) = runs.join_next().await {
        let (name, out) = joined.unwrap();
        if !out.status.success() {
            failures.push(format!(
                "{name}: exit {:?}: {}",
                out.status.code(),
                stderr(&out)
            ));
        }
    }
    let after = setup.emulator.counters();
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(after.token_refresh_token - before.token_refresh_token, 1);
    assert_eq!(after.token_errors, before.token_errors, "no invalid_grant");

    let mut runs = tokio::task::JoinSet::new();
    for i in 0..30 {
        let mut command = setup.bare();
        let args: &[&str] = match i % 3 {
            0 => &["refresh"],
            1 => &["token"],
            _ => &["call", "GET", "Console/Authentication/Info"],
        };
        command.args(args);
        let name = args.join(" ");
        runs.spawn(async move { (name, run(&mut command).await) });
    }
    while let Some(joined) = runs.join_next().await {
        let (name, out) = joined.unwrap();
        if !out.status.success() {
            failures.push(format!(
                "{name}: exit {:?}: {}",
                out.status.code(),
                stderr(&out)
            ));
        }
    }
    let last = setup.emulator.counters();
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(last.token_errors, before.token_errors, "no invalid_grant");
}

/// A process killed with `kill -9` while it holds the refresh lock file (its refresh in flight)
/// must not lock the others out: the next `token` gets a live token without a new login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_holder_killed_mid_refresh_does_not_stop_the_others() {
    let setup = Setup::start().await;
    setup.password_login().await;
    make_token_expire_in(&setup.store(), Duration::ZERO).await;
    setup.emulator.set_token_latency(Duration::from_secs(3));
    let before = setup.emulator.counters();
    let mut holder = setup
        .bare()
        .arg("token")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let path = lock_file(&setup.store());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the holder never took the lock"
        );
        if let Ok(file) = std::fs::OpenOptions::new().write(true).open(&path) {
            if matches!(file.try_lock(), Err(std::fs::TryLockError::WouldBlock)) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The request is at the emulator now (it sleeps before answering).
    tokio::time::sleep(Duration::from_millis(500)).await;
    holder.start_kill().unwrap();
    let _ = holder.wait().await;
    setup.emulator.set_token_latency(Duration::ZERO);
    let out = run(setup.bare().arg("token")).await;
    let after = setup.emulator.counters();
    assert!(
        out.status.success(),
        "exit {:?}: {} (counters before {before:?}, after {after:?})",
        out.status.code(),
        stderr(&out)
    );
    assert!(setup.emulator.is_access_token_live(stdout(&out).trim()));
}

/// The still-valid-token rule: with 50 s left on the access token (inside the 60 s refresh
/// margin) and the refresh lock held by a stuck process (here: this test holds the lock file,
/// as a `kill -STOP`ped or hung `mailup-auth` would), `token` must print the still-valid
/// token within the 35 s bound. It waits for the lease until its deadline and then fails as a
/// token-store error (exit 1), although nothing is wrong with the store and the token is valid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_refresh_lock_holder_does_not_turn_a_valid_token_into_exit_1() {
    let setup = Setup::start().await;
    setup.password_login().await;
    let access = make_token_expire_in(&setup.store(), Duration::from_secs(50)).await;
    let path = lock_file(&setup.store());
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let held = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap();
    held.lock().unwrap();
    let started = std::time::Instant::now();
    let out = run(setup.bare().arg("token")).await;
    let took = started.elapsed();
    drop(held);
    assert!(
        out.status.success(),
        "exit {:?} after {took:?}: {}",
        out.status.code(),
        stderr(&out)
    );
    assert_eq!(stdout(&out).trim(), access);
    assert!(took < Duration::from_secs(35), "took {took:?}");
}

// ---- the store -----------------------------------------------------------------------------

/// Writes raw bytes as a profile's record in the 0.1.0 layout (one sled database at the
/// directory's root, which the store adopts when it opens), while the binary is not running.
fn write_raw_legacy_record(store: &str, profile: &str, bytes: &[u8]) {
    let db = sled::open(store).expect("the store opens");
    let tree = db.open_tree("profiles").unwrap();
    tree.insert(profile.as_bytes(), bytes).unwrap();
    db.flush().unwrap();
}

/// Failure-mode table: "a stored version at `u64::MAX` | exit 1; `logout` clears it". A CLI
/// profile always holds its client registration, so `logout` goes through the facade, which
/// re-saves the record without tokens at version u64::MAX + 1: `VersionExhausted`, exit 1,
/// and the profile can be neither logged out nor (then) logged in again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_clears_a_record_at_version_u64_max() {
    let setup = Setup::start().await;
    let endpoints =
        mailup_auth::Endpoints::from_auth_base(setup.emulator.base_url().as_str()).unwrap();
    let raw = format!(
        r#"{{"format":1,"version":{},"record":{{"tokens":{{"access_token":"a","refresh_token":"r","expires_at":1800000000000,"obtained_at":1799996400000,"token_type":"bearer","scope":null}},"client":{{"client_id":"{}","client_secret":"{}","logon_url":"{}","token_url":"{}","api_base":"{}","redirect_uri":null}},"last_refreshed_at":null}}}}"#,
        u64::MAX,
        DEFAULT_CLIENT_ID,
        DEFAULT_CLIENT_SECRET,
        endpoints.logon,
        endpoints.token,
        endpoints.api_base
    );
    std::fs::create_dir_all(setup.store()).unwrap();
    write_raw_legacy_record(&setup.store(), "default", raw.as_bytes());
    let out = run(setup.bare().arg("logout")).await;
    assert!(
        out.status.success(),
        "logout exit {:?}: {}",
        out.status.code(),
        stderr(&out)
    );
    setup.password_login().await;
    let out = run(setup.bare().arg("token")).await;
    assert!(out.status.success(), "{}", stderr(&out));
}

// ---- secrets in logs -----------------------------------------------------------------------

/// `RUST_LOG=trace` (every crate: reqwest, hyper, sled, the library) on login, refresh, token,
/// call and status --json: no token, no client secret, no password on stdout (except `token`'s
/// own output) or stderr.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_log_trace_shows_no_secret() {
    let setup = Setup::start().await;
    let out = run(setup
        .with_client()
        .env("RUST_LOG", "trace")
        .args(["login", "--password", "--username", DEFAULT_USERNAME])
        .env("MAILUP_PASSWORD", DEFAULT_PASSWORD))
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let mut logs = stderr(&out) + &stdout(&out);
    for args in [
        &["refresh"][..],
        &["call", "GET", "Console/Authentication/Info"],
        &["status", "--json"],
    ] {
        let out = run(setup.bare().env("RUST_LOG", "trace").args(args)).await;
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        logs += &stderr(&out);
        logs += &stdout(&out);
    }
    let out = run(setup.bare().env("RUST_LOG", "trace").arg("token")).await;
    assert!(out.status.success());
    logs += &stderr(&out);
    let mut secrets = vec![
        DEFAULT_CLIENT_SECRET.to_owned(),
        DEFAULT_PASSWORD.to_owned(),
    ];
    secrets.extend(setup.emulator.issued_refresh_tokens());
    secrets.push(stdout(&out).trim().to_owned());
    let record = load_record(&setup.store(), "default").await;
    let tokens = record.tokens.unwrap();
    secrets.push(tokens.access_token.secret().to_owned());
    assert!(logs.len() > 1000, "trace logs were written");
    for secret in secrets {
        assert!(
            !logs.contains(&secret),
            "a secret in the trace output: {secret}"
        );
    }
}

// ---- endpoint pinning ----------------------------------------------------------------------

/// Equivalent spellings of the pinned endpoints are not a mismatch; different ones are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinning_accepts_equivalent_spellings_and_refuses_others() {
    let setup = Setup::start().await;
    setup.password_login().await;
    let port = setup.emulator.local_addr().port();
    let api = format!("http://127.0.0.1:{port}/API/v1.1/Rest/ConsoleService.svc");
    let same: Vec<Vec<String>> = vec![
        vec!["--auth-base".into(), format!("http://127.1:{port}")],
        vec!["--auth-base".into(), format!("HTTP://127.0.0.1:{port}//")],
        vec!["--auth-base".into(), format!(" http://127.0.0.1:{port} ")],
        vec!["--api-base".into(), format!("{api}/")],
        vec![
            "--token-url".into(),
            format!("http://127.0.0.1:{port}/Authorization/OAuth/./Token"),
        ],
    ];
    let different: Vec<Vec<String>> = vec![
        vec!["--auth-base".into(), format!("http://127.0.0.2:{port}")],
        vec![
            "--auth-base".into(),
            format!("http://127.0.0.1:{}", port.wrapping_add(1)),
        ],
        vec!["--api-base".into(), format!("{api}/x")],
        vec![
            "--token-url".into(),
            format!("https://127.0.0.1:{port}/Authorization/OAuth/Token"),
        ],
    ];
    let mut problems = Vec::new();
    for args in same {
        let out =
            run(setup
                .bare()
                .args(&args)
                .args(["call", "GET", "Console/Authentication/Info"]))
            .await;
        if !out.status.success() {
            problems.push(format!("{args:?} refused: {}", stderr(&out).trim()));
        }
    }
    for args in different {
        let out = run(setup.bare().args(&args).arg("token")).await;
        if out.status.code() != Some(2) {
            problems.push(format!("{args:?} accepted: exit {:?}", out.status.code()));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}
