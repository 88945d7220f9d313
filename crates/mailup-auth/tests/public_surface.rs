//! What an application names from `mailup_auth` alone: every type in the facade's public
//! signatures and in `ErrorKind`'s variants, the `http` crate and `async_trait`; and the status
//! types an application serves as JSON (their shape, and no secret in them).

use std::sync::Arc;

// Each of these must resolve from the facade, with no `mailup_auth_core` in the manifest.
#[allow(unused_imports)]
use mailup_auth::{
    async_trait, http, AccessToken, ApiError, ApiPathError, AuthorizationCode, AuthorizationError,
    Backoff, CallbackError, ClientConfig, ClientSecret, ConfigError, Endpoints, Error, ErrorKind,
    Grant, HttpRequest, HttpResponse, LoopbackError, MailUpClient, MemoryTokenStore, Password,
    PendingAuthorization, ReauthReason, SessionState, SessionStatus, StoreError, TokenError,
    TokenStore, Transport, TransportError, TransportErrorKind, UnixTime, Url,
};
use mailup_auth_emulator::{
    Emulator, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_PASSWORD, DEFAULT_USERNAME,
};

/// A transport written with only the facade's re-exports: `async_trait` and `http` included.
struct Canned;

#[async_trait]
impl Transport for Canned {
    async fn send(&self, _request: HttpRequest) -> Result<HttpResponse, TransportError> {
        Ok(HttpResponse::new(http::StatusCode::IM_A_TEAPOT, "{}"))
    }
}

#[test]
fn every_error_variant_payload_is_nameable_from_the_facade() {
    // Build each variant from types named through `mailup_auth` only.
    let config: ConfigError = ClientConfig::builder("id", ClientSecret::new("s"))
        .redirect_uri("not a url")
        .build()
        .unwrap_err();
    let errors: Vec<Error> = vec![
        Error::from(config),
        Error::from(
            mailup_auth::core::api_url(&Url::parse("https://x.test/a").unwrap(), "ftp://x/y")
                .unwrap_err(),
        ),
        Error::from(CallbackError::StateMismatch),
        Error::from(ErrorKind::Login(TokenError::Transport(
            TransportError::new(TransportErrorKind::Connect, "refused"),
        ))),
    ];
    for error in &errors {
        assert!(!error.to_string().is_empty());
    }
    let path: ApiPathError =
        mailup_auth::core::api_url(&Url::parse("https://x.test/a").unwrap(), "ftp://x/y")
            .unwrap_err();
    assert!(path.to_string().contains("http"));
    let _: Option<AuthorizationError> = None;
    let _: Option<AuthorizationCode> = Some(AuthorizationCode::new("c"));
    let _: Option<TransportErrorKind> = None;
    let _: Option<Grant> = Some(Grant::RefreshToken);
}

#[test]
fn an_error_is_one_pointer_and_a_token_result_two_words() {
    // Every call returns a `Result<_, Error>`: a large error makes every successful result as
    // large, moved through the stack on the hot path (the cached `access_token().await`).
    use std::mem::size_of;
    assert_eq!(size_of::<Error>(), size_of::<usize>());
    assert!(size_of::<Result<AccessToken, Error>>() <= 2 * size_of::<usize>());
    assert!(size_of::<mailup_auth::Result<()>>() <= size_of::<usize>());
}

#[tokio::test]
async fn a_transport_built_from_re_exports_plugs_into_the_builder() {
    let client = MailUpClient::builder("id", ClientSecret::new("s"))
        .transport(Arc::new(Canned))
        .memory_store()
        .build()
        .await
        .unwrap();
    assert_eq!(client.profile(), "default");
}

