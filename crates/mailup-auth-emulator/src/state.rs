//! The emulator's mutable state: pending LogOn forms, codes, tokens, console accounts, injected
//! faults and counters. One `Mutex<State>` guards everything that must change together; it is never held
//! across an `.await`. Counters are atomics beside it.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::config::{EmulatorConfig, RateLimit, RegisteredClient, User};
use crate::console::ConsoleAccount;

/// How long a LogOn form (and then its consent form) stays usable.
pub(crate) const PENDING_LIFETIME: Duration = Duration::from_secs(600);

/// A bad answer to inject into upcoming token-endpoint or API requests: the emulator's
/// catalogue of what real servers, proxies and networks do wrong, so that a client (this
/// project's or anyone's) can be tested against each.
///
/// Unless said otherwise, a fault answers *instead of* the request: nothing is processed, no
/// token is issued or rotated, and the same fault works on the token endpoint and on the API.
/// The `ExpiresIn*` and [`MissingRefreshToken`](Self::MissingRefreshToken) faults process the
/// token request and then mangle the answer (the tokens in it are real); on the API they are
/// no fault (the request is served normally).
///
/// The admin API and the CLI's `--fault` names are the `snake_case` forms of the variant names
/// (`status500`, `html200`, `redirect302`, `expires_in_negative`, `chunked_gigabyte`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Fault {
    /// `500 Internal Server Error` with a JSON body (RFC 6749 `server_error` on the token
    /// endpoint, MailUp's `ErrorCode` shape on the API).
    Status500,
    /// `503 Service Unavailable` with `Retry-After: 1` and a plain-text body.
    Status503,
    /// `502 Bad Gateway` with an HTML page, as a reverse proxy would send.
    HtmlErrorPage,
    /// `200 OK`, `Content-Type: application/json`, and a truncated, unparseable body.
    MalformedBody,
    /// The TCP connection is closed without any HTTP response.
    DropConnection,
    /// `404 Not Found` with an HTML page, as a misrouted proxy would send.
    NotFoundHtml,
    /// `400 Bad Request` with an RFC 6749 `invalid_request` body: a refusal that says nothing
    /// about the grant.
    InvalidRequest,
    /// `200 OK` with an HTML page (a captive portal, a login wall).
    Html200,
    /// `200 OK` with JSON cut in the middle of a value (`{"access_token":"abc","expires_in":36`).
    TruncatedJson,
    /// `302 Found` to another place (redirects must not be followed with credentials).
    Redirect302,
    /// `307 Temporary Redirect` to another place (a 307 would repeat the POST body).
    Redirect307,
    /// Token endpoint: the grant is processed; the answer says `"expires_in": -3600`.
    ExpiresInNegative,
    /// Token endpoint: the grant is processed; the answer says `"expires_in": 18446744073709551615000`.
    ExpiresInHuge,
    /// Token endpoint: the grant is processed; the answer says `"expires_in": 3599.75`.
    ExpiresInFloat,
    /// Token endpoint: the grant is processed; the answer says `"expires_in": "3600"`.
    ExpiresInString,
    /// Token endpoint: the grant is processed; the answer says `"expires_in": "soon"`.
    ExpiresInGarbage,
    /// Token endpoint: the grant is processed; the answer says `"expires_in": 0`.
    ExpiresInZero,
    /// `200 OK` with `refresh_token` and `expires_in` but no `access_token` (nothing issued).
    MissingAccessToken,
    /// `200 OK` whose `access_token` is a number and `refresh_token` an array (nothing issued).
    NonStringToken,
    /// `200 OK`, `application/json`, with bytes that are not UTF-8 inside the token.
    NonUtf8Body,
    /// `200 OK` whose `access_token` holds `\r\n` and a header line (nothing issued): a
    /// client that put it in a header as is would inject that header.
    TokenWithCrLf,
    /// Token endpoint: the grant is processed but the answer has no `refresh_token`, and the
    /// refresh token is not rotated (a refresh keeps the one it was sent with alive; a login
    /// issues none).
    MissingRefreshToken,
    /// `200 OK` with an RFC 6749 error body, `{"error":"invalid_grant",..}` (nothing issued).
    ErrorWith200,
    /// `401 Unauthorized` with an empty body and no `WWW-Authenticate`.
    Empty401,
    /// `403 Forbidden` with an HTML page (a web application firewall).
    Html403,
    /// `429 Too Many Requests` with `Retry-After: 2` (seconds).
    TooManyRequestsSeconds,
    /// `429 Too Many Requests` with `Retry-After` as an HTTP date two seconds ahead.
    TooManyRequestsDate,
    /// `429 Too Many Requests` with `Retry-After: soon-ish`.
    TooManyRequestsGarbage,
    /// `429 Too Many Requests` with `Retry-After: 99999999999` (three thousand years).
    TooManyRequestsHuge,
    /// `200 OK` announcing a 4096-byte body, of which 64 bytes are sent before the connection
    /// is closed.
    BodyDroppedMidway,
    /// Not HTTP at all: `SSH-2.0-OpenSSH_9.6\r\n` (a garbage status line), then the
    /// connection is closed.
    GarbageStatusLine,
    /// `200 OK` with a 2 MiB header line (and a valid-looking body).
    HugeHeader,
    /// `200 OK` at once, then a body of one space every 250 ms that never ends (for ten
    /// minutes, or until the client goes away).
    SlowBody,
    /// The request is read and then nothing is sent, for ten minutes or until the client goes
    /// away.
    HeadersNeverCome,
    /// `200 OK`, `Transfer-Encoding: chunked`, a JSON-looking body of 1 GiB, produced as it is
    /// read (the emulator never holds it).
    ChunkedGigabyte,
}

