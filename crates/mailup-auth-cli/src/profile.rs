//! Profile resolution: which store, which client registration, which endpoints.
//!
//! Flags and environment variables come first; whatever they leave open is taken from what the
//! profile remembered at login (client id, secret, endpoints, redirect URI), so that after one
//! `login` every other command needs only the profile name.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mailup_auth::core::internal::parse_http_url;
use mailup_auth::core::KeyProblem;
use mailup_auth::core::{StoreError, StoredClient};
use mailup_auth::{
    Backoff, ClientSecret, Endpoints, MailUpClient, MailUpClientBuilder, ProfileRecord,
    RedisTokenStore, RefreshLease, TokenStore, Url,
};

use zeroize::Zeroizing;

use crate::cli::{GlobalOptions, StoreKeyOption};
use crate::failure::Failure;
use crate::store::OnDemandSledStore;
use mailup_auth::SledRefreshLease;
use mailup_auth_store_sled::KeySource;

/// Everything a command needs: the options, the store and the profile's record.
pub(crate) struct Context {
    /// The global options as given.
    pub(crate) global: GlobalOptions,
    /// Where the store is, for messages: a directory, or a Redis URL without its password.
    pub(crate) store_location: String,
    /// The token store. A sled store is opened for each operation only, so this process never
    /// holds it during an API call, a token request or the browser wait; a Redis store is
    /// shared by every process and host that uses the same server.
    pub(crate) store: Arc<dyn TokenStore>,
    /// The refresh lease that goes with the store: a lock file per profile beside a sled
    /// store, the Redis lease for a Redis store. One refresh per expiry across processes.
    lease: Arc<dyn RefreshLease>,
    /// The profile's record when the command started, if any.
    pub(crate) record: Option<ProfileRecord>,
    /// Why the profile's record could not be read, when it is corrupt (then `record` is
    /// `None`): `login` and `logout` remove it, other commands report it.
    pub(crate) corrupt: Option<StoreError>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("global", &self.global)
            .field("store_location", &self.store_location)
            .field("record", &self.record)
            .field("corrupt", &self.corrupt)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// Loads the profile's record (waiting briefly while other `mailup-auth` processes use the
    /// store).
    pub(crate) async fn open(global: GlobalOptions) -> Result<Self, Failure> {
        let (store, lease, store_location) = open_store(&global).await?;
        Self::load(global, store, lease, store_location).await
    }

    /// The same store, another profile: for the commands that go over every profile.
    pub(crate) async fn with_profile(&self, profile: &str) -> Result<Self, Failure> {
        let mut global = self.global.clone();
        global.profile = profile.to_owned();
        Self::load(
            global,
            self.store.clone(),
            self.lease.clone(),
            self.store_location.clone(),
        )
        .await
    }

    /// The names of the profiles in the store, sorted.
    pub(crate) async fn profile_names(&self) -> Result<Vec<String>, Failure> {
        let mut names = self.store.profiles().await.map_err(store_failure)?;
        names.sort();
        Ok(names)
    }

    async fn load(
        global: GlobalOptions,
        store: Arc<dyn TokenStore>,
        lease: Arc<dyn RefreshLease>,
        store_location: String,
    ) -> Result<Self, Failure> {
        // A corrupt record must not stop the commands that recover from it.
        let (record, corrupt) = match store.load(&global.profile).await {
            Ok(loaded) => (loaded.map(|versioned| versioned.value), None),
            Err(error @ StoreError::Corrupt { .. }) => (None, Some(error)),
            Err(error) => return Err(store_failure(error)),
        };
        Ok(Self {
            global,
            store_location,
            store,
            lease,
            record,
            corrupt,
        })
    }

    /// Refuses endpoints given now (flags or environment) that differ from the ones the
    /// profile remembered at login: they would receive the stored refresh token, the client
    /// secret or the access token. Only `login` may rebind a profile, so every other command
    /// calls this. A profile that remembered no endpoints accepts any.
    pub(crate) fn check_pinned_endpoints(&self) -> Result<(), Failure> {
        match self.stored_client() {
            Some(stored) => pinned_endpoints(&self.global, stored),
            None => Ok(()),
        }
    }

    /// The client registration remembered with the profile.
    pub(crate) fn stored_client(&self) -> Option<&StoredClient> {
        self.record.as_ref().and_then(|r| r.client.as_ref())
    }

