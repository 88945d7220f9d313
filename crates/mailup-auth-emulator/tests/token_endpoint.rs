//! The token endpoint: the three grants, client authentication variants, MailUp's GET style,
//! code single use and expiry, refresh rotation, and the RFC 6749 errors.

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use common::*;
use mailup_auth_emulator::{
    Emulator, ManualClock, RegisteredClient, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET,
    DEFAULT_PASSWORD, DEFAULT_USERNAME,
};
use serde_json::Value;

fn basic(id: &str, secret: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    )
}

#[tokio::test]
async fn code_grant_returns_mailup_shaped_tokens() {
    let emu = Emulator::builder().start().await.unwrap();
    let code = code(&emu).await;
    let response = http()
        .post(emu.token_url())
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", DEFAULT_CLIENT_ID),
            ("client_secret", DEFAULT_CLIENT_SECRET),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.unwrap();
    let object = body.as_object().unwrap();
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["access_token", "expires_in", "refresh_token"]);
    assert_eq!(body["expires_in"], 3600);
    let access = body["access_token"].as_str().unwrap();
    assert!(access.len() >= 60);
    assert!(access
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    assert!(emu.is_access_token_live(access));
    let counters = emu.counters();
    assert_eq!(counters.token_authorization_code, 1);
    assert_eq!(counters.access_tokens_issued, 1);
    assert_eq!(counters.token_errors, 0);
}

#[tokio::test]
async fn codes_are_single_use() {
    let emu = Emulator::builder().start().await.unwrap();
    let code = code(&emu).await;
    let params = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
    ];
    assert_eq!(token_post(&emu, &params).await.0, 200);
    let (status, body) = token_post(&emu, &params).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_grant");
    assert!(body["error_description"].is_string());
    assert_eq!(emu.counters().token_errors, 1);
}

