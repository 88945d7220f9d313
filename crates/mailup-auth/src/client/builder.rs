//! [`MailUpClientBuilder`]: the configuration, the building blocks and their defaults.

use super::driver::Driver;
use super::*;

/// Builds a [`MailUpClient`]. Every default is replaceable.
///
/// The protocol settings (endpoints, redirect URI, skew, backoff, lifetimes) live in the
/// core's [`ClientConfigBuilder`], which this builder holds: the setters below that name one of
/// them only forward to it, and [`config`](Self::config) reaches all of them. The other
/// setters are the facade's own (store, transport, lease, bounds of a token operation).
///
/// ```no_run
/// use std::time::Duration;
/// use mailup_auth::{ClientSecret, MailUpClient, RateLimitRetry};
///
/// # async fn run() -> mailup_auth::Result<()> {
/// let client = MailUpClient::builder("my-client-id", ClientSecret::new("from-a-vault"))
///     .profile("customer-42")
///     .redirect_uri("https://app.example.com/mailup/callback") // web apps
///     .store_path("/var/lib/my-app/mailup") // or .store_url("redis://..."), .memory_store()
///     .refresh_skew(Duration::from_secs(120)) // refresh two minutes before expiry
///     .rate_limit_retry(RateLimitRetry {
///         max_retries: 2,
///         max_wait: Duration::from_secs(5),
///     })
///     // Tests and demos: the emulator or another server laid out like MailUp.
///     // .auth_base("http://127.0.0.1:8080")
///     .build()
///     .await?;
/// # let _ = client;
/// # Ok(())
/// # }
/// ```
pub struct MailUpClientBuilder {
    config: ClientConfigBuilder,
    profile: String,
    transport: Option<Arc<dyn Transport>>,
    store: StoreChoice,
    #[cfg(any(feature = "sled", feature = "redis"))]
    store_key: Option<crate::KeySource>,
    clock: Arc<dyn Clock>,
    entropy: Arc<dyn Entropy>,
    hooks: Vec<TokensHook>,
    remember_client: bool,
    max_refresh_attempts: u32,
    rejected_refresh_grace: Duration,
    rate_limit: Option<RateLimitRetry>,
    trusted_origins: Vec<String>,
    lease: LeaseChoice,
    token_timeout: Duration,
    max_response_bytes: usize,
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    allow_insecure_redis: bool,
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    redis_root_certificate: Option<Vec<u8>>,
}

enum LeaseChoice {
    /// The store's own when it is a sled directory opened by the builder; none otherwise.
    Default,
    Custom(Option<Arc<dyn RefreshLease>>),
}

enum StoreChoice {
    Default,
    #[cfg_attr(not(feature = "sled"), allow(dead_code))]
    Path(std::path::PathBuf),
    /// A `redis://`, `rediss://` or `redis+unix://` URL.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    Redis(String),
    Custom(Arc<dyn TokenStore>),
}

impl std::fmt::Debug for MailUpClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailUpClientBuilder")
            .field("config", &self.config)
            .field("profile", &self.profile)
            .finish_non_exhaustive()
    }
}

impl MailUpClientBuilder {
    pub(super) fn new(client_id: impl Into<String>, client_secret: ClientSecret) -> Self {
        Self {
            config: ClientConfig::builder(client_id, client_secret),
            profile: "default".into(),
            transport: None,
            store: StoreChoice::Default,
            #[cfg(any(feature = "sled", feature = "redis"))]
            store_key: None,
            clock: Arc::new(SystemClock),
            entropy: Arc::new(OsEntropy),
            hooks: Vec::new(),
            remember_client: false,
            max_refresh_attempts: 4,
            rejected_refresh_grace: Duration::from_millis(500),
            rate_limit: None,
            trusted_origins: Vec::new(),
            lease: LeaseChoice::Default,
            token_timeout: DEFAULT_TOKEN_OPERATION_TIMEOUT,
            max_response_bytes: mailup_auth_core::DEFAULT_API_RESPONSE_LIMIT,
            allow_insecure_redis: false,
            redis_root_certificate: None,
        }
    }

    /// The profile name the tokens are stored under (default `default`).
    pub fn profile(mut self, profile: impl Into<String>) -> Self {
        self.profile = profile.into();
        self
    }

