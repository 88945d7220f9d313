//! `mailup-auth demo`: the whole flow against the embedded emulator, on 127.0.0.1 only.
//!
//! A scripted user walks the real LogOn pages over HTTP (login form, consent, redirect to the
//! loopback listener), the facade exchanges the code and stores the tokens in a temporary
//! sled store, then the demo shows API calls, a proactive refresh, a 401-driven refresh,
//! rotation, and single flight under 100 concurrent calls. Each step prints ✓ or ✗, a one-line
//! result and its time. Nothing is left behind: the emulator stops, the store is deleted.
//! No token or secret is printed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mailup_auth::{
    ClientSecret, LoopbackLogin, MailUpClient, ManualClock, ReqwestTransport, SledTokenStore,
    TokenStore, Url,
};
use mailup_auth_emulator::{Consent, FollowedRedirect, ScriptedBrowser};
use mailup_auth_emulator::{
    Counters, Emulator, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_PASSWORD,
    DEFAULT_USERNAME,
};
use serde_json::Value;
use tempfile::TempDir;

use crate::failure::{Failure, EXIT_LOCAL};
use crate::output::say;

const PROFILE: &str = "demo";
const INFO: &str = "Console/Authentication/Info";
const LISTS: &str = "Console/User/Lists?pageNumber=0&pageSize=20";
const CONCURRENT_CALLS: usize = 100;

type StepResult = Result<String, String>;

/// Prints the steps as they finish.
struct Report {
    started: Instant,
    steps: usize,
    failed: bool,
}

impl Report {
    fn new() -> Self {
        say!(
            "mailup-auth demo: the OAuth 2.0 authorization-code flow against a local MailUp \
             emulator (127.0.0.1 only)\n"
        );
        Self {
            started: Instant::now(),
            steps: 0,
            failed: false,
        }
    }

    /// Records a step; `Err(())` when it failed (the caller stops, then cleans up).
    fn step(&mut self, title: &str, started: Instant, result: StepResult) -> Result<(), ()> {
        self.steps += 1;
        let ms = started.elapsed().as_millis();
        let (mark, line) = match &result {
            Ok(line) => ('✓', line.as_str()),
            Err(line) => ('✗', line.as_str()),
        };
        say!("{:>3} {mark} {title:<58} {ms:>6} ms", self.steps);
        say!("        {line}");
        if result.is_err() {
            self.failed = true;
            return Err(());
        }
        Ok(())
    }
}

/// Everything the steps share.
struct Demo {
    emulator: Emulator,
    store: Arc<SledTokenStore>,
    client: MailUpClient,
    clock: Arc<ManualClock>,
    _dir: TempDir,
}

/// Exit code after Ctrl-C (128 + SIGINT, as shells report it).
const EXIT_INTERRUPTED: u8 = 130;

/// Runs the demo; fails (exit 1) when any step fails.
pub(crate) async fn run() -> Result<(), Failure> {
    let mut report = Report::new();
    let setup_started = Instant::now();
    let setup = setup().await;
    let demo = match setup {
        Ok((demo, line)) => {
            let _ = report.step(
                "start the MailUp emulator and a temporary token store",
                setup_started,
                Ok(line),
            );
            demo
        }
        Err(line) => {
            let _ = report.step(
                "start the MailUp emulator and a temporary token store",
                setup_started,
                Err(line),
            );
            return Err(Failure::new(EXIT_LOCAL, "the demo failed"));
        }
    };
    // Ctrl-C stops the steps but not the cleanup: the temporary store is still deleted.
    let interrupted = tokio::select! {
        _ = steps(&demo, &mut report) => false,
        _ = tokio::signal::ctrl_c() => true,
    };
    let cleanup_started = Instant::now();
    let cleanup = cleanup(demo).await;
    let _ = report.step(
        "log out, stop the emulator, delete the temporary store",
        cleanup_started,
        cleanup,
    );
    let total = report.started.elapsed().as_millis();
    if interrupted {
        say!("\nInterrupted after {total} ms; the temporary store was deleted.");
        return Err(Failure::new(EXIT_INTERRUPTED, "interrupted"));
    }
    if report.failed {
        say!("\nThe demo failed after {total} ms (see ✗ above).");
        return Err(Failure::new(EXIT_LOCAL, "the demo failed"));
    }
    say!(
        "\nAll {} steps passed in {total} ms. Nothing was left behind.",
        report.steps
    );
    Ok(())
}

