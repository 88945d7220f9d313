//! The transport against real servers on 127.0.0.1: an axum app for well-formed answers, and raw
//! TCP listeners for the misbehaving ones (dropped connections, half responses, stalls).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{Html, IntoResponse};
use axum::routing::{any, get};
use axum::Router;
use mailup_auth_core::internal::refresh_request;
use mailup_auth_core::ClientConfig;
use mailup_auth_core::Transport;
use mailup_auth_core::{ClientSecret, RefreshToken};
use mailup_auth_core::{
    HttpRequest, TransportError, TransportErrorKind, DEFAULT_API_RESPONSE_LIMIT,
    TOKEN_RESPONSE_LIMIT,
};
use mailup_auth_http::{ReqwestTransport, DEFAULT_USER_AGENT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use url::Url;

/// Echoes what arrived: method, user agent, content type and body, as plain text.
async fn echo(request: Request) -> String {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let header = |name: header::HeaderName| {
        parts
            .headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    format!(
        "{} {} ua={} ct={} body={}",
        parts.method,
        parts.uri,
        header(header::USER_AGENT),
        header(header::CONTENT_TYPE),
        String::from_utf8_lossy(&body)
    )
}

async fn app_server() -> SocketAddr {
    let app = Router::new()
        .route("/echo", any(echo))
        .route(
            "/token-error",
            any(|| async {
                (
                    StatusCode::BAD_REQUEST,
                    [(header::CONTENT_TYPE, "application/json")],
                    r#"{"error":"invalid_grant","error_description":"expired"}"#,
                )
            }),
        )
        .route(
            "/unavailable",
            get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "try later") }),
        )
        .route(
            "/proxy-error",
            get(|| async {
                (
                    StatusCode::BAD_GATEWAY,
                    Html("<html><body><h1>502 Bad Gateway</h1></body></html>"),
                )
            }),
        )
        .route(
            "/redirect",
            any(|| async {
                let mut headers = HeaderMap::new();
                headers.insert(
                    header::LOCATION,
                    HeaderValue::from_static("http://127.0.0.1:9/stolen"),
                );
                (StatusCode::FOUND, headers, "moved").into_response()
            }),
        )
        .route("/token-100k", any(|| async { vec![b'a'; 100 * 1024] }))
        .route("/api-1m", get(|| async { one_mib() }))
        .route("/ten", get(|| async { "0123456789" }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "too late"
            }),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// A raw server that runs `handle` on each accepted connection (at most a few: tests are
/// bounded).
async fn raw_server<F, Fut>(handle: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        for _ in 0..4 {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(handle(stream));
        }
    });
    addr
}

/// Reads the request head so the client is past sending when the server misbehaves.
async fn read_head(stream: &mut TcpStream) {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buffer.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buffer.extend_from_slice(&chunk[..n]),
            _ => return,
        }
    }
}

/// 1 MiB that is not all the same byte, so a reordered or truncated copy shows.
fn one_mib() -> Vec<u8> {
    (0..1024 * 1024).map(|i| (i % 251) as u8).collect()
}

