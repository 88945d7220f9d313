#![doc = include_str!("../README.md")]
//!
//! ## What this crate is for, and what it is not for
//!
//! It keeps `mailup-auth` [`ProfileRecord`]s (tokens and the client they belong to) durably on
//! disk, one record per profile, with the version-checked `save` the [`TokenStore`] port
//! requires. Records are stored in clear and protected by file permissions, or, with
//! [`SledTokenStore::open_encrypted`], sealed with a key kept elsewhere (see
//! [Encryption](#encryption)). It is not shared between processes: one process opens a store
//! at a time, and a second one gets [`StoreError::Locked`]. Tests and short-lived programs that
//! need no disk can use [`MemoryTokenStore`](mailup_auth_core::MemoryTokenStore) from the
//! core, which has the same version and compare-and-swap semantics.
//!
//! ## Layout on disk
//!
//! ```text
//! <store>/
//!   lock             OS file lock held by the process that has the store open
//!   CURRENT          pointer file: the current generation's name, e.g. `gen-3`
//!   gen-3/           the sled database
//!   refresh-locks/   the refresh lease's lock files
//! ```
//!
//! A store written by 0.1.0 (sled's files directly in `<store>/`) is migrated when it is
//! opened: its trees are copied into `gen-1`, the pointer is written, and the old files are
//! overwritten and removed. Nobody has to log in again after an upgrade; a 0.1.0 program
//! opening a migrated store would find it empty, so do not downgrade.
//!
//! ## Records on disk
//!
//! Each profile's value is a JSON envelope `{"format": 1, "version": N, "record": {...}}`, or
//! in an encrypted store `{"format": 2, "version": N, "sealed": "..."}`. `format` lets later
//! releases read records written by this one; a record with a `format` newer than this release
//! understands is reported as [`StoreError::Corrupt`] (saying so) rather than misread. Optional
//! fields missing from a record load as `None`.
//!
//! A deleted profile leaves a small tombstone `{"format": 1, "version": N, "deleted": true}`
//! behind (no secret in it), so that versions never go back: the next save after a delete gets
//! `N + 1`, and a writer still holding a version from before the delete cannot overwrite the
//! new login's tokens by accident (the version it expects is gone for good).
//!
//! ## Removing secrets: compaction
//!
//! sled writes a log: a replaced or deleted value stays in its files until sled reuses the
//! space. So whenever secrets are removed (a `delete` of a record, or a `save` that leaves a
//! token or the client secret out where the stored record had one, as a logout does), the
//! store is compacted before the call returns: the live records are copied into a fresh
//! generation, flushed, the pointer is switched by an atomic rename, and the old generation's
//! files are overwritten with zeros and removed. Refreshes (a save that replaces tokens) do not
//! compact; the next compaction removes the old tokens with everything else.
//!
//! A crash (even `kill -9`) at any point leaves the old or the new generation current, with
//! every record; whatever is left of the other one is wiped when the store is next opened,
//! and so is a compaction that was due but did not finish (a marker in the store says so).
//! [`SledTokenStore::compact`] compacts on demand.
//!
//! ## Damaged stores
//!
//! sled refuses a database whose files are damaged (bit flips, a truncated file) as a whole:
//! opening one is [`StoreError::Damaged`]. sled takes a message whose checksum fails for the
//! torn end of its log and, opening it, silently drops that message and every one written
//! after it; so `open` reads the log first and refuses a store with a damaged record message.
//! A damaged message that holds no record (early in the log) passes that check, and sled's
//! own recovery would then zero every record after it: so sled only ever opens its files with
//! a byte copy of them aside (`pre-open` in the database directory, crash-safe, wiped after a
//! healthy open), which is put back when sled's open fails or sled then serves a profile at an
//! older version than the newest intact copy in the log; the open is `Damaged` and the files
//! are as they were. Files of more than 64 MiB in all are refused without letting sled touch
//! them. [`SledTokenStore::salvage`] then rebuilds the store from the records
//! that can still be read and verified (CRC32 of sled's messages, the envelope decoded in
//! full, sealed records authenticated), moving the damaged directory aside; the CLI runs it
//! as `mailup-auth recover`. A log cut short at its end (by a crash, or a truncation) opens
//! with what precedes the cut, as sled designs it.
//!
//! ## Encryption
//!
//! [`SledTokenStore::open_encrypted`] seals every record with XChaCha20-Poly1305 under a 256-bit
//! key from a [`KeySource`]: a key file (mode `0600`, outside the store) or, with the `keyring`
//! feature, the OS keychain. Each record gets a random nonce, and the profile name and the
//! record's version are its associated data, so sealed records cannot be swapped between
//! profiles. Profile names, versions and tombstones stay in clear. A new store creates its key
//! in the source when there is none; the store then remembers that it is encrypted. Opening
//! an encrypted store without a key, with another key, or a store holding records in clear
//! with a key, is a [`StoreError::Key`] that names what is missing, never an empty store.
//!
//! ## Blocking
//!
//! A write waits for an `fsync` (a `save` is flushed before it returns), so writes never stall
//! the other tasks of a tokio runtime: inside a runtime they run on its blocking thread pool
//! (`spawn_blocking`), outside one on the calling thread. (Running them in `block_in_place`
//! instead saves the hop to the pool and back, about 20 µs per call here, but tokio offers no
//! way to tell the contexts where `block_in_place` panics or is unsupported — a `LocalSet`, a
//! `spawn_local` task, a current-thread runtime under a multi-thread handle — from those where
//! it is safe; correctness first: see docs/performance.md.)
//!
//! A program whose runtime does little else while a token is refreshed (a command-line tool,
//! a single-purpose worker) and whose store is on a local disk can take that hop out of its
//! saves: [`SledTokenStore::with_write_thread`] with [`WriteThread::CallingThread`]. A save
//! then runs on the thread that awaits it, `fsync` included, and that thread (with the tasks
//! queued on it) waits for the disk. It is a choice, not the default: on a shared runtime a
//! slow disk would stall unrelated tasks. Deletes, listings and compactions stay on the pool
//! either way, and so does a save while a compaction holds the database.
//!
//! A read of one profile (`load`, `load_entry`, `load_entry_if_changed`, which the facade asks
//! before every refresh) runs in place, on the calling thread, in every context: sled answers
//! it from memory (about a microsecond; the first read of a page after the store opened may
//! read it from the file), and an unchanged record is compared by its version without being
//! decoded or decrypted. Only while a [`compact`](SledTokenStore::compact) holds the database
//! does a read wait, and then it waits on the blocking pool like a write. Listing the profiles
//! (`profiles`, a scan of every record) stays on the blocking pool.
//!
//! [`SledTokenStore::open`] is synchronous (it may also wait up to two seconds for sled to let
//! go of a database this process just closed): call it at startup, or from `spawn_blocking`.
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
//! On Unix, [`SledTokenStore::open`] makes the store directory `0700` and the files in it
//! `0600`. Files sled creates later inside the directory are protected by the directory's
//! mode. See `docs/security.md` in the repository for what is on disk, when, and how to remove
//! it.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
// Public types stay open to new variants and fields unless one is exhaustive on purpose (each
// such item says why at its `allow`).
#![warn(clippy::exhaustive_enums, clippy::exhaustive_structs)]

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use mailup_auth_core::ExposeSecrets;
use mailup_auth_core::UnixTime;
use mailup_auth_core::{
    next_version, validate_profile_name, KeyProblem, ProfileRecord, StoreError, StoredProfile,
    TokenStore, Versioned,
};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

mod layout;
mod lease;
mod preopen;
mod salvage;

pub use crate::lease::SledRefreshLease;
pub use crate::salvage::{LostProfile, LostReason, RecoveredProfile, SalvageReport};
/// Where an encrypted store's key is kept (from `mailup-auth-seal`, shared with the Redis
/// store).
pub use mailup_auth_seal::KeySource;
use mailup_auth_seal::{EncryptionMarker, Sealer};

/// The newest record format this release writes and reads: 1 is a record in clear, 2 a sealed
/// record (encrypted stores). Stores without encryption keep writing format 1.
pub const FORMAT_VERSION: u32 = 2;

/// The format of a record in clear (and of every tombstone).
const CLEAR_FORMAT: u32 = 1;
/// The format of a sealed record.
const SEALED_FORMAT: u32 = 2;

/// The sled tree holding one envelope per profile.
const PROFILES_TREE: &str = "profiles";

/// The sled tree holding used one-time keys (pending authorizations' states) with their
/// expiry, big-endian milliseconds.
const CONSUMED_TREE: &str = "consumed";

/// The sled tree holding facts about the store itself.
const META_TREE: &str = "meta";
/// In [`META_TREE`]: the [`EncryptionMarker`] of an encrypted store (JSON).
const META_ENCRYPTION: &[u8] = b"encryption";
/// In [`META_TREE`]: secrets were removed and the compaction that wipes them has not finished.
const META_SCRUB_PENDING: &[u8] = b"scrub-pending";

