//! The stateful Console API slice, route by route, over loopback HTTP: shapes, paging,
//! filters, errors, the 401 and 429 paths, state changes seen through later reads, and
//! per-account isolation. Default seed (no config): list 1 "Newsletter" with groups 1
//! Customers, 2 Prospects, 3 VIP; recipients 1 Ann (subscribed; Customers, VIP), 2 Bob
//! (subscribed; Customers), 3 Carla (subscribed; Prospects), 4 Dan (unsubscribed), 5 Eve
//! (pending; Prospects); messages 1 and 2; lists 2 and 3 empty.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use mailup_auth_emulator::{
    Emulator, EmulatorBuilder, EmulatorConfig, ListSeed, ManualClock, RecipientSeed,
    RecipientStatus, User,
};
use serde_json::{json, Value};

fn items(body: &Value) -> &Vec<Value> {
    body["Items"]
        .as_array()
        .unwrap_or_else(|| panic!("no Items in {body}"))
}

fn emails(body: &Value) -> Vec<&str> {
    items(body)
        .iter()
        .map(|r| r["Email"].as_str().unwrap())
        .collect()
}

fn is_mailup_error(body: &Value, code: u16) -> bool {
    body["ErrorCode"].as_str() == Some(code.to_string().as_str())
        && body["ErrorDescription"].is_string()
        && body["ErrorName"].is_string()
        && body["ErrorStack"].is_null()
}

