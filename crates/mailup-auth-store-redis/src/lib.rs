#![doc = include_str!("../README.md")]
//!
//! ## What this crate is for, and what it is not for
//!
//! It lets several processes, on one host or many, share one MailUp session per profile: the
//! [`RedisTokenStore`] keeps the records (versioned, compare-and-swap) and the
//! [`RedisRefreshLease`] makes sure exactly one of them sends each refresh. It is not a cache
//! in front of another store (Redis *is* the store: run it with persistence, AOF or RDB, if a
//! restart of Redis must not log everyone out), and it does not support Redis Cluster (a
//! record, its profile set and its lease must live on one node).
//!
//! ## Keys
//!
//! With the default prefix `mailup-auth:` (see [`RedisStoreBuilder::key_prefix`]):
//!
//! | key | type | what |
//! |---|---|---|
//! | `mailup-auth:record:<profile>` | hash | `v` version, `d` `1` for a tombstone, `e` the JSON envelope |
//! | `mailup-auth:profiles` | set | the live profile names |
//! | `mailup-auth:lease:<profile>` | string | the refresh lease's owner id, with a TTL |
//! | `mailup-auth:used:<key>` | string | a consumed one-time key (its expiry, ms), with a TTL |
//! | `mailup-auth:events` | channel | a profile name, published on every save, delete and lease release |
//! | `mailup-auth:encryption` | string | an encrypted store's marker (JSON: scheme, where its key was kept, a check value) |
//!
//! The envelope is the sled store's: `{"format": 1, "version": N, "record": {...}}` in clear,
//! `{"format": 2, "version": N, "sealed": "..."}` with an encryption key, and a deleted
//! profile keeps a tombstone `{"format": 1, "version": N, "deleted": true}` so that versions
//! never restart. Saves and deletes are Lua scripts: the version check, the encryption check,
//! the write, the profile set and the notification happen atomically.
//!
//! A record key that is missing altogether (no record, no tombstone) is what an emptied server
//! (`FLUSHALL`, `FLUSHDB`, a restart without persistence) leaves: `load_entry` reports it as
//! `StoredProfile::Absent`, not as a logout, and `restore_lost` writes only there (the save
//! script with "no key" as the expected state).
//!
//! ## Security
//!
//! Records hold refresh tokens and, with `remember_client`, client secrets. A plain `redis://`
//! URL is accepted only for a loopback host (`127.0.0.0/8`, `::1`, `localhost`) or a Unix
//! socket; any other host needs `rediss://` (TLS, rustls; the system's roots, or the CA given
//! to [`RedisStoreBuilder::tls_root_certificate`] for a private Redis) unless
//! [`RedisStoreBuilder::allow_insecure_redis`] says otherwise. A user name and password in the
//! URL (`redis://user:password@host:port/db`; the password alone as `redis://:password@...`)
//! are sent with `AUTH`. A wrong or missing password is [`StoreError::Unavailable`] with the
//! message "authentication failed (...)", as is a server certificate that is not trusted
//! ("TLS failed (...)"). Error messages, `Debug` and logs name the server as
//! `scheme://host:port/db` ([`RedisTokenStore::location`]), never with the user or password,
//! and never quote a record.
//!
//! ## Encryption at rest
//!
//! With [`RedisStoreBuilder::encryption_key`], records are sealed as in the sled store
//! (XChaCha20-Poly1305, `mailup-auth-seal`; the profile name and version are associated data):
//! whoever reads Redis, its persistence files or its backups without the key sees profile
//! names and versions, not tokens or client secrets. Every process that shares the store
//! needs the same key (copy the key file to each host; a key is created only for a new
//! store). The store remembers that it is encrypted (`<prefix>encryption`), and as with sled:
//! a store that is encrypted opened without a key is [`StoreError::Key`]
//! ([`KeyProblem::Missing`]), with another key [`KeyProblem::Wrong`], a store holding records
//! in clear opened with a key [`KeyProblem::NotEncrypted`] (nothing is migrated: delete the
//! profiles or keep using it without a key), and a key source without its key
//! [`KeyProblem::NotFound`]. [`connect`](RedisStoreBuilder::connect) checks the key at once;
//! [`open_lazy`](RedisStoreBuilder::open_lazy) at the first command. A marker deleted while
//! the records are sealed is put back by the first process whose key opens them.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
// Public types stay open to new variants and fields unless one is exhaustive on purpose (each
// such item says why at its `allow`).
#![warn(clippy::exhaustive_enums, clippy::exhaustive_structs)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use mailup_auth_core::UnixTime;
use mailup_auth_core::{
    next_version, validate_profile_name, KeyProblem, ProfileRecord, StoreError, StoredProfile,
    TokenStore, Versioned,
};
use mailup_auth_seal::{EncryptionMarker, Sealer};
use redis::aio::ConnectionManager;
use redis::Script;

mod envelope;
mod fuzzing;
mod lease;
#[cfg(feature = "test-server")]
mod test_server;

pub use crate::lease::{RedisRefreshLease, DEFAULT_LEASE_TTL, DEFAULT_MAX_LEASE_HOLD};

/// Plumbing for this workspace's own tests and fuzz targets: the record codec without a server
/// (`decode`, `encode`) and, with the `test-server` feature, a throwaway `redis-server` on a
/// free loopback port (`RedisServer`, `PrivatePki`).
///
/// **Not covered by semantic versioning**: anything here may change or go away in a patch
/// release.
#[doc(hidden)]
pub mod internal {
    pub use crate::fuzzing::{decode, encode};
    #[cfg(feature = "test-server")]
    pub use crate::test_server::{PrivatePki, RedisServer};
}
/// Where an encrypted store's key is kept (from `mailup-auth-seal`, the same type as the sled
/// store's).
pub use mailup_auth_seal::KeySource;

/// The key prefix used unless [`RedisStoreBuilder::key_prefix`] sets another.
pub const DEFAULT_KEY_PREFIX: &str = "mailup-auth:";

/// How long one Redis command may take (connecting included) unless
/// [`RedisStoreBuilder::operation_timeout`] says otherwise.
pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a save keeps trying through timeouts and lost connections unless
/// [`RedisStoreBuilder::save_patience`] says otherwise: longer than a Redis fork or failover
/// usually stalls, shorter than the facade's bound on a token operation (30 s).
pub const DEFAULT_SAVE_PATIENCE: Duration = Duration::from_secs(10);

