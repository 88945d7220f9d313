//! The admin HTTP API: off by default, and every control through it.

mod common;

use std::time::{Duration, Instant};

use common::*;
use mailup_auth_emulator::Emulator;
use serde_json::{json, Value};

async fn admin(emu: &Emulator, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let url = format!("{}{}", emu.admin_url(), path);
    let client = http();
    let mut request = match method {
        "GET" => client.get(&url),
        "DELETE" => client.delete(&url),
        _ => client.post(&url),
    };
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn password_status(emu: &Emulator) -> Result<u16, reqwest::Error> {
    http()
        .post(emu.token_url())
        .form(&[
            ("grant_type", "password"),
            ("username", mailup_auth_emulator::DEFAULT_USERNAME),
            ("password", mailup_auth_emulator::DEFAULT_PASSWORD),
            ("client_id", mailup_auth_emulator::DEFAULT_CLIENT_ID),
            ("client_secret", mailup_auth_emulator::DEFAULT_CLIENT_SECRET),
        ])
        .send()
        .await
        .map(|r| r.status().as_u16())
}

#[tokio::test]
async fn admin_api_is_off_by_default() {
    let emu = Emulator::builder().start().await.unwrap();
    assert!(!emu.admin_api_enabled());
    for path in ["/counters", "/access-tokens/expire", "/faults"] {
        let (status, _) = admin(&emu, "POST", path, None).await;
        assert_eq!(status, 404, "{path}");
        let (status, _) = admin(&emu, "GET", path, None).await;
        assert_eq!(status, 404, "{path}");
    }
}

#[tokio::test]
async fn counters_expiry_and_revocation() {
    let emu = Emulator::builder().admin_api(true).start().await.unwrap();
    let (access, r1) = password_tokens(&emu).await;
    let (_, r2) = password_tokens(&emu).await;
    let (status, counters) = admin(&emu, "GET", "/counters", None).await;
    assert_eq!(status, 200);
    assert_eq!(counters["token_password"], 2);
    assert_eq!(counters["access_tokens_issued"], 2);

    assert_eq!(
        admin(&emu, "POST", "/access-tokens/expire", None).await.0,
        200
    );
    let (status, body) = api_get(&emu, "/Console/Authentication/Info", Some(&access)).await;
    assert_eq!(status, 401);
    assert_eq!(
        body["ErrorDescription"],
        "Authorization error: Access token is expired"
    );

    let (_, listed) = admin(&emu, "GET", "/refresh-tokens", None).await;
    assert_eq!(listed["issued"], json!([r1, r2]));
    assert_eq!(listed["live"], json!([r1, r2]));
    let (status, body) = admin(
        &emu,
        "POST",
        "/refresh-tokens/revoke",
        Some(json!({"refresh_token": r1})),
    )
    .await;
    assert_eq!((status, body["revoked"].as_bool()), (200, Some(true)));
    let (_, body) = admin(
        &emu,
        "POST",
        "/refresh-tokens/revoke",
        Some(json!({"refresh_token": r1})),
    )
    .await;
    assert_eq!(body["revoked"], false);
    assert!(!emu.is_refresh_token_live(&r1) && emu.is_refresh_token_live(&r2));
    assert_eq!(
        admin(&emu, "POST", "/refresh-tokens/revoke-all", None)
            .await
            .0,
        200
    );
    assert!(!emu.is_refresh_token_live(&r2));
    let (_, listed) = admin(&emu, "GET", "/refresh-tokens", None).await;
    assert_eq!(listed["live"], json!([]));

    assert_eq!(admin(&emu, "POST", "/counters/reset", None).await.0, 200);
    let (_, counters) = admin(&emu, "GET", "/counters", None).await;
    assert_eq!(counters["token_password"], 0);
    assert_eq!(counters["api_calls"], 0);
}

#[tokio::test]
async fn every_fault_through_the_admin_api() {
    let emu = Emulator::builder().admin_api(true).start().await.unwrap();
    for (fault, expected) in [
        ("status500", Some(500)),
        ("status503", Some(503)),
        ("html_error_page", Some(502)),
        ("malformed_body", Some(200)),
        ("drop_connection", None),
    ] {
        let (status, _) = admin(
            &emu,
            "POST",
            "/faults",
            Some(json!({"fault": fault, "count": 1})),
        )
        .await;
        assert_eq!(status, 200, "{fault}");
        let got = password_status(&emu).await.ok();
        assert_eq!(got, expected, "{fault}");
    }
    assert_eq!(password_status(&emu).await.unwrap(), 200);
    // Count defaults to 1; DELETE clears what is queued.
    admin(
        &emu,
        "POST",
        "/faults",
        Some(json!({"fault": "status503", "count": 3})),
    )
    .await;
    assert_eq!(password_status(&emu).await.unwrap(), 503);
    assert_eq!(admin(&emu, "DELETE", "/faults", None).await.0, 200);
    assert_eq!(password_status(&emu).await.unwrap(), 200);
    let (_, counters) = admin(&emu, "GET", "/counters", None).await;
    assert_eq!(counters["token_faults"], 6);
}

#[tokio::test]
async fn latency_clock_and_rate_limit() {
    let emu = Emulator::builder().admin_api(true).start().await.unwrap();
    let (access, _) = password_tokens(&emu).await;
    admin(
        &emu,
        "POST",
        "/latency",
        Some(json!({"token_ms": 250, "api_ms": 250})),
    )
    .await;
    let started = Instant::now();
    password_status(&emu).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(250));
    let started = Instant::now();
    api_get(&emu, "/Console/Authentication/Info", Some(&access)).await;
    assert!(started.elapsed() >= Duration::from_millis(250));
    admin(
        &emu,
        "POST",
        "/latency",
        Some(json!({"token_ms": 0, "api_ms": 0})),
    )
    .await;

    let (status, _) = admin(
        &emu,
        "POST",
        "/rate-limit",
        Some(json!({"requests": 1, "window_secs": 60})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        api_get(&emu, "/Console/Authentication/Info", Some(&access))
            .await
            .0,
        200
    );
    let (status, body) = api_get(&emu, "/Console/Authentication/Info", Some(&access)).await;
    assert_eq!((status, body["ErrorCode"].as_str()), (429, Some("429")));
    admin(&emu, "POST", "/rate-limit", Some(Value::Null)).await;
    assert_eq!(
        api_get(&emu, "/Console/Authentication/Info", Some(&access))
            .await
            .0,
        200
    );

    let (status, _) = admin(
        &emu,
        "POST",
        "/clock/advance",
        Some(json!({"seconds": 3600})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = api_get(&emu, "/Console/Authentication/Info", Some(&access)).await;
    assert_eq!(status, 401);
    assert_eq!(
        body["ErrorDescription"],
        "Authorization error: Access token is expired"
    );
}

#[tokio::test]
async fn bad_admin_bodies_are_400() {
    let emu = Emulator::builder().admin_api(true).start().await.unwrap();
    let cases = [
        ("/faults", json!({"fault": "explode"})),
        ("/faults", json!({})),
        ("/latency", json!({"token_ms": -1})),
        ("/clock/advance", json!({"minutes": 1})),
        ("/rate-limit", json!({"requests": 0, "window_secs": 1})),
        ("/refresh-tokens/revoke", json!([])),
    ];
    for (path, body) in cases {
        let (status, response) = admin(&emu, "POST", path, Some(body.clone())).await;
        assert_eq!(status, 400, "{path} {body}");
        assert!(response["error"].is_string());
    }
    let response = http()
        .post(format!("{}/faults", emu.admin_url()))
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}
