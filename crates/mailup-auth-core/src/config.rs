//! Client configuration: who we are (client id and secret), where MailUp is, and the timing
//! policy (refresh skew, assumed token lifetime, backoff). Validated once, at build time.

use std::time::Duration;

use url::Url;

use crate::secret::ClientSecret;

/// MailUp's production LogOn (authorization) endpoint.
pub const MAILUP_LOGON_URL: &str = "https://services.mailup.com/Authorization/OAuth/LogOn";
/// MailUp's production token endpoint.
pub const MAILUP_TOKEN_URL: &str = "https://services.mailup.com/Authorization/OAuth/Token";
/// MailUp's production Console API base.
pub const MAILUP_CONSOLE_API_BASE: &str =
    "https://services.mailup.com/API/v1.1/Rest/ConsoleService.svc";
/// MailUp's production authorization server base (LogOn and Token paths hang off it).
pub const MAILUP_AUTH_BASE: &str = "https://services.mailup.com";
/// Path of the LogOn page below an authorization base URL.
pub(crate) const LOGON_PATH: &str = "/Authorization/OAuth/LogOn";
/// Path of the token endpoint below an authorization base URL.
pub(crate) const TOKEN_PATH: &str = "/Authorization/OAuth/Token";
/// Path of the Console API below a base URL.
pub(crate) const CONSOLE_API_PATH: &str = "/API/v1.1/Rest/ConsoleService.svc";

/// Default refresh skew: a token is treated as expired this long before its real expiry.
pub const DEFAULT_REFRESH_SKEW: Duration = Duration::from_secs(60);
/// Default lifetime assumed when a token response has no `expires_in`.
pub const DEFAULT_EXPIRES_IN: Duration = Duration::from_secs(3600);
/// Default time a started authorization (a [`PendingAuthorization`](crate::PendingAuthorization))
/// may be completed in.
pub const DEFAULT_AUTHORIZATION_TIMEOUT: Duration = Duration::from_secs(600);

/// Invalid configuration, reported when the configuration is built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The client id is empty.
    #[error("the client id is empty")]
    EmptyClientId,
    /// A URL does not parse.
    #[error("{field} is not a valid URL: {source}")]
    InvalidUrl {
        /// The builder setting at fault, as named in the message (e.g. `token url`).
        field: &'static str,
        /// Why it does not parse: the `url` crate's error, also `source()`.
        source: url::ParseError,
    },
    /// A URL is not an absolute `http` or `https` URL with a host.
    #[error("{field} must be an absolute http(s) URL with a host")]
    NotHttpUrl {
        /// The builder setting at fault, as named in the message (e.g. `token url`).
        field: &'static str,
    },
    /// A plain `http` URL for a host that is not a loopback address: secrets (the client
    /// secret, tokens, a password, the authorization code) would travel in clear. Use `https`,
    /// or opt in with [`ClientConfigBuilder::allow_insecure_http`].
    #[error(
        "{field} uses plain http for `{host}`, which is not a loopback address: secrets would \
         travel in clear; use https (plain http is accepted only for 127.0.0.0/8, ::1 and \
         localhost)"
    )]
    InsecureHttp {
        /// The builder setting at fault, as named in the message (e.g. `token url`).
        field: &'static str,
        /// The host the URL names.
        host: String,
    },
    /// A setting is out of range.
    #[error("{field}: {reason}")]
    OutOfRange {
        /// The builder setting at fault, as named in the message (e.g. `token url`).
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// The three URLs the flow talks to.
///
/// `Debug` shows each URL as its string (not `Url`'s internals). With the `serde` feature it
/// serializes as `{"logon": "...", "token": "...", "api_base": "..."}`, for a status page: no
/// URL here holds a secret.
#[non_exhaustive]
#[derive(Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Endpoints {
    /// The LogOn (authorization) page the user's browser is sent to.
    pub logon: Url,
    /// The token endpoint (code exchange, refresh, password grant).
    pub token: Url,
    /// The REST API base that relative API paths are resolved against.
    pub api_base: Url,
}

impl Endpoints {
    /// MailUp's production endpoints.
    pub fn mailup() -> Self {
        Self::from_auth_base(MAILUP_AUTH_BASE).expect("MailUp's production URLs are valid")
    }