/// How many times a save retries a compare-and-swap that lost to a writer which left the
/// version it expected in place (a delete and re-create between its read and its swap).
/// A writer that changed the version makes the save fail with a conflict at once.
const MAX_SWAP_ATTEMPTS: u32 = 16;

/// The environment variable of the crash test hook (debug builds only): the process kills
/// itself at the named point of a compaction or migration.
const CRASH_ENV: &str = "MAILUP_AUTH_STORE_SLED_CRASH_AT";

/// A durable [`TokenStore`] over a sled database in one directory.
///
/// Cloning is cheap: clones share the open database. Every `save` and `delete` returns only
/// after sled has flushed to disk.
#[derive(Clone)]
pub struct SledTokenStore {
    inner: Arc<Inner>,
    /// Where this handle's saves wait for the disk (per handle: clones keep it, and
    /// [`with_write_thread`](Self::with_write_thread) sets it on one handle only).
    write_thread: WriteThread,
}

/// Which thread a [`save`](TokenStore::save) of a [`SledTokenStore`] waits for the disk on,
/// inside a tokio runtime (outside one, every call runs on the calling thread). See
/// "Blocking" in the crate docs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WriteThread {
    /// The runtime's blocking pool (`spawn_blocking`): the task that saves waits, no runtime
    /// thread does. The default, and the right choice wherever a runtime thread is shared:
    /// a web server, a worker pool, a store on a network or slow disk.
    #[default]
    BlockingPool,
    /// The thread that awaits the save: the compare-and-swap and the `fsync` run in place,
    /// with no hop to the blocking pool and back (about 20 µs less per save on a local SSD;
    /// issue 13's P4). The cost: that thread, and every task queued on it, waits for the
    /// disk's flush (tens of microseconds on a local SSD, but milliseconds or worse on a
    /// network or overloaded disk). For programs whose runtime does little else while a
    /// token is refreshed: a command-line tool, a single-purpose worker, a store on a local
    /// disk. While a compaction holds the database, a save still waits on the blocking pool,
    /// and a save that removes secrets hands the compaction that wipes them to the pool (or
    /// runs it in place when the pool cannot, as while the runtime shuts down): either way
    /// the secrets are wiped before the save returns.
    CallingThread,
}

struct Inner {
    /// The open generation; replaced (under the write lock) by a compaction.
    database: RwLock<Database>,
    /// Present when the store is encrypted.
    sealer: Option<Sealer>,
    path: PathBuf,
    /// The canonical path under which this process registered the store as open.
    registered: PathBuf,
    /// The store lock; declared after `database`, so it is released after the database is
    /// closed.
    _lock: File,
}

impl Drop for Inner {
    fn drop(&mut self) {
        opened_here().insert(self.registered.clone(), Registration::Released);
    }
}

/// One generation's open sled database and its trees.
struct Database {
    generation: u64,
    db: sled::Db,
    profiles: sled::Tree,
    consumed: sled::Tree,
    meta: sled::Tree,
}

impl Database {
    /// Opens (creating it if needed) the database of `generation` in `store`.
    fn open(store: &Path, generation: u64) -> Result<Self, StoreError> {
        let dir = layout::generation_dir(store, generation);
        create_private_dir(&dir)?;
        Self::with_trees(open_sled(&dir)?, generation, &dir)
    }

    fn with_trees(db: sled::Db, generation: u64, dir: &Path) -> Result<Self, StoreError> {
        let tree = |name: &str| db.open_tree(name).map_err(|error| open_error(dir, error));
        Ok(Self {
            generation,
            profiles: tree(PROFILES_TREE)?,
            consumed: tree(CONSUMED_TREE)?,
            meta: tree(META_TREE)?,
            db,
        })
    }

    /// Copies every record, used state and store fact (but a pending scrub) into `to`, and
    /// flushes it.
    fn copy_into(&self, to: &Database) -> Result<(), StoreError> {
        for (from, into) in [
            (&self.profiles, &to.profiles),
            (&self.consumed, &to.consumed),
            (&self.meta, &to.meta),
        ] {
            for entry in from.iter() {
                let (key, value) = entry.map_err(|error| io_error("read", error))?;
                into.insert(key, value)
                    .map_err(|error| io_error("write", error))?;
            }
        }
        to.meta
            .remove(META_SCRUB_PENDING)
            .map_err(|error| io_error("write", error))?;
        to.flush()
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db
            .flush()
            .map(|_| ())
            .map_err(|error| io_error("flush", error))
    }
}

/// Stores this process opened: one store can be open once at a time, and one released here
/// may still be locked for a few milliseconds while sled's background threads let go of its
/// files.
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

/// How long `open` waits for this process's own closed handles to let go of a store. A store
/// held by another process is reported at once.
const RELEASE_WAIT: Duration = Duration::from_secs(2);

impl fmt::Debug for SledTokenStore {
    // sled's own Debug prints every key and value, secrets included.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SledTokenStore")
            .field("path", &self.inner.path)
            .field("encrypted", &self.inner.sealer.is_some())
            .field("write_thread", &self.write_thread)
            .finish_non_exhaustive()
    }
}

