#![doc = include_str!("../README.md")]
//!
//! ## What this crate is for, and what it is not for
//!
//! It keeps `mailup-auth` [`ProfileRecord`]s (tokens and the client they belong to) durably on
//! disk, one record per profile, with the version-checked `save` the [`TokenStore`] port
//! requires. It is not an encrypted vault: secrets are stored as plain strings and protected
//! by file permissions only (see [Security](#security)). It is not shared between processes
//! either: one process opens a database at a time, and a second one gets
//! [`StoreError::Locked`]. Tests and short-lived programs that need no disk can use
//! [`MemoryTokenStore`](mailup_auth_core::ports::MemoryTokenStore) from the core, which has the
//! same version and compare-and-swap semantics.
//!
//! ## Records on disk
//!
//! Each profile's value is a JSON envelope `{"format": 1, "version": N, "record": {...}}`.
//! `format` lets later releases read records written by this one; a record with a `format`
//! newer than this release understands is reported as [`StoreError::Corrupt`] (saying so)
//! rather than misread. Optional fields missing from a record load as `None`.
//!
//! A deleted profile leaves a small tombstone `{"format": 1, "version": N, "deleted": true}`
//! behind, so that versions never go back: the next save after a delete gets `N + 1`, and a
//! writer still holding a version from before the delete cannot overwrite the new login's
//! tokens by accident (the version it expects is gone for good).
//!
//! ## Blocking
//!
//! sled's calls block (a `save` waits for an `fsync`). Inside a tokio runtime they run on the
//! blocking thread pool (`spawn_blocking`) so they never stall the async workers; outside one
//! they run on the calling thread. [`SledTokenStore::open`] is synchronous (it may also wait up
//! to two seconds for sled to let go of a database this process just closed): call it at
//! startup, or from `spawn_blocking`.
//!
//! Pending authorizations' used states live in a second tree (`consumed`) with their expiry, so
//! a web-app authorization is completed once even by several processes sharing the store;
//! expired markers are swept on each use.
//!
//! ## Refresh lease
//!
//! [`SledRefreshLease`] is the cross-process refresh lock for processes on one host that use
//! the same store directory: an OS file lock per profile in `refresh-locks/`, released when its
//! guard drops or its process dies.
//!
//! ## Security
//!
//! On Unix, [`SledTokenStore::open`] makes the database directory `0700` and the files in it
//! `0600`. Files sled creates later inside the directory are protected by the directory's
//! mode. sled writes a log: an overwritten or deleted record can stay in its files until sled
//! reuses that space, so `delete` forgets tokens but does not securely erase them.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use mailup_auth_core::ports::{
    next_version, validate_profile_name, ProfileRecord, StoreError, TokenStore, Versioned,
};
use mailup_auth_core::secret::ExposeSecrets;
use mailup_auth_core::UnixTime;
use serde::{Deserialize, Serialize};

mod lease;

pub use crate::lease::SledRefreshLease;

/// The newest record format this release writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// The sled tree holding one envelope per profile.
const PROFILES_TREE: &str = "profiles";

/// The sled tree holding used one-time keys (pending authorizations' states) with their
/// expiry, big-endian milliseconds.
const CONSUMED_TREE: &str = "consumed";

/// How many times a save retries a compare-and-swap that lost to a writer which left the
/// version it expected in place (a delete and re-create between its read and its swap).
/// A writer that changed the version makes the save fail with a conflict at once.
const MAX_SWAP_ATTEMPTS: usize = 16;

/// A durable [`TokenStore`] over a sled database in one directory.
///
/// Cloning is cheap: clones share the open database. Every `save` and `delete` returns only
/// after sled has flushed to disk.
#[derive(Clone)]
pub struct SledTokenStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    profiles: sled::Tree,
    consumed: sled::Tree,
    path: PathBuf,
    /// The canonical path under which this process registered the database as open.
    registered: PathBuf,
}

impl Drop for Inner {
    fn drop(&mut self) {
        opened_here().insert(self.registered.clone(), Registration::Released);
    }
}

/// Databases this process opened: sled takes an exclusive file lock, so a second open of one
/// that is still open here can only fail, and one released here may still be locked for a few
/// milliseconds while sled's background threads let go of its files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Registration {
    Open,
    Released,
}

static OPENED_HERE: Mutex<BTreeMap<PathBuf, Registration>> = Mutex::new(BTreeMap::new());

fn opened_here() -> std::sync::MutexGuard<'static, BTreeMap<PathBuf, Registration>> {
    // Every critical section is a single map operation, so a poisoned map is still consistent.
    OPENED_HERE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How long `open` waits for sled to release a database this process closed itself.
/// A database held by another process is reported at once.
const RELEASE_WAIT: Duration = Duration::from_secs(2);

