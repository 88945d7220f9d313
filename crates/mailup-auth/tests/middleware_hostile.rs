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
use mailup_auth::{ClientSecret, MailUpClient, MailUpMiddleware, Password};
use mailup_auth_emulator::{
    Emulator, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_PASSWORD, DEFAULT_USERNAME,
};

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
    let mut builder =
        MailUpClient::builder(DEFAULT_CLIENT_ID, ClientSecret::new(DEFAULT_CLIENT_SECRET))
            .auth_base(emulator.base_url().as_str())
            .memory_store();
    if let Some(origin) = trusted {
        builder = builder.allow_insecure_http().trust_origin(origin);
    }
    let client = builder.build().await.unwrap();
    client
        .login_with_password(DEFAULT_USERNAME, &Password::new(DEFAULT_PASSWORD))
        .await
        .unwrap();
    client
}

#[tokio::test]
async fn look_alike_origins_get_no_token() {
    let emulator = Emulator::builder().start().await.unwrap();
    let (addr, seen) = recording_server().await;
    let port = addr.port();
    let client = logged_in(&emulator, Some(&format!("http://api.mailup.test:{port}"))).await;
    // Every name resolves to the recording server on 127.0.0.1.
    let mut plain = reqwest::Client::builder().no_proxy();
    for host in ["api.mailup.test", "api.mailup.test.evil.test", "evil.test"] {
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
