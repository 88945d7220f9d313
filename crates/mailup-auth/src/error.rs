//! The facade's one error type: what went wrong, typed, and never with a secret inside.
//!
//! [`Error`] is one pointer (its [`ErrorKind`] boxed): every fallible call returns a
//! `Result<T, Error>`, and a large error would make each of those results as large, moved
//! through the stack on every successful call too (the cached `access_token().await` spent
//! most of its time copying a 96-byte result). Errors are rare; the allocation is paid only
//! when one happens.

use std::fmt;
use std::time::Duration;

use mailup_auth_core::ApiPathError;
use mailup_auth_core::{
    ApiError, AuthorizationError, CallbackError, ConfigError, ErrorSource, ReauthReason,
    StoreError, TokenError, TransportError,
};

#[cfg(feature = "loopback")]
use crate::loopback::LoopbackError;

/// A failed facade operation: what went wrong is its [`kind`](Self::kind).
///
/// Match the cases an application acts on and let the rest bubble up; the helpers
/// [`is_reauthorization_required`](Self::is_reauthorization_required),
/// [`is_transient`](Self::is_transient) and [`retry_after`](Self::retry_after) cover the
/// common decisions. [`ErrorKind`] is `#[non_exhaustive]`: keep a `_` arm.
///
/// ```no_run
/// use mailup_auth::{ApiError, ErrorKind, MailUpClient};
///
/// # async fn run(client: MailUpClient) -> Result<(), Box<dyn std::error::Error>> {
/// match client.get::<serde_json::Value>("Console/List/7").await {
///     Ok(list) => println!("{}", list["Name"]),
///     // The refresh token is gone or rejected: send the user through the login again.
///     Err(error) if error.is_reauthorization_required() => println!("please log in again"),
///     Err(error) => match error.kind() {
///         // MailUp's own error JSON, typed: ErrorCode, ErrorName, ErrorDescription.
///         ErrorKind::Api(ApiError::Client(e)) if e.status == 404 => println!("no list 7"),
///         ErrorKind::Api(ApiError::Forbidden(e)) => println!("not allowed: {e}"),
///         // Network trouble, 5xx, 429: worth retrying later.
///         _ if error.is_transient() => {
///             let wait = error.retry_after().unwrap_or(std::time::Duration::from_secs(5));
///             println!("retry in {} s: {error}", wait.as_secs());
///         }
///         _ => return Err(error.into()),
///     },
/// }
/// # Ok(())
/// # }
/// ```
///
/// `Display`, `Debug` and [`source`](std::error::Error::source) are the kind's: the message
/// and the chain of sources read as the kind's do, with no level added by the box.
pub struct Error(Box<ErrorKind>);

// The point of the box: a `Result<AccessToken, Error>` (an `AccessToken` is one `Arc`) stays
// two words. `tests/public_surface.rs` checks the same sizes from outside.
const _: () = assert!(std::mem::size_of::<Error>() == std::mem::size_of::<usize>());
const _: () = assert!(
    std::mem::size_of::<Result<mailup_auth_core::AccessToken, Error>>()
        <= 2 * std::mem::size_of::<usize>()
);

