//! Unit tests of call order and counts with mocked ports: persistence happens before a new
//! token is handed out, a failed save hands out nothing, and a 401 causes exactly one refresh
//! and one retry.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use http::StatusCode;
use mailup_auth::core::{ProfileRecord, StoreError, TokenStore, Transport, Versioned};
use mailup_auth::{
    AccessToken, ErrorKind, HttpRequest, HttpResponse, MailUpClient, ManualClock, RefreshToken,
    TokenSet, TransportError, UnixTime,
};
use mockall::{mock, predicate, Sequence};

mod support;

use support::{offline_builder, NOW};

mock! {
    pub Store {}
    #[async_trait]
    impl TokenStore for Store {
        async fn load(&self, profile: &str) -> Result<Option<Versioned<ProfileRecord>>, StoreError>;
        async fn save(&self, profile: &str, record: &ProfileRecord, expected: Option<u64>) -> Result<u64, StoreError>;
        async fn delete(&self, profile: &str) -> Result<(), StoreError>;
        async fn profiles(&self) -> Result<Vec<String>, StoreError>;
        async fn consume_once(&self, key: &str, expires_at: UnixTime, now: UnixTime) -> Result<bool, StoreError>;
    }
}

mock! {
    pub Net {}
    #[async_trait]
    impl Transport for Net {
        async fn send(&self, request: HttpRequest) -> Result<HttpResponse, TransportError>;
    }
}

fn expired_record() -> Versioned<ProfileRecord> {
    Versioned {
        version: 1,
        value: ProfileRecord::with_tokens(TokenSet {
            access_token: AccessToken::new("old-access"),
            refresh_token: Some(RefreshToken::new("old-refresh")),
            expires_at: UnixTime::from_secs(NOW - 10),
            obtained_at: UnixTime::from_secs(NOW - 3610),
            token_type: None,
            scope: None,
        }),
    }
}

fn fresh_record() -> Versioned<ProfileRecord> {
    let mut record = expired_record();
    if let Some(tokens) = record.value.tokens.as_mut() {
        tokens.expires_at = UnixTime::from_secs(NOW + 3600);
    }
    record
}

fn is_refresh(request: &HttpRequest) -> bool {
    request.url().path() == "/Authorization/OAuth/Token"
        && String::from_utf8_lossy(request.body()).contains("grant_type=refresh_token")
}

fn token_response() -> Result<HttpResponse, TransportError> {
    Ok(HttpResponse::new(
        StatusCode::OK,
        r#"{"access_token":"new-access","expires_in":3600,"refresh_token":"new-refresh"}"#,
    ))
}

async fn client(store: MockStore, net: MockNet) -> MailUpClient {
    let clock = Arc::new(ManualClock::new(UnixTime::from_secs(NOW)));
    offline_builder(Arc::new(net), Arc::new(store), clock)
        .build()
        .await
        .unwrap()
}

#[tokio::test]
async fn refreshed_tokens_are_persisted_before_they_are_returned() {
    let mut seq = Sequence::new();
    let mut store = MockStore::new();
    let mut net = MockNet::new();
    let saved = Arc::new(AtomicBool::new(false));

    // build(): load the profile.
    store
        .expect_load()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(Some(expired_record())));
    // access_token(): re-check the store, then refresh, then save, in that order.
    store
        .expect_load()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(Some(expired_record())));
    net.expect_send()
        .withf(is_refresh)
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| token_response());
    let saved_in_store = saved.clone();
    store
        .expect_save()
        .withf(|profile, record, expected| {
            profile == "default"
                && *expected == Some(1)
                && record.tokens.as_ref().is_some_and(|t| {
                    t.access_token.secret() == "new-access"
                        && t.refresh_token.as_ref().map(|r| r.secret()) == Some("new-refresh")
                })
        })
        .times(1)
        .in_sequence(&mut seq)
        .returning(move |_, _, _| {
            saved_in_store.store(true, Ordering::SeqCst);
            Ok(2)
        });

    let client = client(store, net).await;
    assert!(client.cached_access_token().is_none());
    let token = client.access_token().await.unwrap();
    assert!(
        saved.load(Ordering::SeqCst),
        "the token was returned before it was saved"
    );
    assert_eq!(token.secret(), "new-access");
    assert_eq!(client.status().store_version, Some(2));
    // Now cached: no more calls on either mock (they would panic).
    assert_eq!(client.access_token().await.unwrap().secret(), "new-access");
}

