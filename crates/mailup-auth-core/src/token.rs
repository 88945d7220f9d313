//! Token sets and the token endpoint's answers: tolerant parsing of success bodies, typed
//! RFC 6749 errors, and the rotation merge.

use std::time::Duration;

use http::StatusCode;
use serde_json::Value;

use crate::http::{HttpResponse, TransportError};
use crate::secret::{AccessToken, RefreshToken};
use crate::time::UnixTime;

/// The longest `error_description` kept from a server, so a misbehaving server cannot make
/// errors arbitrarily large.
const MAX_DESCRIPTION_CHARS: usize = 300;

/// The longest lifetime believed from `expires_in` (one day): a huge value would otherwise stop
/// proactive refresh for good. Refreshing earlier than needed is always safe.
pub const MAX_EXPIRES_IN_SECS: u64 = 24 * 3600;

/// The tokens of one authorized session, with an absolute expiry.
#[allow(
    clippy::exhaustive_structs,
    reason = "stores, tests and applications build token sets with a literal; a new field must break them at compile time so no store silently drops it"
)]
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
pub struct TokenSet {
    /// The bearer token for API calls.
    pub access_token: AccessToken,
    /// The refresh token (rotated by MailUp on every refresh). `None` when the server gave none.
    pub refresh_token: Option<RefreshToken>,
    /// When the access token expires (absolute).
    pub expires_at: UnixTime,
    /// When this set was obtained (the `now` the response was handled at).
    pub obtained_at: UnixTime,
    /// `token_type`, when the server sent one.
    #[cfg_attr(feature = "serde", serde(default))]
    pub token_type: Option<String>,
    /// `scope`, when the server sent one.
    #[cfg_attr(feature = "serde", serde(default))]
    pub scope: Option<String>,
}

/// How long before `expires_at` an access token stops being handed out, at most: the safety
/// margin for clock drift and the request's own travel time. Never more than the effective
/// refresh skew (see [`TokenSet::usable_until`]).
pub const EXPIRY_SAFETY: Duration = Duration::from_secs(5);

impl TokenSet {
    /// How long the access token lives: `expires_at - obtained_at`.
    pub fn lifetime(&self) -> Duration {
        self.expires_at.duration_since(self.obtained_at)
    }

    /// The skew actually used for this set: `min(skew, lifetime / 2)`, so that tokens whose
    /// lifetime is shorter than the configured skew still serve for half their life instead of
    /// being due for refresh on arrival.
    pub fn effective_skew(&self, skew: Duration) -> Duration {
        skew.min(self.lifetime() / 2)
    }

    /// When a refresh becomes due: `expires_at - effective_skew`.
    pub fn refresh_at(&self, skew: Duration) -> UnixTime {
        self.expires_at.saturating_sub(self.effective_skew(skew))
    }

    /// When the access token stops being handed out at all, even while refreshes fail:
    /// `expires_at - min(EXPIRY_SAFETY, effective_skew)`. Between
    /// [`refresh_at`](Self::refresh_at) and this moment the token is still valid: it is
    /// served while a refresh is failing.
    pub fn usable_until(&self, skew: Duration) -> UnixTime {
        self.expires_at
            .saturating_sub(EXPIRY_SAFETY.min(self.effective_skew(skew)))
    }

    /// Whether no refresh is due yet at `now` (before [`refresh_at`](Self::refresh_at)).
    pub fn is_fresh(&self, now: UnixTime, skew: Duration) -> bool {
        now < self.refresh_at(skew)
    }

    /// Whether the access token may still be handed out at `now` (before
    /// [`usable_until`](Self::usable_until)), fresh or inside the refresh margin.
    pub fn is_usable(&self, now: UnixTime, skew: Duration) -> bool {
        now < self.usable_until(skew)
    }
}

/// A successful token endpoint answer, before it is placed in time. Built only by
/// [`parse_token_response`] (fields may be added as MailUp adds them).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenResponse {
    /// The new access token.
    pub access_token: AccessToken,
    /// The new refresh token, if the server sent one.
    pub refresh_token: Option<RefreshToken>,
    /// `expires_in` in seconds, if the server sent it.
    pub expires_in: Option<u64>,
    /// `token_type`, if sent.
    pub token_type: Option<String>,
    /// `scope`, if sent.
    pub scope: Option<String>,
}

