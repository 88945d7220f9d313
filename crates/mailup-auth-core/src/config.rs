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
pub const LOGON_PATH: &str = "/Authorization/OAuth/LogOn";
/// Path of the token endpoint below an authorization base URL.
pub const TOKEN_PATH: &str = "/Authorization/OAuth/Token";
/// Path of the Console API below a base URL.
pub const CONSOLE_API_PATH: &str = "/API/v1.1/Rest/ConsoleService.svc";

/// Default refresh skew: a token is treated as expired this long before its real expiry.
pub const DEFAULT_REFRESH_SKEW: Duration = Duration::from_secs(60);
/// Default lifetime assumed when a token response has no `expires_in`.
pub const DEFAULT_EXPIRES_IN: Duration = Duration::from_secs(3600);

/// Invalid configuration, reported when the configuration is built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The client id is empty.
    #[error("the client id is empty")]
    EmptyClientId,
    /// A URL does not parse.
    #[error("{field} is not a valid URL: {reason}")]
    InvalidUrl {
        /// Which setting.
        field: &'static str,
        /// Why it does not parse.
        reason: String,
    },
    /// A URL is not an absolute `http` or `https` URL with a host.
    #[error("{field} must be an absolute http(s) URL with a host")]
    NotHttpUrl {
        /// Which setting.
        field: &'static str,
    },
    /// A setting is out of range.
    #[error("{field}: {reason}")]
    OutOfRange {
        /// Which setting.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// The three URLs the flow talks to.
#[derive(Clone, Debug, PartialEq, Eq)]
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

impl Default for Endpoints {
    fn default() -> Self {
        Self::mailup()
    }
}

/// Exponential backoff after transient token-endpoint failures.
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
        }
    }

    /// The client id.
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

    /// The endpoints.
    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    /// How long before expiry a token stops being handed out and a refresh becomes due.
    pub fn refresh_skew(&self) -> Duration {
        self.refresh_skew
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

    /// How long before expiry a token is treated as expired (default 60 s).
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
        Ok(ClientConfig {
            client_id: self.client_id,
            client_secret: self.client_secret,
            redirect_uri,
            endpoints,
            refresh_skew: self.refresh_skew,
            default_expires_in: self.default_expires_in,
            backoff: self.backoff,
        })
    }
}

/// Parses an absolute `http`/`https` URL with a host, or says which setting is wrong.
pub fn parse_http_url(field: &'static str, value: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(value.trim()).map_err(|e| ConfigError::InvalidUrl {
        field,
        reason: e.to_string(),
    })?;
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
