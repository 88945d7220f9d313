//! `/Authorization/OAuth/LogOn` and the consent step: the login form, the Allow / Deny form and
//! the redirect back to the application with a code or an error.
//!
//! An unknown client or an unacceptable `redirect_uri` gets a 400 page, never a redirect, so the
//! emulator cannot be used as an open redirector. Every form carries the pending request's id
//! and a CSRF token of the emulator's own that changes at each step.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};

use crate::html;
use crate::state::{
    bump, random_token, AppState, CodeGrant, PendingAuthorization, PendingStage, PENDING_LIFETIME,
};
use crate::{CONSENT_PATH, LOGON_PATH};

fn html_response(status: StatusCode, body: String) -> Response {
    let mut response = (status, Html(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    response
}

fn bad_request(title: &str, message: &str) -> Response {
    html_response(StatusCode::BAD_REQUEST, html::error_page(title, message))
}

/// A 302 to `redirect_uri` with `params` appended to its query.
fn redirect_back(redirect_uri: &str, params: &[(&str, &str)]) -> Response {
    let Ok(mut url) = url::Url::parse(redirect_uri) else {
        return bad_request(
            "Invalid redirect_uri",
            "The redirect_uri is not a valid URL.",
        );
    };
    {
        let mut query = url.query_pairs_mut();
        for (k, v) in params {
            query.append_pair(k, v);
        }
    }
    let Ok(location) = HeaderValue::from_str(url.as_str()) else {
        return bad_request("Invalid redirect_uri", "The redirect_uri cannot be used.");
    };
    let mut response = StatusCode::FOUND.into_response();
    response.headers_mut().insert(header::LOCATION, location);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Parses a query string or form body; `None` if a parameter is repeated.
fn parse_form(bytes: &[u8]) -> Option<HashMap<String, String>> {
    let mut map = HashMap::new();
    for (k, v) in form_urlencoded::parse(bytes) {
        if map.insert(k.into_owned(), v.into_owned()).is_some() {
            return None;
        }
    }
    Some(map)
}

/// `GET /Authorization/OAuth/LogOn?client_id=..&response_type=code&redirect_uri=..&state=..`
pub(crate) async fn logon_page(
    State(shared): State<AppState>,
    RawQuery(query): RawQuery,
) -> Response {
    let Some(params) = parse_form(query.unwrap_or_default().as_bytes()) else {
        return bad_request("Invalid request", "A parameter is repeated.");
    };
    let Some(client_id) = params.get("client_id").filter(|s| !s.is_empty()) else {
        return bad_request("Invalid request", "The client_id parameter is missing.");
    };
    let Some(client) = shared.clients.get(client_id) else {
        return bad_request(
            "Unknown application",
            "No application is registered with this client_id.",
        );
    };
    let Some(redirect_uri) = params.get("redirect_uri").filter(|s| !s.is_empty()) else {
        return bad_request("Invalid request", "The redirect_uri parameter is missing.");
    };
    if !client.allows_redirect_uri(redirect_uri) {
        return bad_request(
            "Invalid redirect_uri",
            "The redirect_uri must be an absolute http(s) URL registered for this application.",
        );
    }
    let state = params.get("state").cloned();
    let mut back = Vec::new();
    match params.get("response_type").map(String::as_str) {
        Some("code") => {}
        Some(_) => back.push(("error", "unsupported_response_type")),
        None => back.push(("error", "invalid_request")),
    }
    if !back.is_empty() {
        back.push(("error_description", "response_type must be code"));
        if let Some(state) = &state {
            back.push(("state", state));
        }
        return redirect_back(redirect_uri, &back);
    }
    let id = random_token(24);
    let csrf = random_token(24);
    let now = shared.now();
    let mut guard = shared.lock();
    // Abandoned LogOn pages must not pile up in a long-running emulator.
    if guard.pending.len() >= 10_000 {
        guard
            .pending
            .retain(|_, p| p.created + PENDING_LIFETIME > now);
    }
    guard.pending.insert(
        id.clone(),
        PendingAuthorization {
            client_id: client_id.clone(),
            redirect_uri: redirect_uri.clone(),
            state,
            csrf: csrf.clone(),
            created: now,
            stage: PendingStage::Login,
        },
    );
    drop(guard);
    bump(&shared.counters.logon_pages);
    html_response(
        StatusCode::OK,
        html::login_page(client.display_name(), LOGON_PATH, &id, &csrf, "", None),
    )
}

fn invalid_form() -> Response {
    bad_request(
        "Invalid form",
        "This form is invalid or has expired (CSRF check failed). Start the authorization again.",
    )
}

/// Finds the pending request a form post belongs to and checks its CSRF token and age.
fn find_pending(
    shared: &AppState,
    form: &HashMap<String, String>,
) -> Result<(String, PendingAuthorization), ()> {
    let id = form.get("auth_request").ok_or(())?;
    let csrf = form.get("csrf_token").ok_or(())?;
    let now = shared.now();
    let mut state = shared.lock();
    let pending = state.pending.get(id).ok_or(())?;
    if pending.created + PENDING_LIFETIME <= now {
        state.pending.remove(id);
        return Err(());
    }
    if pending.csrf != *csrf {
        return Err(());
    }
    Ok((id.clone(), pending.clone()))
}

/// `POST /Authorization/OAuth/LogOn`: the login form.
pub(crate) async fn logon_submit(State(shared): State<AppState>, body: Bytes) -> Response {
    let Some(form) = parse_form(&body) else {
        return bad_request("Invalid form", "A form field is repeated.");
    };
    let Ok((id, pending)) = find_pending(&shared, &form) else {
        return invalid_form();
    };
    if !matches!(pending.stage, PendingStage::Login) {
        return bad_request("Invalid form", "This login form was already used.");
    }
    let app_name = shared
        .clients
        .get(&pending.client_id)
        .map(|c| c.display_name().to_owned())
        .unwrap_or_default();
    let username = form.get("username").map(String::as_str).unwrap_or("");
    let password = form.get("password").map(String::as_str).unwrap_or("");
    let csrf = random_token(24);
    if !shared.check_password(username, password) {
        bump(&shared.counters.logon_failures);
        if let Some(p) = shared.lock().pending.get_mut(&id) {
            p.csrf = csrf.clone();
        }
        return html_response(
            StatusCode::OK,
            html::login_page(
                &app_name,
                LOGON_PATH,
                &id,
                &csrf,
                username,
                Some("Wrong username or password. Please try again."),
            ),
        );
    }
    if let Some(p) = shared.lock().pending.get_mut(&id) {
        p.csrf = csrf;
        p.stage = PendingStage::Consent {
            username: username.to_owned(),
        };
    }
    let location = format!("{CONSENT_PATH}?auth_request={id}");
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// `GET /Authorization/OAuth/Consent?auth_request=..`: the Allow / Deny page.
pub(crate) async fn consent_page(
    State(shared): State<AppState>,
    RawQuery(query): RawQuery,
) -> Response {
    let invalid = || {
        bad_request(
            "Invalid request",
            "This consent request is invalid or has expired. Start the authorization again.",
        )
    };
    let Some(params) = parse_form(query.unwrap_or_default().as_bytes()) else {
        return invalid();
    };
    let Some(id) = params.get("auth_request") else {
        return invalid();
    };
    let now = shared.now();
    let pending = {
        let state = shared.lock();
        match state.pending.get(id) {
            Some(p) if p.created + PENDING_LIFETIME > now => p.clone(),
            _ => return invalid(),
        }
    };
    let PendingStage::Consent { username } = &pending.stage else {
        return invalid();
    };
    let app_name = shared
        .clients
        .get(&pending.client_id)
        .map(|c| c.display_name().to_owned())
        .unwrap_or_default();
    let account_name = shared
        .users
        .get(username)
        .map(|u| u.account().account_name)
        .unwrap_or_default();
    html_response(
        StatusCode::OK,
        html::consent_page(
            &app_name,
            &account_name,
            username,
            CONSENT_PATH,
            id,
            &pending.csrf,
        ),
    )
}

/// `POST /Authorization/OAuth/Consent`: Allow issues a code, Deny sends `access_denied`.
pub(crate) async fn consent_submit(State(shared): State<AppState>, body: Bytes) -> Response {
    let Some(form) = parse_form(&body) else {
        return bad_request("Invalid form", "A form field is repeated.");
    };
    let Ok((id, pending)) = find_pending(&shared, &form) else {
        return invalid_form();
    };
    let PendingStage::Consent { username } = pending.stage else {
        return bad_request("Invalid form", "Log in before answering the consent form.");
    };
    let allow = match form.get("decision").map(String::as_str) {
        Some("allow") => true,
        Some("deny") => false,
        _ => return bad_request("Invalid form", "Choose Allow or Deny."),
    };
    let now = shared.now();
    let mut back: Vec<(&str, &str)> = Vec::new();
    let code;
    {
        let mut state = shared.lock();
        // A concurrent post of the same form may have won: only one answer counts.
        if state.pending.remove(&id).is_none() {
            return bad_request("Invalid form", "This consent form was already answered.");
        }
        if allow {
            code = random_token(32);
            state.codes.insert(
                code.clone(),
                CodeGrant {
                    client_id: pending.client_id.clone(),
                    redirect_uri: pending.redirect_uri.clone(),
                    username,
                    expires_at: now + shared.code_lifetime,
                },
            );
        } else {
            code = String::new();
        }
    }
    if allow {
        bump(&shared.counters.codes_issued);
        back.push(("code", &code));
    } else {
        bump(&shared.counters.consents_denied);
        back.push(("error", "access_denied"));
        back.push(("error_description", "The user denied access."));
    }
    if let Some(state) = &pending.state {
        back.push(("state", state));
    }
    redirect_back(&pending.redirect_uri, &back)
}
