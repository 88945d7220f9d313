//! The emulator's bad-answer catalogue against this project's own client: every [`Fault`] is
//! injected into a refresh (token endpoint) and into an API call, and run through the facade
//! (in process) and through the `mailup-auth` binary. What the user gets is asserted: the typed
//! error or success, the exit code, whether the tokens were kept or replaced (checked against
//! the emulator: the stored refresh token is live), no panic, and bounded memory and time (the
//! 1 GiB body is cut at the response limit; the answers that never come end at the client's
//! timeout, 1 s here). The table it prints is the one in `docs/reliability.md`.
//!
//! Every server is on 127.0.0.1; every child process has a temporary store and `HOME`.

use std::process::{Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use mailup_auth::{
    ClientSecret, ErrorKind, MailUpClient, MemoryTokenStore, Password, ReqwestTransport, TokenSet,
    TokenStore as _,
};
use mailup_auth_emulator::{
    Emulator, Fault, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_PASSWORD, DEFAULT_USERNAME,
};
use tempfile::TempDir;
use tokio::process::Command;

mod common;
use common::clean_command;

/// The client's timeout in this test: the never-ending answers cost this much each.
const TIMEOUT: Duration = Duration::from_secs(1);
/// A hard bound on every operation: far above the timeout, never reached unless a bound broke.
const HARD_BOUND: Duration = Duration::from_secs(30);
const INFO: &str = "Console/Authentication/Info";

/// What a fault on the token endpoint does to a refresh.
fn token_expectation(fault: Fault) -> (&'static str, u8) {
    if fault.processes_the_grant() {
        ("ok, tokens replaced", 0)
    } else {
        ("error, tokens kept", 5)
    }
}

/// What a fault on the API does to a call: the facade's outcome, then the exit code of
/// `mailup-auth call` (which prints a 2xx body as it came, so an unusable 2xx body is exit 0
/// there, while the facade's JSON helper reports it).
fn api_expectation(fault: Fault) -> (&'static str, u8, u8) {
    use Fault::*;
    match fault {
        f if f.processes_the_grant() => ("ok", 0, 0),
        // One 401: refreshed once and retried once.
        Empty401 => ("ok after one refresh", 0, 0),
        Status500
        | InvalidRequest
        | NotFoundHtml
        | Html403
        | Redirect302
        | Redirect307
        | TooManyRequestsSeconds
        | TooManyRequestsDate
        | TooManyRequestsGarbage
        | TooManyRequestsHuge => ("API error", 4, 4),
        Status503 | HtmlErrorPage => ("API error (unavailable)", 5, 5),
        Html200 | MalformedBody | TruncatedJson | NonUtf8Body => ("API answer not usable", 4, 0),
        // Valid JSON, if not MailUp's: the caller's type decides.
        MissingAccessToken | NonStringToken | TokenWithCrLf | ErrorWith200 => {
            ("ok (any JSON)", 0, 0)
        }
        DropConnection | BodyDroppedMidway | GarbageStatusLine | HugeHeader | SlowBody
        | HeadersNeverCome | ChunkedGigabyte => ("transport error", 5, 5),
        other => panic!("no expectation for {other:?}: add it to the catalogue test"),
    }
}

async fn facade(emulator: &Emulator) -> (MailUpClient, Arc<MemoryTokenStore>) {
    let store = Arc::new(MemoryTokenStore::new());
    let transport = ReqwestTransport::builder()
        .timeout(TIMEOUT)
        .build()
        .expect("a transport");
    let client = MailUpClient::builder(DEFAULT_CLIENT_ID, ClientSecret::new(DEFAULT_CLIENT_SECRET))
        .auth_base(emulator.base_url().as_str())
        .store(store.clone())
        .transport(Arc::new(transport))
        .token_operation_timeout(TIMEOUT)
        .max_refresh_attempts(1)
        .max_response_bytes(1024 * 1024)
        .build()
        .await
        .expect("a client");
    client
        .login_with_password(DEFAULT_USERNAME, &Password::new(DEFAULT_PASSWORD))
        .await
        .expect("the login works");
    (client, store)
}

async fn tokens_of(store: &MemoryTokenStore) -> Option<TokenSet> {
    store
        .load("default")
        .await
        .expect("the memory store reads")
        .and_then(|r| r.value.tokens)
}

fn refresh_of(tokens: &TokenSet) -> Option<String> {
    tokens.refresh_token.as_ref().map(|r| r.secret().to_owned())
}

/// One row of the printed table.
struct Row {
    fault: String,
    token_facade: String,
    token_cli: u8,
    api_facade: String,
    api_cli: u8,
}

async fn facade_token_case(emulator: &Emulator, fault: Fault) -> String {
    let (client, store) = facade(emulator).await;
    let before = tokens_of(&store).await.expect("logged in");
    let old_refresh = refresh_of(&before).expect("a refresh token");
    emulator.fail_next_token_requests(1, fault);
    let result = tokio::time::timeout(HARD_BOUND, client.refresh())
        .await
        .unwrap_or_else(|_| panic!("{fault:?}: the refresh is bounded"));
    emulator.clear_faults();
    let after = tokens_of(&store).await.expect("tokens are never dropped");
    let new_refresh = refresh_of(&after).expect("a refresh token is never dropped");
    let (expected, _) = token_expectation(fault);
    match (&result, fault.processes_the_grant()) {
        (Ok(_), true) => {
            assert_ne!(after.access_token, before.access_token, "{fault:?}");
            assert!(
                emulator.is_refresh_token_live(&new_refresh),
                "{fault:?}: the kept refresh token is live"
            );
            if fault == Fault::MissingRefreshToken {
                assert_eq!(
                    new_refresh, old_refresh,
                    "{fault:?}: no rotation, the old one is kept"
                );
            } else {
                assert_ne!(
                    new_refresh, old_refresh,
                    "{fault:?}: the rotated one is kept"
                );
                assert!(!emulator.is_refresh_token_live(&old_refresh));
                let lifetime = after.expires_at.duration_since(after.obtained_at);
                assert!(
                    lifetime <= Duration::from_secs(24 * 3600),
                    "{fault:?}: lifetime {lifetime:?} is capped"
                );
            }
        }
        (Err(error), false) => {
            assert!(
                !matches!(error.kind(), ErrorKind::ReauthorizationRequired(_)),
                "{fault:?}: only a rejection ends a session, got {error}"
            );
            assert_eq!(
                after.access_token, before.access_token,
                "{fault:?}: tokens kept"
            );
            assert_eq!(new_refresh, old_refresh, "{fault:?}: tokens kept");
            assert!(emulator.is_refresh_token_live(&old_refresh), "{fault:?}");
            // The session is not stuck: the next refresh works.
            client
                .refresh()
                .await
                .unwrap_or_else(|e| panic!("{fault:?}: recovery: {e}"));
        }
        (result, _) => panic!("{fault:?}: expected {expected}, got {result:?}"),
    }
    match result {
        Ok(_) => expected.to_owned(),
        Err(error) => format!("{expected}: {}", short(&error.to_string())),
    }
}

async fn facade_api_case(emulator: &Emulator, fault: Fault) -> String {
    let (client, store) = facade(emulator).await;
    let before = tokens_of(&store).await.expect("logged in");
    let refreshes = emulator.counters().token_refresh_token;
    emulator.fail_next_api_requests(1, fault);
    let result = tokio::time::timeout(HARD_BOUND, client.get::<serde_json::Value>(INFO))
        .await
        .unwrap_or_else(|_| panic!("{fault:?}: the call is bounded"));
    emulator.clear_faults();
    let after = tokens_of(&store).await.expect("tokens are never dropped");
    let (expected, _, _) = api_expectation(fault);
    let refreshed = emulator.counters().token_refresh_token - refreshes;
    match fault {
        Fault::Empty401 => {
            assert!(result.is_ok(), "{fault:?}: {result:?}");
            assert_eq!(refreshed, 1, "one refresh, one retry");
        }
        _ if expected.starts_with("ok") => assert!(result.is_ok(), "{fault:?}: {result:?}"),
        _ => {
            let error = result.as_ref().expect_err("a fault is an error");
            assert_eq!(refreshed, 0, "{fault:?}: no refresh for {error}");
            assert_eq!(
                after.access_token, before.access_token,
                "{fault:?}: tokens kept"
            );
            let typed = match error.kind() {
                ErrorKind::Api(_) => expected.starts_with("API error"),
                ErrorKind::Decode { .. } => expected == "API answer not usable",
                ErrorKind::Transport(_) => expected == "transport error",
                _ => false,
            };
            if !typed {
                mismatch(format!("{fault:?}: expected {expected}, got {error:?}"));
            }
        }
    }
    match result {
        Ok(_) => expected.to_owned(),
        Err(error) => format!("{expected}: {}", short(&error.to_string())),
    }
}

static MISMATCHES: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Records an outcome other than the expected one; all are reported at the end, so one run
/// shows every difference.
fn mismatch(message: String) {
    eprintln!("MISMATCH {message}");
    MISMATCHES.lock().unwrap().push(message);
}

fn short(text: &str) -> String {
    let one_line = text.replace('\n', " ");
    let mut out: String = one_line.chars().take(70).collect();
    if one_line.chars().count() > 70 {
        out.push('…');
    }
    out
}

struct Cli {
    home: TempDir,
    base: String,
}

impl Cli {
    fn command(&self) -> Command {
        let mut command = clean_command(self.home.path());
        command
            .env("MAILUP_STORE", self.home.path().join("store"))
            .env("MAILUP_CLIENT_ID", DEFAULT_CLIENT_ID)
            .env("MAILUP_CLIENT_SECRET", DEFAULT_CLIENT_SECRET)
            .env("MAILUP_AUTH_BASE", &self.base)
            .env("MAILUP_HTTP_TIMEOUT", TIMEOUT.as_secs().to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    async fn run(&self, args: &[&str]) -> Output {
        tokio::time::timeout(
            HARD_BOUND,
            self.command()
                .args(args)
                .env("MAILUP_PASSWORD", DEFAULT_PASSWORD)
                .output(),
        )
        .await
        .expect("the command is bounded")
        .expect("the command runs")
    }

    async fn stored_refresh_token(&self) -> Option<String> {
        let path = self.home.path().join("store");
        tokio::task::spawn_blocking(move || {
            let store = mailup_auth::SledTokenStore::open(path).expect("the store opens");
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let record = runtime
                .block_on(store.load("default"))
                .expect("the record reads");
            record
                .and_then(|r| r.value.tokens)
                .and_then(|t| t.refresh_token)
                .map(|r| r.secret().to_owned())
        })
        .await
        .unwrap()
    }
}

fn code(out: &Output) -> u8 {
    let code = out.status.code().expect("exited, not killed");
    assert_ne!(
        code,
        101,
        "a panic: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    u8::try_from(code).unwrap()
}

async fn cli_token_case(emulator: &Emulator, cli: &Cli, fault: Fault) -> u8 {
    let before = cli.stored_refresh_token().await.expect("logged in");
    // The CLI tries a refresh up to three times: every attempt gets the fault.
    emulator.fail_next_token_requests(if fault.processes_the_grant() { 1 } else { 3 }, fault);
    let out = cli.run(&["refresh"]).await;
    emulator.clear_faults();
    let code = code(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.lines().count() <= 1, "{fault:?}: one line: {stderr}");
    assert!(
        !stderr.contains('\r') && !stderr.contains('\u{1b}'),
        "{fault:?}: escaped"
    );
    let after = cli
        .stored_refresh_token()
        .await
        .expect("a refresh token is never dropped");
    assert!(
        emulator.is_refresh_token_live(&after),
        "{fault:?}: the stored refresh token is live"
    );
    if !fault.processes_the_grant() {
        assert_eq!(after, before, "{fault:?}: tokens kept");
    }
    if code != token_expectation(fault).1 {
        mismatch(format!("{fault:?}: `refresh` exit {code} ({stderr})"));
    }
    code
}

async fn cli_api_case(emulator: &Emulator, cli: &Cli, fault: Fault) -> u8 {
    emulator.fail_next_api_requests(1, fault);
    let out = cli.run(&["call", "GET", INFO]).await;
    emulator.clear_faults();
    let code = code(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.lines().count() <= 1, "{fault:?}: one line: {stderr}");
    let after = cli
        .stored_refresh_token()
        .await
        .expect("a refresh token is never dropped");
    assert!(emulator.is_refresh_token_live(&after), "{fault:?}");
    if code != api_expectation(fault).2 {
        mismatch(format!("{fault:?}: `call` exit {code} ({stderr})"));
    }
    code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_of_the_catalogue_gives_the_user_a_typed_bounded_answer() {
    let emulator = Emulator::builder()
        .start()
        .await
        .expect("the emulator starts");
    let cli = Cli {
        home: TempDir::new().unwrap(),
        base: emulator.base_url().to_string(),
    };
    let login = cli
        .run(&["login", "--password", "--username", DEFAULT_USERNAME])
        .await;
    assert_eq!(
        code(&login),
        0,
        "{}",
        String::from_utf8_lossy(&login.stderr)
    );

    let mut rows = Vec::new();
    for &fault in Fault::ALL {
        let token_facade = facade_token_case(&emulator, fault).await;
        let api_facade = facade_api_case(&emulator, fault).await;
        let token_cli = cli_token_case(&emulator, &cli, fault).await;
        let api_cli = cli_api_case(&emulator, &cli, fault).await;
        rows.push(Row {
            fault: fault.name(),
            token_facade,
            token_cli,
            api_facade,
            api_cli,
        });
    }
    println!("| fault | refresh (facade) | `refresh` exit | API call (facade) | `call` exit |");
    println!("|---|---|---|---|---|");
    for row in &rows {
        println!(
            "| `{}` | {} | {} | {} | {} |",
            row.fault, row.token_facade, row.token_cli, row.api_facade, row.api_cli
        );
    }
    println!(
        "catalogue: {} faults, each on the token endpoint and the API, facade and CLI",
        rows.len()
    );
    emulator.shutdown().await;
    let mismatches = MISMATCHES.lock().unwrap();
    assert!(
        mismatches.is_empty(),
        "unexpected outcomes:\n{}",
        mismatches.join("\n")
    );
}
