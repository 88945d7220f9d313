//! The bearer middleware (`reqwest-middleware`) and layer (`tower`) in an application's own
//! HTTP stack, against the emulator over 127.0.0.1: the token is added, MailUp's 401 leads to
//! one refresh and one retry, a second 401 reaches the caller, a token that cannot be renewed
//! is an error, and a request to any other origin carries no token.

use std::future::poll_fn;

use http::StatusCode;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use mailup_auth::{
    MailUpAccounts, MailUpClient, MailUpLayer, MailUpMiddleware, MailUpServiceError, Password,
};
use mailup_auth_emulator::{Emulator, Fault, DEFAULT_PASSWORD, DEFAULT_USERNAME};
use reqwest_middleware::ClientWithMiddleware;
use tower::ServiceBuilder;
use tower_service::Service;

mod support;

use support::{emulator_builder as builder, log_in};

const INFO: &str = "Console/Authentication/Info";

/// The emulator and a client logged in to it.
async fn logged_in() -> (Emulator, MailUpClient) {
    let emulator = Emulator::builder().start().await.unwrap();
    let client = log_in(builder(&emulator)).await;
    (emulator, client)
}

fn info_url(emulator: &Emulator) -> String {
    format!("{}/{INFO}", emulator.console_api_base())
}

/// The application's own reqwest client, with the middleware in its chain.
fn reqwest_client(middleware: MailUpMiddleware) -> ClientWithMiddleware {
    let plain = reqwest::Client::builder().no_proxy().build().unwrap();
    reqwest_middleware::ClientBuilder::new(plain)
        .with(middleware)
        .build()
}

async fn body_json(response: reqwest::Response) -> serde_json::Value {
    serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
}

// ---- reqwest-middleware ------------------------------------------------------------------

#[tokio::test]
async fn the_middleware_adds_the_token_to_the_api_origin() {
    let (emulator, client) = logged_in().await;
    let http = reqwest_client(MailUpMiddleware::new(client));
    let response = http.get(info_url(&emulator)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_json(response).await["Username"], DEFAULT_USERNAME);
    assert_eq!(emulator.counters().api_unauthorized, 0);
}

#[tokio::test]
async fn the_middleware_refreshes_once_and_retries_once_on_a_401() {
    let (emulator, client) = logged_in().await;
    let http = reqwest_client(MailUpMiddleware::new(client.clone()));
    let before = emulator.counters();
    // The client still holds its token as fresh; MailUp says it is expired.
    emulator.expire_all_access_tokens();
    let response = http.get(info_url(&emulator)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_json(response).await["Username"], DEFAULT_USERNAME);
    let after = emulator.counters();
    assert_eq!(after.api_unauthorized - before.api_unauthorized, 1);
    assert_eq!(after.token_refresh_token - before.token_refresh_token, 1);
    assert_eq!(after.api_calls - before.api_calls, 2);
    // The rotated refresh token is the client's now: the next request needs no refresh.
    let response = http.get(info_url(&emulator)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        emulator.counters().token_refresh_token,
        after.token_refresh_token
    );
}

