//! The web-app example (examples/web_app.rs) end to end, over real HTTP on 127.0.0.1: two
//! customers connect their own MailUp accounts through the emulator's LogOn and consent pages,
//! each sees only their own data, 60 concurrent requests per customer after expiry cause one
//! refresh per customer, a restart keeps both connections, and a revoked account shows as
//! needing reconnection while the other keeps working.

#[path = "../examples/web_app.rs"]
mod web_app;

use std::path::Path;
use std::time::Duration;

use mailup_auth_emulator::{Consent, ScriptedBrowser};
use mailup_auth_emulator::{Emulator, User, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET};
use reqwest::StatusCode;

const USERS: [(&str, &str, &str); 2] = [("alice", "m1111", "pw-a"), ("bob", "m2222", "pw-b")];

struct App {
    base: String,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for App {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Starts the example's app on a free port over the store in `dir`.
async fn start_app(emulator: &Emulator, dir: &Path) -> App {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accounts = web_app::accounts(
        DEFAULT_CLIENT_ID,
        DEFAULT_CLIENT_SECRET,
        Some(emulator.base_url().as_str()),
        &format!("http://{addr}/mailup/callback"),
        dir,
    )
    .await
    .unwrap();
    let router = web_app::router(web_app::App::new(accounts));
    let server = tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    App {
        base: format!("http://{addr}"),
        server,
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn get(app: &App, user: &str, path: &str) -> reqwest::Response {
    http()
        .get(format!("{}{path}", app.base))
        .header("X-User", user)
        .send()
        .await
        .unwrap()
}

/// The customer connects their MailUp account: the app's connect route, MailUp's LogOn and
/// consent pages as the customer, and the redirect back to the app's callback.
async fn connect(app: &App, user: &str, username: &str, password: &str) {
    let started = get(app, user, "/mailup/connect").await;
    assert_eq!(started.status(), StatusCode::SEE_OTHER);
    let logon = started.headers()["location"].to_str().unwrap().to_owned();
    let browser = ScriptedBrowser::new();
    let callback = browser
        .authorize(&logon.parse().unwrap(), username, password, Consent::Allow)
        .await
        .unwrap();
    let path_and_query = format!("{}?{}", callback.path(), callback.query().unwrap());
    let done = get(app, user, &path_and_query).await;
    assert_eq!(
        done.status(),
        StatusCode::OK,
        "{}",
        done.text().await.unwrap()
    );
}

async fn info(app: &App, user: &str) -> (StatusCode, serde_json::Value) {
    let response = get(app, user, "/mailup/info").await;
    let status = response.status();
    (
        status,
        response.json().await.unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_customers_connect_their_own_accounts_and_refresh_once_each() {
    let mut emulator = Emulator::builder();
    for (_, username, password) in USERS {
        emulator = emulator.user(User::new(username, password));
    }
    let emulator = emulator.start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("tokens");
    let app = start_app(&emulator, &store_dir).await;

    for (user, username, password) in USERS {
        connect(&app, user, username, password).await;
    }
    // Each customer sees their own account only.
    for (user, username, _) in USERS {
        let (status, body) = info(&app, user).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["Username"], username, "{user}");
    }
    // A callback cannot pick another customer's account: with no connection in progress for
    // this customer, it is refused whatever the query says.
    assert_eq!(
        get(&app, "mallory", "/mailup/callback?code=x&state=y")
            .await
            .status(),
        StatusCode::BAD_REQUEST
    );

    // After expiry, 60 concurrent requests per customer: one refresh per customer.
    emulator.expire_all_access_tokens();
    let before = emulator.counters().token_refresh_token;
    let mut calls = tokio::task::JoinSet::new();
    for (user, username, _) in USERS {
        for _ in 0..60 {
            let base = app.base.clone();
            calls.spawn(async move {
                let response = http()
                    .get(format!("{base}/mailup/info"))
                    .header("X-User", user)
                    .send()
                    .await
                    .unwrap();
                let status = response.status();
                let body: serde_json::Value = response.json().await.unwrap();
                (status, body, username)
            });
        }
    }
    while let Some(call) = calls.join_next().await {
        let (status, body, username) = call.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["Username"], username);
    }
    assert_eq!(
        emulator.counters().token_refresh_token - before,
        2,
        "exactly one refresh per customer"
    );

    // A restart keeps both connections (no new login).
    let logins = emulator.counters().token_authorization_code;
    drop(app);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let app = start_app(&emulator, &store_dir).await;
    for (user, username, _) in USERS {
        let (status, body) = info(&app, user).await;
        assert_eq!(status, StatusCode::OK, "{user} after a restart");
        assert_eq!(body["Username"], username);
    }
    assert_eq!(emulator.counters().token_authorization_code, logins);

    // The customers' grants are revoked at MailUp (as when a user withdraws the app's
    // access); Alice connects again, Bob does not.
    let live: Vec<String> = emulator
        .issued_refresh_tokens()
        .into_iter()
        .filter(|token| emulator.is_refresh_token_live(token))
        .collect();
    assert_eq!(live.len(), 2, "one live refresh token per customer");
    for token in &live {
        emulator.revoke_refresh_token(token);
    }
    // Alice reconnects; then Bob's access expires and cannot be refreshed.
    connect(&app, "alice", "m1111", "pw-a").await;
    emulator.expire_all_access_tokens();
    let (status, body) = info(&app, "bob").await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["reconnect"], true);
    let (status, body) = info(&app, "alice").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["Username"], "m1111");
    let states: serde_json::Value = get(&app, "admin", "/mailup/accounts")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(states["customer-bob"], "needs_reconnect", "{states}");
    assert_eq!(states["customer-alice"], "connected", "{states}");
}
