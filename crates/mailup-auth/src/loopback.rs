//! The loopback redirect helper for CLI and desktop apps (RFC 8252): listen on 127.0.0.1, give
//! the redirect URI to register/use, wait for exactly one callback on the right path with the
//! right `state`, and give up after a timeout. The browser's request is held open until the
//! application reports how the code exchange went ([`LoopbackCallback::succeeded`] /
//! [`LoopbackCallback::failed`]), so the page never says "logged in" before the tokens are
//! stored.

use std::convert::Infallible;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use mailup_auth_core::{CsrfState, ErrorSource};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use url::Url;

/// The path the helper listens on unless told otherwise.
pub const DEFAULT_CALLBACK_PATH: &str = "/callback";

/// A loopback listener failure.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LoopbackError {
    /// The port could not be bound.
    #[error("cannot listen on 127.0.0.1:{port}: {source}")]
    Bind {
        /// The port asked for.
        port: u16,
        /// Why: the operating system's error (`std::io::Error`), kept as `source()`.
        source: ErrorSource,
    },
    /// No valid callback arrived in time.
    #[error("no authorization callback within {} s", .0.as_secs())]
    Timeout(Duration),
    /// A redirect URI that is not `http://127.0.0.1:PORT/..` or `http://localhost:PORT/..`.
    #[error("not a loopback redirect URI with an explicit port: {0}")]
    NotLoopback(String),
    /// Accepting connections failed; the error underneath (an `std::io::Error`, a URL that
    /// cannot be built) is kept as `source()`.
    #[error("loopback listener I/O error: {0}")]
    Io(#[source] ErrorSource),
}

/// How long the browser's request waits for the application to report the login's outcome.
const OUTCOME_WAIT: Duration = Duration::from_secs(120);

/// How long reporting the outcome waits for the page to reach the browser.
const DELIVERY_WAIT: Duration = Duration::from_secs(5);

/// How the login ended, for the page the browser shows.
#[derive(Debug)]
enum Outcome {
    Success,
    Failure(String),
}

/// The callback MailUp's redirect delivered. The browser waits on it: report the outcome of
/// the code exchange with [`succeeded`](Self::succeeded) or [`failed`](Self::failed) and the
/// browser then shows the matching page. Dropping it unanswered shows a failure page.
#[derive(Debug)]
pub struct LoopbackCallback {
    url: Url,
    reply: Option<oneshot::Sender<Outcome>>,
    /// Fires when the browser's connection is done (the page written, or the browser gone).
    delivered: Option<oneshot::Receiver<()>>,
}

impl LoopbackCallback {
    /// The full callback URL, for
    /// [`PendingAuthorization::verify_callback`](mailup_auth_core::PendingAuthorization::verify_callback).
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The full callback URL as a string.
    pub fn as_str(&self) -> &str {
        self.url.as_str()
    }

    /// The tokens are stored: the browser shows "logged in". Returns once the page has been
    /// written (or the browser went away), for at most five seconds, so a program may exit
    /// right after.
    pub async fn succeeded(mut self) {
        self.send(Outcome::Success);
        self.wait_delivered().await;
    }

    /// The login failed: the browser shows a failure page with `reason` (escaped, shortened;
    /// pass an error's `Display`, which never holds a secret). Returns once the page has been
    /// written, for at most five seconds.
    pub async fn failed(mut self, reason: &str) {
        self.send(Outcome::Failure(reason.to_owned()));
        self.wait_delivered().await;
    }

    fn send(&mut self, outcome: Outcome) {
        if let Some(reply) = self.reply.take() {
            // The browser may have gone away; nothing to tell then.
            let _ = reply.send(outcome);
        }
    }

    async fn wait_delivered(&mut self) {
        if let Some(delivered) = self.delivered.take() {
            let _ = tokio::time::timeout(DELIVERY_WAIT, delivered).await;
        }
    }
}

impl Drop for LoopbackCallback {
    fn drop(&mut self) {
        self.send(Outcome::Failure(
            "the application did not finish the login".into(),
        ));
    }
}

/// A listener on 127.0.0.1 waiting for MailUp's redirect.
#[derive(Debug)]
pub struct LoopbackRedirect {
    listener: TcpListener,
    /// `[::1]` on the same port, for a `localhost` redirect URI that a browser may resolve to
    /// the IPv6 loopback address.
    ipv6: Option<TcpListener>,
    redirect_uri: Url,
    path: String,
}

