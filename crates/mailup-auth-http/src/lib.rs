#![doc = include_str!("../README.md")]
//!
//! ## What this crate is for, and what it is not for
//!
//! It carries the plain-data [`HttpRequest`]s that `mailup-auth-core` describes over
//! [`reqwest`] with rustls, and turns every failure below HTTP into a typed [`TransportError`]
//! whose [`TransportErrorKind`] the core treats as transient. It does not interpret responses
//! (a 400 or a 503 is a normal [`HttpResponse`]), does not retry, does not follow redirects and
//! does not log: retries, backoff and the meaning of a status belong to the core and the facade.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
// Public types stay open to new variants and fields unless one is exhaustive on purpose (each
// such item says why at its `allow`).
#![warn(clippy::exhaustive_enums, clippy::exhaustive_structs)]

use std::error::Error as _;
use std::time::Duration;

use async_trait::async_trait;
use mailup_auth_core::Transport;
use mailup_auth_core::{HttpRequest, HttpResponse, TransportError, TransportErrorKind};
use url::Url;
use zeroize::Zeroizing;

/// How long establishing a connection (TCP and TLS) may take by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a whole request (connect, send, and reading the full response) may take by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The `User-Agent` sent by default: this crate's name and version.
pub const DEFAULT_USER_AGENT: &str =
    concat!(env!("CARGO_PKG_NAME"), "/", env!("CARGO_PKG_VERSION"));

/// A [`Transport`] over one shared [`reqwest::Client`].
///
/// Cloning is cheap and shares the connection pool (a `reqwest::Client` is an `Arc` inside).
/// Built with [`ReqwestTransport::new`] or [`ReqwestTransport::builder`], the client never
/// follows redirects: an OAuth client must not be sent elsewhere by a token endpoint, so a
/// `302` comes back as an ordinary [`HttpResponse`].
#[derive(Clone, Debug)]
pub struct ReqwestTransport {
    client: reqwest::Client,
}

impl ReqwestTransport {
    /// A transport with the defaults: [`DEFAULT_CONNECT_TIMEOUT`], [`DEFAULT_TIMEOUT`],
    /// [`DEFAULT_USER_AGENT`], redirects disabled, rustls with the webpki roots.
    pub fn new() -> Result<Self, BuildError> {
        Self::builder().build()
    }

    /// A builder to change the timeouts or the `User-Agent`.
    pub fn builder() -> ReqwestTransportBuilder {
        ReqwestTransportBuilder::default()
    }

    /// Wraps a client you configured yourself (proxies, custom root certificates, ...).
    ///
    /// The client is used as it is, so set on it what [`ReqwestTransport::builder`] would set:
    /// **disable redirects** with `.redirect(reqwest::redirect::Policy::none())` (a token
    /// endpoint must not be able to send the client's secret elsewhere), and set a connect
    /// timeout and a request timeout, or a stuck server can hold a request forever.
    pub fn from_client(client: reqwest::Client) -> Self {
        Self { client }
    }

    /// The client this transport sends with.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    async fn send_request(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        let limit = request.response_limit();
        // The request's own headers and body go to reqwest (moved, not copied); the method and
        // the URL are kept for error messages (a standard method is copied without allocating).
        let (method, url, headers, body) = request.into_parts();
        let mut outgoing = reqwest::Request::new(method.clone(), url.clone());
        *outgoing.headers_mut() = headers;
        // No body at all (rather than an empty one) keeps `Content-Length: 0` off GETs.
        if !body.is_empty() {
            *outgoing.body_mut() = Some(request_body(body));
        }
        let mut response = match self.client.execute(outgoing).await {
            Ok(response) => response,
            Err(error) => return Err(classify(error, Phase::Send, &method, &url)),
        };
        let status = response.status();
        // Taken, not cloned: the body is read through the response, which needs no headers.
        let headers = std::mem::take(response.headers_mut());
        let announced = response.content_length();
        if announced.is_some_and(|length| length > limit as u64) {
            // Dropping the response closes the connection: nothing of the body is read.
            return Err(too_large(limit, &method, &url));
        }
        let mut body = BoundedBody::new(limit, announced);
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|error| classify(error, Phase::Body, &method, &url))?
        {
            if body.push(&chunk).is_err() {
                return Err(too_large(limit, &method, &url));
            }
        }
        Ok(HttpResponse {
            status,
            headers,
            body: body.into_inner(),
        })
    }
}