impl Fault {
    /// Every fault, in declaration order: the catalogue, for table-driven tests.
    pub const ALL: &'static [Fault] = &[
        Fault::Status500,
        Fault::Status503,
        Fault::HtmlErrorPage,
        Fault::MalformedBody,
        Fault::DropConnection,
        Fault::NotFoundHtml,
        Fault::InvalidRequest,
        Fault::Html200,
        Fault::TruncatedJson,
        Fault::Redirect302,
        Fault::Redirect307,
        Fault::ExpiresInNegative,
        Fault::ExpiresInHuge,
        Fault::ExpiresInFloat,
        Fault::ExpiresInString,
        Fault::ExpiresInGarbage,
        Fault::ExpiresInZero,
        Fault::MissingAccessToken,
        Fault::NonStringToken,
        Fault::NonUtf8Body,
        Fault::TokenWithCrLf,
        Fault::MissingRefreshToken,
        Fault::ErrorWith200,
        Fault::Empty401,
        Fault::Html403,
        Fault::TooManyRequestsSeconds,
        Fault::TooManyRequestsDate,
        Fault::TooManyRequestsGarbage,
        Fault::TooManyRequestsHuge,
        Fault::BodyDroppedMidway,
        Fault::GarbageStatusLine,
        Fault::HugeHeader,
        Fault::SlowBody,
        Fault::HeadersNeverCome,
        Fault::ChunkedGigabyte,
    ];

    /// The name used by the admin API (`snake_case`).
    pub fn name(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    /// Whether the token endpoint processes the request before mangling its answer (the
    /// `ExpiresIn*` faults and [`MissingRefreshToken`](Self::MissingRefreshToken)); such
    /// faults do nothing on the API.
    pub fn processes_the_grant(self) -> bool {
        matches!(
            self,
            Fault::ExpiresInNegative
                | Fault::ExpiresInHuge
                | Fault::ExpiresInFloat
                | Fault::ExpiresInString
                | Fault::ExpiresInGarbage
                | Fault::ExpiresInZero
                | Fault::MissingRefreshToken
        )
    }

    /// Whether the answer never completes on its own: the client's timeout ends it
    /// ([`SlowBody`](Self::SlowBody), [`HeadersNeverCome`](Self::HeadersNeverCome)).
    pub fn hangs(self) -> bool {
        matches!(self, Fault::SlowBody | Fault::HeadersNeverCome)
    }
}

