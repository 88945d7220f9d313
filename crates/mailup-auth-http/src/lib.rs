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

use std::error::Error as _;
use std::time::Duration;

use async_trait::async_trait;
use mailup_auth_core::http::{HttpRequest, HttpResponse, TransportError, TransportErrorKind};
use mailup_auth_core::ports::Transport;
use url::Url;

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
        let method = request.method().clone();
        let url = request.url().clone();
        let mut builder = self
            .client
            .request(method.clone(), url.clone())
            .headers(request.headers().clone());
        // No body at all (rather than an empty one) keeps `Content-Length: 0` off GETs.
        if !request.body().is_empty() {
            builder = builder.body(request.body().to_vec());
        }
        let response = builder
            .send()
            .await
            .map_err(|error| classify(&error, Phase::Send, &method, &url))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .map_err(|error| classify(&error, Phase::Body, &method, &url))?;
        Ok(HttpResponse {
            status,
            headers,
            body: body.to_vec().into(),
        })
    }
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
/// and the innermost cause. reqwest's own `Display` is never used: it prints the full URL.
fn classify(
    error: &reqwest::Error,
    phase: Phase,
    method: &http::Method,
    url: &Url,
) -> TransportError {
    let kind = if error.is_timeout() {
        TransportErrorKind::Timeout
    } else if error.is_connect() {
        TransportErrorKind::Connect
    } else if connection_closed(error) {
        TransportErrorKind::ConnectionClosed
    } else if phase == Phase::Body || error.is_body() || error.is_decode() {
        TransportErrorKind::Body
    } else {
        TransportErrorKind::Other
    };
    let mut message = format!("{method} {}", url_without_query(url));
    if let Some(cause) = innermost_cause(error) {
        message.push_str(" (");
        message.push_str(&cause);
        message.push(')');
    }
    TransportError::new(kind, message)
}

/// Whether the cause chain says the peer closed or reset the connection before the response
/// was complete.
fn connection_closed(error: &reqwest::Error) -> bool {
    let mut cause = error.source();
    while let Some(current) = cause {
        if let Some(hyper_error) = current.downcast_ref::<hyper::Error>() {
            if hyper_error.is_incomplete_message() || hyper_error.is_closed() {
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
    fn builder_rejects_invalid_user_agent_with_typed_error() {
        let error = ReqwestTransport::builder()
            .user_agent("bad\nagent")
            .build()
            .unwrap_err();
        assert_eq!(error.to_string(), "could not build the HTTP client");
        assert!(error.source().is_some());
    }
}
