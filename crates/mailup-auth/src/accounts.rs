//! [`MailUpAccounts`]: many MailUp accounts in one process (a web app where each customer
//! connects their own account): one long-lived client per account, one transport, one store,
//! one configuration and one background scheduler for all of them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::time::Duration;

use mailup_auth_core::validate_profile_name;
use mailup_auth_core::{PendingAuthorization, ProfileRecord, UnixTime, Url};
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

use crate::client::ClientSettings;
use crate::error::Result;
use crate::scheduler::{Scheduler, SchedulerStats};
use crate::{MailUpClient, MailUpClientBuilder};

/// The default number of background refreshes that run at once.
pub const DEFAULT_REFRESH_CONCURRENCY: usize = 8;

/// A started authorization for one account: send the browser to `url` and keep `pending` (in
/// the signed-in user's server-side session) until MailUp redirects back.
#[derive(Debug)]
#[non_exhaustive]
pub struct AccountAuthorization {
    /// The LogOn URL for the browser (never holds the client secret).
    pub url: Url,
    /// What to keep until the callback arrives.
    pub pending: PendingAccountAuthorization,
}

/// An authorization in progress for one account: the profile it is for, and the
/// [`PendingAuthorization`] (CSRF state, redirect URI, expiry). The callback is completed for
/// *this* profile: the account is never taken from the callback's query string. It serializes
/// (the state in clear: keep it server-side, in the user's session).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingAccountAuthorization {
    profile: String,
    authorization: PendingAuthorization,
}

impl PendingAccountAuthorization {
    /// The account (profile) being connected.
    pub fn profile(&self) -> &str {
        &self.profile
    }

    /// The pending authorization itself.
    pub fn authorization(&self) -> &PendingAuthorization {
        &self.authorization
    }
}

/// What an account's stored record says about it, for a page that lists accounts (and shows
/// "reconnect MailUp" where it is needed) without calling MailUp.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AccountState {
    /// Tokens are held and can be refreshed (or are still valid).
    Connected {
        /// When the current access token expires (it is refreshed before then).
        expires_at: UnixTime,
    },
    /// The customer must connect the account again (the refresh token was rejected, or the
    /// tokens expired without a refresh token).
    NeedsReconnect {
        /// Why, for logs and support (never a secret).
        reason: String,
    },
    /// No tokens: never connected, or logged out.
    NotConnected,
}

/// One stored account and its state.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AccountSummary {
    /// The profile name.
    pub profile: String,
    /// Its state.
    pub state: AccountState,
}

struct Slot {
    client: OnceCell<MailUpClient>,
    /// Milliseconds since the accounts were built, at the last `client()` for this profile.
    last_used: AtomicU64,
}

struct AccountsInner {
    settings: Arc<ClientSettings>,
    slots: RwLock<HashMap<String, Arc<Slot>>>,
    scheduler: Arc<Scheduler>,
    max_loaded: Option<usize>,
    idle_timeout: Option<Duration>,
    started: tokio::time::Instant,
    /// When idle clients were last looked for (milliseconds since `started`).
    last_sweep: AtomicU64,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for AccountsInner {
    fn drop(&mut self) {
        let task = self
            .task
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(task) = task {
            task.abort();
        }
    }
}

/// Many MailUp accounts in one process: one long-lived [`MailUpClient`] per account
/// (profile), created on first use from the stored record, shared by every caller for that
/// account, so concurrent requests for one account cause one refresh. One transport, one store,
/// one configuration and one background scheduler serve all accounts; an account with nothing
/// due costs no wake-up and no store read.
///
/// Cheap to clone (an `Arc`). Idle clients can be evicted (see
/// [`MailUpAccountsBuilder::max_loaded`] and [`idle_timeout`](MailUpAccountsBuilder::idle_timeout)):
/// the store holds the truth, and the next [`client`](Self::client) reloads it. A client that
/// a caller still holds is never evicted, so two clients for one account never coexist.
///
/// ```no_run
/// # async fn example() -> mailup_auth::Result<()> {
/// use mailup_auth::{ClientSecret, MailUpAccounts, MailUpClient};
///
/// let accounts = MailUpAccounts::builder(
///     MailUpClient::builder("my-client-id", ClientSecret::new("my-client-secret"))
///         .redirect_uri("https://app.example.com/mailup/callback")
///         .store_path("/var/lib/my-app/mailup-tokens"),
/// )
/// .build()
/// .await?;
///
/// // Connect route, for the signed-in customer 42: keep `start.pending` in their session.
/// let start = accounts.begin_authorization("customer-42").await?;
/// // ... redirect the browser to start.url; MailUp redirects back to the callback route:
/// # let callback_url = "";
/// let client = accounts.complete_authorization(&start.pending, callback_url).await?;
/// // Any later request for that customer:
/// let info: serde_json::Value = accounts.client("customer-42").await?
///     .get("Console/Authentication/Info").await?;
/// # let _ = (client, info);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct MailUpAccounts {
    inner: Arc<AccountsInner>,
}

