//! The bearer middleware and layer against a hostile caller and server (issue 15's review):
//! look-alike origins get no token, a caller's own `Authorization` is replaced only where the
//! token may go, a streaming body's 401 is returned (not resent), a 401 with a large body is
//! dropped unread, concurrent requests through a rejected token cause one refresh, and trace
//! logs hold no token. Everything over 127.0.0.1; look-alike host names resolve there.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::get;
use axum::Router;
use http::StatusCode;
use mailup_auth::{MailUpClient, MailUpMiddleware};
use mailup_auth_emulator::{Emulator, DEFAULT_CLIENT_SECRET, DEFAULT_PASSWORD};

mod support;

use support::{emulator_builder, log_in};

const INFO: &str = "Console/Authentication/Info";

/// A server that records the `Authorization` header of every request (`None` when absent).
async fn recording_server() -> (SocketAddr, Arc<Mutex<Vec<Option<String>>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = |State(seen): State<Arc<Mutex<Vec<Option<String>>>>>, headers: HeaderMap| async move {
        let value = headers
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_owned());
        seen.lock().unwrap().push(value);
        "ok"
    };
    let router = Router::new().fallback(get(record)).with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (addr, seen)
}

async fn logged_in(emulator: &Emulator, trusted: Option<&str>) -> MailUpClient {
    let mut builder = emulator_builder(emulator);
    if let Some(origin) = trusted {
        builder = builder.allow_insecure_http().trust_origin(origin);
    }
    log_in(builder).await
}

#[tokio::test]
async fn look_alike_origins_get_no_token() {
    let emulator = Emulator::builder().start().await.unwrap();
    let (addr, seen) = recording_server().await;
    let port = addr.port();
    let client = logged_in(&emulator, Some(&format!("http://api.mailup.test:{port}"))).await;
    // Every name resolves to the recording server on 127.0.0.1.
    let mut plain = reqwest::Client::builder().no_proxy();
    for host in [
        "api.mailup.test",
        "api.mailup.test.",
        "api.mailup.test.evil.test",
        "evil.test",
    ] {
        plain = plain.resolve(host, addr);
    }
    let http = reqwest_middleware::ClientBuilder::new(plain.build().unwrap())
        .with(MailUpMiddleware::new(client))
        .build();
    let cases = [
        // (url, gets the token)
        (format!("http://api.mailup.test:{port}/x"), true),
        (format!("http://API.MailUp.TEST:{port}/x"), true),
        (format!("http://api.mailup.test.evil.test:{port}/x"), false),
        // A trailing dot names the same host in DNS, but it is another origin: no token.
        (format!("http://api.mailup.test.:{port}/x"), false),
        (
            format!("http://api.mailup.test:{port}@evil.test:{port}/x"),
            false,
        ),
        (
            format!("http://evil.test:{port}/api.mailup.test:{port}/x"),
            false,
        ),
        (format!("https://api.mailup.test:{port}/x"), false),
        // The same server on another name: another origin.
        (format!("http://127.0.0.1:{port}/x"), false),
    ];
    for (url, token) in &cases {
        seen.lock().unwrap().clear();
        let result = http.get(url.as_str()).send().await;
        if url.starts_with("https") {
            // No TLS on the recording server: the point is only that no token was sent.
            assert!(result.is_err(), "{url}");
            assert!(seen.lock().unwrap().is_empty(), "{url}");
            continue;
        }
        assert_eq!(result.unwrap().status(), StatusCode::OK, "{url}");
        let got = seen.lock().unwrap().clone();
        assert_eq!(got.len(), 1, "{url}");
        assert_eq!(
            got[0].as_deref().is_some_and(|v| v.starts_with("Bearer ")),
            *token,
            "{url}: {got:?}"
        );
    }
    // Another port of the API base's own host is another origin.
    seen.lock().unwrap().clear();
    let api_port = emulator.base_url().port().unwrap();
    let url = format!("http://127.0.0.1:{port}/{api_port}/{INFO}");
    http.get(url).send().await.unwrap();
    assert_eq!(seen.lock().unwrap().clone(), vec![None]);
}

