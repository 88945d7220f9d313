//! Profile resolution: which store, which client registration, which endpoints.
//!
//! Flags and environment variables come first; whatever they leave open is taken from what the
//! profile remembered at login (client id, secret, endpoints, redirect URI), so that after one
//! `login` every other command needs only the profile name.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mailup_auth::core::{StoreError, StoredClient};
use mailup_auth::{
    Backoff, ClientSecret, MailUpClient, MailUpClientBuilder, ProfileRecord, SledTokenStore,
    TokenStore,
};

use crate::cli::GlobalOptions;
use crate::failure::Failure;

/// How long to wait for another `mailup-auth` process to release the store.
const STORE_LOCK_WAIT: Duration = Duration::from_secs(5);

/// Everything a command needs: the options, the opened store and the profile's record.
#[derive(Debug)]
pub(crate) struct Context {
    /// The global options as given.
    pub(crate) global: GlobalOptions,
    /// The store directory.
    pub(crate) store_dir: PathBuf,
    /// The opened store (sled allows one opener per process: this is the one), or `None`
    /// while released (a `login` waiting for the browser lets other commands use it).
    store: std::sync::Mutex<Option<Arc<SledTokenStore>>>,
    /// The profile's record when the command started, if any.
    pub(crate) record: Option<ProfileRecord>,
}

impl Context {
    /// Opens the store (waiting briefly if another `mailup-auth` holds it) and loads the
    /// profile's record.
    pub(crate) async fn open(global: GlobalOptions) -> Result<Self, Failure> {
        let store_dir = match &global.store {
            Some(dir) => dir.clone(),
            None => mailup_auth::default_store_dir().ok_or_else(|| {
                Failure::usage("no home directory for the default token store: pass --store DIR")
            })?,
        };
        let store = Arc::new(open_store(store_dir.clone()).await?);
        let record = store
            .load(&global.profile)
            .await
            .map_err(store_failure)?
            .map(|versioned| versioned.value);
        Ok(Self {
            global,
            store_dir,
            store: std::sync::Mutex::new(Some(store)),
            record,
        })
    }

    /// The store, opened again if it was released.
    pub(crate) async fn store(&self) -> Result<Arc<SledTokenStore>, Failure> {
        let open = self.lock_store().clone();
        if let Some(store) = open {
            return Ok(store);
        }
        let store = Arc::new(open_store(self.store_dir.clone()).await?);
        *self.lock_store() = Some(store.clone());
        Ok(store)
    }

    /// Closes our handle on the store (it closes for real once no client holds it), so other
    /// `mailup-auth` processes can use it meanwhile.
    pub(crate) fn release_store(&self) {
        self.lock_store().take();
    }

    fn lock_store(&self) -> std::sync::MutexGuard<'_, Option<Arc<SledTokenStore>>> {
        self.store
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
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
            Some(secret) => ClientSecret::new(secret.clone()),
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
    /// profile when tokens are saved: only `login` does, so a one-off `--api-base` on another
    /// command cannot redirect later commands (and their bearer token).
    pub(crate) async fn builder(
        &self,
        missing: Failure,
        remember: bool,
    ) -> Result<MailUpClientBuilder, Failure> {
        let store = self.store().await?;
        self.builder_with_store(missing, remember, store)
    }

    /// [`builder`](Self::builder) over another store (e.g. in memory, to build a LogOn URL
    /// without holding the token store).
    pub(crate) fn builder_with_store(
        &self,
        missing: Failure,
        remember: bool,
        store: Arc<dyn TokenStore>,
    ) -> Result<MailUpClientBuilder, Failure> {
        let (client_id, client_secret) = self.client_credentials().ok_or(missing)?;
        let global = &self.global;
        let mut builder = MailUpClient::builder(client_id, client_secret)
            .profile(global.profile.clone())
            .store(store)
            .remember_client(remember)
            // A person is waiting: fail over to "unavailable" within a few seconds.
            .backoff(Backoff {
                initial: Duration::from_millis(500),
                max: Duration::from_secs(2),
            })
            .max_refresh_attempts(3);
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
        let builder = self.builder(self.not_logged_in(), false).await?;
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

async fn open_store(dir: PathBuf) -> Result<SledTokenStore, Failure> {
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        loop {
            match SledTokenStore::open(&dir) {
                Ok(store) => return Ok(store),
                // Another mailup-auth is running (a script calling `token` in parallel): its
                // command is short, wait for it.
                Err(StoreError::Locked { .. }) if started.elapsed() < STORE_LOCK_WAIT => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(error) => return Err(store_failure(error)),
            }
        }
    })
    .await
    .map_err(|e| Failure::local(format!("cannot open the token store: {e}")))?
}

fn store_failure(error: StoreError) -> Failure {
    match error {
        StoreError::InvalidProfile(_) => Failure::usage(error.to_string()),
        StoreError::Locked { path, .. } => Failure::local(format!(
            "the token store at {path} is in use by another mailup-auth command (a `login` \
             waiting for the browser?); try again when it has finished"
        )),
        error => Failure::local(format!("token store: {error}")),
    }
}
