//! The two ports the facade plugs implementations into: [`Transport`] (carry an
//! [`HttpRequest`]) and [`TokenStore`] (keep a profile's tokens durably, with compare-and-swap).
//!
//! They live here, in the core, so that implementation crates (`mailup-auth-http`,
//! `mailup-auth-store-sled`) depend on the core only. The core itself never calls them.
//! [`MemoryTokenStore`] is the in-process reference implementation of the store semantics.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use crate::error_source::{colon_source, ErrorSource};
use crate::http::{HttpRequest, HttpResponse, TransportError};
use crate::secret::ClientSecret;
use crate::time::UnixTime;
use crate::token::TokenSet;

/// Sends HTTP requests. Implementations must not follow redirects and must map every failure
/// below HTTP to a [`TransportError`] (never panic).
///
/// Every status is an answer: a 3xx, 4xx or 5xx comes back as an [`HttpResponse`] with its body
/// (the core reads RFC 6749 and MailUp errors from it), never as a [`TransportError`].
///
/// Response bodies come from an untrusted server, so implementations must honour
/// [`HttpRequest::response_limit`] while streaming: refuse as soon as a `Content-Length` or the
/// bytes read so far exceed it, without buffering the rest, and report
/// [`TransportErrorKind::ResponseTooLarge`](crate::http::TransportErrorKind::ResponseTooLarge).
/// The body they return is wiped on drop ([`HttpResponse::body`]); keep intermediate copies of
/// it, and of the request body, to a minimum.
///
/// An adapter for another client (here a canned answer; see `examples/ureq_blocking.rs` for a
/// real one):
///
/// ```
/// use async_trait::async_trait;
/// use mailup_auth_core::{HttpRequest, HttpResponse, Transport, TransportError};
///
/// struct Canned;
///
/// #[async_trait]
/// impl Transport for Canned {
///     async fn send(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
///         // A real adapter: send `request.into_http()`, stop reading the body past
///         // `request.response_limit()`, and return 4xx/5xx as responses like this one.
///         let _ = request.response_limit();
///         Ok(HttpResponse::new(http::StatusCode::UNAUTHORIZED, r#"{"ErrorCode":"401"}"#))
///     }
/// }
/// ```
#[async_trait]
pub trait Transport: Send + Sync {
    /// Sends one request and returns the whole response (at most `response_limit()` body bytes).
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, TransportError>;
}

/// The client registration and endpoints remembered with a profile, so later runs need only
/// the profile name.
#[allow(
    clippy::exhaustive_structs,
    reason = "stores and the CLI build it with a literal; a new field must break them at compile time so no store silently drops it"
)]
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default))]
pub struct StoredClient {
    /// The client id.
    pub client_id: String,
    /// The client secret (redacted in `Debug`).
    pub client_secret: Option<ClientSecret>,
    /// The LogOn URL used.
    pub logon_url: Option<String>,
    /// The token URL used.
    pub token_url: Option<String>,
    /// The API base used.
    pub api_base: Option<String>,
    /// The redirect URI used.
    pub redirect_uri: Option<String>,
}

/// Everything stored for one profile.
#[allow(
    clippy::exhaustive_structs,
    reason = "stores and the CLI build it with a literal; a new field must break them at compile time so no store silently drops it"
)]
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default))]
pub struct ProfileRecord {
    /// The current tokens; `None` after a logout.
    pub tokens: Option<TokenSet>,
    /// The client this profile logged in with.
    pub client: Option<StoredClient>,
    /// When the tokens were last refreshed (not set by the first login).
    pub last_refreshed_at: Option<UnixTime>,
    /// Set when a refresh with these tokens was rejected: the user must log in again. Lets
    /// other processes (and this one after a restart) know without trying the dead token.
    pub reauthorization_required: Option<String>,
}

impl ProfileRecord {
    /// A record holding just these tokens.
    pub fn with_tokens(tokens: TokenSet) -> Self {
        Self {
            tokens: Some(tokens),
            ..Self::default()
        }
    }
}

/// A stored record with the version that compare-and-swap checks.
#[allow(
    clippy::exhaustive_structs,
    reason = "every store builds it with a literal: a version and a value is all it is"
)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned<T> {
    /// Starts at 1 with the first save and grows by one with every save.
    pub version: u64,
    /// The record as saved under that version.
    pub value: T,
}