/// The request body for reqwest: the request's shared bytes (no copy into a plain `Vec`); the
/// zeroizing buffer behind them is wiped when the last reference (the request's clones,
/// reqwest's body) is dropped.
fn request_body(body: bytes::Bytes) -> reqwest::Body {
    reqwest::Body::from(body)
}

/// A response body read chunk by chunk into a buffer that is wiped on drop, up to a limit.
///
/// The buffer never grows in place: a `Vec` reallocation would free the old copy without
/// wiping it, so growing allocates a new zeroizing buffer, copies, and drops (wipes) the old.
struct BoundedBody {
    limit: usize,
    bytes: Zeroizing<Vec<u8>>,
}

/// A chunk would take the body past its limit.
#[derive(Debug, PartialEq, Eq)]
struct OverLimit;

impl BoundedBody {
    /// The first allocation when the length is not announced: most answers fit.
    const INITIAL_CAPACITY: usize = 8 * 1024;

    fn new(limit: usize, announced: Option<u64>) -> Self {
        let capacity = match announced {
            // Checked against the limit by the caller; the limit caps it anyway.
            Some(length) => usize::try_from(length).unwrap_or(limit).min(limit),
            None => Self::INITIAL_CAPACITY.min(limit),
        };
        Self {
            limit,
            bytes: Zeroizing::new(Vec::with_capacity(capacity)),
        }
    }

    /// Appends a chunk, or refuses it (keeping nothing more) when it would pass the limit.
    fn push(&mut self, chunk: &[u8]) -> Result<(), OverLimit> {
        let needed = self.bytes.len().saturating_add(chunk.len());
        if needed > self.limit {
            return Err(OverLimit);
        }
        if needed > self.bytes.capacity() {
            let capacity = needed
                .max(self.bytes.capacity().saturating_mul(2))
                .min(self.limit);
            let mut grown = Zeroizing::new(Vec::with_capacity(capacity));
            grown.extend_from_slice(&self.bytes);
            // The old buffer is wiped as it is dropped here.
            self.bytes = grown;
        }
        self.bytes.extend_from_slice(chunk);
        Ok(())
    }

    fn into_inner(self) -> Zeroizing<Vec<u8>> {
        self.bytes
    }
}

/// The error for an answer longer than the request's limit: the limit, never the content.
fn too_large(limit: usize, method: &http::Method, url: &Url) -> TransportError {
    TransportError::new(
        TransportErrorKind::ResponseTooLarge,
        format!(
            "{method} {} (the response body is longer than the limit of {limit} bytes)",
            url_without_query(url)
        ),
    )
}

#[async_trait]
impl Transport for ReqwestTransport {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        self.send_request(request).await
    }
}

/// Configures a [`ReqwestTransport`]; get one from [`ReqwestTransport::builder`].
#[derive(Clone, Debug)]
pub struct ReqwestTransportBuilder {
    connect_timeout: Duration,
    timeout: Duration,
    user_agent: String,
    no_proxy: bool,
}

impl Default for ReqwestTransportBuilder {
    fn default() -> Self {
        Self {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            timeout: DEFAULT_TIMEOUT,
            user_agent: DEFAULT_USER_AGENT.to_owned(),
            no_proxy: false,
        }
    }
}

impl ReqwestTransportBuilder {
    /// How long establishing a connection may take (default [`DEFAULT_CONNECT_TIMEOUT`]).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long a whole request, including reading the response body, may take
    /// (default [`DEFAULT_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The `User-Agent` header (default [`DEFAULT_USER_AGENT`]).
    pub fn user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = user_agent.into();
        self
    }

    /// Ignores the system proxy settings (`HTTP_PROXY`, ...), e.g. for a server on 127.0.0.1.
    pub fn no_proxy(mut self) -> Self {
        self.no_proxy = true;
        self
    }

    /// Builds the client: redirects disabled, rustls, the configured timeouts and agent.
    pub fn build(self) -> Result<ReqwestTransport, BuildError> {
        let mut builder = reqwest::Client::builder();
        if self.no_proxy {
            builder = builder.no_proxy();
        }
        let client = builder
            .connect_timeout(self.connect_timeout)
            .timeout(self.timeout)
            .user_agent(self.user_agent)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|source| BuildError { source })?;
        Ok(ReqwestTransport { client })
    }
}

