//! A stateful slice of MailUp's Console API under `/API/v1.1/Rest/ConsoleService.svc`: the
//! bearer-token check with MailUp's error JSON and the per-token rate limit (here), and the
//! routes by concern: [`lists`] (lists and groups), [`recipients`], [`messages`], with the
//! collection answers in [`paging`]. Every route reads and changes only the caller's account.

pub(crate) mod filter;
pub(crate) mod lists;
pub(crate) mod messages;
pub(crate) mod paging;
pub(crate) mod recipients;
pub(crate) mod statistics;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::console::ConsoleAccount;
use crate::listener::ConnectionHandle;
use crate::state::{bump, AppState, Fault, State as EmulatorState};

/// Turns an error answer that is not JSON (axum's plain-text rejections: an undecodable path
/// segment, a body over the size limit, a malformed JSON body) into MailUp's error shape with
/// the same status; everything else passes unchanged.
pub(crate) async fn in_mailup_shape(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let body = axum::body::to_bytes(response.into_body(), 4096)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body);
    let description = if text.trim().is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text.trim().chars().take(300).collect()
    };
    let name = match status {
        StatusCode::BAD_REQUEST => "BadRequest",
        StatusCode::NOT_FOUND => "NotFound",
        StatusCode::METHOD_NOT_ALLOWED => "MethodNotAllowed",
        StatusCode::PAYLOAD_TOO_LARGE => "RequestEntityTooLarge",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "UnsupportedMediaType",
        StatusCode::UNPROCESSABLE_ENTITY => "BadRequest",
        _ => "Error",
    };
    MailUpError::new(status, name, description).into_response()
}

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

    pub(crate) fn bad_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", description)
    }

    pub(crate) fn not_found(description: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NotFound", description)
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
    pub(crate) username: String,
}

impl ApiCaller {
    /// The caller's console account in the locked state.
    pub(crate) fn account<'a>(
        &self,
        state: &'a mut EmulatorState,
    ) -> Result<&'a mut ConsoleAccount, MailUpError> {
        state
            .accounts
            .get_mut(&self.username)
            .ok_or_else(|| MailUpError::unauthorized("Access token is not valid"))
    }
}

/// A numeric id from the path; anything else is MailUp's 400.
pub(crate) fn parse_id(what: &str, text: &str) -> Result<u64, MailUpError> {
    text.trim().parse().map_err(|_| {
        MailUpError::bad_request(format!("{what} must be a positive integer, not {text:?}"))
    })
}

/// A JSON request body; a malformed one is MailUp's 400.
pub(crate) fn parse_body<T: DeserializeOwned>(what: &str, body: &[u8]) -> Result<T, MailUpError> {
    serde_json::from_slice(body).map_err(|error| {
        MailUpError::bad_request(format!("the body is not a valid {what}: {error}"))
    })
}

/// A JSON answer with status 200.
pub(crate) fn ok_json<T: Serialize>(value: &T) -> Response {
    (StatusCode::OK, Json(value)).into_response()
}

/// An empty 200 answer, as MailUp's `DELETE` routes give.
pub(crate) fn ok_empty() -> Response {
    StatusCode::OK.into_response()
}

impl FromRequestParts<AppState> for ApiCaller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, shared: &AppState) -> Result<Self, Response> {
        bump(&shared.counters.api_calls);
        let (latency, fault) = {
            let mut state = shared.lock();
            (state.api_latency, state.take_api_fault())
        };
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        if let Some(fault) = fault.filter(|f| !f.processes_the_grant()) {
            bump(&shared.counters.api_faults);
            if fault == Fault::HeadersNeverCome {
                crate::faults::hang(shared).await;
            }
            let connection = parts
                .extensions
                .get::<axum::extract::ConnectInfo<ConnectionHandle>>()
                .map(|info| info.0.clone());
            if let Some(connection) = connection {
                return Err(crate::faults::fault_response(
                    fault,
                    crate::faults::Target::Api,
                    shared,
                    &connection,
                ));
            }
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

/// Any other path under the API base: 404 in MailUp's shape, after the token check.
pub(crate) async fn not_found(_caller: ApiCaller) -> Response {
    MailUpError::not_found("The requested resource does not exist in the emulator").into_response()
}

/// A known path with a method it does not serve: 405 in MailUp's shape, after the token check.
pub(crate) async fn method_not_allowed(_caller: ApiCaller) -> Response {
    MailUpError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        "The resource does not support this HTTP method",
    )
    .into_response()
}

/// The server's fallback: under `/API/` (other services, other versions) MailUp's 404 after
/// the token check, like the Console API's own unknown paths; elsewhere an empty 404.
pub(crate) async fn outside_routes(State(shared): State<AppState>, request: Request) -> Response {
    let path = request.uri().path();
    if path != "/API" && !path.starts_with("/API/") {
        return StatusCode::NOT_FOUND.into_response();
    }
    let (mut parts, _) = request.into_parts();
    match ApiCaller::from_request_parts(&mut parts, &shared).await {
        Ok(caller) => not_found(caller).await,
        Err(rejection) => rejection,
    }
}
