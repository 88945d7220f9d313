//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use mailup_auth_emulator::{
    Emulator, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_PASSWORD, DEFAULT_USERNAME,
};
use serde_json::Value;

pub const REDIRECT: &str = "http://127.0.0.1:9/callback";

/// A client that never follows redirects, with a timeout so no test hangs.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// The value of `<input ... name="NAME" value="...">` in a page.
pub fn hidden_field(page: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = page
        .find(&marker)
        .unwrap_or_else(|| panic!("no field {name} in {page}"))
        + marker.len();
    let end = page[start..].find('"').unwrap() + start;
    page[start..end].to_owned()
}

/// Runs the LogOn dance with plain HTTP and returns the final `Location`.
pub async fn login_and_consent(emu: &Emulator, decision: &str, state: &str) -> url::Url {
    let http = http();
    let logon = emu.authorize_url(DEFAULT_CLIENT_ID, REDIRECT, state);
    let page = http.get(logon).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    let response = http
        .post(emu.logon_url())
        .form(&[
            ("auth_request", hidden_field(&page, "auth_request")),
            ("csrf_token", hidden_field(&page, "csrf_token")),
            ("username", DEFAULT_USERNAME.to_owned()),
            ("password", DEFAULT_PASSWORD.to_owned()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    let consent_url = emu
        .base_url()
        .join(response.headers()["location"].to_str().unwrap())
        .unwrap();
    let consent = http.get(consent_url).send().await.unwrap();
    assert_eq!(consent.status(), 200);
    let consent = consent.text().await.unwrap();
    assert!(consent.contains("Allow") && consent.contains("Deny"));
    let response = http
        .post(
            emu.base_url()
                .join(mailup_auth_emulator::CONSENT_PATH)
                .unwrap(),
        )
        .form(&[
            ("auth_request", hidden_field(&consent, "auth_request")),
            ("csrf_token", hidden_field(&consent, "csrf_token")),
            ("decision", decision.to_owned()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 302);
    url::Url::parse(response.headers()["location"].to_str().unwrap()).unwrap()
}

pub fn query_param(url: &url::Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// A code from a full LogOn dance.
pub async fn code(emu: &Emulator) -> String {
    let location = login_and_consent(emu, "allow", "s").await;
    query_param(&location, "code").unwrap()
}

/// POSTs a token request with the demo client credentials in the body.
pub async fn token_post(emu: &Emulator, params: &[(&str, &str)]) -> (u16, Value) {
    let mut form: Vec<(&str, &str)> = params.to_vec();
    form.push(("client_id", DEFAULT_CLIENT_ID));
    form.push(("client_secret", DEFAULT_CLIENT_SECRET));
    let response = http()
        .post(emu.token_url())
        .form(&form)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// Tokens from the password grant.
pub async fn password_tokens(emu: &Emulator) -> (String, String) {
    let (status, body) = token_post(
        emu,
        &[
            ("grant_type", "password"),
            ("username", DEFAULT_USERNAME),
            ("password", DEFAULT_PASSWORD),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    (
        body["access_token"].as_str().unwrap().to_owned(),
        body["refresh_token"].as_str().unwrap().to_owned(),
    )
}

/// GETs an API path (relative to the Console base) with a bearer token.
pub async fn api_get(emu: &Emulator, path: &str, token: Option<&str>) -> (u16, Value) {
    let url = format!("{}{}", emu.console_api_base(), path);
    let mut request = http().get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// Calls an API path (relative to the Console base) with any method and an optional JSON body;
/// an empty answer reads as `Value::Null`.
pub async fn api_call(
    emu: &Emulator,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let url = format!("{}{}", emu.console_api_base(), path);
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = http().request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let value = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
    };
    (status, value)
}

/// Tokens from the password grant for any user of the demo client.
pub async fn user_tokens(emu: &Emulator, username: &str, password: &str) -> String {
    let (status, body) = token_post(
        emu,
        &[
            ("grant_type", "password"),
            ("username", username),
            ("password", password),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}
