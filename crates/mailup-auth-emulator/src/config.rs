//! What the emulator is started with: registered clients, users with their MailUp account data,
//! lifetimes and limits. [`EmulatorConfig`] is plain data that the binary also reads from a TOML
//! or JSON file.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::seed::{demo_lists, ListSeed, STANDARD_FIELDS};
use crate::{DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_PASSWORD, DEFAULT_USERNAME};

/// An application registered with the emulated authorization server.
///
/// `Debug` never prints the secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisteredClient {
    pub(crate) id: String,
    pub(crate) secret: String,
    #[serde(default)]
    pub(crate) name: Option<String>,
    #[serde(default)]
    pub(crate) redirect_prefixes: Vec<String>,
}

impl RegisteredClient {
    /// A client with this `client_id` and `client_secret`, any redirect URI allowed.
    pub fn new(id: impl Into<String>, secret: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            secret: secret.into(),
            name: None,
            redirect_prefixes: Vec::new(),
        }
    }

    /// The application name shown on the LogOn and consent pages (defaults to the id).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Restricts `redirect_uri` to URLs starting with `prefix` (may be called several times).
    ///
    /// A prefix without a path, such as `http://127.0.0.1`, matches only at a boundary: it
    /// allows `http://127.0.0.1:8765/cb` but not `http://127.0.0.1.example.com/`.
    pub fn redirect_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.redirect_prefixes.push(prefix.into());
        self
    }

    /// The `client_id`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The `client_secret`. It is a test credential, but do not log it anyway.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// The name shown to users.
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.id)
    }

    /// The registered redirect prefixes (empty: any absolute http(s) URL).
    pub fn redirect_prefixes(&self) -> &[String] {
        &self.redirect_prefixes
    }

    /// Whether `redirect_uri` is acceptable for this client: an absolute `http` or `https` URL
    /// without a fragment, under a registered prefix if there are any.
    pub fn allows_redirect_uri(&self, redirect_uri: &str) -> bool {
        let Ok(url) = url::Url::parse(redirect_uri) else {
            return false;
        };
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return false;
        }
        if url.fragment().is_some() {
            return false;
        }
        // `http://127.0.0.1:8765@evil.example/` has host evil.example: never accept userinfo.
        if !url.username().is_empty() || url.password().is_some() {
            return false;
        }
        if self.redirect_prefixes.is_empty() {
            return true;
        }
        // Compared as URLs, not strings: same scheme and host; the same port when the prefix
        // names one (a prefix without a port allows any, as RFC 8252 wants for loopback); and
        // the path at or below the prefix's path, on a segment boundary.
        self.redirect_prefixes.iter().any(|prefix| {
            let Ok(prefix) = url::Url::parse(prefix) else {
                return false;
            };
            if prefix.scheme() != url.scheme() || prefix.host_str() != url.host_str() {
                return false;
            }
            if prefix.port().is_some() && prefix.port() != url.port() {
                return false;
            }
            let base = prefix.path().trim_end_matches('/');
            base.is_empty() || url.path() == base || url.path().starts_with(&format!("{base}/"))
        })
    }
}

impl fmt::Debug for RegisteredClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegisteredClient")
            .field("id", &self.id)
            .field("secret", &"[redacted]")
            .field("name", &self.name)
            .field("redirect_prefixes", &self.redirect_prefixes)
            .finish()
    }
}

/// A MailUp user who can log in, with the account data the Console API reports.
///
/// Unset account fields get defaults derived from the username. `Debug` never prints the
/// password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub(crate) username: String,
    pub(crate) password: String,
    #[serde(default)]
    pub(crate) account_name: Option<String>,
    #[serde(default)]
    pub(crate) company: Option<String>,
    #[serde(default)]
    pub(crate) uid: Option<String>,
    #[serde(default)]
    pub(crate) url: Option<String>,
    #[serde(default)]
    pub(crate) expiry_date: Option<String>,
    #[serde(default)]
    pub(crate) is_trial: bool,
    #[serde(default)]
    pub(crate) version: Option<String>,
    /// The user's mailing lists (names, or tables with groups, recipients and messages);
    /// `None` means the demo lists.
    #[serde(default)]
    pub(crate) lists: Option<Vec<ListSeed>>,
    /// Descriptions of the personal data fields, `Id` 1, 2, ... in order; `None` means
    /// MailUp's standard ones (`FirstName`, `LastName`, `Company`, ...).
    #[serde(default)]
    pub(crate) dynamic_fields: Option<Vec<String>>,
}