/// The HTTP client could not be built (for example an invalid `User-Agent` value, or no TLS
/// backend could be initialised).
#[derive(Debug, thiserror::Error)]
#[error("could not build the HTTP client")]
pub struct BuildError {
    #[source]
    source: reqwest::Error,
}

/// Where in a request an error happened: a failure while reading the body of a response whose
/// head already arrived is a body error unless something more specific explains it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Send,
    Body,
}

/// Maps a reqwest error to the core's transport error.
///
/// The message is built from the method, the URL without its query, fragment or credentials,
/// and the innermost cause. reqwest's own `Display` prints the full URL, so the error kept as
/// `source()` is reqwest's with its URL removed (`without_url`).
fn classify(
    error: reqwest::Error,
    phase: Phase,
    method: &http::Method,
    url: &Url,
) -> TransportError {
    let kind = if error.is_timeout() {
        TransportErrorKind::Timeout
    } else if error.is_connect() {
        TransportErrorKind::Connect
    } else if connection_closed(&error) {
        TransportErrorKind::ConnectionClosed
    } else if phase == Phase::Body || error.is_body() || error.is_decode() {
        TransportErrorKind::Body
    } else {
        TransportErrorKind::Other
    };
    let mut message = format!("{method} {}", url_without_query(url));
    if let Some(cause) = innermost_cause(&error) {
        message.push_str(" (");
        message.push_str(&cause);
        message.push(')');
    }
    TransportError::new(kind, message).with_source(error.without_url())
}

/// Whether the cause chain says the peer closed or reset the connection before the response
/// was complete.
///
/// hyper reports a connection that closed before the request could be written as "canceled"
/// ("connection was not ready", "connection closed"): a fresh connection the server dropped at
/// once lands there or on an incomplete message or a reset, depending on timing.
fn connection_closed(error: &reqwest::Error) -> bool {
    closed_in_chain(error.source())
}

/// [`connection_closed`] over any cause chain, starting at `cause`.
fn closed_in_chain(mut cause: Option<&(dyn std::error::Error + 'static)>) -> bool {
    while let Some(current) = cause {
        if let Some(hyper_error) = current.downcast_ref::<hyper::Error>() {
            if hyper_error.is_incomplete_message()
                || hyper_error.is_closed()
                || hyper_error.is_canceled()
            {
                return true;
            }
        }
        if let Some(io_error) = current.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind;
            if matches!(
                io_error.kind(),
                ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::BrokenPipe
                    | ErrorKind::UnexpectedEof
            ) {
                return true;
            }
        }
        cause = current.source();
    }
    false
}

/// The `Display` of the deepest cause that is not a reqwest error (reqwest errors print the
/// URL with its query). io, hyper, rustls and DNS errors describe the failure without it.
fn innermost_cause(error: &reqwest::Error) -> Option<String> {
    let mut cause = error.source();
    let mut innermost = None;
    while let Some(current) = cause {
        if !current.is::<reqwest::Error>() {
            innermost = Some(current);
        }
        cause = current.source();
    }
    innermost.map(ToString::to_string)
}