/// A token store failure.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Compare-and-swap failed: someone else saved first. Reload and use what is there.
    #[error(
        "profile `{profile}` changed concurrently (expected version {expected:?}, found {found:?})"
    )]
    Conflict {
        /// The profile whose record changed.
        profile: String,
        /// The version the save expected (`None` = expected no record).
        expected: Option<u64>,
        /// The version actually stored (`None` = no record).
        found: Option<u64>,
    },
    /// The store is held by another process.
    #[error("token store at {path} is in use ({message})")]
    Locked {
        /// The store's location (a directory).
        path: String,
        /// Details from the storage engine.
        message: String,
    },
    /// A stored record cannot be read.
    #[error("stored record for profile `{profile}` is corrupt: {message}")]
    Corrupt {
        /// The profile whose record cannot be read.
        profile: String,
        /// What is wrong (never the record's content).
        message: String,
    },
    /// The store's files are damaged as a whole (bit flips, a truncated file): the storage
    /// engine refuses to open them, so no profile can be read. Nothing was changed. A store
    /// that has a salvage path says so in `message` (the sled store:
    /// `SledTokenStore::salvage`, the CLI's `mailup-auth recover`).
    #[error("token store at {path} is damaged: {message}")]
    Damaged {
        /// The store's location.
        path: String,
        /// What is wrong (never a record's content).
        message: String,
    },
    /// The profile name cannot be used.
    #[error("invalid profile name `{0}`")]
    InvalidProfile(String),
    /// Reading or writing failed. `source()` is the underlying error (an `std::io::Error`, the
    /// storage engine's) when there is one; a check of the store's own files that failed has
    /// none. Build it with [`StoreError::io`] or [`StoreError::io_context`].
    #[error("token store I/O error: {context}{}", colon_source(source))]
    Io {
        /// What was being done, or on which file (never a record's content or a secret).
        context: String,
        /// The underlying error, kept as `source()` (see [`ErrorSource`] for how it compares).
        source: Option<ErrorSource>,
    },
    /// The profile's record kept changing while this process tried to update it: every one of
    /// `attempts` compare-and-swap rounds found a newer version. Nothing of this update was
    /// written. Not counted as transient (it was reported as an `Io` error before it had its own
    /// variant, and the facade's decisions stay as they were), though trying again later
    /// usually succeeds.
    #[error("profile `{profile}` kept changing concurrently; gave up after {attempts} attempts")]
    Contended {
        /// The profile whose record kept changing.
        profile: String,
        /// How many compare-and-swap rounds were tried.
        attempts: u32,
    },
    /// The record's version counter is at its maximum, so no save can give it a newer one (a
    /// tampered or damaged record: versions grow by one per save). Remove the profile (a
    /// delete clears it) and log in again.
    #[error(
        "profile `{profile}` cannot be saved: its version counter is exhausted; remove the \
         profile and log in again"
    )]
    VersionExhausted {
        /// The profile whose version counter is exhausted.
        profile: String,
    },
    /// The store's encryption key is missing, wrong or unusable, or a key was given for a
    /// store that is not encrypted. Nothing was read or written; the message names what is
    /// missing, never any key material.
    #[error("token store at {path}: {problem}")]
    Key {
        /// The store's location (a directory).
        path: String,
        /// Which key problem (missing, wrong, unusable, or given for a plain store).
        problem: KeyProblem,
    },
    /// The store's server cannot be used: it refused or dropped the connection, TLS or
    /// authentication failed. Nothing was written. Transient: retry later; tokens already in
    /// memory stay usable until they expire. The message never holds a password or a record.
    #[error("token store at {store} is unavailable: {message}")]
    Unavailable {
        /// The store's location (without credentials).
        store: String,
        /// What failed (connection refused, TLS, authentication), without credentials.
        message: String,
    },
    /// The store's server did not answer in time. Transient; a save that timed out may or
    /// may not have happened (a reload tells: its version either advanced or not).
    #[error("token store at {store} did not answer within {} ms", .after.as_millis())]
    Timeout {
        /// The store's location (without credentials).
        store: String,
        /// How long the answer was waited for.
        after: Duration,
    },
    /// The store's location would send secrets unencrypted: a plain `redis://` URL to a host
    /// that is not a loopback address. Use `rediss://`, or opt in explicitly (for Redis,
    /// `allow_insecure_redis()`). Nothing was sent.
    #[error(
        "token store at {store}: plain connections to a host that is not a loopback address \
         would carry refresh tokens and client secrets unencrypted; use TLS (rediss://) or opt \
         in explicitly"
    )]
    Insecure {
        /// The store's location (without credentials).
        store: String,
    },
    /// The refresh lease this process took is no longer its own (it lapsed while the process
    /// was stopped or paused past its TTL, or Redis lost it), so the refresh it was about to
    /// send was not sent: another process may already have used that refresh token.
    /// Transient: reload the store (another holder's tokens) or take the lease again.
    #[error("profile `{profile}`: the refresh lease was lost before the refresh was sent; nothing was sent")]
    LeaseLost {
        /// The profile whose refresh lease was lost.
        profile: String,
    },
    /// Another process kept the profile's refresh lease for longer than the wait allowed.
    #[error("profile `{profile}` is being refreshed by another process; gave up after {} ms", .waited.as_millis())]
    LeaseTimeout {
        /// The profile whose refresh lease was held too long.
        profile: String,
        /// How long the lease was waited for.
        waited: Duration,
    },
}

impl StoreError {
    /// [`StoreError::Io`] that keeps `source` (what failed: an `std::io::Error`, the storage
    /// engine's error) as its `source()`. `context` says what was being done or on which path.
    /// Neither may hold a secret.
    pub fn io(
        context: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Io {
            context: context.into(),
            source: Some(ErrorSource::new(source)),
        }
    }

    /// [`StoreError::Io`] without an underlying error: the store found its own files wrong
    /// (a missing generation, a damaged marker).
    pub fn io_context(context: impl Into<String>) -> Self {
        Self::Io {
            context: context.into(),
            source: None,
        }
    }

