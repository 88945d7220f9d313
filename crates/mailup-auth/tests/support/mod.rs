//! The facade's one test-helper module, shared by every test file in `tests/` (`mod support;`)
//! and by the crate's unit tests (`src/lib.rs` includes it as `test_support`): the clock's
//! start, client builders (offline with given ports, or for the emulator), a login against the
//! emulator, and for the `MailUpAccounts` tests an in-process token server that enforces
//! rotation, a counting memory store, a jitter-free entropy source and a setup on a manual
//! clock.
#![allow(dead_code)] // each test file uses a different part

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use http::StatusCode;
use mailup_auth::core::{MemoryTokenStore, ProfileRecord, StoreError, TokenStore, Versioned};
use mailup_auth::{
    ClientSecret, CsrfState, Entropy, HttpRequest, HttpResponse, MailUpAccounts, MailUpClient,
    MailUpClientBuilder, ManualClock, Password, Transport, TransportError, UnixTime,
};
use mailup_auth_emulator::{
    Emulator, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_PASSWORD, DEFAULT_USERNAME,
};

/// Where every manual clock of the facade's tests starts (seconds since the UNIX epoch).
pub(crate) const NOW: u64 = 1_800_000_000;

/// The tests' client registration, its endpoints on a closed loopback port: nothing leaves the
/// process unless a transport is given.
pub(crate) fn offline() -> MailUpClientBuilder {
    MailUpClient::builder("cid", ClientSecret::new("csecret")).auth_base("http://127.0.0.1:9")
}

/// [`offline`] with these ports and clock: every request goes to `transport`.
pub(crate) fn offline_builder(
    transport: Arc<dyn Transport>,
    store: Arc<dyn TokenStore>,
    clock: Arc<ManualClock>,
) -> MailUpClientBuilder {
    offline().clock(clock).store(store).transport(transport)
}

/// The emulator's default registration against `emulator`, with a memory store.
pub(crate) fn emulator_builder(emulator: &Emulator) -> MailUpClientBuilder {
    MailUpClient::builder(DEFAULT_CLIENT_ID, ClientSecret::new(DEFAULT_CLIENT_SECRET))
        .auth_base(emulator.base_url().as_str())
        .memory_store()
}

/// Builds the client and logs in as the emulator's default user (password grant).
pub(crate) async fn log_in(builder: MailUpClientBuilder) -> MailUpClient {
    let client = builder.build().await.unwrap();
    client
        .login_with_password(DEFAULT_USERNAME, &Password::new(DEFAULT_PASSWORD))
        .await
        .unwrap();
    client
}

/// A token server with rotation that remembers the order refreshes arrived in and how many
/// ran at once. The refresh token names its account (`r-<account>-<n>`).
#[derive(Default)]
pub(crate) struct Server {
    pub(crate) valid_refresh: Mutex<HashSet<String>>,
    pub(crate) next: AtomicU64,
    pub(crate) refreshes: AtomicU32,
    pub(crate) arrivals: Mutex<Vec<String>>,
    pub(crate) in_flight: AtomicUsize,
    pub(crate) max_in_flight: AtomicUsize,
    pub(crate) delay_ms: AtomicU64,
}

impl Server {
    pub(crate) fn issue(&self, account: &str) -> HttpResponse {
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        let rt = format!("r-{account}-{n}");
        self.valid_refresh.lock().unwrap().insert(rt.clone());
        HttpResponse::new(
            StatusCode::OK,
            format!(
                r#"{{"access_token":"a-{account}-{n}","expires_in":3600,"refresh_token":"{rt}"}}"#
            ),
        )
    }

    pub(crate) fn revoke_account(&self, account: &str) {
        let prefix = format!("r-{account}-");
        self.valid_refresh
            .lock()
            .unwrap()
            .retain(|rt| !rt.starts_with(&prefix));
    }
}

