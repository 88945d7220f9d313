//! The core driven by a blocking HTTP client (`ureq`), no async runtime: the code exchange,
//! a refresh with rotation, and an API call with MailUp's 401 → one refresh → one retry.
//!
//! Run it against the emulator (`cargo run -p mailup-auth-emulator --features cli -- --port 8080` in another
//! terminal):
//!
//! ```sh
//! cargo run -p mailup-auth-core --example ureq_blocking -- http://127.0.0.1:8080
//! ```
//!
//! It prints the LogOn URL; log in (`m1234` / `demo-password`), allow, and paste the address
//! the browser was sent back to (`http://127.0.0.1:8765/callback?code=..&state=..`: nothing
//! listens there, copy it from the address bar). `tests/ureq_example.rs` runs the same
//! functions against the emulator.
#![allow(dead_code, unreachable_pub)] // shared with tests/ureq_example.rs, which uses parts

use std::time::{Duration, SystemTime};

use mailup_auth_core::{api_url, with_bearer, ApiCall, ApiStep};
use mailup_auth_core::{
    ClientConfig, ClientSecret, CsrfState, Endpoints, Event, HttpRequest, HttpResponse, Session,
    TokenAccess, TransportError, TransportErrorKind, UnixTime,
};

/// Errors of this program, boxed: a real one would have its own enum.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The transport adapter: one `HttpRequest` in, one `HttpResponse` out.
///
/// Every status is an answer: a 4xx or 5xx must reach the core as a response (it reads the
/// RFC 6749 or MailUp error from the body, and a 401 is what triggers the refresh), never as
/// an error, so ureq's `http_status_as_error` is off. Redirects are not followed, and the body
/// is read only up to the request's `response_limit()`.
pub struct UreqTransport {
    agent: ureq::Agent,
}

impl Default for UreqTransport {
    fn default() -> Self {
        Self::new()
    }
}