    /// Whether trying again later may succeed without anyone changing anything: the store
    /// was unreachable or slow, or another process held (or took over) the refresh lease.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Unavailable { .. }
                | Self::Timeout { .. }
                | Self::LeaseTimeout { .. }
                | Self::LeaseLost { .. }
                | Self::Locked { .. }
        )
    }
}

/// Why a store's encryption key cannot be used (see [`StoreError::Key`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyProblem {
    /// The store is encrypted and no key was given. `expected` says where its key was kept
    /// when it was created (e.g. "the key file /home/me/.config/app/store.key").
    #[error("it is encrypted and no key was given (it was created with {expected})")]
    Missing {
        /// Where the store's key was kept when the store was created.
        expected: String,
    },
    /// The key was found but it is not the one the store was encrypted with.
    #[error("the key from {source_name} does not decrypt it (it was created with {expected})")]
    Wrong {
        /// Where the key given was read from.
        source_name: String,
        /// Where the store's key was kept when the store was created.
        expected: String,
    },
    /// A key was given, but the store holds records in clear.
    #[error("a key was given ({source_name}) but it is not encrypted; open it without a key")]
    NotEncrypted {
        /// Where the key given was read from.
        source_name: String,
    },
    /// The key source has no key (a key file that does not exist, no keychain entry) and the
    /// store is not new, so no key is created for it.
    #[error("{source_name} holds no key")]
    NotFound {
        /// The key source that was looked in (a file path or a keychain entry's name).
        source_name: String,
    },
    /// The key source cannot be used: unreadable, malformed, readable by other users, inside
    /// the store directory, or the keychain failed.
    #[error("{source_name} cannot be used: {message}")]
    Unusable {
        /// The key source that cannot be used (a file path or a keychain entry's name).
        source_name: String,
        /// Why (never key material).
        message: String,
    },
}

/// What a store holds under a profile name, from [`TokenStore::load_entry`]: unlike
/// [`TokenStore::load`], it tells a logout from a record that is gone without one.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
// As large as `load`'s `Option<Versioned<ProfileRecord>>`, and as short-lived: one per load.
#[allow(clippy::large_enum_variant)]
pub enum StoredProfile {
    /// A live record.
    Record(Versioned<ProfileRecord>),
    /// No record, and a trace that one was deleted (a tombstone: a logout). Also what a store
    /// that keeps no such trace reports for every missing record (the trait's default): it
    /// cannot tell, and a logout is the safe reading.
    Deleted,
    /// No record and no trace of one: the profile was never saved, or the store lost it (a
    /// Redis emptied by `FLUSHDB`/`FLUSHALL`, or restarted without persistence). A process
    /// that still holds the profile's tokens keeps them, and may put them back with
    /// [`TokenStore::restore_lost`].
    Absent,
}

impl From<Option<Versioned<ProfileRecord>>> for StoredProfile {
    /// What [`TokenStore::load`]'s answer says, for a store that cannot tell a deleted record
    /// from a lost one: a missing record is [`StoredProfile::Deleted`].
    fn from(loaded: Option<Versioned<ProfileRecord>>) -> Self {
        loaded.map_or(Self::Deleted, Self::Record)
    }
}

/// The version after `current`, or [`StoreError::VersionExhausted`]: stores must never wrap a
/// version around (a record at version 0 or 1 again would be unreadable or look older).
pub fn next_version(profile: &str, current: u64) -> Result<u64, StoreError> {
    current
        .checked_add(1)
        .ok_or_else(|| StoreError::VersionExhausted {
            profile: profile.to_owned(),
        })
}

/// Durable storage of [`ProfileRecord`]s by profile name, with compare-and-swap on a version.
///
/// `save` must be durable (flushed) before it returns `Ok`. It succeeds only when the stored
/// version equals `expected` (`None`: no record exists yet) and returns the new version.
///
/// A store wrapping another one (here the memory store) to count saves; a real one writes
/// somewhere durable and flushes before `save` returns. Check yours with the conformance
/// scenarios of `mailup-auth-store-conformance`.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use async_trait::async_trait;
/// use mailup_auth_core::{MemoryTokenStore, ProfileRecord, StoreError, TokenStore, UnixTime,
///     Versioned};
///
/// #[derive(Default)]
/// struct Counted {
///     inner: MemoryTokenStore,
///     saves: AtomicU64,
/// }
///
/// #[async_trait]
/// impl TokenStore for Counted {
///     async fn load(&self, profile: &str) -> Result<Option<Versioned<ProfileRecord>>, StoreError> {
///         self.inner.load(profile).await
///     }
///     async fn save(&self, profile: &str, record: &ProfileRecord, expected: Option<u64>)
///         -> Result<u64, StoreError> {
///         let version = self.inner.save(profile, record, expected).await?; // compare-and-swap
///         self.saves.fetch_add(1, Ordering::Relaxed);
///         Ok(version)
///     }
///     async fn delete(&self, profile: &str) -> Result<(), StoreError> {
///         self.inner.delete(profile).await
///     }
///     async fn profiles(&self) -> Result<Vec<String>, StoreError> {
///         self.inner.profiles().await
///     }
///     async fn consume_once(&self, key: &str, expires_at: UnixTime, now: UnixTime)
///         -> Result<bool, StoreError> {
///         self.inner.consume_once(key, expires_at, now).await
///     }
/// }
/// ```
#[async_trait]
pub trait TokenStore: Send + Sync {
    /// Loads a profile's record, if any.
    async fn load(&self, profile: &str) -> Result<Option<Versioned<ProfileRecord>>, StoreError>;

