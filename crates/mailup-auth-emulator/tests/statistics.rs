//! The MailStatistics slice over loopback HTTP: who a message was sent to (LIST, paginated,
//! and COUNT, a bare number) from the sends `Console/Email/Send` recorded; MailUp's error
//! shape for unknown messages and unknown paths; the token check; per-account data.

mod common;

use common::*;
use mailup_auth_emulator::{Emulator, User};
use serde_json::{json, Value};

async fn stats_get(emu: &Emulator, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = http().get(format!("{}{path}", emu.statistics_api_base()));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn send(emu: &Emulator, token: &str, email: &str) {
    let (status, body) = api_call(
        emu,
        "POST",
        "/Console/Email/Send",
        Some(token),
        Some(json!({"Email": email, "idMessage": 1})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

fn is_mailup_error(body: &Value, code: u16) -> bool {
    body["ErrorCode"].as_str() == Some(code.to_string().as_str())
        && body["ErrorDescription"].is_string()
        && body["ErrorName"].is_string()
        && body["ErrorStack"].is_null()
}

#[tokio::test]
async fn message_recipients_are_listed_paged_and_counted() {
    let emu = Emulator::builder()
        .user(User::new("m5678", "pw"))
        .start()
        .await
        .unwrap();
    let (token, _) = password_tokens(&emu).await;
    // Ann twice (one recipient), Bob, Carla; Dan is unsubscribed: not sent, not counted.
    for email in [
        "ann.lee@example.com",
        "bob.rossi@example.com",
        "ann.lee@example.com",
        "carla.bianchi@example.com",
        "dan.old@example.com",
    ] {
        send(&emu, &token, email).await;
    }

    let (status, count) = stats_get(&emu, "/Message/1/Count/Recipients", Some(&token)).await;
    assert_eq!((status, count), (200, json!(3)));

    let (status, first) = stats_get(
        &emu,
        "/Message/1/List/Recipients?pageNumber=0&pageSize=2",
        Some(&token),
    )
    .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(
        first,
        json!({
            "IsPaginated": true,
            "Items": [
                {"Email": "ann.lee@example.com", "IdMessage": 1, "IdRecipient": 1},
                {"Email": "bob.rossi@example.com", "IdMessage": 1, "IdRecipient": 2},
            ],
            "PageNumber": 0, "PageSize": 2, "Skipped": 0, "TotalElementsCount": 3,
        })
    );
    let (_, second) = stats_get(
        &emu,
        "/Message/1/List/Recipients?PageNumber=1&PageSize=2",
        Some(&token),
    )
    .await;
    assert_eq!(
        second["Items"],
        json!([{"Email": "carla.bianchi@example.com", "IdMessage": 1, "IdRecipient": 3}])
    );
    assert_eq!(second["Skipped"], 2);

    // Message 2 was never sent: zero and an empty page, as MailUp answers.
    let (_, count) = stats_get(&emu, "/Message/2/Count/Recipients", Some(&token)).await;
    assert_eq!(count, json!(0));
    let (_, empty) = stats_get(&emu, "/Message/2/List/Recipients", Some(&token)).await;
    assert_eq!(empty["Items"], json!([]));
    assert_eq!(empty["TotalElementsCount"], 0);

    // Another account has its own message 1, never sent.
    let other = user_tokens(&emu, "m5678", "pw").await;
    let (_, count) = stats_get(&emu, "/Message/1/Count/Recipients", Some(&other)).await;
    assert_eq!(count, json!(0));
}

#[tokio::test]
async fn statistics_errors_come_in_mailup_shape() {
    let emu = Emulator::builder().start().await.unwrap();
    let (token, _) = password_tokens(&emu).await;
    for (path, status) in [
        ("/Message/999/List/Recipients", 404),
        ("/Message/999/Count/Recipients", 404),
        ("/Message/abc/Count/Recipients", 400),
        ("/Message/1/List/Views", 404),
        ("/Recipient/1/List/Deliveries", 404),
        ("/Message/1/List/Recipients?pageSize=0", 400),
    ] {
        let (got, body) = stats_get(&emu, path, Some(&token)).await;
        assert_eq!(got, status, "{path}: {body}");
        assert!(is_mailup_error(&body, status), "{path}: {body}");
    }
    let (status, body) = stats_get(&emu, "/Message/1/Count/Recipients", None).await;
    assert_eq!(status, 401);
    assert_eq!(
        body["ErrorDescription"],
        "Authorization error: Access token is missing"
    );
}
