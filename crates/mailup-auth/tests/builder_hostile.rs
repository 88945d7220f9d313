//! Hostile review of issue 17's builder: the skew and the endpoints live in the core's
//! configuration only, reached through the forwarding setters and through `config(|c| ..)`;
//! whichever is called last wins. Values out of range are typed errors at `build`, and extreme
//! but accepted values do not panic at the first token operation.

mod support;

use std::sync::Arc;
use std::time::Duration;

use mailup_auth::core::ConfigError;
use mailup_auth::{Backoff, ErrorKind, Password};

use support::Setup;

#[tokio::test]
async fn the_last_of_refresh_skew_and_config_refresh_skew_wins() {
    let setup = Setup::new();
    let forwarded_last = setup
        .builder()
        .config(|c| c.refresh_skew(Duration::from_secs(20)))
        .refresh_skew(Duration::from_secs(10))
        .build()
        .await
        .unwrap();
    assert_eq!(
        forwarded_last.config().refresh_skew(),
        Duration::from_secs(10)
    );
    let configured_last = setup
        .builder()
        .refresh_skew(Duration::from_secs(10))
        .config(|c| c.refresh_skew(Duration::from_secs(20)))
        .build()
        .await
        .unwrap();
    assert_eq!(
        configured_last.config().refresh_skew(),
        Duration::from_secs(20)
    );
    // The skew the client acts on is the configured one: a token 30 s from expiry is due
    // with a 60 s skew (set through `config`), not with the 10 s set before it.
    let client = setup
        .builder()
        .refresh_skew(Duration::from_secs(10))
        .config(|c| c.refresh_skew(Duration::from_secs(60)))
        .build()
        .await
        .unwrap();
    client
        .login_with_password("a", &Password::new("pw"))
        .await
        .unwrap();
    setup.clock.advance(Duration::from_secs(3600 - 30));
    assert!(!client.status().has_fresh_token);
}

#[tokio::test]
async fn the_last_of_token_url_and_config_token_url_wins() {
    let setup = Setup::new();
    let client = setup
        .builder()
        .token_url("http://127.0.0.1:1/first")
        .config(|c| c.token_url("http://127.0.0.1:2/second"))
        .build()
        .await
        .unwrap();
    assert_eq!(
        client.config().endpoints().token.as_str(),
        "http://127.0.0.1:2/second"
    );
    let client = setup
        .builder()
        .config(|c| c.token_url("http://127.0.0.1:2/second"))
        .token_url("http://127.0.0.1:1/first")
        .build()
        .await
        .unwrap();
    assert_eq!(
        client.config().endpoints().token.as_str(),
        "http://127.0.0.1:1/first"
    );
}

/// The exception, as documented on `auth_base`: an explicit URL wins over the base URL
/// whichever came last (a test that points a builder at the emulator with `auth_base` after
/// `endpoints(Endpoints::mailup())` still talks to MailUp).
#[tokio::test]
async fn an_explicit_token_url_wins_over_auth_base_whatever_the_order() {
    let setup = Setup::new();
    for builder in [
        setup
            .builder()
            .token_url("http://127.0.0.1:1/explicit")
            .auth_base("http://127.0.0.1:2"),
        setup
            .builder()
            .auth_base("http://127.0.0.1:2")
            .config(|c| c.token_url("http://127.0.0.1:1/explicit")),
    ] {
        let client = builder.build().await.unwrap();
        assert_eq!(
            client.config().endpoints().token.as_str(),
            "http://127.0.0.1:1/explicit"
        );
        assert!(client
            .config()
            .endpoints()
            .logon
            .as_str()
            .starts_with("http://127.0.0.1:2/"));
    }
}

#[tokio::test]
async fn a_backoff_whose_maximum_is_below_its_start_is_a_typed_error_by_either_path() {
    let bad = Backoff {
        initial: Duration::from_secs(10),
        max: Duration::from_secs(1),
    };
    let zero = Backoff {
        initial: Duration::ZERO,
        max: Duration::from_secs(1),
    };
    let setup = Setup::new();
    for backoff in [bad, zero] {
        for error in [
            setup.builder().backoff(backoff).build().await.unwrap_err(),
            setup
                .builder()
                .config(|c| c.backoff(backoff))
                .build()
                .await
                .unwrap_err(),
        ] {
            assert!(
                matches!(
                    error.kind(),
                    ErrorKind::Config(ConfigError::OutOfRange {
                        field: "backoff",
                        ..
                    })
                ),
                "{backoff:?}: {error:?}"
            );
        }
    }
}

/// A skew of zero and one of `Duration::MAX` are accepted (the skew is capped at half of each
/// token's lifetime); a token operation timeout of `Duration::MAX` ("no bound") too. None of
/// them may panic once the client works.
#[tokio::test]
async fn extreme_skews_and_operation_timeouts_do_not_panic_a_token_operation() {
    let setup = Setup::new();
    for (skew, timeout) in [
        (Duration::ZERO, Duration::from_secs(30)),
        (Duration::MAX, Duration::from_secs(30)),
        (Duration::from_secs(60), Duration::MAX),
    ] {
        let client = Arc::new(
            setup
                .builder()
                .refresh_skew(skew)
                .token_operation_timeout(timeout)
                .build()
                .await
                .unwrap(),
        );
        client
            .login_with_password("a", &Password::new("pw"))
            .await
            .unwrap_or_else(|e| panic!("{skew:?}/{timeout:?}: {e}"));
        client.access_token().await.unwrap();
        client.refresh().await.unwrap();
        setup.clock.advance(Duration::from_secs(7200));
        client.access_token().await.unwrap();
        client.logout().await.unwrap();
    }
}