impl SledTokenStore {
    /// Opens (creating if needed) the store in the directory `path`, records in clear.
    ///
    /// On Unix the directory is created with mode `0700` (an existing one is set to `0700`)
    /// and the files in it are set to `0600`. A store in the layout of 0.1.0 is migrated, and
    /// what an interrupted compaction left behind is wiped (see the crate docs).
    ///
    /// One store can be open once at a time: share a store within a process by cloning it.
    ///
    /// # Errors
    ///
    /// [`StoreError::Locked`] when another process has the store open, or this process
    /// still has (this returns at once, it does not wait); [`StoreError::Key`] when the store
    /// is encrypted; [`StoreError::Io`] when the directory cannot be created or the database
    /// cannot be read.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, None)
    }

    /// Opens (creating if needed) an encrypted store in `path`, with the key in `key`.
    ///
    /// A new store (no record yet) creates a random key in `key` when it holds none, and
    /// remembers that it is encrypted. See [`open`](Self::open) for the rest.
    ///
    /// # Errors
    ///
    /// [`StoreError::Key`] when `key` holds no key and the store is not new
    /// ([`KeyProblem::NotFound`]), holds another key ([`KeyProblem::Wrong`]), cannot be used
    /// ([`KeyProblem::Unusable`]: unreadable, readable by other users, inside the store), or
    /// the store holds records in clear ([`KeyProblem::NotEncrypted`]); the errors of
    /// [`open`](Self::open) otherwise.
    pub fn open_encrypted(path: impl AsRef<Path>, key: &KeySource) -> Result<Self, StoreError> {
        Self::open_with(path, Some(key))
    }

    /// [`open`](Self::open) when `key` is `None`, [`open_encrypted`](Self::open_encrypted)
    /// otherwise: for programs where encryption is the user's choice.
    pub fn open_with(path: impl AsRef<Path>, key: Option<&KeySource>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        create_private_dir(&path)?;
        let registered = std::fs::canonicalize(&path).map_err(|error| dir_error(&path, error))?;
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
        match Self::open_registered(&path, registered.clone(), previously.is_some(), key) {
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
        key: Option<&KeySource>,
    ) -> Result<Self, StoreError> {
        let started = Instant::now();
        let lock = loop {
            match layout::lock_store(path) {
                Ok(lock) => break lock,
                // Our own last handle may still be closing.
                Err(StoreError::Locked { .. })
                    if released_here && started.elapsed() < RELEASE_WAIT =>
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(error) => return Err(error),
            }
        };
        let database = open_current(path)?;
        let sealer = check_encryption(path, &database, key)?;
        restrict_files(path)?;
        let store = Self {
            inner: Arc::new(Inner {
                database: RwLock::new(database),
                sealer,
                path: path.to_path_buf(),
                registered,
                _lock: lock,
            }),
            write_thread: WriteThread::default(),
        };
        let pending = store
            .read()
            .meta
            .contains_key(META_SCRUB_PENDING)
            .map_err(|error| io_error("read", error))?;
        if pending {
            // The records are all there; only the wiping of removed ones is still due. If it
            // fails again, the marker stays for the next open.
            let _ = store.compact_blocking();
        }
        Ok(store)
    }

    /// Rebuilds a store that cannot be opened because its files are damaged
    /// ([`StoreError::Damaged`]: bit flips, a truncated file), from the records that can still
    /// be read and verified. Use it when [`open`](Self::open) refuses the store; the CLI runs
    /// it as `mailup-auth recover`.
    ///
    /// It reads sled's files itself (sled refuses them): a record is taken only from a log
    /// message whose CRC32 verifies, only when it decodes completely, and, in an encrypted
    /// store, only when `key` opens it (the profile name and the version are authenticated
    /// with it); the highest version of each profile wins, and a tombstone keeps a deleted
    /// profile deleted. Memory and time are bounded whatever the files hold (at most 1 GiB is
    /// read).
    ///
    /// The store directory stays where it is (a store reached through a symbolic link is
    /// rebuilt where the link points), and so does its lock, so no other process can open it
    /// meanwhile: a fresh database is written with those records, each at the version it had
    /// (so that a writer still holding an older version gets a conflict, never a silent
    /// overwrite), in `recovering/` inside the store; it becomes a new generation, the damaged
    /// files (the generations, the pointer, 0.1.0 files) are moved aside to
    /// `<store>.corrupt-<unix time>` beside the store (or `<store>/corrupt.<unix time>`
    /// when the store is a mount point), never deleted, and the pointer is switched to the
    /// new generation. A crash at any point leaves the damaged store, or the fresh one, or a
    /// store that refuses to open until `salvage` runs again (which finds the fresh
    /// generation's records): never an empty store, and what a salvage that died left in
    /// `recovering/` is wiped by the next open or salvage.
    ///
    /// The report lists the profiles recovered (with the version found), deleted and lost.
    /// Nothing else is recovered: used authorization states and pending wipes are not, and
    /// a profile whose every copy was damaged is gone (log in again).
    ///
    /// # Errors
    ///
    /// [`StoreError::Locked`] when the store is open (in this process or another);
    /// [`StoreError::Key`] when the store holds sealed records or an encryption marker and
    /// `key` is missing or another key, or `key` is given for a store in clear (nothing is
    /// changed in these cases); [`StoreError::Io`] when a file cannot be read or the fresh
    /// database cannot be written (nothing is changed then either) or moved into place.
    pub fn salvage(
        path: impl AsRef<Path>,
        key: Option<&KeySource>,
    ) -> Result<SalvageReport, StoreError> {
        let path = path.as_ref();
        if !path.is_dir() {
            return Err(StoreError::io_context(format!(
                "{}: there is no store directory to recover",
                path.display()
            )));
        }
        // The real directory: through a symbolic link, the store is rebuilt where it points
        // (renaming the link would leave the damaged store in place and a new one elsewhere).
        let store = std::fs::canonicalize(path).map_err(|error| dir_error(path, error))?;
        if opened_here().get(&store) == Some(&Registration::Open) {
            return Err(StoreError::Locked {
                path: path.display().to_string(),
                message: "it is open in this process; close it before recovering it".into(),
            });
        }
        let lock = layout::lock_store(&store)?;
        let staging = store.join(layout::RECOVERING);
        // Left by a salvage that died: copies of records the damaged files still hold.
        layout::scrub(&staging)?;
        // An open that died while sled had the files puts their bytes back first.
        preopen::restore_pending(&store)?;
        for generation in layout::generations(&store)? {
            preopen::restore_pending(&layout::generation_dir(&store, generation))?;
        }
        let scan = salvage::scan_store(&store)?;
        let sealer = salvage::check_key(&store, &scan, key)?;
        let plan = salvage::plan(&scan, sealer.as_ref());
        if let Err(error) = Self::write_recovered(&staging, key, &plan) {
            // Nothing was changed; a fresh database that could not be finished is removed.
            let _ = layout::scrub(&staging);
            return Err(error);
        }
        crash_point("salvage-written");
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        let next = layout::generations(&store)?
            .last()
            .map_or(Some(1), |last| last.checked_add(1))
            .ok_or_else(|| StoreError::io_context("the store's generation counter is exhausted"))?;
        // Not current yet: an open before the switch below would wipe it as a leftover.
        let fresh = layout::generation_dir(&store, next);
        std::fs::rename(layout::generation_dir(&staging, 1), &fresh)
            .map_err(|error| dir_error(&fresh, error))?;
        let moved_to = move_damaged_aside(&store, next, stamp)?;
        crash_point("salvage-moved");
        layout::write_pointer(&store, next)?;
        drop(lock);
        // What is left there is the fresh store's lock and pointer: no record.
        let _ = layout::scrub(&staging);
        Ok(SalvageReport {
            moved_to,
            recovered: plan
                .recovered
                .into_iter()
                .map(|(profile, version, _, newer_unverified)| RecoveredProfile {
                    profile,
                    version,
                    newer_unverified,
                })
                .collect(),
            deleted: plan.deleted.into_iter().map(|(name, _)| name).collect(),
            lost: plan.lost,
            damaged_messages: scan.damaged_messages(),
            scanned_bytes: scan.scanned(),
            truncated_scan: scan.truncated(),
        })
    }

    /// Writes the planned records, at their versions, and tombstones of deleted profiles into
    /// a new store at `dir` (generation 1), flushed.
    fn write_recovered(
        dir: &Path,
        key: Option<&KeySource>,
        plan: &salvage::Plan,
    ) -> Result<(), StoreError> {
        let fresh = Self::open_with(dir, key)?;
        let database = fresh.read();
        for (profile, version, record, _) in &plan.recovered {
            let encoded = fresh.encode_record(profile, *version, record)?;
            database
                .profiles
                .insert(profile.as_bytes(), &encoded[..])
                .map_err(|error| io_error("write", error))?;
        }
        for (profile, version) in &plan.deleted {
            let tombstone = encode(&EnvelopeOut {
                format: CLEAR_FORMAT,
                version: *version,
                record: None,
                sealed: None,
                deleted: true,
            })?;
            database
                .profiles
                .insert(profile.as_bytes(), tombstone)
                .map_err(|error| io_error("write", error))?;
        }
        database.flush()?;
        drop(database);
        restrict_files(dir)
    }

    /// This handle, with its saves waiting for the disk on `thread` (see [`WriteThread`]).
    /// Only this handle and its later clones change; other handles of the same store keep
    /// theirs.
    ///
    /// ```no_run
    /// use mailup_auth_store_sled::{SledTokenStore, WriteThread};
    ///
    /// # fn main() -> Result<(), mailup_auth_core::StoreError> {
    /// // A command-line tool on a local disk: no hop to the blocking pool per save.
    /// let store = SledTokenStore::open("tokens")?.with_write_thread(WriteThread::CallingThread);
    /// assert_eq!(store.write_thread(), WriteThread::CallingThread);
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn with_write_thread(mut self, thread: WriteThread) -> Self {
        self.write_thread = thread;
        self
    }

    /// Where this handle's saves wait for the disk (see [`WriteThread`]).
    pub fn write_thread(&self) -> WriteThread {
        self.write_thread
    }

    /// The store directory.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Whether records are sealed (the store was opened with a key).
    pub fn is_encrypted(&self) -> bool {
        self.inner.sealer.is_some()
    }

    /// Checks `key` against this open store as [`open_with`](Self::open_with) would, for a
    /// program that shares one open store among several users that each name a key:
    /// [`StoreError::Key`] when it does not fit (a key for a plain store, none or another one
    /// for an encrypted store).
    pub fn check_key(&self, key: Option<&KeySource>) -> Result<(), StoreError> {
        check_encryption(&self.inner.path, &self.read(), key).map(drop)
    }

    /// The cross-process refresh lease for this store's profiles: an OS file lock per profile
    /// in the store directory (see [`SledRefreshLease`]).
    pub fn refresh_lease(&self) -> SledRefreshLease {
        SledRefreshLease::new(&self.inner.path)
    }

    /// Compacts the store now: copies the live records into a fresh generation, switches to
    /// it, and overwrites and removes the old one, so nothing removed earlier (replaced
    /// tokens, deleted records) stays in the store's files. `save` and `delete` do this
    /// themselves whenever they remove secrets.
    ///
    /// # Errors
    ///
    /// [`StoreError::Io`] when the new generation cannot be written (the old one stays current
    /// and complete), or the old one cannot be removed (the new one is current; what is left
    /// is wiped at the next open).
    pub async fn compact(&self) -> Result<(), StoreError> {
        self.run(Self::compact_blocking).await
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Database> {
        // A compaction replaces the database in one assignment, so a poisoned lock still
        // guards a consistent database.
        self.inner
            .database
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn compact_blocking(&self) -> Result<(), StoreError> {
        let mut database = self
            .inner
            .database
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let store = &self.inner.path;
        let next = database
            .generation
            .checked_add(1)
            .ok_or_else(|| StoreError::io_context("the store's generation counter is exhausted"))?;
        // Left by a compaction that died before its switch (normally wiped at open).
        layout::scrub(&layout::generation_dir(store, next))?;
        let fresh = Database::open(store, next)?;
        database.copy_into(&fresh)?;
        restrict_files(&layout::generation_dir(store, next))?;
        crash_point("copied");
        if let Err(error) = layout::write_pointer(store, next) {
            // The rename may have happened with only the directory flush failing: then the
            // new generation is the one on disk, and this process must use it too, or its
            // next saves would go where the next open does not look.
            if layout::read_pointer(store).ok().flatten() != Some(next) {
                return Err(error);
            }
        }
        crash_point("switched");
        let old = std::mem::replace(&mut *database, fresh);
        let old_generation = old.generation;
        // sled joins its flusher when the last handle goes: nothing writes to the old files
        // once this returns.
        drop(old);
        drop(database);
        layout::scrub(&layout::generation_dir(store, old_generation)).map_err(|error| {
            StoreError::io(
                "the store was compacted but its old files could not all be removed (they are \
                 removed the next time the store is opened)",
                error,
            )
        })
    }

    /// Records that secrets were removed and compacts; the marker makes the next open finish
    /// the job if this compaction does not.
    fn scrub_removed(&self) -> Result<(), StoreError> {
        {
            let database = self.read();
            database
                .meta
                .insert(META_SCRUB_PENDING, &[][..])
                .map_err(|error| io_error("write", error))?;
            database.flush()?;
        }
        self.compact_blocking()
    }

    /// Reads `profile`'s entry from `database`. Only the head (version, tombstone) is decoded
    /// when `known` is the stored live version: then the answer is `None` ("unchanged", see
    /// [`TokenStore::load_entry_if_changed`]); with `known: None` the entry is always decoded.
    fn read_entry(
        &self,
        database: &Database,
        profile: &str,
        known: Option<u64>,
    ) -> Result<Option<StoredProfile>, StoreError> {
        let Some(bytes) = database
            .profiles
            .get(profile.as_bytes())
            .map_err(|error| io_error("read", error))?
        else {
            return Ok(Some(StoredProfile::Absent));
        };
        let head = decode_head(profile, &bytes)?;
        if head.deleted {
            return Ok(Some(StoredProfile::Deleted));
        }
        if known == Some(head.version) {
            return Ok(None);
        }
        let record = self.decode_record(profile, &head, &bytes)?;
        Ok(Some(StoredProfile::Record(Versioned {
            version: head.version,
            value: record,
        })))
    }

    /// A read of one profile, done in place when it can be (see "Blocking" in the crate docs):
    /// sled answers a read from memory, so it runs on the calling thread unless a compaction
    /// holds the database (then the read waits for it on the blocking pool, as writes do).
    async fn read_profile(
        &self,
        profile: &str,
        known: Option<u64>,
    ) -> Result<Option<StoredProfile>, StoreError> {
        validate_profile_name(profile)?;
        if let Some(answer) = self.read_in_place(profile, known) {
            return answer;
        }
        let profile = profile.to_owned();
        self.run(move |store| store.read_entry(&store.read(), &profile, known))
            .await
    }

    /// [`read_entry`](Self::read_entry) on this thread, or `None` when the database is held
    /// for a compaction (a synchronous function: the guard never lives across an `await`).
    fn read_in_place(
        &self,
        profile: &str,
        known: Option<u64>,
    ) -> Option<Result<Option<StoredProfile>, StoreError>> {
        let database = self.try_read()?;
        Some(self.read_entry(&database, profile, known))
    }

    /// The database, or `None` while a compaction holds it (a caller that must not wait
    /// for one then goes to the blocking pool).
    fn try_read(&self) -> Option<std::sync::RwLockReadGuard<'_, Database>> {
        match self.inner.database.try_read() {
            Ok(database) => Some(database),
            // As in `read`: a poisoned lock still guards a consistent database.
            Err(std::sync::TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// Writes `record` at `lost_version + 1` if the profile has neither a record nor a
    /// tombstone (see [`TokenStore::restore_lost`]).
    fn restore_lost_blocking(
        &self,
        profile: &str,
        record: &ProfileRecord,
        lost_version: u64,
    ) -> Result<u64, StoreError> {
        let version = next_version(profile, lost_version)?;
        let database = self.read();
        let encoded = self.encode_record(profile, version, record)?;
        let swapped = database
            .profiles
            .compare_and_swap(profile.as_bytes(), None::<&[u8]>, Some(&encoded[..]))
            .map_err(|error| io_error("write", error))?;
        match swapped {
            Ok(()) => {
                database.flush()?;
                Ok(version)
            }
            Err(sled::CompareAndSwapError { current, .. }) => {
                let found = match current {
                    Some(bytes) => {
                        let head = decode_head(profile, &bytes)?;
                        (!head.deleted).then_some(head.version)
                    }
                    None => None,
                };
                Err(conflict(profile, None, found))
            }
        }
    }

    /// One save, all of it in the caller's (blocking) thread: read what is stored, check the
    /// version, write the envelope of the already serialized `record` with a compare-and-swap,
    /// flush. What is stored is decoded only as far as the save needs: its version, and which
    /// secrets it holds (not their values). A swap that loses to another writer gets what is
    /// there now in its answer: that is checked next, without reading again.
    fn save_blocking(
        &self,
        profile: &str,
        record: &SerializedRecord,
        expected: Option<u64>,
    ) -> Result<u64, StoreError> {
        // The guard is dropped at the end of this statement: the wipe takes the database.
        let (version, removed_secrets) = self.save_in(&self.read(), profile, record, expected)?;
        if removed_secrets {
            // The save is done and durable; a compaction that fails is finished at the next
            // open (the marker says so), so it does not fail the save.
            let _ = self.scrub_removed();
        }
        Ok(version)
    }

    /// [`save_in`](Self::save_in) on this thread, or `None` while a compaction holds the
    /// database (a synchronous function: the guard never lives across an `await`).
    fn save_in_place(
        &self,
        profile: &str,
        record: &SerializedRecord,
        expected: Option<u64>,
    ) -> Option<Result<(u64, bool), StoreError>> {
        let database = self.try_read()?;
        Some(self.save_in(&database, profile, record, expected))
    }

    /// The save itself, in `database`, flushed: the new version, and whether the save
    /// removed secrets (then the caller compacts, once it let go of `database`).
    fn save_in(
        &self,
        database: &Database,
        profile: &str,
        record: &SerializedRecord,
        expected: Option<u64>,
    ) -> Result<(u64, bool), StoreError> {
        let mut current = database
            .profiles
            .get(profile.as_bytes())
            .map_err(|error| io_error("read", error))?;
        for _ in 0..MAX_SWAP_ATTEMPTS {
            let (found, last_version, removes_secrets) = match &current {
                None => (None, 0, false),
                Some(bytes) => {
                    let head = decode_head(profile, bytes)?;
                    let found = (!head.deleted).then_some(head.version);
                    let removes = !head.deleted
                        && self
                            .stored_slots(profile, &head, bytes)
                            .map_or(true, |previous| previous.removed_by(record.slots));
                    (found, head.version, removes)
                }
            };
            if found != expected {
                return Err(conflict(profile, expected, found));
            }
            let version = next_version(profile, last_version)?;
            let encoded = self.envelope_of(profile, version, &record.json)?;
            if removes_secrets {
                // Flushed with the record: a kill between the save and its wipe leaves the
                // marker, and the next open finishes the wipe.
                database
                    .meta
                    .insert(META_SCRUB_PENDING, &[][..])
                    .map_err(|error| io_error("write", error))?;
            }
            let swapped = database
                .profiles
                .compare_and_swap(profile.as_bytes(), current.as_deref(), Some(&encoded[..]))
                .map_err(|error| io_error("write", error))?;
            match swapped {
                Ok(()) => {
                    database.flush()?;
                    return Ok((version, removes_secrets));
                }
                Err(sled::CompareAndSwapError { current: now, .. }) => current = now,
            }
        }
        let found = match &current {
            None => None,
            Some(bytes) => {
                let head = decode_head(profile, bytes)?;
                (!head.deleted).then_some(head.version)
            }
        };
        Err(conflict(profile, expected, found))
    }

    /// Which secrets the stored envelope `bytes` holds. A record in clear is read for that
    /// alone (no value is decoded, so no secret is copied out); a sealed one is opened and
    /// decoded as a load would.
    fn stored_slots(
        &self,
        profile: &str,
        head: &EnvelopeHead,
        bytes: &[u8],
    ) -> Result<SecretSlots, StoreError> {
        if self.inner.sealer.is_none() && head.format == CLEAR_FORMAT {
            return serde_json::from_slice::<EnvelopeSlots>(bytes)
                .map(|envelope| envelope.record.slots())
                .map_err(|error| corrupt(profile, "record", &error));
        }
        self.decode_record(profile, head, bytes)
            .map(|record| SecretSlots::of(&record))
    }

    fn delete_blocking(&self, profile: &str) -> Result<(), StoreError> {
        for _ in 0..MAX_SWAP_ATTEMPTS {
            let database = self.read();
            let Some(current) = database
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
                    format: CLEAR_FORMAT,
                    version: head.version,
                    record: None,
                    sealed: None,
                    deleted: true,
                })?),
                // Deleting is how a corrupt record is cleared; its version is unknown, so no
                // tombstone can keep it.
                Err(_) => None,
            };
            // Flushed with the delete: a kill before the wipe leaves the marker.
            database
                .meta
                .insert(META_SCRUB_PENDING, &[][..])
                .map_err(|error| io_error("write", error))?;
            let swapped = database
                .profiles
                .compare_and_swap(profile.as_bytes(), Some(current), replacement)
                .map_err(|error| io_error("write", error))?;
            if swapped.is_ok() {
                database.flush()?;
                drop(database);
                return self.scrub_removed();
            }
        }
        Err(StoreError::Contended {
            profile: profile.to_owned(),
            attempts: MAX_SWAP_ATTEMPTS,
        })
    }

    fn profiles_blocking(&self) -> Result<Vec<String>, StoreError> {
        let mut names = Vec::new();
        for entry in self.read().profiles.iter() {
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
        let database = self.read();
        // Markers live ten minutes or so; sweeping the expired ones on each use keeps the tree
        // as small as the number of authorizations started in that window.
        for entry in database.consumed.iter() {
            let (marker, until) = entry.map_err(|error| io_error("read", error))?;
            let expired = <[u8; 8]>::try_from(until.as_ref())
                .map(|bytes| u64::from_be_bytes(bytes) < now.as_millis())
                .unwrap_or(true);
            if expired {
                database
                    .consumed
                    .remove(marker)
                    .map_err(|error| io_error("write", error))?;
            }
        }
        let until = expires_at.as_millis().to_be_bytes();
        let swapped = database
            .consumed
            .compare_and_swap(key.as_bytes(), None::<&[u8]>, Some(&until[..]))
            .map_err(|error| io_error("write", error))?;
        if swapped.is_err() {
            return Ok(false);
        }
        database.flush()?;
        Ok(true)
    }

    /// The envelope of `record` at `version`: in clear (format 1), or sealed (format 2).
    fn encode_record(
        &self,
        profile: &str,
        version: u64,
        record: &ProfileRecord,
    ) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        self.envelope_of(profile, version, &SerializedRecord::new(record)?.json)
    }

    /// The envelope of a record already serialized (`ExposeSecrets(record)` as JSON) at
    /// `version`. In clear, the bytes serde writes for [`EnvelopeOut`] (`format`, `version`,
    /// then `record`), put together around the record's JSON without serializing it again.
    fn envelope_of(
        &self,
        profile: &str,
        version: u64,
        json: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        let Some(sealer) = &self.inner.sealer else {
            return Ok(clear_envelope(version, json));
        };
        let sealed = sealer
            .seal_record(profile, version, json)
            .map_err(StoreError::io_context)?;
        encode(&EnvelopeOut {
            format: SEALED_FORMAT,
            version,
            record: None,
            sealed: Some(sealed),
            deleted: false,
        })
        .map(Zeroizing::new)
    }

    fn decode_record(
        &self,
        profile: &str,
        head: &EnvelopeHead,
        bytes: &[u8],
    ) -> Result<ProfileRecord, StoreError> {
        let corrupt_because = |message: &str| StoreError::Corrupt {
            profile: profile.to_owned(),
            message: message.to_owned(),
        };
        match (&self.inner.sealer, head.format) {
            (None, CLEAR_FORMAT) => decode_clear_record(profile, bytes),
            (Some(_), CLEAR_FORMAT) => Err(corrupt_because(
                "it holds a record in clear, but the store is encrypted: this store did not \
                 write it",
            )),
            (None, _) => Err(corrupt_because(
                "it is encrypted, but the store was opened without a key",
            )),
            (Some(sealer), _) => {
                let envelope: EnvelopeSealed = serde_json::from_slice(bytes)
                    .map_err(|error| corrupt(profile, "envelope", &error))?;
                let plaintext = sealer
                    .open_record(profile, head.version, &envelope.sealed)
                    .ok_or_else(|| {
                        corrupt_because(
                            "it cannot be decrypted: it is damaged, or it was moved from \
                             another profile or version",
                        )
                    })?;
                serde_json::from_slice(&plaintext)
                    .map_err(|error| corrupt(profile, "record", &error))
            }
        }
    }

    /// Runs a blocking sled operation without stalling a tokio runtime's other tasks (see
    /// "Blocking" in the crate docs): on the runtime's blocking pool, or on this thread outside
    /// a runtime.
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
                    .map_err(|error| StoreError::io("token store task did not complete", error))?
            }
            Err(_) => operation(self),
        }
    }
}

