//! Failure modes found in review, kept as regression tests: a mock token server that enforces
//! rotation (a refresh token works once) and a memory store whose saves and loads can fail.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use http::StatusCode;
use mailup_auth::core::{
    MemoryTokenStore, ProfileRecord, StoreError, TokenStore, Transport, Versioned,
};
use mailup_auth::{
    ErrorKind, HttpRequest, HttpResponse, MailUpClient, ManualClock, Password, TransportError,
    UnixTime,
};

mod support;

use support::{offline, offline_builder, NOW};

/// A token server with rotation: a refresh token works once.
#[derive(Default)]
struct Server {
    valid_refresh: Mutex<HashSet<String>>,
    next: AtomicU64,
    token_requests: AtomicU32,
    panic_next_token_request: AtomicBool,
    hang_next_token_request: AtomicBool,
    api_401: AtomicBool,
}

impl Server {
    fn issue(&self) -> HttpResponse {
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        let rt = format!("r{n}");
        self.valid_refresh.lock().unwrap().insert(rt.clone());
        HttpResponse::new(
            StatusCode::OK,
            format!(r#"{{"access_token":"a{n}","expires_in":3600,"refresh_token":"{rt}"}}"#),
        )
    }
    fn is_valid(&self, rt: &str) -> bool {
        self.valid_refresh.lock().unwrap().contains(rt)
    }
}

#[async_trait]
impl Transport for Server {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        if request.url().path().ends_with("/Token") {
            self.token_requests.fetch_add(1, Ordering::SeqCst);
            if self.panic_next_token_request.swap(false, Ordering::SeqCst) {
                panic!("transport bug");
            }
            if self.hang_next_token_request.swap(false, Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            let form: Vec<(String, String)> = form_urlencoded::parse(request.body())
                .into_owned()
                .collect();
            let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            match get("grant_type").as_deref() {
                Some("password") => Ok(self.issue()),
                Some("refresh_token") => {
                    let rt = get("refresh_token").unwrap();
                    if self.valid_refresh.lock().unwrap().remove(&rt) {
                        Ok(self.issue())
                    } else {
                        Ok(HttpResponse::new(
                            StatusCode::BAD_REQUEST,
                            r#"{"error":"invalid_grant"}"#,
                        ))
                    }
                }
                _ => Ok(HttpResponse::new(StatusCode::BAD_REQUEST, "{}")),
            }
        } else if self.api_401.load(Ordering::SeqCst) {
            Ok(HttpResponse::new(
                StatusCode::UNAUTHORIZED,
                r#"{"ErrorCode":"401"}"#,
            ))
        } else {
            Ok(HttpResponse::new(StatusCode::OK, r#"{"UID":"1"}"#))
        }
    }
}

/// A memory store whose saves / loads can be made to fail.
#[derive(Default)]
struct Flaky {
    inner: MemoryTokenStore,
    fail_saves: AtomicU32,
    fail_loads: AtomicBool,
    loads: AtomicU32,
}

#[async_trait]
impl TokenStore for Flaky {
    async fn load(&self, profile: &str) -> Result<Option<Versioned<ProfileRecord>>, StoreError> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        if self.fail_loads.load(Ordering::SeqCst) {
            return Err(StoreError::io_context("load fails"));
        }
        self.inner.load(profile).await
    }
    async fn save(
        &self,
        profile: &str,
        record: &ProfileRecord,
        expected: Option<u64>,
    ) -> Result<u64, StoreError> {
        if self
            .fail_saves
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
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
        expires_at: mailup_auth::UnixTime,
        now: mailup_auth::UnixTime,
    ) -> Result<bool, StoreError> {
        self.inner.consume_once(key, expires_at, now).await
    }
}

async fn client(
    server: &Arc<Server>,
    store: &Arc<Flaky>,
    clock: &Arc<ManualClock>,
) -> MailUpClient {
    offline_builder(server.clone(), store.clone(), clock.clone())
        .rejected_refresh_grace(Duration::ZERO)
        .build()
        .await
        .unwrap()
}

/// C rotates r1 -> r2 but its save fails; A then tries r1, is rejected and records the marker;
/// C's next call adopts the marker record and drops its unsaved, only valid, refresh token.
#[tokio::test]
async fn an_unsaved_rotation_survives_another_instances_rejection_mark() {
    let server = Arc::new(Server::default());
    let store = Arc::new(Flaky::default());
    let clock = Arc::new(ManualClock::new(UnixTime::from_secs(NOW)));
    let c = client(&server, &store, &clock).await;
    c.login_with_password("u", &Password::new("p"))
        .await
        .unwrap();
    let a = client(&server, &store, &clock).await;
    clock.advance(Duration::from_secs(7200));

    store.fail_saves.store(1, Ordering::SeqCst);
    let err = c.access_token().await.unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Store(_)), "{err:?}");
    assert!(server.is_valid("r1"), "C holds r1 unsaved");

    let err = a.access_token().await.unwrap_err();
    assert!(err.is_reauthorization_required(), "{err:?}");
    let stored = store.load("default").await.unwrap().unwrap();
    assert!(stored.value.reauthorization_required.is_some());

    let result = c.access_token().await;
    // The rotated refresh token r1 (issued to C) is still valid at the server...
    assert!(server.is_valid("r1"));
    // ...but C threw it away:
    assert!(
        result.is_ok(),
        "C lost its valid unsaved rotation: {result:?}; status {:?}",
        c.status()
    );
}