/// The pause between two tries of a save that Redis did not answer.
const SAVE_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// How many times a save retries a compare-and-swap that lost to a writer which left the
/// version it expected in place (a delete between its read and its script).
const MAX_SWAP_ATTEMPTS: u32 = 16;

/// Saves `ARGV[3..]` over `KEYS[1]` if its version and tombstone flag are still what the
/// caller read (`ARGV[1]`, `''` for no key; `ARGV[2]`), keeps the profile set and notifies.
/// Returns `{1}` or `{0, version, deleted}` as found, or `{-1, '', ''}` when the store's
/// encryption (the marker `KEYS[4]` exists or not) is not what the writer believes (`ARGV[6]`,
/// `1` for a sealed record): a record in clear never lands in an encrypted store, nor the
/// reverse, whatever another process did since this one checked. `{-2, type, ''}` when the
/// profile set, and `{-3, type, ''}` when the record's key, holds another type of value
/// (something else writes under the prefix): checked before anything is written, since a
/// script that fails half-way keeps its first writes.
const SAVE_SCRIPT: &str = r"
if tostring(redis.call('EXISTS', KEYS[4])) ~= ARGV[6] then return {-1, '', ''} end
local set_type = redis.call('TYPE', KEYS[2])['ok']
if set_type ~= 'set' and set_type ~= 'none' then return {-2, set_type, ''} end
local record_type = redis.call('TYPE', KEYS[1])['ok']
if record_type ~= 'hash' and record_type ~= 'none' then return {-3, record_type, ''} end
local cur = redis.call('HMGET', KEYS[1], 'v', 'd')
local v = cur[1] or ''
local d = cur[2] or '0'
if v ~= ARGV[1] or d ~= ARGV[2] then return {0, v, d} end
redis.call('SADD', KEYS[2], ARGV[5])
redis.call('HSET', KEYS[1], 'v', ARGV[3], 'd', '0', 'e', ARGV[4])
redis.call('PUBLISH', KEYS[3], ARGV[5])
return {1, ARGV[3], '0'}
";

/// Turns a live record into a tombstone that keeps its version (versions never restart).
/// A record that cannot keep one, because its key is not a hash or its version is not a
/// number from 1 to `u64::MAX` (damage, or another program's key), is removed instead, so
/// that a new login can save again. `-2` (nothing done) when the profile set is not a set.
const DELETE_SCRIPT: &str = r#"
local set_type = redis.call('TYPE', KEYS[2])['ok']
if set_type ~= 'set' and set_type ~= 'none' then return -2 end
local record_type = redis.call('TYPE', KEYS[1])['ok']
if record_type == 'none' then return 0 end
local v = false
local d = false
if record_type == 'hash' then
  local cur = redis.call('HMGET', KEYS[1], 'v', 'd')
  v = cur[1]
  d = cur[2]
end
local valid = v and string.match(v, '^[1-9]%d*$')
  and (#v < 20 or (#v == 20 and v <= '18446744073709551615'))
if not valid then
  redis.call('DEL', KEYS[1])
elseif d == '1' then
  return 0
else
  redis.call('HSET', KEYS[1], 'd', '1', 'e', '{"format":1,"version":' .. v .. ',"deleted":true}')
end
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('PUBLISH', KEYS[3], ARGV[1])
return 1
"#;

/// Reads a record: `{1, v, d, e}` (each `nil` when missing), `{0}`-like (`0` first) when there
/// is none, `-1` and the key's type when it is not a hash, `-2` and the envelope's length when
/// it is longer than `ARGV[1]` bytes (not sent: a record is a few kilobytes, and every
/// process that reads a huge value would hold it in memory). With a known version in
/// `ARGV[2]`, a live record still at that version is `{2, v}` and its envelope is not sent
/// (`TokenStore::load_entry_if_changed`).
const LOAD_SCRIPT: &str = r"
local record_type = redis.call('TYPE', KEYS[1])['ok']
if record_type == 'none' then return {0, false, false, false} end
if record_type ~= 'hash' then return {-1, record_type, false, false} end
if ARGV[2] then
  local head = redis.call('HMGET', KEYS[1], 'v', 'd')
  if head[1] == ARGV[2] and head[2] ~= '1' then return {2, head[1], false, false} end
end
local length = redis.call('HSTRLEN', KEYS[1], 'e')
if length > tonumber(ARGV[1]) then return {-2, tostring(length), false, false} end
local cur = redis.call('HMGET', KEYS[1], 'v', 'd', 'e')
return {1, cur[1], cur[2], cur[3]}
";

/// The longest envelope [`RedisTokenStore::load`] reads: a record (tokens, the client
/// registration) is a few kilobytes; anything longer is damage, refused as corrupt without
/// being transferred.
pub const MAX_RECORD_BYTES: usize = 1 << 20;

/// Marks a one-time key used until `ARGV[1]` (ms) unless a marker that has not expired by the
/// caller's `ARGV[2]` (ms) is there; Redis drops it after `ARGV[3]` ms. The caller's clock
/// decides, as for the other stores; the TTL only reclaims the memory.
const CONSUME_SCRIPT: &str = r"
local until_ms = redis.call('GET', KEYS[1])
if until_ms and tonumber(until_ms) >= tonumber(ARGV[2]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return 1
";

/// Makes a store encrypted unless it holds records (`KEYS[2]`, the profile set, is not
/// empty: `-1`): sets the marker `KEYS[1]` to `ARGV[1]` if there is none (`1`), or leaves the
/// one another process set first (`0`).
const MARK_ENCRYPTED_SCRIPT: &str = r"
if redis.call('SCARD', KEYS[2]) > 0 then return -1 end
if redis.call('SET', KEYS[1], ARGV[1], 'NX') then return 1 end
return 0
";

/// Configures and connects a [`RedisTokenStore`].
#[derive(Clone)]
pub struct RedisStoreBuilder {
    url: String,
    prefix: String,
    allow_insecure: bool,
    operation_timeout: Duration,
    lease_ttl: Duration,
    max_lease_hold: Duration,
    root_certificate: Option<Vec<u8>>,
    key: Option<KeySource>,
    save_patience: Duration,
}

impl std::fmt::Debug for RedisStoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStoreBuilder")
            .field("url", &redacted_location(&self.url))
            .field("prefix", &self.prefix)
            .field("allow_insecure", &self.allow_insecure)
            .field("operation_timeout", &self.operation_timeout)
            .field("lease_ttl", &self.lease_ttl)
            .field("save_patience", &self.save_patience)
            .field("tls_root_certificate", &self.root_certificate.is_some())
            .field(
                "encryption_key",
                &self.key.as_ref().map(KeySource::describe),
            )
            .finish()
    }
}