    /// Endpoints of a server laid out like MailUp (e.g. the emulator): LogOn, Token and the
    /// Console API under one base URL.
    pub fn from_auth_base(base: &str) -> Result<Self, ConfigError> {
        let base = parse_http_url("auth base", base)?;
        let base = base.as_str().trim_end_matches('/');
        Ok(Self {
            logon: parse_http_url("logon url", &format!("{base}{LOGON_PATH}"))?,
            token: parse_http_url("token url", &format!("{base}{TOKEN_PATH}"))?,
            api_base: parse_http_url("api base", &format!("{base}{CONSOLE_API_PATH}"))?,
        })
    }
}

impl std::fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoints")
            .field("logon", &self.logon.as_str())
            .field("token", &self.token.as_str())
            .field("api_base", &self.api_base.as_str())
            .finish()
    }
}

impl Default for Endpoints {
    fn default() -> Self {
        Self::mailup()
    }
}

/// Exponential backoff after transient token-endpoint failures.
#[allow(
    clippy::exhaustive_structs,
    reason = "a configuration value applications build with a literal; two durations is all it is"
)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Delay after the first failure.
    pub initial: Duration,
    /// Upper bound on any delay.
    pub max: Duration,
}

impl Backoff {
    /// The delay before retry number `attempt` (1 = after the first failure): `initial *
    /// 2^(attempt-1)`, capped at `max`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let shift = attempt.saturating_sub(1).min(31);
        self.initial
            .checked_mul(1u32 << shift)
            .unwrap_or(self.max)
            .min(self.max)
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
        }
    }
}

/// A validated client configuration. Build one with [`ClientConfig::builder`].
#[derive(Clone, Debug)]
pub struct ClientConfig {
    client_id: String,
    client_secret: ClientSecret,
    redirect_uri: Option<Url>,
    endpoints: Endpoints,
    refresh_skew: Duration,
    default_expires_in: Duration,
    backoff: Backoff,
    authorization_timeout: Duration,
    allow_insecure_http: bool,
}

impl ClientConfig {
    /// Starts a configuration for the given client, with MailUp's production endpoints.
    pub fn builder(
        client_id: impl Into<String>,
        client_secret: ClientSecret,
    ) -> ClientConfigBuilder {
        ClientConfigBuilder {
            client_id: client_id.into(),
            client_secret,
            redirect_uri: None,
            logon: None,
            token: None,
            api_base: None,
            auth_base: None,
            refresh_skew: DEFAULT_REFRESH_SKEW,
            default_expires_in: DEFAULT_EXPIRES_IN,
            backoff: Backoff::default(),
            authorization_timeout: DEFAULT_AUTHORIZATION_TIMEOUT,
            allow_insecure_http: false,
        }
    }

    /// The client id from MailUp's developer portal (public: it appears in LogOn URLs).
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The client secret (redacted in `Debug`).
    pub fn client_secret(&self) -> &ClientSecret {
        &self.client_secret
    }

    /// The configured redirect URI, if any.
    pub fn redirect_uri(&self) -> Option<&Url> {
        self.redirect_uri.as_ref()
    }

    /// The LogOn, token and API URLs in use (MailUp's production ones unless overridden).
    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    /// How long before expiry a refresh becomes due (capped at half the token's lifetime: see
    /// [`TokenSet::refresh_at`](crate::TokenSet::refresh_at)). The skew says when to start
    /// refreshing, not when a token stops being usable: while a refresh inside this margin
    /// fails, the current token is still handed out until shortly before it expires.
    pub fn refresh_skew(&self) -> Duration {
        self.refresh_skew
    }

    /// How long a started authorization may be completed in (default 10 minutes).
    pub fn authorization_timeout(&self) -> Duration {
        self.authorization_timeout
    }

    /// Whether plain `http` URLs to non-loopback hosts were allowed with
    /// [`ClientConfigBuilder::allow_insecure_http`].
    pub fn allows_insecure_http(&self) -> bool {
        self.allow_insecure_http
    }

    /// Checks a URL the client will send secrets to (e.g. an extra trusted API origin) against
    /// the same rule as the endpoints: `https`, or `http` to a loopback host, unless insecure
    /// http was allowed.
    pub fn check_url(&self, field: &'static str, value: &str) -> Result<Url, ConfigError> {
        let url = parse_http_url(field, value)?;
        if !self.allow_insecure_http {
            require_secure_transport(field, &url)?;
        }
        Ok(url)
    }