    /// Saves a profile's record if the stored version is `expected`; returns the new version.
    async fn save(
        &self,
        profile: &str,
        record: &ProfileRecord,
        expected: Option<u64>,
    ) -> Result<u64, StoreError>;

    /// Removes a profile's record (no error when there is none). A store that can should
    /// leave a tombstone with the last version, so that versions never restart and
    /// [`load_entry`](Self::load_entry) can tell the logout from a lost record.
    async fn delete(&self, profile: &str) -> Result<(), StoreError>;

    /// Loads a profile's record, telling a deleted one ([`StoredProfile::Deleted`], a
    /// tombstone) from one that left no trace ([`StoredProfile::Absent`]: never saved, or lost
    /// by the store). The facade adopts a logout only from the first: after the second it keeps
    /// the tokens it holds and puts them back with [`restore_lost`](Self::restore_lost).
    ///
    /// The default, for stores that keep no tombstones, answers [`load`](Self::load) and calls
    /// every missing record [`StoredProfile::Deleted`] (the behaviour before this method
    /// existed). A store wrapping another one should forward this method and
    /// [`restore_lost`](Self::restore_lost).
    async fn load_entry(&self, profile: &str) -> Result<StoredProfile, StoreError> {
        Ok(self.load(profile).await?.into())
    }

    /// [`load_entry`](Self::load_entry) only when the profile changed since the caller saw it
    /// at version `known`: `Ok(None)` when a live record is still stored at `known` (the same
    /// record: versions never go back), otherwise what `load_entry` answers.
    ///
    /// The facade asks this before every refresh (another process may have rotated the
    /// tokens), and almost always nothing changed: a store that can read or compare a record's
    /// version without decoding the record (its secrets included) should override this. The
    /// default loads the entry and compares, as costly as `load_entry`; a store wrapping
    /// another one should forward it.
    async fn load_entry_if_changed(
        &self,
        profile: &str,
        known: u64,
    ) -> Result<Option<StoredProfile>, StoreError> {
        Ok(match self.load_entry(profile).await? {
            StoredProfile::Record(stored) if stored.version == known => None,
            entry => Some(entry),
        })
    }

    /// Saves `record` only if the profile is [`StoredProfile::Absent`] (no record and no
    /// tombstone: the store lost it), at version `lost_version + 1`, so that versions still
    /// only grow for every process that saw the lost record. Returns the new version. A
    /// record or a tombstone found there (someone saved or logged out meanwhile) is a
    /// [`StoreError::Conflict`] with `expected: None` and `found` the live record's version
    /// (`None` for a tombstone), and nothing is written; a `lost_version` at its maximum is
    /// [`StoreError::VersionExhausted`].
    ///
    /// The default, for stores whose [`load_entry`](Self::load_entry) never answers
    /// [`StoredProfile::Absent`], writes nothing and answers that conflict.
    async fn restore_lost(
        &self,
        profile: &str,
        record: &ProfileRecord,
        lost_version: u64,
    ) -> Result<u64, StoreError> {
        let _ = (record, lost_version);
        Err(StoreError::Conflict {
            profile: profile.to_owned(),
            expected: None,
            found: self.load(profile).await?.map(|stored| stored.version),
        })
    }

    /// The stored profile names, sorted.
    async fn profiles(&self) -> Result<Vec<String>, StoreError>;

    /// Marks `key` (a pending authorization's CSRF state) as used, atomically across everyone
    /// sharing the store: `Ok(true)` the first time, `Ok(false)` when it was already used.
    /// Whoever gets `true` completes the authorization, so a pending authorization is
    /// single-use even across processes. The marker must be kept at least until
    /// `expires_at`; markers whose expiry is before `now` may be removed. Markers are not
    /// profiles: [`profiles`](Self::profiles) does not list them.
    async fn consume_once(
        &self,
        key: &str,
        expires_at: UnixTime,
        now: UnixTime,
    ) -> Result<bool, StoreError>;
}

/// The exclusive right to refresh one profile, across processes (and hosts, for a shared
/// store): MailUp rotates the refresh token on every refresh, so two holders of the same
/// refresh token must never both send it. The facade takes the lease before it sends a
/// refresh, reloads the store (another holder may have refreshed meanwhile, then its tokens
/// are adopted and nothing is sent), and keeps it until the answer is saved.
///
/// While another process holds the lease, the facade calls
/// [`try_acquire_or_wait`](Self::try_acquire_or_wait) in a loop, reloading the store after
/// each [`LeaseAttempt::HeldElsewhere`]: once the record has a newer version than the one it
/// saw and a token it may hand out, it adopts it without ever taking the lease. A lease that
/// can tell when the holder saved (Redis: pub/sub) lets every waiter adopt at once, instead of
/// taking the lease one after another only to find the work done.
#[async_trait]
pub trait RefreshLease: Send + Sync {
    /// Waits up to `wait` for the lease on `profile`; it is held until the returned guard is
    /// dropped. [`StoreError::LeaseTimeout`] when another holder kept it longer than `wait`.
    async fn acquire(&self, profile: &str, wait: Duration) -> Result<LeaseGuard, StoreError>;

