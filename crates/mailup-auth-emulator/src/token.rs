//! `/Authorization/OAuth/Token`: the `authorization_code`, `refresh_token` and `password`
//! grants, as a POST form body or as MailUp's sample-style GET query string, with client
//! credentials in the parameters or in HTTP Basic; injected faults and latency.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::Serialize;

use crate::faults::{self, Target};
use crate::listener::ConnectionHandle;
use crate::state::{bump, AppState, Fault, IssuedTokens};

/// An RFC 6749 section 5.2 error.
#[derive(Debug, Serialize)]
pub(crate) struct OAuthError {
    #[serde(skip)]
    status: StatusCode,
    error: &'static str,
    error_description: String,
}

impl OAuthError {
    fn new(error: &'static str, description: impl Into<String>) -> Self {
        let status = if error == "invalid_client" {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::BAD_REQUEST
        };
        Self {
            status,
            error,
            error_description: description.into(),
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(&self)).into_response();
        let headers = response.headers_mut();
        no_store(headers);
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"MailUp\""),
            );
        }
        response
    }
}

fn no_store(headers: &mut HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

/// The token endpoint handler (GET and POST).
pub(crate) async fn token(
    State(shared): State<AppState>,
    ConnectInfo(connection): ConnectInfo<ConnectionHandle>,
    method: Method,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    bump(&shared.counters.token_requests);
    let (latency, fault) = {
        let mut state = shared.lock();
        (state.token_latency, state.take_fault())
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let mangle = match fault {
        Some(fault) if fault.processes_the_grant() => {
            bump(&shared.counters.token_faults);
            Some(fault)
        }
        Some(fault) => {
            bump(&shared.counters.token_faults);
            if fault == Fault::HeadersNeverCome {
                faults::hang(&shared).await;
            }
            return faults::fault_response(fault, Target::Token, &shared, &connection);
        }
        None => None,
    };
    match handle(&shared, &method, query.as_deref(), &headers, &body) {
        Ok(tokens) => {
            bump(&shared.counters.access_tokens_issued);
            match mangle {
                Some(fault) => {
                    if fault == Fault::MissingRefreshToken {
                        keep_the_old_refresh_token(
                            &shared,
                            &tokens,
                            &method,
                            query.as_deref(),
                            &body,
                        );
                    }
                    let value = serde_json::to_value(&tokens).unwrap_or_default();
                    faults::mangled_token_answer(fault, &value)
                }
                None => {
                    let mut response = axum::Json(tokens).into_response();
                    no_store(response.headers_mut());
                    response
                }
            }
        }
        Err(error) => {
            bump(&shared.counters.token_errors);
            tracing::debug!(error = error.error, description = %error.error_description, "token request refused");
            error.into_response()
        }
    }
}

/// For [`Fault::MissingRefreshToken`]: the answer carries no refresh token, so the one just
/// issued is withdrawn, and a refresh keeps the refresh token it was sent with alive (a
/// server that does not rotate).
fn keep_the_old_refresh_token(
    shared: &AppState,
    tokens: &IssuedTokens,
    method: &Method,
    query: Option<&str>,
    body: &[u8],
) {
    let old = parameters(method, query, body)
        .ok()
        .filter(|params| params.get("grant_type").map(String::as_str) == Some("refresh_token"))
        .and_then(|params| params.get("refresh_token").cloned());
    let mut state = shared.lock();
    let Some(grant) = state.refresh_tokens.remove(&tokens.refresh_token) else {
        return;
    };
    state
        .issued_refresh_tokens
        .retain(|issued| *issued != tokens.refresh_token);
    if let Some(old) = old {
        state.refresh_tokens.insert(old, grant);
    }
}

/// Parameters from the query string and the form body; a body value wins over a query value.
fn parameters(
    method: &Method,
    query: Option<&str>,
    body: &[u8],
) -> Result<HashMap<String, String>, OAuthError> {
    let mut params = HashMap::new();
    let mut add = |source: &[u8], from_body: bool| -> Result<(), OAuthError> {
        let mut seen = std::collections::HashSet::new();
        for (key, value) in form_urlencoded::parse(source) {
            if !seen.insert(key.clone()) {
                return Err(OAuthError::new(
                    "invalid_request",
                    format!("parameter {key} is repeated"),
                ));
            }
            if from_body || !params.contains_key(key.as_ref()) {
                params.insert(key.into_owned(), value.into_owned());
            }
        }
        Ok(())
    };
    if let Some(query) = query {
        add(query.as_bytes(), false)?;
    }
    if method == Method::POST && !body.is_empty() {
        if std::str::from_utf8(body).is_err() {
            return Err(OAuthError::new(
                "invalid_request",
                "the body is not an application/x-www-form-urlencoded form",
            ));
        }
        add(body, true)?;
    }
    Ok(params)
}

/// HTTP Basic client credentials, if the header is there.
fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, String)>, OAuthError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let bad = || OAuthError::new("invalid_client", "malformed Basic authorization header");
    let value = value.to_str().map_err(|_| bad())?;
    let Some((scheme, encoded)) = value.trim().split_once(' ') else {
        return Err(bad());
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(bad());
    }
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| bad())?;
    let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(bad)?;
    Ok(Some((id.to_owned(), secret.to_owned())))
}

