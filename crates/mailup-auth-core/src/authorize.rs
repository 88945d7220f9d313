//! The front-channel half of the flow: the LogOn URL the browser is sent to, and the check of
//! the redirect MailUp sends back (CSRF `state`, RFC 6749 errors, the code).

use url::Url;

use crate::config::ClientConfig;
use crate::secret::{AuthorizationCode, CsrfState};
use crate::time::UnixTime;
use crate::token::truncate;

/// The `error` code of an authorization (redirect) error, RFC 6749 section 4.1.2.1.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuthorizationErrorCode {
    /// `access_denied`: the user (or server) refused.
    AccessDenied,
    /// `invalid_request`
    InvalidRequest,
    /// `unauthorized_client`
    UnauthorizedClient,
    /// `unsupported_response_type`
    UnsupportedResponseType,
    /// `invalid_scope`
    InvalidScope,
    /// `server_error`
    ServerError,
    /// `temporarily_unavailable`
    TemporarilyUnavailable,
    /// Any other code, as sent.
    Other(String),
}

impl AuthorizationErrorCode {
    /// Parses an `error` value.
    pub fn parse(code: &str) -> Self {
        match code {
            "access_denied" => Self::AccessDenied,
            "invalid_request" => Self::InvalidRequest,
            "unauthorized_client" => Self::UnauthorizedClient,
            "unsupported_response_type" => Self::UnsupportedResponseType,
            "invalid_scope" => Self::InvalidScope,
            "server_error" => Self::ServerError,
            "temporarily_unavailable" => Self::TemporarilyUnavailable,
            other => Self::Other(truncate(other, 64)),
        }
    }

    /// The wire value.
    pub fn as_str(&self) -> &str {
        match self {
            Self::AccessDenied => "access_denied",
            Self::InvalidRequest => "invalid_request",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedResponseType => "unsupported_response_type",
            Self::InvalidScope => "invalid_scope",
            Self::ServerError => "server_error",
            Self::TemporarilyUnavailable => "temporarily_unavailable",
            Self::Other(code) => code,
        }
    }
}

impl std::fmt::Display for AuthorizationErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A callback that cannot be accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallbackError {
    /// The callback's `state` differs from the one sent: a possible CSRF attempt.
    #[error("the callback's state does not match the authorization request (possible CSRF)")]
    StateMismatch,
    /// The callback has no `state`.
    #[error("the callback has no state parameter")]
    MissingState,
    /// A parameter appears more than once.
    #[error("the callback has the parameter `{0}` more than once")]
    DuplicateParameter(String),
    /// The authorization server reported an error (e.g. the user denied access).
    #[error("authorization denied: {error}{}", .description.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Denied {
        /// The RFC 6749 error code.
        error: AuthorizationErrorCode,
        /// `error_description`, when sent (truncated).
        description: Option<String>,
    },
    /// Neither a code nor an error.
    #[error("the callback has no authorization code")]
    MissingCode,
    /// The callback is not a URL or query string.
    #[error("the callback is not a valid URL or query string")]
    Malformed,
    /// No authorization was started, so no callback is expected.
    #[error("no authorization is in progress")]
    NoPendingAuthorization,
    /// The authorization was started too long ago (see
    /// [`ClientConfigBuilder::authorization_timeout`](crate::ClientConfigBuilder::authorization_timeout)):
    /// start a new one.
    #[error("the authorization expired before the callback arrived; start it again")]
    Expired,
    /// This authorization was already completed (or is being completed by another request or
    /// process): a pending authorization is single-use.
    #[error("this authorization was already completed; start a new one")]
    AlreadyUsed,
}

/// Building the LogOn URL needs a redirect URI.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthorizationError {
    /// Neither the configuration nor the call gave a redirect URI.
    #[error("no redirect URI configured")]
    MissingRedirectUri,
    /// The CSRF state is empty.
    #[error("the CSRF state must not be empty")]
    EmptyState,
}