impl std::fmt::Debug for MailUpAccounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailUpAccounts")
            .field("loaded", &self.loaded_count())
            .field("scheduler", &self.inner.scheduler)
            .finish_non_exhaustive()
    }
}

/// Builds [`MailUpAccounts`] from a [`MailUpClientBuilder`] that holds the shared
/// configuration (client id and secret, redirect URI, endpoints, store, transport, skew,
/// backoff, hooks). The builder's `profile` is not used: each account is its own profile.
pub struct MailUpAccountsBuilder {
    client: MailUpClientBuilder,
    max_loaded: Option<usize>,
    idle_timeout: Option<Duration>,
    refresh_concurrency: usize,
    background_refresh: bool,
}

impl std::fmt::Debug for MailUpAccountsBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailUpAccountsBuilder")
            .field("client", &self.client)
            .field("max_loaded", &self.max_loaded)
            .field("idle_timeout", &self.idle_timeout)
            .field("refresh_concurrency", &self.refresh_concurrency)
            .field("background_refresh", &self.background_refresh)
            .finish()
    }
}

impl MailUpAccountsBuilder {
    /// Keeps at most this many clients loaded: loading one more evicts the least recently
    /// used idle ones (no cap by default).
    pub fn max_loaded(mut self, clients: usize) -> Self {
        self.max_loaded = Some(clients.max(1));
        self
    }

    /// Evicts clients unused for this long (looked for as accounts are used; none by default).
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.idle_timeout = Some(idle);
        self
    }

    /// How many background refreshes run at once (default
    /// [`DEFAULT_REFRESH_CONCURRENCY`]).
    pub fn refresh_concurrency(mut self, refreshes: usize) -> Self {
        self.refresh_concurrency = refreshes.max(1);
        self
    }

    /// Whether loaded accounts are refreshed ahead of expiry by the background scheduler
    /// (default `true`; needs a tokio runtime). Without it, accounts refresh on use, and
    /// [`MailUpAccounts::run_due_refreshes`] runs what is due on demand.
    pub fn background_refresh(mut self, enabled: bool) -> Self {
        self.background_refresh = enabled;
        self
    }

    /// Validates the configuration and opens the shared transport and store.
    pub async fn build(self) -> Result<MailUpAccounts> {
        let (settings, _profile) = self.client.into_settings()?;
        let settings = Arc::new(settings);
        let inner = Arc::new_cyclic(|weak: &Weak<AccountsInner>| {
            let resolve = weak.clone();
            let alive = weak.clone();
            let scheduler = Scheduler::new(
                settings.clock.clone(),
                self.refresh_concurrency,
                Box::new(move |profile| {
                    let accounts = resolve.upgrade()?;
                    MailUpAccounts { inner: accounts }.loaded(profile)
                }),
                Box::new(move || alive.strong_count() > 0),
            );
            AccountsInner {
                settings,
                slots: RwLock::new(HashMap::new()),
                scheduler,
                max_loaded: self.max_loaded,
                idle_timeout: self.idle_timeout,
                started: tokio::time::Instant::now(),
                last_sweep: AtomicU64::new(0),
                task: std::sync::Mutex::new(None),
            }
        });
        // Started once the accounts exist: the task ends when it finds them gone, and inside
        // `new_cyclic` they are not there yet.
        if self.background_refresh {
            *inner
                .task
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(inner.scheduler.spawn());
        }
        Ok(MailUpAccounts { inner })
    }
}

impl MailUpAccounts {
    /// Starts the accounts from the shared client configuration.
    pub fn builder(client: MailUpClientBuilder) -> MailUpAccountsBuilder {
        MailUpAccountsBuilder {
            client,
            max_loaded: None,
            idle_timeout: None,
            refresh_concurrency: DEFAULT_REFRESH_CONCURRENCY,
            background_refresh: true,
        }
    }

