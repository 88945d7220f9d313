#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
// Public types stay open to new variants and fields unless one is exhaustive on purpose (each
// such item says why at its `allow`).
#![warn(clippy::exhaustive_enums, clippy::exhaustive_structs)]

// Every module is private: the items below are the public surface, each reachable by one path
// (`mailup_auth_core::Session`). A module is where code lives, not part of the API, so code can
// move between files without a breaking release.
mod api;
mod authorize;
mod config;
mod error_source;
mod http;
mod ports;
mod requests;
mod secret;
mod session;
mod time;
mod token;

// The state machine and what it takes and gives.
pub use crate::session::{
    Event, ReauthReason, RefreshNotStarted, RequestId, Session, SessionState, TokenAccess,
    TokenRequest,
};
pub use crate::time::UnixTime;

// Configuration.
pub use crate::config::{
    Backoff, ClientConfig, ClientConfigBuilder, ConfigError, Endpoints,
    DEFAULT_AUTHORIZATION_TIMEOUT, DEFAULT_EXPIRES_IN, DEFAULT_REFRESH_SKEW, MAILUP_AUTH_BASE,
    MAILUP_CONSOLE_API_BASE, MAILUP_LOGON_URL, MAILUP_TOKEN_URL,
};

// The authorization step (LogOn URL, callback).
pub use crate::authorize::{
    AuthorizationError, AuthorizationErrorCode, CallbackError, PendingAuthorization,
};

// Tokens, token responses and their errors.
pub use crate::requests::Grant;
pub use crate::token::{
    is_header_safe_token, parse_token_response, MalformedBody, OAuthErrorCode, TokenError,
    TokenResponse, TokenSet, EXPIRY_SAFETY, MAX_EXPIRES_IN_SECS,
};

// Secrets.
#[cfg(feature = "serde")]
pub use crate::secret::ExposeSecrets;
pub use crate::secret::{
    AccessToken, AuthorizationCode, ClientSecret, CsrfState, Password, RefreshToken,
};

// The underlying error that `StoreError::Io` and `TransportError` keep as `source()`.
pub use crate::error_source::ErrorSource;

// HTTP as data, and the transport port.
pub use crate::http::{
    HttpRequest, HttpResponse, TransportError, TransportErrorKind, DEFAULT_API_RESPONSE_LIMIT,
    TOKEN_RESPONSE_LIMIT,
};
pub use crate::ports::Transport;

// MailUp API calls (bearer, 401 → refresh → retry, error classification).
pub use crate::api::{
    api_url, bearer_header, classify_api_response, classify_api_response_at, retry_after,
    retry_after_at, with_bearer, ApiCall, ApiError, ApiPathError, ApiStep, MailUpError,
};

// Token stores: the port, the in-memory store, and the two rules every store implements (profile
// names checked, versions never wrapping), which the conformance scenarios test.
pub use crate::ports::{
    next_version, validate_profile_name, KeyProblem, LeaseAttempt, LeaseGuard, MemoryTokenStore,
    ProfileRecord, RefreshLease, StoreError, StoredClient, StoredProfile, TokenStore, Versioned,
};

// Re-exported so users of the core name the same `http` and `url` versions.
pub use ::http as http_types;
pub use url::Url;

/// Plumbing for this workspace's own crates (the `mailup-auth` facade, its CLI, the stores and
/// the tests): URL checks and token request builders that [`Session`] already applies for you.
///
/// **Not covered by semantic versioning**: anything here may change or go away in a patch
/// release. Nothing in it is needed to drive a [`Session`] or to write a transport or a store.
#[doc(hidden)]
pub mod internal {
    pub use crate::config::{is_loopback_host, parse_http_url};
    pub use crate::requests::{code_exchange_request, password_request, refresh_request};
}
