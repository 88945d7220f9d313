//! `Error` is a box around `ErrorKind`: for each kind, the error reads as the kind did when it
//! was the error itself (message, `Debug`, chain of sources), and `is_transient()` /
//! `retry_after()` answer as they did (the table below is the match `Error` had before the box).

use std::error::Error as _;
use std::time::Duration;

use mailup_auth::core::{
    ApiError, MailUpError, OAuthErrorCode, ReauthReason, StoreError, TokenError, TransportError,
    TransportErrorKind,
};
use mailup_auth::{Error, ErrorKind};

fn mailup_error(status: u16) -> MailUpError {
    let mut error = MailUpError::default();
    error.status = status;
    error
}

fn oauth(error: OAuthErrorCode, status: u16) -> TokenError {
    TokenError::OAuth {
        status,
        error,
        description: None,
    }
}

fn timeout() -> TransportError {
    TransportError::new(TransportErrorKind::Timeout, "timed out")
}

/// Each kind (built twice: one boxed, one kept to compare), transient?, `retry_after`.
type Case = (fn() -> ErrorKind, bool, Option<Duration>);

const CASES: &[Case] = &[
    (
        || ErrorKind::ReauthorizationRequired(ReauthReason::NoTokens),
        false,
        None,
    ),
    (
        || ErrorKind::TokenEndpointUnavailable {
            error: TokenError::Transport(timeout()),
            attempts: 4,
        },
        true,
        None,
    ),
    (
        || ErrorKind::Login(oauth(OAuthErrorCode::InvalidGrant, 400)),
        false,
        None,
    ),
    (
        || ErrorKind::Login(oauth(OAuthErrorCode::ServerError, 500)),
        true,
        None,
    ),
    (
        || ErrorKind::TokensNeverFresh {
            skew: Duration::from_secs(60),
        },
        false,
        None,
    ),
    (
        || ErrorKind::UntrustedOrigin("http://127.0.0.1:1".into()),
        false,
        None,
    ),
    (|| ErrorKind::Cancelled, false, None),
    (
        || ErrorKind::Api(ApiError::Client(mailup_error(404))),
        false,
        None,
    ),
    (
        || ErrorKind::Api(ApiError::Server(mailup_error(503))),
        true,
        None,
    ),
    (
        || {
            ErrorKind::Api(ApiError::RateLimited {
                retry_after: Some(Duration::from_secs(7)),
                error: mailup_error(429),
            })
        },
        true,
        Some(Duration::from_secs(7)),
    ),
    (|| ErrorKind::Transport(timeout()), true, None),
    (
        || {
            ErrorKind::Store(StoreError::Unavailable {
                store: "redis://127.0.0.1:1".into(),
                message: "connection refused".into(),
            })
        },
        true,
        None,
    ),
    (
        || {
            ErrorKind::Store(StoreError::Corrupt {
                profile: "p".into(),
                message: "envelope".into(),
            })
        },
        false,
        None,
    ),
    (
        || ErrorKind::Decode {
            context: "cannot encode the request body".into(),
            source: Some(mailup_auth::core::ErrorSource::new(std::io::Error::other(
                "underlying",
            ))),
        },
        false,
        None,
    ),
    (
        || ErrorKind::Pagination("page 3 came back for page 2".into()),
        false,
        None,
    ),
    (|| ErrorKind::Missing("no transport"), false, None),
];

/// The messages of `error`'s chain of sources, outermost first.
fn chain(error: &(dyn std::error::Error + 'static)) -> Vec<String> {
    let mut messages = Vec::new();
    let mut next = error.source();
    while let Some(source) = next {
        assert!(messages.len() < 16, "a chain of sources that does not end");
        messages.push(source.to_string());
        next = source.source();
    }
    messages
}

#[test]
fn every_kind_reads_and_answers_as_it_did_before_the_box() {
    for (kind, transient, retry_after) in CASES {
        let expected = kind();
        let error = Error::from(kind());
        assert_eq!(error.to_string(), expected.to_string());
        assert_eq!(format!("{error:?}"), format!("{expected:?}"));
        assert_eq!(chain(&error), chain(&expected), "{error}");
        assert_eq!(error.is_transient(), *transient, "{error}");
        assert_eq!(error.retry_after(), *retry_after, "{error}");
        assert_eq!(
            error.is_reauthorization_required(),
            matches!(expected, ErrorKind::ReauthorizationRequired(_))
        );
        assert_eq!(format!("{:?}", error.into_kind()), format!("{expected:?}"));
    }
}

#[test]
fn the_box_adds_no_level_to_the_chain() {
    let error = Error::from(ErrorKind::TokenEndpointUnavailable {
        error: TokenError::Transport(timeout()),
        attempts: 1,
    });
    // The first source is the token error itself, not the kind.
    let first = error.source().expect("the token error");
    assert!(first.downcast_ref::<TokenError>().is_some(), "{first:?}");
}
