//! The Console API slice: bearer checks and MailUp's error JSON, Info, paginated Lists, the
//! POST endpoint, the rate limit and token expiry on the injected clock.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use mailup_auth_emulator::{Emulator, ManualClock, User};
use serde_json::{json, Value};

#[tokio::test]
async fn authentication_info_has_mailup_fields() {
    let emu = Emulator::builder()
        .user(
            User::new("m1234", "demo-password")
                .company("ACME")
                .uid("777")
                .trial(true),
        )
        .start()
        .await
        .unwrap();
    let (access, _) = password_tokens(&emu).await;
    let (status, body) = api_get(&emu, "/Console/Authentication/Info", Some(&access)).await;
    assert_eq!(status, 200);
    assert_eq!(body["Username"], "m1234");
    assert_eq!(body["Company"], "ACME");
    assert_eq!(body["UID"], "777");
    assert_eq!(body["IsTrial"], true);
    for key in ["AccountName", "ExpiryDate", "Url", "Version"] {
        assert!(body[key].is_string(), "{key} in {body}");
    }
    assert_eq!(emu.counters().api_calls, 1);
}

#[tokio::test]
async fn missing_unknown_and_expired_tokens_get_401_json() {
    let clock = Arc::new(ManualClock::default());
    let emu = Emulator::builder()
        .clock(clock.clone())
        .access_token_lifetime(Duration::from_secs(100))
        .start()
        .await
        .unwrap();
    let (status, body) = api_get(&emu, "/Console/Authentication/Info", None).await;
    assert_eq!(status, 401);
    assert_eq!(body["ErrorCode"], "401");
    assert_eq!(body["ErrorName"], "Unauthorized");
    assert!(body["ErrorStack"].is_null());
    let (status, body) = api_get(&emu, "/Console/Authentication/Info", Some("made-up")).await;
    assert_eq!(status, 401);
    assert_eq!(body["ErrorCode"], "401");
    assert_ne!(
        body["ErrorDescription"],
        "Authorization error: Access token is expired"
    );

    let (access, _) = password_tokens(&emu).await;
    clock.advance(Duration::from_secs(99));
    assert_eq!(
        api_get(&emu, "/Console/Authentication/Info", Some(&access))
            .await
            .0,
        200
    );
    clock.advance(Duration::from_secs(1));
    let (status, body) = api_get(&emu, "/Console/Authentication/Info", Some(&access)).await;
    assert_eq!(status, 401);
    assert_eq!(
        body,
        json!({
            "ErrorCode": "401",
            "ErrorDescription": "Authorization error: Access token is expired",
            "ErrorName": "Unauthorized",
            "ErrorStack": null
        })
    );
    let counters = emu.counters();
    assert_eq!(counters.api_unauthorized, 3);
    assert_eq!(counters.api_calls, 4);
}

#[tokio::test]
async fn lists_are_paginated_like_mailup() {
    let mut user = User::new("m1234", "demo-password");
    for i in 1..=45 {
        user = user.list(format!("List {i}"));
    }
    let emu = Emulator::builder().user(user).start().await.unwrap();
    let (access, _) = password_tokens(&emu).await;
    let (status, body) = api_get(
        &emu,
        "/Console/User/Lists?pageNumber=0&pageSize=20",
        Some(&access),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["IsPaginated"], true);
    assert_eq!(body["PageNumber"], 0);
    assert_eq!(body["PageSize"], 20);
    assert_eq!(body["Skipped"], 0);
    assert_eq!(body["TotalElementsCount"], 45);
    let items = body["Items"].as_array().unwrap();
    assert_eq!(items.len(), 20);
    assert_eq!(items[0]["Name"], "List 1");
    // MailUp's list summary spells these in camel case.
    assert!(items[0]["idList"].is_u64());
    assert!(items[0]["listGuid"].is_string());
    let (_, body) = api_get(
        &emu,
        "/Console/User/Lists?pageNumber=2&pageSize=20",
        Some(&access),
    )
    .await;
    assert_eq!(body["Skipped"], 40);
    assert_eq!(body["Items"].as_array().unwrap().len(), 5);
    assert_eq!(body["Items"][0]["Name"], "List 41");
    // Defaults, past the end, huge numbers and garbage.
    let (_, body) = api_get(&emu, "/Console/User/Lists", Some(&access)).await;
    assert_eq!(body["PageSize"], 20);
    let (_, body) = api_get(&emu, "/Console/User/Lists?pageNumber=99", Some(&access)).await;
    assert_eq!(body["Items"].as_array().unwrap().len(), 0);
    let (status, _) = api_get(
        &emu,
        "/Console/User/Lists?pageNumber=18446744073709551615&pageSize=1000",
        Some(&access),
    )
    .await;
    assert_eq!(status, 200);
    for bad in [
        "pageNumber=-1",
        "pageSize=0",
        "pageSize=abc",
        "pageSize=100000",
    ] {
        let (status, body) =
            api_get(&emu, &format!("/Console/User/Lists?{bad}"), Some(&access)).await;
        assert_eq!(status, 400, "{bad}");
        assert_eq!(body["ErrorCode"], "400");
    }
}