    /// The lifetime assumed when a token response omits `expires_in`.
    pub fn default_expires_in(&self) -> Duration {
        self.default_expires_in
    }

    /// The backoff policy for transient token-endpoint failures.
    pub fn backoff(&self) -> Backoff {
        self.backoff
    }
}

/// Builder for [`ClientConfig`]; every URL is validated in [`build`](Self::build).
#[derive(Debug)]
pub struct ClientConfigBuilder {
    client_id: String,
    client_secret: ClientSecret,
    redirect_uri: Option<String>,
    logon: Option<String>,
    token: Option<String>,
    api_base: Option<String>,
    auth_base: Option<String>,
    refresh_skew: Duration,
    default_expires_in: Duration,
    backoff: Backoff,
    authorization_timeout: Duration,
    allow_insecure_http: bool,
}

impl ClientConfigBuilder {
    /// The redirect URI registered for the application (where MailUp sends the browser back).
    pub fn redirect_uri(mut self, uri: impl Into<String>) -> Self {
        self.redirect_uri = Some(uri.into());
        self
    }

    /// Use a server laid out like MailUp at another base URL (LogOn, Token and Console API
    /// paths appended). Individual URLs set with the other methods win over it.
    pub fn auth_base(mut self, base: impl Into<String>) -> Self {
        self.auth_base = Some(base.into());
        self
    }

    /// Overrides the LogOn (authorization) URL.
    pub fn logon_url(mut self, url: impl Into<String>) -> Self {
        self.logon = Some(url.into());
        self
    }

    /// Overrides the token URL.
    pub fn token_url(mut self, url: impl Into<String>) -> Self {
        self.token = Some(url.into());
        self
    }

    /// Overrides the REST API base URL.
    pub fn api_base(mut self, url: impl Into<String>) -> Self {
        self.api_base = Some(url.into());
        self
    }

    /// Sets all endpoints at once.
    pub fn endpoints(mut self, endpoints: Endpoints) -> Self {
        self.logon = Some(endpoints.logon.into());
        self.token = Some(endpoints.token.into());
        self.api_base = Some(endpoints.api_base.into());
        self
    }

    /// How long before expiry a refresh becomes due (default 60 s; capped at half of each
    /// token's lifetime, so short-lived tokens work with any skew).
    pub fn refresh_skew(mut self, skew: Duration) -> Self {
        self.refresh_skew = skew;
        self
    }

    /// The lifetime assumed when a token response omits `expires_in` (default 3600 s).
    pub fn default_expires_in(mut self, lifetime: Duration) -> Self {
        self.default_expires_in = lifetime;
        self
    }

    /// The backoff policy after transient token-endpoint failures (default 1 s doubling to 60 s).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// How long a started authorization may be completed in (default 10 minutes); a callback
    /// after that is [`CallbackError::Expired`](crate::CallbackError::Expired).
    pub fn authorization_timeout(mut self, timeout: Duration) -> Self {
        self.authorization_timeout = timeout;
        self
    }

    /// Accepts plain `http` URLs to hosts that are not loopback addresses.
    ///
    /// **Insecure**: the client secret, the refresh and access tokens, a password and the
    /// authorization code then travel unencrypted to that host, readable and replayable by
    /// anyone on the path. Without this, such a URL is [`ConfigError::InsecureHttp`] before any
    /// I/O; `http` to 127.0.0.0/8, `::1` and `localhost` is always accepted (local tests and
    /// the emulator).
    pub fn allow_insecure_http(mut self) -> Self {
        self.allow_insecure_http = true;
        self
    }