impl TokenResponse {
    /// Places the response in time and merges it with the previous set (rotation merge): a
    /// returned refresh token replaces the old one; a response without one keeps the old one.
    pub fn into_token_set(
        self,
        now: UnixTime,
        default_expires_in: Duration,
        previous: Option<&TokenSet>,
    ) -> TokenSet {
        let lifetime = self
            .expires_in
            .map(|secs| Duration::from_secs(secs.min(MAX_EXPIRES_IN_SECS)))
            .unwrap_or(default_expires_in);
        let refresh_token = self
            .refresh_token
            .or_else(|| previous.and_then(|p| p.refresh_token.clone()));
        TokenSet {
            access_token: self.access_token,
            refresh_token,
            expires_at: now.saturating_add(lifetime),
            obtained_at: now,
            token_type: self.token_type,
            scope: self.scope,
        }
    }
}

/// The `error` code of an RFC 6749 error response.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OAuthErrorCode {
    /// `invalid_request`
    InvalidRequest,
    /// `invalid_client`: client authentication failed.
    InvalidClient,
    /// `invalid_grant`: the code or refresh token is invalid, expired, revoked or reused.
    InvalidGrant,
    /// `unauthorized_client`
    UnauthorizedClient,
    /// `unsupported_grant_type`
    UnsupportedGrantType,
    /// `invalid_scope`
    InvalidScope,
    /// `server_error` (transient)
    ServerError,
    /// `temporarily_unavailable` (transient)
    TemporarilyUnavailable,
    /// Any other code, as sent.
    Other(String),
}

impl OAuthErrorCode {
    /// Parses an `error` value.
    pub fn parse(code: &str) -> Self {
        match code {
            "invalid_request" => Self::InvalidRequest,
            "invalid_client" => Self::InvalidClient,
            "invalid_grant" => Self::InvalidGrant,
            "unauthorized_client" => Self::UnauthorizedClient,
            "unsupported_grant_type" => Self::UnsupportedGrantType,
            "invalid_scope" => Self::InvalidScope,
            "server_error" => Self::ServerError,
            "temporarily_unavailable" => Self::TemporarilyUnavailable,
            other => Self::Other(truncate(other, 64)),
        }
    }

    /// The wire value.
    pub fn as_str(&self) -> &str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope => "invalid_scope",
            Self::ServerError => "server_error",
            Self::TemporarilyUnavailable => "temporarily_unavailable",
            Self::Other(code) => code,
        }
    }
}

impl std::fmt::Display for OAuthErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a body could not be used. Never carries the body itself, which may hold a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MalformedBody {
    /// The body is empty.
    Empty,
    /// The body is an HTML page (typically from a proxy or an error page).
    Html,
    /// The body is not JSON, or is truncated JSON.
    NotJson,
    /// The body is JSON but not an object.
    NotAnObject,
    /// A success body without a usable `access_token`.
    MissingAccessToken,
    /// A field has the wrong type or an invalid value.
    InvalidField(&'static str),
}

impl std::fmt::Display for MalformedBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Empty => f.write_str("empty body"),
            Self::Html => f.write_str("an HTML page instead of JSON"),
            Self::NotJson => f.write_str("not JSON, or truncated JSON"),
            Self::NotAnObject => f.write_str("JSON but not an object"),
            Self::MissingAccessToken => f.write_str("no access_token"),
            Self::InvalidField(name) => write!(f, "invalid field `{name}`"),
        }
    }
}

/// A failed token request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The server answered with an RFC 6749 error.
    #[error("token endpoint answered {status} {error}{}", description_suffix(.description))]
    OAuth {
        /// HTTP status (usually 400 or 401).
        status: u16,
        /// The `error` code.
        error: OAuthErrorCode,
        /// `error_description`, truncated.
        description: Option<String>,
    },
    /// A non-success status without an RFC 6749 error body (5xx, 429, a proxy's page, ...).
    #[error("token endpoint answered HTTP {status} ({body})")]
    Status {
        /// HTTP status.
        status: u16,
        /// What the body was.
        body: MalformedBody,
    },
    /// A success status with a body that cannot be used.
    #[error("token endpoint answered {status} with a malformed body: {body}")]
    MalformedResponse {
        /// HTTP status.
        status: u16,
        /// What is wrong with the body.
        body: MalformedBody,
    },
    /// No response at all.
    #[error("token endpoint unreachable: {0}")]
    Transport(#[from] TransportError),
}