/// Writes a chunked `200` answer of `total` bytes in `chunk`-byte chunks; stops quietly when
/// the client has gone.
async fn write_chunked(stream: &mut TcpStream, total: usize, chunk: usize) {
    let head =
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
    if stream.write_all(head).await.is_err() {
        return;
    }
    let data = vec![b'x'; chunk];
    let mut sent = 0;
    while sent < total {
        let n = chunk.min(total - sent);
        let framed = [format!("{n:x}\r\n").as_bytes(), &data[..n], b"\r\n"].concat();
        if stream.write_all(&framed).await.is_err() {
            return;
        }
        sent += n;
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
}

fn token_config(addr: SocketAddr, path: &str) -> ClientConfig {
    ClientConfig::builder("cid", ClientSecret::new("s3cret"))
        .token_url(format!("http://{addr}{path}"))
        .build()
        .unwrap()
}

fn assert_too_large(error: &TransportError, limit: usize) {
    assert_eq!(error.kind, TransportErrorKind::ResponseTooLarge, "{error}");
    assert!(
        error.message.contains(&format!("limit of {limit} bytes")),
        "{error}"
    );
    let shown = format!("{error} {error:?}");
    assert!(
        !shown.contains("xxxx") && !shown.contains("aaaa"),
        "{shown}"
    );
    assert_no_secret(error);
}

fn url(addr: SocketAddr, path_and_query: &str) -> Url {
    Url::parse(&format!("http://{addr}{path_and_query}")).unwrap()
}

fn fast_transport() -> ReqwestTransport {
    ReqwestTransport::builder()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap()
}

fn assert_no_secret(error: &TransportError) {
    let shown = format!("{error} {error:?}");
    assert!(!shown.contains("s3cret"), "secret leaked: {shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn success_carries_method_headers_body_and_default_user_agent() {
    let addr = app_server().await;
    let transport = ReqwestTransport::new().unwrap();
    let request = HttpRequest::new(Method::POST, url(addr, "/echo?a=1"))
        .with_header(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        )
        .with_body(b"grant_type=refresh_token".to_vec());
    let response = transport.send(request).await.unwrap();
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(
        response.headers[header::CONTENT_TYPE],
        "text/plain; charset=utf-8"
    );
    assert_eq!(
        String::from_utf8(response.body.to_vec()).unwrap(),
        format!(
            "POST /echo?a=1 ua={DEFAULT_USER_AGENT} ct=application/x-www-form-urlencoded \
             body=grant_type=refresh_token"
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_user_agent_is_sent_and_clones_share_the_client() {
    let addr = app_server().await;
    let transport = ReqwestTransport::builder()
        .user_agent("my-app/2.0")
        .build()
        .unwrap();
    let clone = transport.clone();
    for t in [&transport, &clone] {
        let response = t
            .send(HttpRequest::new(Method::GET, url(addr, "/echo")))
            .await
            .unwrap();
        assert_eq!(
            String::from_utf8(response.body.to_vec()).unwrap(),
            "GET /echo ua=my-app/2.0 ct= body="
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_errors_come_back_as_responses_with_their_bodies() {
    let addr = app_server().await;
    let transport = ReqwestTransport::new().unwrap();
    let response = transport
        .send(HttpRequest::new(Method::POST, url(addr, "/token-error")))
        .await
        .unwrap();
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        response.body.as_slice(),
        br#"{"error":"invalid_grant","error_description":"expired"}"#
    );
    assert_eq!(response.headers[header::CONTENT_TYPE], "application/json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_come_back_as_responses_with_their_bodies() {
    let addr = app_server().await;
    let transport = ReqwestTransport::new().unwrap();
    let response = transport
        .send(HttpRequest::new(Method::GET, url(addr, "/unavailable")))
        .await
        .unwrap();
    assert_eq!(response.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.body.as_slice(), b"try later");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn html_error_page_is_returned_untouched() {
    let addr = app_server().await;
    let transport = ReqwestTransport::new().unwrap();
    let response = transport
        .send(HttpRequest::new(Method::GET, url(addr, "/proxy-error")))
        .await
        .unwrap();
    assert_eq!(response.status, StatusCode::BAD_GATEWAY);
    assert!(response.headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert_eq!(
        response.body.as_slice(),
        b"<html><body><h1>502 Bad Gateway</h1></body></html>"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_returned_not_followed() {
    let addr = app_server().await;
    let transport = ReqwestTransport::new().unwrap();
    let response = transport
        .send(HttpRequest::new(Method::POST, url(addr, "/redirect")).with_body(b"x".to_vec()))
        .await
        .unwrap();
    assert_eq!(response.status, StatusCode::FOUND);
    assert_eq!(
        response.headers[header::LOCATION],
        "http://127.0.0.1:9/stolen"
    );
    assert_eq!(response.body.as_slice(), b"moved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_client_is_used_as_given() {
    let addr = app_server().await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent("from-client/1")
        .build()
        .unwrap();
    let transport = ReqwestTransport::from_client(client);
    let response = transport
        .send(HttpRequest::new(Method::GET, url(addr, "/echo")))
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8(response.body.to_vec()).unwrap(),
        "GET /echo ua=from-client/1 ct= body="
    );
    let response = transport
        .send(HttpRequest::new(Method::GET, url(addr, "/redirect")))
        .await
        .unwrap();
    assert_eq!(response.status, StatusCode::FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_beyond_the_timeout_is_a_timeout() {
    let addr = app_server().await;
    let transport = fast_transport();
    let started = Instant::now();
    let error = transport
        .send(HttpRequest::new(
            Method::GET,
            url(addr, "/slow?code=s3cret"),
        ))
        .await
        .unwrap_err();
    assert_eq!(error.kind, TransportErrorKind::Timeout, "{error}");
    assert!(started.elapsed() < Duration::from_secs(4));
    assert!(error.message.contains(&format!("GET http://{addr}/slow")));
    assert_no_secret(&error);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stalls_beyond_the_timeout_is_a_timeout() {
    let addr = raw_server(|mut stream| async move {
        read_head(&mut stream).await;
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"access")
            .await;
        tokio::time::sleep(Duration::from_secs(5)).await;
    })
    .await;
    let error = fast_transport()
        .send(HttpRequest::new(Method::GET, url(addr, "/t")))
        .await
        .unwrap_err();
    assert_eq!(error.kind, TransportErrorKind::Timeout, "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_dropped_without_a_response_is_connection_closed() {
    let addr = raw_server(|mut stream| async move {
        read_head(&mut stream).await;
        drop(stream);
    })
    .await;
    let request = HttpRequest::new(Method::POST, url(addr, "/token?code=s3cret"))
        .with_body(b"client_secret=s3cret".to_vec());
    let error = fast_transport().send(request).await.unwrap_err();
    assert_eq!(error.kind, TransportErrorKind::ConnectionClosed, "{error}");
    assert!(
        error
            .message
            .starts_with(&format!("POST http://{addr}/token")),
        "{error}"
    );
    assert_no_secret(&error);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_dropped_before_reading_is_connection_closed() {
    // The server waits until the request has arrived (without reading it), then drops the
    // connection: the client is always past handing the request to the connection, so the
    // outcome does not depend on which side the scheduler runs first. (Dropping at accept
    // raced the client's connection task: see the test below.)
    let addr = raw_server(|stream| async move {
        let mut first = [0u8; 1];
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.peek(&mut first)).await;
        drop(stream);
    })
    .await;
    let error = fast_transport()
        .send(HttpRequest::new(Method::GET, url(addr, "/t")))
        .await
        .unwrap_err();
    assert_eq!(error.kind, TransportErrorKind::ConnectionClosed, "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_dropped_at_accept_is_connection_closed_whatever_the_timing() {
    // Whether hyper sees the close before the request is written ("connection was not
    // ready"), while writing (a reset) or while waiting for the head (an incomplete message)
    // depends on scheduling; every one of them is a closed connection.
    for _ in 0..20 {
        let addr = raw_server(|stream| async move {
            drop(stream);
        })
        .await;
        let transport = ReqwestTransport::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let error = transport
            .send(HttpRequest::new(Method::GET, url(addr, "/t")))
            .await
            .unwrap_err();
        assert_eq!(error.kind, TransportErrorKind::ConnectionClosed, "{error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_a_response_then_close_is_connection_closed() {
    let addr = raw_server(|mut stream| async move {
        read_head(&mut stream).await;
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"access_token\":")
            .await;
        let _ = stream.shutdown().await;
    })
    .await;
    let error = fast_transport()
        .send(HttpRequest::new(Method::GET, url(addr, "/t")))
        .await
        .unwrap_err();
    assert_eq!(error.kind, TransportErrorKind::ConnectionClosed, "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_a_status_line_then_close_is_connection_closed() {
    let addr = raw_server(|mut stream| async move {
        read_head(&mut stream).await;
        let _ = stream.write_all(b"HTTP/1.1 2").await;
        let _ = stream.shutdown().await;
    })
    .await;
    let error = fast_transport()
        .send(HttpRequest::new(Method::GET, url(addr, "/t")))
        .await
        .unwrap_err();
    assert_eq!(error.kind, TransportErrorKind::ConnectionClosed, "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_chunked_body_is_a_body_error() {
    let addr = raw_server(|mut stream| async move {
        read_head(&mut stream).await;
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nnot hex\r\n")
            .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    })
    .await;
    let error = fast_transport()
        .send(HttpRequest::new(Method::GET, url(addr, "/t")))
        .await
        .unwrap_err();
    assert_eq!(error.kind, TransportErrorKind::Body, "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connection_is_a_connect_error() {
    // Bind then release a port so that nothing listens on it.
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let error = fast_transport()
        .send(HttpRequest::new(Method::GET, url(addr, "/t?code=s3cret")))
        .await
        .unwrap_err();
    assert_eq!(error.kind, TransportErrorKind::Connect, "{error}");
    assert!(error.message.contains("/t"), "{error}");
    assert_no_secret(&error);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kept_reqwest_error_is_the_source_and_names_no_secret_of_the_url() {
    use std::error::Error as _;

    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let error = fast_transport()
        .send(HttpRequest::new(
            Method::GET,
            Url::parse(&format!("http://user:s3cret@{addr}/t?code=s3cret#s3cret")).unwrap(),
        ))
        .await
        .unwrap_err();
    assert_eq!(error.kind, TransportErrorKind::Connect, "{error}");
    let source = error.source().expect("reqwest's error is kept");
    let reqwest_error = source
        .downcast_ref::<reqwest::Error>()
        .expect("the source is reqwest's own error");
    assert!(reqwest_error.is_connect());
    assert!(reqwest_error.url().is_none(), "the URL is stripped");
    // Nothing in the whole chain, shown or debugged, quotes the URL's secrets.
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    let mut depth = 0;
    while let Some(current) = cause {
        let shown = format!("{current} {current:?}");
        assert!(
            !shown.contains("s3cret"),
            "secret leaked at depth {depth}: {shown}"
        );
        cause = current.source();
        depth += 1;
        assert!(depth < 16, "a cause chain this long is a cycle");
    }
    assert!(
        depth >= 2,
        "the chain holds at least the transport error and reqwest's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_answer_over_64_kib_is_response_too_large() {
    let addr = app_server().await;
    let request = refresh_request(&token_config(addr, "/token-100k"), &RefreshToken::new("rt"));
    assert_eq!(request.response_limit(), TOKEN_RESPONSE_LIMIT);
    let error = ReqwestTransport::new()
        .unwrap()
        .send(request)
        .await
        .unwrap_err();
    assert_too_large(&error, TOKEN_RESPONSE_LIMIT);
    assert!(
        error
            .message
            .starts_with(&format!("POST http://{addr}/token-100k")),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_token_answer_over_64_kib_is_response_too_large() {
    let addr = raw_server(|mut stream| async move {
        read_head(&mut stream).await;
        write_chunked(&mut stream, 100 * 1024, 4096).await;
    })
    .await;
    let request = refresh_request(&token_config(addr, "/token"), &RefreshToken::new("rt"));
    let error = ReqwestTransport::new()
        .unwrap()
        .send(request)
        .await
        .unwrap_err();
    assert_too_large(&error, TOKEN_RESPONSE_LIMIT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_content_length_over_the_limit_is_refused_before_the_body_arrives() {
    // The head announces 100 KiB, then the server stalls: reading would time out, refusing
    // on the header answers at once.
    let addr = raw_server(|mut stream| async move {
        read_head(&mut stream).await;
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 102400\r\n\r\n{\"access")
            .await;
        tokio::time::sleep(Duration::from_secs(5)).await;
    })
    .await;
    let request = refresh_request(&token_config(addr, "/token"), &RefreshToken::new("rt"));
    let error = fast_transport().send(request).await.unwrap_err();
    assert_too_large(&error, TOKEN_RESPONSE_LIMIT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_answer_within_its_limit_arrives_whole() {
    let addr = app_server().await;
    let request =
        HttpRequest::new(Method::GET, url(addr, "/api-1m")).with_response_limit(2 * 1024 * 1024);
    let response = ReqwestTransport::new()
        .unwrap()
        .send(request)
        .await
        .unwrap();
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.body.len(), 1024 * 1024);
    assert!(response.body.as_slice() == one_mib().as_slice());
    // The default API limit is far above 1 MiB too.
    let response = ReqwestTransport::new()
        .unwrap()
        .send(HttpRequest::new(Method::GET, url(addr, "/api-1m")))
        .await
        .unwrap();
    assert_eq!(response.body.len(), 1024 * 1024);
    const { assert!(DEFAULT_API_RESPONSE_LIMIT > 1024 * 1024) };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_limit_is_honoured_to_the_byte() {
    let addr = app_server().await;
    let transport = ReqwestTransport::new().unwrap();
    let exact = HttpRequest::new(Method::GET, url(addr, "/ten")).with_response_limit(10);
    let response = transport.send(exact).await.unwrap();
    assert_eq!(response.body.as_slice(), b"0123456789");
    let short = HttpRequest::new(Method::GET, url(addr, "/ten?code=s3cret")).with_response_limit(9);
    let error = transport.send(short).await.unwrap_err();
    assert_too_large(&error, 9);
    // Chunked, no length announced: the running total decides.
    let addr = raw_server(|mut stream| async move {
        read_head(&mut stream).await;
        write_chunked(&mut stream, 1000, 100).await;
    })
    .await;
    let request = HttpRequest::new(Method::GET, url(addr, "/t")).with_response_limit(999);
    let error = transport.send(request).await.unwrap_err();
    assert_too_large(&error, 999);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_answer_within_the_limit_arrives_whole() {
    let addr = raw_server(|mut stream| async move {
        read_head(&mut stream).await;
        write_chunked(&mut stream, 100 * 1024, 3000).await;
    })
    .await;
    let request = HttpRequest::new(Method::GET, url(addr, "/t")).with_response_limit(100 * 1024);
    let response = ReqwestTransport::new()
        .unwrap()
        .send(request)
        .await
        .unwrap();
    assert_eq!(response.body.len(), 100 * 1024);
    assert!(response.body.iter().all(|&b| b == b'x'));
    assert_eq!(response.headers[header::CONTENT_TYPE], "application/json");
}