/// Every route, one row each: method, path, body, status, and a check on the answer.
#[tokio::test]
async fn every_route_answers_in_mailup_shape() {
    let emu = Emulator::builder().start().await.unwrap();
    let (token, _) = password_tokens(&emu).await;
    type Check = fn(&Value) -> bool;
    let paginated: Check = |b| {
        b["IsPaginated"] == true
            && b["Items"].is_array()
            && b["PageNumber"] == 0
            && b["PageSize"] == 20
            && b["Skipped"] == 0
            && b["TotalElementsCount"].is_u64()
    };
    let rows: Vec<(&str, &str, Option<Value>, u16, Check)> = vec![
        ("GET", "/Console/User/Lists", None, 200, |b| {
            b["TotalElementsCount"] == 3
                && b["Items"][0]["idList"] == 1
                && b["Items"][0]["Name"] == "Newsletter"
                && b["Items"][0]["listGuid"].is_string()
        }),
        ("GET", "/Console/List/1", None, 200, |b| {
            b["IdList"] == 1 && b["Name"] == "Newsletter" && b["ListGuid"].is_string()
        }),
        ("GET", "/Console/List/1/Groups", None, 200, |b| {
            b["TotalElementsCount"] == 3
                && b["Items"][0]
                    == json!({"Deletable": true, "Name": "Customers", "Notes": "", "idGroup": 1, "idList": 1})
        }),
        ("GET", "/Console/Recipient/DynamicFields", None, 200, |b| {
            b["Items"][0] == json!({"Description": "FirstName", "Id": 1})
                && b["Items"][1] == json!({"Description": "LastName", "Id": 2})
                && b["TotalElementsCount"] == 11
        }),
        (
            "GET",
            "/Console/List/1/Recipients/Subscribed",
            None,
            200,
            |b| {
                let ann = &b["Items"][0];
                b["TotalElementsCount"] == 3
                    && ann["idRecipient"] == 1
                    && ann["Email"] == "ann.lee@example.com"
                    && ann["Name"] == "Ann Lee"
                    && ann["MobileNumber"] == ""
                    && ann["MobilePrefix"] == ""
                    && ann["Fields"][0]
                        == json!({"Description": "FirstName", "Id": 1, "Value": "Ann"})
                    && ann["Fields"].as_array().unwrap().len() == 11
            },
        ),
        (
            "GET",
            "/Console/List/1/Recipients/Unsubscribed",
            None,
            200,
            |b| b["TotalElementsCount"] == 1 && b["Items"][0]["Email"] == "dan.old@example.com",
        ),
        (
            "GET",
            "/Console/List/1/Recipients/Pending",
            None,
            200,
            |b| b["TotalElementsCount"] == 1 && b["Items"][0]["Email"] == "eve.new@example.com",
        ),
        (
            "GET",
            "/Console/List/1/Recipients/EmailOptins",
            None,
            200,
            |b| b["TotalElementsCount"] == 1 && b["Items"][0]["idRecipient"] == 5,
        ),
        ("GET", "/Console/Group/2/Recipients", None, 200, |b| {
            b["TotalElementsCount"] == 2
                && b["Items"][0]["idRecipient"] == 3
                && b["Items"][1]["idRecipient"] == 5
        }),
        ("GET", "/Console/List/1/Emails", None, 200, |b| {
            b["Items"][0]
                == json!({"Subject": "Welcome to our newsletter", "idList": 1, "idMessage": 1})
                && b["TotalElementsCount"] == 2
        }),
        ("GET", "/Console/List/2/Emails", None, 200, |b| {
            b["TotalElementsCount"] == 0
        }),
        (
            "POST",
            "/Console/List/1/Group",
            Some(json!({"Name": "Leads", "Notes": "from a form", "Deletable": true, "idList": 1})),
            200,
            |b| {
                b == &json!({"Deletable": true, "Name": "Leads", "Notes": "from a form", "idGroup": 4, "idList": 1})
            },
        ),
        (
            "PUT",
            "/Console/List/1/Group/4",
            Some(json!({"Name": "Hot leads", "idGroup": 4, "idList": 1})),
            200,
            |b| b["Name"] == "Hot leads" && b["Notes"] == "from a form" && b["idGroup"] == 4,
        ),
        (
            "DELETE",
            "/Console/List/1/Group/4",
            None,
            200,
            Value::is_null,
        ),
        (
            "POST",
            "/Console/List/1/Recipient",
            Some(
                json!({"Name": "Fay", "Email": "fay@example.com", "MobileNumber": "", "MobilePrefix": "",
                        "Fields": [{"Description": "FirstName", "Id": 1, "Value": "Fay"}]}),
            ),
            200,
            |b| b == &json!(6),
        ),
        (
            "POST",
            "/Console/List/1/Recipients",
            Some(
                json!([{"Name": "Gil", "Email": "gil@example.com"}, {"Name": "Hal", "Email": "hal@example.com"}]),
            ),
            200,
            |b| b.is_u64(),
        ),
        (
            "POST",
            "/Console/Group/1/Recipient",
            Some(json!({"Name": "Ivy", "Email": "ivy@example.com"})),
            200,
            |b| b == &json!(9),
        ),
        (
            "POST",
            "/Console/Group/3/Recipients",
            Some(json!([{"Email": "jo@example.com"}])),
            200,
            |b| b.is_u64(),
        ),
        (
            "POST",
            "/Console/List/1/Subscribe/4",
            None,
            200,
            Value::is_null,
        ),
        (
            "POST",
            "/Console/Group/3/Subscribe/2",
            None,
            200,
            Value::is_null,
        ),
        (
            "DELETE",
            "/Console/Group/3/Unsubscribe/2",
            None,
            200,
            Value::is_null,
        ),
        (
            "DELETE",
            "/Console/List/1/Unsubscribe/3",
            None,
            200,
            Value::is_null,
        ),
        (
            "PUT",
            "/Console/Recipient/Detail",
            Some(
                json!({"idRecipient": 2, "Name": "Robert Rossi", "Fields": [{"Id": 4, "Value": "Milano"}]}),
            ),
            200,
            |b| {
                b["idRecipient"] == 2
                    && b["Name"] == "Robert Rossi"
                    && b["Email"] == "bob.rossi@example.com"
                    && b["Fields"][3]["Value"] == "Milano"
                    && b["Fields"][0]["Value"] == "Bob"
            },
        ),
        (
            "POST",
            "/Console/Email/Send",
            Some(json!({"Email": "ann.lee@example.com", "idMessage": 2})),
            200,
            |b| {
                b["Sent"] == 1
                    && b["idMessage"] == 2
                    && b["Id"].is_u64()
                    && b["InvalidRecipients"] == json!([])
                    && b["UnprocessedRecipients"] == json!([])
            },
        ),
        // Errors, in MailUp's shape.
        ("GET", "/Console/List/99", None, 404, |b| {
            is_mailup_error(b, 404)
        }),
        ("GET", "/Console/List/abc", None, 400, |b| {
            is_mailup_error(b, 400)
        }),
        ("GET", "/Console/List/99/Groups", None, 404, |b| {
            is_mailup_error(b, 404)
        }),
        (
            "GET",
            "/Console/List/1/Recipients/Bounced",
            None,
            404,
            |b| is_mailup_error(b, 404),
        ),
        ("GET", "/Console/Group/99/Recipients", None, 404, |b| {
            is_mailup_error(b, 404)
        }),
        (
            "POST",
            "/Console/List/1/Group",
            Some(json!({"Notes": "no name"})),
            400,
            |b| is_mailup_error(b, 400),
        ),
        (
            "PUT",
            "/Console/List/2/Group/1",
            Some(json!({"Name": "x"})),
            404,
            |b| is_mailup_error(b, 404),
        ),
        ("DELETE", "/Console/List/1/Group/99", None, 404, |b| {
            is_mailup_error(b, 404)
        }),
        (
            "POST",
            "/Console/List/1/Recipient",
            Some(json!({"Name": "no key"})),
            400,
            |b| is_mailup_error(b, 400),
        ),
        (
            "POST",
            "/Console/List/1/Recipient",
            Some(json!({"Email": "not an address"})),
            400,
            |b| is_mailup_error(b, 400),
        ),
        (
            "POST",
            "/Console/List/1/Recipient",
            Some(json!({"Email": "k@example.com", "Fields": [{"Id": 99, "Value": "x"}]})),
            400,
            |b| is_mailup_error(b, 400),
        ),
        (
            "POST",
            "/Console/List/99/Recipient",
            Some(json!({"Email": "k@example.com"})),
            404,
            |b| is_mailup_error(b, 404),
        ),
        (
            "POST",
            "/Console/List/1/Recipients",
            Some(json!({"Email": "not-an-array@example.com"})),
            400,
            |b| is_mailup_error(b, 400),
        ),
        (
            "DELETE",
            "/Console/List/1/Unsubscribe/999",
            None,
            404,
            |b| is_mailup_error(b, 404),
        ),
        ("DELETE", "/Console/List/2/Unsubscribe/1", None, 404, |b| {
            is_mailup_error(b, 404)
        }),
        ("DELETE", "/Console/Group/2/Unsubscribe/1", None, 404, |b| {
            is_mailup_error(b, 404)
        }),
        (
            "PUT",
            "/Console/Recipient/Detail",
            Some(json!({"Name": "who?"})),
            400,
            |b| is_mailup_error(b, 400),
        ),
        (
            "PUT",
            "/Console/Recipient/Detail",
            Some(json!({"idRecipient": 999})),
            404,
            |b| is_mailup_error(b, 404),
        ),
        (
            "PUT",
            "/Console/Recipient/Detail",
            Some(json!({"idRecipient": 2, "Email": "ann.lee@example.com"})),
            400,
            |b| is_mailup_error(b, 400),
        ),
        (
            "POST",
            "/Console/Email/Send",
            Some(json!({"Email": "x@example.com", "idMessage": 99})),
            404,
            |b| is_mailup_error(b, 404),
        ),
        (
            "POST",
            "/Console/Email/Send",
            Some(json!({"idMessage": 1})),
            400,
            |b| is_mailup_error(b, 400),
        ),
        // Not subscribed (Dan was resubscribed above; Carla was unsubscribed): invalid, not sent.
        (
            "POST",
            "/Console/Email/Send",
            Some(json!({"Email": "carla.bianchi@example.com", "idMessage": 1})),
            200,
            |b| b["Sent"] == 0 && b["InvalidRecipients"] == json!(["carla.bianchi@example.com"]),
        ),
        ("GET", "/Console/Email/Send", None, 405, |b| {
            is_mailup_error(b, 405)
        }),
        ("GET", "/Console/No/Such/Thing", None, 404, |b| {
            is_mailup_error(b, 404)
        }),
    ];
    for (method, path, body, status, check) in rows {
        let (got, answer) = api_call(&emu, method, path, Some(&token), body).await;
        assert_eq!(got, status, "{method} {path}: {answer}");
        assert!(check(&answer), "{method} {path}: {answer}");
    }
    // The paginated ones, with the defaults.
    for path in [
        "/Console/User/Lists",
        "/Console/List/1/Groups",
        "/Console/Recipient/DynamicFields",
        "/Console/List/1/Recipients/Subscribed",
        "/Console/Group/1/Recipients",
        "/Console/List/1/Emails",
    ] {
        let (_, body) = api_get(&emu, path, Some(&token)).await;
        assert!(paginated(&body), "{path}: {body}");
    }
    let sent = emu.sent_emails();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].email, "ann.lee@example.com");
    assert_eq!(sent[0].message_id, 2);
    assert_eq!(sent[0].subject, "Monthly news");
    assert_eq!(sent[0].username, "m1234");
}