    /// Whether a client id and secret are known (from flags, environment or the profile).
    pub(crate) fn has_client(&self) -> bool {
        self.client_credentials().is_some()
    }

    fn client_credentials(&self) -> Option<(String, ClientSecret)> {
        let stored = self.stored_client();
        let id = self
            .global
            .client_id
            .clone()
            .or_else(|| stored.map(|c| c.client_id.clone()))?;
        let secret = match &self.global.client_secret {
            Some(secret) => ClientSecret::new(secret.as_str()),
            // The stored secret belongs to the stored client id only.
            None => stored
                .filter(|c| c.client_id == id)
                .and_then(|c| c.client_secret.clone())?,
        };
        Some((id, secret))
    }

    /// The redirect URI: the flag or environment, else the remembered one.
    pub(crate) fn redirect_uri(&self) -> Option<String> {
        self.global
            .redirect_uri
            .clone()
            .or_else(|| self.stored_client().and_then(|c| c.redirect_uri.clone()))
    }

    /// A builder for the profile's client. `missing` is the failure to report when no client
    /// id or secret is known. `remember` stores this invocation's client settings with the
    /// profile when tokens are saved: only `login` does (other commands refuse endpoints that
    /// differ from the remembered ones, see `pinning`).
    pub(crate) fn builder(
        &self,
        missing: Failure,
        remember: bool,
    ) -> Result<MailUpClientBuilder, Failure> {
        let (client_id, client_secret) = self.client_credentials().ok_or(missing)?;
        let global = &self.global;
        let mut builder = MailUpClient::builder(client_id, client_secret)
            .profile(global.profile.clone())
            .store(self.store.clone())
            // One refresh per expiry across processes: the others wait and use the saved
            // tokens.
            .refresh_lease(Some(self.lease.clone()))
            .remember_client(remember)
            // A person is waiting: fail over to "unavailable" within a few seconds.
            .backoff(Backoff {
                initial: Duration::from_millis(500),
                max: Duration::from_secs(2),
            })
            .max_refresh_attempts(3)
            .refresh_skew(Duration::from_secs(global.refresh_skew));
        if global.http_timeout != 30 {
            let timeout = Duration::from_secs(global.http_timeout);
            let transport = mailup_auth::ReqwestTransport::builder()
                .timeout(timeout)
                .build()
                .map_err(|e| Failure::new(2, format!("cannot build the HTTP client: {e}")))?;
            builder = builder
                .transport(Arc::new(transport))
                .token_operation_timeout(timeout);
        }
        if let Some(base) = &global.auth_base {
            builder = builder.auth_base(base.clone());
        }
        if let Some(url) = &global.logon_url {
            builder = builder.logon_url(url.clone());
        }
        if let Some(url) = &global.token_url {
            builder = builder.token_url(url.clone());
        }
        if let Some(url) = &global.api_base {
            builder = builder.api_base(url.clone());
        }
        // Endpoints not given now come from the profile (unless a new auth base was given,
        // which lays out all of them).
        if global.auth_base.is_none() {
            if let Some(stored) = self.stored_client() {
                if global.logon_url.is_none() {
                    if let Some(url) = &stored.logon_url {
                        builder = builder.logon_url(url.clone());
                    }
                }
                if global.token_url.is_none() {
                    if let Some(url) = &stored.token_url {
                        builder = builder.token_url(url.clone());
                    }
                }
                if global.api_base.is_none() {
                    if let Some(url) = &stored.api_base {
                        builder = builder.api_base(url.clone());
                    }
                }
            }
        }
        if let Some(uri) = self.redirect_uri() {
            builder = builder.redirect_uri(uri);
        }
        Ok(builder)
    }

    /// The profile's client; "not logged in" (exit 3) when no client registration is known.
    pub(crate) async fn client(&self) -> Result<MailUpClient, Failure> {
        let builder = self.builder(self.not_logged_in(), false)?;
        Ok(builder.build().await?)
    }

    /// The failure for a profile that never logged in.
    pub(crate) fn not_logged_in(&self) -> Failure {
        Failure::reauthorize(format!(
            "profile `{}` is not logged in (run `mailup-auth login --client-id ID` with \
             MAILUP_CLIENT_SECRET set)",
            self.global.profile
        ))
    }
}

