//! The answers of the [`Fault`] catalogue: what each injected fault sends, on the token
//! endpoint and on the API, including the ones that are not well-formed HTTP (a garbage status
//! line, a body cut short, a body that never ends) and the ones that never answer.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body::Frame;

use crate::listener::ConnectionHandle;
use crate::state::{AppState, Fault};

/// Where a fault is answered: the two differ in their error bodies only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    Token,
    Api,
}

/// How long the never-ending faults go on at most when nobody stops them.
const HANG_LIMIT: Duration = Duration::from_secs(600);
/// One byte of a slow body every this long.
const TRICKLE_INTERVAL: Duration = Duration::from_millis(250);
/// The size of the chunked gigabyte.
const GIGABYTE: u64 = 1 << 30;
/// The size of each chunk of it.
const CHUNK: usize = 64 * 1024;
/// The size of the huge header.
const HUGE_HEADER_BYTES: usize = 2 * 1024 * 1024;

const HTML_200: &str = "<!DOCTYPE html><html><head><title>Sign in to the network</title></head>\
<body><h1>Welcome</h1><p>Accept the terms of use to continue (injected fault).</p></body></html>";
const HTML_403: &str = "<!DOCTYPE html><html><head><title>403 Forbidden</title></head>\
<body><h1>Request blocked</h1><p>The web application firewall refused this request \
(injected fault).</p></body></html>";

fn json(status: StatusCode, value: serde_json::Value) -> Response {
    (status, axum::Json(value)).into_response()
}

fn html(status: StatusCode, page: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        page,
    )
        .into_response()
}

