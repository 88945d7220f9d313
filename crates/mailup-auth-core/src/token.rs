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
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
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

impl TokenSet {
    /// The moment the access token stops being handed out: `expires_at - skew`.
    pub fn usable_until(&self, skew: Duration) -> UnixTime {
        self.expires_at.saturating_sub(skew)
    }

    /// Whether the access token may still be handed out at `now`.
    pub fn is_fresh(&self, now: UnixTime, skew: Duration) -> bool {
        now < self.usable_until(skew)
    }
}

/// A successful token endpoint answer, before it is placed in time.
#[derive(Clone, Debug, PartialEq, Eq)]
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
    /// Whether retrying later may succeed (5xx, 408, 429, malformed success bodies, transport
    /// failures, `server_error`, `temporarily_unavailable`). Anything else needs a person.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::OAuth { error, status, .. } => {
                matches!(
                    error,
                    OAuthErrorCode::ServerError | OAuthErrorCode::TemporarilyUnavailable
                ) || *status >= 500
            }
            // A 4xx without an RFC 6749 body (a proxy's page, an empty 401) is a refusal, not
            // an outage: retrying it would back off forever instead of asking for a login.
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
        Some(Value::String(token)) if !token.is_empty() => AccessToken::new(token.as_str()),
        _ => return Err(malformed(MalformedBody::MissingAccessToken)),
    };
    let refresh_token = match object.get("refresh_token") {
        None | Some(Value::Null) => None,
        Some(Value::String(token)) if token.is_empty() => None,
        Some(Value::String(token)) => Some(RefreshToken::new(token.as_str())),
        Some(_) => return Err(malformed(MalformedBody::InvalidField("refresh_token"))),
    };
    let expires_in = match object.get("expires_in") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(
            n.as_u64()
                .or_else(|| {
                    n.as_f64()
                        .filter(|f| f.is_finite() && *f >= 0.0)
                        .map(|f| f as u64)
                })
                .ok_or_else(|| malformed(MalformedBody::InvalidField("expires_in")))?,
        ),
        Some(Value::String(s)) => Some(
            s.trim()
                .parse::<u64>()
                .map_err(|_| malformed(MalformedBody::InvalidField("expires_in")))?,
        ),
        Some(_) => return Err(malformed(MalformedBody::InvalidField("expires_in"))),
    };
    Ok(TokenResponse {
        access_token,
        refresh_token,
        expires_in,
        token_type: optional_string(&object, "token_type"),
        scope: optional_string(&object, "scope"),
    })
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
        for body in [
            r#"{"access_token":"a","expires_in":"soon"}"#,
            r#"{"access_token":"a","expires_in":-5}"#,
            r#"{"access_token":"a","expires_in":true}"#,
        ] {
            assert_eq!(
                parse_token_response(&response(200, body)).unwrap_err(),
                TokenError::MalformedResponse {
                    status: 200,
                    body: MalformedBody::InvalidField("expires_in")
                },
                "{body}"
            );
        }
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
    fn client_errors_without_an_oauth_body_are_refusals_not_outages() {
        for (status, body) in [
            (400, "<html>Bad request</html>"),
            (401, ""),
            (403, "denied"),
        ] {
            let err = parse_token_response(&response(status, body)).unwrap_err();
            assert!(matches!(err, TokenError::Status { .. }), "{err:?}");
            assert!(!err.is_transient(), "{status}");
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

    #[test]
    fn freshness_respects_skew() {
        let set = TokenSet {
            access_token: AccessToken::new("a"),
            refresh_token: None,
            expires_at: UnixTime::from_secs(100),
            obtained_at: UnixTime::from_secs(0),
            token_type: None,
            scope: None,
        };
        let skew = Duration::from_secs(10);
        assert!(set.is_fresh(UnixTime::from_millis(89_999), skew));
        assert!(!set.is_fresh(UnixTime::from_secs(90), skew));
    }
}