#[tokio::test]
async fn post_creates_a_list() {
    let emu = Emulator::builder()
        .user(User::new("m1234", "demo-password").no_lists())
        .start()
        .await
        .unwrap();
    let (access, _) = password_tokens(&emu).await;
    let url = format!("{}/Console/List", emu.console_api_base());
    let response = http()
        .post(&url)
        .bearer_auth(&access)
        .json(&json!({"Name": "Launch", "Description": "From a test", "Business": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let created: Value = response.json().await.unwrap();
    assert_eq!(created["Name"], "Launch");
    assert_eq!(created["Business"], true);
    let (_, lists) = api_get(&emu, "/Console/User/Lists", Some(&access)).await;
    assert_eq!(lists["TotalElementsCount"], 1);
    // The created list's detail says `IdList`; the summary in User/Lists says `idList`.
    assert_eq!(lists["Items"][0]["idList"], created["IdList"]);
    // Bad bodies are 400 with MailUp's error JSON; no token is 401.
    for body in ["", "{", "[]", "{\"Name\": 5}", "{\"Name\": \"  \"}"] {
        let response = http()
            .post(&url)
            .bearer_auth(&access)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{body}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["ErrorCode"], "400");
    }
    let response = http()
        .post(&url)
        .json(&json!({"Name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn unknown_api_paths_are_404_after_the_token_check() {
    let emu = Emulator::builder().start().await.unwrap();
    let (access, _) = password_tokens(&emu).await;
    let (status, _) = api_get(&emu, "/Console/Nothing/Here", None).await;
    assert_eq!(status, 401);
    let (status, body) = api_get(&emu, "/Console/Nothing/Here", Some(&access)).await;
    assert_eq!(status, 404);
    assert_eq!(body["ErrorCode"], "404");
}

#[tokio::test]
async fn rate_limit_per_token_with_mailup_json() {
    let clock = Arc::new(ManualClock::default());
    let emu = Emulator::builder()
        .clock(clock.clone())
        .rate_limit(Some((3, Duration::from_secs(1))))
        .start()
        .await
        .unwrap();
    let (a, _) = password_tokens(&emu).await;
    let (b, _) = password_tokens(&emu).await;
    for _ in 0..3 {
        assert_eq!(
            api_get(&emu, "/Console/Authentication/Info", Some(&a))
                .await
                .0,
            200
        );
    }
    let url = format!("{}/Console/Authentication/Info", emu.console_api_base());
    let response = http().get(&url).bearer_auth(&a).send().await.unwrap();
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["ErrorCode"], "429");
    assert!(body["ErrorStack"].is_null());
    // Another token has its own budget.
    assert_eq!(
        api_get(&emu, "/Console/Authentication/Info", Some(&b))
            .await
            .0,
        200
    );
    // The window passes.
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        api_get(&emu, "/Console/Authentication/Info", Some(&a))
            .await
            .0,
        200
    );
    assert_eq!(emu.counters().rate_limited, 1);
    // Switched off at run time.
    emu.set_rate_limit(None);
    for _ in 0..5 {
        assert_eq!(
            api_get(&emu, "/Console/Authentication/Info", Some(&a))
                .await
                .0,
            200
        );
    }
}