/// An authorization in progress: what must be kept (e.g. in the user's web session) between
/// sending the browser to the LogOn page and receiving the callback.
///
/// It expires ([`expires_at`](Self::expires_at), 10 minutes after it started by default) and
/// is meant to be completed once: the facade enforces single use through the token store.
/// ```
/// use mailup_auth_core::{ClientConfig, ClientSecret, CsrfState, CallbackError, Session, UnixTime};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let config = ClientConfig::builder("id", ClientSecret::new("secret"))
///     .redirect_uri("https://app.example.com/callback")
///     .build()?;
/// let mut session = Session::new(config);
/// let now = UnixTime::from_secs(1_700_000_000);
/// session.begin_authorization(now, CsrfState::new("from-your-rng"), None)?;
/// // Keep this in the user's (server-side) session until the browser comes back.
/// let pending = session.pending_authorization().unwrap().clone();
/// // A callback with another state is refused; the right one yields the code.
/// let forged = "https://app.example.com/callback?code=c&state=guess";
/// assert!(matches!(pending.verify_callback(now, forged), Err(CallbackError::StateMismatch)));
/// let real = "https://app.example.com/callback?code=c0de&state=from-your-rng";
/// assert_eq!(pending.verify_callback(now, real)?.secret(), "c0de");
/// # Ok(())
/// # }
/// ```
///
/// With the `serde` feature it serializes, the CSRF state in clear (that is its purpose: keep it
/// server-side, in the user's session, never in a URL or a log). A value serialized by a
/// release without an expiry deserializes as expired.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
pub struct PendingAuthorization {
    state: CsrfState,
    redirect_uri: Url,
    #[cfg_attr(feature = "serde", serde(default))]
    expires_at: UnixTime,
}

#[cfg(feature = "serde")]
impl serde::Serialize for PendingAuthorization {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let mut out = serializer.serialize_struct("PendingAuthorization", 3)?;
        out.serialize_field("state", self.state.secret())?;
        out.serialize_field("redirect_uri", &self.redirect_uri)?;
        out.serialize_field("expires_at", &self.expires_at)?;
        out.end()
    }
}

impl PendingAuthorization {
    /// Starts an authorization: returns the LogOn URL to send the browser to, and the pending
    /// value to check the callback with.
    ///
    /// The URL carries `client_id`, `response_type=code`, the percent-encoded `redirect_uri`
    /// and `state`, and never the client secret. `redirect_uri` overrides the configured one
    /// (e.g. a loopback listener's port chosen at run time). The pending authorization expires
    /// the configuration's [`authorization_timeout`](ClientConfig::authorization_timeout)
    /// after `now`.
    pub fn start(
        config: &ClientConfig,
        now: UnixTime,
        state: CsrfState,
        redirect_uri: Option<Url>,
    ) -> Result<(Url, Self), AuthorizationError> {
        if state.is_empty() {
            return Err(AuthorizationError::EmptyState);
        }
        let redirect_uri = redirect_uri
            .or_else(|| config.redirect_uri().cloned())
            .ok_or(AuthorizationError::MissingRedirectUri)?;
        let mut url = config.endpoints().logon.clone();
        url.query_pairs_mut()
            .append_pair("client_id", config.client_id())
            .append_pair("response_type", "code")
            .append_pair("redirect_uri", redirect_uri.as_str())
            .append_pair("state", state.secret());
        Ok((
            url,
            Self {
                state,
                redirect_uri,
                expires_at: now.saturating_add(config.authorization_timeout()),
            },
        ))
    }

    /// Rebuilds a pending authorization from a state, redirect URI and expiry kept elsewhere
    /// (for web apps that keep them in the user's session).
    pub fn from_parts(state: CsrfState, redirect_uri: Url, expires_at: UnixTime) -> Self {
        Self {
            state,
            redirect_uri,
            expires_at,
        }
    }

    /// When this authorization stops being accepted.
    pub fn expires_at(&self) -> UnixTime {
        self.expires_at
    }

    /// The CSRF state this authorization expects back.
    pub fn state(&self) -> &CsrfState {
        &self.state
    }

    /// The redirect URI sent (the code exchange must send the same one).
    pub fn redirect_uri(&self) -> &Url {
        &self.redirect_uri
    }

    /// Checks a callback, given as the full redirect URL or its query string, and returns the
    /// authorization code. Checks, in order: no duplicate parameters; `state` present and
    /// equal; not expired at `now`; no `error`; a non-empty `code`.
    ///
    /// This does not consume the authorization: a driver that completes it must also make sure
    /// it is completed once (the facade marks the state used in its token store).
    pub fn verify_callback(
        &self,
        now: UnixTime,
        callback: &str,
    ) -> Result<AuthorizationCode, CallbackError> {
        let query = callback_query(callback)?;
        let mut state = None;
        let mut code = None;
        let mut error = None;
        let mut description = None;
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            let slot = match key.as_ref() {
                "state" => &mut state,
                "code" => &mut code,
                "error" => &mut error,
                "error_description" => &mut description,
                _ => continue,
            };
            if slot.is_some() {
                return Err(CallbackError::DuplicateParameter(key.into_owned()));
            }
            *slot = Some(value.into_owned());
        }
        match state {
            None => return Err(CallbackError::MissingState),
            Some(s) if !self.state.matches(&s) => return Err(CallbackError::StateMismatch),
            Some(_) => {}
        }
        if now >= self.expires_at {
            return Err(CallbackError::Expired);
        }
        if let Some(error) = error {
            return Err(CallbackError::Denied {
                error: AuthorizationErrorCode::parse(&error),
                description: description.map(|d| truncate(&d, 300)),
            });
        }
        match code {
            Some(code) if !code.is_empty() => Ok(AuthorizationCode::new(code)),
            _ => Err(CallbackError::MissingCode),
        }
    }
}

