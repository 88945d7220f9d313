//! Profile resolution: which store, which client registration, which endpoints.
//!
//! Flags and environment variables come first; whatever they leave open is taken from what the
//! profile remembered at login (client id, secret, endpoints, redirect URI), so that after one
//! `login` every other command needs only the profile name.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mailup_auth::core::{StoreError, StoredClient};
use mailup_auth::{
    Backoff, ClientSecret, MailUpClient, MailUpClientBuilder, ProfileRecord, TokenStore,
};

use crate::cli::GlobalOptions;
use crate::failure::Failure;
use crate::store::OnDemandSledStore;

/// Everything a command needs: the options, the store and the profile's record.
#[derive(Debug)]
pub(crate) struct Context {
    /// The global options as given.
    pub(crate) global: GlobalOptions,
    /// The store directory.
    pub(crate) store_dir: PathBuf,
    /// The token store. It opens the database for each operation only, so this process never
    /// holds it during an API call, a token request or the browser wait.
    pub(crate) store: Arc<OnDemandSledStore>,
    /// The profile's record when the command started, if any.
    pub(crate) record: Option<ProfileRecord>,
    /// Why the profile's record could not be read, when it is corrupt (then `record` is
    /// `None`): `login` and `logout` remove it, other commands report it.
    pub(crate) corrupt: Option<StoreError>,
}

impl Context {
    /// Loads the profile's record (waiting briefly while other `mailup-auth` processes use the
    /// store).
    pub(crate) async fn open(global: GlobalOptions) -> Result<Self, Failure> {
        let store_dir = match &global.store {
            Some(dir) => dir.clone(),
            None => mailup_auth::default_store_dir().ok_or_else(|| {
                Failure::usage("no home directory for the default token store: pass --store DIR")
            })?,
        };
        let store = Arc::new(OnDemandSledStore::new(store_dir.clone()));
        // A corrupt record must not stop the commands that recover from it.
        let (record, corrupt) = match store.load(&global.profile).await {
            Ok(loaded) => (loaded.map(|versioned| versioned.value), None),
            Err(error @ StoreError::Corrupt { .. }) => (None, Some(error)),
            Err(error) => return Err(store_failure(error)),
        };
        Ok(Self {
            global,
            store_dir,
            store,
            record,
            corrupt,
        })
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

/// A store failure as the CLI reports it.
pub(crate) fn store_failure(error: StoreError) -> Failure {
    match error {
        StoreError::InvalidProfile(_) => Failure::usage(error.to_string()),
        StoreError::Locked { path, .. } => Failure::local(format!(
            "the token store at {path} stayed in use by other mailup-auth commands for {} s; \
             try again",
            crate::store::LOCK_WAIT.as_secs()
        )),
        error => Failure::local(crate::failure::store_message(&error)),
    }
}