impl RedisStoreBuilder {
    /// Every key (and the notification channel) starts with this (default
    /// [`DEFAULT_KEY_PREFIX`]): several applications, or several MailUp client
    /// registrations, can share one Redis database without seeing each other's profiles.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Accepts a plain `redis://` URL to a host that is not a loopback address.
    ///
    /// **Insecure**: refresh tokens, access tokens and (with `remember_client`) client secrets
    /// then cross the network unencrypted. Without it such a URL is [`StoreError::Insecure`]
    /// at [`connect`](Self::connect), before any connection is made.
    pub fn allow_insecure_redis(mut self) -> Self {
        self.allow_insecure = true;
        self
    }

    /// Trusts the CA certificate(s) in `pem` (PEM, one or more `CERTIFICATE` blocks) for a
    /// `rediss://` server, **instead of** the system's roots: the usual deployment of a private
    /// Redis, whose certificate a private CA signed. The server's name (or IP address) in the
    /// URL must still match its certificate.
    ///
    /// A PEM that holds no certificate, or a plain `redis://` URL, is
    /// [`StoreError::Unavailable`] at [`connect`](Self::connect) (nothing is sent).
    pub fn tls_root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.root_certificate = Some(pem.into());
        self
    }

    /// Seals every record at rest with the key from `key` (see the crate docs, "Encryption at
    /// rest"): the same [`KeySource`] as the sled store's. A key file is created (`0600`) only
    /// for a new store, one that has no profile yet; every process sharing the store needs the
    /// same key.
    pub fn encryption_key(mut self, key: KeySource) -> Self {
        self.key = Some(key);
        self
    }

    /// [`encryption_key`](Self::encryption_key) when `key` is `Some`: for programs where
    /// encryption is the user's choice.
    pub fn encryption_key_opt(mut self, key: Option<KeySource>) -> Self {
        self.key = key;
        self
    }

    /// How long one command (connecting included) may take before it is a
    /// [`StoreError::Timeout`] (default [`DEFAULT_OPERATION_TIMEOUT`]).
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// The TTL of the refresh lease (default [`DEFAULT_LEASE_TTL`]). A holder renews it every
    /// third of it while it lives, so this is how long a killed holder blocks the others.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl.max(Duration::from_millis(30));
        self
    }

    /// The longest a live holder keeps renewing its lease (default
    /// [`DEFAULT_MAX_LEASE_HOLD`]): a holder stuck longer than that lets it lapse.
    pub fn max_lease_hold(mut self, hold: Duration) -> Self {
        self.max_lease_hold = hold;
        self
    }

    /// How long a [`save`](TokenStore::save) keeps trying while Redis does not answer or
    /// cannot be reached (default [`DEFAULT_SAVE_PATIENCE`]) before it fails with
    /// [`StoreError::Timeout`] / [`StoreError::Unavailable`]. A save after a refresh holds the
    /// only copy of a refresh token MailUp has just rotated: a Redis that stalls (a fork for
    /// a snapshot, `CLIENT PAUSE`, a failover) for longer than one command's timeout must not
    /// cost the session. Retrying is safe: the save is a compare-and-swap, and a save whose
    /// answer was lost is recognised by its own record in Redis. Zero: one try.
    pub fn save_patience(mut self, patience: Duration) -> Self {
        self.save_patience = patience;
        self
    }

    /// Where the store is, for messages: `scheme://host:port/db`, without the user or
    /// password (what [`RedisTokenStore::location`] will say).
    pub fn location(&self) -> String {
        redacted_location(&self.url)
    }

    /// Checks the URL, connects and checks that the server answers.
    ///
    /// [`StoreError::Insecure`] for plain `redis://` to a remote host (see
    /// [`allow_insecure_redis`](Self::allow_insecure_redis)); [`StoreError::Unavailable`] when
    /// the server cannot be reached, refuses the credentials ("authentication failed") or its
    /// TLS certificate is not trusted ("TLS failed"); [`StoreError::Timeout`] when it does not
    /// answer in time; [`StoreError::Key`] when the encryption key does not fit the store
    /// (see [`encryption_key`](Self::encryption_key)). Once connected, a lost connection is
    /// re-established by itself on the next command.
    pub async fn connect(self) -> Result<RedisTokenStore, StoreError> {
        let (client, config, location) = self.prepare()?;
        let timeout = self.operation_timeout * 2;
        let connect = client.get_connection_manager_with_config(config);
        let connection = match tokio::time::timeout(timeout, connect).await {
            Ok(Ok(connection)) => connection,
            Ok(Err(error)) => return Err(map_error(&location, self.operation_timeout, &error)),
            Err(_) => {
                return Err(StoreError::Timeout {
                    store: location,
                    after: timeout,
                })
            }
        };
        let store = self.finish(client, connection, location);
        let _: String = store.run(&redis::cmd("PING")).await?;
        store.sealer().await?;
        Ok(store)
    }

    /// Checks the URL and returns the store without connecting: the connection is made by
    /// the first command (so an unreachable server shows there, as
    /// [`StoreError::Unavailable`]). Must be called inside a tokio runtime. For programs that
    /// must start while Redis is down (and the facade's `store_url`).
    pub fn open_lazy(self) -> Result<RedisTokenStore, StoreError> {
        let (client, config, location) = self.prepare()?;
        let connection = client
            .get_connection_manager_lazy(config)
            .map_err(|error| map_error(&location, self.operation_timeout, &error))?;
        Ok(self.finish(client, connection, location))
    }

    fn prepare(
        &self,
    ) -> Result<(redis::Client, redis::aio::ConnectionManagerConfig, String), StoreError> {
        let location = redacted_location(&self.url);
        let tls = check_url(&self.url, &location, self.allow_insecure)?;
        let unavailable = |message: &str| StoreError::Unavailable {
            store: location.clone(),
            message: message.to_owned(),
        };
        let client = match &self.root_certificate {
            None => redis::Client::open(self.url.as_str()),
            Some(_) if !tls => {
                return Err(unavailable(
                    "a TLS root certificate was given for a URL without TLS; use rediss://",
                ))
            }
            Some(pem) => {
                if !pem
                    .windows(b"-----BEGIN CERTIFICATE-----".len())
                    .any(|window| window == b"-----BEGIN CERTIFICATE-----")
                {
                    return Err(unavailable(
                        "the TLS root certificate holds no PEM certificate \
                         (-----BEGIN CERTIFICATE-----)",
                    ));
                }
                redis::Client::build_with_tls(
                    self.url.as_str(),
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(pem.clone()),
                    },
                )
            }
        }
        .map_err(|error| {
            if error.kind() == redis::ErrorKind::InvalidClientConfig {
                unavailable("the URL is not a valid Redis URL (redis://, rediss://, redis+unix://)")
            } else {
                unavailable("the TLS root certificate cannot be read (it must be PEM)")
            }
        })?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.operation_timeout))
            .set_response_timeout(Some(self.operation_timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        Ok((client, config, location))
    }

    fn finish(
        self,
        client: redis::Client,
        connection: ConnectionManager,
        location: String,
    ) -> RedisTokenStore {
        RedisTokenStore {
            inner: Arc::new(Inner {
                client,
                connection,
                keys: Keys {
                    prefix: self.prefix,
                },
                location,
                operation_timeout: self.operation_timeout,
                lease_ttl: self.lease_ttl,
                max_lease_hold: self.max_lease_hold,
                save_patience: self.save_patience,
                key: self.key,
                sealer: tokio::sync::Mutex::new(None),
                save: Script::new(SAVE_SCRIPT),
                delete: Script::new(DELETE_SCRIPT),
                load: Script::new(LOAD_SCRIPT),
                consume: Script::new(CONSUME_SCRIPT),
            }),
        }
    }
}