impl LoopbackRedirect {
    /// Binds 127.0.0.1 on `port` (0 = any free port) with the path `/callback`.
    pub async fn bind(port: u16) -> Result<Self, LoopbackError> {
        Self::bind_with_path(port, DEFAULT_CALLBACK_PATH).await
    }

    /// Binds 127.0.0.1 on `port` with a custom callback path.
    pub async fn bind_with_path(port: u16, path: &str) -> Result<Self, LoopbackError> {
        let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
            .await
            .map_err(|e| LoopbackError::Bind {
                port,
                source: ErrorSource::new(e),
            })?;
        let addr = listener
            .local_addr()
            .map_err(|e| LoopbackError::Io(ErrorSource::new(e)))?;
        let path = format!("/{}", path.trim_start_matches('/'));
        let redirect_uri = Url::parse(&format!("http://127.0.0.1:{}{}", addr.port(), path))
            .map_err(|e| LoopbackError::Io(ErrorSource::new(e)))?;
        Ok(Self {
            listener,
            ipv6: None,
            redirect_uri,
            path,
        })
    }

    /// Binds the port and path of a registered loopback redirect URI
    /// (`http://127.0.0.1:PORT/path` or `http://localhost:PORT/path`), which is then sent as is
    /// (MailUp appends `code` and `state` to any query it has). For `localhost`, `[::1]` is
    /// bound too when the machine has it, since a browser may resolve `localhost` to either;
    /// RFC 8252 §8.3 prefers `127.0.0.1`.
    pub async fn bind_for(redirect_uri: &Url) -> Result<Self, LoopbackError> {
        let host = redirect_uri.host_str();
        let loopback = matches!(host, Some("127.0.0.1" | "localhost"));
        let Some(port) = redirect_uri
            .port()
            .filter(|_| loopback && redirect_uri.scheme() == "http")
        else {
            return Err(LoopbackError::NotLoopback(redirect_uri.to_string()));
        };
        let mut listener = Self::bind_with_path(port, redirect_uri.path()).await?;
        if host == Some("localhost") {
            listener.ipv6 = TcpListener::bind(SocketAddr::from((Ipv6Addr::LOCALHOST, port)))
                .await
                .map_err(|e| tracing::debug!(error = %e, "no IPv6 loopback listener"))
                .ok();
        }
        let mut uri = redirect_uri.clone();
        uri.set_fragment(None);
        listener.redirect_uri = uri;
        Ok(listener)
    }

    /// The redirect URI to send in the authorization request.
    pub fn redirect_uri(&self) -> &Url {
        &self.redirect_uri
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Waits for the one callback on the right path whose `state` matches and returns it; the
    /// browser's request stays open until the returned [`LoopbackCallback`] is told how the
    /// login ended (for up to two minutes), so its page reflects the real outcome.
    ///
    /// Requests on other paths (a favicon) get a 404 and are ignored; a request on the right
    /// path with a wrong or missing `state` gets a 400 and is ignored too, so a forged request
    /// cannot end the wait.
    pub async fn wait_for_callback(
        self,
        state: &CsrfState,
        timeout: Duration,
    ) -> Result<LoopbackCallback, LoopbackError> {
        // `Duration::MAX` ("no bound") must not overflow the deadline (`+` panics): 30 years.
        let now = tokio::time::Instant::now();
        let deadline = now
            .checked_add(timeout)
            .unwrap_or_else(|| now + Duration::from_secs(30 * 365 * 24 * 60 * 60));
        let (tx, mut rx) = mpsc::channel::<LoopbackCallback>(1);
        loop {
            tokio::select! {
                Some(callback) = rx.recv() => return Ok(callback),
                _ = tokio::time::sleep_until(deadline) => return Err(LoopbackError::Timeout(timeout)),
                accepted = accept_any(&self.listener, self.ipv6.as_ref()) => {
                    let (stream, _) = match accepted {
                        Ok(accepted) => accepted,
                        // A failed accept (e.g. the peer reset) does not end the wait.
                        Err(e) => {
                            tracing::debug!(error = %e, "loopback accept failed");
                            continue;
                        }
                    };
                    let tx = tx.clone();
                    let expected = state.clone();
                    let path = self.path.clone();
                    let base = self.redirect_uri.clone();
                    tokio::spawn(async move {
                        // Told to the callback (if this connection carries it) once the
                        // connection is done, i.e. the page was written.
                        let (delivered, on_delivery) = oneshot::channel::<()>();
                        let on_delivery = std::sync::Mutex::new(Some(on_delivery));
                        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                            let answer = answer(&request, &path, &expected, &base, &tx, &on_delivery);
                            async move { Ok::<_, Infallible>(answer.page().await) }
                        });
                        let connection = hyper::server::conn::http1::Builder::new()
                            .keep_alive(false)
                            .serve_connection(TokioIo::new(stream), service);
                        let limit = OUTCOME_WAIT + Duration::from_secs(30);
                        let _ = tokio::time::timeout(limit, connection).await;
                        let _ = delivered.send(());
                    });
                }
            }
        }
    }
}