impl User {
    /// A user with this username and password and default account data.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            username: username.into(),
            password: password.into(),
            account_name: None,
            company: None,
            uid: None,
            url: None,
            expiry_date: None,
            is_trial: false,
            version: None,
            lists: None,
            dynamic_fields: None,
        }
    }

    /// `AccountName` (default: `"Demo account {username}"`).
    pub fn account_name(mut self, value: impl Into<String>) -> Self {
        self.account_name = Some(value.into());
        self
    }

    /// `Company` (default: "Emulated Company Ltd").
    pub fn company(mut self, value: impl Into<String>) -> Self {
        self.company = Some(value.into());
        self
    }

    /// `UID`, a string as in MailUp (default: "388").
    pub fn uid(mut self, value: impl Into<String>) -> Self {
        self.uid = Some(value.into());
        self
    }

    /// `Url`, the console address (default: `"https://{username}.s1.emulated.mailup.local"`).
    pub fn url(mut self, value: impl Into<String>) -> Self {
        self.url = Some(value.into());
        self
    }

    /// `ExpiryDate` (default: "2099-12-31 00:00:00Z").
    pub fn expiry_date(mut self, value: impl Into<String>) -> Self {
        self.expiry_date = Some(value.into());
        self
    }

    /// `IsTrial` (default: false).
    pub fn trial(mut self, is_trial: bool) -> Self {
        self.is_trial = is_trial;
        self
    }

    /// `Version` (default: "9.0.0").
    pub fn version(mut self, value: impl Into<String>) -> Self {
        self.version = Some(value.into());
        self
    }

    /// Adds a mailing list: a name, or a [`ListSeed`] with groups, recipients and messages.
    /// The first call replaces the demo lists.
    pub fn list(mut self, list: impl Into<ListSeed>) -> Self {
        self.lists.get_or_insert_with(Vec::new).push(list.into());
        self
    }

    /// Replaces the personal data fields (`Id` 1, 2, ... in this order) with these
    /// descriptions; the default is MailUp's standard ones.
    pub fn dynamic_fields<I, S>(mut self, descriptions: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.dynamic_fields = Some(descriptions.into_iter().map(Into::into).collect());
        self
    }

    /// Gives the user no mailing lists at all.
    pub fn no_lists(mut self) -> Self {
        self.lists = Some(Vec::new());
        self
    }

    /// The username (MailUp's are like `m1234`).
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The password. A test credential, but do not log it anyway.
    pub fn password(&self) -> &str {
        &self.password
    }

    pub(crate) fn account(&self) -> AccountInfo {
        AccountInfo {
            account_name: self
                .account_name
                .clone()
                .unwrap_or_else(|| format!("Demo account {}", self.username)),
            company: self
                .company
                .clone()
                .unwrap_or_else(|| "Emulated Company Ltd".to_owned()),
            expiry_date: self
                .expiry_date
                .clone()
                .unwrap_or_else(|| "2099-12-31 00:00:00Z".to_owned()),
            is_trial: self.is_trial,
            uid: self.uid.clone().unwrap_or_else(|| "388".to_owned()),
            url: self
                .url
                .clone()
                .unwrap_or_else(|| format!("https://{}.s1.emulated.mailup.local", self.username)),
            username: self.username.clone(),
            version: self.version.clone().unwrap_or_else(|| "9.0.0".to_owned()),
        }
    }

    #[cfg(test)]
    pub(crate) fn list_names(&self) -> Vec<String> {
        self.list_seeds().into_iter().map(|l| l.name).collect()
    }

    pub(crate) fn list_seeds(&self) -> Vec<ListSeed> {
        match &self.lists {
            Some(lists) => lists.clone(),
            None => demo_lists(),
        }
    }

    pub(crate) fn field_descriptions(&self) -> Vec<String> {
        match &self.dynamic_fields {
            Some(fields) => fields.clone(),
            None => STANDARD_FIELDS.iter().map(|f| (*f).to_owned()).collect(),
        }
    }

    /// Checks that every seeded recipient names groups and fields that exist.
    fn validate_seed(&self) -> Result<(), ConfigError> {
        let fields = self.field_descriptions();
        let who = &self.username;
        for list in self.list_seeds() {
            if list.name.trim().is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "user {who}: a list has an empty name"
                )));
            }
            for recipient in &list.recipients {
                if recipient.email.trim().is_empty() {
                    return Err(ConfigError::Invalid(format!(
                        "user {who}, list {:?}: a recipient has an empty email",
                        list.name
                    )));
                }
                if let Some(group) = recipient.groups.iter().find(|g| !list.groups.contains(g)) {
                    return Err(ConfigError::Invalid(format!(
                        "user {who}, list {:?}: recipient {} is in group {group:?}, which the list does not have",
                        list.name, recipient.email
                    )));
                }
                if let Some(field) = recipient.fields.keys().find(|f| !fields.contains(f)) {
                    return Err(ConfigError::Invalid(format!(
                        "user {who}: recipient {} sets field {field:?}, which is not in dynamic_fields",
                        recipient.email
                    )));
                }
            }
        }
        Ok(())
    }
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("username", &self.username)
            .field("password", &"[redacted]")
            .field("account", &self.account())
            .finish()
    }
}