    /// Changes the protocol settings through the core's [`ClientConfigBuilder`], for any of its
    /// setters (the ones below are shortcuts to the same builder):
    ///
    /// ```
    /// use std::time::Duration;
    /// use mailup_auth::{ClientSecret, MailUpClient};
    ///
    /// let builder = MailUpClient::builder("my-client-id", ClientSecret::new("s"))
    ///     .config(|config| config.default_expires_in(Duration::from_secs(900)));
    /// # let _ = builder;
    /// ```
    pub fn config(
        mut self,
        configure: impl FnOnce(ClientConfigBuilder) -> ClientConfigBuilder,
    ) -> Self {
        self.config = configure(self.config);
        self
    }

    /// The registered redirect URI (web-app flow): [`ClientConfigBuilder::redirect_uri`].
    pub fn redirect_uri(mut self, uri: impl Into<String>) -> Self {
        self.config = self.config.redirect_uri(uri);
        self
    }

    /// A server laid out like MailUp at another base URL (e.g. the emulator):
    /// [`ClientConfigBuilder::auth_base`]. The one exception to "the last call wins": a URL set
    /// with [`logon_url`](Self::logon_url), [`token_url`](Self::token_url),
    /// [`api_base`](Self::api_base) or [`endpoints`](Self::endpoints) wins over it whatever the
    /// order, so `.endpoints(..).auth_base(..)` keeps the endpoints.
    pub fn auth_base(mut self, base: impl Into<String>) -> Self {
        self.config = self.config.auth_base(base);
        self
    }

    /// Overrides the LogOn URL: [`ClientConfigBuilder::logon_url`].
    pub fn logon_url(mut self, url: impl Into<String>) -> Self {
        self.config = self.config.logon_url(url);
        self
    }

    /// Overrides the token URL: [`ClientConfigBuilder::token_url`].
    pub fn token_url(mut self, url: impl Into<String>) -> Self {
        self.config = self.config.token_url(url);
        self
    }

    /// Overrides the API base: [`ClientConfigBuilder::api_base`].
    pub fn api_base(mut self, url: impl Into<String>) -> Self {
        self.config = self.config.api_base(url);
        self
    }

    /// Sets all endpoints: [`ClientConfigBuilder::endpoints`].
    pub fn endpoints(mut self, endpoints: Endpoints) -> Self {
        self.config = self.config.endpoints(endpoints);
        self
    }

    /// How long before expiry a refresh becomes due (default 60 s; at most half of each token's
    /// lifetime, so short-lived tokens work with any skew). The current token keeps being
    /// served inside this margin while a refresh fails: [`ClientConfigBuilder::refresh_skew`].
    pub fn refresh_skew(mut self, skew: Duration) -> Self {
        self.config = self.config.refresh_skew(skew);
        self
    }

    /// The lifetime assumed when `expires_in` is missing (default 3600 s):
    /// [`ClientConfigBuilder::default_expires_in`].
    pub fn default_expires_in(mut self, lifetime: Duration) -> Self {
        self.config = self.config.default_expires_in(lifetime);
        self
    }