#[tokio::test]
async fn the_status_serializes_without_secrets_and_debugs_short() {
    let emulator = Emulator::builder().start().await.unwrap();
    let client = MailUpClient::builder(DEFAULT_CLIENT_ID, ClientSecret::new(DEFAULT_CLIENT_SECRET))
        .auth_base(emulator.base_url().as_str())
        .memory_store()
        .build()
        .await
        .unwrap();
    let before = serde_json::to_value(client.status()).unwrap();
    assert_eq!(before["state"], "NoTokens");
    assert_eq!(before["has_fresh_token"], false);
    assert!(before["expires_at"].is_null());

    client
        .login_with_password(DEFAULT_USERNAME, &Password::new(DEFAULT_PASSWORD))
        .await
        .unwrap();
    let status = client.status();
    let json = serde_json::to_value(&status).unwrap();
    let base = emulator
        .base_url()
        .as_str()
        .trim_end_matches('/')
        .to_owned();
    assert_eq!(
        json,
        serde_json::json!({
            "profile": "default",
            "client_id": DEFAULT_CLIENT_ID,
            "endpoints": {
                "logon": format!("{base}/Authorization/OAuth/LogOn"),
                "token": format!("{base}/Authorization/OAuth/Token"),
                "api_base": format!("{base}/API/v1.1/Rest/ConsoleService.svc"),
            },
            "state": "Authorized",
            "has_fresh_token": true,
            "expires_at": status.expires_at.unwrap().as_millis(),
            "obtained_at": status.obtained_at.unwrap().as_millis(),
            "last_refreshed_at": null,
            "has_refresh_token": true,
            "store_version": status.store_version.unwrap(),
            "reauthorization_reason": null,
            "refresh_error": null,
        })
    );

    let text = json.to_string();
    let debug = format!("{status:?}");
    let access = client.access_token().await.unwrap();
    for secret in [DEFAULT_CLIENT_SECRET, DEFAULT_PASSWORD, access.secret()]
        .into_iter()
        .chain(emulator.issued_refresh_tokens().iter().map(String::as_str))
    {
        assert!(!text.contains(secret), "the JSON holds a secret");
        assert!(!debug.contains(secret), "the Debug holds a secret");
    }
    // URLs as strings, not `Url`'s fields (serialization, host, port, path offsets...).
    assert!(debug.contains(&format!("logon: \"{base}/Authorization/OAuth/LogOn\"")));
    assert!(!debug.contains("serialization"), "{debug}");
    assert!(!debug.contains("host_start"), "{debug}");
    emulator.shutdown().await;
}

#[tokio::test]
async fn an_unencodable_request_body_keeps_serde_jsons_error_as_the_source() {
    use std::error::Error as _;

    let client = MailUpClient::builder("id", ClientSecret::new("s"))
        .transport(Arc::new(Canned))
        .memory_store()
        .build()
        .await
        .unwrap();
    // JSON object keys must be strings: a map keyed by pairs cannot be encoded.
    let body: std::collections::BTreeMap<(u8, u8), u8> = [((1, 2), 3)].into();
    let error = client
        .post::<_, serde_json::Value>("Console/List", &body)
        .await
        .unwrap_err();
    assert!(
        matches!(error.kind(), ErrorKind::Decode { .. }),
        "{error:?}"
    );
    let source = error.source().expect("serde_json's error is kept");
    let json = source
        .downcast_ref::<serde_json::Error>()
        .expect("the source is serde_json's error itself");
    assert!(json.to_string().contains("key must be a string"), "{json}");
    assert!(error.to_string().contains(&json.to_string()), "{error}");
}

#[test]
fn a_loopback_io_error_keeps_the_original_as_the_source() {
    use std::error::Error as _;

    let error = mailup_auth::LoopbackError::Io(mailup_auth::ErrorSource::new(std::io::Error::new(
        std::io::ErrorKind::AddrNotAvailable,
        "no address",
    )));
    let source = error.source().expect("the io::Error is kept");
    assert_eq!(
        source
            .downcast_ref::<std::io::Error>()
            .map(std::io::Error::kind),
        Some(std::io::ErrorKind::AddrNotAvailable)
    );
    assert_eq!(error.to_string(), "loopback listener I/O error: no address");
}