    fn slots(&self) -> RwLockWriteGuard<'_, HashMap<String, Arc<Slot>>> {
        // Each critical section is a few map operations: a poisoned map is still consistent.
        self.inner
            .slots
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn read_slots(&self) -> RwLockReadGuard<'_, HashMap<String, Arc<Slot>>> {
        self.inner
            .slots
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Milliseconds since the accounts were built, for eviction; 0 when no eviction is
    /// configured (the common lookup then reads no clock).
    fn elapsed_ms(&self) -> u64 {
        if self.inner.max_loaded.is_none() && self.inner.idle_timeout.is_none() {
            return 0;
        }
        self.inner.started.elapsed().as_millis() as u64
    }

    /// The one client of `profile`, loaded from the store on first use (concurrent first calls
    /// load it once). Every caller for one account shares it, and with it single-flight
    /// refresh.
    pub async fn client(&self, profile: &str) -> Result<MailUpClient> {
        // The common case: loaded already. A read lock, no allocation, no await.
        let now = self.elapsed_ms();
        if let Some(client) = self.loaded_at(profile, now) {
            if self.sweep_due(now) {
                self.evict(Some(profile));
            }
            return Ok(client);
        }
        validate_profile_name(profile)?;
        let slot = self
            .slots()
            .entry(profile.to_owned())
            .or_insert_with(|| {
                Arc::new(Slot {
                    client: OnceCell::new(),
                    last_used: AtomicU64::new(now),
                })
            })
            .clone();
        slot.last_used.store(now, Ordering::Relaxed);
        let mut loaded_now = false;
        let client = slot
            .client
            .get_or_try_init(|| async {
                let client =
                    MailUpClient::load(self.inner.settings.clone(), profile.to_owned()).await?;
                client.attach(&self.inner.scheduler);
                loaded_now = true;
                Ok::<_, crate::Error>(client)
            })
            .await?
            .clone();
        drop(slot);
        if loaded_now || self.sweep_due(now) {
            self.evict(Some(profile));
        }
        Ok(client)
    }

    /// The loaded client of `profile`, if it is loaded (no store read).
    pub fn loaded(&self, profile: &str) -> Option<MailUpClient> {
        self.read_slots()
            .get(profile)
            .and_then(|slot| slot.client.get().cloned())
    }

    /// The loaded client, marked used at `now`.
    fn loaded_at(&self, profile: &str, now: u64) -> Option<MailUpClient> {
        let slots = self.read_slots();
        let slot = slots.get(profile)?;
        let client = slot.client.get()?.clone();
        if now != 0 {
            slot.last_used.store(now, Ordering::Relaxed);
        }
        Some(client)
    }

    /// How many clients are loaded.
    pub fn loaded_count(&self) -> usize {
        self.read_slots()
            .values()
            .filter(|slot| slot.client.initialized())
            .count()
    }

