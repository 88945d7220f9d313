//! The admin HTTP API under `/_emulator`, served only when enabled. It exposes the same
//! controls as the library methods of [`Emulator`](crate::Emulator), for tests written in other
//! languages or run against the binary.
//!
//! | method and path | body | effect |
//! |---|---|---|
//! | `GET /_emulator/counters` | | the [`Counters`](crate::Counters) as JSON |
//! | `POST /_emulator/counters/reset` | | zero the counters |
//! | `POST /_emulator/access-tokens/expire` | | expire every access token now |
//! | `POST /_emulator/refresh-tokens/revoke` | `{"refresh_token":"..."}` | revoke one; `{"revoked":bool}` |
//! | `POST /_emulator/refresh-tokens/revoke-all` | | revoke all |
//! | `GET /_emulator/refresh-tokens` | | `{"issued":[..],"live":[..]}` |
//! | `POST /_emulator/faults` | `{"fault":"status503","count":2,"target":"token"}` | fail the next token requests (`"target":"api"`: the next API requests; default `token`) |
//! | `GET /_emulator/faults` | | `{"faults":[..]}`: every fault name of the catalogue |
//! | `DELETE /_emulator/faults` | | clear pending faults (both targets) |
//! | `POST /_emulator/latency` | `{"token_ms":100,"api_ms":0}` | add latency (either key optional) |
//! | `POST /_emulator/clock/advance` | `{"seconds":3600}` | move the emulator's time forward |
//! | `POST /_emulator/rate-limit` | `{"requests":5,"window_secs":1}` or `null` | set or clear it |
//! | `GET /_emulator/sent-emails` | | `{"sent":[{"username","send_id","message_id","list_id","subject","email","recipient_id"}]}` |
//!
//! Fault names are the `snake_case` forms of [`Fault`](crate::Fault)'s variants: `status500`,
//! `status503`, `html_error_page`, `malformed_body`, `drop_connection`, `not_found_html`,
//! `invalid_request`, `html200`, `truncated_json`, `redirect302`, `redirect307`,
//! `expires_in_negative`, `expires_in_huge`, `expires_in_float`, `expires_in_string`,
//! `expires_in_garbage`, `expires_in_zero`, `missing_access_token`, `non_string_token`,
//! `non_utf8_body`, `token_with_cr_lf`, `missing_refresh_token`, `error_with200`, `empty401`,
//! `html403`, `too_many_requests_seconds`, `too_many_requests_date`,
//! `too_many_requests_garbage`, `too_many_requests_huge`, `body_dropped_midway`,
//! `garbage_status_line`, `huge_header`, `slow_body`, `headers_never_come`, `chunked_gigabyte`.
//! Errors are `400 {"error":"..."}`.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;

use crate::config::RateLimit;
use crate::controls;
use crate::state::{AppState, Fault};

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/counters", get(counters))
        .route("/counters/reset", post(reset_counters))
        .route("/access-tokens/expire", post(expire_access_tokens))
        .route("/refresh-tokens", get(refresh_tokens))
        .route("/refresh-tokens/revoke", post(revoke_refresh_token))
        .route(
            "/refresh-tokens/revoke-all",
            post(revoke_all_refresh_tokens),
        )
        .route(
            "/faults",
            get(list_faults).post(add_faults).delete(clear_faults),
        )
        .route("/latency", post(set_latency))
        .route("/clock/advance", post(advance_clock))
        .route("/rate-limit", post(set_rate_limit))
        .route("/sent-emails", get(sent_emails))
}

async fn sent_emails(State(shared): State<AppState>) -> Response {
    Json(json!({ "sent": controls::sent_emails(&shared) })).into_response()
}

fn bad(message: impl Into<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({ "error": message.into() })),
    )
        .into_response()
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))
}

fn ok() -> Response {
    Json(json!({ "ok": true })).into_response()
}

async fn counters(State(shared): State<AppState>) -> Response {
    Json(shared.counters.snapshot()).into_response()
}

async fn reset_counters(State(shared): State<AppState>) -> Response {
    shared.counters.reset();
    ok()
}

async fn expire_access_tokens(State(shared): State<AppState>) -> Response {
    controls::expire_all_access_tokens(&shared);
    ok()
}

async fn refresh_tokens(State(shared): State<AppState>) -> Response {
    let state = shared.lock();
    let live: Vec<&String> = state
        .issued_refresh_tokens
        .iter()
        .filter(|t| state.refresh_tokens.contains_key(*t))
        .collect();
    Json(json!({ "issued": state.issued_refresh_tokens, "live": live })).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    refresh_token: String,
}

async fn revoke_refresh_token(State(shared): State<AppState>, body: Bytes) -> Response {
    match parse::<RevokeBody>(&body) {
        Ok(body) => {
            let revoked = shared
                .lock()
                .refresh_tokens
                .remove(&body.refresh_token)
                .is_some();
            Json(json!({ "revoked": revoked })).into_response()
        }
        Err(message) => bad(message),
    }
}

async fn revoke_all_refresh_tokens(State(shared): State<AppState>) -> Response {
    shared.lock().refresh_tokens.clear();
    ok()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultBody {
    fault: Fault,
    #[serde(default = "one")]
    count: u32,
    #[serde(default)]
    target: FaultTarget,
}

/// Which requests a fault posted to the admin API applies to.
#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum FaultTarget {
    #[default]
    Token,
    Api,
}

async fn list_faults() -> Response {
    let names: Vec<String> = Fault::ALL.iter().map(|f| f.name()).collect();
    Json(json!({ "faults": names })).into_response()
}

fn one() -> u32 {
    1
}

async fn add_faults(State(shared): State<AppState>, body: Bytes) -> Response {
    match parse::<FaultBody>(&body) {
        Ok(body) => {
            match body.target {
                FaultTarget::Token => {
                    controls::fail_next_token_requests(&shared, body.count, body.fault)
                }
                FaultTarget::Api => {
                    controls::fail_next_api_requests(&shared, body.count, body.fault)
                }
            }
            ok()
        }
        Err(message) => bad(message),
    }
}

async fn clear_faults(State(shared): State<AppState>) -> Response {
    let mut state = shared.lock();
    state.faults.clear();
    state.api_faults.clear();
    drop(state);
    ok()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LatencyBody {
    token_ms: Option<u64>,
    api_ms: Option<u64>,
}

async fn set_latency(State(shared): State<AppState>, body: Bytes) -> Response {
    match parse::<LatencyBody>(&body) {
        Ok(body) => {
            let mut state = shared.lock();
            if let Some(ms) = body.token_ms {
                state.token_latency = Duration::from_millis(ms);
            }
            if let Some(ms) = body.api_ms {
                state.api_latency = Duration::from_millis(ms);
            }
            ok()
        }
        Err(message) => bad(message),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdvanceBody {
    seconds: u64,
}

async fn advance_clock(State(shared): State<AppState>, body: Bytes) -> Response {
    match parse::<AdvanceBody>(&body) {
        Ok(body) => {
            shared.advance_clock(Duration::from_secs(body.seconds));
            ok()
        }
        Err(message) => bad(message),
    }
}

async fn set_rate_limit(State(shared): State<AppState>, body: Bytes) -> Response {
    match parse::<Option<RateLimit>>(&body) {
        Ok(Some(limit)) if limit.requests == 0 || limit.window.is_zero() => {
            bad("requests and window_secs must be positive")
        }
        Ok(limit) => {
            controls::set_rate_limit(&shared, limit);
            ok()
        }
        Err(message) => bad(message),
    }
}