fn raw_json(status: StatusCode, body: impl Into<Body>) -> Response {
    let mut response = (status, body.into()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn too_many(target: Target, retry_after: &str) -> Response {
    let mut response = server_error_body(target, StatusCode::TOO_MANY_REQUESTS, "TooManyRequests");
    if let Ok(value) = HeaderValue::from_str(retry_after) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

fn server_error_body(target: Target, status: StatusCode, name: &str) -> Response {
    match target {
        Target::Token => json(
            status,
            serde_json::json!({
                "error": if status == StatusCode::TOO_MANY_REQUESTS { "temporarily_unavailable" } else { "server_error" },
                "error_description": format!("injected fault: {name}"),
            }),
        ),
        Target::Api => json(
            status,
            serde_json::json!({
                "ErrorCode": status.as_u16().to_string(),
                "ErrorDescription": format!("injected fault: {name}"),
                "ErrorName": name,
                "ErrorStack": null,
            }),
        ),
    }
}

/// The answer for `fault` (one that does not process the request: see
/// [`Fault::processes_the_grant`]).
pub(crate) fn fault_response(
    fault: Fault,
    target: Target,
    shared: &AppState,
    connection: &ConnectionHandle,
) -> Response {
    match fault {
        Fault::Status500 => {
            server_error_body(target, StatusCode::INTERNAL_SERVER_ERROR, "InternalServerError")
        }
        Fault::Status503 => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            "Service Unavailable (injected fault)",
        )
            .into_response(),
        Fault::HtmlErrorPage => html(
            StatusCode::BAD_GATEWAY,
            "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>\
<body><h1>502 Bad Gateway</h1><p>The proxy server received an invalid response \
from an upstream server (injected fault).</p></body></html>",
        ),
        Fault::MalformedBody => raw_json(StatusCode::OK, "{\"access_token\":\"truncated"),
        Fault::NotFoundHtml => html(
            StatusCode::NOT_FOUND,
            "<!DOCTYPE html><html><head><title>404 Not Found</title></head>\
<body><h1>Not Found</h1><p>The requested URL was not found on this server \
(injected fault).</p></body></html>",
        ),
        Fault::InvalidRequest => json(
            StatusCode::BAD_REQUEST,
            serde_json::json!({
                "error": "invalid_request",
                "error_description": "injected fault: invalid request",
            }),
        ),
        Fault::DropConnection => {
            tracing::debug!(remote = %connection.remote, "dropping the connection (injected fault)");
            connection.kill();
            // Never written: the killed stream fails the write and hyper closes the socket.
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
        Fault::Html200 => html(StatusCode::OK, HTML_200),
        Fault::TruncatedJson => raw_json(
            StatusCode::OK,
            "{\"access_token\":\"abc\",\"refresh_token\":\"def\",\"expires_in\":36",
        ),
        Fault::Redirect302 | Fault::Redirect307 => {
            let status = if fault == Fault::Redirect302 {
                StatusCode::FOUND
            } else {
                StatusCode::TEMPORARY_REDIRECT
            };
            (
                status,
                [(header::LOCATION, "http://127.0.0.1:9/elsewhere")],
                "",
            )
                .into_response()
        }
        Fault::MissingAccessToken => json(
            StatusCode::OK,
            serde_json::json!({"refresh_token": "no-access-token-came-with-me", "expires_in": 3600}),
        ),
        Fault::NonStringToken => json(
            StatusCode::OK,
            serde_json::json!({"access_token": 12345, "refresh_token": ["a", "b"], "expires_in": 3600}),
        ),
        Fault::NonUtf8Body => raw_json(
            StatusCode::OK,
            b"{\"access_token\":\"\xff\xfe\xfd\",\"refresh_token\":\"\xc3\x28\",\"expires_in\":3600}"
                .to_vec(),
        ),
        Fault::TokenWithCrLf => json(
            StatusCode::OK,
            serde_json::json!({
                "access_token": "abc\r\nX-Injected: yes",
                "refresh_token": "def\r\nSet-Cookie: x=y",
                "expires_in": 3600,
            }),
        ),
        Fault::ErrorWith200 => json(
            StatusCode::OK,
            serde_json::json!({
                "error": "invalid_grant",
                "error_description": "injected fault: an error with a success status",
            }),
        ),
        Fault::Empty401 => StatusCode::UNAUTHORIZED.into_response(),
        Fault::Html403 => html(StatusCode::FORBIDDEN, HTML_403),
        Fault::TooManyRequestsSeconds => too_many(target, "2"),
        Fault::TooManyRequestsDate => {
            let at = shared.now() + Duration::from_secs(2);
            too_many(target, &httpdate::fmt_http_date(at))
        }
        Fault::TooManyRequestsGarbage => too_many(target, "soon-ish"),
        Fault::TooManyRequestsHuge => too_many(target, "99999999999"),
        Fault::BodyDroppedMidway => {
            let mut response = Response::new(Body::new(FaultBody::new(shared, Stream::Cut)));
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("4096"));
            response
        }
        Fault::GarbageStatusLine => {
            connection.replace_output(b"SSH-2.0-OpenSSH_9.6\r\n".to_vec());
            StatusCode::OK.into_response()
        }
        Fault::HugeHeader => {
            let mut response = raw_json(
                StatusCode::OK,
                "{\"access_token\":\"huge-header\",\"expires_in\":3600}",
            );
            let value = HeaderValue::from_str(&"a".repeat(HUGE_HEADER_BYTES))
                .expect("ASCII letters form a valid header value");
            response.headers_mut().insert("x-padding", value);
            response
        }
        Fault::SlowBody => {
            let mut response = Response::new(Body::new(FaultBody::new(shared, Stream::Trickle)));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        Fault::HeadersNeverCome => {
            // Answered by `hang` before a response exists; reaching this is a bug in the caller.
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
        Fault::ChunkedGigabyte => {
            let mut response =
                Response::new(Body::new(FaultBody::new(shared, Stream::Gigabyte)));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        // The faults that process the grant answer normally where they do not apply.
        Fault::ExpiresInNegative
        | Fault::ExpiresInHuge
        | Fault::ExpiresInFloat
        | Fault::ExpiresInString
        | Fault::ExpiresInGarbage
        | Fault::ExpiresInZero
        | Fault::MissingRefreshToken => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Waits as [`Fault::HeadersNeverCome`] does: until [`HANG_LIMIT`] or the emulator stops.
pub(crate) async fn hang(shared: &AppState) {
    let started = tokio::time::Instant::now();
    while started.elapsed() < HANG_LIMIT && !shared.stopping.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The token answer of a fault that processed the grant: `tokens` mangled as the fault says.
pub(crate) fn mangled_token_answer(fault: Fault, tokens: &serde_json::Value) -> Response {
    let mut answer = tokens.clone();
    let expires_in = match fault {
        Fault::ExpiresInNegative => Some(serde_json::json!(-3600)),
        Fault::ExpiresInHuge => {
            // Larger than any integer type: serde_json keeps it as a float.
            Some(serde_json::json!(18_446_744_073_709_551_615_000.0_f64))
        }
        Fault::ExpiresInFloat => Some(serde_json::json!(3599.75)),
        Fault::ExpiresInString => Some(serde_json::json!("3600")),
        Fault::ExpiresInGarbage => Some(serde_json::json!("soon")),
        Fault::ExpiresInZero => Some(serde_json::json!(0)),
        _ => None,
    };
    if let Some(object) = answer.as_object_mut() {
        match expires_in {
            Some(value) => {
                object.insert("expires_in".into(), value);
            }
            None => {
                object.remove("refresh_token");
            }
        }
    }
    let mut response = axum::Json(answer).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    /// 64 bytes of a 4096-byte body, then an error (hyper closes the connection).
    Cut,
    /// One space per [`TRICKLE_INTERVAL`], until [`HANG_LIMIT`] or the emulator stops.
    Trickle,
    /// [`GIGABYTE`] bytes, in [`CHUNK`]s.
    Gigabyte,
}

/// A response body produced as it is read.
struct FaultBody {
    kind: Stream,
    shared: AppState,
    sent: u64,
    started: tokio::time::Instant,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl FaultBody {
    fn new(shared: &AppState, kind: Stream) -> Self {
        Self {
            kind,
            shared: shared.clone(),
            sent: 0,
            started: tokio::time::Instant::now(),
            sleep: None,
        }
    }
}

type FrameResult = Option<Result<Frame<Bytes>, std::io::Error>>;

impl http_body::Body for FaultBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<FrameResult> {
        let this = &mut *self;
        match this.kind {
            Stream::Cut => {
                if this.sent == 0 {
                    this.sent = 64;
                    let start =
                        "{\"access_token\":\"cut-short\",\"refresh_token\":\"cut-short\",\"ex";
                    let mut chunk = start.as_bytes().to_vec();
                    chunk.resize(64, b' ');
                    Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
                } else {
                    Poll::Ready(Some(Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionAborted,
                        "body dropped mid-way (injected fault)",
                    ))))
                }
            }
            Stream::Trickle => {
                let expired = this.started.elapsed() >= HANG_LIMIT;
                if expired || this.shared.stopping.load(Ordering::SeqCst) {
                    return Poll::Ready(None);
                }
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(TRICKLE_INTERVAL)));
                match sleep.as_mut().poll(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(()) => {
                        this.sleep = None;
                        this.sent += 1;
                        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b" ")))))
                    }
                }
            }
            Stream::Gigabyte => {
                if this.sent >= GIGABYTE || this.shared.stopping.load(Ordering::SeqCst) {
                    return Poll::Ready(None);
                }
                let mut chunk = vec![b'a'; CHUNK];
                if this.sent == 0 {
                    chunk[..17].copy_from_slice(b"{\"access_token\":\"");
                }
                this.sent += CHUNK as u64;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
            }
        }
    }
}