/// A [`TokenStore`] in Redis, shared by every process (and host) that connects to the same
/// server with the same key prefix.
///
/// Cloning is cheap: clones share one multiplexed connection, re-established by itself when
/// it breaks. Each command is bounded by the operation timeout; a `save` returns once Redis
/// has applied it (how durable that is depends on the server's persistence settings).
#[derive(Clone)]
pub struct RedisTokenStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: redis::Client,
    connection: ConnectionManager,
    keys: Keys,
    location: String,
    operation_timeout: Duration,
    lease_ttl: Duration,
    max_lease_hold: Duration,
    /// The encryption key's source, if the store is encrypted (or is to be).
    key: Option<KeySource>,
    /// The outcome of the encryption check once it passed: the sealer, or `None` for a store
    /// in clear. Checked at the first command (at `connect` for a connected store), and again
    /// when a save finds the store's encryption changed.
    sealer: tokio::sync::Mutex<Option<Option<Arc<Sealer>>>>,
    save: Script,
    delete: Script,
    load: Script,
    consume: Script,
    save_patience: Duration,
}

/// Key names under one prefix. The kind comes before the profile, so no profile name (which
/// may contain `:`) can reach another kind's keys.
#[derive(Clone, Debug)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    fn record(&self, profile: &str) -> String {
        format!("{}record:{profile}", self.prefix)
    }
    fn profiles(&self) -> String {
        format!("{}profiles", self.prefix)
    }
    fn used(&self, key: &str) -> String {
        format!("{}used:{key}", self.prefix)
    }
    pub(crate) fn lease(&self, profile: &str) -> String {
        format!("{}lease:{profile}", self.prefix)
    }
    pub(crate) fn events(&self) -> String {
        format!("{}events", self.prefix)
    }
    fn encryption(&self) -> String {
        format!("{}encryption", self.prefix)
    }
}

impl std::fmt::Debug for RedisTokenStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTokenStore")
            .field("location", &self.inner.location)
            .field("prefix", &self.inner.keys.prefix)
            .field("encrypted", &self.inner.key.is_some())
            .finish_non_exhaustive()
    }
}

impl RedisTokenStore {
    /// A builder for the server at `url`: `redis://[user:password@]host[:port][/db]`,
    /// `rediss://...` for TLS, or `redis+unix:///path/to/socket`.
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder {
        RedisStoreBuilder {
            url: url.into(),
            prefix: DEFAULT_KEY_PREFIX.to_owned(),
            allow_insecure: false,
            operation_timeout: DEFAULT_OPERATION_TIMEOUT,
            lease_ttl: DEFAULT_LEASE_TTL,
            max_lease_hold: DEFAULT_MAX_LEASE_HOLD,
            root_certificate: None,
            key: None,
            save_patience: DEFAULT_SAVE_PATIENCE,
        }
    }

    /// Connects to `url` with the defaults (see [`builder`](Self::builder)).
    pub async fn connect(url: impl Into<String>) -> Result<Self, StoreError> {
        Self::builder(url).connect().await
    }

    /// The refresh lease that goes with this store: same server, same prefix, same
    /// connection. Pass it to the facade's `refresh_lease` (its `store_url` does this itself).
    pub fn refresh_lease(&self) -> RedisRefreshLease {
        RedisRefreshLease::new(
            self.inner.client.clone(),
            self.inner.connection.clone(),
            self.inner.keys.clone(),
            self.inner.location.clone(),
            self.inner.operation_timeout,
            self.inner.lease_ttl,
            self.inner.max_lease_hold,
        )
    }

    /// Where the store is, for messages: `redis://host:port/db` without credentials.
    pub fn location(&self) -> &str {
        &self.inner.location
    }

    /// Whether records are sealed (the store was given an encryption key).
    pub fn is_encrypted(&self) -> bool {
        self.inner.key.is_some()
    }

    /// The sealer to use (`None`: records in clear), after checking the key against the
    /// store's marker once (see the crate docs, "Encryption at rest").
    async fn sealer(&self) -> Result<Option<Arc<Sealer>>, StoreError> {
        let mut checked = self.inner.sealer.lock().await;
        if let Some(sealer) = &*checked {
            return Ok(sealer.clone());
        }
        let sealer = self.check_encryption().await?;
        *checked = Some(sealer.clone());
        Ok(sealer)
    }

    /// Forgets the outcome of the encryption check, so the next command checks again.
    async fn recheck_encryption(&self) {
        *self.inner.sealer.lock().await = None;
    }