#[tokio::test]
async fn a_callers_own_authorization_is_replaced_only_where_the_token_goes() {
    let emulator = Emulator::builder().start().await.unwrap();
    let (addr, seen) = recording_server().await;
    let client = logged_in(
        &emulator,
        Some(&format!("http://127.0.0.1:{}", addr.port())),
    )
    .await;
    let http = reqwest_middleware::ClientBuilder::new(
        reqwest::Client::builder().no_proxy().build().unwrap(),
    )
    .with(MailUpMiddleware::new(client.clone()))
    .build();
    http.get(format!("http://{addr}/x"))
        .header("Authorization", "Basic Zm9vOmJhcg==")
        .header("Authorization", "Bearer other")
        .send()
        .await
        .unwrap();
    let token = client.access_token().await.unwrap();
    assert_eq!(
        seen.lock().unwrap().clone(),
        vec![Some(format!("Bearer {}", token.secret()))],
        "exactly one Authorization, the client's"
    );

    // Where the token does not go, the caller's header is left as it is.
    let untrusted = logged_in(&emulator, None).await;
    let http = reqwest_middleware::ClientBuilder::new(
        reqwest::Client::builder().no_proxy().build().unwrap(),
    )
    .with(MailUpMiddleware::new(untrusted))
    .build();
    seen.lock().unwrap().clear();
    http.get(format!("http://{addr}/x"))
        .header("Authorization", "Basic Zm9vOmJhcg==")
        .send()
        .await
        .unwrap();
    assert_eq!(
        seen.lock().unwrap().clone(),
        vec![Some("Basic Zm9vOmJhcg==".to_owned())]
    );
}

#[tokio::test]
async fn concurrent_requests_through_a_rejected_token_cause_one_refresh() {
    let emulator = Emulator::builder().start().await.unwrap();
    let client = logged_in(&emulator, None).await;
    let http = reqwest_middleware::ClientBuilder::new(
        reqwest::Client::builder().no_proxy().build().unwrap(),
    )
    .with(MailUpMiddleware::new(client))
    .build();
    let url = format!("{}/{INFO}", emulator.console_api_base());
    let before = emulator.counters();
    emulator.expire_all_access_tokens();
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let http = http.clone();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            http.get(url).send().await.unwrap().status()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), StatusCode::OK);
    }
    let after = emulator.counters();
    assert_eq!(after.token_refresh_token - before.token_refresh_token, 1);
}

#[tokio::test]
async fn a_streaming_body_is_not_sent_again_after_a_401() {
    let emulator = Emulator::builder().start().await.unwrap();
    let client = logged_in(&emulator, None).await;
    let http = reqwest_middleware::ClientBuilder::new(
        reqwest::Client::builder().no_proxy().build().unwrap(),
    )
    .with(MailUpMiddleware::new(client))
    .build();
    let url = format!("{}/{INFO}", emulator.console_api_base());
    let before = emulator.counters();
    emulator.expire_all_access_tokens();
    let chunks: Vec<Result<&'static str, std::io::Error>> = vec![Ok("{}")];
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let response = http.post(url.as_str()).body(body).send().await.unwrap();
    assert_eq!(
        response.status(),
        StatusCode::UNAUTHORIZED,
        "returned, not resent"
    );
    let after = emulator.counters();
    assert_eq!(after.api_calls - before.api_calls, 1);
    assert_eq!(after.token_refresh_token - before.token_refresh_token, 0);
    // The rejected token is not offered again: the next request refreshes first.
    let response = http.get(url.as_str()).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let last = emulator.counters();
    assert_eq!(last.token_refresh_token - after.token_refresh_token, 1);
    assert_eq!(last.api_unauthorized - after.api_unauthorized, 0);
}

