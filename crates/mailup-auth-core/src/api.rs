//! MailUp REST API calls: bearer requests, URL resolution against the API base, and the
//! classification of responses (success, 401 → refresh once and retry once, 429, errors with
//! MailUp's `ErrorCode` / `ErrorName` / `ErrorDescription`).

use std::time::Duration;

use http::header::{HeaderValue, AUTHORIZATION, RETRY_AFTER};
use serde_json::Value;
use url::Url;
use zeroize::Zeroizing;

use crate::http::{HttpRequest, HttpResponse};
use crate::secret::AccessToken;
use crate::time::UnixTime;
use crate::token::{parse_json_object, truncate};

/// MailUp's error fields, as found in an API error body (all optional: proxies send HTML).
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct MailUpError {
    /// HTTP status.
    pub status: u16,
    /// `ErrorCode` (a string in MailUp's JSON; a number is accepted too).
    pub code: Option<String>,
    /// `ErrorName`, e.g. `Unauthorized`.
    pub name: Option<String>,
    /// `ErrorDescription`, truncated.
    pub description: Option<String>,
}

impl MailUpError {
    /// Reads MailUp's error fields from a response.
    pub fn from_response(response: &HttpResponse) -> Self {
        let object = parse_json_object(&response.body).unwrap_or_default();
        let field = |key: &str| match object.get(key) {
            Some(Value::String(s)) => Some(truncate(s, 300)),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        Self {
            status: response.status.as_u16(),
            code: field("ErrorCode"),
            name: field("ErrorName"),
            description: field("ErrorDescription"),
        }
    }
}

impl std::fmt::Display for MailUpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {}", self.status)?;
        if let Some(code) = &self.code {
            write!(f, ", ErrorCode {code}")?;
        }
        if let Some(name) = &self.name {
            write!(f, " ({name})")?;
        }
        if let Some(description) = &self.description {
            write!(f, ": {description}")?;
        }
        Ok(())
    }
}

/// An API call that did not succeed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// 401 (after the one refresh-and-retry, when it came from the flow).
    #[error("unauthorized: {0}")]
    Unauthorized(MailUpError),
    /// 403: not allowed, or the contract is not signed.
    #[error("forbidden: {0}")]
    Forbidden(MailUpError),
    /// 429: rate limited.
    #[error("rate limited{}: {error}", .retry_after.map(|d| format!(" (retry after {} s)", d.as_secs())).unwrap_or_default())]
    RateLimited {
        /// `Retry-After`, when sent in seconds.
        retry_after: Option<Duration>,
        /// MailUp's error fields.
        error: MailUpError,
    },
    /// Another 4xx.
    #[error("request rejected: {0}")]
    Client(MailUpError),
    /// 5xx.
    #[error("server error: {0}")]
    Server(MailUpError),
    /// A status that is neither success nor an error (1xx, 3xx: redirects are not followed).
    #[error("unexpected response: {0}")]
    Unexpected(MailUpError),
}

impl ApiError {
    /// MailUp's error fields.
    pub fn mailup_error(&self) -> &MailUpError {
        match self {
            Self::Unauthorized(e)
            | Self::Forbidden(e)
            | Self::Client(e)
            | Self::Server(e)
            | Self::Unexpected(e)
            | Self::RateLimited { error: e, .. } => e,
        }
    }
}

/// Classifies an API response: `Ok(())` for 2xx, a typed error otherwise. `Retry-After` is
/// read in delta-seconds only; [`classify_api_response_at`] reads HTTP dates too.
pub fn classify_api_response(response: &HttpResponse) -> Result<(), ApiError> {
    classify(response, retry_after(response))
}

/// Classifies an API response received at `now`: like [`classify_api_response`], and a
/// `Retry-After` HTTP date is turned into the wait from `now` (see [`retry_after_at`]).
pub fn classify_api_response_at(response: &HttpResponse, now: UnixTime) -> Result<(), ApiError> {
    classify(response, retry_after_at(response, now))
}

