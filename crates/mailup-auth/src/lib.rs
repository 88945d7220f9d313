#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod accounts;
mod client;
pub mod clock;
mod error;
pub mod loopback;
mod scheduler;

pub use crate::accounts::{
    AccountAuthorization, AccountState, AccountSummary, MailUpAccounts, MailUpAccountsBuilder,
    PendingAccountAuthorization, DEFAULT_REFRESH_CONCURRENCY,
};
#[cfg(feature = "sled")]
pub use crate::client::default_store_dir;
pub use crate::client::{
    AuthorizationStart, BackgroundRefresh, LoopbackLogin, MailUpClient, MailUpClientBuilder,
    RateLimitRetry, SessionStatus, TokenChange, TokensHook, DEFAULT_TOKEN_OPERATION_TIMEOUT,
};
pub use crate::clock::{Clock, Entropy, ManualClock, OsEntropy, SystemClock};
pub use crate::error::{Error, Result};
pub use crate::loopback::{LoopbackCallback, LoopbackError, LoopbackRedirect};
pub use crate::scheduler::SchedulerStats;

/// The sans-IO core, re-exported.
pub use mailup_auth_core as core;
pub use mailup_auth_core::{
    AccessToken, ApiError, Backoff, ClientSecret, CsrfState, Endpoints, HttpRequest, HttpResponse,
    KeyProblem, LeaseAttempt, LeaseGuard, MailUpError, MemoryTokenStore, Password,
    PendingAuthorization, ProfileRecord, ReauthReason, RefreshLease, RefreshToken, SessionState,
    StoreError, StoredClient, TokenSet, TokenStore, Transport, TransportError, UnixTime, Url,
};
#[cfg(feature = "reqwest")]
pub use mailup_auth_http::ReqwestTransport;
#[cfg(feature = "redis")]
pub use mailup_auth_store_redis::{RedisRefreshLease, RedisTokenStore};
#[cfg(feature = "sled")]
pub use mailup_auth_store_sled::{KeySource, SledRefreshLease, SledTokenStore};