/// A panic inside the token request leaves `refresh_in_flight` set with nothing queued: every
/// later call is `ErrorKind::Cancelled`, forever.
#[tokio::test]
async fn a_panic_mid_refresh_does_not_wedge_the_client() {
    let server = Arc::new(Server::default());
    let store = Arc::new(Flaky::default());
    let clock = Arc::new(ManualClock::new(UnixTime::from_secs(NOW)));
    let c = client(&server, &store, &clock).await;
    c.login_with_password("u", &Password::new("p"))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(7200));
    server
        .panic_next_token_request
        .store(true, Ordering::SeqCst);
    let c2 = c.clone();
    let joined = tokio::spawn(async move { c2.access_token().await }).await;
    assert!(joined.is_err(), "the panic propagates");
    for _ in 0..3 {
        let result = c.access_token().await;
        let forced = c.refresh().await;
        assert!(
            result.is_ok() && forced.is_ok(),
            "wedged: {result:?} / {forced:?} (token requests: {})",
            server.token_requests.load(Ordering::SeqCst)
        );
    }
}

/// A client used from two runtimes (a `static` client shared by #[tokio::test]s): the first
/// runtime shuts down mid-refresh; on the second, the client is wedged.
#[test]
fn a_runtime_shutdown_mid_refresh_does_not_wedge_the_client() {
    let server = Arc::new(Server::default());
    let store = Arc::new(Flaky::default());
    let clock = Arc::new(ManualClock::new(UnixTime::from_secs(NOW)));
    let rt1 = tokio::runtime::Runtime::new().unwrap();
    let c = rt1.block_on(async {
        let c = client(&server, &store, &clock).await;
        c.login_with_password("u", &Password::new("p"))
            .await
            .unwrap();
        c
    });
    clock.advance(Duration::from_secs(7200));
    server.hang_next_token_request.store(true, Ordering::SeqCst);
    let c1 = c.clone();
    rt1.block_on(async move {
        let _ = tokio::time::timeout(Duration::from_millis(200), c1.access_token()).await;
    });
    rt1.shutdown_timeout(Duration::from_millis(100));
    let rt2 = tokio::runtime::Runtime::new().unwrap();
    let result = rt2
        .block_on(async { tokio::time::timeout(Duration::from_secs(5), c.access_token()).await });
    assert!(
        matches!(result, Ok(Ok(_))),
        "wedged on the second runtime: {result:?}"
    );
}

/// A persistent store read error makes the background task spin every 10 ms.
#[tokio::test]
async fn the_background_task_backs_off_on_a_persistent_store_error() {
    let server = Arc::new(Server::default());
    let store = Arc::new(Flaky::default());
    let clock = Arc::new(ManualClock::new(UnixTime::from_secs(NOW)));
    let c = client(&server, &store, &clock).await;
    c.login_with_password("u", &Password::new("p"))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(7200));
    store.fail_loads.store(true, Ordering::SeqCst);
    let before = store.loads.load(Ordering::SeqCst);
    let bg = c.spawn_background_refresh();
    tokio::time::sleep(Duration::from_secs(1)).await;
    drop(bg);
    let loads = store.loads.load(Ordering::SeqCst) - before;
    assert!(
        loads < 10,
        "background task loaded the store {loads} times in 1 s"
    );
}

/// A recorded rejection does not stop a refresh that a 401 queued: the dead token is tried.
#[tokio::test]
async fn a_queued_refresh_is_not_sent_after_a_recorded_rejection() {
    let server = Arc::new(Server::default());
    let store = Arc::new(Flaky::default());
    let clock = Arc::new(ManualClock::new(UnixTime::from_secs(NOW)));
    let a = client(&server, &store, &clock).await;
    a.login_with_password("u", &Password::new("p"))
        .await
        .unwrap();
    let b = client(&server, &store, &clock).await;
    // r0 dies at the server (revoked); B finds out and records it.
    server.valid_refresh.lock().unwrap().clear();
    assert!(b.refresh().await.unwrap_err().is_reauthorization_required());
    assert!(store
        .load("default")
        .await
        .unwrap()
        .unwrap()
        .value
        .reauthorization_required
        .is_some());
    // A's API call gets a 401: A should learn from the store and not try r0.
    server.api_401.store(true, Ordering::SeqCst);
    let before = server.token_requests.load(Ordering::SeqCst);
    let err = a
        .get::<serde_json::Value>("Console/Authentication/Info")
        .await
        .unwrap_err();
    assert!(err.is_reauthorization_required(), "{err:?}");
    assert_eq!(
        server.token_requests.load(Ordering::SeqCst),
        before,
        "A tried the refresh token recorded as dead"
    );
}

/// Two spellings of one directory: the second client fails with `Locked`.
#[tokio::test]
async fn store_path_spellings_of_one_directory_share_one_store() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let server = Arc::new(Server::default());
    let build = |path: std::path::PathBuf, profile: &'static str| {
        offline()
            .transport(server.clone())
            .profile(profile)
            .store_path(path)
            .build()
    };
    let _a = build(dir.path().join("tokens"), "a").await.unwrap();
    let b = build(dir.path().join("sub").join("..").join("tokens"), "b").await;
    assert!(b.is_ok(), "{b:?}");
}