    /// The backoff after transient token-endpoint failures (default 1 s doubling to 60 s):
    /// [`ClientConfigBuilder::backoff`].
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.config = self.config.backoff(backoff);
        self
    }

    /// How many consecutive transient refresh failures one call tolerates before it returns
    /// [`ErrorKind::TokenEndpointUnavailable`] (default 4).
    pub fn max_refresh_attempts(mut self, attempts: u32) -> Self {
        self.max_refresh_attempts = attempts.max(1);
        self
    }

    /// How long to watch the store for another instance's rotation after our refresh token was
    /// rejected, before reporting re-authorization (default 500 ms).
    pub fn rejected_refresh_grace(mut self, wait: Duration) -> Self {
        self.rejected_refresh_grace = wait;
        self
    }

    /// The longest one token operation may take (a refresh with its retries, a code exchange,
    /// a password grant), however the token endpoint behaves: default 30 s. A refresh whose
    /// answer does not come in time counts as a failed attempt (the tokens are kept; a still
    /// valid access token is served). This bounds each token request too, on top of the
    /// transport's own timeouts. Taken as at least 1 ms and at most a day: a longer one
    /// (`Duration::MAX` for "no bound") is a day, which a deadline can still be computed from.
    pub fn token_operation_timeout(mut self, timeout: Duration) -> Self {
        self.token_timeout = timeout.clamp(Duration::from_millis(1), MAX_TOKEN_OPERATION_TIMEOUT);
        self
    }

    /// The largest API answer [`request`](MailUpClient::request) and the JSON helpers accept
    /// (default 32 MiB): a bigger one is a `ResponseTooLarge` transport error, read no further
    /// than the limit. Token endpoint answers have their own limit (64 KiB). A request passed
    /// to [`send`](MailUpClient::send) carries its own
    /// ([`HttpRequest::with_response_limit`]).
    pub fn max_response_bytes(mut self, limit: usize) -> Self {
        self.max_response_bytes = limit;
        self
    }

    /// How long a started authorization may be completed in (default 10 minutes):
    /// [`ClientConfigBuilder::authorization_timeout`].
    pub fn authorization_timeout(mut self, timeout: Duration) -> Self {
        self.config = self.config.authorization_timeout(timeout);
        self
    }

    /// Accepts plain `http` endpoints, redirect URIs and trusted origins on hosts that are not
    /// loopback addresses.
    ///
    /// **Insecure**: the client secret, tokens, passwords and codes then travel unencrypted.
    /// Without it such a URL is [`ErrorKind::Config`] at [`build`](Self::build), before any I/O.
    /// [`ClientConfigBuilder::allow_insecure_http`].
    pub fn allow_insecure_http(mut self) -> Self {
        self.config = self.config.allow_insecure_http();
        self
    }

    /// Coordinates refreshes with other processes sharing the store through this lease: a
    /// refresh is sent only while holding it, and a process that waited for it adopts the
    /// tokens the holder saved. The default is the store directory's file lock
    /// ([`SledRefreshLease`](mailup_auth_store_sled::SledRefreshLease)) when the builder opens a
    /// sled store itself, and none for a store passed with [`store`](Self::store) (pass
    /// `None` to turn the default off).
    pub fn refresh_lease(mut self, lease: Option<Arc<dyn RefreshLease>>) -> Self {
        self.lease = LeaseChoice::Custom(lease);
        self
    }

    /// Opt-in waiting on HTTP 429.
    pub fn rate_limit_retry(mut self, policy: RateLimitRetry) -> Self {
        self.rate_limit = Some(policy);
        self
    }

    /// Also sends the access token to this origin (scheme, host and port of the URL given),
    /// besides the API base's. Use it for another MailUp API on another host.
    pub fn trust_origin(mut self, url: impl Into<String>) -> Self {
        self.trusted_origins.push(url.into());
        self
    }

    /// Uses this transport instead of the default reqwest one.
    ///
    /// Without it, each [`build`](Self::build) creates its own `reqwest::Client` (its own
    /// connection pool). Standalone clients should share one: create it once
    /// (`Arc::new(ReqwestTransport::new()?)`) and pass the same `Arc` to every builder.
    /// [`MailUpAccounts`](crate::MailUpAccounts) does this for all its accounts by itself.
    pub fn transport(mut self, transport: Arc<dyn Transport>) -> Self {
        self.transport = Some(transport);
        self
    }

    /// Uses this token store. No refresh lease comes with it: pass the store's own with
    /// [`refresh_lease`](Self::refresh_lease) when other processes share the store.
    ///
    /// A sled store opened yourself, here to have its saves wait for the disk on the calling
    /// thread (a command-line tool or single-purpose worker on a local disk; see
    /// [`WriteThread`](mailup_auth_store_sled::WriteThread)), keeps the cross-process lease
    /// that [`store_path`](Self::store_path) would give it:
    ///
    /// ```no_run
    /// # #[cfg(feature = "sled")]
    /// # async fn run() -> mailup_auth::Result<()> {
    /// use std::sync::Arc;
    /// use mailup_auth::{ClientSecret, MailUpClient, SledTokenStore, WriteThread};
    ///
    /// let dir = "/var/lib/my-tool/mailup";
    /// // `open` is synchronous: at startup, or in `spawn_blocking`.
    /// let store = SledTokenStore::open(dir)?.with_write_thread(WriteThread::CallingThread);
    /// let client = MailUpClient::builder("my-client-id", ClientSecret::new("from-a-vault"))
    ///     .refresh_lease(Some(Arc::new(store.refresh_lease())))
    ///     .store(Arc::new(store))
    ///     .build()
    ///     .await?;
    /// # let _ = client;
    /// # Ok(())
    /// # }
    /// ```
    pub fn store(mut self, store: Arc<dyn TokenStore>) -> Self {
        self.store = StoreChoice::Custom(store);
        self
    }

    /// Uses an in-memory store (nothing survives the process).
    pub fn memory_store(self) -> Self {
        self.store(Arc::new(mailup_auth_core::MemoryTokenStore::new()))
    }

    /// Uses a sled store in this directory.
    #[cfg(feature = "sled")]
    pub fn store_path(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.store = StoreChoice::Path(path.into());
        self
    }

    /// The store at `location`: a `redis://`, `rediss://` or `redis+unix://` URL selects the
    /// Redis store (feature `redis`) with its distributed refresh lease, so processes on any
    /// number of hosts share the profile and send one refresh per expiry; anything else is a
    /// sled directory, as with [`store_path`](Self::store_path).
    ///
    /// Plain `redis://` is accepted for loopback hosts only (refresh tokens travel to Redis):
    /// use `rediss://` (with [`redis_root_certificate`](Self::redis_root_certificate) for a
    /// private CA), or [`allow_insecure_redis`](Self::allow_insecure_redis). The URL's user
    /// and password are sent with `AUTH` and never appear in errors or logs. With
    /// [`store_key`](Self::store_key) the records are sealed in Redis as in a sled store. The
    /// connection is made on first use; an unreachable server, a refused password or an
    /// untrusted certificate is then a [`StoreError::Unavailable`] (a still-valid access token
    /// keeps being served), a key that does not fit a [`StoreError::Key`]. For a key
    /// prefix or other timeouts, open a `RedisTokenStore` yourself and pass it with
    /// [`store`](Self::store) and its `refresh_lease()` with
    /// [`refresh_lease`](Self::refresh_lease).
    pub fn store_url(mut self, location: impl Into<String>) -> Self {
        let location = location.into();
        self.store = if is_redis_url(&location) {
            StoreChoice::Redis(location)
        } else {
            StoreChoice::Path(location.into())
        };
        self
    }

    /// Accepts a plain `redis://` URL in [`store_url`](Self::store_url) to a host that is not
    /// a loopback address.
    ///
    /// **Insecure**: refresh tokens, access tokens and (with
    /// [`remember_client`](Self::remember_client)) the client secret then cross the network
    /// unencrypted. Without it such a URL is [`StoreError::Insecure`] at
    /// [`build`](Self::build), before any I/O.
    pub fn allow_insecure_redis(mut self) -> Self {
        self.allow_insecure_redis = true;
        self
    }

    /// Trusts the CA certificate(s) in `pem` (PEM) for a `rediss://` URL given to
    /// [`store_url`](Self::store_url), instead of the system's roots: for a private Redis whose
    /// certificate a private CA signed. A PEM without a certificate, or a URL without TLS, is
    /// [`StoreError::Unavailable`] at [`build`](Self::build).
    pub fn redis_root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.redis_root_certificate = Some(pem.into());
        self
    }

    /// Encrypts the store's records at rest (XChaCha20-Poly1305) with the key from `key`: a
    /// key file kept outside the store (protects copies, backups, synced folders, and for
    /// Redis its persistence files and whoever reads its keys) or, with the `keyring` feature
    /// of `mailup-auth-seal`, the OS keychain. Applies to a sled store
    /// ([`store_path`](Self::store_path), the default store) and to a Redis
    /// [`store_url`](Self::store_url) alike. A new store creates the key; an existing one must
    /// be opened with its key, or `build` (for Redis: the first use) fails with
    /// `StoreError::Key` naming what is missing. Clients in one process that share a sled
    /// directory share its open store, and each one's key is checked against it.
    #[cfg(any(feature = "sled", feature = "redis"))]
    pub fn store_key(mut self, key: crate::KeySource) -> Self {
        self.store_key = Some(key);
        self
    }

    /// Uses this clock (tests).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Uses this randomness source (tests).
    pub fn entropy(mut self, entropy: Arc<dyn Entropy>) -> Self {
        self.entropy = entropy;
        self
    }

    /// Calls `hook` whenever the tokens change (after they are persisted).
    pub fn on_tokens_changed(
        mut self,
        hook: impl Fn(&TokenChange<'_>) + Send + Sync + 'static,
    ) -> Self {
        self.hooks.push(Arc::new(hook));
        self
    }

    /// Stores the client id, secret and endpoints with the profile, so a later run can rebuild
    /// the client from the profile alone (what the CLI does). Off by default.
    pub fn remember_client(mut self, remember: bool) -> Self {
        self.remember_client = remember;
        self
    }

    /// Builds the client and loads the profile's stored tokens, if any.
    pub async fn build(self) -> Result<MailUpClient> {
        let (settings, profile) = self.into_settings()?;
        MailUpClient::load(Arc::new(settings), profile).await
    }

    /// Validates the configuration and opens the building blocks (transport, store, lease),
    /// for [`build`](Self::build) and for [`MailUpAccounts`](crate::MailUpAccounts).
    pub(crate) fn into_settings(self) -> Result<(ClientSettings, String)> {
        let config = self.config.build()?;
        let trusted_origins = self
            .trusted_origins
            .iter()
            .map(|url| config.check_url("trusted origin", url).map(|u| u.origin()))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        mailup_auth_core::validate_profile_name(&self.profile)?;
        let transport = match self.transport {
            Some(transport) => transport,
            None => default_transport()?,
        };
        let (store, default_lease): (Arc<dyn TokenStore>, Option<Arc<dyn RefreshLease>>) =
            match self.store {
                StoreChoice::Custom(store) => (store, None),
                #[cfg(feature = "sled")]
                StoreChoice::Default => default_store(self.store_key.as_ref())?,
                #[cfg(feature = "sled")]
                StoreChoice::Path(path) => open_sled(path, self.store_key.as_ref())?,
                #[cfg(not(feature = "sled"))]
                StoreChoice::Default => default_store()?,
                #[cfg(not(feature = "sled"))]
                StoreChoice::Path(path) => open_sled(path)?,
                #[cfg(feature = "redis")]
                StoreChoice::Redis(url) => open_redis(
                    &url,
                    self.allow_insecure_redis,
                    self.redis_root_certificate,
                    self.store_key,
                )?,
                #[cfg(not(feature = "redis"))]
                StoreChoice::Redis(_) => open_redis()?,
            };
        let lease = match self.lease {
            LeaseChoice::Default => default_lease,
            LeaseChoice::Custom(lease) => lease,
        };
        let settings = ClientSettings {
            config,
            transport,
            store,
            lease,
            clock: self.clock,
            entropy: self.entropy,
            hooks: self.hooks,
            remember_client: self.remember_client,
            max_refresh_attempts: self.max_refresh_attempts,
            rejected_refresh_grace: self.rejected_refresh_grace,
            rate_limit: self.rate_limit,
            trusted_origins,
            token_timeout: self.token_timeout,
            max_response_bytes: self.max_response_bytes,
        };
        Ok((settings, self.profile))
    }
}