    /// Tries to take the lease on `profile` once; when another process holds it, waits at most
    /// `wait` for a sign that the store may have changed (the holder saved or let go, or a
    /// polling period passed) and returns [`LeaseAttempt::HeldElsewhere`]. The caller bounds
    /// the loop; a lease with no way to notice changes may simply wait for the lease (the
    /// default: [`acquire`](Self::acquire), including its [`StoreError::LeaseTimeout`]).
    async fn try_acquire_or_wait(
        &self,
        profile: &str,
        wait: Duration,
    ) -> Result<LeaseAttempt, StoreError> {
        self.acquire(profile, wait)
            .await
            .map(LeaseAttempt::Acquired)
    }
}

/// What one [`RefreshLease::try_acquire_or_wait`] got.
#[derive(Debug)]
#[non_exhaustive]
pub enum LeaseAttempt {
    /// The lease is ours until the guard is released.
    Acquired(LeaseGuard),
    /// Another process holds the lease, and the store may have changed since the caller last
    /// looked: reload it, adopt the holder's tokens if they are newer and usable, otherwise
    /// try again (within the caller's deadline).
    HeldElsewhere,
}

/// A held [`RefreshLease`]. [`release`](Self::release) gives it back and waits until that is
/// done; dropping it releases it as well as `Drop` can (a lease whose release is a network
/// round trip then lets it go in the background, or lets it lapse).
///
/// A lease that can be lost while its guard lives (one with a TTL, like Redis's: the holder
/// was stopped, paused or cut off past it) says so through [`still_held`](Self::still_held),
/// which the facade asks right before it sends the refresh.
#[must_use = "the lease is released when the guard is dropped"]
pub struct LeaseGuard {
    _held: Box<dyn Send + Sync>,
    release: Option<ReleaseFn>,
    check: Option<CheckFn>,
}

type ReleaseFn = Box<
    dyn FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send + Sync,
>;

type CheckFn = Box<
    dyn Fn()
            -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<bool, StoreError>> + Send>>
        + Send
        + Sync,
>;

impl LeaseGuard {
    /// A guard that releases the lease when `held` is dropped (a lock file, a connection, ...).
    pub fn new(held: impl Send + Sync + 'static) -> Self {
        Self {
            _held: Box::new(held),
            release: None,
            check: None,
        }
    }

    /// A guard whose release is asynchronous: [`release`](Self::release) runs `release` and
    /// awaits it, then drops `held`. Whoever drops the guard without calling it leaves the
    /// lease to `held`'s `Drop`.
    pub fn with_release<F, Fut>(held: impl Send + Sync + 'static, release: F) -> Self
    where
        F: FnOnce() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        Self {
            _held: Box::new(held),
            release: Some(Box::new(move || Box::pin(release()))),
            check: None,
        }
    }

    /// This guard, with `check` answering [`still_held`](Self::still_held): for a lease that
    /// can be lost while its guard lives (a TTL that lapsed, a server that forgot it).
    /// `check` should confirm ownership with the lease's own authority (Redis: the lease key
    /// still holds this holder's id), and answer `Ok(false)` as soon as it knows the lease is
    /// gone.
    pub fn with_check<F, Fut>(mut self, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<bool, StoreError>> + Send + 'static,
    {
        self.check = Some(Box::new(move || Box::pin(check())));
        self
    }

    /// Whether the lease is still this guard's. The facade asks right before it sends the
    /// refresh, and sends nothing when the answer is not `Ok(true)`: a holder that was
    /// stopped (SIGSTOP, a GC pause, a frozen VM) past the lease's TTL may find another process
    /// has taken the lease over, and maybe used the refresh token already.
    ///
    /// This narrows the window; it cannot close it: the lease can still lapse between this
    /// answer and the moment the request leaves (and the answer can be delayed itself). A
    /// lease that cannot be lost while its guard lives (an in-process lock, an OS file lock)
    /// has no check and answers `Ok(true)`.
    pub async fn still_held(&self) -> Result<bool, StoreError> {
        match &self.check {
            Some(check) => check().await,
            None => Ok(true),
        }
    }

    /// Releases the lease and waits until it is released, so that a process that exits right
    /// after does not leave the others waiting for the lease to lapse.
    pub async fn release(mut self) {
        if let Some(release) = self.release.take() {
            release().await;
        }
    }
}

impl std::fmt::Debug for LeaseGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseGuard").finish_non_exhaustive()
    }
}