/// A snapshot of the emulator's counters. Counters only grow, except through
/// [`Emulator::reset_counters`](crate::Emulator::reset_counters).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Counters {
    /// Every request that reached the token endpoint, faulted ones included.
    pub token_requests: u64,
    /// Token requests with `grant_type=authorization_code` (not faulted).
    pub token_authorization_code: u64,
    /// Token requests with `grant_type=refresh_token` (not faulted).
    pub token_refresh_token: u64,
    /// Token requests with `grant_type=password` (not faulted).
    pub token_password: u64,
    /// Token requests answered with an OAuth error (4xx JSON).
    pub token_errors: u64,
    /// Token requests answered with an injected [`Fault`].
    pub token_faults: u64,
    /// Access tokens issued (one per successful grant).
    pub access_tokens_issued: u64,
    /// Requests under the Console API base, whatever their outcome.
    pub api_calls: u64,
    /// API requests answered 401.
    pub api_unauthorized: u64,
    /// API requests answered 429.
    pub rate_limited: u64,
    /// API requests answered with an injected [`Fault`].
    pub api_faults: u64,
    /// Authorization codes issued (consent allowed).
    pub codes_issued: u64,
    /// LogOn pages served after a valid LogOn request.
    pub logon_pages: u64,
    /// Login form posts with a wrong username or password.
    pub logon_failures: u64,
    /// Consent forms answered with Deny.
    pub consents_denied: u64,
}

#[derive(Debug, Default)]
pub(crate) struct CounterCells {
    pub(crate) token_requests: AtomicU64,
    pub(crate) token_authorization_code: AtomicU64,
    pub(crate) token_refresh_token: AtomicU64,
    pub(crate) token_password: AtomicU64,
    pub(crate) token_errors: AtomicU64,
    pub(crate) token_faults: AtomicU64,
    pub(crate) access_tokens_issued: AtomicU64,
    pub(crate) api_calls: AtomicU64,
    pub(crate) api_unauthorized: AtomicU64,
    pub(crate) rate_limited: AtomicU64,
    pub(crate) api_faults: AtomicU64,
    pub(crate) codes_issued: AtomicU64,
    pub(crate) logon_pages: AtomicU64,
    pub(crate) logon_failures: AtomicU64,
    pub(crate) consents_denied: AtomicU64,
}

pub(crate) fn bump(cell: &AtomicU64) {
    cell.fetch_add(1, Ordering::Relaxed);
}

impl CounterCells {
    pub(crate) fn snapshot(&self) -> Counters {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Counters {
            token_requests: get(&self.token_requests),
            token_authorization_code: get(&self.token_authorization_code),
            token_refresh_token: get(&self.token_refresh_token),
            token_password: get(&self.token_password),
            token_errors: get(&self.token_errors),
            token_faults: get(&self.token_faults),
            access_tokens_issued: get(&self.access_tokens_issued),
            api_calls: get(&self.api_calls),
            api_unauthorized: get(&self.api_unauthorized),
            rate_limited: get(&self.rate_limited),
            api_faults: get(&self.api_faults),
            codes_issued: get(&self.codes_issued),
            logon_pages: get(&self.logon_pages),
            logon_failures: get(&self.logon_failures),
            consents_denied: get(&self.consents_denied),
        }
    }

    pub(crate) fn reset(&self) {
        for cell in [
            &self.token_requests,
            &self.token_authorization_code,
            &self.token_refresh_token,
            &self.token_password,
            &self.token_errors,
            &self.token_faults,
            &self.access_tokens_issued,
            &self.api_calls,
            &self.api_unauthorized,
            &self.rate_limited,
            &self.api_faults,
            &self.codes_issued,
            &self.logon_pages,
            &self.logon_failures,
            &self.consents_denied,
        ] {
            cell.store(0, Ordering::Relaxed);
        }
    }
}

/// Where a LogOn dance stands.
#[derive(Debug, Clone)]
pub(crate) enum PendingStage {
    Login,
    Consent { username: String },
}

