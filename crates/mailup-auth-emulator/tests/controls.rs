//! The test controls through the library API: expiry, revocation, faults, latency, counters.

mod common;

use std::time::{Duration, Instant};

use common::*;
use mailup_auth_emulator::{Emulator, Fault};
use serde_json::Value;

async fn password_grant_raw(emu: &Emulator) -> Result<reqwest::Response, reqwest::Error> {
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
}

#[tokio::test]
async fn expire_all_access_tokens_now() {
    let emu = Emulator::builder().start().await.unwrap();
    let (a, _) = password_tokens(&emu).await;
    let (b, refresh) = password_tokens(&emu).await;
    emu.expire_all_access_tokens();
    for token in [&a, &b] {
        let (status, body) = api_get(&emu, "/Console/Authentication/Info", Some(token)).await;
        assert_eq!(status, 401);
        assert_eq!(
            body["ErrorDescription"],
            "Authorization error: Access token is expired"
        );
        assert!(!emu.is_access_token_live(token));
    }
    // Refreshing still works and yields a live token.
    let (status, body) = token_post(
        &emu,
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
    )
    .await;
    assert_eq!(status, 200);
    let fresh = body["access_token"].as_str().unwrap();
    assert_eq!(
        api_get(&emu, "/Console/Authentication/Info", Some(fresh))
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn revoke_one_or_all_refresh_tokens() {
    let emu = Emulator::builder().start().await.unwrap();
    let (_, r1) = password_tokens(&emu).await;
    let (_, r2) = password_tokens(&emu).await;
    let (_, r3) = password_tokens(&emu).await;
    assert!(emu.revoke_refresh_token(&r1));
    assert!(!emu.revoke_refresh_token(&r1));
    assert!(!emu.is_refresh_token_live(&r1));
    let (status, body) = token_post(
        &emu,
        &[("grant_type", "refresh_token"), ("refresh_token", &r1)],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    assert!(emu.is_refresh_token_live(&r2));
    emu.revoke_all_refresh_tokens();
    assert!(!emu.is_refresh_token_live(&r2) && !emu.is_refresh_token_live(&r3));
    assert_eq!(emu.issued_refresh_tokens().len(), 3);
}

#[tokio::test]
async fn status_faults_then_recovery() {
    let emu = Emulator::builder().start().await.unwrap();
    emu.fail_next_token_requests(2, Fault::Status500);
    emu.fail_next_token_requests(1, Fault::Status503);
    emu.fail_next_token_requests(1, Fault::HtmlErrorPage);
    emu.fail_next_token_requests(1, Fault::MalformedBody);
    for expected in [500, 500] {
        let response = password_grant_raw(&emu).await.unwrap();
        assert_eq!(response.status(), expected);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "server_error");
    }
    let response = password_grant_raw(&emu).await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let response = password_grant_raw(&emu).await.unwrap();
    assert_eq!(response.status(), 502);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(response.text().await.unwrap().contains("<html>"));
    let response = password_grant_raw(&emu).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let text = response.text().await.unwrap();
    assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");
    // Faults used up: back to normal.
    assert_eq!(password_grant_raw(&emu).await.unwrap().status(), 200);
    let counters = emu.counters();
    assert_eq!(counters.token_requests, 6);
    assert_eq!(counters.token_faults, 5);
    assert_eq!(counters.token_password, 1);
    assert_eq!(counters.access_tokens_issued, 1);
}

#[tokio::test]
async fn drop_connection_closes_the_socket_without_a_response() {
    let emu = Emulator::builder().start().await.unwrap();
    // Warm a keep-alive connection first, so the drop hits a reused connection too.
    let client = http();
    let ok = client
        .post(emu.token_url())
        .form(&[("grant_type", "nope")])
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 400);
    let _ = ok.bytes().await;
    emu.fail_next_token_requests(1, Fault::DropConnection);
    let result = client
        .post(emu.token_url())
        .form(&[("grant_type", "nope")])
        .send()
        .await;
    let error = result.expect_err("a dropped connection gives no response");
    assert!(error.status().is_none());
    assert!(!error.is_timeout(), "{error:?}");
    // Plain TCP view: the socket reaches EOF with zero bytes of response.
    emu.fail_next_token_requests(1, Fault::DropConnection);
    let bytes = raw_exchange(
        &emu,
        "GET /Authorization/OAuth/Token?grant_type=password HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert!(bytes.is_empty(), "{}", String::from_utf8_lossy(&bytes));
    // And then the server carries on.
    assert_eq!(password_grant_raw(&emu).await.unwrap().status(), 200);
    assert_eq!(emu.counters().token_faults, 2);
}

/// Sends raw bytes on a fresh TCP connection and reads until EOF (bounded by a timeout).
async fn raw_exchange(emu: &Emulator, request: &str) -> Vec<u8> {
    use std::io::{Read, Write};
    let addr = emu.local_addr();
    let request = request.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut out = Vec::new();
        match stream.read_to_end(&mut out) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("read failed: {e}"),
        }
        out
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn latency_is_added() {
    let emu = Emulator::builder().start().await.unwrap();
    let (access, _) = password_tokens(&emu).await;
    emu.set_token_latency(Duration::from_millis(300));
    let started = Instant::now();
    password_grant_raw(&emu).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    emu.set_token_latency(Duration::ZERO);
    emu.set_api_latency(Duration::from_millis(300));
    let started = Instant::now();
    assert_eq!(
        api_get(&emu, "/Console/Authentication/Info", Some(&access))
            .await
            .0,
        200
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    // Reset: a call must not wait the latency again. Measured against a long latency so a
    // loaded CI machine cannot make a plain round trip look delayed.
    emu.set_api_latency(Duration::from_secs(3));
    emu.set_api_latency(Duration::ZERO);
    let started = Instant::now();
    api_get(&emu, "/Console/Authentication/Info", Some(&access)).await;
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn counters_and_reset() {
    let emu = Emulator::builder().start().await.unwrap();
    let code = code(&emu).await;
    token_post(
        &emu,
        &[("grant_type", "authorization_code"), ("code", &code)],
    )
    .await;
    let (access, refresh) = password_tokens(&emu).await;
    token_post(
        &emu,
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
    )
    .await;
    api_get(&emu, "/Console/Authentication/Info", Some(&access)).await;
    api_get(&emu, "/Console/Authentication/Info", None).await;
    let c = emu.counters();
    assert_eq!(
        (
            c.token_requests,
            c.token_authorization_code,
            c.token_password,
            c.token_refresh_token
        ),
        (3, 1, 1, 1)
    );
    assert_eq!((c.api_calls, c.api_unauthorized, c.codes_issued), (2, 1, 1));
    assert_eq!(c.access_tokens_issued, 3);
    let json = serde_json::to_value(&c).unwrap();
    assert_eq!(json["codes_issued"], 1);
    emu.reset_counters();
    assert_eq!(emu.counters(), mailup_auth_emulator::Counters::default());
}

#[tokio::test]
async fn advance_clock_expires_tokens_with_the_system_clock() {
    let emu = Emulator::builder().start().await.unwrap();
    let (access, _) = password_tokens(&emu).await;
    let before = emu.now();
    emu.advance_clock(Duration::from_secs(3600));
    assert!(emu.now() >= before + Duration::from_secs(3600));
    let (status, body) = api_get(&emu, "/Console/Authentication/Info", Some(&access)).await;
    assert_eq!(status, 401);
    assert_eq!(
        body["ErrorDescription"],
        "Authorization error: Access token is expired"
    );
}

#[tokio::test]
async fn shutdown_and_drop_stop_the_server() {
    let emu = Emulator::builder().start().await.unwrap();
    let addr = emu.local_addr();
    emu.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    let emu = Emulator::builder().start().await.unwrap();
    let addr = emu.local_addr();
    drop(emu);
    let mut stopped = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            stopped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(stopped);
}

#[tokio::test]
async fn clear_faults_drops_queued_faults() {
    let emu = Emulator::builder().start().await.unwrap();
    emu.fail_next_token_requests(5, Fault::Status500);
    emu.fail_next_token_requests(0, Fault::Status503); // zero is a no-op
    assert_eq!(password_grant_raw(&emu).await.unwrap().status(), 500);
    emu.clear_faults();
    assert_eq!(password_grant_raw(&emu).await.unwrap().status(), 200);
}

#[tokio::test]
async fn builder_accounts_bind_and_start_errors() {
    use mailup_auth_emulator::{RegisteredClient, StartError, User};
    let emu = Emulator::builder()
        .without_demo_accounts()
        .client(RegisteredClient::new("only", "secret"))
        .user(User::new("solo", "pw"))
        .start()
        .await
        .unwrap();
    // The demo client is gone: 400 page at LogOn, 401 at the token endpoint.
    let response = http()
        .get(emu.authorize_url(mailup_auth_emulator::DEFAULT_CLIENT_ID, REDIRECT, "s"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(password_grant_raw(&emu).await.unwrap().status(), 401);
    let response = http()
        .post(emu.token_url())
        .basic_auth("only", Some("secret"))
        .form(&[
            ("grant_type", "password"),
            ("username", "solo"),
            ("password", "pw"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(!format!("{emu:?}").contains("secret"));

    // A taken port is a typed error.
    let taken = emu.local_addr();
    let error = Emulator::builder().bind(taken).start().await.unwrap_err();
    assert!(matches!(error, StartError::Bind { .. }), "{error:?}");
    // So is an unusable configuration.
    let error = Emulator::builder()
        .code_lifetime(Duration::ZERO)
        .start()
        .await
        .unwrap_err();
    assert!(matches!(error, StartError::Config(_)), "{error:?}");
    // A chosen port is honoured.
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let emu2 = Emulator::builder().bind(free).start().await.unwrap();
    assert_eq!(emu2.local_addr(), free);
    assert_eq!(emu2.base_url().as_str(), format!("http://{free}/"));
    assert!(emu2
        .console_api_base()
        .as_str()
        .ends_with("/API/v1.1/Rest/ConsoleService.svc"));
}

#[tokio::test]
async fn shutdown_future_is_send() {
    fn is_send<T: Send>(_: &T) {}
    let emu = Emulator::builder().start().await.unwrap();
    let shutdown = emu.shutdown();
    is_send(&shutdown);
    shutdown.await;
}