/// An in-memory [`TokenStore`] with the same version and compare-and-swap semantics as the
/// durable stores: for tests and short-lived programs. Nothing survives the process.
///
/// A delete leaves a tombstone with the last version, so versions never restart: a writer that
/// loaded a record before a logout and a new login cannot overwrite the new login's tokens.
#[derive(Debug, Default)]
pub struct MemoryTokenStore {
    records: Mutex<BTreeMap<String, Versioned<Option<ProfileRecord>>>>,
    consumed: Mutex<BTreeMap<String, UnixTime>>,
}

impl MemoryTokenStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn records(
        &self,
    ) -> std::sync::MutexGuard<'_, BTreeMap<String, Versioned<Option<ProfileRecord>>>> {
        // A panic while holding the lock cannot leave a half-written record (each operation is
        // one map call), so the data is still consistent.
        self.records
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Checks a profile name: non-empty, at most 128 bytes, no control characters. The error
/// shows the name escaped, and only its first 64 characters when it is too long (a 10 KB name
/// must not become a 10 KB message).
pub fn validate_profile_name(profile: &str) -> Result<(), StoreError> {
    if profile.is_empty() || profile.len() > 128 || profile.chars().any(char::is_control) {
        let shown = if profile.len() > 128 {
            let head: String = profile.chars().take(64).collect();
            format!("{}... ({} bytes)", head.escape_default(), profile.len())
        } else {
            profile.escape_default().to_string()
        };
        return Err(StoreError::InvalidProfile(shown));
    }
    Ok(())
}

#[async_trait]
impl TokenStore for MemoryTokenStore {
    async fn load(&self, profile: &str) -> Result<Option<Versioned<ProfileRecord>>, StoreError> {
        validate_profile_name(profile)?;
        Ok(self.records().get(profile).and_then(|entry| {
            entry.value.clone().map(|value| Versioned {
                version: entry.version,
                value,
            })
        }))
    }

    async fn save(
        &self,
        profile: &str,
        record: &ProfileRecord,
        expected: Option<u64>,
    ) -> Result<u64, StoreError> {
        validate_profile_name(profile)?;
        let mut records = self.records();
        let entry = records.get(profile);
        let found = entry.filter(|e| e.value.is_some()).map(|e| e.version);
        if found != expected {
            return Err(StoreError::Conflict {
                profile: profile.to_owned(),
                expected,
                found,
            });
        }
        let version = next_version(profile, entry.map_or(0, |e| e.version))?;
        records.insert(
            profile.to_owned(),
            Versioned {
                version,
                value: Some(record.clone()),
            },
        );
        Ok(version)
    }

    async fn delete(&self, profile: &str) -> Result<(), StoreError> {
        validate_profile_name(profile)?;
        if let Some(entry) = self.records().get_mut(profile) {
            entry.value = None;
        }
        Ok(())
    }

    async fn load_entry(&self, profile: &str) -> Result<StoredProfile, StoreError> {
        validate_profile_name(profile)?;
        Ok(match self.records().get(profile) {
            None => StoredProfile::Absent,
            Some(entry) => match &entry.value {
                None => StoredProfile::Deleted,
                Some(value) => StoredProfile::Record(Versioned {
                    version: entry.version,
                    value: value.clone(),
                }),
            },
        })
    }

    async fn load_entry_if_changed(
        &self,
        profile: &str,
        known: u64,
    ) -> Result<Option<StoredProfile>, StoreError> {
        validate_profile_name(profile)?;
        // Compared in place: no clone of an unchanged record.
        if let Some(Versioned {
            version,
            value: Some(_),
        }) = self.records().get(profile)
        {
            if *version == known {
                return Ok(None);
            }
        }
        self.load_entry(profile).await.map(Some)
    }

    async fn restore_lost(
        &self,
        profile: &str,
        record: &ProfileRecord,
        lost_version: u64,
    ) -> Result<u64, StoreError> {
        validate_profile_name(profile)?;
        let mut records = self.records();
        if let Some(entry) = records.get(profile) {
            return Err(StoreError::Conflict {
                profile: profile.to_owned(),
                expected: None,
                found: entry.value.as_ref().map(|_| entry.version),
            });
        }
        let version = next_version(profile, lost_version)?;
        records.insert(
            profile.to_owned(),
            Versioned {
                version,
                value: Some(record.clone()),
            },
        );
        Ok(version)
    }

    async fn profiles(&self) -> Result<Vec<String>, StoreError> {
        Ok(self
            .records()
            .iter()
            .filter(|(_, entry)| entry.value.is_some())
            .map(|(name, _)| name.clone())
            .collect())
    }

