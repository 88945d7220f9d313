//! Hostile review of issue 17 (the facade's driver): panics inside a drive, in the transport
//! and in the store, at each token operation. The refresh flight is released, the next caller
//! works, and a rotated refresh token that the panic kept from being saved is still saved
//! before anything is handed out (never a dead refresh token sent, never a new login).

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use mailup_auth::core::{MemoryTokenStore, ProfileRecord, StoreError, TokenStore, Versioned};
use mailup_auth::{
    HttpRequest, HttpResponse, MailUpClient, ManualClock, Password, Transport, TransportError,
    UnixTime,
};

use support::{offline_builder, Server, NOW};

/// The rotating token server of the support module, which can panic on the next token request.
#[derive(Default)]
struct PanickingServer {
    server: Server,
    panic_next: AtomicBool,
}

#[async_trait]
impl Transport for PanickingServer {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        if request.url().path().ends_with("/Token") && self.panic_next.swap(false, Ordering::SeqCst)
        {
            panic!("a transport bug (on purpose)");
        }
        self.server.send(request).await
    }
}

/// A memory store that can panic on the next save.
#[derive(Default)]
struct PanickingStore {
    inner: MemoryTokenStore,
    panic_next_save: AtomicBool,
}

#[async_trait]
impl TokenStore for PanickingStore {
    async fn load(&self, profile: &str) -> Result<Option<Versioned<ProfileRecord>>, StoreError> {
        self.inner.load(profile).await
    }
    async fn save(
        &self,
        profile: &str,
        record: &ProfileRecord,
        expected: Option<u64>,
    ) -> Result<u64, StoreError> {
        if self.panic_next_save.swap(false, Ordering::SeqCst) {
            panic!("a store bug (on purpose)");
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

struct Fixture {
    server: Arc<PanickingServer>,
    store: Arc<PanickingStore>,
    clock: Arc<ManualClock>,
    client: MailUpClient,
}

impl Fixture {
    async fn logged_in() -> Self {
        let server = Arc::new(PanickingServer::default());
        let store = Arc::new(PanickingStore::default());
        let clock = Arc::new(ManualClock::new(UnixTime::from_secs(NOW)));
        let client = offline_builder(server.clone(), store.clone(), clock.clone())
            .build()
            .await
            .unwrap();
        client
            .login_with_password("a", &Password::new("pw"))
            .await
            .unwrap();
        Self {
            server,
            store,
            clock,
            client,
        }
    }

    /// The refresh token the store holds.
    async fn stored_refresh_token(&self) -> String {
        let record = self.store.load("default").await.unwrap().unwrap().value;
        record
            .tokens
            .unwrap()
            .refresh_token
            .unwrap()
            .secret()
            .to_owned()
    }

    /// Whether the server would accept `refresh_token` now.
    fn is_live(&self, refresh_token: &str) -> bool {
        self.server
            .server
            .valid_refresh
            .lock()
            .unwrap()
            .contains(refresh_token)
    }

    /// Runs `operation` in a task of its own and says whether it panicked.
    async fn panics(&self, operation: &'static str) -> bool {
        let client = self.client.clone();
        let task = tokio::spawn(async move {
            match operation {
                "access_token" => client.access_token().await.map(drop),
                "refresh" => client.refresh().await.map(drop),
                "refresh_if_due" => client.refresh_if_due().await,
                "login" => client.login_with_password("a", &Password::new("pw")).await,
                _ => unreachable!("{operation}"),
            }
        });
        tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .expect("no deadlock")
            .is_err_and(|e| e.is_panic())
    }

    /// The next callers work: a token, a forced refresh, a token again; the stored refresh
    /// token is live and no refresh was rejected.
    async fn works(&self, what: &str) {
        for _ in 0..2 {
            let token = tokio::time::timeout(Duration::from_secs(20), self.client.access_token())
                .await
                .expect("no deadlock");
            assert!(token.is_ok(), "{what}: {token:?}");
            let forced = self.client.refresh().await;
            assert!(forced.is_ok(), "{what}: {forced:?}");
        }
        let stored = self.stored_refresh_token().await;
        assert!(
            self.is_live(&stored),
            "{what}: the store holds a dead refresh token"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transport_panic_in_any_token_operation_leaves_a_working_client() {
    for operation in ["access_token", "refresh", "refresh_if_due", "login"] {
        let fixture = Fixture::logged_in().await;
        fixture.clock.advance(Duration::from_secs(7200));
        fixture.server.panic_next.store(true, Ordering::SeqCst);
        assert!(
            fixture.panics(operation).await,
            "{operation}: the panic reaches the caller"
        );
        fixture.works(operation).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_panic_while_saving_rotated_tokens_loses_no_refresh_token() {
    for operation in ["access_token", "refresh", "refresh_if_due", "login"] {
        let fixture = Fixture::logged_in().await;
        fixture.clock.advance(Duration::from_secs(7200));
        let refreshes = fixture.server.server.refreshes.load(Ordering::SeqCst);
        fixture.store.panic_next_save.store(true, Ordering::SeqCst);
        assert!(
            fixture.panics(operation).await,
            "{operation}: the panic reaches the caller"
        );
        // The server rotated; the new refresh token was not saved. The next caller saves it
        // before handing anything out, without another refresh.
        assert_eq!(
            fixture.server.server.refreshes.load(Ordering::SeqCst),
            refreshes + u32::from(operation != "login"),
            "{operation}"
        );
        let token = fixture.client.access_token().await;
        assert!(token.is_ok(), "{operation}: {token:?}");
        assert_eq!(
            fixture.server.server.refreshes.load(Ordering::SeqCst),
            refreshes + u32::from(operation != "login"),
            "{operation}: the unsaved tokens were used, not refreshed again"
        );
        let stored = fixture.stored_refresh_token().await;
        assert!(
            fixture.is_live(&stored),
            "{operation}: the rotated token was saved"
        );
        fixture.works(operation).await;
    }
}