/// Opens the store the global options name (a sled directory, opened per operation, or a
/// Redis URL) with its refresh lease, and says where it is (never with a password).
async fn open_store(
    global: &GlobalOptions,
) -> Result<(Arc<dyn TokenStore>, Arc<dyn RefreshLease>, String), Failure> {
    let redis_url = global
        .store
        .as_deref()
        .and_then(Path::to_str)
        .filter(|location| mailup_auth_store_redis::is_redis_url(location))
        .map(str::to_owned);
    let (store, lease, store_location): (Arc<dyn TokenStore>, Arc<dyn RefreshLease>, String) =
        match redis_url {
            Some(url) => {
                let builder = RedisTokenStore::builder(url.as_str());
                // The keychain entry of a Redis store is named by its location (no
                // password in it), as a sled store's is by its directory.
                let account = builder.location();
                let mut builder = builder.encryption_key_opt(key_source(global, account)?);
                if let Some(ca) = store_ca(global)? {
                    builder = builder.tls_root_certificate(ca);
                }
                let store = builder.connect().await.map_err(store_failure)?;
                let lease = Arc::new(store.refresh_lease());
                let location = store.location().to_owned();
                (Arc::new(store), lease, location)
            }
            None => {
                let store_dir = match &global.store {
                    Some(dir) => dir.clone(),
                    None => mailup_auth::default_store_dir().ok_or_else(|| {
                        Failure::usage(
                            "no home directory for the default token store: pass --store DIR",
                        )
                    })?,
                };
                let absolute_dir = std::path::absolute(&store_dir)
                    .unwrap_or_else(|_| store_dir.clone())
                    .display()
                    .to_string();
                let key = key_source(global, absolute_dir)?;
                // The store is not held between operations, so parallel commands
                // coordinate their refreshes through a lock file per profile.
                let lease = Arc::new(SledRefreshLease::new(&store_dir));
                let store = Arc::new(OnDemandSledStore::new(store_dir.clone(), key));
                (store, lease, store_dir.display().to_string())
            }
        };
    Ok((store, lease, store_location))
}

/// The longest client secret file read: MailUp's secrets are a few dozen characters.
const MAX_SECRET_FILE: u64 = 64 * 1024;

/// `--client-secret-file PATH` / `MAILUP_CLIENT_SECRET_FILE`: reads the secret (its first
/// line, without the line ending) from the file, or from standard input for `-`, into memory
/// that is wiped, and puts it where `--client-secret` would be. Errors name the file, never
/// its content.
pub(crate) fn read_client_secret_file(global: &mut GlobalOptions) -> Result<(), Failure> {
    use std::io::Read as _;
    let Some(path) = global.client_secret_file.clone() else {
        return Ok(());
    };
    let from_stdin = path.as_os_str() == "-";
    let source = if from_stdin {
        "standard input".to_owned()
    } else {
        path.display().to_string()
    };
    let unreadable = |why: String| {
        Failure::usage(format!(
            "--client-secret-file / MAILUP_CLIENT_SECRET_FILE: cannot read the client secret \
             from {source}: {why}"
        ))
    };
    let reader: Box<dyn std::io::Read> = if from_stdin {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(&path).map_err(|e| unreadable(e.to_string()))?)
    };
    // Reserved up front so that growing the buffer leaves no copy of the secret behind.
    let mut bytes = Zeroizing::new(Vec::with_capacity(MAX_SECRET_FILE as usize + 1));
    reader
        .take(MAX_SECRET_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| unreadable(e.to_string()))?;
    if bytes.len() as u64 > MAX_SECRET_FILE {
        return Err(unreadable("it is too large for a client secret".into()));
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| unreadable("it is not UTF-8".into()))?;
    let secret = text.lines().next().unwrap_or("");
    if secret.trim().is_empty() {
        return Err(unreadable("it is empty".into()));
    }
    global.client_secret = Some(Zeroizing::new(secret.to_owned()));
    Ok(())
}

/// The CA certificate to trust for a `rediss://` store, from `--store-ca` / `MAILUP_STORE_CA`.
fn store_ca(global: &GlobalOptions) -> Result<Option<Vec<u8>>, Failure> {
    const MAX_CA_FILE: u64 = 1024 * 1024;
    let Some(path) = &global.store_ca else {
        return Ok(None);
    };
    let unreadable = |why: String| {
        Failure::usage(format!(
            "--store-ca / MAILUP_STORE_CA: cannot read {}: {why}",
            path.display()
        ))
    };
    let size = std::fs::metadata(path)
        .map_err(|error| unreadable(error.to_string()))?
        .len();
    if size > MAX_CA_FILE {
        return Err(unreadable("it is too large for a CA certificate".into()));
    }
    std::fs::read(path)
        .map(Some)
        .map_err(|error| unreadable(error.to_string()))
}