impl fmt::Debug for SledTokenStore {
    // sled's own Debug prints every key and value, secrets included.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SledTokenStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl SledTokenStore {
    /// Opens (creating if needed) the database in the directory `path`.
    ///
    /// On Unix the directory is created with mode `0700` (an existing one is set to `0700`)
    /// and the files in it are set to `0600`.
    ///
    /// One database can be open once at a time: share a store within a process by cloning it.
    ///
    /// # Errors
    ///
    /// [`StoreError::Locked`] when another process has the database open, or this process
    /// still has (this returns at once, it does not wait); [`StoreError::Io`] when the
    /// directory cannot be created or the database cannot be read.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        create_private_dir(&path)?;
        let registered = std::fs::canonicalize(&path).map_err(|error| dir_error(&path, &error))?;
        let previously = {
            let mut opened = opened_here();
            let previously = opened.get(&registered).copied();
            if previously == Some(Registration::Open) {
                return Err(StoreError::Locked {
                    path: path.display().to_string(),
                    message: "it is already open in this process; clone that store to share it"
                        .into(),
                });
            }
            opened.insert(registered.clone(), Registration::Open);
            previously
        };
        match Self::open_registered(&path, registered.clone(), previously.is_some()) {
            Ok(store) => Ok(store),
            Err(error) => {
                let mut opened = opened_here();
                match previously {
                    Some(registration) => opened.insert(registered, registration),
                    None => opened.remove(&registered),
                };
                Err(error)
            }
        }
    }

    fn open_registered(
        path: &Path,
        registered: PathBuf,
        released_here: bool,
    ) -> Result<Self, StoreError> {
        let started = Instant::now();
        let db = loop {
            match sled::Config::new().path(path).open() {
                Ok(db) => break db,
                Err(error) => {
                    let error = open_error(path, error);
                    let lingering = released_here
                        && matches!(error, StoreError::Locked { .. })
                        && started.elapsed() < RELEASE_WAIT;
                    if !lingering {
                        return Err(error);
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        };
        let profiles = db
            .open_tree(PROFILES_TREE)
            .map_err(|error| open_error(path, error))?;
        let consumed = db
            .open_tree(CONSUMED_TREE)
            .map_err(|error| open_error(path, error))?;
        // Make sure what sled just created exists on disk before permissions are fixed.
        db.flush().map_err(|error| io_error("flush", error))?;
        restrict_files(path)?;
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                profiles,
                consumed,
                path: path.to_path_buf(),
                registered,
            }),
        })
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The cross-process refresh lease for this store's profiles: an OS file lock per profile
    /// in the store directory (see [`SledRefreshLease`]).
    pub fn refresh_lease(&self) -> SledRefreshLease {
        SledRefreshLease::new(&self.inner.path)
    }

    fn load_blocking(&self, profile: &str) -> Result<Option<Versioned<ProfileRecord>>, StoreError> {
        let Some(bytes) = self
            .inner
            .profiles
            .get(profile.as_bytes())
            .map_err(|error| io_error("read", error))?
        else {
            return Ok(None);
        };
        let head = decode_head(profile, &bytes)?;
        if head.deleted {
            return Ok(None);
        }
        let record = decode_record(profile, &bytes)?;
        Ok(Some(Versioned {
            version: head.version,
            value: record,
        }))
    }

    fn save_blocking(
        &self,
        profile: &str,
        record: &ProfileRecord,
        expected: Option<u64>,
    ) -> Result<u64, StoreError> {
        for _ in 0..MAX_SWAP_ATTEMPTS {
            let current = self
                .inner
                .profiles
                .get(profile.as_bytes())
                .map_err(|error| io_error("read", error))?;
            let (found, last_version) = match &current {
                None => (None, 0),
                Some(bytes) => {
                    let head = decode_head(profile, bytes)?;
                    let found = (!head.deleted).then_some(head.version);
                    (found, head.version)
                }
            };
            if found != expected {
                return Err(conflict(profile, expected, found));
            }
            let version = next_version(profile, last_version)?;
            let encoded = encode(&EnvelopeOut {
                format: FORMAT_VERSION,
                version,
                record: Some(ExposeSecrets(record)),
                deleted: false,
            })?;
            let swapped = self
                .inner
                .profiles
                .compare_and_swap(profile.as_bytes(), current, Some(encoded))
                .map_err(|error| io_error("write", error))?;
            if swapped.is_ok() {
                self.flush()?;
                return Ok(version);
            }
        }
        let found = self.load_blocking(profile)?.map(|stored| stored.version);
        Err(conflict(profile, expected, found))
    }

    fn delete_blocking(&self, profile: &str) -> Result<(), StoreError> {
        for _ in 0..MAX_SWAP_ATTEMPTS {
            let Some(current) = self
                .inner
                .profiles
                .get(profile.as_bytes())
                .map_err(|error| io_error("read", error))?
            else {
                return Ok(());
            };
            let replacement = match decode_head(profile, &current) {
                Ok(head) if head.deleted && head.version < u64::MAX => return Ok(()),
                // An exhausted version counter cannot be kept in a tombstone (no save could
                // follow it): the profile is removed entirely and starts again at 1.
                Ok(head) if head.version == u64::MAX => None,
                Ok(head) => Some(encode(&EnvelopeOut {
                    format: FORMAT_VERSION,
                    version: head.version,
                    record: None,
                    deleted: true,
                })?),
                // Deleting is how a corrupt record is cleared; its version is unknown, so no
                // tombstone can keep it.
                Err(_) => None,
            };
            let swapped = self
                .inner
                .profiles
                .compare_and_swap(profile.as_bytes(), Some(current), replacement)
                .map_err(|error| io_error("write", error))?;
            if swapped.is_ok() {
                return self.flush();
            }
        }
        Err(StoreError::Io(format!(
            "profile `{}` kept changing while it was being deleted",
            profile.escape_default()
        )))
    }

    fn profiles_blocking(&self) -> Result<Vec<String>, StoreError> {
        let mut names = Vec::new();
        for entry in self.inner.profiles.iter() {
            let (key, value) = entry.map_err(|error| io_error("read", error))?;
            let name = String::from_utf8_lossy(&key).into_owned();
            // A corrupt record is listed: it exists, and listing it lets the user delete it.
            let deleted = decode_head(&name, &value).is_ok_and(|head| head.deleted);
            if !deleted {
                names.push(name);
            }
        }
        // sled iterates in byte order, which is `str` order; sorting keeps the promise explicit.
        names.sort();
        Ok(names)
    }

    fn consume_once_blocking(
        &self,
        key: &str,
        expires_at: UnixTime,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        // Markers live ten minutes or so; sweeping the expired ones on each use keeps the tree
        // as small as the number of authorizations started in that window.
        for entry in self.inner.consumed.iter() {
            let (marker, until) = entry.map_err(|error| io_error("read", error))?;
            let expired = <[u8; 8]>::try_from(until.as_ref())
                .map(|bytes| u64::from_be_bytes(bytes) < now.as_millis())
                .unwrap_or(true);
            if expired {
                self.inner
                    .consumed
                    .remove(marker)
                    .map_err(|error| io_error("write", error))?;
            }
        }
        let until = expires_at.as_millis().to_be_bytes();
        let swapped = self
            .inner
            .consumed
            .compare_and_swap(key.as_bytes(), None::<&[u8]>, Some(&until[..]))
            .map_err(|error| io_error("write", error))?;
        if swapped.is_err() {
            return Ok(false);
        }
        self.flush()?;
        Ok(true)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.inner
            .db
            .flush()
            .map(|_| ())
            .map_err(|error| io_error("flush", error))
    }

    /// Runs a blocking sled operation off the async workers when a tokio runtime is present.
    async fn run<T, F>(&self, operation: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Self) -> Result<T, StoreError> + Send + 'static,
    {
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                let store = self.clone();
                handle
                    .spawn_blocking(move || operation(&store))
                    .await
                    .map_err(|error| {
                        StoreError::Io(format!("token store task did not complete: {error}"))
                    })?
            }
            Err(_) => operation(self),
        }
    }
}