    fn sweep_due(&self, now: u64) -> bool {
        let Some(idle) = self.inner.idle_timeout else {
            return false;
        };
        let every = (idle.as_millis() as u64 / 2).max(1);
        let last = self.inner.last_sweep.load(Ordering::Relaxed);
        now.saturating_sub(last) >= every
            && self
                .inner
                .last_sweep
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// Evicts the clients that are idle past the idle timeout, then the least recently used
    /// idle ones above the cap. Only a client nobody else holds is evicted (not one a caller
    /// or a background refresh is using). Returns how many were evicted.
    pub fn evict_idle(&self) -> usize {
        self.evict(None)
    }

    fn evict(&self, keep: Option<&str>) -> usize {
        let now = self.elapsed_ms();
        let idle_ms = self.inner.idle_timeout.map(|d| d.as_millis() as u64);
        let mut slots = self.slots();
        // Only the map holds the slot, and only the slot holds the client: nobody can be using
        // it, and nobody can get it without this lock.
        let evictable = |name: &str, slot: &Arc<Slot>| {
            Some(name) != keep
                && Arc::strong_count(slot) == 1
                && slot.client.get().is_none_or(|client| client.holders() == 1)
        };
        let before = slots.len();
        if let Some(idle_ms) = idle_ms {
            slots.retain(|name, slot| {
                let idle = now.saturating_sub(slot.last_used.load(Ordering::Relaxed)) >= idle_ms;
                !(idle && evictable(name, slot))
            });
        }
        if let Some(cap) = self.inner.max_loaded {
            if slots.len() > cap {
                let mut candidates: Vec<(u64, String)> = slots
                    .iter()
                    .filter(|(name, slot)| evictable(name, slot))
                    .map(|(name, slot)| (slot.last_used.load(Ordering::Relaxed), name.clone()))
                    .collect();
                candidates.sort();
                let excess = slots.len() - cap;
                for (_, name) in candidates.into_iter().take(excess) {
                    slots.remove(&name);
                }
            }
        }
        before - slots.len()
    }

    /// Starts connecting `profile`'s MailUp account (web-app flow): send the browser to the
    /// returned URL and keep the pending authorization in the signed-in user's session.
    pub async fn begin_authorization(&self, profile: &str) -> Result<AccountAuthorization> {
        let client = self.client(profile).await?;
        let start = client.begin_authorization()?;
        Ok(AccountAuthorization {
            url: start.url,
            pending: PendingAccountAuthorization {
                profile: profile.to_owned(),
                authorization: start.pending,
            },
        })
    }

    /// Completes the authorization from MailUp's redirect (the full callback URL or its query
    /// string) for the profile the pending authorization was started for: checks the state and
    /// the expiry, marks it used (it completes once, across processes sharing the store),
    /// exchanges the code, stores the tokens, and returns the account's client.
    pub async fn complete_authorization(
        &self,
        pending: &PendingAccountAuthorization,
        callback: &str,
    ) -> Result<MailUpClient> {
        let client = self.client(&pending.profile).await?;
        client
            .complete_authorization(&pending.authorization, callback)
            .await?;
        Ok(client)
    }

    /// Forgets `profile`'s tokens (in the store first), keeping nothing else of it unless the
    /// shared configuration remembers the client.
    pub async fn logout(&self, profile: &str) -> Result<()> {
        self.client(profile).await?.logout().await
    }

    /// Removes the account: its tokens and its stored record, and its loaded client unless a
    /// caller still holds it (then that one client stays, logged out, so a reconnection goes
    /// through it and no second client for the account ever appears).
    pub async fn remove(&self, profile: &str) -> Result<()> {
        self.logout(profile).await?;
        self.inner.settings.store.delete(profile).await?;
        let mut slots = self.slots();
        let unheld = slots.get(profile).is_some_and(|slot| {
            Arc::strong_count(slot) == 1
                && slot.client.get().is_none_or(|client| client.holders() == 1)
        });
        if unheld {
            slots.remove(profile);
        }
        Ok(())
    }

    /// The stored accounts (profiles), sorted.
    pub async fn profiles(&self) -> Result<Vec<String>> {
        Ok(self.inner.settings.store.profiles().await?)
    }

    /// Every stored account with its state (one store read per account, no call to MailUp):
    /// for a page that shows which customers must reconnect MailUp.
    pub async fn accounts(&self) -> Result<Vec<AccountSummary>> {
        let mut summaries = Vec::new();
        for profile in self.profiles().await? {
            let state = self.state(&profile).await?;
            summaries.push(AccountSummary { profile, state });
        }
        Ok(summaries)
    }

    /// One account's state, from its stored record (the truth shared by every instance over
    /// the store); a loaded client that knows more (a rejection not recorded in the store, such
    /// as rejected client credentials) makes it `NeedsReconnect`.
    pub async fn state(&self, profile: &str) -> Result<AccountState> {
        let now = self.inner.settings.clock.now();
        let record = self.inner.settings.store.load(profile).await?;
        let stored = state_of(record.map(|r| r.value), now);
        if let (AccountState::Connected { .. }, Some(client)) = (&stored, self.loaded(profile)) {
            if let Some(reason) = client.status().reauthorization_reason {
                return Ok(AccountState::NeedsReconnect { reason });
            }
        }
        Ok(stored)
    }

    /// Refreshes now every loaded account whose background refresh is due, in due order, with
    /// the configured concurrency, and waits for them; returns how many ran. The background
    /// scheduler does this on its own; this is for programs that turned it off (and for tests
    /// with a manual clock).
    pub async fn run_due_refreshes(&self) -> usize {
        self.inner.scheduler.run_due().await
    }

    /// The background scheduler's figures.
    pub fn scheduler_stats(&self) -> SchedulerStats {
        self.inner.scheduler.stats()
    }
}

fn state_of(record: Option<ProfileRecord>, now: UnixTime) -> AccountState {
    let Some(record) = record else {
        return AccountState::NotConnected;
    };
    let Some(tokens) = record.tokens else {
        return AccountState::NotConnected;
    };
    if let Some(reason) = record.reauthorization_required {
        return AccountState::NeedsReconnect { reason };
    }
    if tokens.refresh_token.is_none() && tokens.expires_at <= now {
        return AccountState::NeedsReconnect {
            reason: "the access token expired and there is no refresh token".into(),
        };
    }
    AccountState::Connected {
        expires_at: tokens.expires_at,
    }
}
