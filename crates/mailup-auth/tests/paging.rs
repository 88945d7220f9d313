//! MailUp's paginated collections through `Pages` and the MailStatistics service by name,
//! against the emulator over 127.0.0.1: several pages, an exact fit, an empty collection, page
//! size edges; and against a loopback server that lies about paging, which must end bounded.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::StreamExt;
use mailup_auth::{ErrorKind, MailUpClient, Page, Service};
use mailup_auth_emulator::Emulator;
use serde_json::{json, Value};

mod support;

use support::{emulator_builder, log_in};

async fn logged_in(emulator: &Emulator, api_base: Option<&str>) -> MailUpClient {
    let mut builder = emulator_builder(emulator);
    if let Some(api_base) = api_base {
        builder = builder.api_base(api_base);
    }
    log_in(builder).await
}

const SUBSCRIBED: &str = "Console/List/1/Recipients/Subscribed";

fn emails(items: &[Value]) -> Vec<&str> {
    items.iter().map(|r| r["Email"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn pages_walk_a_collection_and_stop_at_the_last_page() {
    let emulator = Emulator::builder().start().await.unwrap();
    let client = logged_in(&emulator, None).await;
    let all = [
        "ann.lee@example.com",
        "bob.rossi@example.com",
        "carla.bianchi@example.com",
    ];
    // (page size, requests needed): short last page, exact fit, one page bigger than all.
    for (size, requests) in [(1, 3), (2, 2), (3, 1), (1000, 1)] {
        let before = emulator.counters().api_calls;
        let items = client
            .console()
            .pages::<Value>(SUBSCRIBED, size)
            .collect_items()
            .await
            .unwrap();
        assert_eq!(emails(&items), all, "page size {size}");
        assert_eq!(
            emulator.counters().api_calls - before,
            requests,
            "page size {size}"
        );
    }

    // Page by page: the envelope as MailUp sends it.
    let mut pages = client.console().pages::<Value>(SUBSCRIBED, 2);
    let first: Page<Value> = pages.next_page().await.unwrap().unwrap();
    assert_eq!(
        (
            first.page_number,
            first.page_size,
            first.skipped,
            first.total_elements_count
        ),
        (0, 2, 0, 3)
    );
    assert!(first.is_paginated && !first.is_last(2));
    let second = pages.next_page().await.unwrap().unwrap();
    assert_eq!(
        (second.page_number, second.skipped, second.items.len()),
        (1, 2, 1)
    );
    assert!(pages.next_page().await.is_none());

    // An empty collection: one request, one empty page, done.
    let before = emulator.counters().api_calls;
    let mut stream = Box::pin(
        client
            .console()
            .pages::<Value>("Console/List/3/Recipients/Subscribed", 20)
            .into_stream(),
    );
    let only = stream.next().await.unwrap().unwrap();
    assert!(only.items.is_empty());
    assert_eq!(only.total_elements_count, 0);
    assert!(stream.next().await.is_none());
    assert_eq!(emulator.counters().api_calls - before, 1);

    // A page size of 0 is taken as 1 (MailUp refuses 0).
    let items = client
        .console()
        .pages::<Value>(SUBSCRIBED, 0)
        .collect_items()
        .await
        .unwrap();
    assert_eq!(items.len(), 3);
}

#[tokio::test]
async fn paging_keeps_the_paths_own_query() {
    let emulator = Emulator::builder().start().await.unwrap();
    let client = logged_in(&emulator, None).await;
    let items = client
        .console()
        .pages::<Value>(
            "Console/List/1/Recipients/Subscribed?filterby=\"Email.StartsWith('b')\"&PageSize=99",
            1,
        )
        .collect_items()
        .await
        .unwrap();
    assert_eq!(emails(&items), ["bob.rossi@example.com"]);
}

#[tokio::test]
async fn the_statistics_service_is_reached_by_name() {
    let emulator = Emulator::builder().start().await.unwrap();
    let client = logged_in(&emulator, None).await;
    assert_eq!(
        client.service_base(Service::MailStatistics),
        emulator.statistics_api_base()
    );
    assert_eq!(
        client.service_base(Service::Console),
        emulator.console_api_base()
    );
    for email in ["ann.lee@example.com", "bob.rossi@example.com"] {
        let sent: Value = client
            .post(
                "Console/Email/Send",
                &json!({"Email": email, "idMessage": 1}),
            )
            .await
            .unwrap();
        assert_eq!(sent["Sent"], 1);
    }
    let statistics = client.statistics();
    let count: u64 = statistics.get("Message/1/Count/Recipients").await.unwrap();
    assert_eq!(count, 2);
    let items = statistics
        .pages::<Value>("Message/1/List/Recipients", 1)
        .collect_items()
        .await
        .unwrap();
    assert_eq!(
        emails(&items),
        ["ann.lee@example.com", "bob.rossi@example.com"]
    );

    // An unknown statistics path: MailUp's 404, typed.
    let error = statistics
        .get::<Value>("Message/1/List/Views")
        .await
        .unwrap_err();
    match error.kind() {
        ErrorKind::Api(api) => {
            assert_eq!(api.mailup_error().status, 404);
            assert_eq!(api.mailup_error().name.as_deref(), Some("NotFound"));
        }
        other => panic!("expected the API's 404, got {other}"),
    }
}

/// A server whose collections never end: `Endless` answers full pages with a
/// `TotalElementsCount` that keeps ahead of them; `Stuck` answers page 0 whatever is asked.
async fn lying_server() -> (String, Arc<AtomicU64>) {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Paging {
        page_number: u64,
        page_size: u64,
    }
    let calls = Arc::new(AtomicU64::new(0));
    let endless = |State(calls): State<Arc<AtomicU64>>, Query(p): Query<Paging>| async move {
        calls.fetch_add(1, Ordering::SeqCst);
        let skipped = p.page_number * p.page_size;
        Json(json!({
            "IsPaginated": true,
            "Items": (0..p.page_size).map(|i| skipped + i).collect::<Vec<_>>(),
            "PageNumber": p.page_number, "PageSize": p.page_size, "Skipped": skipped,
            "TotalElementsCount": skipped + p.page_size + 100,
        }))
    };
    let stuck = |State(calls): State<Arc<AtomicU64>>, Query(p): Query<Paging>| async move {
        calls.fetch_add(1, Ordering::SeqCst);
        Json(json!({
            "IsPaginated": true, "Items": (0..p.page_size).collect::<Vec<_>>(),
            "PageNumber": 0, "PageSize": p.page_size, "Skipped": 0, "TotalElementsCount": 1000,
        }))
    };
    let router = Router::new()
        .route("/API/v1.1/Rest/ConsoleService.svc/Endless", get(endless))
        .route("/API/v1.1/Rest/ConsoleService.svc/Stuck", get(stuck))
        .with_state(calls.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (
        format!("http://{addr}/API/v1.1/Rest/ConsoleService.svc"),
        calls,
    )
}

#[tokio::test]
async fn a_server_that_lies_about_paging_cannot_make_it_loop() {
    let emulator = Emulator::builder().start().await.unwrap();
    let (api_base, calls) = lying_server().await;
    let client = logged_in(&emulator, Some(&api_base)).await;

    let mut pages = client.console().pages::<u64>("Endless", 10).max_pages(5);
    let mut got = 0;
    let error = loop {
        match pages
            .next_page()
            .await
            .expect("an error ends it, not silence")
        {
            Ok(page) => got += page.items.len(),
            Err(error) => break error,
        }
    };
    assert_eq!(got, 50);
    assert!(matches!(error.kind(), ErrorKind::Pagination(_)), "{error}");
    assert!(
        pages.next_page().await.is_none(),
        "an error ends the paging"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 5);

    calls.store(0, Ordering::SeqCst);
    let error = client
        .console()
        .pages::<u64>("Stuck", 10)
        .collect_items()
        .await
        .unwrap_err();
    assert!(
        matches!(error.kind(), ErrorKind::Pagination(m) if m.contains("got page 0")),
        "{error}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

/// A collection of 25 numbers served in pages, each answer bent by `shape` (the route's name):
/// `NoTotal` omits `TotalElementsCount`, `NegativeTotal` says -1, `HugeTotal` says more than
/// `u64` holds, `ZeroPageSize` answers `PageSize: 0`.
async fn odd_server() -> (String, Arc<AtomicU64>) {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Paging {
        page_number: u64,
        page_size: u64,
    }
    fn page(p: &Paging) -> (Vec<u64>, u64) {
        let skipped = p.page_number * p.page_size;
        let items = (skipped..25).take(p.page_size as usize).collect();
        (items, skipped)
    }
    let calls = Arc::new(AtomicU64::new(0));
    let router = Router::new()
        .route(
            "/API/v1.1/Rest/ConsoleService.svc/NoTotal",
            get(
                |State(calls): State<Arc<AtomicU64>>, Query(p): Query<Paging>| async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    let (items, skipped) = page(&p);
                    Json(json!({
                        "IsPaginated": true, "Items": items, "PageNumber": p.page_number,
                        "PageSize": p.page_size, "Skipped": skipped,
                    }))
                },
            ),
        )
        .route(
            "/API/v1.1/Rest/ConsoleService.svc/ZeroPageSize",
            get(
                |State(calls): State<Arc<AtomicU64>>, Query(p): Query<Paging>| async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    let (items, skipped) = page(&p);
                    Json(json!({
                        "IsPaginated": true, "Items": items, "PageNumber": p.page_number,
                        "PageSize": 0, "Skipped": skipped, "TotalElementsCount": 25,
                    }))
                },
            ),
        )
        .route(
            "/API/v1.1/Rest/ConsoleService.svc/NegativeTotal",
            get(|| async {
                r#"{"IsPaginated":true,"Items":[1],"PageNumber":0,"PageSize":10,"Skipped":0,"TotalElementsCount":-1}"#
            }),
        )
        .route(
            "/API/v1.1/Rest/ConsoleService.svc/HugeTotal",
            get(|| async {
                r#"{"IsPaginated":true,"Items":[1],"PageNumber":0,"PageSize":10,"Skipped":0,"TotalElementsCount":184467440737095516150}"#
            }),
        )
        .with_state(calls.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (
        format!("http://{addr}/API/v1.1/Rest/ConsoleService.svc"),
        calls,
    )
}

#[tokio::test]
async fn a_page_without_a_total_does_not_end_the_collection_early() {
    let emulator = Emulator::builder().start().await.unwrap();
    let (api_base, calls) = odd_server().await;
    let client = logged_in(&emulator, Some(&api_base)).await;
    let items = client
        .console()
        .pages::<u64>("NoTotal", 10)
        .collect_items()
        .await
        .unwrap();
    assert_eq!(items, (0..25).collect::<Vec<_>>(), "every item, none lost");
    // Pages 0 and 1 are full, page 2 is short: three requests.
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    calls.store(0, Ordering::SeqCst);
    let items = client
        .console()
        .pages::<u64>("ZeroPageSize", 10)
        .collect_items()
        .await
        .unwrap();
    assert_eq!(items, (0..25).collect::<Vec<_>>());
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_total_that_is_negative_or_too_large_is_a_decode_error() {
    let emulator = Emulator::builder().start().await.unwrap();
    let (api_base, _) = odd_server().await;
    let client = logged_in(&emulator, Some(&api_base)).await;
    for path in ["NegativeTotal", "HugeTotal"] {
        let error = client
            .console()
            .pages::<u64>(path, 10)
            .collect_items()
            .await
            .unwrap_err();
        assert!(
            matches!(error.kind(), ErrorKind::Decode { .. }),
            "{path}: {error}"
        );
    }
}