/// Every route checks the token first (401 in MailUp's shape) and counts toward the rate limit.
#[tokio::test]
async fn every_route_needs_a_token_and_is_rate_limited() {
    let clock = Arc::new(ManualClock::default());
    let emu = Emulator::builder()
        .clock(clock.clone())
        .start()
        .await
        .unwrap();
    let (token, _) = password_tokens(&emu).await;
    let routes = [
        ("GET", "/Console/User/Lists"),
        ("GET", "/Console/List/1"),
        ("GET", "/Console/List/1/Groups"),
        ("POST", "/Console/List/1/Group"),
        ("PUT", "/Console/List/1/Group/1"),
        ("DELETE", "/Console/List/1/Group/1"),
        ("GET", "/Console/Recipient/DynamicFields"),
        ("GET", "/Console/List/1/Recipients/Subscribed"),
        ("GET", "/Console/List/1/Recipients/EmailOptins"),
        ("POST", "/Console/List/1/Recipient"),
        ("POST", "/Console/List/1/Recipients"),
        ("GET", "/Console/Group/1/Recipients"),
        ("POST", "/Console/Group/1/Recipient"),
        ("DELETE", "/Console/List/1/Unsubscribe/1"),
        ("DELETE", "/Console/Group/1/Unsubscribe/1"),
        ("PUT", "/Console/Recipient/Detail"),
        ("GET", "/Console/List/1/Emails"),
        ("POST", "/Console/Email/Send"),
        ("GET", "/Console/Nope"),
        ("GET", "/Console/List"),
    ];
    for (method, path) in routes {
        let (status, body) = api_call(&emu, method, path, None, None).await;
        assert_eq!(status, 401, "{method} {path}");
        assert!(is_mailup_error(&body, 401), "{method} {path}: {body}");
        let (status, _) = api_call(&emu, method, path, Some("made-up"), None).await;
        assert_eq!(status, 401, "{method} {path}");
    }
    clock.advance(Duration::from_secs(3600));
    let (status, body) = api_call(&emu, "GET", "/Console/List/1/Groups", Some(&token), None).await;
    assert_eq!(status, 401);
    assert_eq!(
        body["ErrorDescription"],
        "Authorization error: Access token is expired"
    );

    let (token, _) = password_tokens(&emu).await;
    emu.set_rate_limit(Some((1, Duration::from_secs(1))));
    for (method, path) in routes {
        clock.advance(Duration::from_secs(1));
        let (first, _) = api_call(&emu, method, path, Some(&token), None).await;
        assert_ne!(first, 429, "{method} {path}");
        let (status, body) = api_call(&emu, method, path, Some(&token), None).await;
        assert_eq!(status, 429, "{method} {path}");
        assert!(is_mailup_error(&body, 429), "{method} {path}: {body}");
    }
    assert_eq!(emu.counters().rate_limited, routes.len() as u64);
}