/// Opens the current generation, migrating a 0.1.0 store and creating a new one as needed,
/// and wipes leftovers of interrupted switches. The caller holds the store lock.
fn open_current(store: &Path) -> Result<Database, StoreError> {
    if let Some(generation) = layout::read_pointer(store)? {
        let dir = layout::generation_dir(store, generation);
        if !dir.join("conf").is_file() {
            // Never an empty store in its place (the user would think they were logged out),
            // and nothing removed: putting the right pointer back recovers everything.
            return Err(StoreError::io_context(format!(
                "{} names {}, which is missing: the store is damaged (nothing was removed; \
                 the generations present are {:?})",
                store.join("CURRENT").display(),
                dir.display(),
                layout::generations(store)?
            )));
        }
        layout::remove_leftovers(store, Some(generation), false)?;
        return Database::open(store, generation);
    }
    if !layout::has_legacy_database(store) {
        // No pointer and no 0.1.0 files: a generation can only be the remains of a creation
        // that died before its pointer, and those hold no record. One that holds records means
        // the pointer was lost: refuse, rather than open an empty store in its place.
        let mut with_records = Vec::new();
        for generation in layout::generations(store)? {
            let database = Database::open(store, generation)?;
            if !database.profiles.is_empty() {
                with_records.push(generation);
            }
        }
        if !with_records.is_empty() {
            return Err(StoreError::io_context(format!(
                "the store at {} has lost its pointer file (CURRENT) but generations {:?} hold \
                 records: nothing was removed; write `gen-N` (the newest complete generation) \
                 into {} to recover",
                store.display(),
                with_records,
                store.join("CURRENT").display()
            )));
        }
    }
    // No pointer: partial generations are what a creation or migration that died left.
    layout::remove_leftovers(store, None, true)?;
    if !layout::has_legacy_database(store) {
        let database = Database::open(store, 1)?;
        database.flush()?;
        layout::write_pointer(store, 1)?;
        return Ok(database);
    }
    // The 0.1.0 layout: copy into generation 1, switch, wipe the old files.
    let legacy_db = open_sled(store)?;
    let legacy = Database::with_trees(legacy_db, 0, store)?;
    let database = Database::open(store, 1)?;
    legacy.copy_into(&database)?;
    crash_point("migrated");
    layout::write_pointer(store, 1)?;
    drop(legacy);
    // The records are safe in generation 1; old files that cannot be removed now are removed
    // at the next open.
    let _ = layout::remove_legacy_database(store);
    Ok(database)
}