#[tokio::test]
async fn codes_expire_on_the_injected_clock() {
    let clock = Arc::new(ManualClock::default());
    let emu = Emulator::builder()
        .clock(clock.clone())
        .code_lifetime(Duration::from_secs(30))
        .start()
        .await
        .unwrap();
    let fresh = code(&emu).await;
    let stale = code(&emu).await;
    clock.advance(Duration::from_secs(29));
    let (status, _) = token_post(
        &emu,
        &[("grant_type", "authorization_code"), ("code", &fresh)],
    )
    .await;
    assert_eq!(status, 200);
    clock.advance(Duration::from_secs(1));
    let (status, body) = token_post(
        &emu,
        &[("grant_type", "authorization_code"), ("code", &stale)],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_grant");
    assert!(body["error_description"]
        .as_str()
        .unwrap()
        .contains("expired"));
}

#[tokio::test]
async fn code_grant_checks_redirect_uri_and_client() {
    let emu = Emulator::builder()
        .client(RegisteredClient::new("other", "other-secret"))
        .start()
        .await
        .unwrap();
    let code1 = code(&emu).await;
    let (status, body) = token_post(
        &emu,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code1),
            ("redirect_uri", "http://127.0.0.1:9/elsewhere"),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    // A code issued to the demo client cannot be redeemed by another client.
    let code2 = code(&emu).await;
    let response = http()
        .post(emu.token_url())
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code2),
            ("client_id", "other"),
            ("client_secret", "other-secret"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_grant");
}

#[tokio::test]
async fn mailup_sample_style_get_with_query_string() {
    let emu = Emulator::builder().start().await.unwrap();
    let code = code(&emu).await;
    let mut url = emu.token_url();
    url.query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("grant_type", "authorization_code")
        .append_pair("client_id", DEFAULT_CLIENT_ID)
        .append_pair("client_secret", DEFAULT_CLIENT_SECRET);
    let response = http().get(url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert!(body["access_token"].is_string());
    // The GET password grant with HTTP Basic, as the 2-legged samples do.
    let mut url = emu.token_url();
    url.query_pairs_mut()
        .append_pair("grant_type", "password")
        .append_pair("username", DEFAULT_USERNAME)
        .append_pair("password", DEFAULT_PASSWORD);
    let response = http()
        .get(url)
        .header(
            "authorization",
            basic(DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn password_grant_with_basic_and_body_credentials() {
    let emu = Emulator::builder().start().await.unwrap();
    let response = http()
        .post(emu.token_url())
        .header(
            "authorization",
            basic(DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET),
        )
        .form(&[
            ("grant_type", "password"),
            ("username", DEFAULT_USERNAME),
            ("password", DEFAULT_PASSWORD),
            ("client_id", DEFAULT_CLIENT_ID),
            ("client_secret", DEFAULT_CLIENT_SECRET),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (status, body) = token_post(
        &emu,
        &[
            ("grant_type", "password"),
            ("username", DEFAULT_USERNAME),
            ("password", "wrong"),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    assert_eq!(emu.counters().token_password, 2);
}

#[tokio::test]
async fn refresh_rotates_and_kills_the_old_token() {
    let emu = Emulator::builder().start().await.unwrap();
    let (_, first) = password_tokens(&emu).await;
    assert!(emu.is_refresh_token_live(&first));
    let (status, body) = token_post(
        &emu,
        &[("grant_type", "refresh_token"), ("refresh_token", &first)],
    )
    .await;
    assert_eq!(status, 200);
    let second = body["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(first, second);
    assert!(!emu.is_refresh_token_live(&first));
    assert!(emu.is_refresh_token_live(&second));
    assert_eq!(
        emu.issued_refresh_tokens(),
        vec![first.clone(), second.clone()]
    );
    let (status, body) = token_post(
        &emu,
        &[("grant_type", "refresh_token"), ("refresh_token", &first)],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let (status, _) = token_post(
        &emu,
        &[("grant_type", "refresh_token"), ("refresh_token", &second)],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(emu.counters().token_refresh_token, 3);
}

#[tokio::test]
async fn client_authentication_errors_are_401() {
    let emu = Emulator::builder().start().await.unwrap();
    let http = http();
    let grant = [
        ("grant_type", "password"),
        ("username", DEFAULT_USERNAME),
        ("password", DEFAULT_PASSWORD),
    ];
    let cases: Vec<reqwest::RequestBuilder> = vec![
        // no credentials at all
        http.post(emu.token_url()).form(&grant),
        // wrong secret in the body
        http.post(emu.token_url()).form(&[
            grant[0],
            grant[1],
            grant[2],
            ("client_id", DEFAULT_CLIENT_ID),
            ("client_secret", "bad"),
        ]),
        // secret missing
        http.post(emu.token_url()).form(&[
            grant[0],
            grant[1],
            grant[2],
            ("client_id", DEFAULT_CLIENT_ID),
        ]),
        // unknown client via Basic
        http.post(emu.token_url())
            .header("authorization", basic("who", "x"))
            .form(&grant),
        // malformed Basic
        http.post(emu.token_url())
            .header("authorization", "Basic !!!")
            .form(&grant),
    ];
    for request in cases {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401);
        assert!(response.headers().contains_key("www-authenticate"));
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "invalid_client");
    }
}

#[tokio::test]
async fn request_errors_are_400() {
    let emu = Emulator::builder().start().await.unwrap();
    let cases: [(&[(&str, &str)], &str); 5] = [
        (&[], "invalid_request"),
        (
            &[("grant_type", "client_credentials")],
            "unsupported_grant_type",
        ),
        (&[("grant_type", "authorization_code")], "invalid_request"),
        (&[("grant_type", "refresh_token")], "invalid_request"),
        (
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", "made-up"),
            ],
            "invalid_grant",
        ),
    ];
    for (params, error) in cases {
        let (status, body) = token_post(&emu, params).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some(error)),
            "{params:?}"
        );
    }
    // Repeated parameters and non-form bodies.
    let response = http()
        .post(emu.token_url())
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=password&grant_type=password")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let response = http()
        .post(emu.token_url())
        .header("content-type", "application/octet-stream")
        .body(vec![0xff, 0xfe, 0x00])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");
}

#[tokio::test]
async fn url_encoded_basic_credentials_are_accepted() {
    let emu = Emulator::builder()
        .client(RegisteredClient::new("id:with colon", "s&c=ret"))
        .start()
        .await
        .unwrap();
    let response = http()
        .post(emu.token_url())
        .header("authorization", basic("id%3Awith+colon", "s%26c%3Dret"))
        .form(&[
            ("grant_type", "password"),
            ("username", DEFAULT_USERNAME),
            ("password", DEFAULT_PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}