/// Where the store's encryption key is kept, from `--store-key` / `MAILUP_STORE_KEY`.
/// `keychain_account` names the store in the keychain: its absolute directory, or a Redis
/// store's location (without credentials).
pub(crate) fn key_source(
    global: &GlobalOptions,
    keychain_account: String,
) -> Result<Option<KeySource>, Failure> {
    let absolute = |path: &Path| std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    match global.store_key().map_err(Failure::usage)? {
        None => Ok(None),
        // Absolute, so the store's "created with the key file ..." names it wherever the
        // command runs.
        Some(StoreKeyOption::File(path)) => Ok(Some(KeySource::File(absolute(&path)))),
        #[cfg(feature = "keyring")]
        Some(StoreKeyOption::Keychain) => Ok(Some(KeySource::Keychain {
            service: "mailup-auth".into(),
            account: keychain_account,
        })),
        #[cfg(not(feature = "keyring"))]
        Some(StoreKeyOption::Keychain) => {
            let _ = keychain_account;
            Err(Failure::usage(
                "--store-key keychain: this mailup-auth was built without keychain support \
                 (the `keyring` feature); use --store-key file:PATH",
            ))
        }
    }
}

/// Compares the endpoints given in `global` with the `stored` ones, as parsed URLs (an auth
/// base through the endpoints it lays out). Values that do not parse are left to the client
/// builder, which reports them as configuration errors.
fn pinned_endpoints(global: &GlobalOptions, stored: &StoredClient) -> Result<(), Failure> {
    let laid_out = global
        .auth_base
        .as_deref()
        .and_then(|base| Endpoints::from_auth_base(base).ok());
    let given = |explicit: &Option<String>, option: &'static str, from_base: Option<&Url>| match (
        explicit, from_base,
    ) {
        (Some(url), _) => parse_http_url("url", url).ok().map(|url| (option, url)),
        (None, Some(url)) => Some(("--auth-base / MAILUP_AUTH_BASE", url.clone())),
        (None, None) => None,
    };
    let checks = [
        (
            given(
                &global.logon_url,
                "--logon-url / MAILUP_LOGON_URL",
                laid_out.as_ref().map(|e| &e.logon),
            ),
            "LogOn URL",
            &stored.logon_url,
        ),
        (
            given(
                &global.token_url,
                "--token-url / MAILUP_TOKEN_URL",
                laid_out.as_ref().map(|e| &e.token),
            ),
            "token URL",
            &stored.token_url,
        ),
        (
            given(
                &global.api_base,
                "--api-base / MAILUP_API_BASE",
                laid_out.as_ref().map(|e| &e.api_base),
            ),
            "API base",
            &stored.api_base,
        ),
    ];
    for (given, what, stored) in checks {
        let (Some((option, given)), Some(stored_text)) = (given, stored) else {
            continue;
        };
        let Ok(stored) = parse_http_url("url", stored_text) else {
            continue;
        };
        if !same_endpoint(what, &given, &stored) {
            return Err(Failure::usage(format!(
                "{option} gives the {what} {given}, but profile `{}` was logged in with \
                 {stored}: a profile's endpoints are fixed at login, so its tokens and client \
                 secret go nowhere else. Drop the option (or unset the variable), or run \
                 `mailup-auth login` with it to rebind the profile",
                global.profile
            )));
        }
    }
    Ok(())
}

/// Whether two parsed endpoint URLs lead to the same place. API paths are joined to the API
/// base after trimming its trailing slashes, so `.../ConsoleService.svc/` and
/// `.../ConsoleService.svc` are one base; the LogOn and token URLs are used as they are.
fn same_endpoint(what: &str, given: &Url, stored: &Url) -> bool {
    if what != "API base" {
        return given == stored;
    }
    let trimmed = |url: &Url| {
        let mut url = url.clone();
        let path = url.path().trim_end_matches('/').to_owned();
        url.set_path(&path);
        url
    };
    trimmed(given) == trimmed(stored)
}