#[tokio::test]
async fn a_failed_save_hands_out_nothing_and_is_retried_without_a_second_refresh() {
    let mut seq = Sequence::new();
    let mut store = MockStore::new();
    let mut net = MockNet::new();
    store
        .expect_load()
        .times(2)
        .in_sequence(&mut seq)
        .returning(|_| Ok(Some(expired_record())));
    net.expect_send()
        .withf(is_refresh)
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| token_response());
    store
        .expect_save()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _| Err(StoreError::io_context("disk full")));
    // Second call: store unchanged, the unsaved tokens are saved first, then handed out.
    store
        .expect_load()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(Some(expired_record())));
    store
        .expect_save()
        .with(
            predicate::eq("default"),
            predicate::always(),
            predicate::eq(Some(1)),
        )
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _| Ok(2));

    let client = client(store, net).await;
    let err = client.access_token().await.unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Store(StoreError::Io { .. })),
        "{err:?}"
    );
    assert!(client.cached_access_token().is_none());
    assert_eq!(client.access_token().await.unwrap().secret(), "new-access");
}

#[tokio::test]
async fn a_401_causes_one_refresh_and_one_retry() {
    let mut seq = Sequence::new();
    let mut store = MockStore::new();
    let mut net = MockNet::new();
    store
        .expect_load()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(Some(fresh_record())));
    net.expect_send()
        .withf(|r| r.url().path().ends_with("/Console/Authentication/Info"))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|r| {
            assert_eq!(r.headers()["authorization"], "Bearer old-access");
            Ok(HttpResponse::new(
                StatusCode::UNAUTHORIZED,
                r#"{"ErrorCode":"401","ErrorDescription":"Authorization error: Access token is expired","ErrorName":"Unauthorized","ErrorStack":null}"#,
            ))
        });
    store
        .expect_load()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(Some(fresh_record())));
    net.expect_send()
        .withf(is_refresh)
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| token_response());
    store
        .expect_save()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _| Ok(2));
    net.expect_send()
        .withf(|r| r.url().path().ends_with("/Console/Authentication/Info"))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|r| {
            assert_eq!(r.headers()["authorization"], "Bearer new-access");
            Ok(HttpResponse::new(StatusCode::OK, r#"{"UID":"388"}"#))
        });

    let client = client(store, net).await;
    let info: serde_json::Value = client.get("Console/Authentication/Info").await.unwrap();
    assert_eq!(info["UID"], "388");
}

#[tokio::test]
async fn a_second_401_after_the_refresh_is_an_error_not_a_loop() {
    let mut store = MockStore::new();
    let mut net = MockNet::new();
    store
        .expect_load()
        .times(2)
        .returning(|_| Ok(Some(fresh_record())));
    store.expect_save().times(1).returning(|_, _, _| Ok(2));
    net.expect_send()
        .withf(is_refresh)
        .times(1)
        .returning(|_| token_response());
    net.expect_send()
        .withf(|r| !is_refresh(r))
        .times(2)
        .returning(|_| {
            Ok(HttpResponse::new(
                StatusCode::UNAUTHORIZED,
                r#"{"ErrorCode":"401"}"#,
            ))
        });

    let client = client(store, net).await;
    let err = client
        .get::<serde_json::Value>("Console/Authentication/Info")
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.kind(),
            ErrorKind::Api(mailup_auth::ApiError::Unauthorized(_))
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn logout_forgets_nothing_when_the_store_cannot_be_written() {
    let mut store = MockStore::new();
    let net = MockNet::new();
    store
        .expect_load()
        .times(1)
        .returning(|_| Ok(Some(fresh_record())));
    store
        .expect_load()
        .times(1)
        .returning(|_| Err(StoreError::io_context("disk on fire")));
    let client = client(store, net).await;
    let err = client.logout().await.unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Store(StoreError::Io { .. })),
        "{err:?}"
    );
    // Still logged in, here as in the store.
    assert_eq!(client.access_token().await.unwrap().secret(), "old-access");
}