fn classify(response: &HttpResponse, retry_after: Option<Duration>) -> Result<(), ApiError> {
    let status = response.status;
    if status.is_success() {
        return Ok(());
    }
    let error = MailUpError::from_response(response);
    Err(match status.as_u16() {
        401 => ApiError::Unauthorized(error),
        403 => ApiError::Forbidden(error),
        429 => ApiError::RateLimited { retry_after, error },
        400..=499 => ApiError::Client(error),
        500..=599 => ApiError::Server(error),
        _ => ApiError::Unexpected(error),
    })
}

/// `Retry-After` in delta-seconds (an HTTP date needs the time: see [`retry_after_at`]; here
/// it reads as absent, as does anything else that is not a number of seconds).
pub fn retry_after(response: &HttpResponse) -> Option<Duration> {
    retry_after_value(response)?
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// `Retry-After` as the wait from `now`: delta-seconds, or an HTTP date (RFC 9110's
/// IMF-fixdate, and the obsolete RFC 850 and asctime forms). A date in the past means no wait
/// (zero). Anything else (garbage, a negative number, an empty value) reads as absent. The
/// value is not capped: the caller decides how long it is willing to wait.
pub fn retry_after_at(response: &HttpResponse, now: UnixTime) -> Option<Duration> {
    let value = retry_after_value(response)?;
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(now.to_system_time())
            .unwrap_or(Duration::ZERO),
    )
}

fn retry_after_value(response: &HttpResponse) -> Option<&str> {
    Some(response.headers.get(RETRY_AFTER)?.to_str().ok()?.trim())
}

/// What to do after an API response.
///
/// Exhaustive on purpose: a driver must handle every step (a new one must break its `match`
/// at compile time rather than fall into a wildcard that cannot know what to do).
#[allow(
    clippy::exhaustive_enums,
    reason = "exhaustive on purpose: a driver's `match` must break at compile time when a step is added"
)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiStep {
    /// The call succeeded.
    Done,
    /// The token was rejected for the first time: refresh, then retry the call once.
    RefreshAndRetry,
    /// The call failed; do not retry (a second 401 lands here: never a loop).
    Fail(ApiError),
}

/// The retry policy of one API call: a 401 leads to one refresh and one retry, never more.
#[derive(Clone, Debug, Default)]
pub struct ApiCall {
    retried: bool,
}

impl ApiCall {
    /// A new call that has not retried.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the one retry has been used.
    pub fn has_retried(&self) -> bool {
        self.retried
    }

    /// Handles a response of this call (`Retry-After` in delta-seconds only; prefer
    /// [`handle_response_at`](Self::handle_response_at)).
    pub fn handle_response(&mut self, response: &HttpResponse) -> ApiStep {
        self.step(classify_api_response(response))
    }

    /// Handles a response of this call received at `now` (a `Retry-After` HTTP date becomes
    /// the wait from `now`).
    pub fn handle_response_at(&mut self, response: &HttpResponse, now: UnixTime) -> ApiStep {
        self.step(classify_api_response_at(response, now))
    }

    fn step(&mut self, classified: Result<(), ApiError>) -> ApiStep {
        match classified {
            Ok(()) => ApiStep::Done,
            Err(ApiError::Unauthorized(_)) if !self.retried => {
                self.retried = true;
                ApiStep::RefreshAndRetry
            }
            Err(error) => ApiStep::Fail(error),
        }
    }
}

/// Adds `Authorization: Bearer <token>` (marked sensitive) to a request.
pub fn with_bearer(request: HttpRequest, token: &AccessToken) -> HttpRequest {
    request.with_header(AUTHORIZATION, bearer_header(token))
}

/// The `Authorization` header value `Bearer <token>`, marked sensitive (so `http`'s `Debug`
/// and well-behaved clients' logs hide it), for any HTTP client's request type.
///
/// Built once per token and shared by its clones: later calls count a reference to the same
/// bytes (no formatting, no allocation). The bytes are a zeroizing buffer the header value
/// owns (no plain copy is made), wiped when the token and every request that carried the
/// value are gone. A token that is not a valid header value (never stored: see
/// [`is_header_safe_token`](crate::is_header_safe_token)) gives `Bearer invalid`.
pub fn bearer_header(token: &AccessToken) -> HeaderValue {
    token.bearer(|secret| {
        let mut bearer = Zeroizing::new(Vec::with_capacity("Bearer ".len() + secret.len()));
        bearer.extend_from_slice(b"Bearer ");
        bearer.extend_from_slice(secret.as_bytes());
        let mut value = HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(bearer))
            .unwrap_or_else(|_| HeaderValue::from_static("Bearer invalid"));
        value.set_sensitive(true);
        value
    })
}

