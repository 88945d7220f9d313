//! HTTP requests and responses as plain data, and the transport failures a driver reports.
//!
//! The core never sends anything: it describes requests with these types (built on the `http`
//! crate's method, header and status types) and the caller carries them with any HTTP client.

use http::{HeaderMap, HeaderValue, Method, StatusCode};
use url::Url;
use zeroize::Zeroizing;

/// An HTTP request to send. Its body and `Authorization` header may carry secrets, so `Debug`
/// shows neither.
#[derive(Clone)]
pub struct HttpRequest {
    method: Method,
    url: Url,
    headers: HeaderMap,
    body: Zeroizing<Vec<u8>>,
}

impl HttpRequest {
    /// A request with no headers and an empty body.
    pub fn new(method: Method, url: Url) -> Self {
        Self {
            method,
            url,
            headers: HeaderMap::new(),
            body: Zeroizing::new(Vec::new()),
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

    /// Sets the body.
    pub fn with_body(mut self, body: Vec<u8>) -> Self {
        self.body = Zeroizing::new(body);
        self
    }

    /// The method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The full URL (never holds a secret: the core puts secrets in bodies and headers only).
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// Mutable headers.
    pub fn headers_mut(&mut self) -> &mut HeaderMap {
        &mut self.headers
    }

    /// The body bytes (may hold secrets: do not log them).
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// Converts into an `http::Request`. The returned body is no longer zeroized on drop.
    pub fn into_http(self) -> http::Request<Vec<u8>> {
        let mut builder = http::Request::builder()
            .method(self.method.clone())
            .uri(self.url.as_str());
        if let Some(headers) = builder.headers_mut() {
            *headers = self.headers.clone();
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
            .finish()
    }
}

/// An HTTP response as received. The body may hold tokens, so `Debug` shows only its length.
#[derive(Clone)]
pub struct HttpResponse {
    /// The status code.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body bytes.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// A response with a status and a body, no headers.
    pub fn new(status: StatusCode, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            headers: HeaderMap::new(),
            body: body.into(),
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

/// What went wrong below HTTP: always a transient failure as far as the flow is concerned.
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
            Self::Other => "request failed",
        })
    }
}

/// A failure to get an HTTP response at all.
///
/// `message` is for people; it must never hold a secret (transports build it from the error
/// kind and the URL, and the core never puts secrets in URLs).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct TransportError {
    /// What kind of failure.
    pub kind: TransportErrorKind,
    /// A human-readable description without secrets.
    pub message: String,
}

impl TransportError {
    /// A transport error of the given kind.
    pub fn new(kind: TransportErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
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
}