    /// Validates and builds the configuration.
    pub fn build(self) -> Result<ClientConfig, ConfigError> {
        if self.client_id.trim().is_empty() {
            return Err(ConfigError::EmptyClientId);
        }
        let mut endpoints = match &self.auth_base {
            Some(base) => Endpoints::from_auth_base(base)?,
            None => Endpoints::mailup(),
        };
        if let Some(logon) = &self.logon {
            endpoints.logon = parse_http_url("logon url", logon)?;
        }
        if let Some(token) = &self.token {
            endpoints.token = parse_http_url("token url", token)?;
        }
        if let Some(api) = &self.api_base {
            endpoints.api_base = parse_http_url("api base", api)?;
        }
        let redirect_uri = self
            .redirect_uri
            .as_deref()
            .map(|uri| parse_http_url("redirect uri", uri))
            .transpose()?;
        if self.backoff.initial.is_zero() || self.backoff.max < self.backoff.initial {
            return Err(ConfigError::OutOfRange {
                field: "backoff",
                reason: "initial delay must be positive and not above the maximum",
            });
        }
        if self.default_expires_in.is_zero() {
            return Err(ConfigError::OutOfRange {
                field: "default expires_in",
                reason: "must be positive",
            });
        }
        if self.authorization_timeout.is_zero() {
            return Err(ConfigError::OutOfRange {
                field: "authorization timeout",
                reason: "must be positive",
            });
        }
        if !self.allow_insecure_http {
            require_secure_transport("logon url", &endpoints.logon)?;
            require_secure_transport("token url", &endpoints.token)?;
            require_secure_transport("api base", &endpoints.api_base)?;
            if let Some(uri) = &redirect_uri {
                require_secure_transport("redirect uri", uri)?;
            }
        }
        Ok(ClientConfig {
            client_id: self.client_id,
            client_secret: self.client_secret,
            redirect_uri,
            endpoints,
            refresh_skew: self.refresh_skew,
            default_expires_in: self.default_expires_in,
            backoff: self.backoff,
            authorization_timeout: self.authorization_timeout,
            allow_insecure_http: self.allow_insecure_http,
        })
    }
}

/// Whether a URL's host is a loopback address: 127.0.0.0/8, `::1` or `localhost`, for any
/// scheme.
pub fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        // URLs of schemes the URL standard does not know (`redis://`) keep an IPv4 address as
        // an opaque host name.
        Some(url::Host::Domain(domain)) => {
            domain.eq_ignore_ascii_case("localhost")
                || domain
                    .parse::<std::net::Ipv4Addr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        None => false,
    }
}

/// Refuses a plain `http` URL whose host is not a loopback address.
fn require_secure_transport(field: &'static str, url: &Url) -> Result<(), ConfigError> {
    if url.scheme() == "http" && !is_loopback_host(url) {
        return Err(ConfigError::InsecureHttp {
            field,
            host: url.host_str().unwrap_or_default().to_owned(),
        });
    }
    Ok(())
}