#[async_trait]
impl TokenStore for SledTokenStore {
    async fn load(&self, profile: &str) -> Result<Option<Versioned<ProfileRecord>>, StoreError> {
        validate_profile_name(profile)?;
        let profile = profile.to_owned();
        self.run(move |store| store.load_blocking(&profile)).await
    }

    async fn save(
        &self,
        profile: &str,
        record: &ProfileRecord,
        expected: Option<u64>,
    ) -> Result<u64, StoreError> {
        validate_profile_name(profile)?;
        let profile = profile.to_owned();
        let record = record.clone();
        self.run(move |store| store.save_blocking(&profile, &record, expected))
            .await
    }

    async fn delete(&self, profile: &str) -> Result<(), StoreError> {
        validate_profile_name(profile)?;
        let profile = profile.to_owned();
        self.run(move |store| store.delete_blocking(&profile)).await
    }

    async fn profiles(&self) -> Result<Vec<String>, StoreError> {
        self.run(Self::profiles_blocking).await
    }

    async fn consume_once(
        &self,
        key: &str,
        expires_at: UnixTime,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        let key = key.to_owned();
        self.run(move |store| store.consume_once_blocking(&key, expires_at, now))
            .await
    }
}

/// What is written for a profile.
#[derive(Serialize)]
struct EnvelopeOut<'a> {
    format: u32,
    version: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    record: Option<ExposeSecrets<'a, ProfileRecord>>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    deleted: bool,
}

