//! A slice of MailUp's Console API under `/API/v1.1/Rest/ConsoleService.svc`: bearer-token
//! checks with MailUp's error JSON, a per-token rate limit, `Authentication/Info`, the paginated
//! `User/Lists` and one write endpoint, `POST /Console/List`.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use crate::state::{bump, AppState};

/// MailUp's error body: `{"ErrorCode":"401","ErrorDescription":..,"ErrorName":..,"ErrorStack":null}`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct MailUpError {
    #[serde(skip)]
    status: StatusCode,
    error_code: String,
    error_description: String,
    error_name: &'static str,
    error_stack: Option<String>,
}

impl MailUpError {
    pub(crate) fn new(
        status: StatusCode,
        name: &'static str,
        description: impl Into<String>,
    ) -> Self {
        Self {
            status,
            error_code: status.as_u16().to_string(),
            error_description: description.into(),
            error_name: name,
            error_stack: None,
        }
    }

    fn unauthorized(description: &str) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            format!("Authorization error: {description}"),
        )
    }

    fn bad_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", description)
    }
}

impl IntoResponse for MailUpError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(&self)).into_response();
        match self.status {
            StatusCode::UNAUTHORIZED => {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"MailUp\""),
                );
            }
            StatusCode::TOO_MANY_REQUESTS => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

/// The authenticated caller of an API request. Extracting it counts the call, applies the API
/// latency, checks the bearer token and the rate limit.
#[derive(Debug, Clone)]
pub(crate) struct ApiCaller {
    username: String,
}

impl FromRequestParts<AppState> for ApiCaller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, shared: &AppState) -> Result<Self, Response> {
        bump(&shared.counters.api_calls);
        let latency = shared.lock().api_latency;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let result = authorize(parts, shared);
        if let Err(error) = &result {
            match error.status {
                StatusCode::UNAUTHORIZED => bump(&shared.counters.api_unauthorized),
                StatusCode::TOO_MANY_REQUESTS => bump(&shared.counters.rate_limited),
                _ => {}
            }
        }
        result.map_err(IntoResponse::into_response)
    }
}

fn authorize(parts: &Parts, shared: &AppState) -> Result<ApiCaller, MailUpError> {
    let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
        return Err(MailUpError::unauthorized("Access token is missing"));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty())
        .ok_or_else(|| MailUpError::unauthorized("Access token is missing"))?;
    let now = shared.now();
    let mut state = shared.lock();
    let Some(grant) = state.access_tokens.get(token) else {
        return Err(MailUpError::unauthorized("Access token is not valid"));
    };
    if now >= grant.expires_at {
        return Err(MailUpError::unauthorized("Access token is expired"));
    }
    let username = grant.username.clone();
    if let Some(limit) = state.rate_limit {
        let window = state
            .rate_windows
            .entry(token.to_owned())
            .or_insert((now, 0));
        let elapsed = now.duration_since(window.0).unwrap_or_default();
        if elapsed >= limit.window {
            *window = (now, 0);
        }
        if window.1 >= limit.requests {
            return Err(MailUpError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                format!(
                    "Too many requests: at most {} calls every {} s per access token",
                    limit.requests,
                    limit.window.as_secs_f64()
                ),
            ));
        }
        window.1 += 1;
    }
    Ok(ApiCaller { username })
}

/// `GET /Console/Authentication/Info`
pub(crate) async fn authentication_info(
    State(shared): State<AppState>,
    caller: ApiCaller,
) -> Response {
    match shared.users.get(&caller.username) {
        Some(user) => Json(user.account()).into_response(),
        None => MailUpError::unauthorized("Access token is not valid").into_response(),
    }
}

/// MailUp's paginated envelope.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct Page<T> {
    is_paginated: bool,
    items: Vec<T>,
    page_number: u64,
    page_size: u64,
    skipped: u64,
    total_elements_count: u64,
}

fn query_number(
    params: &HashMap<String, String>,
    name: &str,
    default: u64,
) -> Result<u64, MailUpError> {
    match params.get(name) {
        None => Ok(default),
        Some(value) => value.trim().parse().map_err(|_| {
            MailUpError::bad_request(format!("{name} must be a non-negative integer"))
        }),
    }
}

/// `GET /Console/User/Lists?pageNumber=0&pageSize=20`
pub(crate) async fn user_lists(
    State(shared): State<AppState>,
    caller: ApiCaller,
    RawQuery(query): RawQuery,
) -> Response {
    let params: HashMap<String, String> =
        form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
    let page_number = match query_number(&params, "pageNumber", 0) {
        Ok(n) => n,
        Err(e) => return e.into_response(),
    };
    let page_size = match query_number(&params, "pageSize", 20) {
        Ok(n) if (1..=1000).contains(&n) => n,
        Ok(_) => {
            return MailUpError::bad_request("pageSize must be between 1 and 1000").into_response()
        }
        Err(e) => return e.into_response(),
    };
    let state = shared.lock();
    let lists = state
        .lists
        .get(&caller.username)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let skipped = page_number.saturating_mul(page_size);
    let start = usize::try_from(skipped)
        .unwrap_or(usize::MAX)
        .min(lists.len());
    let end = start
        .saturating_add(usize::try_from(page_size).unwrap_or(usize::MAX))
        .min(lists.len());
    Json(Page {
        is_paginated: true,
        items: lists[start..end].to_vec(),
        page_number,
        page_size,
        skipped,
        total_elements_count: lists.len() as u64,
    })
    .into_response()
}

/// The body of `POST /Console/List`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NewList {
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    business: Option<bool>,
    #[serde(default)]
    customer: Option<bool>,
}

/// `POST /Console/List` with a JSON body `{"Name": "...", "Description": "...", ...}`:
/// creates a list for the caller and returns it as `User/Lists` shows it.
pub(crate) async fn create_list(
    State(shared): State<AppState>,
    caller: ApiCaller,
    body: Bytes,
) -> Response {
    let new: NewList = match serde_json::from_slice(&body) {
        Ok(new) => new,
        Err(error) => {
            return MailUpError::bad_request(format!("the body is not a valid list: {error}"))
                .into_response()
        }
    };
    let Some(name) = new
        .name
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
    else {
        return MailUpError::bad_request("Name is required").into_response();
    };
    let company = shared
        .users
        .get(&caller.username)
        .map(|u| u.account().company)
        .unwrap_or_default();
    let mut state = shared.lock();
    let mut list = state.new_list(
        &caller.username,
        &company,
        name,
        new.description.unwrap_or_default(),
    );
    list.business = new.business.unwrap_or(false);
    list.customer = new.customer.unwrap_or(true);
    state
        .lists
        .entry(caller.username.clone())
        .or_default()
        .push(list.clone());
    (StatusCode::OK, Json(list)).into_response()
}

/// Any other path under the API base: 404 in MailUp's shape, after the token check.
pub(crate) async fn not_found(_caller: ApiCaller) -> Response {
    MailUpError::new(
        StatusCode::NOT_FOUND,
        "NotFound",
        "The requested resource does not exist in the emulator",
    )
    .into_response()
}