fn description_suffix(description: &Option<String>) -> String {
    description
        .as_deref()
        .map(|d| format!(": {d}"))
        .unwrap_or_default()
}

impl TokenError {
    /// Whether the token endpoint said the grant (code, refresh token, password) or the client
    /// is bad: an RFC 6749 error body with `invalid_grant`, `invalid_client` or
    /// `unauthorized_client`, with a 4xx status. Only such an answer may end a session (and be
    /// recorded as "re-authorization required"); any other failure keeps the tokens, however
    /// odd the answer (a redirect, a proxy's HTML page, an empty 401, `invalid_request`, an
    /// error body with a success status).
    pub fn is_rejection(&self) -> bool {
        match self {
            Self::OAuth { status, error, .. } => {
                (400..500).contains(status)
                    && matches!(
                        error,
                        OAuthErrorCode::InvalidGrant
                            | OAuthErrorCode::InvalidClient
                            | OAuthErrorCode::UnauthorizedClient
                    )
            }
            _ => false,
        }
    }

    /// Whether retrying soon may succeed (5xx, 408, 429, malformed success bodies, transport
    /// failures, `server_error`, `temporarily_unavailable`). A failure that is neither
    /// transient nor a [rejection](Self::is_rejection) (a 404, a redirect, `invalid_request`,
    /// ...) points at the configuration or at something between us and MailUp: the tokens are
    /// kept and a later attempt may work, but retrying at once will not help.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::OAuth { error, status, .. } => {
                matches!(
                    error,
                    OAuthErrorCode::ServerError | OAuthErrorCode::TemporarilyUnavailable
                ) || *status >= 500
            }
            // A 4xx without an RFC 6749 body (a proxy's page, an empty 401) says nothing about
            // the tokens: not a rejection, but not worth an immediate retry either.
            Self::Status { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            Self::MalformedResponse { .. } | Self::Transport(_) => true,
        }
    }

    /// The OAuth error code, if the server sent one.
    pub fn oauth_error(&self) -> Option<&OAuthErrorCode> {
        match self {
            Self::OAuth { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// Parses a token endpoint response.
///
/// Tolerant where providers differ: `expires_in` may be a number, a numeric string or missing;
/// `token_type`, `scope` and `refresh_token` are optional; unknown fields are ignored. Strict
/// where it matters: a success without `access_token`, or a body that is empty, HTML, truncated
/// or not JSON, is an error that does not echo the body.
pub fn parse_token_response(response: &HttpResponse) -> Result<TokenResponse, TokenError> {
    let status = response.status;
    let parsed = parse_json_object(&response.body);
    if !status.is_success() {
        return Err(match parsed {
            Ok(object) => oauth_error(status, &object).unwrap_or(TokenError::Status {
                status: status.as_u16(),
                body: MalformedBody::InvalidField("error"),
            }),
            Err(body) => TokenError::Status {
                status: status.as_u16(),
                body,
            },
        });
    }
    let malformed = |body| TokenError::MalformedResponse {
        status: status.as_u16(),
        body,
    };
    let object = parsed.map_err(malformed)?;
    // Some servers answer an error with a success status: believe the body.
    if object.get("access_token").is_none() {
        if let Some(error) = oauth_error(status, &object) {
            return Err(error);
        }
    }
    if status != StatusCode::OK && object.get("access_token").is_none() {
        return Err(malformed(MalformedBody::MissingAccessToken));
    }
    let access_token = match object.get("access_token") {
        Some(Value::String(token)) if !token.is_empty() => {
            if !is_header_safe_token(token) {
                return Err(malformed(MalformedBody::InvalidField("access_token")));
            }
            AccessToken::new(token.as_str())
        }
        _ => return Err(malformed(MalformedBody::MissingAccessToken)),
    };
    let refresh_token = match object.get("refresh_token") {
        None | Some(Value::Null) => None,
        Some(Value::String(token)) if token.is_empty() => None,
        Some(Value::String(token)) if is_header_safe_token(token) => {
            Some(RefreshToken::new(token.as_str()))
        }
        Some(_) => return Err(malformed(MalformedBody::InvalidField("refresh_token"))),
    };
    let expires_in = parse_expires_in(object.get("expires_in"));
    if expires_in == ExpiresIn::Unusable {
        // The tokens are good; only their lifetime is not. Dropping the answer would throw the
        // rotated refresh token away and keep the dead one, so the default lifetime is used.
        tracing::warn!(
            "the token endpoint sent an unusable expires_in (not a non-negative number of \
             seconds); assuming the default lifetime"
        );
    }
    let expires_in = match expires_in {
        ExpiresIn::Seconds(secs) => Some(secs),
        ExpiresIn::Missing | ExpiresIn::Unusable => None,
    };
    Ok(TokenResponse {
        access_token,
        refresh_token,
        expires_in,
        token_type: optional_string(&object, "token_type"),
        scope: optional_string(&object, "scope"),
    })
}

/// Whether a token can go into an `Authorization` header as is: visible ASCII without spaces
/// (0x21 to 0x7E), which covers RFC 6750's `b64token` and every token MailUp issues. A token
/// with a control character (CR, LF), a space or non-ASCII could inject a header or break one.
pub fn is_header_safe_token(token: &str) -> bool {
    !token.is_empty() && token.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ExpiresIn {
    Missing,
    Seconds(u64),
    Unusable,
}

/// `expires_in` as a non-negative number of seconds (a number, a float or a numeric string).
fn parse_expires_in(value: Option<&Value>) -> ExpiresIn {
    let seconds = match value {
        None | Some(Value::Null) => return ExpiresIn::Missing,
        Some(Value::Number(n)) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0)
                .map(|f| f as u64)
        }),
        Some(Value::String(s)) => s.trim().parse::<u64>().ok(),
        Some(_) => None,
    };
    seconds.map_or(ExpiresIn::Unusable, ExpiresIn::Seconds)
}

/// The RFC 6749 error a body carries (a non-empty `error`), if any.
fn oauth_error(status: StatusCode, object: &serde_json::Map<String, Value>) -> Option<TokenError> {
    let code = object
        .get("error")
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty())?;
    Some(TokenError::OAuth {
        status: status.as_u16(),
        error: OAuthErrorCode::parse(code),
        description: object
            .get("error_description")
            .and_then(Value::as_str)
            .map(|d| truncate(d, MAX_DESCRIPTION_CHARS)),
    })
}