    async fn check_encryption(&self) -> Result<Option<Arc<Sealer>>, StoreError> {
        let key_error = |problem: KeyProblem| StoreError::Key {
            path: self.inner.location.clone(),
            problem,
        };
        let marker_key = self.inner.keys.encryption();
        let marker = self.marker(&marker_key).await?;
        let Some(source) = self.inner.key.clone() else {
            return match marker {
                None => Ok(None),
                Some(marker) => Err(key_error(KeyProblem::Missing {
                    expected: marker.key_source,
                })),
            };
        };
        // Sealed records found in a store without its marker (deleted by hand, or lost): the
        // marker is put back once one of them opens with this key.
        let mut unmarked_sealed = Vec::new();
        if marker.is_none() {
            // Refuse before a key is created for a store that cannot take it.
            let records: u64 = self
                .run(redis::cmd("SCARD").arg(self.inner.keys.profiles()))
                .await?;
            if records > 0 {
                unmarked_sealed = self.sealed_records_sample().await?;
                if unmarked_sealed.is_empty() {
                    return Err(key_error(KeyProblem::NotEncrypted {
                        source_name: source.describe(),
                    }));
                }
            }
        }
        let loading = source.clone();
        let creating = marker.is_none() && unmarked_sealed.is_empty();
        // Key files and keychains are blocking I/O.
        let key = tokio::task::spawn_blocking(move || match loading.load(None)? {
            Some(key) => Ok(Some(key)),
            None if creating => loading.create(None).map(Some),
            None => Ok(None),
        })
        .await
        .map_err(|_| StoreError::io_context("the key loading task did not complete"))?
        .map_err(key_error)?
        .ok_or_else(|| {
            key_error(KeyProblem::NotFound {
                source_name: source.describe(),
            })
        })?;
        let sealer = Sealer::new(&key);
        if !unmarked_sealed.is_empty()
            && !unmarked_sealed.iter().any(|(profile, version, bytes)| {
                envelope::decode_with(profile, *version, bytes, Some(&sealer)).is_ok()
            })
        {
            return Err(key_error(KeyProblem::Wrong {
                source_name: source.describe(),
                expected: "another key (the store's encryption marker is missing, and none of \
                           its sealed records opens with this one)"
                    .into(),
            }));
        }
        let marker = match marker {
            Some(marker) => marker,
            None if !unmarked_sealed.is_empty() => {
                let new = sealer
                    .marker(&source)
                    .map_err(|message| key_error(source.unusable(&message)))?;
                let text = serde_json::to_string(&new).map_err(|_| {
                    StoreError::io_context("cannot serialize the encryption marker")
                })?;
                let set: Option<String> = self
                    .run(redis::cmd("SET").arg(&marker_key).arg(text).arg("NX"))
                    .await?;
                if set.is_some() {
                    tracing::warn!(
                        store = %self.inner.location,
                        "the store's encryption marker was missing but its records are sealed \
                         with this key; marker restored"
                    );
                    new
                } else {
                    self.marker(&marker_key).await?.ok_or_else(|| {
                        StoreError::io_context("the store's encryption marker kept changing")
                    })?
                }
            }
            None => {
                let new = sealer
                    .marker(&source)
                    .map_err(|message| key_error(source.unusable(&message)))?;
                let text = serde_json::to_string(&new).map_err(|_| {
                    StoreError::io_context("cannot serialize the encryption marker")
                })?;
                let mut connection = self.inner.connection.clone();
                let outcome: i64 = Script::new(MARK_ENCRYPTED_SCRIPT)
                    .key(&marker_key)
                    .key(self.inner.keys.profiles())
                    .arg(text)
                    .invoke_async(&mut connection)
                    .await
                    .map_err(|error| self.error(&error))?;
                match outcome {
                    1 => new,
                    -1 => {
                        return Err(key_error(KeyProblem::NotEncrypted {
                            source_name: source.describe(),
                        }))
                    }
                    // Another process made it encrypted first: its key must be ours.
                    _ => self.marker(&marker_key).await?.ok_or_else(|| {
                        StoreError::io_context("the store's encryption marker kept changing")
                    })?,
                }
            }
        };
        if !sealer.fits(&marker) {
            return Err(key_error(KeyProblem::Wrong {
                source_name: source.describe(),
                expected: marker.key_source,
            }));
        }
        Ok(Some(Arc::new(sealer)))
    }

    /// Up to 16 live records of a store without an encryption marker, if they are all sealed
    /// (profile, version, envelope); empty when one of them is in clear or none is sealed.
    async fn sealed_records_sample(&self) -> Result<Vec<(String, u64, Vec<u8>)>, StoreError> {
        let profiles: Vec<String> = self
            .run(
                redis::cmd("SRANDMEMBER")
                    .arg(self.inner.keys.profiles())
                    .arg(16),
            )
            .await?;
        let mut sealed = Vec::new();
        for profile in profiles {
            let mut connection = self.inner.connection.clone();
            let (found, version, deleted, bytes): LoadReply = self
                .inner
                .load
                .key(self.inner.keys.record(&profile))
                .arg(MAX_RECORD_BYTES)
                .invoke_async(&mut connection)
                .await
                .map_err(|error| self.error(&error))?;
            let (Some(version), Some(bytes)) = (version, bytes) else {
                continue;
            };
            let version = version.parse::<u64>().unwrap_or(0);
            if found != 1 || deleted.as_deref() == Some("1") || version == 0 {
                continue;
            }
            match envelope::format(&bytes) {
                Some(envelope::CLEAR_FORMAT) => return Ok(Vec::new()),
                Some(_) => sealed.push((profile, version, bytes)),
                None => {}
            }
        }
        Ok(sealed)
    }