/// One LogOn dance in progress, keyed by an unguessable id carried in the forms.
#[derive(Debug, Clone)]
pub(crate) struct PendingAuthorization {
    pub(crate) client_id: String,
    pub(crate) redirect_uri: String,
    pub(crate) state: Option<String>,
    /// The emulator's CSRF token: every form post must echo it; it changes at each step.
    pub(crate) csrf: String,
    pub(crate) created: SystemTime,
    pub(crate) stage: PendingStage,
}

#[derive(Debug, Clone)]
pub(crate) struct CodeGrant {
    pub(crate) client_id: String,
    pub(crate) redirect_uri: String,
    pub(crate) username: String,
    pub(crate) expires_at: SystemTime,
}

#[derive(Debug, Clone)]
pub(crate) struct AccessGrant {
    pub(crate) username: String,
    pub(crate) expires_at: SystemTime,
}

#[derive(Debug, Clone)]
pub(crate) struct RefreshGrant {
    pub(crate) client_id: String,
    pub(crate) username: String,
}

/// What a successful grant hands out.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct IssuedTokens {
    pub(crate) access_token: String,
    pub(crate) expires_in: u64,
    pub(crate) refresh_token: String,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) pending: HashMap<String, PendingAuthorization>,
    pub(crate) codes: HashMap<String, CodeGrant>,
    pub(crate) access_tokens: HashMap<String, AccessGrant>,
    pub(crate) refresh_tokens: HashMap<String, RefreshGrant>,
    pub(crate) issued_refresh_tokens: Vec<String>,
    pub(crate) faults: VecDeque<(Fault, u32)>,
    pub(crate) api_faults: VecDeque<(Fault, u32)>,
    pub(crate) rate_windows: HashMap<String, (SystemTime, u32)>,
    /// Console data per account (username).
    pub(crate) accounts: HashMap<String, ConsoleAccount>,
    pub(crate) token_latency: Duration,
    pub(crate) api_latency: Duration,
    pub(crate) rate_limit: Option<RateLimit>,
    pub(crate) issued_since_prune: u32,
}

/// Everything the handlers share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) clients: HashMap<String, RegisteredClient>,
    pub(crate) users: HashMap<String, User>,
    pub(crate) access_token_lifetime: Duration,
    pub(crate) code_lifetime: Duration,
    pub(crate) admin_api: bool,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) counters: CounterCells,
    /// Added to the clock by `advance_clock`; an atomic so reading the time never takes the
    /// state lock (handlers read the time, then lock).
    clock_offset_nanos: AtomicU64,
    /// Set when the emulator stops, so that never-ending faults end too.
    pub(crate) stopping: std::sync::atomic::AtomicBool,
    state: Mutex<State>,
}

pub(crate) type AppState = Arc<Shared>;

/// Fills `buf` from the operating system's generator (tokens, codes and ids must be
/// unguessable even in an emulator: tests probe for guessing). No randomness is a panic.
pub(crate) fn fill_random(buf: &mut [u8]) {
    if let Err(error) = getrandom::getrandom(buf) {
        panic!("the operating system's random generator failed: {error}");
    }
}

