#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
// Public types stay open to new variants and fields unless one is exhaustive on purpose (each
// such item says why at its `allow`).
#![warn(clippy::exhaustive_enums, clippy::exhaustive_structs)]

// The facade's tests (integration and unit) share one helper module, `tests/support`, which
// names this crate `mailup_auth` as an integration test does.
#[cfg(test)]
extern crate self as mailup_auth;
#[cfg(test)]
#[path = "../tests/support/mod.rs"]
mod test_support;

mod accounts;
mod client;
mod clock;
mod error;
#[cfg(feature = "loopback")]
mod loopback;
#[cfg(feature = "reqwest-middleware")]
mod middleware;
mod scheduler;
#[cfg(feature = "tower")]
mod tower;

pub use crate::accounts::{
    AccountAuthorization, AccountState, AccountSummary, MailUpAccounts, MailUpAccountsBuilder,
    PendingAccountAuthorization, DEFAULT_REFRESH_CONCURRENCY,
};
#[cfg(feature = "sled")]
pub use crate::client::default_store_dir;
#[cfg(feature = "loopback")]
pub use crate::client::LoopbackLogin;
pub use crate::client::{
    AuthorizationStart, BackgroundRefresh, MailUpClient, MailUpClientBuilder, Page, Pages,
    RateLimitRetry, Service, ServiceClient, SessionStatus, TokenChange, TokensHook,
    DEFAULT_MAX_PAGES, DEFAULT_TOKEN_OPERATION_TIMEOUT,
};
pub use crate::clock::{Clock, Entropy, ManualClock, OsEntropy, SystemClock};
pub use crate::error::{Error, ErrorKind, Result};
#[cfg(feature = "loopback")]
pub use crate::loopback::{
    LoopbackCallback, LoopbackError, LoopbackRedirect, DEFAULT_CALLBACK_PATH,
};
#[cfg(feature = "reqwest-middleware")]
pub use crate::middleware::MailUpMiddleware;
pub use crate::scheduler::SchedulerStats;
#[cfg(feature = "tower")]
pub use crate::tower::{MailUpLayer, MailUpService, MailUpServiceError, MailUpServiceFuture};

/// The sans-IO core, re-exported.
pub use mailup_auth_core as core;
// Every type that appears in the facade's public signatures or in `ErrorKind`'s variants, so an
// application names them from `mailup_auth` alone.
/// The `async_trait` attribute, to implement [`Transport`] or [`TokenStore`] without adding
/// the crate yourself.
pub use async_trait::async_trait;
/// The `http` crate this library's request and response types are built on (the same version).
pub use http;
pub use mailup_auth_core::ApiPathError;
pub use mailup_auth_core::{
    AccessToken, ApiError, AuthorizationCode, AuthorizationError, Backoff, CallbackError,
    ClientConfig, ClientSecret, ConfigError, CsrfState, Endpoints, ErrorSource, Grant, HttpRequest,
    HttpResponse, KeyProblem, LeaseAttempt, LeaseGuard, MailUpError, MemoryTokenStore, Password,
    PendingAuthorization, ProfileRecord, ReauthReason, RefreshLease, RefreshToken, SessionState,
    StoreError, StoredClient, StoredProfile, TokenError, TokenSet, TokenStore, Transport,
    TransportError, TransportErrorKind, UnixTime, Url, Versioned,
};
#[cfg(feature = "reqwest")]
pub use mailup_auth_http::ReqwestTransport;
#[cfg(all(feature = "redis", not(feature = "sled")))]
pub use mailup_auth_store_redis::KeySource;
#[cfg(feature = "redis")]
pub use mailup_auth_store_redis::{RedisRefreshLease, RedisTokenStore};
#[cfg(feature = "sled")]
pub use mailup_auth_store_sled::{KeySource, SledRefreshLease, SledTokenStore, WriteThread};