    /// The store's encryption marker, if it is encrypted.
    async fn marker(&self, marker_key: &str) -> Result<Option<EncryptionMarker>, StoreError> {
        let text: Option<Vec<u8>> = self.run(redis::cmd("GET").arg(marker_key)).await?;
        text.map(|text| {
            serde_json::from_slice::<EncryptionMarker>(&text).map_err(|_| {
                StoreError::io_context(format!(
                    "the encryption marker of the store at {} ({marker_key}) is damaged",
                    self.inner.location
                ))
            })
        })
        .transpose()
    }

    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        let mut connection = self.inner.connection.clone();
        cmd.query_async(&mut connection)
            .await
            .map_err(|error| self.error(&error))
    }

    fn error(&self, error: &redis::RedisError) -> StoreError {
        map_error(&self.inner.location, self.inner.operation_timeout, error)
    }

    /// The stored version and tombstone flag, exactly as the save script compares them.
    async fn head(&self, profile: &str, key: &str) -> Result<(Option<String>, String), StoreError> {
        let mut connection = self.inner.connection.clone();
        let (version, deleted): (Option<String>, Option<String>) = redis::cmd("HMGET")
            .arg(key)
            .arg("v")
            .arg("d")
            .query_async(&mut connection)
            .await
            .map_err(|error| match error.code() {
                Some("WRONGTYPE") => not_a_hash(profile, None),
                _ => self.error(&error),
            })?;
        Ok((version, deleted.unwrap_or_else(|| "0".into())))
    }

    /// One compare-and-swap. `sent` lists the versions and envelopes of earlier tries whose
    /// answers were lost: finding one of them stored means that try landed.
    async fn try_save(
        &self,
        profile: &str,
        record: &ProfileRecord,
        expect: Expect,
        sent: &mut Vec<(u64, Vec<u8>)>,
    ) -> Result<SaveTry, StoreError> {
        let key = self.inner.keys.record(profile);
        let (version, deleted) = self.head(profile, &key).await?;
        let current = version
            .as_deref()
            .map(|v| parse_version(profile, v))
            .transpose()?;
        let found = current.filter(|_| deleted != "1");
        if let Some(found) = found.filter(|found| sent.iter().any(|(v, _)| v == found)) {
            let stored: Option<Vec<u8>> = self.run(redis::cmd("HGET").arg(&key).arg("e")).await?;
            if sent
                .iter()
                .any(|(v, envelope)| *v == found && stored.as_deref() == Some(envelope))
            {
                return Ok(SaveTry::Saved(found));
            }
        }
        let new_version = match expect {
            Expect::Version(expected) if found != expected => {
                return Err(StoreError::Conflict {
                    profile: profile.to_owned(),
                    expected,
                    found,
                })
            }
            Expect::Version(_) => next_version(profile, current.unwrap_or(0))?,
            // A tombstone is a logout, not a loss: only a key that is not there at all is.
            // (The script checks the same: no version read, no key written over.)
            Expect::Lost(_) if version.is_some() => {
                return Err(StoreError::Conflict {
                    profile: profile.to_owned(),
                    expected: None,
                    found,
                })
            }
            Expect::Lost(lost_version) => next_version(profile, lost_version)?,
        };
        let sealer = self.sealer().await?;
        let envelope = envelope::encode_with(profile, new_version, record, sealer.as_deref())?;
        sent.push((new_version, envelope.clone()));
        let mut connection = self.inner.connection.clone();
        let (outcome, detail, _): (i64, String, String) = self
            .inner
            .save
            .key(&key)
            .key(self.inner.keys.profiles())
            .key(self.inner.keys.events())
            .key(self.inner.keys.encryption())
            .arg(version.as_deref().unwrap_or(""))
            .arg(&deleted)
            .arg(new_version.to_string())
            .arg(envelope)
            .arg(profile)
            .arg(if sealer.is_some() { "1" } else { "0" })
            .invoke_async(&mut connection)
            .await
            .map_err(|error| self.error(&error))?;
        match outcome {
            1 => Ok(SaveTry::Saved(new_version)),
            -1 => {
                // Another process made the store encrypted, or its marker is gone (an emptied
                // server): check again, which fails with the key error or restores the marker.
                self.recheck_encryption().await;
                Ok(SaveTry::Lost)
            }
            -2 => Err(self.not_a_set()),
            -3 => Err(not_a_hash(profile, Some(&detail))),
            // Another writer between our read and the script: read again.
            _ => Ok(SaveTry::Lost),
        }
    }

    /// Reads a profile's key: a record, a tombstone, or nothing at all.
    async fn load_stored(&self, profile: &str) -> Result<StoredProfile, StoreError> {
        match self.load_stored_unless(profile, None).await? {
            Some(entry) => Ok(entry),
            // "Unchanged" answers only a known version, and none was sent.
            None => Err(StoreError::Io {
                context: format!(
                    "profile `{}`: the server answered \"unchanged\" to a plain load",
                    profile.escape_default()
                ),
                source: None,
            }),
        }
    }

    /// [`load_stored`](Self::load_stored), or `None` when a live record is still at version
    /// `known`: then one round trip, and neither the envelope nor the version is decoded.
    async fn load_stored_unless(
        &self,
        profile: &str,
        known: Option<u64>,
    ) -> Result<Option<StoredProfile>, StoreError> {
        validate_profile_name(profile)?;
        let key = self.inner.keys.record(profile);
        let mut connection = self.inner.connection.clone();
        let mut invocation = self.inner.load.key(&key);
        invocation.arg(MAX_RECORD_BYTES);
        if let Some(known) = known {
            invocation.arg(known);
        }
        let (found, version, deleted, bytes): LoadReply = invocation
            .invoke_async(&mut connection)
            .await
            .map_err(|error| self.error(&error))?;
        match found {
            0 => return Ok(Some(StoredProfile::Absent)),
            2 if known.is_some() => return Ok(None),
            -1 => return Err(not_a_hash(profile, version.as_deref())),
            -2 => {
                return Err(envelope::corrupt_because(
                    profile,
                    format!(
                        "the record is {} bytes long, more than a record can be \
                         ({MAX_RECORD_BYTES}); it was not read",
                        version.as_deref().unwrap_or("too many")
                    ),
                ))
            }
            _ => {}
        }
        let Some(version) = version else {
            return Err(envelope::corrupt_because(
                profile,
                "the record has no version".into(),
            ));
        };
        if deleted.as_deref() == Some("1") {
            return Ok(Some(StoredProfile::Deleted));
        }
        let version = parse_version(profile, &version)?;
        let bytes = bytes
            .ok_or_else(|| envelope::corrupt_because(profile, "the envelope is missing".into()))?;
        let sealer = self.sealer().await?;
        Ok(Some(
            envelope::decode_with(profile, version, &bytes, sealer.as_deref())?
                .map_or(StoredProfile::Deleted, |value| {
                    StoredProfile::Record(Versioned { version, value })
                }),
        ))
    }

    /// A compare-and-swap save (see [`TokenStore::save`] and [`TokenStore::restore_lost`]),
    /// retried through timeouts and lost connections for `save_patience`: a try whose answer
    /// was lost is recognised by its own record.
    async fn save_expecting(
        &self,
        profile: &str,
        record: &ProfileRecord,
        expect: Expect,
    ) -> Result<u64, StoreError> {
        validate_profile_name(profile)?;
        let give_up = tokio::time::Instant::now() + self.inner.save_patience;
        // The version and envelope of a try whose answer was lost (a timeout, a dropped
        // connection): it may have landed, which the next try must recognise as success.
        let mut sent: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut swaps = 0;
        // Bounded: every pass either returns, counts a lost swap, or waits SAVE_RETRY_PAUSE
        // before `give_up`.
        loop {
            match self.try_save(profile, record, expect, &mut sent).await {
                Ok(SaveTry::Saved(version)) => return Ok(version),
                Ok(SaveTry::Lost) => {
                    swaps += 1;
                    if swaps >= MAX_SWAP_ATTEMPTS {
                        return Err(StoreError::Contended {
                            profile: profile.to_owned(),
                            attempts: MAX_SWAP_ATTEMPTS,
                        });
                    }
                }
                Err(error) if error.is_transient() => {
                    if tokio::time::Instant::now() + SAVE_RETRY_PAUSE >= give_up {
                        return Err(error);
                    }
                    tracing::warn!(%error, "token store did not take the save; trying again");
                    tokio::time::sleep(SAVE_RETRY_PAUSE).await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// The profile set (`<prefix>profiles`) holds another type of value than a set.
    fn not_a_set(&self) -> StoreError {
        StoreError::io_context(format!(
            "the token store at {} cannot be written: its key {} is not a set (another \
             program writes under its key prefix; give this store another one)",
            self.inner.location,
            self.inner.keys.profiles()
        ))
    }
}

/// What the load script answers: an outcome, then the version, tombstone flag and envelope
/// (or a detail when the outcome is not `1`).
type LoadReply = (i64, Option<String>, Option<String>, Option<Vec<u8>>);

/// What a save expects to find.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// A live record at this version (`None`: no live record; a tombstone is fine).
    Version(Option<u64>),
    /// Nothing at all, neither a record nor a tombstone: the record last seen at this version
    /// was lost ([`TokenStore::restore_lost`]).
    Lost(u64),
}

/// How one try of a save ended, when it did not fail.
enum SaveTry {
    /// The record is stored at this version.
    Saved(u64),
    /// Another writer changed the record between the read and the write: try again.
    Lost,
}

/// A record whose Redis key holds another type of value than a hash (`kind`, when known):
/// corrupt, so that the commands that recover from a corrupt record (a delete, then a new
/// login) can replace it.
fn not_a_hash(profile: &str, kind: Option<&str>) -> StoreError {
    envelope::corrupt_because(
        profile,
        format!(
            "its Redis key holds a {}, not a record (a hash)",
            kind.unwrap_or("value of another type")
        ),
    )
}

fn parse_version(profile: &str, text: &str) -> Result<u64, StoreError> {
    text.parse::<u64>().ok().filter(|v| *v > 0).ok_or_else(|| {
        envelope::corrupt_because(profile, "the stored version is not a number".into())
    })
}

#[async_trait]
impl TokenStore for RedisTokenStore {
    async fn load(&self, profile: &str) -> Result<Option<Versioned<ProfileRecord>>, StoreError> {
        Ok(match self.load_stored(profile).await? {
            StoredProfile::Record(record) => Some(record),
            _ => None,
        })
    }

    async fn save(
        &self,
        profile: &str,
        record: &ProfileRecord,
        expected: Option<u64>,
    ) -> Result<u64, StoreError> {
        self.save_expecting(profile, record, Expect::Version(expected))
            .await
    }

    async fn load_entry(&self, profile: &str) -> Result<StoredProfile, StoreError> {
        self.load_stored(profile).await
    }

    /// One round trip: the server compares the version, and sends the envelope only when the
    /// record changed.
    async fn load_entry_if_changed(
        &self,
        profile: &str,
        known: u64,
    ) -> Result<Option<StoredProfile>, StoreError> {
        self.load_stored_unless(profile, Some(known)).await
    }

    /// Writes only where the profile's key is missing altogether (an emptied or restarted
    /// server): a tombstone, which a logout leaves, is a conflict.
    async fn restore_lost(
        &self,
        profile: &str,
        record: &ProfileRecord,
        lost_version: u64,
    ) -> Result<u64, StoreError> {
        self.save_expecting(profile, record, Expect::Lost(lost_version))
            .await
    }

    async fn delete(&self, profile: &str) -> Result<(), StoreError> {
        validate_profile_name(profile)?;
        let mut connection = self.inner.connection.clone();
        let outcome: i64 = self
            .inner
            .delete
            .key(self.inner.keys.record(profile))
            .key(self.inner.keys.profiles())
            .key(self.inner.keys.events())
            .arg(profile)
            .invoke_async(&mut connection)
            .await
            .map_err(|error| self.error(&error))?;
        if outcome == -2 {
            return Err(self.not_a_set());
        }
        Ok(())
    }

    async fn profiles(&self) -> Result<Vec<String>, StoreError> {
        let mut names: Vec<String> = self
            .run(redis::cmd("SMEMBERS").arg(self.inner.keys.profiles()))
            .await?;
        names.sort();
        Ok(names)
    }

    async fn consume_once(
        &self,
        key: &str,
        expires_at: UnixTime,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        let ttl = expires_at
            .as_millis()
            .saturating_sub(now.as_millis())
            .max(1);
        let mut connection = self.inner.connection.clone();
        let won: i64 = self
            .inner
            .consume
            .key(self.inner.keys.used(key))
            .arg(expires_at.as_millis().to_string())
            .arg(now.as_millis().to_string())
            .arg(ttl.to_string())
            .invoke_async(&mut connection)
            .await
            .map_err(|error| self.error(&error))?;
        Ok(won == 1)
    }
}

/// Whether `location` names a Redis server (`redis://`, `rediss://`, `redis+unix://`, and
/// `unix://`, which the Redis client takes for a socket too) rather than, say, a directory:
/// how the CLI's `--store` and the facade's `store_url` tell them apart. (`unix:///run/r.sock`
/// used to become a sled directory named `unix:` in the working directory.)
pub fn is_redis_url(location: &str) -> bool {
    let lower = location.trim_start().to_ascii_lowercase();
    ["redis://", "rediss://", "redis+unix://", "unix://"]
        .iter()
        .any(|scheme| lower.starts_with(scheme))
}

/// Refuses plain `redis://` to a host that is not a loopback address, unless allowed: the
/// same rule as for MailUp's endpoints. `Ok(true)` for a TLS URL.
fn check_url(url: &str, location: &str, allow_insecure: bool) -> Result<bool, StoreError> {
    let invalid = || StoreError::Unavailable {
        store: location.to_owned(),
        message: "the URL is not a valid Redis URL (redis://, rediss://, redis+unix://)".into(),
    };
    let parsed = url::Url::parse(url).map_err(|_| invalid())?;
    match parsed.scheme() {
        "rediss" => Ok(true),
        "redis+unix" | "unix" => Ok(false),
        "redis" if allow_insecure || mailup_auth_core::internal::is_loopback_host(&parsed) => {
            Ok(false)
        }
        "redis" => Err(StoreError::Insecure {
            store: location.to_owned(),
        }),
        _ => Err(invalid()),
    }
}

/// `scheme://host:port/db` for messages: never the user name or password. A path that is
/// not a database number is not shown either: a password with an unescaped `/` in the URL
/// ends up there (`redis://user:6379/rest-of-password@host/0` parses as host `user`, port
/// 6379 and that path).
pub(crate) fn redacted_location(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(parsed) => {
            let host = parsed.host_str().unwrap_or("");
            let port = parsed.port().map(|p| format!(":{p}")).unwrap_or_default();
            let path = parsed.path();
            let database = path.strip_prefix('/').unwrap_or(path);
            let path = if parsed.scheme().ends_with("unix")
                || database.bytes().all(|b| b.is_ascii_digit())
            {
                path
            } else {
                "/(not a database number)"
            };
            format!("{}://{host}{port}{path}", parsed.scheme())
        }
        Err(_) => "an unparsable Redis URL".into(),
    }
}

const AUTHENTICATION_FAILED: &str =
    "authentication failed (check the user and password in the URL)";

/// Whether a connection failed in the TLS handshake. rustls' errors carry no secret, but are
/// only recognised here, never quoted.
fn is_tls_failure(error: &redis::RedisError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    let mut depth = 0;
    while let Some(current) = source {
        if current.is::<rustls::Error>() {
            return true;
        }
        source = current.source();
        depth += 1;
        if depth > 8 {
            break;
        }
    }
    let text = error.to_string();
    text.contains("InvalidCertificate") || text.contains("invalid peer certificate")
}

/// A typed, secret-free error for a failed Redis command.
pub(crate) fn map_error(
    location: &str,
    timeout: Duration,
    error: &redis::RedisError,
) -> StoreError {
    if error.is_timeout() {
        return StoreError::Timeout {
            store: location.to_owned(),
            after: timeout,
        };
    }
    if error.code() == Some("WRONGTYPE") {
        return StoreError::io_context(format!(
            "a key of the token store at {location} holds another type of value than the \
             store writes there (WRONGTYPE): another program writes under its key prefix"
        ));
    }
    let message = match error.kind() {
        redis::ErrorKind::AuthenticationFailed => AUTHENTICATION_FAILED.to_owned(),
        // A server that wants a password and got none answers NOAUTH; an ACL user whose
        // password is wrong, WRONGPASS.
        _ if matches!(error.code(), Some("NOAUTH" | "WRONGPASS")) => {
            AUTHENTICATION_FAILED.to_owned()
        }
        _ if is_tls_failure(error) => "TLS failed: the server's certificate is not trusted or \
             does not name this host (for a private CA, give its certificate: \
             tls_root_certificate, MailUpClientBuilder::redis_root_certificate, --store-ca)"
            .to_owned(),
        _ if error.is_connection_refusal() => "connection refused".to_owned(),
        _ if error.is_connection_dropped() => "the connection was lost".to_owned(),
        redis::ErrorKind::Io => "cannot reach the server".to_owned(),
        // SELECT of a database the server does not have: the server's own text names no
        // secret, but is only recognised here, never quoted.
        redis::ErrorKind::Server(_)
            if error
                .detail()
                .is_some_and(|detail| detail.contains("DB index is out of range")) =>
        {
            "the database number in the URL is out of range for this server (see its \
             `databases` setting)"
                .to_owned()
        }
        redis::ErrorKind::Server(_) => format!(
            "the server refused the command ({})",
            error.code().unwrap_or("error")
        ),
        kind => format!("{kind:?}"),
    };
    StoreError::Unavailable {
        store: location.to_owned(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_redis_is_for_loopback_only_unless_asked_for() {
        for ok in [
            "redis://127.0.0.1:6379/0",
            "redis://localhost",
            "redis://[::1]:7000",
            "rediss://cache.example.com:6380/2",
            "redis+unix:///run/redis.sock",
            "unix:///run/redis.sock",
        ] {
            check_url(ok, "x", false).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        let error = check_url("redis://10.0.0.5:6379", "x", false).unwrap_err();
        assert!(matches!(error, StoreError::Insecure { .. }), "{error:?}");
        check_url("redis://10.0.0.5:6379", "x", true).unwrap();
        assert!(matches!(
            check_url("http://127.0.0.1", "x", false),
            Err(StoreError::Unavailable { .. })
        ));
    }

    #[test]
    fn every_url_the_redis_client_takes_is_a_redis_location() {
        for url in [
            "redis://127.0.0.1",
            "REDISS://host",
            " redis+unix:///run/r.sock",
            "unix:///run/r.sock",
        ] {
            assert!(is_redis_url(url), "{url}");
        }
        for path in ["/var/lib/mailup", "redis", "unix", "./redis:"] {
            assert!(!is_redis_url(path), "{path}");
        }
    }

    #[test]
    fn locations_never_carry_the_password() {
        let location = redacted_location("rediss://user:hunter2@cache.example.com:6380/3");
        assert_eq!(location, "rediss://cache.example.com:6380/3");
        // A password with an unescaped `/`: its end is parsed as the path.
        let location = redacted_location("redis://user:6379/hunter2@127.0.0.1/0");
        assert!(!location.contains("hunter2"), "{location}");
        assert_eq!(
            redacted_location("redis+unix:///run/redis.sock?pass=hunter2"),
            "redis+unix:///run/redis.sock"
        );
        let builder = RedisTokenStore::builder("redis://:hunter2@127.0.0.1/0");
        assert!(!format!("{builder:?}").contains("hunter2"));
    }
}