    async fn consume_once(
        &self,
        key: &str,
        expires_at: UnixTime,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        let mut consumed = self
            .consumed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        consumed.retain(|_, until| *until >= now);
        if consumed.contains_key(key) {
            return Ok(false);
        }
        consumed.insert(key.to_owned(), expires_at);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::{AccessToken, RefreshToken};

    fn record(access: &str) -> ProfileRecord {
        ProfileRecord::with_tokens(TokenSet {
            access_token: AccessToken::new(access),
            refresh_token: Some(RefreshToken::new("rt")),
            expires_at: UnixTime::from_secs(10),
            obtained_at: UnixTime::from_secs(1),
            token_type: None,
            scope: None,
        })
    }

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        // The memory store never awaits anything, so one poll finishes it.
        let mut future = std::pin::pin!(future);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match future.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(output) => output,
            std::task::Poll::Pending => panic!("memory store futures are always ready"),
        }
    }

    #[test]
    fn memory_store_compare_and_swap() {
        let store = MemoryTokenStore::new();
        assert_eq!(block_on(store.load("p")).unwrap(), None);
        assert_eq!(block_on(store.save("p", &record("a1"), None)).unwrap(), 1);
        assert_eq!(
            block_on(store.save("p", &record("stale"), None)).unwrap_err(),
            StoreError::Conflict {
                profile: "p".into(),
                expected: None,
                found: Some(1)
            }
        );
        assert_eq!(
            block_on(store.save("p", &record("a2"), Some(1))).unwrap(),
            2
        );
        assert_eq!(
            block_on(store.save("p", &record("stale"), Some(1))).unwrap_err(),
            StoreError::Conflict {
                profile: "p".into(),
                expected: Some(1),
                found: Some(2)
            }
        );
        let loaded = block_on(store.load("p")).unwrap().unwrap();
        assert_eq!(loaded.version, 2);
        assert_eq!(loaded.value, record("a2"));
        block_on(store.save("q", &record("b"), None)).unwrap();
        assert_eq!(
            block_on(store.profiles()).unwrap(),
            vec!["p".to_string(), "q".to_string()]
        );
        block_on(store.delete("p")).unwrap();
        assert_eq!(block_on(store.load("p")).unwrap(), None);
        assert_eq!(block_on(store.profiles()).unwrap(), vec!["q".to_string()]);
        // Versions continue after a delete: a stale writer holding version 1 cannot win.
        assert!(block_on(store.save("p", &record("stale"), Some(1))).is_err());
        assert_eq!(block_on(store.save("p", &record("a3"), None)).unwrap(), 3);
        assert!(matches!(
            block_on(store.load("")),
            Err(StoreError::InvalidProfile(_))
        ));
        assert!(matches!(
            block_on(store.load("a\nb")),
            Err(StoreError::InvalidProfile(_))
        ));
    }

    #[test]
    fn a_huge_profile_name_makes_a_short_error() {
        let name = "a".repeat(10 * 1024);
        let message = validate_profile_name(&name).unwrap_err().to_string();
        assert!(message.len() < 200, "{message}");
        assert!(message.contains("(10240 bytes)"), "{message}");
        let name = format!("{}\u{1b}", "\u{e9}".repeat(200));
        let message = validate_profile_name(&name).unwrap_err().to_string();
        assert!(
            message.len() < 600 && !message.contains('\u{1b}'),
            "{message}"
        );
    }

    #[test]
    fn an_io_error_keeps_the_original_as_its_source() {
        use std::error::Error as _;

        let denied = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied");
        let error = StoreError::io("/store/CURRENT", denied);
        let source = error.source().expect("the io::Error is kept");
        assert_eq!(
            source
                .downcast_ref::<std::io::Error>()
                .map(std::io::Error::kind),
            Some(std::io::ErrorKind::PermissionDenied)
        );
        // The message reads as before the source was kept: context, then the error.
        assert_eq!(
            error.to_string(),
            "token store I/O error: /store/CURRENT: denied"
        );
        // Clone and equality survive; the source compares by message.
        assert_eq!(
            error.clone(),
            StoreError::io("/store/CURRENT", std::io::Error::other("denied"))
        );
        assert_ne!(error, StoreError::io_context("/store/CURRENT"));
        let plain = StoreError::io_context("the store is damaged");
        assert!(plain.source().is_none());
        assert_eq!(
            plain.to_string(),
            "token store I/O error: the store is damaged"
        );
    }

    #[test]
    fn a_record_that_kept_changing_is_contended_not_io() {
        let error = StoreError::Contended {
            profile: "p".into(),
            attempts: 4,
        };
        assert_eq!(
            error.to_string(),
            "profile `p` kept changing concurrently; gave up after 4 attempts"
        );
        assert!(!error.is_transient());
    }

    #[test]
    fn a_version_at_its_maximum_is_a_typed_error_not_a_wrap() {
        assert_eq!(next_version("p", 41).unwrap(), 42);
        assert_eq!(
            next_version("p", u64::MAX).unwrap_err(),
            StoreError::VersionExhausted {
                profile: "p".into()
            }
        );
        let store = MemoryTokenStore::new();
        store.records().insert(
            "p".into(),
            Versioned {
                version: u64::MAX,
                value: Some(record("a1")),
            },
        );
        assert_eq!(
            block_on(store.save("p", &record("a2"), Some(u64::MAX))).unwrap_err(),
            StoreError::VersionExhausted {
                profile: "p".into()
            }
        );
        // Nothing was overwritten.
        assert_eq!(
            block_on(store.load("p")).unwrap().unwrap().value,
            record("a1")
        );
    }

    #[test]
    fn memory_store_tells_a_logout_from_a_lost_record_and_restores_only_a_lost_one() {
        let store = MemoryTokenStore::new();
        // Never saved: no trace, as after a loss.
        assert_eq!(
            block_on(store.load_entry("p")).unwrap(),
            StoredProfile::Absent
        );
        assert_eq!(
            block_on(store.restore_lost("p", &record("a5"), 4)).unwrap(),
            5
        );
        assert_eq!(
            block_on(store.load_entry("p")).unwrap(),
            StoredProfile::Record(Versioned {
                version: 5,
                value: record("a5")
            })
        );
        // Over a live record: a conflict naming it, nothing written.
        assert_eq!(
            block_on(store.restore_lost("p", &record("x"), 4)).unwrap_err(),
            StoreError::Conflict {
                profile: "p".into(),
                expected: None,
                found: Some(5)
            }
        );
        // A logout leaves a tombstone: `Deleted`, and no restore over it.
        block_on(store.delete("p")).unwrap();
        assert_eq!(
            block_on(store.load_entry("p")).unwrap(),
            StoredProfile::Deleted
        );
        assert_eq!(
            block_on(store.restore_lost("p", &record("x"), 5)).unwrap_err(),
            StoreError::Conflict {
                profile: "p".into(),
                expected: None,
                found: None
            }
        );
        assert_eq!(block_on(store.load("p")).unwrap(), None);
        assert!(matches!(
            block_on(store.restore_lost("q", &record("x"), u64::MAX)),
            Err(StoreError::VersionExhausted { .. })
        ));
        assert!(matches!(
            block_on(store.load_entry("")),
            Err(StoreError::InvalidProfile(_))
        ));
    }

    #[test]
    fn a_store_without_tombstones_calls_every_missing_record_deleted_and_restores_nothing() {
        /// Only the required methods: the trait's defaults for the rest.
        struct Plain(MemoryTokenStore);
        #[async_trait]
        impl TokenStore for Plain {
            async fn load(
                &self,
                profile: &str,
            ) -> Result<Option<Versioned<ProfileRecord>>, StoreError> {
                self.0.load(profile).await
            }
            async fn save(
                &self,
                profile: &str,
                record: &ProfileRecord,
                expected: Option<u64>,
            ) -> Result<u64, StoreError> {
                self.0.save(profile, record, expected).await
            }
            async fn delete(&self, profile: &str) -> Result<(), StoreError> {
                self.0.delete(profile).await
            }
            async fn profiles(&self) -> Result<Vec<String>, StoreError> {
                self.0.profiles().await
            }
            async fn consume_once(
                &self,
                key: &str,
                expires_at: UnixTime,
                now: UnixTime,
            ) -> Result<bool, StoreError> {
                self.0.consume_once(key, expires_at, now).await
            }
        }
        let store = Plain(MemoryTokenStore::new());
        assert_eq!(
            block_on(store.load_entry("p")).unwrap(),
            StoredProfile::Deleted
        );
        assert_eq!(
            block_on(store.restore_lost("p", &record("a1"), 3)).unwrap_err(),
            StoreError::Conflict {
                profile: "p".into(),
                expected: None,
                found: None
            }
        );
        assert_eq!(block_on(store.load("p")).unwrap(), None);
        block_on(store.save("p", &record("a1"), None)).unwrap();
        assert!(matches!(
            block_on(store.load_entry("p")).unwrap(),
            StoredProfile::Record(Versioned { version: 1, .. })
        ));
    }

    #[test]
    fn a_guard_without_a_check_is_held_and_one_with_a_check_answers_it() {
        assert!(block_on(LeaseGuard::new(()).still_held()).unwrap());
        let lost = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let guard = LeaseGuard::new(()).with_check({
            let lost = std::sync::Arc::clone(&lost);
            move || {
                let held = !lost.load(std::sync::atomic::Ordering::SeqCst);
                async move { Ok(held) }
            }
        });
        assert!(block_on(guard.still_held()).unwrap());
        lost.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(!block_on(guard.still_held()).unwrap());
        let failing =
            LeaseGuard::new(()).with_check(|| async { Err(StoreError::io_context("unreachable")) });
        assert!(block_on(failing.still_held()).is_err());
        assert!(StoreError::LeaseLost {
            profile: "p".into()
        }
        .is_transient());
    }

    #[test]
    fn a_key_is_consumed_once_and_forgotten_after_its_expiry() {
        let store = MemoryTokenStore::new();
        let t = UnixTime::from_secs;
        assert!(block_on(store.consume_once("state-1", t(100), t(0))).unwrap());
        assert!(!block_on(store.consume_once("state-1", t(100), t(50))).unwrap());
        assert!(block_on(store.consume_once("state-2", t(100), t(50))).unwrap());
        // Past its expiry the marker may go (the authorization's own expiry refuses it).
        assert!(block_on(store.consume_once("state-1", t(300), t(101))).unwrap());
        assert_eq!(block_on(store.profiles()).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn record_debug_is_redacted() {
        let mut r = record("access-secret");
        r.client = Some(StoredClient {
            client_id: "id".into(),
            client_secret: Some(ClientSecret::new("client-secret")),
            ..StoredClient::default()
        });
        let printed = format!("{r:?}");
        assert!(!printed.contains("secret\""), "{printed}");
        assert!(!printed.contains("access-secret"));
        assert!(!printed.contains("client-secret"));
    }
}