#[tokio::test]
async fn a_401_with_a_large_body_is_dropped_unread_and_the_retry_answers() {
    let emulator = Emulator::builder().start().await.unwrap();
    let calls = Arc::new(Mutex::new(0_u32));
    let answer = |State(calls): State<Arc<Mutex<u32>>>| async move {
        let mut calls = calls.lock().unwrap();
        *calls += 1;
        if *calls == 1 {
            (StatusCode::UNAUTHORIZED, vec![b'x'; 64 << 20])
        } else {
            (StatusCode::OK, b"fine".to_vec())
        }
    };
    let router = Router::new()
        .fallback(get(answer))
        .with_state(calls.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let client = logged_in(&emulator, Some(&format!("http://{addr}"))).await;
    let http = reqwest_middleware::ClientBuilder::new(
        reqwest::Client::builder().no_proxy().build().unwrap(),
    )
    .with(MailUpMiddleware::new(client))
    .build();
    let before = emulator.counters();
    let response = http.get(format!("http://{addr}/x")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), "fine");
    assert_eq!(*calls.lock().unwrap(), 2);
    let after = emulator.counters();
    assert_eq!(after.token_refresh_token - before.token_refresh_token, 1);
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// The subscriber is the process's (a scoped one misses events whose callsites the other tests
// of this file registered first); it sees their logs too, which must hold no secret either.
#[tokio::test]
async fn trace_logs_of_a_refresh_and_retry_hold_no_token() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let emulator = Emulator::builder().start().await.unwrap();
    let client = logged_in(&emulator, None).await;
    let http = reqwest_middleware::ClientBuilder::new(
        reqwest::Client::builder().no_proxy().build().unwrap(),
    )
    .with(MailUpMiddleware::new(client.clone()))
    .build();
    let url = format!("{}/{INFO}", emulator.console_api_base());
    let old = client.access_token().await.unwrap();
    emulator.expire_all_access_tokens();
    let response = http.get(url.as_str()).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let new = client.access_token().await.unwrap();
    assert_ne!(old.secret(), new.secret());

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("401"), "the trace saw the retry: {logs}");
    for secret in [
        old.secret(),
        new.secret(),
        DEFAULT_CLIENT_SECRET,
        DEFAULT_PASSWORD,
    ] {
        assert!(!logs.contains(secret), "a secret in the trace log");
    }
}

// ---- tower ---------------------------------------------------------------------------------

type Hyper = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<hyper::body::Bytes>,
>;

fn tower_stack(client: MailUpClient) -> mailup_auth::MailUpService<Hyper> {
    let hyper = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    tower::ServiceBuilder::new()
        .layer(mailup_auth::MailUpLayer::new(client))
        .service(hyper)
}

async fn tower_send(
    service: &mut mailup_auth::MailUpService<Hyper>,
    request: http::Request<http_body_util::Full<hyper::body::Bytes>>,
) -> Result<StatusCode, String> {
    use tower_service::Service as _;
    std::future::poll_fn(|cx| service.poll_ready(cx))
        .await
        .map_err(|e| e.to_string())?;
    service
        .call(request)
        .await
        .map(|response| response.status())
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn the_layer_sends_no_token_through_userinfo_or_relative_uris_and_replaces_a_callers_own() {
    let emulator = Emulator::builder().start().await.unwrap();
    let (addr, seen) = recording_server().await;
    let api_port = emulator.base_url().port().unwrap();
    let client = logged_in(&emulator, None).await;
    let mut service = tower_stack(client.clone());
    // The API base's host and port as userinfo: the request goes to the recording server.
    let request = http::Request::get(format!("http://127.0.0.1:{api_port}@{addr}/x"))
        .body(Default::default())
        .unwrap();
    // hyper may refuse such a URI; either way no token reaches anyone.
    let _ = tower_send(&mut service, request).await;
    assert!(seen.lock().unwrap().iter().all(Option::is_none));
    // A relative URI has no origin: passed through untouched (hyper then refuses it).
    let request = http::Request::get(format!("/API/v1.1/Rest/ConsoleService.svc/{INFO}"))
        .body(Default::default())
        .unwrap();
    assert!(tower_send(&mut service, request).await.is_err());
    assert!(seen.lock().unwrap().iter().all(Option::is_none));

    // A trusted origin: the caller's own Authorization is replaced, one header is sent.
    let trusting = logged_in(&emulator, Some(&format!("http://{addr}"))).await;
    let mut service = tower_stack(trusting.clone());
    seen.lock().unwrap().clear();
    let request = http::Request::get(format!("http://{addr}/x"))
        .header("Authorization", "Bearer someone-else")
        .body(Default::default())
        .unwrap();
    assert_eq!(tower_send(&mut service, request).await, Ok(StatusCode::OK));
    let token = trusting.access_token().await.unwrap();
    assert_eq!(
        seen.lock().unwrap().clone(),
        vec![Some(format!("Bearer {}", token.secret()))]
    );
}

#[tokio::test]
async fn concurrent_calls_through_the_layer_on_a_rejected_token_cause_one_refresh() {
    let emulator = Emulator::builder().start().await.unwrap();
    let client = logged_in(&emulator, None).await;
    let service = tower_stack(client);
    let url = format!("{}/{INFO}", emulator.console_api_base());
    let before = emulator.counters();
    emulator.expire_all_access_tokens();
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let mut service = service.clone();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let request = http::Request::get(url).body(Default::default()).unwrap();
            tower_send(&mut service, request).await
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), Ok(StatusCode::OK));
    }
    let after = emulator.counters();
    assert_eq!(after.token_refresh_token - before.token_refresh_token, 1);
}