/// Parses an absolute `http`/`https` URL with a host, or says which setting is wrong.
pub fn parse_http_url(field: &'static str, value: &str) -> Result<Url, ConfigError> {
    let url =
        Url::parse(value.trim()).map_err(|source| ConfigError::InvalidUrl { field, source })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(ConfigError::NotHttpUrl { field });
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builder() -> ClientConfigBuilder {
        ClientConfig::builder("client", ClientSecret::new("secret"))
    }

    #[test]
    fn defaults_are_mailup_production() {
        let config = builder().build().unwrap();
        assert_eq!(config.endpoints().logon.as_str(), MAILUP_LOGON_URL);
        assert_eq!(config.endpoints().token.as_str(), MAILUP_TOKEN_URL);
        assert_eq!(
            config.endpoints().api_base.as_str(),
            MAILUP_CONSOLE_API_BASE
        );
        assert_eq!(config.refresh_skew(), Duration::from_secs(60));
        assert_eq!(config.default_expires_in(), Duration::from_secs(3600));
    }

    #[test]
    fn auth_base_lays_out_mailup_paths_and_overrides_win() {
        let config = builder()
            .auth_base("http://127.0.0.1:8080/")
            .token_url("http://127.0.0.1:9999/token")
            .build()
            .unwrap();
        assert_eq!(
            config.endpoints().logon.as_str(),
            "http://127.0.0.1:8080/Authorization/OAuth/LogOn"
        );
        assert_eq!(
            config.endpoints().token.as_str(),
            "http://127.0.0.1:9999/token"
        );
        assert_eq!(
            config.endpoints().api_base.as_str(),
            "http://127.0.0.1:8080/API/v1.1/Rest/ConsoleService.svc"
        );
    }

    #[test]
    fn invalid_configuration_is_a_typed_error() {
        assert_eq!(
            ClientConfig::builder("  ", ClientSecret::new("s"))
                .build()
                .unwrap_err(),
            ConfigError::EmptyClientId
        );
        assert!(matches!(
            builder().token_url("not a url").build().unwrap_err(),
            ConfigError::InvalidUrl {
                field: "token url",
                ..
            }
        ));
        assert_eq!(
            builder()
                .logon_url("ftp://example.com/x")
                .build()
                .unwrap_err(),
            ConfigError::NotHttpUrl { field: "logon url" }
        );
        assert_eq!(
            builder().redirect_uri("mailto:a@b.c").build().unwrap_err(),
            ConfigError::NotHttpUrl {
                field: "redirect uri"
            }
        );
        let not_a_url = builder().token_url("not a url").build().unwrap_err();
        assert_eq!(
            std::error::Error::source(&not_a_url)
                .and_then(|source| source.downcast_ref::<url::ParseError>()),
            Some(&url::ParseError::RelativeUrlWithoutBase),
            "the url crate's error is the source"
        );
        assert!(matches!(
            builder()
                .redirect_uri("/relative/path")
                .build()
                .unwrap_err(),
            ConfigError::InvalidUrl {
                field: "redirect uri",
                ..
            }
        ));
        assert!(matches!(
            builder()
                .backoff(Backoff {
                    initial: Duration::ZERO,
                    max: Duration::from_secs(1)
                })
                .build()
                .unwrap_err(),
            ConfigError::OutOfRange {
                field: "backoff",
                ..
            }
        ));
    }

    #[test]
    fn plain_http_is_refused_for_hosts_that_are_not_loopback() {
        for (builder, field) in [
            (builder().auth_base("http://192.0.2.1:9"), "logon url"),
            (builder().token_url("http://example.com/token"), "token url"),
            (
                builder().logon_url("http://mailup.example/LogOn"),
                "logon url",
            ),
            (builder().api_base("http://10.0.0.1/api"), "api base"),
            (
                builder().redirect_uri("http://app.example.com/callback"),
                "redirect uri",
            ),
            (
                builder().token_url("http://127.0.0.1.example.com/t"),
                "token url",
            ),
            (
                builder().token_url("http://localhost.evil.example/t"),
                "token url",
            ),
        ] {
            let error = builder.build().unwrap_err();
            assert!(
                matches!(&error, ConfigError::InsecureHttp { field: f, .. } if *f == field),
                "{error:?}"
            );
        }
        let error = builder()
            .token_url("http://192.0.2.1:9/token")
            .build()
            .unwrap_err();
        assert_eq!(
            error,
            ConfigError::InsecureHttp {
                field: "token url",
                host: "192.0.2.1".into()
            }
        );
        assert!(error.to_string().contains("use https"));
    }

    #[test]
    fn plain_http_is_accepted_for_loopback_hosts_and_https_anywhere() {
        for base in [
            "http://127.0.0.1:8080",
            "http://127.3.4.5:8080",
            "http://[::1]:8080",
            "http://localhost:8080",
            "http://LOCALHOST:8080",
            "https://services.example.com",
        ] {
            builder()
                .auth_base(base)
                .redirect_uri("http://127.0.0.1:8765/callback")
                .build()
                .unwrap_or_else(|e| panic!("{base}: {e}"));
        }
    }

    #[test]
    fn insecure_http_needs_an_explicit_opt_in() {
        let config = builder()
            .auth_base("http://192.0.2.1:9")
            .allow_insecure_http()
            .build()
            .unwrap();
        assert!(config.allows_insecure_http());
        assert!(config
            .check_url("trusted origin", "http://192.0.2.2")
            .is_ok());
        let strict = builder().build().unwrap();
        assert!(matches!(
            strict.check_url("trusted origin", "http://192.0.2.2"),
            Err(ConfigError::InsecureHttp { .. })
        ));
        assert!(strict.check_url("trusted origin", "http://[::1]:1").is_ok());
    }

    #[test]
    fn debug_does_not_show_the_secret() {
        let printed = format!(
            "{:?}",
            ClientConfig::builder("id", ClientSecret::new("hunter2"))
                .build()
                .unwrap()
        );
        assert!(!printed.contains("hunter2"));
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        assert_eq!(b.delay(1), Duration::from_millis(100));
        assert_eq!(b.delay(2), Duration::from_millis(200));
        assert_eq!(b.delay(4), Duration::from_millis(800));
        assert_eq!(b.delay(5), Duration::from_secs(1));
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(1));
    }
}