/// `scheme://host:port/path`: no credentials, query or fragment.
fn url_without_query(url: &Url) -> String {
    format!("{}{}", url.origin().ascii_serialization(), url.path())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_without_query_drops_query_fragment_and_credentials() {
        let url = Url::parse("https://user:pw@example.com:8443/Token?code=abc#frag").unwrap();
        assert_eq!(url_without_query(&url), "https://example.com:8443/Token");
    }

    #[test]
    fn default_user_agent_names_crate_and_version() {
        assert_eq!(
            DEFAULT_USER_AGENT,
            format!("mailup-auth-http/{}", env!("CARGO_PKG_VERSION"))
        );
    }

    #[test]
    fn the_request_body_handed_to_reqwest_is_the_zeroizing_buffer_itself() {
        let secret = b"client_secret=s3cret".to_vec();
        let address = secret.as_ptr();
        let request = HttpRequest::new(
            http::Method::POST,
            Url::parse("https://example.com/t").unwrap(),
        )
        .with_body(secret);
        let (_, _, _, shared) = request.into_parts();
        let body = request_body(shared);
        let bytes = body.as_bytes().expect("a buffered body");
        assert_eq!(bytes, b"client_secret=s3cret");
        // Same allocation: reqwest reads the zeroizing buffer, no plain copy was made.
        assert_eq!(bytes.as_ptr(), address);
    }

    #[test]
    fn a_bounded_body_takes_chunks_up_to_the_limit_and_no_further() {
        let mut body = BoundedBody::new(10, None);
        assert_eq!(body.push(b"0123"), Ok(()));
        assert_eq!(body.push(b"456789"), Ok(()));
        assert_eq!(body.push(b"x"), Err(OverLimit));
        let bytes: Zeroizing<Vec<u8>> = body.into_inner();
        assert_eq!(bytes.as_slice(), b"0123456789");

        let mut body = BoundedBody::new(10, Some(4));
        assert_eq!(body.push(b"01234567890"), Err(OverLimit));
        assert!(body.into_inner().is_empty());
    }

    #[test]
    fn a_bounded_body_grows_into_new_buffers_and_never_past_the_limit() {
        let limit = 3 * BoundedBody::INITIAL_CAPACITY + 5;
        let mut body = BoundedBody::new(limit, None);
        assert_eq!(body.bytes.capacity(), BoundedBody::INITIAL_CAPACITY);
        let chunk = vec![7u8; 1000];
        while body.push(&chunk).is_ok() {
            assert!(body.bytes.capacity() <= limit);
        }
        assert!(body.bytes.len() <= limit);
        assert_eq!(body.bytes.len(), limit / 1000 * 1000);
        // An announced length sizes the buffer once (capped by the limit).
        assert_eq!(BoundedBody::new(100, Some(40)).bytes.capacity(), 40);
        assert_eq!(BoundedBody::new(100, Some(u64::MAX)).bytes.capacity(), 100);
    }

    #[test]
    fn too_large_names_the_limit_but_not_the_query() {
        let url = Url::parse("https://example.com/Token?code=s3cret").unwrap();
        let error = too_large(65536, &http::Method::POST, &url);
        assert_eq!(error.kind, TransportErrorKind::ResponseTooLarge);
        assert_eq!(
            error.to_string(),
            "response too large: POST https://example.com/Token \
             (the response body is longer than the limit of 65536 bytes)"
        );
    }

    /// hyper's own "connection was not ready": a client connection whose peer closed before
    /// the request was handed to it. Deterministic: the connection task has finished first.
    #[tokio::test]
    async fn a_connection_closed_before_the_request_was_written_is_connection_closed() {
        let (client_io, server_io) = tokio::io::duplex(1024);
        drop(server_io);
        let (mut sender, connection) = hyper::client::conn::http1::handshake::<_, String>(
            hyper_util::rt::TokioIo::new(client_io),
        )
        .await
        .unwrap();
        // The peer is gone: the connection ends without a request.
        let _ = connection.await;
        let error = sender
            .send_request(http::Request::new(String::new()))
            .await
            .unwrap_err();
        assert!(error.is_canceled(), "{error:?}");
        assert!(closed_in_chain(Some(&error)), "{error:?}");
        // The same error below a wrapper (reqwest and hyper-util wrap it) is found too.
        assert!(closed_in_chain(Some(&Wrapper(error))));
    }

    /// Stands for reqwest's and hyper-util's errors, which have no public constructor.
    #[derive(Debug)]
    struct Wrapper(hyper::Error);

    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("client error (Canceled)")
        }
    }

    impl std::error::Error for Wrapper {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn unrelated_errors_are_not_connection_closed() {
        let error = std::io::Error::new(std::io::ErrorKind::InvalidData, "bad");
        assert!(!closed_in_chain(Some(&error)));
        assert!(!closed_in_chain(None));
    }

    #[test]
    fn builder_rejects_invalid_user_agent_with_typed_error() {
        let error = ReqwestTransport::builder()
            .user_agent("bad\nagent")
            .build()
            .unwrap_err();
        assert_eq!(error.to_string(), "could not build the HTTP client");
        assert!(error.source().is_some());
    }
}