/// A store failure as the CLI reports it.
pub(crate) fn store_failure(error: StoreError) -> Failure {
    match error {
        StoreError::InvalidProfile(_) | StoreError::Insecure { .. } => {
            Failure::usage(error.to_string())
        }
        StoreError::Locked { path, .. } => Failure::local(format!(
            "the token store at {path} stayed in use by other mailup-auth commands for {} s; \
             try again",
            crate::store::LOCK_WAIT.as_secs()
        )),
        StoreError::Key { ref problem, .. } => {
            let hint = match problem {
                KeyProblem::Missing { .. } | KeyProblem::Wrong { .. } => {
                    "; pass --store-key (or set MAILUP_STORE_KEY) with the key it was created with"
                }
                KeyProblem::NotEncrypted { .. } => {
                    "; drop --store-key / MAILUP_STORE_KEY for this store"
                }
                KeyProblem::NotFound { .. } => {
                    "; restore that key (a key is made only for a new store)"
                }
                _ => "",
            };
            Failure::usage(format!("{error}{hint}"))
        }
        error => Failure::local(crate::failure::store_message(&error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    fn global(args: &[&str]) -> GlobalOptions {
        let mut argv = vec!["mailup-auth"];
        argv.extend_from_slice(args);
        argv.push("status");
        crate::cli::Cli::try_parse_from(argv).unwrap().global
    }

    fn stored(base: &str) -> StoredClient {
        let endpoints = Endpoints::from_auth_base(base).unwrap();
        StoredClient {
            client_id: "id".into(),
            logon_url: Some(endpoints.logon.to_string()),
            token_url: Some(endpoints.token.to_string()),
            api_base: Some(endpoints.api_base.to_string()),
            ..StoredClient::default()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_refresh_skew_reaches_the_client() {
        let dir = tempfile::tempdir().unwrap();
        for (args, skew) in [
            (&[][..], 60),
            (&["--refresh-skew", "0"], 0),
            (&["--refresh-skew", "900"], 900),
        ] {
            let mut all = vec!["--client-id", "id", "--client-secret", "secret"];
            all.extend_from_slice(args);
            let context = Context {
                global: global(&all),
                store_location: dir.path().display().to_string(),
                store: Arc::new(OnDemandSledStore::new(dir.path(), None)),
                lease: Arc::new(SledRefreshLease::new(dir.path())),
                record: None,
                corrupt: None,
            };
            let client = context
                .builder(Failure::usage("no client"), false)
                .unwrap()
                .build()
                .await
                .unwrap();
            assert_eq!(client.config().refresh_skew(), Duration::from_secs(skew));
        }
    }

    #[test]
    fn endpoints_equal_after_parsing_are_accepted() {
        let stored = stored("http://127.0.0.1:9");
        for args in [
            &[][..],
            &["--auth-base", "http://127.0.0.1:9/"],
            &["--auth-base", "HTTP://127.0.0.1:9"],
            &[
                "--token-url",
                "http://127.0.0.1:9/Authorization/OAuth/Token",
            ],
            &[
                "--api-base",
                "http://127.0.0.1:9/API/v1.1/Rest/ConsoleService.svc",
            ],
        ] {
            assert_eq!(pinned_endpoints(&global(args), &stored), Ok(()), "{args:?}");
        }
        // Nothing remembered: anything goes.
        let bare = StoredClient::default();
        assert_eq!(
            pinned_endpoints(&global(&["--auth-base", "http://other"]), &bare),
            Ok(())
        );
    }

    #[test]
    fn other_endpoints_are_refused_naming_the_stored_one() {
        let stored = stored("http://127.0.0.1:9");
        for args in [
            &["--auth-base", "http://127.0.0.1:10"][..],
            &["--logon-url", "http://other/LogOn"],
            &["--token-url", "http://other/Token"],
            &["--api-base", "http://127.0.0.1:9/API/v2"],
            // An explicit token URL wins over the auth base, and is still compared.
            &[
                "--auth-base",
                "http://127.0.0.1:9",
                "--token-url",
                "http://other/T",
            ],
        ] {
            let failure = pinned_endpoints(&global(args), &stored).unwrap_err();
            assert_eq!(failure.code(), 2, "{args:?}");
            assert!(
                failure.message().contains("http://127.0.0.1:9/"),
                "{args:?}"
            );
            assert!(failure.message().contains("mailup-auth login"));
        }
    }
}