/// What went wrong: the cases of an [`Error`], read with [`Error::kind`] (or taken with
/// [`Error::into_kind`]). Its `Display` is the error's message.
///
/// `#[non_exhaustive]`: keep a `_` arm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The user must authorize again (run the login flow); the library never starts it itself.
    #[error("re-authorization required: {0}")]
    ReauthorizationRequired(ReauthReason),
    /// The token endpoint kept failing transiently (5xx, timeouts, ...) through every retry.
    #[error("token endpoint unavailable after {attempts} attempt(s): {error}")]
    TokenEndpointUnavailable {
        /// The last failure.
        #[source]
        error: TokenError,
        /// Attempts made.
        attempts: u32,
    },
    /// The code exchange or password grant was refused.
    #[error("login failed: {0}")]
    Login(#[source] TokenError),
    /// The token endpoint keeps issuing tokens that are stale on arrival: their `expires_in` is
    /// shorter than the refresh skew. Lower the skew.
    #[error("the token endpoint's tokens expire within the refresh skew ({} s); lower the skew", .skew.as_secs())]
    TokensNeverFresh {
        /// The configured skew.
        skew: Duration,
    },
    /// The access token would go to a URL outside the API base's origin.
    #[error(
        "refusing to send the access token to {0}: not the API base's origin (see `trust_origin`)"
    )]
    UntrustedOrigin(String),
    /// The operation's task was cancelled (the runtime is shutting down).
    #[error("cancelled: the runtime is shutting down")]
    Cancelled,
    /// The authorization callback was rejected (wrong state, denial, no code, ...).
    #[error("authorization callback rejected: {0}")]
    Callback(#[from] CallbackError),
    /// An authorization could not be started.
    #[error("cannot start authorization: {0}")]
    Authorization(#[from] AuthorizationError),
    /// The API answered with an error.
    #[error("MailUp API error: {0}")]
    Api(#[from] ApiError),
    /// An API call got no response.
    #[error("network error: {0}")]
    Transport(#[from] TransportError),
    /// The token store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Invalid configuration.
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    /// An API path or URL is invalid.
    #[error(transparent)]
    InvalidPath(#[from] ApiPathError),
    /// A response body could not be decoded into the requested type (or a request body could
    /// not be encoded). `source()` is the underlying error where it is kept: `serde_json`'s for
    /// a request body, `http`'s for a response that cannot be rebuilt. `serde_json`'s error for
    /// a response body is not kept, on purpose: its message can quote the body; `context` gives
    /// its category, line and column instead.
    #[error("cannot decode the API response: {context}{}", colon_source(source))]
    Decode {
        /// What failed, without the body's content.
        context: String,
        /// The underlying error, kept as `source()` (compared by message, see [`ErrorSource`]).
        source: Option<ErrorSource>,
    },
    /// A paginated collection did not page as MailUp does (another page than asked came
    /// back), or went on past [`Pages::max_pages`](crate::Pages::max_pages).
    #[error("pagination: {0}")]
    Pagination(String),
    /// The loopback redirect listener failed.
    #[cfg(feature = "loopback")]
    #[error("loopback redirect: {0}")]
    Loopback(#[from] LoopbackError),
    /// A building block is missing (e.g. no transport when the `reqwest` feature is off).
    #[error("{0}")]
    Missing(&'static str),
}

impl Error {
    /// What went wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.0
    }

    /// What went wrong, owned (e.g. to keep a payload).
    pub fn into_kind(self) -> ErrorKind {
        *self.0
    }

    /// Whether the user has to run the login flow again.
    pub fn is_reauthorization_required(&self) -> bool {
        matches!(self.kind(), ErrorKind::ReauthorizationRequired(_))
    }

    /// Whether retrying later may help (network or server side trouble).
    pub fn is_transient(&self) -> bool {
        match self.kind() {
            ErrorKind::TokenEndpointUnavailable { .. } | ErrorKind::Transport(_) => true,
            ErrorKind::Api(ApiError::Server(_) | ApiError::RateLimited { .. }) => true,
            ErrorKind::Login(e) => e.is_transient(),
            // The store unreachable or slow, or another process holding the refresh lease.
            ErrorKind::Store(e) => e.is_transient(),
            _ => false,
        }
    }

    /// The API's `Retry-After`, for a rate-limited call.
    pub fn retry_after(&self) -> Option<Duration> {
        match self.kind() {
            ErrorKind::Api(ApiError::RateLimited { retry_after, .. }) => *retry_after,
            _ => None,
        }
    }
}

impl From<ErrorKind> for Error {
    fn from(kind: ErrorKind) -> Self {
        Self(Box::new(kind))
    }
}

/// `?` turns each error a facade call can meet into an [`Error`], as it did into the kind.
macro_rules! from_kind_payload {
    ($($(#[$attr:meta])* $payload:ty),* $(,)?) => {$(
        $(#[$attr])*
        impl From<$payload> for Error {
            fn from(error: $payload) -> Self {
                Self::from(ErrorKind::from(error))
            }
        }
    )*};
}

from_kind_payload!(
    CallbackError,
    AuthorizationError,
    ApiError,
    TransportError,
    StoreError,
    ConfigError,
    ApiPathError,
    #[cfg(feature = "loopback")]
    LoopbackError,
);

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(self.kind())
    }
}

/// The facade's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `": {source}"`, or nothing: the tail of a message whose source may be absent.
fn colon_source(source: &Option<ErrorSource>) -> String {
    source
        .as_ref()
        .map(|source| format!(": {source}"))
        .unwrap_or_default()
}