/// The query part of a callback given as a URL, a `?query` or a bare query string.
fn callback_query(callback: &str) -> Result<String, CallbackError> {
    let callback = callback.trim();
    if callback.contains("://") {
        let url = Url::parse(callback).map_err(|_| CallbackError::Malformed)?;
        return Ok(url.query().unwrap_or_default().to_owned());
    }
    let query = callback.strip_prefix('?').unwrap_or(callback);
    // A path with a query ("/callback?code=..") is accepted too.
    Ok(match query.split_once('?') {
        Some((path, rest)) if path.starts_with('/') => rest.to_owned(),
        _ => query.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::ClientSecret;

    fn config() -> ClientConfig {
        ClientConfig::builder("my client", ClientSecret::new("top-secret"))
            .redirect_uri("http://127.0.0.1:8400/callback?x=1&y=a b")
            .build()
            .unwrap()
    }

    const NOW: UnixTime = UnixTime::from_millis(1_000_000);

    fn pending() -> PendingAuthorization {
        PendingAuthorization::start(&config(), NOW, CsrfState::new("st8"), None)
            .unwrap()
            .1
    }

    #[test]
    fn a_pending_authorization_expires() {
        let p = pending();
        assert_eq!(
            p.expires_at(),
            NOW.saturating_add(std::time::Duration::from_secs(600))
        );
        let just_before = p
            .expires_at()
            .saturating_sub(std::time::Duration::from_millis(1));
        assert!(p.verify_callback(just_before, "code=abc&state=st8").is_ok());
        assert_eq!(
            p.verify_callback(p.expires_at(), "code=abc&state=st8")
                .unwrap_err(),
            CallbackError::Expired
        );
        // A forged state is reported as such, expired or not.
        assert_eq!(
            p.verify_callback(p.expires_at(), "code=abc&state=x")
                .unwrap_err(),
            CallbackError::StateMismatch
        );
        let short = ClientConfig::builder("c", ClientSecret::new("s"))
            .redirect_uri("http://127.0.0.1:1/cb")
            .authorization_timeout(std::time::Duration::from_secs(5))
            .build()
            .unwrap();
        let (_, p) = PendingAuthorization::start(&short, NOW, CsrfState::new("s"), None).unwrap();
        assert_eq!(
            p.verify_callback(
                NOW.saturating_add(std::time::Duration::from_secs(5)),
                "code=a&state=s"
            )
            .unwrap_err(),
            CallbackError::Expired
        );
    }

    #[cfg(feature = "serde")]
    #[test]
    fn a_pending_authorization_round_trips_and_an_old_one_without_expiry_is_expired() {
        let p = pending();
        let json = serde_json::to_string(&p).unwrap();
        let back: PendingAuthorization = serde_json::from_str(&json).unwrap();
        assert_eq!(back, p);
        let old = r#"{"state":"st8","redirect_uri":"http://127.0.0.1:1/cb"}"#;
        let old: PendingAuthorization = serde_json::from_str(old).unwrap();
        assert_eq!(
            old.verify_callback(NOW, "code=a&state=st8").unwrap_err(),
            CallbackError::Expired
        );
    }

    #[test]
    fn logon_url_has_the_right_parameters_and_no_secret() {
        let (url, pending) =
            PendingAuthorization::start(&config(), NOW, CsrfState::new("s/1+"), None).unwrap();
        assert!(url
            .as_str()
            .starts_with("https://services.mailup.com/Authorization/OAuth/LogOn?"));
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        assert_eq!(
            pairs,
            vec![
                ("client_id".into(), "my client".into()),
                ("response_type".into(), "code".into()),
                (
                    "redirect_uri".into(),
                    "http://127.0.0.1:8400/callback?x=1&y=a%20b".into()
                ),
                ("state".into(), "s/1+".into()),
            ]
        );
        // redirect_uri is percent-encoded inside the query (its own '?', '&', ':' and '/').
        assert!(url.as_str().contains(
            "redirect_uri=http%3A%2F%2F127.0.0.1%3A8400%2Fcallback%3Fx%3D1%26y%3Da%2520b"
        ));
        assert!(!url.as_str().contains("top-secret"));
        assert!(!url.as_str().contains("client_secret"));
        assert_eq!(pending.state().secret(), "s/1+");
    }

    #[test]
    fn redirect_uri_override_and_missing() {
        let override_uri = Url::parse("http://127.0.0.1:5555/cb").unwrap();
        let (url, pending) = PendingAuthorization::start(
            &config(),
            NOW,
            CsrfState::new("s"),
            Some(override_uri.clone()),
        )
        .unwrap();
        assert!(url.as_str().contains("127.0.0.1%3A5555"));
        assert_eq!(pending.redirect_uri(), &override_uri);

        let no_redirect = ClientConfig::builder("c", ClientSecret::new("s"))
            .build()
            .unwrap();
        assert_eq!(
            PendingAuthorization::start(&no_redirect, NOW, CsrfState::new("s"), None).unwrap_err(),
            AuthorizationError::MissingRedirectUri
        );
        assert_eq!(
            PendingAuthorization::start(&config(), NOW, CsrfState::new(""), None).unwrap_err(),
            AuthorizationError::EmptyState
        );
    }

    #[test]
    fn accepts_full_url_query_and_path_forms() {
        for callback in [
            "http://127.0.0.1:8400/callback?code=abc&state=st8",
            "?code=abc&state=st8",
            "code=abc&state=st8",
            "/callback?state=st8&code=abc",
        ] {
            assert_eq!(
                pending().verify_callback(NOW, callback).unwrap().secret(),
                "abc",
                "{callback}"
            );
        }
    }

    #[test]
    fn rejects_bad_callbacks_with_typed_errors() {
        let p = pending();
        assert_eq!(
            p.verify_callback(NOW, "code=abc&state=wrong").unwrap_err(),
            CallbackError::StateMismatch
        );
        assert_eq!(
            p.verify_callback(NOW, "code=abc").unwrap_err(),
            CallbackError::MissingState
        );
        assert_eq!(
            p.verify_callback(NOW, "state=st8").unwrap_err(),
            CallbackError::MissingCode
        );
        assert_eq!(
            p.verify_callback(NOW, "state=st8&code=").unwrap_err(),
            CallbackError::MissingCode
        );
        assert_eq!(
            p.verify_callback(NOW, "state=st8&code=a&code=b")
                .unwrap_err(),
            CallbackError::DuplicateParameter("code".into())
        );
        assert_eq!(
            p.verify_callback(NOW, "state=st8&state=st8&code=a")
                .unwrap_err(),
            CallbackError::DuplicateParameter("state".into())
        );
        assert_eq!(
            p.verify_callback(NOW, "http://[::1/cb?x").unwrap_err(),
            CallbackError::Malformed
        );
        // An error with the wrong state is a CSRF failure first.
        assert_eq!(
            p.verify_callback(NOW, "error=access_denied&state=nope")
                .unwrap_err(),
            CallbackError::StateMismatch
        );
    }

    #[test]
    fn rfc6749_denials_are_typed() {
        let p = pending();
        assert_eq!(
            p.verify_callback(
                NOW,
                "error=access_denied&error_description=User+said+no&state=st8"
            )
            .unwrap_err(),
            CallbackError::Denied {
                error: AuthorizationErrorCode::AccessDenied,
                description: Some("User said no".into())
            }
        );
        for (code, expected) in [
            ("invalid_request", AuthorizationErrorCode::InvalidRequest),
            (
                "unauthorized_client",
                AuthorizationErrorCode::UnauthorizedClient,
            ),
            (
                "unsupported_response_type",
                AuthorizationErrorCode::UnsupportedResponseType,
            ),
            ("invalid_scope", AuthorizationErrorCode::InvalidScope),
            ("server_error", AuthorizationErrorCode::ServerError),
            (
                "temporarily_unavailable",
                AuthorizationErrorCode::TemporarilyUnavailable,
            ),
            ("custom", AuthorizationErrorCode::Other("custom".into())),
        ] {
            let err = p
                .verify_callback(NOW, &format!("error={code}&state=st8"))
                .unwrap_err();
            assert_eq!(
                err,
                CallbackError::Denied {
                    error: expected,
                    description: None
                }
            );
        }
    }
}