impl MailUpClient {
    /// A client for `profile` over shared settings, with the profile's stored tokens loaded.
    pub(crate) async fn load(settings: Arc<ClientSettings>, profile: String) -> Result<Self> {
        mailup_auth_core::validate_profile_name(&profile)?;
        let client = MailUpClient {
            inner: Arc::new(Inner {
                profile,
                state: Mutex::new(ProfileState {
                    session: Session::new(settings.config.clone()),
                    version: None,
                    record: ProfileRecord::default(),
                    unsaved: None,
                }),
                settings,
                cache: ArcSwapOption::empty(),
                copies: ThreadCopies::new(),
                refresh_flight: Arc::new(tokio::sync::Mutex::new(())),
                flight_ended: Arc::new(tokio::sync::Notify::new()),
                scheduler: Mutex::new(Weak::new()),
                standalone: Mutex::new(Weak::new()),
            }),
        };
        // Nobody else can hold the new client's flight: this takes it at once.
        let driver = Driver::new(client.clone(), client.lock_refresh_flight().await);
        driver.sync_from_store().await?;
        drop(driver);
        let now = client.inner.settings.clock.now();
        {
            let state = client.lock_state();
            if let Some(tokens) = state.session.tokens() {
                let usable = state.session.reauthorization_reason().is_none();
                if usable && tokens.is_fresh(now, client.inner.settings.skew()) {
                    client.publish(&state, &tokens.access_token, now);
                }
            }
        }
        Ok(client)
    }
}