/// Checks the store's encryption against the key given, and returns the sealer to use.
fn check_encryption(
    store: &Path,
    database: &Database,
    key: Option<&KeySource>,
) -> Result<Option<Sealer>, StoreError> {
    let key_error = |problem: KeyProblem| StoreError::Key {
        path: store.display().to_string(),
        problem,
    };
    let marker = database
        .meta
        .get(META_ENCRYPTION)
        .map_err(|error| io_error("read", error))?
        .map(|bytes| {
            serde_json::from_slice::<EncryptionMarker>(&bytes).map_err(|_| {
                StoreError::io_context(format!(
                    "the encryption marker of the store at {} is damaged",
                    store.display()
                ))
            })
        })
        .transpose()?;
    match (marker, key) {
        (None, None) => Ok(None),
        (Some(marker), None) => Err(key_error(KeyProblem::Missing {
            expected: marker.key_source,
        })),
        (Some(marker), Some(source)) => {
            let key = source
                .load(Some(store))
                .map_err(key_error)?
                .ok_or_else(|| {
                    key_error(KeyProblem::NotFound {
                        source_name: source.describe(),
                    })
                })?;
            let sealer = Sealer::new(&key);
            if !sealer.fits(&marker) {
                return Err(key_error(KeyProblem::Wrong {
                    source_name: source.describe(),
                    expected: marker.key_source,
                }));
            }
            Ok(Some(sealer))
        }
        (None, Some(source)) => {
            let holds_records = database.profiles.iter().any(|entry| {
                entry.map_or(true, |(key, value)| {
                    !decode_head(&String::from_utf8_lossy(&key), &value)
                        .is_ok_and(|head| head.deleted)
                })
            });
            if holds_records {
                return Err(key_error(KeyProblem::NotEncrypted {
                    source_name: source.describe(),
                }));
            }
            // A new store: it becomes encrypted, with the source's key or a new one.
            let key = match source.load(Some(store)).map_err(key_error)? {
                Some(key) => key,
                None => source.create(Some(store)).map_err(key_error)?,
            };
            let sealer = Sealer::new(&key);
            let marker = sealer
                .marker(source)
                .map_err(|message| key_error(source.unusable(&message)))?;
            let marker = serde_json::to_vec(&marker)
                .map_err(|_| StoreError::io_context("cannot serialize the encryption marker"))?;
            database
                .meta
                .insert(META_ENCRYPTION, marker)
                .map_err(|error| io_error("write", error))?;
            database.flush()?;
            Ok(Some(sealer))
        }
    }
}

