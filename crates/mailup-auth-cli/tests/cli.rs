//! The `mailup-auth` binary against the in-process emulator: each command, each exit code, and
//! a second process picking up the tokens the first stored and rotated.
//!
//! Every child process runs with a temporary `--store`, a temporary `HOME`, no inherited
//! `MAILUP_*` variables, and a bounded timeout.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use mailup_auth_emulator::Consent;
use mailup_auth_emulator::{
    Emulator, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_PASSWORD, DEFAULT_USERNAME,
};
use serde_json::Value;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::Command;
use url::Url;

mod common;
use common::*;

/// Checks the exit code and that the error is one `error: ...` line on stderr.
fn assert_failure(out: &Output, code: i32) -> String {
    let err = assert_exit(out, code);
    if code != 2 || err.starts_with("error: ") {
        let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
        assert_eq!(lines.len(), 1, "one error line expected: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(!err.contains("stack backtrace"), "{err}");
    }
    err
}

/// Runs `login --no-browser`, follows the printed URL as the scripted user, and waits.
async fn browser_login(setup: &Setup, consent: Consent) -> Output {
    browser_login_with(setup, consent, &[]).await.1
}

/// [`browser_login`] with extra arguments; also returns the LogOn URL.
async fn browser_login_with(setup: &Setup, consent: Consent, extra: &[&str]) -> (Url, Output) {
    let mut child = setup
        .with_client()
        .args(extra)
        .args(["login", "--no-browser", "--timeout", "30"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("login starts");
    let (logon_url, rest_of_stderr) = read_logon_url(&mut child).await;
    assert_eq!(logon_url.path(), "/Authorization/OAuth/LogOn");
    assert!(
        !logon_url.as_str().contains(DEFAULT_CLIENT_SECRET),
        "the secret never goes into a browser URL"
    );
    // While login waits for the browser, the token store is free for other commands (a held
    // store would make this wait 5 s and exit 1).
    let other = run(setup.bare().args(["--profile", "other", "status"])).await;
    assert_eq!(other.status.code(), Some(3), "{}", stderr(&other));
    let (browser, location) = authorize_in_browser(&logon_url, consent).await;
    assert_eq!(location.host_str(), Some("127.0.0.1"));
    let page = browser
        .follow(&location)
        .await
        .expect("the loopback listener answers");
    assert_eq!(page.status, 200, "{}", page.body);
    let mut out = tokio::time::timeout(RUN_TIMEOUT, child.wait_with_output())
        .await
        .expect("login finished in time")
        .expect("login ran");
    out.stderr = rest_of_stderr.await.expect("stderr drained").into_bytes();
    (logon_url, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_login_then_every_command_with_only_the_profile() {
    let setup = Setup::start().await;
    let out = browser_login(&setup, Consent::Allow).await;
    assert_success(&out);
    assert!(stdout(&out).contains("Logged in"), "{}", stdout(&out));
    assert_eq!(setup.emulator.counters().token_authorization_code, 1);

    // From here on: only --store. The profile remembers the client and the endpoints.
    let out = run(setup.bare().arg("token")).await;
    assert_success(&out);
    let token = stdout(&out);
    assert_eq!(token.lines().count(), 1, "only the token: {token:?}");
    let token = token.trim().to_owned();
    assert!(setup.emulator.is_access_token_live(&token));
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));

    let out = run(setup
        .bare()
        .args(["call", "GET", "Console/Authentication/Info"]))
    .await;
    assert_success(&out);
    let info: Value = serde_json::from_str(&stdout(&out)).expect("pretty JSON");
    assert_eq!(info["Username"], DEFAULT_USERNAME);
    assert!(
        stdout(&out).contains("\n  \""),
        "pretty-printed: {}",
        stdout(&out)
    );

    let full = format!(
        "{}/Console/User/Lists?pageNumber=0&pageSize=20",
        setup
            .emulator
            .console_api_base()
            .as_str()
            .trim_end_matches('/')
    );
    let out = run(setup.bare().args(["call", "get", &full])).await;
    assert_success(&out);
    let lists: Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    assert_eq!(lists["IsPaginated"], true);

    let body = setup.home.path().join("list.json");
    std::fs::write(&body, r#"{"Name": "From the CLI"}"#).unwrap();
    let data = format!("@{}", body.display());
    let out = run(setup
        .bare()
        .args(["call", "POST", "Console/List", "--data", &data]))
    .await;
    assert_success(&out);
    assert!(stdout(&out).contains("From the CLI"), "{}", stdout(&out));

    let out = run(setup.bare().arg("refresh")).await;
    assert_success(&out);
    assert_eq!(setup.emulator.counters().token_refresh_token, 1);
    let refreshed = stdout(&run(setup.bare().arg("token")).await)
        .trim()
        .to_owned();
    assert_ne!(refreshed, token, "refresh gave a new access token");
    assert!(setup.emulator.is_access_token_live(&refreshed));

    // A one-off endpoint flag on a command other than `login` is refused, and not remembered.
    let out = run(setup
        .bare()
        .args(["--api-base", "http://127.0.0.1:1/elsewhere", "refresh"]))
    .await;
    assert_failure(&out, 2);
    let out = run(setup.bare().args(["status", "--json"])).await;
    let status: Value = serde_json::from_str(&stdout(&out)).expect("status JSON");
    assert!(
        !status.to_string().contains("127.0.0.1:1/elsewhere"),
        "a one-off flag was stored: {status}"
    );

    let out = run(setup.bare().args(["status", "--json"])).await;
    assert_success(&out);
    let status: Value = serde_json::from_str(&stdout(&out)).expect("status JSON");
    assert_eq!(status["profile"], "default");
    assert_eq!(status["authorized"], true);
    assert_eq!(status["client_id"], DEFAULT_CLIENT_ID);
    assert!(status["expires_in_seconds"].as_i64().unwrap() > 3000);
    assert!(status["expires_at"].as_str().unwrap().ends_with('Z'));
    assert!(status["last_refreshed_at_unix"].as_u64().is_some());
    assert_eq!(
        status["endpoints"]["token_url"],
        setup.emulator.token_url().as_str()
    );
    let json_text = stdout(&out);

    let out = run(setup.bare().arg("status")).await;
    assert_success(&out);
    let text = stdout(&out);
    assert!(text.contains("authorized:     yes"), "{text}");
    assert!(text.contains("last refreshed: 20"), "{text}");

    // No secret in any status output.
    let out_token = run(setup.bare().arg("token")).await;
    let mut secrets: Vec<String> = setup.emulator.issued_refresh_tokens();
    secrets.push(stdout(&out_token).trim().to_owned());
    secrets.push(token);
    secrets.push(DEFAULT_CLIENT_SECRET.to_owned());
    assert_no_secrets(&json_text, &secrets);
    assert_no_secrets(&text, &secrets);

    // RUST_LOG shows the library's steps on stderr, still without a secret.
    let out = run(setup.bare().env("RUST_LOG", "trace").arg("refresh")).await;
    assert_success(&out);
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(log.contains("mailup_auth.token_request"), "{log}");
    secrets.extend(setup.emulator.issued_refresh_tokens());
    assert_no_secrets(&log, &secrets);
    assert_no_secrets(&stdout(&out), &secrets);

    let out = run(setup.bare().arg("logout")).await;
    assert_success(&out);
    let out = run(setup.bare().arg("token")).await;
    assert_failure(&out, 3);
    let out = run(setup.bare().arg("status")).await;
    assert_failure(&out, 3);
    assert!(stdout(&out).contains("authorized:     no"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_redirect_uri_sets_the_listener_port_and_path_and_is_remembered() {
    let setup = Setup::start().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let redirect = format!("http://127.0.0.1:{port}/oauth/done");
    let (logon_url, out) =
        browser_login_with(&setup, Consent::Allow, &["--redirect-uri", &redirect]).await;
    assert_success(&out);
    let sent = logon_url
        .query_pairs()
        .find(|(k, _)| k == "redirect_uri")
        .map(|(_, v)| v.into_owned());
    assert_eq!(sent.as_deref(), Some(redirect.as_str()));
    let out = run(setup.bare().args(["status", "--json"])).await;
    assert_success(&out);
    let status: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(status["redirect_uri"], redirect.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_login_from_the_environment_or_stdin() {
    let setup = Setup::start().await;
    setup.password_login().await;
    assert_eq!(setup.emulator.counters().token_password, 1);

    // The password on a piped stdin (no MAILUP_PASSWORD), the username from the environment.
    let mut command = setup.with_client();
    command
        .args(["login", "--password"])
        .env("MAILUP_USERNAME", DEFAULT_USERNAME)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("login starts");
    {
        use tokio::io::AsyncWriteExt as _;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(format!("{DEFAULT_PASSWORD}\n").as_bytes())
            .await
            .unwrap();
    }
    let out = tokio::time::timeout(RUN_TIMEOUT, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_success(&out);
    assert_eq!(setup.emulator.counters().token_password, 2);
    assert!(!stdout(&out).contains(DEFAULT_PASSWORD));
    assert!(!stderr(&out).contains(DEFAULT_PASSWORD));

    // A wrong password: the grant is refused, log in again (3).
    let out = run(setup
        .with_client()
        .args(["login", "--password", "--username", DEFAULT_USERNAME])
        .env("MAILUP_PASSWORD", "wrong-password"))
    .await;
    let err = assert_failure(&out, 3);
    assert!(err.contains("invalid_grant"), "{err}");
    assert!(!err.contains("wrong-password"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_uses_the_tokens_the_first_stored_and_rotated() {
    let setup = Setup::start().await;
    setup.password_login().await;
    let first_refresh_tokens = setup.emulator.issued_refresh_tokens();

    // Process 2 rotates the refresh token.
    assert_success(&run(setup.bare().arg("refresh")).await);
    assert!(first_refresh_tokens
        .iter()
        .all(|t| !setup.emulator.is_refresh_token_live(t)));

    // Process 3 meets a 401 and refreshes: only the rotated token stored by process 2 works.
    setup.emulator.expire_all_access_tokens();
    let out = run(setup
        .bare()
        .args(["call", "GET", "Console/Authentication/Info"]))
    .await;
    assert_success(&out);
    let counters = setup.emulator.counters();
    assert_eq!(counters.token_refresh_token, 2);
    assert_eq!(counters.token_errors, 0, "no refresh token was reused");

    // Process 4 hands out the token process 3 obtained, without a refresh.
    let out = run(setup.bare().arg("token")).await;
    assert_success(&out);
    assert!(setup.emulator.is_access_token_live(stdout(&out).trim()));
    assert_eq!(setup.emulator.counters().token_refresh_token, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_and_configuration_errors_exit_2() {
    let setup = Setup::start().await;
    assert_failure(&run(setup.bare().arg("frobnicate")).await, 2);
    // `--password` takes no value: a password never goes on the command line.
    assert_failure(&run(setup.bare().args(["login", "--password=x"])).await, 2);

    let out = run(setup
        .with_client()
        .args(["--auth-base", "not a url", "token"]))
    .await;
    let err = assert_failure(&out, 2);
    assert!(err.contains("configuration"), "{err}");

    let out = run(setup.bare().args(["login", "--password"])).await;
    let err = assert_failure(&out, 2);
    assert!(err.contains("--client-id"), "{err}");

    let out = run(setup.bare().args([
        "call",
        "GET",
        "Console/Authentication/Info",
        "--data",
        "{oops",
    ]))
    .await;
    assert_failure(&out, 2);

    let out = run(setup.with_client().args([
        "login",
        "--no-browser",
        "--redirect-uri",
        "https://example.com/cb",
    ]))
    .await;
    assert_failure(&out, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reauthorization_required_exits_3() {
    let setup = Setup::start().await;
    let err = assert_failure(&run(setup.bare().arg("token")).await, 3);
    assert!(err.contains("mailup-auth login"), "{err}");
    assert_failure(&run(setup.bare().args(["status", "--json"])).await, 3);

    setup.password_login().await;
    setup.emulator.revoke_all_refresh_tokens();
    setup.emulator.expire_all_access_tokens();
    let out = run(setup
        .bare()
        .args(["call", "GET", "Console/Authentication/Info"]))
    .await;
    let err = assert_failure(&out, 3);
    assert!(err.contains("mailup-auth login"), "{err}");
    // A forced refresh with the revoked refresh token, while the access token is still
    // unexpired by the clock: refused, not reported as a success.
    let err = assert_failure(&run(setup.bare().arg("refresh")).await, 3);
    assert!(err.contains("invalid_grant"), "{err}");
    // The rejection was recorded with the profile: a later process knows without a request.
    let before = setup.emulator.counters().token_requests;
    let out = run(setup.bare().args(["status", "--json"])).await;
    assert_failure(&out, 3);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        status["reauthorization_reason"]
            .as_str()
            .unwrap()
            .contains("rejected"),
        "{status}"
    );
    assert_failure(&run(setup.bare().arg("token")).await, 3);
    assert_eq!(setup.emulator.counters().token_requests, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_that_cannot_reach_the_server_exits_5() {
    let setup = Setup::start().await;
    setup.password_login().await;
    // The connection is dropped without an answer, every time the CLI tries.
    setup
        .emulator
        .fail_next_token_requests(10, mailup_auth_emulator::Fault::DropConnection);
    let out = run(setup.bare().arg("refresh")).await;
    assert_failure(&out, 5);
    setup.emulator.clear_faults();
    // The stored tokens are intact.
    assert_success(&run(setup.bare().arg("refresh")).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_user_denying_access_exits_3() {
    let setup = Setup::start().await;
    let out = browser_login(&setup, Consent::Deny).await;
    let err = assert_failure(&out, 3);
    assert!(err.contains("access_denied"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_errors_exit_4_with_mailup_error_fields() {
    let setup = Setup::start().await;
    setup.password_login().await;
    let out = run(setup.bare().args(["call", "GET", "Console/Nope"])).await;
    let err = assert_failure(&out, 4);
    assert!(err.contains("404"), "{err}");
    assert!(err.contains("NotFound"), "{err}");
    assert!(stdout(&out).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_errors_exit_5() {
    let setup = Setup::start().await;
    // Nothing listens on port 1.
    let out = run(setup
        .with_client()
        .args([
            "--auth-base",
            "http://127.0.0.1:1",
            "login",
            "--password",
            "--username",
            DEFAULT_USERNAME,
        ])
        .env("MAILUP_PASSWORD", DEFAULT_PASSWORD))
    .await;
    assert_failure(&out, 5);

    // A profile whose API base (chosen at login) does not answer.
    let out = run(setup
        .with_client()
        .args(["--api-base", "http://127.0.0.1:1/API"])
        .args(["login", "--password", "--username", DEFAULT_USERNAME])
        .env("MAILUP_PASSWORD", DEFAULT_PASSWORD))
    .await;
    assert_success(&out);
    let out = run(setup
        .bare()
        .args(["call", "GET", "Console/Authentication/Info"]))
    .await;
    assert_failure(&out, 5);

    // Nobody comes back through the browser.
    let out = run(setup
        .with_client()
        .args(["login", "--no-browser", "--timeout", "1"]))
    .await;
    let err = assert_failure(&out, 5);
    assert!(err.contains("no authorization callback"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_documents_exit_codes_and_never_shows_the_secret() {
    let setup = Setup::start().await;
    let out = run(setup
        .bare()
        .arg("--help")
        .env("MAILUP_CLIENT_SECRET", "very-secret-value"))
    .await;
    assert_success(&out);
    let help = stdout(&out);
    for needle in [
        "Exit codes:",
        "re-authorization required",
        "MAILUP_PROFILE",
        "demo",
    ] {
        assert!(help.contains(needle), "{needle}: {help}");
    }
    assert!(!help.contains("very-secret-value"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_passes_and_leaves_nothing_behind() {
    let tmp = TempDir::new().unwrap();
    let home = TempDir::new().unwrap();
    let mut command = Command::new(BIN);
    command
        .arg("demo")
        .env("TMPDIR", tmp.path())
        .env("HOME", home.path())
        .env("XDG_DATA_HOME", home.path())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = run(&mut command).await;
    assert_success(&out);
    let report = stdout(&out);
    assert!(report.contains("All 8 steps passed"), "{report}");
    assert!(report.contains("exactly 1 refresh"), "{report}");
    assert!(!report.contains('✗'), "{report}");
    assert_no_secrets(&report, &[DEFAULT_CLIENT_SECRET.to_owned()]);
    assert!(is_empty(tmp.path()), "the demo left files in TMPDIR");
    assert!(is_empty(home.path()), "the demo left files in HOME");
}

fn is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|mut d| d.next().is_none())
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_given_as_a_flag_value_is_refused_without_echoing_it() {
    let setup = Setup::start().await;
    let out = run(setup
        .with_client()
        .args(["login", "--password=hunter2-secret"]))
    .await;
    let err = assert_failure(&out, 2);
    assert!(!err.contains("hunter2"), "{err}");
    assert!(!stdout(&out).contains("hunter2"));
    assert!(err.contains("MAILUP_PASSWORD"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_parallel_calls_with_a_slow_api_all_succeed() {
    let setup = Setup::start().await;
    setup.password_login().await;
    setup.emulator.set_api_latency(Duration::from_millis(300));
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let mut command = setup.bare();
        command.args(["call", "GET", "Console/Authentication/Info"]);
        calls.spawn(async move { run(&mut command).await });
    }
    let mut failures = Vec::new();
    while let Some(out) = calls.join_next().await {
        let out = out.expect("the task ran");
        if !out.status.success() {
            failures.push(format!("exit {:?}: {}", out.status.code(), stderr(&out)));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 20 failed: {failures:?}",
        failures.len()
    );
    assert_eq!(setup.emulator.counters().api_calls, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_answers_while_a_refresh_waits_for_the_token_endpoint() {
    let setup = Setup::start().await;
    setup.password_login().await;
    setup.emulator.set_token_latency(Duration::from_secs(8));
    let mut refresh = setup
        .bare()
        .arg("refresh")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("refresh starts");
    // Give the refresh time to load the profile and send its request.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while setup.emulator.counters().token_requests < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        setup.emulator.counters().token_requests,
        2,
        "the refresh is in flight"
    );
    let out = run(setup.bare().args(["status", "--json"])).await;
    assert_success(&out);
    assert!(
        refresh.try_wait().expect("refresh state").is_none(),
        "the refresh is still waiting for the token endpoint"
    );
    let _ = refresh.kill().await;
}

/// Writes raw bytes as a profile's record, as disk damage or another program would, into the
/// sled database of the store's current generation (named by its pointer file `CURRENT`).
fn write_raw_record(store: &str, profile: &str, bytes: &[u8]) {
    let generation = std::fs::read_to_string(Path::new(store).join("CURRENT"))
        .expect("the store has a pointer file");
    let database = Path::new(store).join(generation.trim());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let db = loop {
        match sled::open(&database) {
            Ok(db) => break db,
            // A child process may still be letting go of the database.
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(error) => panic!("cannot open {}: {error}", database.display()),
        }
    };
    let tree = db.open_tree("profiles").unwrap();
    tree.insert(profile.as_bytes(), bytes).unwrap();
    db.flush().unwrap();
}

fn tokens_expiring_at(expires_at: mailup_auth::UnixTime) -> mailup_auth::TokenSet {
    mailup_auth::TokenSet {
        access_token: mailup_auth::AccessToken::new("stored-access-token"),
        refresh_token: Some(mailup_auth::RefreshToken::new("stored-refresh-token")),
        expires_at,
        obtained_at: mailup_auth::UnixTime::from_system_time(std::time::SystemTime::now()),
        token_type: None,
        scope: None,
    }
}

fn client_without_endpoints() -> mailup_auth::StoredClient {
    mailup_auth::StoredClient {
        client_id: DEFAULT_CLIENT_ID.to_owned(),
        client_secret: Some(mailup_auth::ClientSecret::new(DEFAULT_CLIENT_SECRET)),
        ..mailup_auth::StoredClient::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_profile_can_be_logged_out_or_logged_in_again() {
    let setup = Setup::start().await;
    setup.password_login().await;
    write_raw_record(&setup.store(), "default", b"\x00\xffnot json at all");

    // Other commands fail (1) and say how to recover.
    for args in [&["token"][..], &["status"], &["refresh"]] {
        let out = run(setup.bare().args(args)).await;
        let err = assert_failure(&out, 1);
        assert!(err.contains("corrupt"), "{err}");
        assert!(
            err.contains("mailup-auth logout --profile default"),
            "{args:?}: {err}"
        );
    }
    // `logout` removes it; then the profile is simply not logged in.
    let out = run(setup.bare().arg("logout")).await;
    assert_success(&out);
    assert_failure(&run(setup.bare().arg("token")).await, 3);
    setup.password_login().await;
    assert_success(&run(setup.bare().arg("token")).await);

    // `login` works on a corrupt profile too, without a `logout` first.
    write_raw_record(&setup.store(), "default", b"{\"format\": 1, \"version\": ");
    setup.password_login().await;
    assert_success(&run(setup.bare().arg("token")).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_are_pinned_at_login() {
    let setup = Setup::start().await;
    setup.password_login().await;
    let stored_token_url = setup.emulator.token_url().to_string();
    let before = setup.emulator.counters();

    // A one-off token URL on `refresh` would receive the refresh token and the secret.
    let out = run(setup
        .bare()
        .env(
            "MAILUP_TOKEN_URL",
            "http://127.0.0.1:1/Authorization/OAuth/Token",
        )
        .arg("refresh"))
    .await;
    let err = assert_failure(&out, 2);
    assert!(
        err.contains(&stored_token_url),
        "names the stored value: {err}"
    );
    assert!(err.contains("login"), "{err}");

    let elsewhere = "http://127.0.0.1:1";
    for args in [
        &["--auth-base", elsewhere, "token"][..],
        &["--auth-base", elsewhere, "status"],
        &["--logon-url", "http://127.0.0.1:1/LogOn", "status"],
        &[
            "--api-base",
            "http://127.0.0.1:1/API",
            "call",
            "GET",
            "Console/Authentication/Info",
        ],
        &["--token-url", "http://127.0.0.1:1/Token", "logout"],
    ] {
        let out = run(setup.bare().args(args)).await;
        assert_failure(&out, 2);
    }
    let after = setup.emulator.counters();
    assert_eq!(
        after.token_requests, before.token_requests,
        "nothing was sent"
    );
    assert_eq!(after.api_calls, before.api_calls, "nothing was sent");

    // The same endpoints, spelled differently, are no mismatch.
    let base = setup.auth_base();
    let without_slash = base.trim_end_matches('/').to_owned();
    let with_slash = format!("{without_slash}/");
    for args in [
        &["--auth-base", without_slash.as_str(), "token"][..],
        &["--auth-base", with_slash.as_str(), "token"],
        &["--token-url", stored_token_url.as_str(), "refresh"],
    ] {
        assert_success(&run(setup.bare().args(args)).await);
    }

    // `login` rebinds the profile to other endpoints.
    let other = Emulator::builder().start().await.expect("emulator starts");
    let out = run(setup
        .with_client()
        .args(["--auth-base", other.base_url().as_str()])
        .args(["login", "--password", "--username", DEFAULT_USERNAME])
        .env("MAILUP_PASSWORD", DEFAULT_PASSWORD))
    .await;
    assert_success(&out);
    let out = run(setup.bare().args(["status", "--json"])).await;
    assert_success(&out);
    let status: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(status["endpoints"]["token_url"], other.token_url().as_str());
    // ...and the old ones are now the foreign ones.
    let out = run(setup.bare().args(["--auth-base", &base, "token"])).await;
    assert_failure(&out, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_without_stored_endpoints_accepts_them() {
    let setup = Setup::start().await;
    let in_an_hour = mailup_auth::UnixTime::from_system_time(
        std::time::SystemTime::now() + Duration::from_secs(3600),
    );
    let record = mailup_auth::ProfileRecord {
        tokens: Some(tokens_expiring_at(in_an_hour)),
        client: Some(client_without_endpoints()),
        ..mailup_auth::ProfileRecord::default()
    };
    save_record(&setup.store(), "default", &record).await;
    let out = run(setup
        .bare()
        .args(["--auth-base", &setup.auth_base(), "status", "--json"]))
    .await;
    assert_success(&out);
    let status: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        status["endpoints"]["token_url"],
        setup.emulator.token_url().as_str()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_a_date_in_year_10000_without_panicking() {
    let setup = Setup::start().await;
    // 10000-01-01T01:00:00Z
    let far = mailup_auth::UnixTime::from_secs(253_402_300_800 + 3600);
    let record = mailup_auth::ProfileRecord {
        tokens: Some(tokens_expiring_at(far)),
        client: Some(client_without_endpoints()),
        last_refreshed_at: Some(mailup_auth::UnixTime::from_millis(u64::MAX)),
        ..mailup_auth::ProfileRecord::default()
    };
    save_record(&setup.store(), "default", &record).await;
    let out = run(setup.bare().arg("status")).await;
    assert_success(&out);
    let text = stdout(&out);
    assert!(text.contains("invalid time"), "{text}");
    let out = run(setup.bare().args(["status", "--json"])).await;
    assert_success(&out);
    let status: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(status["expires_at_unix"], 253_402_300_800u64 + 3600);
    assert!(status["expires_in_seconds"].as_i64().unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stderr_or_stdout_is_no_panic() {
    let setup = Setup::start().await;
    // The reader of stderr is gone before the error line is written.
    let mut child = setup
        .bare()
        .args(["status", "--profile", "x"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("status starts");
    drop(child.stderr.take());
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next_line().await.unwrap();
    assert!(first.is_some_and(|line| line.starts_with("profile:")));
    drop(lines);
    let status = tokio::time::timeout(RUN_TIMEOUT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(3), "no panic (101) on a closed stderr");

    // `status --profile x 2>&1 | head -1`.
    let mut shell = Command::new("bash");
    shell
        .arg("-c")
        .arg(r#""$0" --store "$1" status --profile x 2>&1 | head -1; exit "${PIPESTATUS[0]}""#)
        .arg(BIN)
        .arg(setup.store())
        .env_remove("RUST_LOG")
        .env("HOME", setup.home.path())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = run(&mut shell).await;
    assert_eq!(stdout(&out).lines().count(), 1, "{}", stdout(&out));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_log_on_a_terminal_is_no_panic() {
    if std::process::Command::new("script")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        eprintln!("skipped: `script` (util-linux) is not installed");
        return;
    }
    let setup = Setup::start().await;
    // `script` runs the command on a pseudo-terminal: stderr is a terminal.
    let line = format!("'{BIN}' --store '{}' status --profile x", setup.store());
    let mut command = Command::new("script");
    command
        .args(["-qec", &line, "/dev/null"])
        .env("RUST_LOG", "mailup_auth=debug")
        .env("HOME", setup.home.path())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = run(&mut command).await;
    let text = stdout(&out);
    assert!(!text.contains("panicked"), "{text}");
    assert_eq!(out.status.code(), Some(3), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_outside_the_api_base_is_refused_in_cli_words() {
    let setup = Setup::start().await;
    setup.password_login().await;
    let out = run(setup.bare().args([
        "call",
        "GET",
        "http://127.0.0.1:1/Console/Authentication/Info",
    ]))
    .await;
    let err = assert_failure(&out, 2);
    assert!(!err.contains("trust_origin"), "a library method: {err}");
    assert!(err.contains("relative"), "{err}");
    assert!(err.contains("login --api-base"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_never_says_refreshed_on_next_use_when_a_login_is_required() {
    let setup = Setup::start().await;
    setup.password_login().await;
    setup.emulator.revoke_all_refresh_tokens();
    assert_failure(&run(setup.bare().arg("refresh")).await, 3);
    let out = run(setup.bare().arg("status")).await;
    assert_failure(&out, 3);
    let text = stdout(&out);
    assert!(text.contains("authorized:     no"), "{text}");
    assert!(!text.contains("refreshed on next use"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_skew_is_an_option() {
    let setup = Setup::start().await;
    setup.password_login().await;
    assert_success(&run(setup.bare().args(["--refresh-skew", "0", "token"])).await);
    assert_success(&run(setup.bare().env("MAILUP_REFRESH_SKEW", "120").arg("status")).await);
    assert_failure(
        &run(setup.bare().args(["--refresh-skew", "soon", "token"])).await,
        2,
    );
}

/// Hardening item 15: parallel commands on a token that is due for refresh send exactly one
/// refresh (a lock file per profile), and every one of them succeeds with the saved tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_parallel_calls_on_a_due_token_send_one_refresh() {
    let setup = Setup::start().await;
    setup.password_login().await;
    make_token_expire_in(&setup.store(), Duration::ZERO).await;
    setup.emulator.set_token_latency(Duration::from_millis(300));
    setup.emulator.set_api_latency(Duration::from_millis(100));
    let before = setup.emulator.counters();
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let mut command = setup.bare();
        command.args(["call", "GET", "Console/Authentication/Info"]);
        calls.spawn(async move { run(&mut command).await });
    }
    let mut failures = Vec::new();
    while let Some(out) = calls.join_next().await {
        let out = out.expect("the task ran");
        if !out.status.success() {
            failures.push(format!("exit {:?}: {}", out.status.code(), stderr(&out)));
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
    let after = setup.emulator.counters();
    assert_eq!(
        after.token_refresh_token - before.token_refresh_token,
        1,
        "exactly one refresh for twenty processes"
    );
    assert_eq!(after.token_errors, before.token_errors, "no invalid_grant");
}

/// Hardening item 10: with the token endpoint failing and 57 s left on the access token,
/// `token` prints the still-valid token (exit 0) with a warning on stderr.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_still_valid_token_is_printed_with_a_warning_while_the_endpoint_fails() {
    let setup = Setup::start().await;
    setup.password_login().await;
    let access = make_token_expire_in(&setup.store(), Duration::from_secs(57)).await;
    setup
        .emulator
        .fail_next_token_requests(100, mailup_auth_emulator::Fault::Status503);
    let out = run(setup.bare().arg("token")).await;
    assert_success(&out);
    assert_eq!(stdout(&out).trim(), access);
    let err = stderr(&out);
    assert!(err.starts_with("warning: the refresh failed"), "{err}");
    assert!(!err.contains(&access), "no token on stderr");
    // Nothing was recorded: once the endpoint works, the next command refreshes.
    setup.emulator.clear_faults();
    let out = run(setup.bare().arg("token")).await;
    assert_success(&out);
    assert_ne!(stdout(&out).trim(), access);
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
}

/// Hardening item 3, the reproduction: a token endpoint that answers one 404 HTML page (a
/// misrouted proxy) and then works again: the first `refresh` fails without recording
/// anything, the second exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_off_404_page_from_the_token_endpoint_is_not_a_lockout() {
    let setup = Setup::start().await;
    setup.password_login().await;
    setup
        .emulator
        .fail_next_token_requests(1, mailup_auth_emulator::Fault::NotFoundHtml);
    let out = run(setup.bare().arg("refresh")).await;
    let err = assert_failure(&out, 5);
    assert!(err.contains("404"), "{err}");
    let record = load_record(&setup.store(), "default").await;
    assert_eq!(record.reauthorization_required, None, "nothing recorded");
    let out = run(setup.bare().arg("refresh")).await;
    assert_success(&out);
}

/// Hardening item 11: a token endpoint that never answers: the CLI answers within 35 s and
/// says the endpoint did not answer (not three attempts of 30 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_token_endpoint_gets_an_answer_within_35_seconds() {
    let setup = Setup::start().await;
    setup.password_login().await;
    make_token_expire_in(&setup.store(), Duration::ZERO).await;
    setup.emulator.set_token_latency(Duration::from_secs(120));
    let started = std::time::Instant::now();
    let out = run(setup.bare().arg("token")).await;
    let took = started.elapsed();
    let err = assert_failure(&out, 5);
    assert!(took < Duration::from_secs(35), "took {took:?}");
    assert!(err.contains("did not answer"), "{err}");
    setup.emulator.set_token_latency(Duration::ZERO);
}

/// Hardening item 1: plain http to a host that is not a loopback address is refused with
/// exit 2 and one line, before any connection is tried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_to_a_remote_host_exits_2_before_any_connection() {
    let setup = Setup::start().await;
    let out = run(setup
        .bare()
        .env("MAILUP_CLIENT_ID", DEFAULT_CLIENT_ID)
        .env("MAILUP_CLIENT_SECRET", DEFAULT_CLIENT_SECRET)
        .env("MAILUP_AUTH_BASE", "http://192.0.2.1:9")
        .env("MAILUP_PASSWORD", "pw")
        .args(["login", "--password", "--username", "m1234"]))
    .await;
    let err = assert_failure(&out, 2);
    assert!(err.contains("192.0.2.1") && err.contains("https"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}