#[cfg(feature = "reqwest")]
pub(super) fn default_transport() -> Result<Arc<dyn Transport>> {
    let transport = mailup_auth_http::ReqwestTransport::new()
        .map_err(|_| ErrorKind::Missing("the HTTP client could not be initialised"))?;
    Ok(Arc::new(transport))
}

#[cfg(not(feature = "reqwest"))]
pub(super) fn default_transport() -> Result<Arc<dyn Transport>> {
    Err(
        ErrorKind::Missing("no transport: enable the `reqwest` feature or call `transport(..)`")
            .into(),
    )
}

/// The platform data directory the default store lives in
/// (e.g. `~/.local/share/mailup-auth/tokens` on Linux).
#[cfg(feature = "sled")]
pub fn default_store_dir() -> Option<std::path::PathBuf> {
    directories::ProjectDirs::from("com", "mailup-auth", "mailup-auth")
        .map(|dirs| dirs.data_dir().join("tokens"))
}

/// A sled store and its directory's refresh lease, or a memory-less error.
type StoreAndLease = (Arc<dyn TokenStore>, Option<Arc<dyn RefreshLease>>);

#[cfg(feature = "sled")]
pub(super) fn default_store(
    key: Option<&mailup_auth_store_sled::KeySource>,
) -> Result<StoreAndLease> {
    let dir = default_store_dir().ok_or(ErrorKind::Missing(
        "no home directory for the default token store",
    ))?;
    open_sled(dir, key)
}

