//! Hostile review 2: the Console API slice fed odd input (undecodable paths, huge bodies,
//! recipients whose email and mobile number belong to two different recipients). Every error
//! must come in MailUp's JSON shape, and the account's keys must stay unique.

mod common;

use common::*;
use mailup_auth_emulator::Emulator;
use serde_json::{json, Value};

fn is_mailup_error(body: &Value, code: u16) -> bool {
    body["ErrorCode"].as_str() == Some(code.to_string().as_str())
        && body["ErrorDescription"].is_string()
        && body["ErrorName"].is_string()
        && body["ErrorStack"].is_null()
}

/// A path segment that is not UTF-8 once percent-decoded (`%FF`) is still an API error in
/// MailUp's shape (a 400 or 404), not the web framework's plain-text rejection.
#[tokio::test]
async fn an_undecodable_path_segment_gets_a_mailup_error() {
    let emu = Emulator::builder().start().await.unwrap();
    let (token, _) = password_tokens(&emu).await;
    for path in [
        "/Console/List/%FF",
        "/Console/List/%FF/Groups",
        "/Console/Group/1/Subscribe/%C3%28",
    ] {
        let url = format!("{}{}", emu.console_api_base(), path);
        let method = if path.contains("Subscribe") {
            "POST"
        } else {
            "GET"
        };
        let response = http()
            .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        assert!(
            (status == 400 || status == 404) && is_mailup_error(&body, status),
            "{method} {path}: {status} {text:?}"
        );
    }
}

/// A body larger than the framework's default limit (2 MiB) is refused in MailUp's shape.
#[tokio::test]
async fn an_oversized_body_gets_a_mailup_error() {
    let emu = Emulator::builder().start().await.unwrap();
    let (token, _) = password_tokens(&emu).await;
    let recipients: Vec<Value> = (0..40_000)
        .map(|i| json!({"Email": format!("user{i}@example.com"), "Name": "x".repeat(40)}))
        .collect();
    let body = serde_json::to_vec(&recipients).unwrap();
    assert!(body.len() > 2 * 1024 * 1024);
    let url = format!("{}/Console/List/1/Recipients", emu.console_api_base());
    let response = http()
        .post(url)
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let parsed: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    assert!(
        status >= 400 && is_mailup_error(&parsed, status),
        "{status} {text:?}"
    );
}

/// Email and mobile number are a recipient's keys in the account. Subscribing
/// `{Email: B's address, MobileNumber: A's number}` must not leave two recipients with one
/// email address (nor two with one number).
#[tokio::test]
async fn one_subscription_cannot_give_two_recipients_the_same_email() {
    let emu = Emulator::builder().start().await.unwrap();
    let (token, _) = password_tokens(&emu).await;
    let t = Some(token.as_str());
    let (s, a) = api_call(
        &emu,
        "POST",
        "/Console/List/2/Recipient",
        t,
        Some(json!({"Email": "a@example.com", "MobileNumber": "3331111111"})),
    )
    .await;
    assert_eq!(s, 200, "{a}");
    let (s, b) = api_call(
        &emu,
        "POST",
        "/Console/List/2/Recipient",
        t,
        Some(json!({"Email": "b@example.com", "MobileNumber": "3332222222"})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_ne!(a, b);
    let (s, answer) = api_call(
        &emu,
        "POST",
        "/Console/List/2/Recipient",
        t,
        Some(json!({"Email": "b@example.com", "MobileNumber": "3331111111"})),
    )
    .await;
    let (_, page) = api_get(
        &emu,
        "/Console/List/2/Recipients/Subscribed?pageSize=100",
        t,
    )
    .await;
    let items = page["Items"].as_array().unwrap();
    let with_b = items
        .iter()
        .filter(|r| {
            r["Email"]
                .as_str()
                .unwrap()
                .eq_ignore_ascii_case("b@example.com")
        })
        .count();
    assert!(
        with_b <= 1,
        "two recipients now have b@example.com (answer {s} {answer}): {page}"
    );
}

/// The README: "subscribing a known address (any case) updates that recipient". Only ASCII is
/// case-folded: `Ünï@例え.jp` and `ünï@例え.JP` become two recipients.
#[tokio::test]
async fn a_known_non_ascii_address_in_another_case_is_the_same_recipient() {
    let emu = Emulator::builder().start().await.unwrap();
    let (token, _) = password_tokens(&emu).await;
    let t = Some(token.as_str());
    let (s1, first) = api_call(
        &emu,
        "POST",
        "/Console/List/2/Recipient",
        t,
        Some(json!({"Email": "Ünï@例え.jp"})),
    )
    .await;
    let (s2, second) = api_call(
        &emu,
        "POST",
        "/Console/List/2/Recipient",
        t,
        Some(json!({"Email": "ünï@例え.JP"})),
    )
    .await;
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(first, second, "one recipient, not two");
}