/// The part of an envelope read before the record, so the format is checked before the record
/// is interpreted and the version is known even when only the version is needed.
#[derive(Deserialize)]
struct EnvelopeHead {
    format: u32,
    version: u64,
    #[serde(default)]
    deleted: bool,
}

#[derive(Deserialize)]
struct EnvelopeRecord {
    record: ProfileRecord,
}

fn decode_head(profile: &str, bytes: &[u8]) -> Result<EnvelopeHead, StoreError> {
    let head: EnvelopeHead =
        serde_json::from_slice(bytes).map_err(|error| corrupt(profile, "envelope", &error))?;
    if head.format > FORMAT_VERSION {
        return Err(StoreError::Corrupt {
            profile: profile.to_owned(),
            message: format!(
                "written by a newer version of mailup-auth-store-sled (record format {}, this \
                 version reads formats up to {FORMAT_VERSION}); upgrade to read it",
                head.format
            ),
        });
    }
    if head.format == 0 || head.version == 0 {
        return Err(StoreError::Corrupt {
            profile: profile.to_owned(),
            message: format!(
                "invalid envelope (format {}, version {})",
                head.format, head.version
            ),
        });
    }
    Ok(head)
}

fn decode_record(profile: &str, bytes: &[u8]) -> Result<ProfileRecord, StoreError> {
    serde_json::from_slice::<EnvelopeRecord>(bytes)
        .map(|envelope| envelope.record)
        .map_err(|error| corrupt(profile, "record", &error))
}

/// A corrupt-record error that describes where decoding failed but never quotes the content
/// (serde's messages can quote values, and values may be tokens).
fn corrupt(profile: &str, part: &str, error: &serde_json::Error) -> StoreError {
    let category = match error.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax => "not valid JSON",
        serde_json::error::Category::Data => "unexpected content",
        serde_json::error::Category::Eof => "truncated",
    };
    StoreError::Corrupt {
        profile: profile.to_owned(),
        message: format!(
            "{part} is {category} (line {}, column {})",
            error.line(),
            error.column()
        ),
    }
}

fn encode(envelope: &EnvelopeOut<'_>) -> Result<Vec<u8>, StoreError> {
    // Cannot fail for these types (string keys only); the error text is dropped all the same,
    // since it could quote a value.
    serde_json::to_vec(envelope).map_err(|_| StoreError::Io("cannot serialize the record".into()))
}

fn conflict(profile: &str, expected: Option<u64>, found: Option<u64>) -> StoreError {
    StoreError::Conflict {
        profile: profile.to_owned(),
        expected,
        found,
    }
}

fn io_error(operation: &str, error: sled::Error) -> StoreError {
    StoreError::Io(format!("{operation} failed: {error}"))
}

fn open_error(path: &Path, error: sled::Error) -> StoreError {
    match error {
        // sled 0.34 reports a failed `flock` as an `Other` I/O error with this text.
        sled::Error::Io(io)
            if io.kind() == std::io::ErrorKind::WouldBlock
                || io.to_string().contains("could not acquire lock") =>
        {
            StoreError::Locked {
                path: path.display().to_string(),
                message: format!("held by another process: {io}"),
            }
        }
        sled::Error::Corruption { .. } => StoreError::Io(format!(
            "the database at {} is corrupt: {error}",
            path.display()
        )),
        other => StoreError::Io(format!(
            "cannot open the database at {}: {other}",
            path.display()
        )),
    }
}

#[cfg(unix)]
fn create_private_dir(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};

    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|error| dir_error(path, &error))?;
    // An existing directory keeps its mode under `create`; tokens must not be readable by
    // others whatever it was.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
        .map_err(|error| dir_error(path, &error))
}

#[cfg(not(unix))]
fn create_private_dir(path: &Path) -> Result<(), StoreError> {
    std::fs::create_dir_all(path).map_err(|error| dir_error(path, &error))
}

/// Sets every file under `dir` to `0600` and every directory to `0700`.
#[cfg(unix)]
fn restrict_files(dir: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;

    let entries = std::fs::read_dir(dir).map_err(|error| dir_error(dir, &error))?;
    for entry in entries {
        let entry = entry.map_err(|error| dir_error(dir, &error))?;
        let path = entry.path();
        let file_type = entry
            .file_type()
            .map_err(|error| dir_error(&path, &error))?;
        let mode = if file_type.is_dir() {
            restrict_files(&path)?;
            0o700
        } else if file_type.is_file() {
            0o600
        } else {
            continue;
        };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .map_err(|error| dir_error(&path, &error))?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn restrict_files(_dir: &Path) -> Result<(), StoreError> {
    Ok(())
}

fn dir_error(path: &Path, error: &std::io::Error) -> StoreError {
    StoreError::Io(format!("{}: {error}", path.display()))
}
