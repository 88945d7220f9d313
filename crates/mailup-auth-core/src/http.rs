//! HTTP requests and responses as plain data, and the transport failures a driver reports.
//!
//! The core never sends anything: it describes requests with these types (built on the `http`
//! crate's method, header and status types) and the caller carries them with any HTTP client.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use url::Url;
use zeroize::Zeroizing;

use crate::error_source::ErrorSource;

/// The most response body bytes a transport reads for a request by default (32 MiB): API
/// answers. Change it per request with [`HttpRequest::with_response_limit`].
pub const DEFAULT_API_RESPONSE_LIMIT: usize = 32 * 1024 * 1024;

/// The most response body bytes a transport reads for a token request (64 KiB). A token answer
/// is a few hundred bytes; anything near this size is not a token endpoint talking.
pub const TOKEN_RESPONSE_LIMIT: usize = 64 * 1024;

/// An HTTP request to send. Its body and `Authorization` header may carry secrets, so `Debug`
/// shows neither; the body is wiped when the request and its clones are dropped.
///
/// Cloning is cheap where it matters for a retry: the body is shared (a clone counts a
/// reference, however large the body), and so are the header values.
#[derive(Clone)]
pub struct HttpRequest {
    method: Method,
    url: Url,
    headers: HeaderMap,
    /// A zeroizing buffer behind a shared reference count (see [`HttpRequest::with_body`]).
    body: Bytes,
    response_limit: usize,
}

impl HttpRequest {
    /// A request with no headers, an empty body and the [`DEFAULT_API_RESPONSE_LIMIT`].
    pub fn new(method: Method, url: Url) -> Self {
        Self {
            method,
            url,
            headers: HeaderMap::new(),
            body: Bytes::new(),
            response_limit: DEFAULT_API_RESPONSE_LIMIT,
        }
    }

    /// Adds a header (the value is marked sensitive when it is `Authorization`).
    pub fn with_header(mut self, name: http::header::HeaderName, mut value: HeaderValue) -> Self {
        if name == http::header::AUTHORIZATION {
            value.set_sensitive(true);
        }
        self.headers.insert(name, value);
        self
    }

    /// Sets the body. The vector itself becomes the body (no copy); it is wiped when the
    /// last clone of the request, or the last transport buffer sharing it, is dropped.
    pub fn with_body(mut self, body: Vec<u8>) -> Self {
        self.body = Bytes::from_owner(Zeroizing::new(body));
        self
    }

    /// Sets the most response body bytes a transport may read for this request; a longer
    /// answer fails with [`TransportErrorKind::ResponseTooLarge`].
    pub fn with_response_limit(mut self, bytes: usize) -> Self {
        self.response_limit = bytes;
        self
    }

    /// The HTTP method (`POST` for every token request).
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The full URL (never holds a secret: the core puts secrets in bodies and headers only).
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The headers; an `Authorization` value is marked sensitive, and `Debug` shows no value.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The headers, to add what a transport needs (a user agent, tracing headers).
    pub fn headers_mut(&mut self) -> &mut HeaderMap {
        &mut self.headers
    }

    /// The body bytes (may hold secrets: do not log them).
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body as it is shared: cloning the `Bytes` counts a reference to the same buffer
    /// (no copy), and the buffer, a zeroizing one, is wiped when the last reference is
    /// dropped. Transports that need an owned body (one that outlives the request) clone
    /// this rather than copying into a plain `Vec`.
    pub fn shared_body(&self) -> &Bytes {
        &self.body
    }

    /// Takes the request apart without copying anything: method, URL, headers and the shared
    /// body (see [`shared_body`](Self::shared_body)). For transports that hand owned parts to
    /// their client.
    pub fn into_parts(self) -> (Method, Url, HeaderMap, Bytes) {
        (self.method, self.url, self.headers, self.body)
    }

    /// The most response body bytes a transport may read for this request
    /// ([`DEFAULT_API_RESPONSE_LIMIT`] unless set with [`HttpRequest::with_response_limit`];
    /// [`TOKEN_RESPONSE_LIMIT`] for the core's token requests).
    pub fn response_limit(&self) -> usize {
        self.response_limit
    }

    /// Converts into an `http::Request`. The returned body is no longer zeroized on drop, and
    /// the response limit is not carried: a caller sending it must bound the answer itself.
    pub fn into_http(self) -> http::Request<Vec<u8>> {
        let mut builder = http::Request::builder()
            .method(self.method)
            .uri(self.url.as_str());
        if let Some(headers) = builder.headers_mut() {
            *headers = self.headers;
        }
        builder
            .body(self.body.to_vec())
            .expect("a url::Url is always a valid http::Uri")
    }
}