/// RFC 6749 section 2.3.1 says Basic credentials are form-urlencoded first; MailUp's samples
/// send them raw. Try raw, then decoded.
fn form_decode(text: &str) -> String {
    form_urlencoded::parse(format!("v={}", text.replace('&', "%26").replace('=', "%3D")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn authenticate_client(
    shared: &AppState,
    params: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<String, OAuthError> {
    let basic = basic_credentials(headers)?;
    let body_id = params.get("client_id");
    let body_secret = params.get("client_secret");
    let (id, secret) =
        match (basic, body_id) {
            (Some((id, secret)), body_id) => {
                let candidates = [
                    (id.clone(), secret.clone()),
                    (form_decode(&id), form_decode(&secret)),
                ];
                let Some((id, secret)) = candidates
                    .into_iter()
                    .find(|(id, secret)| shared.check_client(id, secret))
                else {
                    return Err(OAuthError::new(
                        "invalid_client",
                        "client authentication failed",
                    ));
                };
                if body_id.is_some_and(|b| *b != id) {
                    return Err(OAuthError::new(
                        "invalid_request",
                        "client_id in the body differs from the Basic credentials",
                    ));
                }
                (id, secret)
            }
            (None, Some(id)) => match body_secret {
                Some(secret) => (id.clone(), secret.clone()),
                None => {
                    return Err(OAuthError::new(
                        "invalid_client",
                        "client_secret is missing",
                    ))
                }
            },
            (None, None) => return Err(OAuthError::new(
                "invalid_client",
                "client authentication is required (client_id and client_secret, or HTTP Basic)",
            )),
        };
    if shared.check_client(&id, &secret) {
        Ok(id)
    } else {
        Err(OAuthError::new(
            "invalid_client",
            "client authentication failed",
        ))
    }
}

fn required<'a>(params: &'a HashMap<String, String>, name: &str) -> Result<&'a str, OAuthError> {
    match params.get(name) {
        Some(value) if !value.is_empty() => Ok(value),
        _ => Err(OAuthError::new(
            "invalid_request",
            format!("the {name} parameter is missing"),
        )),
    }
}

fn handle(
    shared: &AppState,
    method: &Method,
    query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<IssuedTokens, OAuthError> {
    let params = parameters(method, query, body)?;
    let grant_type = required(&params, "grant_type")?;
    match grant_type {
        "authorization_code" => bump(&shared.counters.token_authorization_code),
        "refresh_token" => bump(&shared.counters.token_refresh_token),
        "password" => bump(&shared.counters.token_password),
        other => {
            return Err(OAuthError::new(
                "unsupported_grant_type",
                format!("grant_type {other} is not supported"),
            ))
        }
    }
    let client_id = authenticate_client(shared, &params, headers)?;
    let now = shared.now();
    let lifetime = shared.access_token_lifetime;
    match grant_type {
        "authorization_code" => {
            let code = required(&params, "code")?;
            let mut state = shared.lock();
            // Single use: the code is gone whatever happens next.
            let Some(grant) = state.codes.remove(code) else {
                return Err(OAuthError::new(
                    "invalid_grant",
                    "the authorization code is unknown or was already used",
                ));
            };
            if now >= grant.expires_at {
                return Err(OAuthError::new(
                    "invalid_grant",
                    "the authorization code has expired",
                ));
            }
            if grant.client_id != client_id {
                return Err(OAuthError::new(
                    "invalid_grant",
                    "the authorization code was issued to another client",
                ));
            }
            if params
                .get("redirect_uri")
                .is_some_and(|uri| *uri != grant.redirect_uri)
            {
                return Err(OAuthError::new(
                    "invalid_grant",
                    "redirect_uri does not match the one of the authorization request",
                ));
            }
            Ok(state.issue_tokens(&client_id, &grant.username, now, lifetime))
        }
        "refresh_token" => {
            let token = required(&params, "refresh_token")?;
            let mut state = shared.lock();
            let Some(grant) = state.refresh_tokens.get(token) else {
                return Err(OAuthError::new(
                    "invalid_grant",
                    "the refresh token is unknown, revoked or was already used",
                ));
            };
            if grant.client_id != client_id {
                return Err(OAuthError::new(
                    "invalid_grant",
                    "the refresh token was issued to another client",
                ));
            }
            let username = grant.username.clone();
            // Rotation: the old refresh token dies at once.
            state.refresh_tokens.remove(token);
            Ok(state.issue_tokens(&client_id, &username, now, lifetime))
        }
        _ => {
            let username = required(&params, "username")?;
            let password = params.get("password").map(String::as_str).unwrap_or("");
            if !shared.check_password(username, password) {
                return Err(OAuthError::new(
                    "invalid_grant",
                    "wrong username or password",
                ));
            }
            Ok(shared
                .lock()
                .issue_tokens(&client_id, username, now, lifetime))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_decode_handles_encoded_and_raw() {
        assert_eq!(form_decode("a%3Ab+c"), "a:b c");
        assert_eq!(form_decode("x&y=z"), "x&y=z");
    }

    #[test]
    fn repeated_parameters_are_refused() {
        let err = parameters(&Method::POST, None, b"a=1&a=2").unwrap_err();
        assert_eq!(err.error, "invalid_request");
        let params = parameters(&Method::POST, Some("a=1&b=2"), b"a=3").unwrap();
        assert_eq!(params["a"], "3");
        assert_eq!(params["b"], "2");
        let params = parameters(&Method::GET, Some("a=1"), b"a=3").unwrap();
        assert_eq!(params["a"], "1");
    }
}