/// Which secrets a record holds: tokens, a refresh token, the client secret. A save whose
/// record leaves out one the stored record held must wipe the old value from the store's
/// files; a refresh replaces tokens and removes nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SecretSlots([bool; 3]);

impl SecretSlots {
    fn of(record: &ProfileRecord) -> Self {
        let tokens = record.tokens.as_ref();
        Self([
            tokens.is_some(),
            tokens.is_some_and(|t| t.refresh_token.is_some()),
            record
                .client
                .as_ref()
                .is_some_and(|c| c.client_secret.is_some()),
        ])
    }

    /// Whether going from `self` (stored) to `new` leaves out a secret.
    fn removed_by(self, new: Self) -> bool {
        self.0.iter().zip(new.0).any(|(had, has)| *had && !has)
    }
}

/// A record serialized for a save, once, with the secrets it holds.
struct SerializedRecord {
    /// `ExposeSecrets(record)` as JSON: secrets in clear, wiped on drop.
    json: Zeroizing<Vec<u8>>,
    slots: SecretSlots,
}

impl SerializedRecord {
    fn new(record: &ProfileRecord) -> Result<Self, StoreError> {
        // Sized up front so the buffer holding secrets is not reallocated (which would leave
        // an unwiped copy) for any ordinary record.
        let mut json = Zeroizing::new(Vec::with_capacity(1024));
        serde_json::to_writer(&mut *json, &ExposeSecrets(record))
            .map_err(|_| StoreError::io_context("cannot serialize the record"))?;
        Ok(Self {
            json,
            slots: SecretSlots::of(record),
        })
    }
}

/// The clear envelope (format 1) of a serialized record: byte for byte what serde writes for
/// [`EnvelopeOut`] with a record (checked by a test), in a buffer wiped on drop.
fn clear_envelope(version: u64, json: &[u8]) -> Zeroizing<Vec<u8>> {
    let head = format!("{{\"format\":{CLEAR_FORMAT},\"version\":{version},\"record\":");
    let mut envelope = Zeroizing::new(Vec::with_capacity(head.len() + json.len() + 1));
    envelope.extend_from_slice(head.as_bytes());
    envelope.extend_from_slice(json);
    envelope.push(b'}');
    envelope
}