impl UreqTransport {
    pub fn new() -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .proxy(None)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Self { agent }
    }

    pub fn send(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        let limit = request.response_limit();
        let mut response = self
            .agent
            .run(request.into_http())
            .map_err(|e| transport_error(&e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .body_mut()
            .with_config()
            .limit(limit as u64)
            .read_to_vec()
            .map_err(|e| transport_error(&e))?;
        let mut answer = HttpResponse::new(status, body);
        answer.headers = headers;
        Ok(answer)
    }
}

/// ureq's error as the core's kind; the message names the kind only (never a URL's query or a
/// body that could hold a secret).
fn transport_error(error: &ureq::Error) -> TransportError {
    let kind = match error {
        ureq::Error::Timeout(_) => TransportErrorKind::Timeout,
        ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => TransportErrorKind::Connect,
        ureq::Error::BodyExceedsLimit(_) => TransportErrorKind::ResponseTooLarge,
        ureq::Error::Io(_) => TransportErrorKind::ConnectionClosed,
        _ => TransportErrorKind::Other,
    };
    TransportError::new(kind, "ureq")
}

/// The driver reads the clock and hands `now` to the core (the core itself never does).
#[allow(clippy::disallowed_methods)]
pub fn now() -> UnixTime {
    UnixTime::from_system_time(SystemTime::now())
}

/// A session for the server at `auth_base` (MailUp's layout: LogOn, Token, Console API).
pub fn session(
    auth_base: &str,
    client_id: &str,
    client_secret: &str,
    redirect_uri: &str,
) -> Result<Session, BoxError> {
    let config = ClientConfig::builder(client_id, ClientSecret::new(client_secret))
        .endpoints(Endpoints::from_auth_base(auth_base)?)
        .redirect_uri(redirect_uri)
        .build()?;
    Ok(Session::new(config))
}

/// Sends every token request the session has queued and feeds the answers back; returns the
/// first failure (tokens are persisted by a real program on `TokensChanged`).
pub fn drive(session: &mut Session, transport: &UreqTransport) -> Result<(), BoxError> {
    let mut failure: Option<BoxError> = None;
    while let Some(request) = session.poll_request() {
        let (id, _grant, http) = request.into_parts();
        let answer = transport.send(http);
        session.handle_token_response(now(), id, answer);
    }
    while let Some(event) = session.poll_event() {
        match event {
            Event::TokensChanged { .. } => {} // save `session.tokens()` durably here
            Event::AuthorizationFailed { error, .. } | Event::RefreshFailed { error, .. } => {
                failure.get_or_insert(Box::new(error));
            }
            Event::ReauthorizationRequired(reason) => {
                failure.get_or_insert(reason.to_string().into());
            }
            _ => {}
        }
    }
    failure.map_or(Ok(()), Err)
}

/// Step 1: the LogOn URL to send the user's browser to (`state` from your RNG).
pub fn logon_url(session: &mut Session, state: &str) -> Result<url::Url, BoxError> {
    Ok(session.begin_authorization(now(), CsrfState::new(state), None)?)
}

/// Step 2: the callback URL the browser came back with → the code exchange.
pub fn exchange(
    session: &mut Session,
    transport: &UreqTransport,
    callback: &str,
) -> Result<(), BoxError> {
    session.handle_callback(now(), callback)?;
    drive(session, transport)
}

/// A refresh now (MailUp rotates the refresh token: the session keeps the new one).
pub fn refresh(session: &mut Session, transport: &UreqTransport) -> Result<(), BoxError> {
    session.refresh_now()?;
    drive(session, transport)
}

/// A fresh access token, refreshing first when one is due.
fn access_token(
    session: &mut Session,
    transport: &UreqTransport,
) -> Result<mailup_auth_core::AccessToken, BoxError> {
    // Two rounds at most: the token, or one refresh and then the token.
    for _ in 0..2 {
        match session.access_token_or_refresh(now()) {
            TokenAccess::Ready(token) => return Ok(token),
            TokenAccess::Pending => drive(session, transport)?,
            TokenAccess::BackingOff { error, .. } => return Err(Box::new(error)),
            TokenAccess::ReauthorizationRequired(reason) => return Err(reason.to_string().into()),
        }
    }
    Err("no access token after a refresh".into())
}

/// `GET` an API path: bearer token, and on MailUp's 401 one refresh and one retry (the core's
/// `ApiCall` decides; a second 401 is returned as the error it is).
pub fn api_get(
    session: &mut Session,
    transport: &UreqTransport,
    path: &str,
) -> Result<serde_json::Value, BoxError> {
    let url = api_url(&session.config().endpoints().api_base, path)?;
    let mut call = ApiCall::new();
    loop {
        let token = access_token(session, transport)?;
        let request = with_bearer(HttpRequest::new(http::Method::GET, url.clone()), &token);
        let response = transport.send(request)?;
        match call.handle_response_at(&response, now()) {
            ApiStep::Done => return Ok(serde_json::from_slice(&response.body)?),
            ApiStep::RefreshAndRetry => session.handle_unauthorized(now(), &token),
            ApiStep::Fail(error) => return Err(Box::new(error)),
        }
    }
}

fn main() -> Result<(), BoxError> {
    let auth_base = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:8080".to_owned());
    let client_id =
        std::env::var("MAILUP_CLIENT_ID").unwrap_or_else(|_| "mailup-demo-client".into());
    // The secret comes from the environment, never from a command-line flag.
    let client_secret =
        std::env::var("MAILUP_CLIENT_SECRET").unwrap_or_else(|_| "mailup-demo-secret".into());
    let transport = UreqTransport::new();
    let mut session = session(
        &auth_base,
        &client_id,
        &client_secret,
        "http://127.0.0.1:8765/callback",
    )?;
    println!("Open: {}", logon_url(&mut session, "example-state")?);
    println!("Paste the address you were sent back to:");
    let mut callback = String::new();
    std::io::stdin().read_line(&mut callback)?;
    exchange(&mut session, &transport, callback.trim())?;
    println!("logged in; state {:?}", session.state());
    refresh(&mut session, &transport)?;
    println!("refreshed (the refresh token rotated)");
    let info = api_get(&mut session, &transport, "Console/Authentication/Info")?;
    println!("account: {}", info["Username"]);
    Ok(())
}