/// The body of `GET /Console/Authentication/Info`, in MailUp's field names and order.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct AccountInfo {
    pub(crate) account_name: String,
    pub(crate) company: String,
    pub(crate) expiry_date: String,
    pub(crate) is_trial: bool,
    #[serde(rename = "UID")]
    pub(crate) uid: String,
    pub(crate) url: String,
    pub(crate) username: String,
    pub(crate) version: String,
}

/// A per-access-token rate limit: at most `requests` API calls in each `window`.
#[allow(
    clippy::exhaustive_structs,
    reason = "configuration tests and the emulator's binary build with a literal; two numbers is all it is"
)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    /// Calls allowed per window.
    pub requests: u32,
    /// The window length, in whole seconds in files (`window_secs`).
    #[serde(rename = "window_secs", with = "secs")]
    pub window: Duration,
}

/// Everything the emulator starts with. Plain data: build it with
/// [`EmulatorBuilder`](crate::EmulatorBuilder) or read it from a file with
/// [`EmulatorConfig::from_path`].
///
/// The file format (TOML shown; JSON with the same keys works too), every key optional:
///
/// ```toml
/// access_token_lifetime_secs = 3600
/// code_lifetime_secs = 60
/// admin_api = false
/// rate_limit = { requests = 5, window_secs = 1 }
///
/// [[clients]]
/// id = "my-app"
/// secret = "my-secret"
/// name = "My app"
/// redirect_prefixes = ["http://127.0.0.1"]
///
/// [[users]]
/// username = "m1234"
/// password = "pw"
/// company = "ACME"
/// dynamic_fields = ["FirstName", "LastName", "City"]   # default: MailUp's standard fields
/// lists = [
///     "VIP",                                              # a bare name: an empty list
///     { name = "Newsletter", groups = ["Customers"], messages = ["Welcome"], recipients = [
///         { email = "ann@example.com", name = "Ann", groups = ["Customers"], fields = { FirstName = "Ann" } },
///         { email = "bob@example.com", status = "unsubscribed" },   # or "pending"
///     ] },
/// ]
/// ```
///
/// Missing `clients` or `users` fall back to the demo client and user; a user without `lists`
/// gets the demo lists (list "Newsletter" with groups, recipients in every state and messages,
/// then "Customers" and "Test list").
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmulatorConfig {
    /// Registered applications.
    pub clients: Vec<RegisteredClient>,
    /// Users who can log in.
    pub users: Vec<User>,
    /// The `expires_in` of issued access tokens (default 3600 s).
    #[serde(rename = "access_token_lifetime_secs", with = "secs")]
    pub access_token_lifetime: Duration,
    /// How long an authorization code can be exchanged (default 60 s).
    #[serde(rename = "code_lifetime_secs", with = "secs")]
    pub code_lifetime: Duration,
    /// Per-token API rate limit; `None` (the default) means unlimited.
    pub rate_limit: Option<RateLimit>,
    /// Whether the `/_emulator/...` admin routes are served (default false).
    pub admin_api: bool,
}