/// A path that cannot be turned into an API URL; built only by [`api_url`]. The text says what
/// is wrong with the path (it never holds a token: API paths carry none).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid API path or URL: {0}")]
#[non_exhaustive]
pub struct ApiPathError(pub String);

/// Resolves an API path against the API base: a full `http(s)://` URL is used as is; any
/// other path (with or without a leading `/`, with or without a query) is appended to the base.
pub fn api_url(api_base: &Url, path: &str) -> Result<Url, ApiPathError> {
    let path = path.trim();
    if path.starts_with("http://") || path.starts_with("https://") {
        return crate::config::parse_http_url("api url", path)
            .map_err(|e| ApiPathError(e.to_string()));
    }
    if path.contains("://") {
        return Err(ApiPathError("only http and https URLs are allowed".into()));
    }
    let path = path.trim_start_matches('/');
    if api_base.query().is_none() && api_base.fragment().is_none() {
        return Ok(append_to_base(api_base, path));
    }
    let base = api_base.as_str().trim_end_matches('/');
    Url::parse(&format!("{base}/{path}")).map_err(|e| ApiPathError(e.to_string()))
}

/// `base` (a URL without query or fragment) with `relative` (`path[?query][#fragment]`)
/// appended to its path: the URL that parsing `base/relative` gives, without parsing the
/// scheme and host again (the host goes through IDNA, which dominates a parse). Every API
/// call resolves its path, so this is on the hot path.
fn append_to_base(base: &Url, relative: &str) -> Url {
    let (rest, fragment) = match relative.split_once('#') {
        Some((rest, fragment)) => (rest, Some(fragment)),
        None => (relative, None),
    };
    let (relative_path, query) = match rest.split_once('?') {
        Some((relative_path, query)) => (relative_path, Some(query)),
        None => (rest, None),
    };
    let base_path = base.path().trim_end_matches('/');
    let mut path = String::with_capacity(base_path.len() + 1 + relative_path.len());
    path.push_str(base_path);
    path.push('/');
    path.push_str(relative_path);
    let mut url = base.clone();
    url.set_path(&path);
    url.set_query(query);
    url.set_fragment(fragment);
    url
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    const EXPIRED: &str = r#"{"ErrorCode":"401","ErrorDescription":"Authorization error: Access token is expired","ErrorName":"Unauthorized","ErrorStack":null}"#;

    fn response(status: u16, body: &str) -> HttpResponse {
        HttpResponse::new(
            StatusCode::from_u16(status).unwrap(),
            body.as_bytes().to_vec(),
        )
    }

    #[test]
    fn success_statuses() {
        assert_eq!(
            classify_api_response(&response(200, r#"{"UID":"388"}"#)),
            Ok(())
        );
        assert_eq!(classify_api_response(&response(204, "")), Ok(()));
    }

    #[test]
    fn mailups_expired_token_shape() {
        let err = classify_api_response(&response(401, EXPIRED)).unwrap_err();
        assert_eq!(
            err,
            ApiError::Unauthorized(MailUpError {
                status: 401,
                code: Some("401".into()),
                name: Some("Unauthorized".into()),
                description: Some("Authorization error: Access token is expired".into()),
            })
        );
        assert_eq!(
            err.to_string(),
            "unauthorized: HTTP 401, ErrorCode 401 (Unauthorized): Authorization error: Access token is expired"
        );
    }

    #[test]
    fn other_statuses_are_typed() {
        let forbidden = r#"{"ErrorCode":"403","ErrorName":"Forbidden","ErrorDescription":"Contract not signed"}"#;
        assert!(
            matches!(classify_api_response(&response(403, forbidden)), Err(ApiError::Forbidden(e)) if e.description.as_deref() == Some("Contract not signed"))
        );
        assert!(
            matches!(classify_api_response(&response(400, r#"{"ErrorCode":400}"#)), Err(ApiError::Client(e)) if e.code.as_deref() == Some("400"))
        );
        assert!(
            matches!(classify_api_response(&response(404, "<html>nope</html>")), Err(ApiError::Client(e)) if e.code.is_none())
        );
        assert!(matches!(
            classify_api_response(&response(500, "")),
            Err(ApiError::Server(_))
        ));
        assert!(matches!(
            classify_api_response(&response(503, "<html/>")),
            Err(ApiError::Server(_))
        ));
        assert!(matches!(
            classify_api_response(&response(302, "")),
            Err(ApiError::Unexpected(_))
        ));
    }

    #[test]
    fn rate_limit_reads_retry_after() {
        let limited = response(429, r#"{"ErrorCode":"429","ErrorName":"TooManyRequests"}"#)
            .with_header(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(
            classify_api_response(&limited).unwrap_err(),
            ApiError::RateLimited {
                retry_after: Some(Duration::from_secs(7)),
                error: MailUpError {
                    status: 429,
                    code: Some("429".into()),
                    name: Some("TooManyRequests".into()),
                    description: None
                }
            }
        );
        let dated = response(429, "").with_header(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert!(matches!(
            classify_api_response(&dated),
            Err(ApiError::RateLimited {
                retry_after: None,
                ..
            })
        ));
    }

    #[test]
    fn retry_after_dates_are_read_against_now() {
        let now = UnixTime::from_secs(1_445_412_480); // Wed, 21 Oct 2015 07:28:00 GMT
        let limited = |value: &'static str| {
            response(429, "").with_header(RETRY_AFTER, HeaderValue::from_static(value))
        };
        let wait = |value| retry_after_at(&limited(value), now);
        assert_eq!(
            wait("Wed, 21 Oct 2015 07:28:30 GMT"),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            wait("Wednesday, 21-Oct-15 07:29:00 GMT"),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            wait("Wed Oct 21 07:28:02 2015"),
            Some(Duration::from_secs(2))
        );
        assert_eq!(wait("Tue, 20 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
        assert_eq!(wait(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(
            wait("99999999999"),
            Some(Duration::from_secs(99_999_999_999))
        );
        assert_eq!(wait("soon-ish"), None);
        assert_eq!(wait("-5"), None);
        assert_eq!(wait(""), None);
        assert!(matches!(
            classify_api_response_at(&limited("Wed, 21 Oct 2015 07:28:05 GMT"), now),
            Err(ApiError::RateLimited { retry_after: Some(d), .. }) if d == Duration::from_secs(5)
        ));
        let mut call = ApiCall::new();
        assert!(matches!(
            call.handle_response_at(&limited("Wed, 21 Oct 2015 07:28:05 GMT"), now),
            ApiStep::Fail(ApiError::RateLimited {
                retry_after: Some(_),
                ..
            })
        ));
    }

    #[test]
    fn a_401_refreshes_once_and_never_loops() {
        let mut call = ApiCall::new();
        assert_eq!(
            call.handle_response(&response(401, EXPIRED)),
            ApiStep::RefreshAndRetry
        );
        assert!(call.has_retried());
        assert!(matches!(
            call.handle_response(&response(401, EXPIRED)),
            ApiStep::Fail(ApiError::Unauthorized(_))
        ));
        assert!(matches!(
            call.handle_response(&response(401, EXPIRED)),
            ApiStep::Fail(_)
        ));

        let mut ok = ApiCall::new();
        assert_eq!(ok.handle_response(&response(200, "{}")), ApiStep::Done);
        let mut limited = ApiCall::new();
        assert!(matches!(
            limited.handle_response(&response(429, "")),
            ApiStep::Fail(ApiError::RateLimited { .. })
        ));
    }

    #[test]
    fn bearer_header_is_sensitive() {
        let request = with_bearer(
            HttpRequest::new(http::Method::GET, Url::parse("https://x.test/a").unwrap()),
            &AccessToken::new("tok"),
        );
        assert_eq!(request.headers()[AUTHORIZATION], "Bearer tok");
        assert!(request.headers()[AUTHORIZATION].is_sensitive());
        assert!(!format!("{:?}", request.headers()).contains("tok"));
        // Built once per token: a second request (or a clone of the token) shares the bytes.
        let token = AccessToken::new("tok");
        let first = bearer_header(&token);
        let again = bearer_header(&token.clone());
        assert_eq!(first.as_bytes().as_ptr(), again.as_bytes().as_ptr());
        assert!(again.is_sensitive());
        assert_eq!(
            bearer_header(&AccessToken::new("bad\ntoken")),
            "Bearer invalid"
        );
        // An API call keeps the (large) API limit; only token requests use the small one.
        assert_eq!(
            request.response_limit(),
            crate::http::DEFAULT_API_RESPONSE_LIMIT
        );
    }

    #[test]
    fn api_paths_resolve_against_the_base() {
        let base =
            Url::parse("https://services.mailup.com/API/v1.1/Rest/ConsoleService.svc").unwrap();
        let expected = "https://services.mailup.com/API/v1.1/Rest/ConsoleService.svc/Console/Authentication/Info";
        assert_eq!(
            api_url(&base, "/Console/Authentication/Info")
                .unwrap()
                .as_str(),
            expected
        );
        assert_eq!(
            api_url(&base, "Console/Authentication/Info")
                .unwrap()
                .as_str(),
            expected
        );
        let with_slash =
            Url::parse("http://127.0.0.1:1/API/v1.1/Rest/ConsoleService.svc/").unwrap();
        assert_eq!(
            api_url(&with_slash, "Console/User/Lists?pageNumber=0&pageSize=20").unwrap().as_str(),
            "http://127.0.0.1:1/API/v1.1/Rest/ConsoleService.svc/Console/User/Lists?pageNumber=0&pageSize=20"
        );
        assert_eq!(
            api_url(&base, "http://127.0.0.1:9/x").unwrap().as_str(),
            "http://127.0.0.1:9/x"
        );
        assert!(api_url(&base, "ftp://x/y").is_err());
    }

    /// Appending to the base's path gives the URL that parsing the joined string gives (how
    /// `api_url` resolved every path before), for odd paths too.
    #[test]
    fn appending_to_the_base_agrees_with_parsing_the_joined_string() {
        let bases = [
            "https://services.mailup.com/API/v1.1/Rest/ConsoleService.svc",
            "http://127.0.0.1:8080/API/v1.1/Rest/ConsoleService.svc/",
            "http://127.0.0.1:8080/",
            "http://127.0.0.1:8080",
            "https://user:pw@xn--mller-kva.example:8443/a//b///",
            "http://[::1]:9/api%20v1/",
        ];
        let paths = [
            "Console/Authentication/Info",
            "/Console/User/Lists?pageNumber=0&pageSize=20",
            "//Console",
            "",
            "/",
            "a b/c d?e f=g h#i j",
            "x?y#z",
            "x#y?z",
            "?only=query",
            "#only-fragment",
            "../../../etc/passwd",
            "a/./b/../c/%2e%2e/d",
            "a\\b\\c",
            "caf\u{e9}/\u{1f600}?q=\u{e9}#\u{e9}",
            "%zz/%41?%zz#%zz",
            "a?b?c#d#e",
            "a\tb\nc",
            "[::1]/x",
            "a:b/c@d",
            "'quote'/<angle>/\"dq\"/`tick`/{brace}/|pipe|/^caret^",
        ];
        for base in bases {
            let base = Url::parse(base).unwrap();
            for path in paths {
                let joined = format!(
                    "{}/{}",
                    base.as_str().trim_end_matches('/'),
                    path.trim().trim_start_matches('/')
                );
                let parsed = Url::parse(&joined).unwrap();
                assert_eq!(
                    api_url(&base, path).unwrap().as_str(),
                    parsed.as_str(),
                    "{path:?} against {base}"
                );
            }
        }
    }
}