async fn setup() -> Result<(Demo, String), String> {
    let emulator = Emulator::builder()
        .admin_api(false)
        .start()
        .await
        .map_err(|e| format!("cannot start the emulator: {e}"))?;
    let dir = tempfile::Builder::new()
        .prefix("mailup-auth-demo-")
        .tempdir()
        .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    let store_dir = dir.path().join("tokens");
    let store = tokio::task::spawn_blocking(move || SledTokenStore::open(store_dir))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot open the temporary store: {e}"))?;
    let store = Arc::new(store);
    // The client's clock is manual so the demo can jump to just before expiry; the emulator
    // keeps real time.
    let clock = Arc::new(ManualClock::starting_now());
    // Everything is on 127.0.0.1: a system proxy (HTTP_PROXY) must not be asked.
    let transport = ReqwestTransport::builder()
        .no_proxy()
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let client = MailUpClient::builder(DEFAULT_CLIENT_ID, ClientSecret::new(DEFAULT_CLIENT_SECRET))
        .profile(PROFILE)
        .auth_base(emulator.base_url().as_str())
        .transport(Arc::new(transport))
        .store(store.clone() as Arc<dyn TokenStore>)
        .clock(clock.clone())
        .build()
        .await
        .map_err(|e| format!("cannot build the client: {e}"))?;
    let line = format!(
        "emulator at {}; sled store in a temporary directory",
        emulator.base_url()
    );
    Ok((
        Demo {
            emulator,
            store,
            client,
            clock,
            _dir: dir,
        },
        line,
    ))
}

async fn steps(demo: &Demo, report: &mut Report) -> Result<(), ()> {
    let t = Instant::now();
    report.step(
        "log in: LogOn page, login form, consent, loopback redirect",
        t,
        login(demo).await,
    )?;
    let t = Instant::now();
    report.step(&format!("GET {INFO}"), t, account_info(demo).await)?;
    let t = Instant::now();
    report.step(&format!("GET {LISTS}"), t, lists(demo).await)?;
    let t = Instant::now();
    report.step(
        "proactive refresh: the clock reaches expiry minus the skew",
        t,
        proactive_refresh(demo).await,
    )?;
    let t = Instant::now();
    report.step(
        "401-driven refresh: the server expired the access token",
        t,
        reactive_refresh(demo).await,
    )?;
    let t = Instant::now();
    report.step(
        &format!("{CONCURRENT_CALLS} concurrent calls on an expired token"),
        t,
        concurrent_calls(demo).await,
    )?;
    Ok(())
}

/// The scripted user: fills in the LogOn form, presses Allow, then loads the redirect (the
/// loopback listener), like a browser would.
async fn scripted_user(logon_url: Url) -> Result<(Url, FollowedRedirect), String> {
    let browser = ScriptedBrowser::with_timeout(Duration::from_secs(10));
    let location = browser
        .authorize(
            &logon_url,
            DEFAULT_USERNAME,
            DEFAULT_PASSWORD,
            Consent::Allow,
        )
        .await
        .map_err(|e| format!("scripted browser: {e}"))?;
    let page = browser
        .follow(&location)
        .await
        .map_err(|e| format!("scripted browser: {e}"))?;
    Ok((location, page))
}

async fn login(demo: &Demo) -> StepResult {
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let options = LoopbackLogin {
        port: 0,
        timeout: Duration::from_secs(20),
        ..LoopbackLogin::default()
    };
    let login = demo.client.login_with_loopback(options, move |url| {
        let url = url.clone();
        tokio::spawn(async move {
            let _ = tx.send(scripted_user(url).await).await;
        });
    });
    tokio::pin!(login);
    let mut trip = None;
    loop {
        tokio::select! {
            result = &mut login => {
                result.map_err(|e| format!("login failed: {e}"))?;
                break;
            }
            // A browser failure ends the step at once instead of waiting for the timeout.
            Some(outcome) = rx.recv(), if trip.is_none() => trip = Some(outcome?),
        }
    }
    let (location, page) = match trip {
        Some(trip) => trip,
        None => tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .map_err(|_| "the scripted browser did not finish".to_owned())?
            .ok_or("the scripted browser stopped")??,
    };
    if page.status != 200 {
        return Err(format!(
            "the loopback listener answered the browser with HTTP {}",
            page.status
        ));
    }
    let counters = demo.emulator.counters();
    let status = demo.client.status();
    Ok(format!(
        "{DEFAULT_USERNAME} allowed access; redirected to {}; {} code exchange; tokens stored (version {})",
        without_query(&location),
        counters.token_authorization_code,
        status.store_version.unwrap_or_default()
    ))
}

fn without_query(url: &Url) -> String {
    let mut url = url.clone();
    url.set_query(None);
    format!("{url}?code=…&state=…")
}

async fn get_json(demo: &Demo, path: &str) -> Result<Value, String> {
    demo.client
        .get::<Value>(path)
        .await
        .map_err(|e| format!("{path}: {e}"))
}

async fn account_info(demo: &Demo) -> StepResult {
    let info = get_json(demo, INFO).await?;
    let field = |name: &str| {
        info.get(name)
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned()
    };
    Ok(format!(
        "account {} (user {}, UID {})",
        field("AccountName"),
        field("Username"),
        field("UID")
    ))
}

async fn lists(demo: &Demo) -> StepResult {
    let lists = get_json(demo, LISTS).await?;
    let total = lists
        .get("TotalElementsCount")
        .and_then(Value::as_u64)
        .unwrap_or_default();
    let names: Vec<&str> = lists
        .get("Items")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item.get("Name").and_then(Value::as_str))
                .take(3)
                .collect()
        })
        .unwrap_or_default();
    Ok(format!("{total} list(s): {}", names.join(", ")))
}