impl Default for EmulatorConfig {
    /// The demo client and user, MailUp's lifetimes, no rate limit, no admin API.
    fn default() -> Self {
        Self {
            clients: vec![
                RegisteredClient::new(DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET)
                    .name("MailUp emulator demo app"),
            ],
            users: vec![User::new(DEFAULT_USERNAME, DEFAULT_PASSWORD)],
            access_token_lifetime: Duration::from_secs(3600),
            code_lifetime: Duration::from_secs(60),
            rate_limit: None,
            admin_api: false,
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// TOML syntax or shape error.
    #[cfg(feature = "toml")]
    #[error("invalid TOML configuration: {0}")]
    Toml(#[from] toml::de::Error),
    /// JSON syntax or shape error.
    #[error("invalid JSON configuration: {0}")]
    Json(#[from] serde_json::Error),
    /// The configuration is well-formed but unusable.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl EmulatorConfig {
    /// Parses a TOML configuration (the `toml` feature).
    #[cfg(feature = "toml")]
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    /// Parses a JSON configuration.
    pub fn from_json_str(text: &str) -> Result<Self, ConfigError> {
        let config: Self = serde_json::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads a configuration file: JSON if the name ends in `.json`, TOML otherwise (TOML
    /// needs the `toml` feature; without it, such a file is [`ConfigError::Invalid`]).
    pub fn from_path(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        if path
            .extension()
            .is_some_and(|ext| ext.eq_ignore_ascii_case("json"))
        {
            Self::from_json_str(&text)
        } else {
            Self::from_toml_text(path, &text)
        }
    }

    #[cfg(feature = "toml")]
    fn from_toml_text(_path: &Path, text: &str) -> Result<Self, ConfigError> {
        Self::from_toml_str(text)
    }

    #[cfg(not(feature = "toml"))]
    fn from_toml_text(path: &Path, _text: &str) -> Result<Self, ConfigError> {
        Err(ConfigError::Invalid(format!(
            "{} is read as TOML, which needs the emulator's `toml` feature; \
             use a .json file or enable the feature",
            path.display()
        )))
    }

    /// Checks what serde cannot: non-empty ids and names, a sane rate limit.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(client) = self.clients.iter().find(|c| c.id.is_empty()) {
            return Err(ConfigError::Invalid(format!(
                "a client has an empty id ({client:?})"
            )));
        }
        if self.users.iter().any(|u| u.username.is_empty()) {
            return Err(ConfigError::Invalid("a user has an empty username".into()));
        }
        for user in &self.users {
            user.validate_seed()?;
        }
        if let Some(limit) = self.rate_limit {
            if limit.requests == 0 || limit.window.is_zero() {
                return Err(ConfigError::Invalid(
                    "rate_limit needs requests > 0 and window_secs > 0".into(),
                ));
            }
        }
        if self.access_token_lifetime.is_zero() || self.code_lifetime.is_zero() {
            return Err(ConfigError::Invalid("lifetimes must be positive".into()));
        }
        // Keeps `now + lifetime` far from `SystemTime`'s limits.
        let ten_years = Duration::from_secs(10 * 366 * 86_400);
        if self.access_token_lifetime > ten_years || self.code_lifetime > ten_years {
            return Err(ConfigError::Invalid(
                "lifetimes must be at most ten years".into(),
            ));
        }
        Ok(())
    }
}

mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(value.as_secs())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_secrets() {
        let client = RegisteredClient::new("id", "top-secret");
        let user = User::new("m1", "hunter2");
        assert!(!format!("{client:?}").contains("top-secret"));
        assert!(!format!("{user:?}").contains("hunter2"));
    }

    #[test]
    fn redirect_prefixes_match_at_boundaries() {
        let client = RegisteredClient::new("id", "s").redirect_prefix("http://127.0.0.1");
        assert!(client.allows_redirect_uri("http://127.0.0.1:8765/cb"));
        assert!(client.allows_redirect_uri("http://127.0.0.1/cb?x=1"));
        assert!(!client.allows_redirect_uri("http://127.0.0.1.example.com/cb"));
        // Userinfo makes the real host evil.example.
        assert!(!client.allows_redirect_uri("http://127.0.0.1:8765@evil.example/cb"));
        assert!(!client.allows_redirect_uri("http://user:pw@127.0.0.1:8765/cb"));
        let with_path =
            RegisteredClient::new("c", "s").redirect_prefix("https://app.example.com/mailup");
        assert!(with_path.allows_redirect_uri("https://app.example.com/mailup/callback"));
        assert!(with_path.allows_redirect_uri("https://app.example.com/mailup"));
        assert!(!with_path.allows_redirect_uri("https://app.example.com/mailupx/callback"));
        assert!(!with_path.allows_redirect_uri("http://app.example.com/mailup/callback"));
        let with_port = RegisteredClient::new("c", "s").redirect_prefix("http://127.0.0.1:9000/");
        assert!(with_port.allows_redirect_uri("http://127.0.0.1:9000/cb"));
        assert!(!with_port.allows_redirect_uri("http://127.0.0.1:9001/cb"));
        assert!(!client.allows_redirect_uri("https://example.com/cb"));
        let open = RegisteredClient::new("id", "s");
        assert!(open.allows_redirect_uri("https://example.com/cb"));
        assert!(!open.allows_redirect_uri("/relative"));
        assert!(!open.allows_redirect_uri("ftp://example.com/"));
        assert!(!open.allows_redirect_uri("https://example.com/cb#frag"));
        assert!(!open.allows_redirect_uri("javascript:alert(1)"));
    }

    #[cfg(feature = "toml")]
    #[test]
    fn toml_and_json_configs_parse() {
        let toml = r#"
            access_token_lifetime_secs = 10
            admin_api = true
            rate_limit = { requests = 5, window_secs = 1 }
            [[clients]]
            id = "a"
            secret = "b"
            redirect_prefixes = ["http://127.0.0.1"]
            [[users]]
            username = "u"
            password = "p"
            lists = ["One"]
        "#;
        let config = EmulatorConfig::from_toml_str(toml).unwrap();
        assert_eq!(config.access_token_lifetime, Duration::from_secs(10));
        assert_eq!(config.code_lifetime, Duration::from_secs(60));
        assert_eq!(config.clients[0].id(), "a");
        assert_eq!(config.users[0].list_names(), vec!["One".to_owned()]);
        assert_eq!(
            config.rate_limit,
            Some(RateLimit {
                requests: 5,
                window: Duration::from_secs(1)
            })
        );
        let json = r#"{"users":[{"username":"x","password":"y"}]}"#;
        let config = EmulatorConfig::from_json_str(json).unwrap();
        assert_eq!(config.clients[0].id(), DEFAULT_CLIENT_ID);
        assert!(EmulatorConfig::from_toml_str("nonsense = 1").is_err());
        assert!(EmulatorConfig::from_toml_str("code_lifetime_secs = 0").is_err());
        assert!(
            EmulatorConfig::from_toml_str("access_token_lifetime_secs = 18446744073709551615")
                .is_err()
        );
    }
}