/// Opens a sled database. With the store lock held, a database that is locked can only be
/// one this process just closed (its background threads letting go), or one a 0.1.0 program
/// holds: wait briefly either way.
fn open_sled(dir: &Path) -> Result<sled::Db, StoreError> {
    // A copy that an open which died left is put back before anything reads the log.
    preopen::restore_pending(dir)?;
    preopen::check_size(dir)?;
    let before = salvage::check_log(dir)?;
    // sled's recovery rewrites what it cannot read: it sees the files only with their bytes
    // copied aside, and they are put back when it fails or loses a record message.
    let guard = preopen::take(dir)?;
    crash_point("preopen-sled");
    let started = Instant::now();
    loop {
        match sled::Config::new().path(dir).open() {
            Ok(db) => {
                let Some(guard) = guard else { return Ok(db) };
                let lost = match lost_records(&db, dir, &before) {
                    Ok(lost) => lost,
                    Err(error) => {
                        drop(db);
                        guard.restore()?;
                        return Err(error);
                    }
                };
                if lost == 0 {
                    crash_point("preopen-opened");
                    guard.release()?;
                    return Ok(db);
                }
                drop(db);
                crash_point("preopen-failed");
                guard.restore()?;
                return Err(StoreError::Damaged {
                    path: dir.display().to_string(),
                    message: format!(
                        "sled's recovery discarded the newest intact record of {lost} \
                         profile(s) (damage it could not read comes before them); its files \
                         were put back as they were; {SALVAGE_HINT}"
                    ),
                });
            }
            Err(error) => {
                let error = open_error(dir, error);
                let lingering =
                    matches!(error, StoreError::Locked { .. }) && started.elapsed() < RELEASE_WAIT;
                if !lingering {
                    match (guard, &error) {
                        // sled could not lock its log: it read nothing, and whoever holds the
                        // lock may be writing; the copy is only wiped.
                        (Some(guard), StoreError::Locked { .. }) => guard.release()?,
                        (Some(guard), _) => {
                            crash_point("preopen-failed");
                            guard.restore()?;
                        }
                        (None, _) => {}
                    }
                    return Err(error);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

/// How many profiles sled, having opened the log in `dir`, serves at an older version than
/// the newest intact copy `before` (from the log check) holds, or not at all: what sled's
/// recovery discarded.
fn lost_records(
    db: &sled::Db,
    dir: &Path,
    before: &BTreeMap<Vec<u8>, u64>,
) -> Result<usize, StoreError> {
    if before.is_empty() {
        return Ok(0);
    }
    let profiles = db
        .open_tree(PROFILES_TREE)
        .map_err(|error| open_error(dir, error))?;
    let mut lost = 0;
    for (key, newest) in before {
        let served = profiles.get(key).map_err(|error| io_error("read", error))?;
        // A value that does not decode was written so (reading it is `Corrupt`, naming its
        // profile); what counts is a profile gone, or served at an older version.
        let older = served.is_none_or(|value| {
            decode_head(&String::from_utf8_lossy(key), &value)
                .is_ok_and(|head| head.version < *newest)
        });
        if older {
            lost += 1;
        }
    }
    Ok(lost)
}

/// Test hook, debug builds only: with [`CRASH_ENV`] set to `point`, the process kills itself
/// there with SIGKILL (no destructor, no flush), as a crash or `kill -9` would.
#[cfg(debug_assertions)]
fn crash_point(point: &str) {
    if std::env::var_os(CRASH_ENV).is_some_and(|wanted| wanted == point) {
        #[cfg(unix)]
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &std::process::id().to_string()])
            .status();
        std::process::abort();
    }
}

#[cfg(not(debug_assertions))]
fn crash_point(_point: &str) {
    let _ = CRASH_ENV;
}

#[async_trait]
impl TokenStore for SledTokenStore {
    async fn load(&self, profile: &str) -> Result<Option<Versioned<ProfileRecord>>, StoreError> {
        Ok(match self.load_entry(profile).await? {
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
        validate_profile_name(profile)?;
        let profile = profile.to_owned();
        // Serialized here rather than cloned for the blocking thread: one pass over the
        // record either way, and the blocking part only frames it.
        let record = SerializedRecord::new(record)?;
        if self.write_thread == WriteThread::CallingThread {
            // In place unless a compaction holds the database (then as below).
            if let Some(saved) = self.save_in_place(&profile, &record, expected) {
                let (version, removed_secrets) = saved?;
                if removed_secrets {
                    // A compaction is no flush: it goes to the pool (see `save_blocking`;
                    // its own failure does not fail the save). A pool that cannot run it
                    // (the runtime is shutting down) cancels it before it starts: then it
                    // runs here, so the save never returns with the removed secrets still
                    // in the files.
                    let wiped = self
                        .run(|store| {
                            let _ = store.scrub_removed();
                            Ok(())
                        })
                        .await;
                    if wiped.is_err() {
                        let _ = self.scrub_removed();
                    }
                }
                return Ok(version);
            }
        }
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

    async fn load_entry(&self, profile: &str) -> Result<StoredProfile, StoreError> {
        let entry = self.read_profile(profile, None).await?;
        Ok(entry.expect("an entry is always decoded when no version is known"))
    }

    /// Compares the stored version without decoding (or decrypting) an unchanged record, in
    /// place like every read of one profile.
    async fn load_entry_if_changed(
        &self,
        profile: &str,
        known: u64,
    ) -> Result<Option<StoredProfile>, StoreError> {
        self.read_profile(profile, Some(known)).await
    }

    async fn restore_lost(
        &self,
        profile: &str,
        record: &ProfileRecord,
        lost_version: u64,
    ) -> Result<u64, StoreError> {
        validate_profile_name(profile)?;
        let profile = profile.to_owned();
        let record = record.clone();
        self.run(move |store| store.restore_lost_blocking(&profile, &record, lost_version))
            .await
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

/// Plumbing for this workspace's fuzz targets and their stable loop
/// (`crates/mailup-auth-fuzz-bodies`).
///
/// **Not covered by semantic versioning**: anything here may change or go away in a patch
/// release.
#[doc(hidden)]
pub mod internal {
    /// The envelope codec of an unencrypted store, without a database: what `load` does with
    /// the bytes of one profile, and what `save` writes.
    pub mod envelope {
        use crate::*;

        /// Decodes a stored value as `load` does in a store without a key: `Ok(None)` for a
        /// tombstone, a [`StoreError::Corrupt`] for anything it cannot read.
        pub fn decode(
            profile: &str,
            bytes: &[u8],
        ) -> Result<Option<Versioned<ProfileRecord>>, StoreError> {
            let head = decode_head(profile, bytes)?;
            if head.deleted {
                return Ok(None);
            }
            if head.format != CLEAR_FORMAT {
                return Err(StoreError::Corrupt {
                    profile: profile.to_owned(),
                    message: "it is encrypted, but the store was opened without a key".into(),
                });
            }
            let record = decode_clear_record(profile, bytes)?;
            Ok(Some(Versioned {
                version: head.version,
                value: record,
            }))
        }

        /// Encodes a record as `save` does in a store without a key.
        pub fn encode(version: u64, record: &ProfileRecord) -> Result<Vec<u8>, StoreError> {
            crate::encode(&EnvelopeOut {
                format: CLEAR_FORMAT,
                version,
                record: Some(ExposeSecrets(record)),
                sealed: None,
                deleted: false,
            })
        }
    }
}

/// What is written for a profile.
#[derive(Serialize)]
struct EnvelopeOut<'a> {
    format: u32,
    version: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    record: Option<ExposeSecrets<'a, ProfileRecord>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sealed: Option<String>,
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

/// A clear envelope read only for which secrets its record holds ([`SecretSlots`]): values
/// are skipped, never decoded.
#[derive(Deserialize)]
struct EnvelopeSlots {
    record: RecordSlots,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct RecordSlots {
    tokens: Option<TokenSlots>,
    client: Option<ClientSlots>,
}

#[derive(Deserialize)]
struct TokenSlots {
    #[serde(default)]
    refresh_token: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct ClientSlots {
    #[serde(default)]
    client_secret: Option<serde::de::IgnoredAny>,
}

impl RecordSlots {
    fn slots(&self) -> SecretSlots {
        let tokens = self.tokens.as_ref();
        SecretSlots([
            tokens.is_some(),
            tokens.is_some_and(|t| t.refresh_token.is_some()),
            self.client
                .as_ref()
                .is_some_and(|c| c.client_secret.is_some()),
        ])
    }
}

/// The rest of a sealed envelope: base64 of nonce, ciphertext and tag.
#[derive(Deserialize)]
struct EnvelopeSealed {
    sealed: String,
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

fn decode_clear_record(profile: &str, bytes: &[u8]) -> Result<ProfileRecord, StoreError> {
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
    serde_json::to_vec(envelope).map_err(|_| StoreError::io_context("cannot serialize the record"))
}

fn conflict(profile: &str, expected: Option<u64>, found: Option<u64>) -> StoreError {
    StoreError::Conflict {
        profile: profile.to_owned(),
        expected,
        found,
    }
}

fn io_error(operation: &str, error: sled::Error) -> StoreError {
    StoreError::io(format!("{operation} failed"), error)
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
        sled::Error::Corruption { .. }
        | sled::Error::ReportableBug(_)
        | sled::Error::Unsupported(_) => StoreError::Damaged {
            path: path.display().to_string(),
            message: format!(
                "sled cannot read its files ({error}); they were put back as they were before \
                 sled opened them; {SALVAGE_HINT}"
            ),
        },
        sled::Error::Io(io)
            if matches!(
                io.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::InvalidData
            ) =>
        {
            StoreError::Damaged {
                path: path.display().to_string(),
                message: format!(
                    "sled cannot read its files ({io}); they were put back as they were before \
                     sled opened them; {SALVAGE_HINT}"
                ),
            }
        }
        other => StoreError::io(
            format!("cannot open the database at {}", path.display()),
            other,
        ),
    }
}

/// What a [`StoreError::Damaged`] says to do.
const SALVAGE_HINT: &str = "`SledTokenStore::salvage` (`mailup-auth recover`) rebuilds the \
                            store from the records that can still be read";

/// `<path>.<suffix>`, or `<path>.<suffix>-<n>` when that exists.
fn free_sibling(path: &Path, suffix: &str) -> Result<PathBuf, StoreError> {
    let name = path
        .file_name()
        .ok_or_else(|| StoreError::io_context(format!("{}: not a directory name", path.display())))?
        .to_string_lossy()
        .into_owned();
    for attempt in 0..1000u32 {
        let candidate = match attempt {
            0 => path.with_file_name(format!("{name}.{suffix}")),
            n => path.with_file_name(format!("{name}.{suffix}-{n}")),
        };
        if std::fs::symlink_metadata(&candidate).is_err() {
            return Ok(candidate);
        }
    }
    Err(StoreError::io_context(format!(
        "{}: too many earlier recoveries beside it",
        path.display()
    )))
}

/// Moves the damaged database files of `store` (every generation but `keep`, the pointer,
/// 0.1.0 files) into a new directory `<store>.corrupt-<stamp>` beside it, or
/// `<store>/corrupt.<stamp>` when the sibling is on another file system (the store is a
/// mount point). The store's lock, its refresh locks and the generation `keep` stay.
fn move_damaged_aside(store: &Path, keep: u64, stamp: u64) -> Result<PathBuf, StoreError> {
    let entries = |store: &Path| -> Result<Vec<std::ffi::OsString>, StoreError> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(store).map_err(|error| dir_error(store, error))? {
            let name = entry.map_err(|error| dir_error(store, error))?.file_name();
            if name
                .to_str()
                .is_some_and(|name| layout::is_database_entry(name, keep))
            {
                names.push(name);
            }
        }
        // The pointer last: until it goes, an open names the generation that is missing.
        names.sort_by_key(|name| name == "CURRENT");
        Ok(names)
    };
    let names = entries(store)?;
    let mut moved_to = free_sibling(store, &format!("corrupt-{stamp}"))?;
    create_private_dir(&moved_to)?;
    for (index, name) in names.iter().enumerate() {
        match std::fs::rename(store.join(name), moved_to.join(name)) {
            Ok(()) => {}
            Err(error) if index == 0 && error.kind() == std::io::ErrorKind::CrossesDevices => {
                // The store is a mount point: keep the damaged files on its file system.
                let _ = std::fs::remove_dir(&moved_to);
                moved_to = free_sibling(&store.join("corrupt"), &stamp.to_string())?;
                create_private_dir(&moved_to)?;
                for name in &names {
                    std::fs::rename(store.join(name), moved_to.join(name))
                        .map_err(|error| dir_error(&store.join(name), error))?;
                }
                break;
            }
            Err(error) => return Err(dir_error(&store.join(name), error)),
        }
    }
    layout::sync_dir(&moved_to)?;
    if let Some(parent) = moved_to.parent() {
        let _ = layout::sync_dir(parent);
    }
    Ok(moved_to)
}

#[cfg(unix)]
fn create_private_dir(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};

    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|error| dir_error(path, error))?;
    // An existing directory keeps its mode under `create`; tokens must not be readable by
    // others whatever it was.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
        .map_err(|error| dir_error(path, error))
}

#[cfg(not(unix))]
fn create_private_dir(path: &Path) -> Result<(), StoreError> {
    std::fs::create_dir_all(path).map_err(|error| dir_error(path, error))
}

/// Sets every file under `dir` to `0600` and every directory to `0700`.
#[cfg(unix)]
fn restrict_files(dir: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;

    let entries = std::fs::read_dir(dir).map_err(|error| dir_error(dir, error))?;
    for entry in entries {
        let entry = entry.map_err(|error| dir_error(dir, error))?;
        let path = entry.path();
        let file_type = entry.file_type().map_err(|error| dir_error(&path, error))?;
        let mode = if file_type.is_dir() {
            restrict_files(&path)?;
            0o700
        } else if file_type.is_file() {
            0o600
        } else {
            continue;
        };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .map_err(|error| dir_error(&path, error))?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn restrict_files(_dir: &Path) -> Result<(), StoreError> {
    Ok(())
}

fn dir_error(path: &Path, error: std::io::Error) -> StoreError {
    StoreError::io(path.display().to_string(), error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailup_auth_core::{AccessToken, ClientSecret, RefreshToken, StoredClient, TokenSet};

    fn records() -> Vec<ProfileRecord> {
        let tokens = |refresh: Option<&str>| TokenSet {
            access_token: AccessToken::new("at-\"quoted\"-é"),
            refresh_token: refresh.map(RefreshToken::new),
            expires_at: UnixTime::from_secs(3600),
            obtained_at: UnixTime::from_secs(0),
            token_type: Some("bearer".into()),
            scope: None,
        };
        let client = |secret: Option<&str>| StoredClient {
            client_id: "id".into(),
            client_secret: secret.map(ClientSecret::new),
            logon_url: None,
            token_url: Some("http://127.0.0.1:1/Token".into()),
            api_base: None,
            redirect_uri: None,
        };
        let mut all = Vec::new();
        for tokens in [None, Some(tokens(None)), Some(tokens(Some("rt")))] {
            for client in [None, Some(client(None)), Some(client(Some("cs")))] {
                all.push(ProfileRecord {
                    tokens: tokens.clone(),
                    client,
                    last_refreshed_at: Some(UnixTime::from_secs(7)),
                    ..ProfileRecord::default()
                });
            }
        }
        all
    }

    /// A read of one profile runs in place, except while a compaction holds the database:
    /// then it waits on the blocking pool for the compaction to let go (it never blocks the
    /// calling thread on that lock) and answers what is stored afterwards.
    #[test]
    fn a_read_waits_off_the_calling_thread_while_a_compaction_holds_the_database() {
        use std::future::Future;
        let dir = tempfile::tempdir().unwrap();
        let store = SledTokenStore::open(dir.path()).unwrap();
        let record = records().pop().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let version = runtime.block_on(store.save("p", &record, None)).unwrap();
        // In place: answered on the first poll.
        let mut look = std::pin::pin!(store.load_entry_if_changed("p", version));
        let waker = std::task::Waker::noop();
        let polled = look
            .as_mut()
            .poll(&mut std::task::Context::from_waker(waker));
        assert!(
            matches!(polled, std::task::Poll::Ready(Ok(None))),
            "{polled:?}"
        );

        let read = while_a_compaction_holds(&store, "the read", |reader| async move {
            reader.load_entry("p").await
        });
        assert!(
            matches!(&read, Ok(StoredProfile::Record(stored)) if stored.version == version),
            "{read:?}"
        );
    }

    /// Runs `call` on a clone of `store`, in a task of a current-thread runtime on another
    /// thread, while this thread holds the database as a compaction does, and answers what it
    /// answered. `what` (the call) must wait off its thread: that runtime keeps running other
    /// tasks (bounded at 10 s, not a timed assertion), and `what` does not answer while the
    /// database is held (100 ms), only once it is let go.
    fn while_a_compaction_holds<T, F>(
        store: &SledTokenStore,
        what: &str,
        call: impl FnOnce(SledTokenStore) -> F + Send + 'static,
    ) -> T
    where
        T: Send + 'static,
        F: std::future::Future<Output = T> + Send + 'static,
    {
        let held = store.inner.database.write().unwrap();
        let (responsive, running) = std::sync::mpsc::channel();
        let (sent, answered) = std::sync::mpsc::channel();
        let caller = store.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            runtime.block_on(async {
                let call = tokio::spawn(call(caller));
                tokio::task::yield_now().await;
                responsive.send(()).unwrap();
                sent.send(call.await.unwrap()).unwrap();
            });
        });
        assert_eq!(
            running.recv_timeout(std::time::Duration::from_secs(10)),
            Ok(()),
            "{what} blocked its runtime's thread on the held database"
        );
        assert!(
            answered
                .recv_timeout(std::time::Duration::from_millis(100))
                .is_err(),
            "{what} answered while the database was held"
        );
        drop(held);
        let answer = answered.recv().unwrap();
        thread.join().unwrap();
        answer
    }

    /// Runs `future` to its end on `runtime`, and says whether its first poll was ready.
    fn first_poll_ready<F: std::future::Future>(
        runtime: &tokio::runtime::Runtime,
        future: F,
    ) -> (bool, F::Output) {
        runtime.block_on(async {
            let mut future = std::pin::pin!(future);
            let mut first = None;
            let output = std::future::poll_fn(|cx| {
                let polled = future.as_mut().poll(cx);
                first.get_or_insert(polled.is_ready());
                polled
            })
            .await;
            (first.unwrap(), output)
        })
    }

    /// `WriteThread::CallingThread`: a save is done (flushed) in its first poll, inside a
    /// runtime, with no trip to the blocking pool; a default handle of the same store still
    /// goes to the pool (its first poll waits). The saves are on disk after a reopen, and a
    /// stale version is still a conflict in place.
    #[test]
    fn a_save_on_the_calling_thread_is_done_in_its_first_poll_and_durable() {
        let dir = tempfile::tempdir().unwrap();
        let pooled = SledTokenStore::open(dir.path()).unwrap();
        let in_place = pooled.clone().with_write_thread(WriteThread::CallingThread);
        assert_eq!(pooled.write_thread(), WriteThread::BlockingPool);
        assert_eq!(in_place.clone().write_thread(), WriteThread::CallingThread);
        assert!(format!("{in_place:?}").contains("CallingThread"));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let record = records().pop().unwrap();
        let (ready, first) = first_poll_ready(&runtime, in_place.save("p", &record, None));
        assert!(ready, "a save on the calling thread waited");
        let (ready, second) =
            first_poll_ready(&runtime, pooled.save("p", &record, Some(first.unwrap())));
        assert!(
            !ready,
            "the default handle's save did not go to the blocking pool"
        );
        let second = second.unwrap();
        let (ready, third) = first_poll_ready(&runtime, in_place.save("p", &record, Some(second)));
        assert!(ready, "a save on the calling thread waited");
        let third = third.unwrap();
        let (ready, stale) = first_poll_ready(&runtime, in_place.save("p", &record, Some(second)));
        assert!(ready);
        assert!(
            matches!(stale, Err(StoreError::Conflict { .. })),
            "a stale save answered {stale:?}"
        );
        drop((pooled, in_place));
        let reopened = SledTokenStore::open(dir.path()).unwrap();
        let stored = runtime.block_on(reopened.load("p")).unwrap().unwrap();
        assert_eq!(stored.version, third);
        assert_eq!(stored.value, record);
    }

    /// `WriteThread::CallingThread`: while a compaction holds the database, a save waits for
    /// it on the blocking pool (its runtime's thread keeps running other tasks), then saves.
    #[test]
    fn a_save_on_the_calling_thread_waits_off_it_while_a_compaction_holds_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledTokenStore::open(dir.path())
            .unwrap()
            .with_write_thread(WriteThread::CallingThread);
        let record = records().pop().unwrap();
        let saved = record.clone();
        let version = while_a_compaction_holds(&store, "the save", |writer| async move {
            writer.save("p", &saved, None).await
        });
        assert!(matches!(version, Ok(1)), "{version:?}");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_eq!(
            runtime.block_on(store.load("p")).unwrap().unwrap().value,
            record
        );
    }

    /// `WriteThread::CallingThread`: a save that removes a secret (a logout keeps the client
    /// but drops the tokens) still compacts the store (a new generation, the old one wiped)
    /// before it returns, as on the blocking pool.
    #[test]
    fn a_save_on_the_calling_thread_that_removes_secrets_still_wipes_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledTokenStore::open(dir.path())
            .unwrap()
            .with_write_thread(WriteThread::CallingThread);
        let all = records();
        let with_tokens = all.last().unwrap().clone();
        let without = ProfileRecord {
            tokens: None,
            ..with_tokens.clone()
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let version = runtime
            .block_on(store.save("p", &with_tokens, None))
            .unwrap();
        let before = store.read().generation;
        let version = runtime
            .block_on(store.save("p", &without, Some(version)))
            .unwrap();
        assert_eq!(store.read().generation, before + 1, "no compaction");
        assert!(!layout::generation_dir(dir.path(), before).exists());
        let stored = runtime.block_on(store.load("p")).unwrap().unwrap();
        assert_eq!((stored.version, stored.value), (version, without));
    }

    /// The envelope put together around the serialized record is the one serde writes.
    #[test]
    fn the_clear_envelope_is_what_serde_writes() {
        for record in records() {
            for version in [1, 42, u64::MAX] {
                let framed = clear_envelope(version, &SerializedRecord::new(&record).unwrap().json);
                let serialized = encode(&EnvelopeOut {
                    format: CLEAR_FORMAT,
                    version,
                    record: Some(ExposeSecrets(&record)),
                    sealed: None,
                    deleted: false,
                })
                .unwrap();
                assert_eq!(framed.as_slice(), serialized.as_slice());
                assert_eq!(
                    internal::envelope::encode(version, &record).unwrap(),
                    serialized
                );
            }
        }
    }

    /// Reading only which secrets a stored record holds agrees with decoding it, and a
    /// record with a `null` slot holds no secret there.
    #[test]
    fn secret_slots_read_without_decoding_agree_with_the_decoded_record() {
        for record in records() {
            let bytes = internal::envelope::encode(3, &record).unwrap();
            let light: EnvelopeSlots = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(light.record.slots(), SecretSlots::of(&record));
            assert_eq!(
                SerializedRecord::new(&record).unwrap().slots,
                SecretSlots::of(&record)
            );
        }
        let nulls = br#"{"format":1,"version":2,"record":{"tokens":{"access_token":"a","refresh_token":null,"expires_at":1,"obtained_at":0},"client":null}}"#;
        let light: EnvelopeSlots = serde_json::from_slice(nulls).unwrap();
        assert_eq!(light.record.slots(), SecretSlots([true, false, false]));
        assert!(SecretSlots([true, true, false]).removed_by(SecretSlots([true, false, false])));
        assert!(!SecretSlots([true, false, false]).removed_by(SecretSlots([true, true, true])));
    }
}