fn optional_string(object: &serde_json::Map<String, Value>, key: &str) -> Option<String> {
    object.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// Parses a body as a JSON object, or says what it is instead.
pub(crate) fn parse_json_object(
    body: &[u8],
) -> Result<serde_json::Map<String, Value>, MalformedBody> {
    let text = std::str::from_utf8(body).map_err(|_| MalformedBody::NotJson)?;
    let trimmed = text.trim_start_matches('\u{feff}').trim();
    if trimmed.is_empty() {
        return Err(MalformedBody::Empty);
    }
    if trimmed.starts_with('<') {
        return Err(MalformedBody::Html);
    }
    match serde_json::from_str::<Value>(trimmed) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(MalformedBody::NotAnObject),
        Err(_) => Err(MalformedBody::NotJson),
    }
}

pub(crate) fn truncate(s: &str, max_chars: usize) -> String {
    s.chars().take(max_chars).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, body: &str) -> HttpResponse {
        HttpResponse::new(
            StatusCode::from_u16(status).unwrap(),
            body.as_bytes().to_vec(),
        )
    }

    #[test]
    fn parses_mailups_success_shape() {
        let parsed = parse_token_response(&response(
            200,
            r#"{"access_token":"at1","expires_in":3600,"refresh_token":"rt1"}"#,
        ))
        .unwrap();
        assert_eq!(parsed.access_token.secret(), "at1");
        assert_eq!(parsed.refresh_token.as_ref().unwrap().secret(), "rt1");
        assert_eq!(parsed.expires_in, Some(3600));
        assert_eq!(parsed.token_type, None);
    }

    #[test]
    fn expires_in_variants() {
        let cases = [
            (r#"{"access_token":"a","expires_in":"3599"}"#, Some(3599)),
            (r#"{"access_token":"a","expires_in":" 60 "}"#, Some(60)),
            (r#"{"access_token":"a","expires_in":120.0}"#, Some(120)),
            (r#"{"access_token":"a","expires_in":null}"#, None),
            (r#"{"access_token":"a"}"#, None),
        ];
        for (body, expected) in cases {
            assert_eq!(
                parse_token_response(&response(200, body))
                    .unwrap()
                    .expires_in,
                expected,
                "{body}"
            );
        }
        // An unusable lifetime does not throw the tokens away (the rotated refresh token would
        // be lost): the answer is kept and the default lifetime applies.
        for body in [
            r#"{"access_token":"a","refresh_token":"r2","expires_in":"soon"}"#,
            r#"{"access_token":"a","refresh_token":"r2","expires_in":-5}"#,
            r#"{"access_token":"a","refresh_token":"r2","expires_in":-0.5}"#,
            r#"{"access_token":"a","refresh_token":"r2","expires_in":true}"#,
            r#"{"access_token":"a","refresh_token":"r2","expires_in":[60]}"#,
            r#"{"access_token":"a","refresh_token":"r2","expires_in":"1e3"}"#,
        ] {
            let parsed = parse_token_response(&response(200, body)).expect(body);
            assert_eq!(parsed.expires_in, None, "{body}");
            assert_eq!(parsed.refresh_token.unwrap().secret(), "r2", "{body}");
            let set = parse_token_response(&response(200, body))
                .unwrap()
                .into_token_set(UnixTime::from_secs(10), Duration::from_secs(3600), None);
            assert_eq!(set.expires_at, UnixTime::from_secs(3610), "{body}");
        }
    }

    #[test]
    fn tokens_that_are_not_header_safe_are_malformed_and_nothing_is_kept() {
        for (body, field) in [
            (r#"{"access_token":"a\r\nX-Injected: 1"}"#, "access_token"),
            (r#"{"access_token":"a b"}"#, "access_token"),
            (r#"{"access_token":"caf\u00e9"}"#, "access_token"),
            (r#"{"access_token":"a\u0000"}"#, "access_token"),
            (r#"{"access_token":"a\t"}"#, "access_token"),
            (
                r#"{"access_token":"a","refresh_token":"r\nX: 1"}"#,
                "refresh_token",
            ),
            (
                r#"{"access_token":"a","refresh_token":"r r"}"#,
                "refresh_token",
            ),
        ] {
            let err = parse_token_response(&response(200, body)).unwrap_err();
            assert_eq!(
                err,
                TokenError::MalformedResponse {
                    status: 200,
                    body: MalformedBody::InvalidField(field)
                },
                "{body}"
            );
            assert!(!err.is_rejection());
        }
        // RFC 6750 b64token characters and MailUp's tokens are accepted.
        let ok = r#"{"access_token":"aZ09-._~+/=","refresh_token":"!#$%&'()*,:;<>?@[]^`{|}"}"#;
        assert!(parse_token_response(&response(200, ok)).is_ok());
        assert!(is_header_safe_token("abc"));
        assert!(!is_header_safe_token(""));
        assert!(!is_header_safe_token("a\x7f"));
    }

    #[test]
    fn optional_and_unknown_fields() {
        let parsed = parse_token_response(&response(
            200,
            r#"{"access_token":"a","token_type":"bearer","scope":"all","extra":{"x":1},"refresh_token":null}"#,
        ))
        .unwrap();
        assert_eq!(parsed.token_type.as_deref(), Some("bearer"));
        assert_eq!(parsed.scope.as_deref(), Some("all"));
        assert!(parsed.refresh_token.is_none());
    }

    #[test]
    fn bad_success_bodies_are_typed_and_do_not_echo() {
        let cases = [
            ("", MalformedBody::Empty),
            ("   \n", MalformedBody::Empty),
            (
                "<html><body>Bad gateway secret-ish</body></html>",
                MalformedBody::Html,
            ),
            (
                r#"{"access_token":"at-secret","expires_in":36"#,
                MalformedBody::NotJson,
            ),
            ("access_token=at-secret", MalformedBody::NotJson),
            ("[1,2]", MalformedBody::NotAnObject),
            (
                r#"{"refresh_token":"rt"}"#,
                MalformedBody::MissingAccessToken,
            ),
            (r#"{"access_token":""}"#, MalformedBody::MissingAccessToken),
            (r#"{"access_token":42}"#, MalformedBody::MissingAccessToken),
            (
                r#"{"access_token":"a","refresh_token":7}"#,
                MalformedBody::InvalidField("refresh_token"),
            ),
        ];
        for (body, kind) in cases {
            let err = parse_token_response(&response(200, body)).unwrap_err();
            assert_eq!(
                err,
                TokenError::MalformedResponse {
                    status: 200,
                    body: kind
                },
                "{body}"
            );
            assert!(err.is_transient());
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains("secret"), "{shown}");
        }
    }

    #[test]
    fn rfc6749_errors_are_typed_with_status() {
        let cases = [
            ("invalid_grant", OAuthErrorCode::InvalidGrant),
            ("invalid_client", OAuthErrorCode::InvalidClient),
            ("invalid_request", OAuthErrorCode::InvalidRequest),
            ("unauthorized_client", OAuthErrorCode::UnauthorizedClient),
            (
                "unsupported_grant_type",
                OAuthErrorCode::UnsupportedGrantType,
            ),
            ("weird_thing", OAuthErrorCode::Other("weird_thing".into())),
        ];
        for (code, expected) in cases {
            let body =
                format!(r#"{{"error":"{code}","error_description":"Refresh token expired"}}"#);
            let err = parse_token_response(&response(400, &body)).unwrap_err();
            assert_eq!(
                err,
                TokenError::OAuth {
                    status: 400,
                    error: expected.clone(),
                    description: Some("Refresh token expired".into())
                }
            );
            assert!(!err.is_transient());
            assert_eq!(expected.as_str(), code);
        }
        let err =
            parse_token_response(&response(401, r#"{"error":"invalid_client"}"#)).unwrap_err();
        assert_eq!(
            err,
            TokenError::OAuth {
                status: 401,
                error: OAuthErrorCode::InvalidClient,
                description: None
            }
        );
        assert_eq!(
            err.to_string(),
            "token endpoint answered 401 invalid_client"
        );
    }

    #[test]
    fn server_side_failures_are_transient() {
        for (status, body, kind) in [
            (500, "", MalformedBody::Empty),
            (503, "<html>Service Unavailable</html>", MalformedBody::Html),
            (502, "bad gateway", MalformedBody::NotJson),
            (429, "{}", MalformedBody::InvalidField("error")),
        ] {
            let err = parse_token_response(&response(status, body)).unwrap_err();
            assert_eq!(err, TokenError::Status { status, body: kind });
            assert!(err.is_transient());
        }
        let err = parse_token_response(&response(503, r#"{"error":"temporarily_unavailable"}"#))
            .unwrap_err();
        assert!(err.is_transient());
    }

    #[test]
    fn only_a_bad_grant_or_client_is_a_rejection() {
        // The hardening issue reversed the earlier rule: an answer that does not say the grant
        // or the client is bad keeps the tokens (a misrouted proxy, a WAF page, a redirect).
        for (status, body) in [
            (302, ""),
            (307, "<html>moved</html>"),
            (404, "<html>Not Found</html>"),
            (403, "<html>Forbidden by WAF</html>"),
            (401, ""),
            (400, "<html>Bad request</html>"),
            (400, r#"{"error":"invalid_request"}"#),
            (400, r#"{"error":"unsupported_grant_type"}"#),
            (400, r#"{"error":"weird"}"#),
            (200, r#"{"error":"invalid_request"}"#),
            (200, r#"{"error":"invalid_grant"}"#),
            (500, r#"{"error":"invalid_grant"}"#),
        ] {
            let err = parse_token_response(&response(status, body)).unwrap_err();
            assert!(!err.is_rejection(), "{status} {body}: {err:?}");
        }
        for (status, code) in [
            (400, "invalid_grant"),
            (401, "invalid_client"),
            (400, "invalid_client"),
            (400, "unauthorized_client"),
        ] {
            let body = format!(r#"{{"error":"{code}"}}"#);
            let err = parse_token_response(&response(status, &body)).unwrap_err();
            assert!(err.is_rejection(), "{status} {code}");
            assert!(!err.is_transient());
        }
        assert!(parse_token_response(&response(408, ""))
            .unwrap_err()
            .is_transient());
    }

    #[test]
    fn an_error_body_with_a_success_status_is_an_oauth_error() {
        let err = parse_token_response(&response(200, r#"{"error":"invalid_grant"}"#)).unwrap_err();
        assert_eq!(
            err,
            TokenError::OAuth {
                status: 200,
                error: OAuthErrorCode::InvalidGrant,
                description: None
            }
        );
        assert!(!err.is_transient());
    }

    #[test]
    fn huge_lifetimes_are_clamped_to_a_day() {
        let now = UnixTime::from_secs(1000);
        let set = parse_token_response(&response(
            200,
            r#"{"access_token":"a","expires_in":1000000000000000}"#,
        ))
        .unwrap()
        .into_token_set(now, Duration::from_secs(3600), None);
        assert_eq!(
            set.expires_at,
            now.saturating_add(Duration::from_secs(MAX_EXPIRES_IN_SECS))
        );
    }

    #[test]
    fn long_descriptions_are_truncated() {
        let body = format!(
            r#"{{"error":"invalid_grant","error_description":"{}"}}"#,
            "x".repeat(5000)
        );
        match parse_token_response(&response(400, &body)).unwrap_err() {
            TokenError::OAuth {
                description: Some(d),
                ..
            } => assert_eq!(d.len(), MAX_DESCRIPTION_CHARS),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rotation_merge_and_absolute_expiry() {
        let now = UnixTime::from_secs(1000);
        let first = parse_token_response(&response(
            200,
            r#"{"access_token":"a1","refresh_token":"r1","expires_in":3600}"#,
        ))
        .unwrap()
        .into_token_set(now, Duration::from_secs(3600), None);
        assert_eq!(first.expires_at, UnixTime::from_secs(4600));
        assert_eq!(first.obtained_at, now);

        let later = UnixTime::from_secs(4000);
        let rotated = parse_token_response(&response(
            200,
            r#"{"access_token":"a2","refresh_token":"r2","expires_in":"100"}"#,
        ))
        .unwrap()
        .into_token_set(later, Duration::from_secs(3600), Some(&first));
        assert_eq!(rotated.refresh_token.as_ref().unwrap().secret(), "r2");
        assert_eq!(rotated.expires_at, UnixTime::from_secs(4100));

        let kept = parse_token_response(&response(200, r#"{"access_token":"a3"}"#))
            .unwrap()
            .into_token_set(later, Duration::from_secs(1800), Some(&rotated));
        assert_eq!(kept.refresh_token.as_ref().unwrap().secret(), "r2");
        assert_eq!(kept.expires_at, UnixTime::from_secs(5800));
    }

    fn set(obtained_at: u64, expires_at: u64) -> TokenSet {
        TokenSet {
            access_token: AccessToken::new("a"),
            refresh_token: None,
            expires_at: UnixTime::from_secs(expires_at),
            obtained_at: UnixTime::from_secs(obtained_at),
            token_type: None,
            scope: None,
        }
    }

    #[test]
    fn freshness_respects_skew() {
        let set = set(0, 100);
        let skew = Duration::from_secs(10);
        assert!(set.is_fresh(UnixTime::from_millis(89_999), skew));
        assert!(!set.is_fresh(UnixTime::from_secs(90), skew));
        // Inside the refresh margin the token is still usable, up to a few seconds before
        // expiry.
        assert!(set.is_usable(UnixTime::from_secs(90), skew));
        assert_eq!(set.usable_until(skew), UnixTime::from_secs(95));
        assert!(!set.is_usable(UnixTime::from_secs(95), skew));
    }

    #[test]
    fn the_effective_skew_is_at_most_half_the_lifetime() {
        let skew = Duration::from_secs(60);
        // A 30 s token: refresh after 15 s, not at once.
        let short = set(1000, 1030);
        assert_eq!(short.effective_skew(skew), Duration::from_secs(15));
        assert_eq!(short.refresh_at(skew), UnixTime::from_secs(1015));
        assert_eq!(short.usable_until(skew), UnixTime::from_secs(1025));
        assert!(short.is_fresh(UnixTime::from_secs(1014), skew));
        // A 4 s token: refresh after 2 s, served until 2 s before expiry.
        let tiny = set(1000, 1004);
        assert_eq!(tiny.refresh_at(skew), UnixTime::from_secs(1002));
        assert_eq!(tiny.usable_until(skew), UnixTime::from_secs(1002));
        // An hour-long token keeps the configured skew.
        let hour = set(0, 3600);
        assert_eq!(hour.refresh_at(skew), UnixTime::from_secs(3540));
        // A zero skew serves until expiry.
        assert_eq!(hour.usable_until(Duration::ZERO), UnixTime::from_secs(3600));
    }
}
