//! The transport against the MailUp emulator: a real token endpoint and Console API, and the
//! emulator's injected faults.

use axum::http::{header, HeaderValue, Method, StatusCode};
use mailup_auth_core::parse_token_response;
use mailup_auth_core::Transport;
use mailup_auth_core::{HttpRequest, TransportErrorKind};
use mailup_auth_emulator::{
    Emulator, Fault, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_PASSWORD, DEFAULT_USERNAME,
};
use mailup_auth_http::ReqwestTransport;

fn password_grant(emulator: &Emulator) -> HttpRequest {
    let body = format!(
        "grant_type=password&username={DEFAULT_USERNAME}&password={DEFAULT_PASSWORD}\
         &client_id={DEFAULT_CLIENT_ID}&client_secret={DEFAULT_CLIENT_SECRET}"
    );
    HttpRequest::new(Method::POST, emulator.token_url())
        .with_header(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        )
        .with_body(body.into_bytes())
}

fn info_url(emulator: &Emulator) -> url::Url {
    let base = emulator.console_api_base();
    url::Url::parse(&format!(
        "{}/Console/Authentication/Info",
        base.as_str().trim_end_matches('/')
    ))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_then_api_call() {
    let emulator = Emulator::builder().start().await.unwrap();
    let transport = ReqwestTransport::new().unwrap();

    let response = transport.send(password_grant(&emulator)).await.unwrap();
    assert_eq!(response.status, StatusCode::OK);
    let tokens = parse_token_response(&response).unwrap();
    assert!(tokens.refresh_token.is_some());

    let bearer = format!("Bearer {}", tokens.access_token.secret());
    let request = HttpRequest::new(Method::GET, info_url(&emulator)).with_header(
        header::AUTHORIZATION,
        HeaderValue::from_str(&bearer).unwrap(),
    );
    let response = transport.send(request).await.unwrap();
    assert_eq!(response.status, StatusCode::OK);
    let body = String::from_utf8(response.body.to_vec()).unwrap();
    assert!(
        body.contains(&format!("\"Username\":\"{DEFAULT_USERNAME}\"")),
        "{body}"
    );
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_without_a_token_is_a_401_response_with_mailup_json() {
    let emulator = Emulator::builder().start().await.unwrap();
    let transport = ReqwestTransport::new().unwrap();
    let response = transport
        .send(HttpRequest::new(Method::GET, info_url(&emulator)))
        .await
        .unwrap();
    assert_eq!(response.status, StatusCode::UNAUTHORIZED);
    assert!(String::from_utf8(response.body.to_vec())
        .unwrap()
        .contains("\"ErrorCode\""));
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_faults_come_back_as_responses_or_typed_errors() {
    let emulator = Emulator::builder().start().await.unwrap();
    let transport = ReqwestTransport::new().unwrap();

    emulator.fail_next_token_requests(1, Fault::Status503);
    let response = transport.send(password_grant(&emulator)).await.unwrap();
    assert_eq!(response.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(!response.body.is_empty());

    emulator.fail_next_token_requests(1, Fault::HtmlErrorPage);
    let response = transport.send(password_grant(&emulator)).await.unwrap();
    assert_eq!(response.status, StatusCode::BAD_GATEWAY);
    assert!(String::from_utf8(response.body.to_vec())
        .unwrap()
        .contains("<html"));

    emulator.fail_next_token_requests(1, Fault::DropConnection);
    let error = transport.send(password_grant(&emulator)).await.unwrap_err();
    assert_eq!(error.kind, TransportErrorKind::ConnectionClosed, "{error}");
    assert!(!error.message.contains(DEFAULT_CLIENT_SECRET));
    assert!(!error.message.contains(DEFAULT_PASSWORD));

    // The fault was one-shot: the next request succeeds.
    let response = transport.send(password_grant(&emulator)).await.unwrap();
    assert_eq!(response.status, StatusCode::OK);
    emulator.shutdown().await;
}