/// The next connection on either listener.
async fn accept_any(
    ipv4: &TcpListener,
    ipv6: Option<&TcpListener>,
) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
    match ipv6 {
        Some(ipv6) => tokio::select! {
            accepted = ipv4.accept() => accepted,
            accepted = ipv6.accept() => accepted,
        },
        None => ipv4.accept().await,
    }
}

/// The browser's answer: a page now, or one once the application reports the outcome.
enum Answer {
    Now(Response<Full<Bytes>>),
    AfterLogin(oneshot::Receiver<Outcome>),
}

impl Answer {
    async fn page(self) -> Response<Full<Bytes>> {
        let receiver = match self {
            Self::Now(page) => return page,
            Self::AfterLogin(receiver) => receiver,
        };
        match tokio::time::timeout(OUTCOME_WAIT, receiver).await {
            Ok(Ok(Outcome::Success)) => page(
                StatusCode::OK,
                "Authorization complete",
                "You are logged in. You can close this window and return to the application.",
            ),
            Ok(Ok(Outcome::Failure(reason))) => page(
                StatusCode::OK,
                "Login failed",
                &format!(
                    "The login did not complete: {}. Return to the application for details; \
                     you can close this window.",
                    escape(&reason)
                ),
            ),
            Ok(Err(_)) | Err(_) => page(
                StatusCode::OK,
                "Login status unknown",
                "The application did not say whether the login completed. Return to it for \
                 details; you can close this window.",
            ),
        }
    }
}

fn answer(
    request: &Request<Incoming>,
    path: &str,
    expected: &CsrfState,
    base: &Url,
    tx: &mpsc::Sender<LoopbackCallback>,
    on_delivery: &std::sync::Mutex<Option<oneshot::Receiver<()>>>,
) -> Answer {
    if request.uri().path() != path {
        return Answer::Now(page(StatusCode::NOT_FOUND, "Not found", "Nothing here."));
    }
    let query = request.uri().query().unwrap_or_default();
    let mut states = form_urlencoded::parse(query.as_bytes()).filter(|(k, _)| k == "state");
    let state_ok =
        matches!((states.next(), states.next()), (Some((_, v)), None) if expected.matches(&v));
    if !state_ok {
        tracing::warn!("loopback callback with a wrong or missing state ignored");
        return Answer::Now(page(
            StatusCode::BAD_REQUEST,
            "Invalid request",
            "This request does not belong to the login in progress. It was ignored.",
        ));
    }
    let mut url = base.clone();
    url.set_query(Some(query));
    let (reply, outcome) = oneshot::channel();
    let callback = LoopbackCallback {
        url,
        reply: Some(reply),
        delivered: on_delivery
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take(),
    };
    if let Err(refused) = tx.try_send(callback) {
        // Not an outcome of this login: the first callback's page tells that one.
        let (mpsc::error::TrySendError::Full(mut callback)
        | mpsc::error::TrySendError::Closed(mut callback)) = refused;
        callback.reply = None;
        return Answer::Now(page(
            StatusCode::CONFLICT,
            "Already done",
            "The login has already completed.",
        ));
    }
    Answer::AfterLogin(outcome)
}

fn page(status: StatusCode, title: &str, message: &str) -> Response<Full<Bytes>> {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title>\
         <style>body{{font-family:sans-serif;margin:4em auto;max-width:32em;color:#222}}</style>\
         </head><body><h1>{title}</h1><p>{message}</p></body></html>"
    );
    Response::builder()
        .status(status)
        .header("content-type", "text/html; charset=utf-8")
        .header("cache-control", "no-store")
        .body(Full::new(Bytes::from(html)))
        .expect("static response parts are valid")
}

fn escape(text: &str) -> String {
    text.chars()
        .take(64)
        .map(|c| match c {
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '&' => "&amp;".to_owned(),
            '"' => "&quot;".to_owned(),
            '\'' => "&#39;".to_owned(),
            c => c.to_string(),
        })
        .collect()
}