/// Paging in either casing, filters and orders MailUp documents, ignored parameters.
#[tokio::test]
async fn paging_filters_and_orders() {
    let mut newsletter = ListSeed::new("Newsletter");
    for i in 1..=25 {
        newsletter = newsletter.recipient(
            RecipientSeed::new(format!("user{i:02}@example.com")).name(format!("User {i}")),
        );
    }
    let user = User::new("m1234", "demo-password")
        .list(newsletter)
        .list("Newsletter VIP")
        .list("Other");
    let emu = Emulator::builder().user(user).start().await.unwrap();
    let (token, _) = password_tokens(&emu).await;
    let subscribed = "/Console/List/1/Recipients/Subscribed";
    // (query, total, page size, first email, count on the page)
    let rows: Vec<(&str, u64, u64, Option<&str>, usize)> = vec![
        ("", 25, 20, Some("user01@example.com"), 20),
        (
            "pageNumber=1&pageSize=20",
            25,
            20,
            Some("user21@example.com"),
            5,
        ),
        (
            "PageNumber=1&PageSize=10",
            25,
            10,
            Some("user11@example.com"),
            10,
        ),
        (
            "pagenumber=2&PAGESIZE=10",
            25,
            10,
            Some("user21@example.com"),
            5,
        ),
        ("pageNumber=9", 25, 20, None, 0),
        (
            "tags=&pageSize=&foo=bar",
            25,
            20,
            Some("user01@example.com"),
            20,
        ),
        (
            "filterby=Email=='user07@example.com'",
            1,
            20,
            Some("user07@example.com"),
            1,
        ),
        (
            "filterby=\"Email.Contains('user1')\"",
            10,
            20,
            Some("user10@example.com"),
            10,
        ),
        (
            "filterby=Email.StartsWith('user2')&orderby=Email desc",
            6,
            20,
            Some("user25@example.com"),
            6,
        ),
        (
            "filterby=Email.EndsWith('5@example.com')",
            3,
            20,
            Some("user05@example.com"),
            3,
        ),
        (
            "filterby=idRecipient>20 %26%26 idRecipient<=22",
            2,
            20,
            Some("user21@example.com"),
            2,
        ),
        (
            "filterby=idRecipient==3 || idRecipient==4",
            2,
            20,
            Some("user03@example.com"),
            2,
        ),
        ("filterby=Name.Contains('user')", 0, 20, None, 0),
        (
            "orderby=\"idRecipient desc\"&pageSize=5",
            25,
            5,
            Some("user25@example.com"),
            5,
        ),
        ("filterby=&orderby=", 25, 20, Some("user01@example.com"), 20),
    ];
    for (query, total, size, first, count) in rows {
        let (status, body) = api_get(&emu, &format!("{subscribed}?{query}"), Some(&token)).await;
        assert_eq!(status, 200, "{query}: {body}");
        assert_eq!(body["TotalElementsCount"], total, "{query}");
        assert_eq!(body["PageSize"], size, "{query}");
        assert_eq!(items(&body).len(), count, "{query}");
        assert_eq!(emails(&body).first().copied(), first, "{query}");
    }
    // The documented list example.
    let (_, body) = api_get(
        &emu,
        "/Console/User/Lists?filterby=\"Name.Contains(%27Newsletter%27)\"&orderby=\"idList+desc\"",
        Some(&token),
    )
    .await;
    let names: Vec<&str> = items(&body)
        .iter()
        .map(|l| l["Name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Newsletter VIP", "Newsletter"]);
    // What the emulator does not understand is a clear 400 in MailUp's shape.
    for bad in [
        "filterby=Email.Like('x')",
        "filterby=Email ~ 'x'",
        "filterby=Nope=='x'",
        "filterby=Email.Contains('x'",
        "orderby=Nope desc",
        "orderby=Email sideways",
        "pageSize=0",
        "pageSize=5000",
        "pageNumber=-1",
    ] {
        let (status, body) = api_get(&emu, &format!("{subscribed}?{bad}"), Some(&token)).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(is_mailup_error(&body, 400), "{bad}: {body}");
        if bad.starts_with("filterby") {
            assert!(
                body["ErrorDescription"]
                    .as_str()
                    .unwrap()
                    .contains("Contains"),
                "the 400 says what is understood: {body}"
            );
        }
    }
}