#[cfg(not(feature = "sled"))]
pub(super) fn default_store() -> Result<StoreAndLease> {
    Err(ErrorKind::Missing(
        "no token store: enable the `sled` feature or call `store(..)` / `memory_store()`",
    )
    .into())
}

/// Opens the sled store at `path`, or shares the one this process already has open there:
/// sled allows one opener per database, and several clients (one per profile, say) commonly
/// use the same directory.
#[cfg(feature = "sled")]
pub(super) fn open_sled(
    path: std::path::PathBuf,
    encryption: Option<&mailup_auth_store_sled::KeySource>,
) -> Result<StoreAndLease> {
    use std::collections::HashMap;
    use std::sync::OnceLock;

    use mailup_auth_store_sled::SledTokenStore;

    static OPEN: OnceLock<Mutex<HashMap<std::path::PathBuf, Weak<SledTokenStore>>>> =
        OnceLock::new();
    // One key per directory, however it is spelled (relative, `..`, symlinks).
    let mut dir = std::fs::DirBuilder::new();
    dir.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut dir, 0o700);
    dir.create(&path)
        .map_err(|e| StoreError::io(path.display().to_string(), e))?;
    let key = std::fs::canonicalize(&path).unwrap_or(path);
    let mut open = OPEN
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    open.retain(|_, store| store.strong_count() > 0);
    let lease: Arc<dyn RefreshLease> =
        Arc::new(mailup_auth_store_sled::SledRefreshLease::new(&key));
    if let Some(store) = open.get(&key).and_then(Weak::upgrade) {
        // Shared, but only with the key it was opened with: a client that asks for
        // encryption must not get a plain store, nor a wrong key an encrypted one.
        store.check_key(encryption)?;
        return Ok((store, Some(lease)));
    }
    let store = Arc::new(SledTokenStore::open_with(&key, encryption)?);
    open.insert(key, Arc::downgrade(&store));
    Ok((store, Some(lease)))
}

#[cfg(not(feature = "sled"))]
pub(super) fn open_sled(_path: std::path::PathBuf) -> Result<StoreAndLease> {
    Err(ErrorKind::Missing("no sled store: enable the `sled` feature").into())
}

/// Whether a store location names a Redis server rather than a sled directory (the same
/// schemes as `mailup_auth_store_redis::is_redis_url`, which needs the `redis` feature).
pub(crate) fn is_redis_url(location: &str) -> bool {
    let lower = location.trim_start().to_ascii_lowercase();
    ["redis://", "rediss://", "redis+unix://", "unix://"]
        .iter()
        .any(|scheme| lower.starts_with(scheme))
}

/// The Redis store at `url` and its distributed refresh lease. Connects on first use.
#[cfg(feature = "redis")]
pub(super) fn open_redis(
    url: &str,
    allow_insecure: bool,
    root_certificate: Option<Vec<u8>>,
    key: Option<crate::KeySource>,
) -> Result<StoreAndLease> {
    let mut builder =
        mailup_auth_store_redis::RedisTokenStore::builder(url).encryption_key_opt(key);
    if allow_insecure {
        builder = builder.allow_insecure_redis();
    }
    if let Some(pem) = root_certificate {
        builder = builder.tls_root_certificate(pem);
    }
    let store = builder.open_lazy()?;
    let lease: Arc<dyn RefreshLease> = Arc::new(store.refresh_lease());
    Ok((Arc::new(store), Some(lease)))
}

#[cfg(not(feature = "redis"))]
pub(super) fn open_redis() -> Result<StoreAndLease> {
    Err(ErrorKind::Missing("a redis:// store needs the `redis` feature of mailup-auth").into())
}