#[async_trait]
impl Transport for Server {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        if !request.url().path().ends_with("/Token") {
            return Ok(HttpResponse::new(StatusCode::OK, r#"{"UID":"1"}"#));
        }
        let form: Vec<(String, String)> = form_urlencoded::parse(request.body())
            .into_owned()
            .collect();
        let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        match get("grant_type").as_deref() {
            // The username is the account name in these tests.
            Some("password") => Ok(self.issue(&get("username").unwrap())),
            Some("refresh_token") => {
                let rt = get("refresh_token").unwrap();
                let account = rt.split('-').nth(1).unwrap_or_default().to_owned();
                self.arrivals.lock().unwrap().push(account.clone());
                let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                self.max_in_flight.fetch_max(now, Ordering::SeqCst);
                let delay = self.delay_ms.load(Ordering::SeqCst);
                if delay > 0 {
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                }
                self.in_flight.fetch_sub(1, Ordering::SeqCst);
                self.refreshes.fetch_add(1, Ordering::SeqCst);
                if self.valid_refresh.lock().unwrap().remove(&rt) {
                    Ok(self.issue(&account))
                } else {
                    Ok(HttpResponse::new(
                        StatusCode::BAD_REQUEST,
                        r#"{"error":"invalid_grant"}"#,
                    ))
                }
            }
            _ => Ok(HttpResponse::new(StatusCode::BAD_REQUEST, "{}")),
        }
    }
}

/// A memory store that counts loads and can fail saves.
#[derive(Default)]
pub(crate) struct Counting {
    pub(crate) inner: MemoryTokenStore,
    pub(crate) loads: AtomicU32,
    pub(crate) fail_saves: AtomicBool,
}

#[async_trait]
impl TokenStore for Counting {
    async fn load(&self, profile: &str) -> Result<Option<Versioned<ProfileRecord>>, StoreError> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        self.inner.load(profile).await
    }
    async fn save(
        &self,
        profile: &str,
        record: &ProfileRecord,
        expected: Option<u64>,
    ) -> Result<u64, StoreError> {
        if self.fail_saves.load(Ordering::SeqCst) {
            return Err(StoreError::io_context("disk full"));
        }
        self.inner.save(profile, record, expected).await
    }
    async fn delete(&self, profile: &str) -> Result<(), StoreError> {
        self.inner.delete(profile).await
    }
    async fn profiles(&self) -> Result<Vec<String>, StoreError> {
        self.inner.profiles().await
    }
    async fn consume_once(
        &self,
        key: &str,
        expires_at: UnixTime,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        self.inner.consume_once(key, expires_at, now).await
    }
}

/// No jitter, so due times are exact.
#[derive(Debug)]
pub(crate) struct NoJitter;

impl Entropy for NoJitter {
    fn csrf_state(&self) -> CsrfState {
        CsrfState::new("state")
    }
    fn jitter(&self, _max: Duration) -> Duration {
        Duration::ZERO
    }
}

pub(crate) struct Setup {
    pub(crate) server: Arc<Server>,
    pub(crate) store: Arc<Counting>,
    pub(crate) clock: Arc<ManualClock>,
}

impl Setup {
    pub(crate) fn new() -> Self {
        Self {
            server: Arc::new(Server::default()),
            store: Arc::new(Counting::default()),
            clock: Arc::new(ManualClock::new(UnixTime::from_secs(NOW))),
        }
    }

    pub(crate) fn builder(&self) -> MailUpClientBuilder {
        offline_builder(self.server.clone(), self.store.clone(), self.clock.clone())
            .entropy(Arc::new(NoJitter))
    }

    pub(crate) async fn accounts(
        &self,
        configure: impl FnOnce(mailup_auth::MailUpAccountsBuilder) -> mailup_auth::MailUpAccountsBuilder,
    ) -> MailUpAccounts {
        configure(MailUpAccounts::builder(self.builder()).background_refresh(false))
            .build()
            .await
            .unwrap()
    }
}

pub(crate) async fn connect(accounts: &MailUpAccounts, account: &str) {
    accounts
        .client(account)
        .await
        .unwrap()
        .login_with_password(account, &Password::new("pw"))
        .await
        .unwrap();
}
