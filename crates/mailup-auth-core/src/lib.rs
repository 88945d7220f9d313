#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod api;
pub mod authorize;
pub mod config;
pub mod http;
pub mod ports;
pub mod requests;
pub mod secret;
pub mod session;
pub mod time;
pub mod token;

pub use crate::api::{
    api_url, bearer_header, classify_api_response, classify_api_response_at, retry_after_at,
    with_bearer, ApiCall, ApiError, ApiStep, MailUpError,
};
pub use crate::authorize::{
    AuthorizationError, AuthorizationErrorCode, CallbackError, PendingAuthorization,
};
pub use crate::config::{Backoff, ClientConfig, ClientConfigBuilder, ConfigError, Endpoints};
pub use crate::http::{HttpRequest, HttpResponse, TransportError, TransportErrorKind};
pub use crate::ports::{
    KeyProblem, LeaseAttempt, LeaseGuard, MemoryTokenStore, ProfileRecord, RefreshLease,
    StoreError, StoredClient, StoredProfile, TokenStore, Transport, Versioned,
};
pub use crate::requests::Grant;
pub use crate::secret::{
    AccessToken, AuthorizationCode, ClientSecret, CsrfState, Password, RefreshToken,
};
pub use crate::session::{
    Event, ReauthReason, RefreshNotStarted, RequestId, Session, SessionState, TokenAccess,
    TokenRequest,
};
pub use crate::time::UnixTime;
pub use crate::token::{
    is_header_safe_token, parse_token_response, MalformedBody, OAuthErrorCode, TokenError,
    TokenResponse, TokenSet,
};

// Re-exported so users of the core name the same `http` and `url` versions.
pub use ::http as http_types;
pub use url::Url;