/// Changes are seen through later reads.
#[tokio::test]
async fn state_changes_are_seen_by_later_reads() {
    let emu = Emulator::builder().admin_api(true).start().await.unwrap();
    let (token, _) = password_tokens(&emu).await;
    let t = Some(token.as_str());
    let get = |path: &'static str| {
        let emu = &emu;
        let token = token.clone();
        async move { api_get(emu, path, Some(&token)).await.1 }
    };

    // Groups: create, rename, delete.
    let (_, group) = api_call(
        &emu,
        "POST",
        "/Console/List/1/Group",
        t,
        Some(json!({"Name": "Leads"})),
    )
    .await;
    let id_group = group["idGroup"].as_u64().unwrap();
    let (_, same) = api_call(
        &emu,
        "POST",
        "/Console/List/1/Group",
        t,
        Some(json!({"Name": "Leads"})),
    )
    .await;
    assert_eq!(same["idGroup"], id_group, "same name, same group");
    assert_eq!(get("/Console/List/1/Groups").await["TotalElementsCount"], 4);
    let path = format!("/Console/List/1/Group/{id_group}");
    api_call(
        &emu,
        "PUT",
        &path,
        t,
        Some(json!({"Name": "Warm leads", "Deletable": false})),
    )
    .await;
    let (_, groups) = api_get(
        &emu,
        "/Console/List/1/Groups?filterby=Name=='Warm leads'",
        t,
    )
    .await;
    assert_eq!(groups["Items"][0]["Deletable"], false);
    let (status, _) = api_call(&emu, "DELETE", &path, t, None).await;
    assert_eq!(status, 400, "not deletable");
    api_call(&emu, "PUT", &path, t, Some(json!({"Deletable": true}))).await;
    assert_eq!(api_call(&emu, "DELETE", &path, t, None).await.0, 200);
    assert_eq!(get("/Console/List/1/Groups").await["TotalElementsCount"], 3);

    // A new recipient, subscribed with a confirmed opt-in: pending, then subscribed.
    let (_, id) = api_call(
        &emu,
        "POST",
        "/Console/List/1/Recipient?ConfirmEmail=true",
        t,
        Some(json!({"Email": "zoe@example.com", "Name": "Zoe"})),
    )
    .await;
    let id = id.as_u64().unwrap();
    assert!(
        emails(&get("/Console/List/1/Recipients/EmailOptins").await).contains(&"zoe@example.com")
    );
    api_call(
        &emu,
        "POST",
        &format!("/Console/List/1/Subscribe/{id}"),
        t,
        None,
    )
    .await;
    assert!(
        emails(&get("/Console/List/1/Recipients/Subscribed").await).contains(&"zoe@example.com")
    );
    assert!(!emails(&get("/Console/List/1/Recipients/Pending").await).contains(&"zoe@example.com"));
    // Subscribing the same address again updates, never duplicates (case-insensitive key).
    let (_, again) = api_call(
        &emu,
        "POST",
        "/Console/List/2/Recipient",
        t,
        Some(json!({"Email": "ZOE@example.com", "Fields": [{"Id": 3, "Value": "ACME"}]})),
    )
    .await;
    assert_eq!(again, json!(id));
    let (_, on_two) = api_get(&emu, "/Console/List/2/Recipients/Subscribed", t).await;
    assert_eq!(on_two["Items"][0]["Fields"][2]["Value"], "ACME");

    // Group membership, then unsubscription from the list.
    api_call(
        &emu,
        "POST",
        &format!("/Console/Group/3/Subscribe/{id}"),
        t,
        None,
    )
    .await;
    assert!(emails(&get("/Console/Group/3/Recipients").await).contains(&"zoe@example.com"));
    api_call(
        &emu,
        "DELETE",
        &format!("/Console/Group/3/Unsubscribe/{id}"),
        t,
        None,
    )
    .await;
    assert!(!emails(&get("/Console/Group/3/Recipients").await).contains(&"zoe@example.com"));
    api_call(
        &emu,
        "DELETE",
        &format!("/Console/List/1/Unsubscribe/{id}"),
        t,
        None,
    )
    .await;
    assert!(
        emails(&get("/Console/List/1/Recipients/Unsubscribed").await).contains(&"zoe@example.com")
    );
    assert!(
        !emails(&get("/Console/List/1/Recipients/Subscribed").await).contains(&"zoe@example.com")
    );
    // Still subscribed to list 2: status is per list.
    assert!(
        emails(&get("/Console/List/2/Recipients/Subscribed").await).contains(&"zoe@example.com")
    );

    // An import of several, into a group.
    let (_, import) = api_call(
        &emu,
        "POST",
        "/Console/Group/1/Recipients",
        t,
        Some(json!([{"Email": "a1@example.com"}, {"Email": "a2@example.com"}])),
    )
    .await;
    assert!(import.is_u64());
    let customers = get("/Console/Group/1/Recipients").await;
    assert!(
        emails(&customers).contains(&"a1@example.com")
            && emails(&customers).contains(&"a2@example.com")
    );
    // A bad entry changes nothing.
    let before = get("/Console/List/1/Recipients/Subscribed").await["TotalElementsCount"].clone();
    let (status, _) = api_call(
        &emu,
        "POST",
        "/Console/List/1/Recipients",
        t,
        Some(json!([{"Email": "b1@example.com"}, {"Email": "broken"}])),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        get("/Console/List/1/Recipients/Subscribed").await["TotalElementsCount"],
        before
    );

    // Personal data, then a filter on it.
    api_call(
        &emu,
        "PUT",
        "/Console/Recipient/Detail",
        t,
        Some(json!({"idRecipient": 1, "Fields": [{"Id": 4, "Value": "Torino"}]})),
    )
    .await;
    let (_, torino) = api_get(
        &emu,
        "/Console/List/1/Recipients/Subscribed?filterby=Fields['City']=='Torino'",
        t,
    )
    .await;
    assert_eq!(emails(&torino), ["ann.lee@example.com"]);

    // A send, seen by the library and by the admin API.
    api_call(
        &emu,
        "POST",
        "/Console/Email/Send",
        t,
        Some(json!({"Email": "ann.lee@example.com", "idMessage": 1})),
    )
    .await;
    let admin: Value = http()
        .get(format!("{}/sent-emails", emu.admin_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(admin["sent"][0]["email"], "ann.lee@example.com");
    assert_eq!(admin["sent"][0]["subject"], "Welcome to our newsletter");
    assert_eq!(emu.sent_emails().len(), 1);
}

/// Two users see only their own data; ids are per account, as in MailUp.
#[tokio::test]
async fn accounts_are_isolated() {
    let emu = Emulator::builder()
        .user(User::new("m5678", "pw2").list(ListSeed::new("Theirs").group("Only theirs")))
        .start()
        .await
        .unwrap();
    let (mine, _) = password_tokens(&emu).await;
    let theirs = user_tokens(&emu, "m5678", "pw2").await;
    let (_, their_lists) = api_get(&emu, "/Console/User/Lists", Some(&theirs)).await;
    assert_eq!(their_lists["TotalElementsCount"], 1);
    assert_eq!(their_lists["Items"][0]["idList"], 1);
    assert_eq!(their_lists["Items"][0]["Name"], "Theirs");
    let (_, groups) = api_get(&emu, "/Console/List/1/Groups", Some(&theirs)).await;
    assert_eq!(groups["Items"][0]["Name"], "Only theirs");
    // A change by one is invisible to the other.
    api_call(
        &emu,
        "POST",
        "/Console/List/1/Recipient",
        Some(&theirs),
        Some(json!({"Email": "x@example.com"})),
    )
    .await;
    let (_, my_subscribed) =
        api_get(&emu, "/Console/List/1/Recipients/Subscribed", Some(&mine)).await;
    assert!(!emails(&my_subscribed).contains(&"x@example.com"));
    let (_, their_subscribed) =
        api_get(&emu, "/Console/List/1/Recipients/Subscribed", Some(&theirs)).await;
    assert_eq!(emails(&their_subscribed), ["x@example.com"]);
    assert_eq!(their_subscribed["Items"][0]["idRecipient"], 1);
    let (status, _) = api_get(&emu, "/Console/List/1/Emails?pageSize=1", Some(&theirs)).await;
    assert_eq!(status, 200);
    let (status, _) = api_get(&emu, "/Console/Group/3/Recipients", Some(&theirs)).await;
    assert_eq!(status, 404, "my group 3 is not theirs");
}

/// Unknown paths anywhere under `/API/` are MailUp's 404 after the token check; elsewhere an
/// empty 404.
#[tokio::test]
async fn unknown_paths_under_the_api_are_mailup_404s() {
    let emu = Emulator::builder().start().await.unwrap();
    let (token, _) = password_tokens(&emu).await;
    for path in [
        "/API/v1.1/Rest/MailStatisticsService.svc/Message/1/Views",
        "/API/v1.1/Rest/Nothing",
        "/API/v2/whatever",
    ] {
        let url = format!("{}{}", emu.base_url().as_str().trim_end_matches('/'), path);
        let response = http().get(&url).send().await.unwrap();
        assert_eq!(response.status(), 401, "{path}");
        let body: Value = response.json().await.unwrap();
        assert!(is_mailup_error(&body, 401), "{path}: {body}");
        let response = http().get(&url).bearer_auth(&token).send().await.unwrap();
        assert_eq!(response.status(), 404, "{path}");
        let body: Value = response.json().await.unwrap();
        assert!(is_mailup_error(&body, 404), "{path}: {body}");
    }
    let url = format!("{}not/api", emu.base_url());
    let response = http().get(&url).send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert!(response.text().await.unwrap().is_empty());
}

/// The seed comes from the configuration file; files written before the seed existed load.
#[tokio::test]
async fn a_config_file_seeds_lists_groups_recipients_and_fields() {
    let config = EmulatorConfig::from_toml_str(
        r#"
        [[users]]
        username = "m1234"
        password = "demo-password"
        dynamic_fields = ["FirstName", "Shoe size"]
        lists = [
            "Plain",
            { name = "Shop", groups = ["Buyers"], messages = ["Sale"], recipients = [
                { email = "ann@example.com", name = "Ann", groups = ["Buyers"], fields = { "Shoe size" = "38" } },
                { email = "bob@example.com", status = "unsubscribed" },
                { email = "cy@example.com", status = "pending" },
            ] },
        ]
        "#,
    )
    .unwrap();
    let emu = EmulatorBuilder::from_config(config).start().await.unwrap();
    let (token, _) = password_tokens(&emu).await;
    let t = Some(token.as_str());
    let (_, fields) = api_get(&emu, "/Console/Recipient/DynamicFields", t).await;
    assert_eq!(
        fields["Items"][1],
        json!({"Description": "Shoe size", "Id": 2})
    );
    let (_, shop) = api_get(&emu, "/Console/List/2/Recipients/Subscribed", t).await;
    assert_eq!(shop["Items"][0]["Fields"][1]["Value"], "38");
    assert_eq!(
        api_get(&emu, "/Console/List/2/Recipients/Unsubscribed", t)
            .await
            .1["Items"][0]["Email"],
        "bob@example.com"
    );
    assert_eq!(
        api_get(&emu, "/Console/List/2/Recipients/Pending", t)
            .await
            .1["Items"][0]["Email"],
        "cy@example.com"
    );
    assert_eq!(
        api_get(&emu, "/Console/Group/1/Recipients", t).await.1["Items"][0]["Email"],
        "ann@example.com"
    );
    assert_eq!(
        api_get(&emu, "/Console/List/2/Emails", t).await.1["Items"][0]["Subject"],
        "Sale"
    );
    assert_eq!(
        api_get(&emu, "/Console/List/1/Groups", t).await.1["TotalElementsCount"],
        0
    );

    // An old file (list names only) still loads; a seed that names a missing group or field
    // is refused with a message.
    EmulatorConfig::from_toml_str(
        "[[users]]\nusername = \"u\"\npassword = \"p\"\nlists = [\"A\", \"B\"]\n",
    )
    .unwrap();
    for bad in [
        r#"lists = [{ name = "L", recipients = [{ email = "a@b.c", groups = ["Nope"] }] }]"#,
        r#"lists = [{ name = "L", recipients = [{ email = "a@b.c", fields = { Nope = "x" } }] }]"#,
        r#"lists = [{ name = "L", recipients = [{ email = "" }] }]"#,
        r#"lists = [{ name = "L", surprise = 1 }]"#,
    ] {
        let text = format!("[[users]]\nusername = \"u\"\npassword = \"p\"\n{bad}\n");
        assert!(EmulatorConfig::from_toml_str(&text).is_err(), "{bad}");
    }
    // The same seed in code.
    let user = User::new("m1", "p").dynamic_fields(["FirstName"]).list(
        ListSeed::new("Coded").group("G").recipient(
            RecipientSeed::new("q@example.com")
                .status(RecipientStatus::Pending)
                .group("G")
                .field("FirstName", "Q"),
        ),
    );
    let emu = Emulator::builder()
        .without_demo_accounts()
        .user(user)
        .client(mailup_auth_emulator::RegisteredClient::new(
            mailup_auth_emulator::DEFAULT_CLIENT_ID,
            mailup_auth_emulator::DEFAULT_CLIENT_SECRET,
        ))
        .start()
        .await
        .unwrap();
    let token = user_tokens(&emu, "m1", "p").await;
    let (_, pending) = api_get(&emu, "/Console/List/1/Recipients/Pending", Some(&token)).await;
    assert_eq!(
        pending["Items"][0]["Fields"],
        json!([{"Description": "FirstName", "Id": 1, "Value": "Q"}])
    );
}