#[tokio::test]
async fn the_middleware_returns_a_second_401_to_the_caller() {
    let (emulator, client) = logged_in().await;
    let http = reqwest_client(MailUpMiddleware::new(client));
    let before = emulator.counters();
    emulator.fail_next_api_requests(3, Fault::Empty401);
    let response = http.get(info_url(&emulator)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let after = emulator.counters();
    // Two attempts, one refresh between them, never a third.
    assert_eq!(after.api_faults - before.api_faults, 2);
    assert_eq!(after.api_calls - before.api_calls, 2);
    assert_eq!(after.token_refresh_token - before.token_refresh_token, 1);
    emulator.clear_faults();
}

#[tokio::test]
async fn the_middleware_fails_when_no_token_can_be_had() {
    let (emulator, client) = logged_in().await;
    let http = reqwest_client(MailUpMiddleware::new(client));
    emulator.expire_all_access_tokens();
    emulator.revoke_all_refresh_tokens();
    let error = http.get(info_url(&emulator)).send().await.unwrap_err();
    let reqwest_middleware::Error::Middleware(error) = error else {
        panic!("expected the middleware's error, got {error:?}");
    };
    let error = error.downcast_ref::<mailup_auth::Error>().unwrap();
    assert!(error.is_reauthorization_required(), "{error}");
}

#[tokio::test]
async fn the_middleware_sends_no_token_to_another_origin() {
    let (emulator, client) = logged_in().await;
    // Another server laid out like MailUp, on another port: another origin.
    let foreign = Emulator::builder().start().await.unwrap();
    let http = reqwest_client(MailUpMiddleware::new(client));
    let response = http.get(info_url(&foreign)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body = body_json(response).await;
    assert_eq!(
        body["ErrorDescription"],
        "Authorization error: Access token is missing"
    );
    // No retry and no refresh for a request that was never ours.
    assert_eq!(foreign.counters().api_calls, 1);
    assert_eq!(emulator.counters().token_refresh_token, 0);
}

#[tokio::test]
async fn the_middleware_takes_an_accounts_profile() {
    let emulator = Emulator::builder().start().await.unwrap();
    let accounts = MailUpAccounts::builder(builder(&emulator))
        .background_refresh(false)
        .build()
        .await
        .unwrap();
    accounts
        .client("customer-1")
        .await
        .unwrap()
        .login_with_password(DEFAULT_USERNAME, &Password::new(DEFAULT_PASSWORD))
        .await
        .unwrap();
    let http = reqwest_client(MailUpMiddleware::for_account(accounts, "customer-1"));
    emulator.expire_all_access_tokens();
    let response = http.get(info_url(&emulator)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(emulator.counters().token_refresh_token, 1);
}

// ---- tower ---------------------------------------------------------------------------------

type Hyper = HyperClient<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// The application's own tower stack: the layer over hyper's client.
fn tower_stack(client: MailUpClient) -> mailup_auth::MailUpService<Hyper> {
    let hyper = HyperClient::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    ServiceBuilder::new()
        .layer(MailUpLayer::new(client))
        .service(hyper)
}

async fn tower_get(
    service: &mut mailup_auth::MailUpService<Hyper>,
    url: &str,
) -> (StatusCode, serde_json::Value) {
    poll_fn(|cx| service.poll_ready(cx)).await.unwrap();
    let request = http::Request::get(url).body(Full::default()).unwrap();
    let response = service.call(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let json = if body.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&body).unwrap()
    };
    (status, json)
}

#[tokio::test]
async fn the_layer_adds_the_token_and_retries_once_after_a_refresh() {
    let (emulator, client) = logged_in().await;
    let mut service = tower_stack(client);
    let (status, body) = tower_get(&mut service, &info_url(&emulator)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["Username"], DEFAULT_USERNAME);

    emulator.expire_all_access_tokens();
    let before = emulator.counters();
    let (status, body) = tower_get(&mut service, &info_url(&emulator)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["Username"], DEFAULT_USERNAME);
    let after = emulator.counters();
    assert_eq!(after.api_unauthorized - before.api_unauthorized, 1);
    assert_eq!(after.token_refresh_token - before.token_refresh_token, 1);
}

#[tokio::test]
async fn the_layer_returns_a_second_401_to_the_caller() {
    let (emulator, client) = logged_in().await;
    let mut service = tower_stack(client);
    let before = emulator.counters();
    emulator.fail_next_api_requests(3, Fault::Empty401);
    let (status, _) = tower_get(&mut service, &info_url(&emulator)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let after = emulator.counters();
    assert_eq!(after.api_faults - before.api_faults, 2);
    assert_eq!(after.token_refresh_token - before.token_refresh_token, 1);
    emulator.clear_faults();
}

#[tokio::test]
async fn the_layer_sends_no_token_to_another_origin() {
    let (emulator, client) = logged_in().await;
    let foreign = Emulator::builder().start().await.unwrap();
    let mut service = tower_stack(client);
    let (status, body) = tower_get(&mut service, &info_url(&foreign)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        body["ErrorDescription"],
        "Authorization error: Access token is missing"
    );
    assert_eq!(foreign.counters().api_calls, 1);
    assert_eq!(emulator.counters().token_refresh_token, 0);
}

#[tokio::test]
async fn the_layer_fails_when_no_token_can_be_had() {
    let (emulator, client) = logged_in().await;
    let mut service = tower_stack(client);
    emulator.expire_all_access_tokens();
    emulator.revoke_all_refresh_tokens();
    poll_fn(|cx| service.poll_ready(cx)).await.unwrap();
    let request = http::Request::get(info_url(&emulator))
        .body(Full::default())
        .unwrap();
    match service.call(request).await {
        Err(MailUpServiceError::Auth(error)) => {
            assert!(error.is_reauthorization_required(), "{error}")
        }
        other => panic!("expected an authorization error, got {other:?}"),
    }
}