/// A random, URL-safe token of `bytes` bytes of entropy.
pub(crate) fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    fill_random(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

impl Shared {
    pub(crate) fn new(config: &EmulatorConfig, clock: Arc<dyn Clock>) -> Self {
        let state = State {
            rate_limit: config.rate_limit,
            accounts: config
                .users
                .iter()
                .map(|u| (u.username.clone(), ConsoleAccount::seeded(u)))
                .collect(),
            ..State::default()
        };
        Self {
            clients: config
                .clients
                .iter()
                .map(|c| (c.id.clone(), c.clone()))
                .collect(),
            users: config
                .users
                .iter()
                .map(|u| (u.username.clone(), u.clone()))
                .collect(),
            access_token_lifetime: config.access_token_lifetime,
            code_lifetime: config.code_lifetime,
            admin_api: config.admin_api,
            clock,
            counters: CounterCells::default(),
            clock_offset_nanos: AtomicU64::new(0),
            stopping: std::sync::atomic::AtomicBool::new(false),
            state: Mutex::new(state),
        }
    }

    /// The lock; a poisoned lock is still used, since every update keeps the state consistent
    /// before anything that could panic.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The emulator's notion of now: the injected clock plus any admin-API advance.
    pub(crate) fn now(&self) -> SystemTime {
        let offset = Duration::from_nanos(self.clock_offset_nanos.load(Ordering::SeqCst));
        self.clock.now() + offset
    }

    /// Moves the emulator's time forward by `by` (saturating).
    pub(crate) fn advance_clock(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        let _ = self
            .clock_offset_nanos
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |old| {
                Some(old.saturating_add(by))
            });
    }

    /// Checks a username and password.
    pub(crate) fn check_password(&self, username: &str, password: &str) -> bool {
        self.users
            .get(username)
            .is_some_and(|u| constant_time_eq(u.password.as_bytes(), password.as_bytes()))
    }

    /// Checks client credentials.
    pub(crate) fn check_client(&self, id: &str, secret: &str) -> bool {
        self.clients
            .get(id)
            .is_some_and(|c| constant_time_eq(c.secret.as_bytes(), secret.as_bytes()))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl State {
    /// Issues a fresh access and refresh token pair.
    pub(crate) fn issue_tokens(
        &mut self,
        client_id: &str,
        username: &str,
        now: SystemTime,
        lifetime: Duration,
    ) -> IssuedTokens {
        self.prune(now);
        let access_token = random_token(48);
        let refresh_token = random_token(48);
        self.access_tokens.insert(
            access_token.clone(),
            AccessGrant {
                username: username.to_owned(),
                expires_at: now + lifetime,
            },
        );
        self.refresh_tokens.insert(
            refresh_token.clone(),
            RefreshGrant {
                client_id: client_id.to_owned(),
                username: username.to_owned(),
            },
        );
        self.issued_refresh_tokens.push(refresh_token.clone());
        IssuedTokens {
            access_token,
            expires_in: lifetime.as_secs(),
            refresh_token,
        }
    }

    /// Forgets access tokens that expired more than a day ago, expired codes and stale forms,
    /// every 1024 issues, so a long-running emulator does not grow without bound.
    fn prune(&mut self, now: SystemTime) {
        self.issued_since_prune += 1;
        if self.issued_since_prune < 1024 {
            return;
        }
        self.issued_since_prune = 0;
        let day = Duration::from_secs(86_400);
        self.access_tokens
            .retain(|_, grant| grant.expires_at + day > now);
        let live: std::collections::HashSet<&String> = self.access_tokens.keys().collect();
        self.rate_windows.retain(|token, _| live.contains(token));
        self.codes.retain(|_, code| code.expires_at > now);
        self.pending
            .retain(|_, pending| pending.created + PENDING_LIFETIME > now);
    }

    /// Takes the next injected token-endpoint fault, if any.
    pub(crate) fn take_fault(&mut self) -> Option<Fault> {
        take_from(&mut self.faults)
    }

    /// Takes the next injected API fault, if any.
    pub(crate) fn take_api_fault(&mut self) -> Option<Fault> {
        take_from(&mut self.api_faults)
    }
}

fn take_from(queue: &mut VecDeque<(Fault, u32)>) -> Option<Fault> {
    let (fault, remaining) = queue.front_mut()?;
    let fault = *fault;
    *remaining -= 1;
    if *remaining == 0 {
        queue.pop_front();
    }
    Some(fault)
}

#[cfg(test)]
mod tests {
    use super::Fault;

    #[test]
    fn every_fault_has_a_distinct_name_that_reads_back() {
        let mut names = std::collections::HashSet::new();
        for fault in Fault::ALL {
            let name = fault.name();
            assert!(!name.is_empty(), "{fault:?}");
            assert!(names.insert(name.clone()), "{name} twice");
            let back: Fault = serde_json::from_value(serde_json::json!(name)).unwrap();
            assert_eq!(back, *fault);
        }
        assert_eq!(Fault::ALL.len(), 35);
    }
}
