//! Hostile review of the facade: the plain-http rule against hosts that look like loopback
//! but are not, and two concurrent completions of one pending web-app authorization.
//! Only 127.0.0.1 is ever contacted; the other hosts below are refused before any I/O.

use std::sync::Arc;
use std::time::Duration;

use mailup_auth::core::{CallbackError, ConfigError};
use mailup_auth::{ClientSecret, Error, ErrorKind, MailUpClient, SledTokenStore, TokenStore};
use mailup_auth_emulator::{Consent, ScriptedBrowser};
use mailup_auth_emulator::{
    Emulator, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_PASSWORD, DEFAULT_USERNAME,
};
use mailup_auth_tests::client_builder;

fn builder() -> mailup_auth::MailUpClientBuilder {
    MailUpClient::builder(DEFAULT_CLIENT_ID, ClientSecret::new(DEFAULT_CLIENT_SECRET))
        .memory_store()
}

#[tokio::test]
async fn hosts_that_only_look_like_loopback_are_refused_and_real_ones_accepted() {
    let refused = [
        "http://127.0.0.1.nip.io:9",
        "http://localhost.:9",
        "http://localhost.evil.example:9",
        "http://0.0.0.0:9",
        "http://[::ffff:127.0.0.1]:9",
        "http://[::]:9",
        "http://127.0.0.1@192.0.2.1:9",
        "http://localhost:9@192.0.2.1/",
        "http://192.0.2.1:9#@127.0.0.1",
        "http://0x7f000001.example:9",
        "http://2130706433.example:9",
    ];
    let mut problems = Vec::new();
    for base in refused {
        for (what, result) in [
            ("auth base", builder().auth_base(base).build().await),
            (
                "token url",
                builder().token_url(format!("{base}/t")).build().await,
            ),
            (
                "redirect uri",
                builder().redirect_uri(format!("{base}/cb")).build().await,
            ),
            ("trusted origin", builder().trust_origin(base).build().await),
        ] {
            if !matches!(
                result.as_ref().map_err(Error::kind),
                Err(ErrorKind::Config(ConfigError::InsecureHttp { .. }))
            ) {
                problems.push(format!("{what} {base}: {:?}", result.map(|_| "accepted")));
            }
        }
    }
    let accepted = [
        "http://127.1:9",
        "http://127.0.0.1:9",
        "http://127.255.255.254:9",
        "http://LOCALHOST:9",
        "http://[::1]:9",
        "http://[0:0:0:0:0:0:0:1]:9",
        "http://2130706433:9",
        "http://0x7f.1:9",
        "HTTP://127.0.0.1:9",
    ];
    for base in accepted {
        if let Err(error) = builder()
            .auth_base(base)
            .redirect_uri(format!("{base}/cb"))
            .trust_origin(base)
            .build()
            .await
        {
            problems.push(format!("{base} refused: {error}"));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

/// Two concurrent completions of one pending authorization, from two clients sharing a
/// store: exactly one exchanges the code, the other is `AlreadyUsed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_completions_exchange_the_code_once() {
    let emulator = Emulator::builder().start().await.unwrap();
    emulator.set_token_latency(Duration::from_millis(200));
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn TokenStore> = Arc::new(SledTokenStore::open(dir.path().join("t")).unwrap());
    let redirect = "http://127.0.0.1:9/callback";
    let make = |profile: &str| {
        client_builder(&emulator)
            .redirect_uri(redirect)
            .store(store.clone())
            .profile(profile)
            .build()
    };
    let a = make("a").await.unwrap();
    let b = make("b").await.unwrap();
    let start = a.begin_authorization().unwrap();
    let callback = ScriptedBrowser::new()
        .authorize(
            &start.url,
            DEFAULT_USERNAME,
            DEFAULT_PASSWORD,
            Consent::Allow,
        )
        .await
        .unwrap();
    let (ra, rb) = tokio::join!(
        a.complete_authorization(&start.pending, callback.as_str()),
        b.complete_authorization(&start.pending, callback.as_str())
    );
    let oks = [ra.is_ok(), rb.is_ok()].iter().filter(|ok| **ok).count();
    assert_eq!(oks, 1, "{ra:?} {rb:?}");
    for r in [ra, rb] {
        if let Err(error) = r {
            assert!(
                matches!(
                    error.kind(),
                    ErrorKind::Callback(CallbackError::AlreadyUsed)
                ),
                "{error:?}"
            );
        }
    }
    assert_eq!(emulator.counters().token_authorization_code, 1);
}
