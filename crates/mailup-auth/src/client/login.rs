//! Logging in (web app, password grant, loopback) and out.

use super::driver::Driver;
use super::*;

impl MailUpClient {
    /// Starts a web-app authorization with the configured redirect URI.
    pub fn begin_authorization(&self) -> Result<AuthorizationStart> {
        self.begin_authorization_with_redirect(None)
    }

    /// Starts a web-app authorization with a redirect URI chosen at run time.
    pub fn begin_authorization_with_redirect(
        &self,
        redirect_uri: Option<Url>,
    ) -> Result<AuthorizationStart> {
        let state = self.inner.settings.entropy.csrf_state();
        let now = self.inner.settings.clock.now();
        let (url, pending) = PendingAuthorization::start(
            self.lock_state().session.config(),
            now,
            state,
            redirect_uri,
        )?;
        Ok(AuthorizationStart { url, pending })
    }

    /// Completes a web-app authorization: checks the callback (URL or query string) against
    /// `pending` (state, then expiry: [`CallbackError::Expired`]), marks it used in the token
    /// store so that it completes once even across processes sharing the store
    /// ([`CallbackError::AlreadyUsed`] otherwise), exchanges the code, and stores the tokens
    /// before returning.
    pub async fn complete_authorization(
        &self,
        pending: &PendingAuthorization,
        callback: &str,
    ) -> Result<()> {
        let now = self.inner.settings.clock.now();
        let code = pending.verify_callback(now, callback)?;
        let first_use = self
            .inner
            .settings
            .store
            .consume_once(pending.state().secret(), pending.expires_at(), now)
            .await?;
        if !first_use {
            return Err(CallbackError::AlreadyUsed.into());
        }
        let redirect_uri = pending.redirect_uri().clone();
        self.run_driver(move |driver| async move {
            let deadline = driver.deadline();
            driver
                .lock_state()
                .session
                .exchange_code(code, &redirect_uri);
            driver.finish_login(deadline).await
        })
        .instrument(tracing::info_span!("mailup_auth.code_exchange"))
        .await
    }

    /// Logs in with MailUp's password grant (for server-to-server use).
    pub async fn login_with_password(&self, username: &str, password: &Password) -> Result<()> {
        let username = username.to_owned();
        let password = password.clone();
        self.run_driver(move |driver| async move {
            let deadline = driver.deadline();
            driver
                .lock_state()
                .session
                .login_with_password(&username, &password);
            driver.finish_login(deadline).await
        })
        .instrument(tracing::info_span!("mailup_auth.password_grant"))
        .await
    }

    /// The CLI/desktop flow (RFC 8252): listens on 127.0.0.1, calls `show_url` with the LogOn
    /// URL (print it, open a browser), waits for the redirect, exchanges the code and stores
    /// the tokens; only then does the browser's page say "logged in" (a failure page
    /// otherwise).
    #[cfg(feature = "loopback")]
    pub async fn login_with_loopback(
        &self,
        options: LoopbackLogin,
        show_url: impl FnOnce(&Url),
    ) -> Result<()> {
        let listener = match &options.redirect_uri {
            Some(uri) => crate::loopback::LoopbackRedirect::bind_for(uri).await?,
            None => crate::loopback::LoopbackRedirect::bind(options.port).await?,
        };
        let start =
            self.begin_authorization_with_redirect(Some(listener.redirect_uri().clone()))?;
        show_url(&start.url);
        let callback = listener
            .wait_for_callback(start.pending.state(), options.timeout)
            .await?;
        let result = self
            .complete_authorization(&start.pending, callback.as_str())
            .await;
        match &result {
            Ok(()) => callback.succeeded().await,
            Err(error) => callback.failed(&error.to_string()).await,
        }
        result
    }

    /// Forgets the profile's tokens, in the store first and then here (MailUp has no revocation
    /// endpoint). The remembered client registration, if any, is kept. If the store cannot be
    /// written, nothing is forgotten and the error is returned.
    pub async fn logout(&self) -> Result<()> {
        self.run_driver(|driver| async move {
            let version = driver.forget_stored_tokens().await?;
            {
                let mut state = driver.lock_state();
                state.session.logout();
                state.version = version;
                state.record.tokens = None;
                state.record.last_refreshed_at = None;
                state.record.reauthorization_required = None;
                state.unsaved = None;
            }
            driver.clear_cache();
            driver.run_hooks(None, None, version);
            tracing::info!("logged out");
            Ok(())
        })
        .await
    }
}

impl Driver {
    /// Sends the queued login (code exchange or password grant) and caches its token.
    async fn finish_login(&self, deadline: tokio::time::Instant) -> Result<()> {
        let report = self.pump(deadline).await?;
        if let Some(error) = report.login_error {
            return Err(ErrorKind::Login(error).into());
        }
        let now = self.inner.settings.clock.now();
        let state = self.lock_state();
        // A login whose token is already due (a zero expires_in) still stored its tokens; the
        // next access_token() refreshes.
        if let Some(tokens) = state.session.tokens() {
            self.publish(&state, &tokens.access_token, now);
        }
        Ok(())
    }

    /// Removes the tokens from the stored record (or the record, when it holds nothing else).
    /// Returns the record's new version.
    async fn forget_stored_tokens(&self) -> Result<Option<u64>> {
        let profile = &self.inner.profile;
        for _ in 0..MAX_SAVE_ATTEMPTS {
            let Some(stored) = self.inner.settings.store.load(profile).await? else {
                return Ok(None);
            };
            if stored.value.client.is_none() {
                self.inner.settings.store.delete(profile).await?;
                return Ok(None);
            }
            let mut record = stored.value;
            record.tokens = None;
            record.last_refreshed_at = None;
            record.reauthorization_required = None;
            match self
                .inner
                .settings
                .store
                .save(profile, &record, Some(stored.version))
                .await
            {
                Ok(version) => return Ok(Some(version)),
                Err(StoreError::Conflict { .. }) => {}
                // A damaged record whose version cannot grow: forgetting the tokens means
                // removing it (its client registration with it); the next login starts anew.
                Err(StoreError::VersionExhausted { .. }) => {
                    self.inner.settings.store.delete(profile).await?;
                    return Ok(None);
                }
                Err(error) => return Err(error.into()),
            }
        }
        Err(StoreError::Contended {
            profile: profile.clone(),
            attempts: MAX_SAVE_ATTEMPTS,
        }
        .into())
    }
}