/// The refresh token in the store right now (read, compared, never printed).
async fn stored_refresh_token(demo: &Demo) -> Result<String, String> {
    let record = demo
        .store
        .load(PROFILE)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("no stored record")?;
    record
        .value
        .tokens
        .and_then(|t| t.refresh_token)
        .map(|t| t.secret().to_owned())
        .ok_or_else(|| "no stored refresh token".to_owned())
}

/// Checks that the refresh rotated the token and the server no longer accepts the old one.
async fn check_rotation(demo: &Demo, old: &str) -> Result<(), String> {
    let new = stored_refresh_token(demo).await?;
    if new == old {
        return Err("the refresh token was not rotated".into());
    }
    if demo.emulator.is_refresh_token_live(old) {
        return Err("the old refresh token is still accepted".into());
    }
    if !demo.emulator.is_refresh_token_live(&new) {
        return Err("the stored refresh token is not the live one".into());
    }
    Ok(())
}

fn refreshes(before: &Counters, after: &Counters) -> u64 {
    after.token_refresh_token - before.token_refresh_token
}

async fn proactive_refresh(demo: &Demo) -> StepResult {
    let old = stored_refresh_token(demo).await?;
    let expires_at = demo.client.status().expires_at.ok_or("no tokens")?;
    let before = demo.emulator.counters();
    // Jump to 30 s before expiry: inside the 60 s refresh skew.
    let now = mailup_auth::Clock::now(demo.clock.as_ref());
    demo.clock.advance(
        expires_at
            .duration_since(now)
            .saturating_sub(Duration::from_secs(30)),
    );
    get_json(demo, INFO).await?;
    let after = demo.emulator.counters();
    let unauthorized = after.api_unauthorized - before.api_unauthorized;
    if refreshes(&before, &after) != 1 || unauthorized != 0 {
        return Err(format!(
            "expected 1 refresh and no 401, saw {} refresh(es) and {unauthorized} 401(s)",
            refreshes(&before, &after)
        ));
    }
    check_rotation(demo, &old).await?;
    Ok(
        "1 refresh before the call, no 401; refresh token rotated, the old one is now rejected"
            .into(),
    )
}

async fn reactive_refresh(demo: &Demo) -> StepResult {
    let old = stored_refresh_token(demo).await?;
    demo.emulator.expire_all_access_tokens();
    let before = demo.emulator.counters();
    get_json(demo, INFO).await?;
    let after = demo.emulator.counters();
    let unauthorized = after.api_unauthorized - before.api_unauthorized;
    if refreshes(&before, &after) != 1 || unauthorized != 1 {
        return Err(format!(
            "expected one 401 then 1 refresh, saw {unauthorized} 401(s) and {} refresh(es)",
            refreshes(&before, &after)
        ));
    }
    check_rotation(demo, &old).await?;
    Ok(
        "API answered 401, 1 refresh, call retried once and succeeded; refresh token rotated"
            .into(),
    )
}

async fn concurrent_calls(demo: &Demo) -> StepResult {
    let old = stored_refresh_token(demo).await?;
    demo.emulator.expire_all_access_tokens();
    let before = demo.emulator.counters();
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENT_CALLS {
        let client = demo.client.clone();
        calls.spawn(async move { client.get::<Value>(INFO).await });
    }
    let mut succeeded = 0;
    let mut first_error = None;
    while let Some(joined) = calls.join_next().await {
        match joined {
            Ok(Ok(_)) => succeeded += 1,
            Ok(Err(e)) => {
                first_error.get_or_insert(e.to_string());
            }
            Err(e) => {
                first_error.get_or_insert(e.to_string());
            }
        }
    }
    let after = demo.emulator.counters();
    if let Some(error) = first_error {
        return Err(format!(
            "{succeeded}/{CONCURRENT_CALLS} succeeded; first error: {error}"
        ));
    }
    let refreshed = refreshes(&before, &after);
    if refreshed != 1 {
        return Err(format!("expected 1 refresh, saw {refreshed}"));
    }
    check_rotation(demo, &old).await?;
    Ok(format!(
        "{succeeded}/{CONCURRENT_CALLS} succeeded with exactly 1 refresh (the server rejected {} in-flight calls with 401; single flight)",
        after.api_unauthorized - before.api_unauthorized
    ))
}

async fn cleanup(demo: Demo) -> StepResult {
    let Demo {
        emulator,
        store,
        client,
        clock: _,
        _dir: dir,
    } = demo;
    let logout = client.logout().await.map_err(|e| format!("logout: {e}"));
    let left = store
        .load(PROFILE)
        .await
        .ok()
        .flatten()
        .and_then(|r| r.value.tokens);
    // Close the store before deleting its directory.
    drop(client);
    drop(store);
    emulator.shutdown().await;
    let path = dir.path().to_path_buf();
    dir.close()
        .map_err(|e| format!("cannot delete the temporary store: {e}"))?;
    logout?;
    if left.is_some() {
        return Err("the tokens were still stored after logout".into());
    }
    if path.exists() {
        return Err("the temporary store is still there".into());
    }
    Ok("tokens forgotten, emulator stopped, temporary store deleted".into())
}