impl std::fmt::Debug for HttpRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpRequest")
            .field("method", &self.method)
            .field("url", &self.url.as_str())
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field(
                "body",
                &format_args!("[{} bytes redacted]", self.body.len()),
            )
            .field("response_limit", &self.response_limit)
            .finish()
    }
}

/// An HTTP response as received. The body may hold tokens, so `Debug` shows only its length
/// and the body is wiped when the response is dropped.
#[allow(
    clippy::exhaustive_structs,
    reason = "transports build it with a literal; a status, headers and a body is all an HTTP response is"
)]
#[derive(Clone)]
pub struct HttpResponse {
    /// The status code as received (redirects are not followed: a 3xx arrives as is).
    pub status: StatusCode,
    /// The headers as received (`Retry-After` and `Content-Type` are read from here).
    pub headers: HeaderMap,
    /// The body bytes, wiped on drop (a token answer holds the tokens in clear). Copy out of it
    /// only what must outlive the response.
    pub body: Zeroizing<Vec<u8>>,
}

impl HttpResponse {
    /// A response with a status and a body, no headers.
    pub fn new(status: StatusCode, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            headers: HeaderMap::new(),
            body: Zeroizing::new(body.into()),
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: http::header::HeaderName, value: HeaderValue) -> Self {
        self.headers.insert(name, value);
        self
    }
}

impl std::fmt::Debug for HttpResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpResponse")
            .field("status", &self.status)
            .field(
                "body",
                &format_args!("[{} bytes redacted]", self.body.len()),
            )
            .finish()
    }
}

/// What went wrong below HTTP: always a transient failure as far as the flow is concerned
/// (tokens are kept and the refresh backs off; never a reason to log in again).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransportErrorKind {
    /// The request or the connection attempt timed out.
    Timeout,
    /// The connection could not be established (refused, unreachable, DNS, TLS handshake).
    Connect,
    /// The connection closed before a complete response arrived.
    ConnectionClosed,
    /// The response body could not be read.
    Body,
    /// The response body is longer than the request's [`HttpRequest::response_limit`]; the
    /// transport stopped reading. Not a rejection by the server: transient, like the others.
    ResponseTooLarge,
    /// The request could not be built or sent for another reason.
    Other,
}

impl std::fmt::Display for TransportErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Timeout => "timed out",
            Self::Connect => "could not connect",
            Self::ConnectionClosed => "connection closed before a response",
            Self::Body => "could not read the response body",
            Self::ResponseTooLarge => "response too large",
            Self::Other => "request failed",
        })
    }
}

/// A failure to get an HTTP response at all.
///
/// `message` is for people; it must never hold a secret (transports build it from the error
/// kind and the URL, and the core never puts secrets in URLs). The HTTP client's own error,
/// when the transport keeps it ([`TransportError::with_source`]), is `source()`; equality
/// compares it by message (see [`ErrorSource`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
#[non_exhaustive]
pub struct TransportError {
    /// The kind of failure (timeout, connection, body, size, other), for logs and metrics; the
    /// session keeps the tokens and backs off after any of them.
    pub kind: TransportErrorKind,
    /// A human-readable description without secrets.
    pub message: String,
    /// The HTTP client's error, kept as `source()`.
    source: Option<ErrorSource>,
}

