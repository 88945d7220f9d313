//! A web application where each signed-in customer connects their own MailUp account, built on
//! `MailUpAccounts` with axum: the pattern to copy into production.
//!
//! - `GET /mailup/connect`: starts connecting the signed-in customer's MailUp account and
//!   redirects the browser to MailUp's LogOn page. The pending authorization is kept
//!   server-side, under the customer's id (never in the browser).
//! - `GET /mailup/callback?code=..&state=..`: MailUp's redirect. The account is the one the
//!   pending authorization was started for (the customer's), never one named in the query.
//! - `GET /mailup/info`: calls the Console API for the signed-in customer. All requests for one
//!   customer share one client, so concurrent requests cause one refresh; a customer whose
//!   MailUp access was revoked gets `409 {"reconnect": true}`.
//! - `GET /mailup/accounts`: every connected account and its state (an admin page).
//!
//! Who is signed in comes from your own authentication; here, a stand-in: the `X-User` header.
//!
//! Run it against the emulator:
//! ```sh
//! cargo run -p mailup-auth-emulator --features cli -- --port 8080 &
//! MAILUP_CLIENT_ID=mailup-demo-client MAILUP_CLIENT_SECRET=mailup-demo-secret \
//!   MAILUP_AUTH_BASE=http://127.0.0.1:8080 cargo run -p mailup-auth --example web_app
//! curl -i -H 'X-User: alice' http://127.0.0.1:3000/mailup/connect   # follow the Location
//! ```

// This file is also compiled into the end-to-end test (tests/web_app.rs), which does not
// use `main`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use mailup_auth::{
    AccountState, ClientSecret, Error, MailUpAccounts, MailUpClient, PendingAccountAuthorization,
};

/// The application's state: the accounts, and the authorizations in progress per customer
/// (in production: your server-side session store).
#[derive(Clone)]
pub(crate) struct App {
    pub(crate) accounts: MailUpAccounts,
    pending: Arc<Mutex<HashMap<String, PendingAccountAuthorization>>>,
}

impl App {
    pub(crate) fn new(accounts: MailUpAccounts) -> Self {
        Self {
            accounts,
            pending: Arc::default(),
        }
    }
}

/// The routes.
pub(crate) fn router(app: App) -> Router {
    Router::new()
        .route("/mailup/connect", get(connect))
        .route("/mailup/callback", get(callback))
        .route("/mailup/info", get(info))
        .route("/mailup/accounts", get(account_states))
        .with_state(app)
}

/// The accounts for a MailUp app registration, with the tokens in `store_dir`.
pub(crate) async fn accounts(
    client_id: &str,
    client_secret: &str,
    auth_base: Option<&str>,
    redirect_uri: &str,
    store_dir: &std::path::Path,
) -> mailup_auth::Result<MailUpAccounts> {
    let mut client = MailUpClient::builder(client_id, ClientSecret::new(client_secret))
        .redirect_uri(redirect_uri)
        .store_path(store_dir);
    if let Some(base) = auth_base {
        client = client.auth_base(base);
    }
    MailUpAccounts::builder(client).build().await
}

/// The signed-in customer (a stand-in for your authentication), as a profile name.
fn customer(headers: &HeaderMap) -> Result<String, (StatusCode, &'static str)> {
    headers
        .get("x-user")
        .and_then(|v| v.to_str().ok())
        .filter(|user| !user.is_empty() && user.chars().all(|c| c.is_ascii_alphanumeric()))
        .map(|user| format!("customer-{user}"))
        .ok_or((StatusCode::UNAUTHORIZED, "sign in first"))
}

/// An error for the browser or API client: never a token (the library's errors hold none).
fn failure(error: &Error) -> Response {
    if error.is_reauthorization_required() {
        return (
            StatusCode::CONFLICT,
            Json(serde_json::json!({ "reconnect": true })),
        )
            .into_response();
    }
    let status = if error.is_transient() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::BAD_GATEWAY
    };
    (status, error.to_string()).into_response()
}

async fn connect(State(app): State<App>, headers: HeaderMap) -> Response {
    let profile = match customer(&headers) {
        Ok(profile) => profile,
        Err(refused) => return refused.into_response(),
    };
    match app.accounts.begin_authorization(&profile).await {
        Ok(start) => {
            app.pending.lock().unwrap().insert(profile, start.pending);
            (
                StatusCode::SEE_OTHER,
                [(header::LOCATION, start.url.to_string())],
            )
                .into_response()
        }
        Err(error) => failure(&error),
    }
}

async fn callback(
    State(app): State<App>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let profile = match customer(&headers) {
        Ok(profile) => profile,
        Err(refused) => return refused.into_response(),
    };
    // Single use: taken out of the session whatever happens next.
    let Some(pending) = app.pending.lock().unwrap().remove(&profile) else {
        return (StatusCode::BAD_REQUEST, "no MailUp connection in progress").into_response();
    };
    let query = query.unwrap_or_default();
    match app.accounts.complete_authorization(&pending, &query).await {
        Ok(_) => (StatusCode::OK, "MailUp connected").into_response(),
        Err(error) => failure(&error),
    }
}

async fn info(State(app): State<App>, headers: HeaderMap) -> Response {
    let profile = match customer(&headers) {
        Ok(profile) => profile,
        Err(refused) => return refused.into_response(),
    };
    let client = match app.accounts.client(&profile).await {
        Ok(client) => client,
        Err(error) => return failure(&error),
    };
    match client
        .get::<serde_json::Value>("Console/Authentication/Info")
        .await
    {
        Ok(info) => Json(info).into_response(),
        Err(error) => failure(&error),
    }
}

async fn account_states(State(app): State<App>) -> Response {
    match app.accounts.accounts().await {
        Ok(list) => Json(
            list.into_iter()
                .map(|summary| {
                    let state = match summary.state {
                        AccountState::Connected { .. } => "connected",
                        AccountState::NeedsReconnect { .. } => "needs_reconnect",
                        AccountState::NotConnected => "not_connected",
                        _ => "unknown",
                    };
                    (summary.profile, state)
                })
                .collect::<HashMap<_, _>>(),
        )
        .into_response(),
        Err(error) => failure(&error),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let var = |name: &str| std::env::var(name).ok();
    let client_id = var("MAILUP_CLIENT_ID").ok_or("set MAILUP_CLIENT_ID")?;
    let client_secret = var("MAILUP_CLIENT_SECRET").ok_or("set MAILUP_CLIENT_SECRET")?;
    let addr = var("APP_ADDR").unwrap_or_else(|| "127.0.0.1:3000".into());
    let store = var("APP_STORE_DIR").unwrap_or_else(|| "web-app-tokens".into());
    let redirect = format!("http://{addr}/mailup/callback");
    let accounts = accounts(
        &client_id,
        &client_secret,
        var("MAILUP_AUTH_BASE").as_deref(),
        &redirect,
        std::path::Path::new(&store),
    )
    .await?;
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{addr}");
    axum::serve(listener, router(App::new(accounts))).await?;
    Ok(())
}