impl TransportError {
    /// A transport error of the given kind.
    pub fn new(kind: TransportErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Keeps the HTTP client's error as `source()`. Its message must hold no secret: strip
    /// the URL from it first if the client prints the URL with its query (reqwest's
    /// `without_url`).
    #[must_use]
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(ErrorSource::new(source));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_body_and_authorization() {
        let request = HttpRequest::new(Method::POST, Url::parse("https://example.com/t").unwrap())
            .with_header(
                http::header::AUTHORIZATION,
                HeaderValue::from_static("Bearer tok-secret"),
            )
            .with_body(b"refresh_token=rt-secret".to_vec());
        let printed = format!("{request:?}");
        assert!(!printed.contains("secret"), "{printed}");
        assert!(request.headers()[http::header::AUTHORIZATION].is_sensitive());

        let response =
            HttpResponse::new(StatusCode::OK, b"{\"access_token\":\"at-secret\"}".to_vec());
        assert!(!format!("{response:?}").contains("secret"));
    }

    #[test]
    fn into_http_keeps_everything() {
        let request = HttpRequest::new(
            Method::POST,
            Url::parse("https://example.com/t?a=1").unwrap(),
        )
        .with_header(
            http::header::ACCEPT,
            HeaderValue::from_static("application/json"),
        )
        .with_body(b"x=1".to_vec());
        let http = request.into_http();
        assert_eq!(http.method(), Method::POST);
        assert_eq!(http.uri(), "https://example.com/t?a=1");
        assert_eq!(http.headers()[http::header::ACCEPT], "application/json");
        assert_eq!(http.body(), b"x=1");
    }

    #[test]
    fn requests_carry_the_default_api_limit_unless_told_otherwise() {
        let url = Url::parse("https://example.com/a").unwrap();
        let request = HttpRequest::new(Method::GET, url);
        assert_eq!(request.response_limit(), DEFAULT_API_RESPONSE_LIMIT);
        assert_eq!(DEFAULT_API_RESPONSE_LIMIT, 32 * 1024 * 1024);
        assert_eq!(TOKEN_RESPONSE_LIMIT, 64 * 1024);
        let request = request.with_response_limit(10);
        assert_eq!(request.response_limit(), 10);
        assert_eq!(request.clone().response_limit(), 10);
        // `into_http` still works with a limit set.
        assert_eq!(request.into_http().uri(), "https://example.com/a");
    }

    #[test]
    fn request_and_response_bodies_are_wiped_on_drop() {
        let body = b"client_secret=s".to_vec();
        let address = body.as_ptr();
        let request = HttpRequest::new(Method::POST, Url::parse("https://example.com/t").unwrap())
            .with_body(body);
        // The vector given is the body (no plain copy was made), and clones share it.
        assert_eq!(request.body().as_ptr(), address);
        assert_eq!(request.shared_body().as_ptr(), address);
        assert_eq!(request.clone().body().as_ptr(), address);
        let (_, _, _, parts_body) = request.clone().into_parts();
        assert_eq!(parts_body.as_ptr(), address);
        assert_eq!(request.body(), b"client_secret=s");

        let response = HttpResponse::new(StatusCode::OK, b"{\"access_token\":\"a\"}".to_vec());
        let _: &Zeroizing<Vec<u8>> = &response.body;
        let copy = response.clone();
        let _: &Zeroizing<Vec<u8>> = &copy.body;
        assert_eq!(copy.body.as_slice(), response.body.as_slice());
    }

    /// The owner behind a request body is a zeroizing buffer: what `with_body` wraps wipes
    /// itself when dropped, and sharing it through `Bytes` drops it exactly once, after the
    /// last reference.
    #[test]
    fn a_shared_body_drops_its_zeroizing_owner_after_the_last_reference() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static DROPS: AtomicUsize = AtomicUsize::new(0);
        struct Counted(Zeroizing<Vec<u8>>);
        impl AsRef<[u8]> for Counted {
            fn as_ref(&self) -> &[u8] {
                &self.0
            }
        }
        impl Drop for Counted {
            fn drop(&mut self) {
                DROPS.fetch_add(1, Ordering::SeqCst);
            }
        }
        let shared = Bytes::from_owner(Counted(Zeroizing::new(b"secret".to_vec())));
        let clone = shared.clone();
        drop(shared);
        assert_eq!(DROPS.load(Ordering::SeqCst), 0);
        drop(clone);
        assert_eq!(DROPS.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn response_too_large_is_its_own_kind_and_says_so() {
        let error = TransportError::new(
            TransportErrorKind::ResponseTooLarge,
            "GET https://example.com/a (more than 65536 bytes)",
        );
        assert_eq!(
            error.to_string(),
            "response too large: GET https://example.com/a (more than 65536 bytes)"
        );
        assert_ne!(
            TransportErrorKind::ResponseTooLarge,
            TransportErrorKind::Body
        );
    }

    #[test]
    fn the_clients_error_is_the_source_and_compares_by_message() {
        use std::error::Error as _;

        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let error = TransportError::new(TransportErrorKind::Connect, "GET http://127.0.0.1:9/")
            .with_source(refused);
        let source = error.source().expect("the client's error is kept");
        assert_eq!(
            source
                .downcast_ref::<std::io::Error>()
                .map(std::io::Error::kind),
            Some(std::io::ErrorKind::ConnectionRefused)
        );
        // Display is unchanged by the source; equality compares it by message.
        assert_eq!(
            error.to_string(),
            "could not connect: GET http://127.0.0.1:9/"
        );
        let again = TransportError::new(TransportErrorKind::Connect, "GET http://127.0.0.1:9/")
            .with_source(std::io::Error::other("refused"));
        assert_eq!(error, again);
        assert_ne!(
            error,
            TransportError::new(TransportErrorKind::Connect, "GET http://127.0.0.1:9/")
        );
        assert!(TransportError::new(TransportErrorKind::Other, "x")
            .source()
            .is_none());
    }
}
