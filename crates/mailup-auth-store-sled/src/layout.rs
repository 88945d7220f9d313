//! The store directory on disk: which sled database is the current one, how a fresh one
//! replaces it, and how what is left of an old one is wiped.
//!
//! ```text
//! <store>/
//!   lock             an OS file lock, held by the process that has the store open
//!   CURRENT          the pointer: the name of the current generation, e.g. `gen-3`
//!   gen-3/           the sled database (sled's `conf`, `db`, `blobs/`, `snap.*`; during an
//!                    open, `pre-open`: a copy of them, see `preopen`)
//!   refresh-locks/   the refresh lease's lock files (see `lease`)
//!   recovering/      only while a salvage runs: the fresh store it builds
//! ```
//!
//! Stores written by 0.1.0 have sled's files directly in `<store>/` and no pointer; opening one
//! copies it into `gen-1` and wipes the old files (see `SledTokenStore::open`).
//!
//! Crash safety rests on one atomic step: `CURRENT` is replaced by `rename` of a flushed
//! temporary file, after the generation it names has been flushed. Before the rename the old
//! generation is current; after it, the new one. Anything else found at open (a generation
//! that is not current, a temporary pointer, the 0.1.0 files once a pointer exists) is
//! leftover from an interrupted switch, and is wiped.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use mailup_auth_core::StoreError;

/// The pointer file.
const POINTER: &str = "CURRENT";
/// Where the next pointer is written before it is renamed over [`POINTER`].
const POINTER_TMP: &str = "CURRENT.tmp";
/// The store lock file.
const LOCK: &str = "lock";
/// Where a salvage builds the fresh store, inside the store directory (so that moving its
/// database into place is a rename on one file system). Found by an open, it is what a salvage
/// that died left, and is wiped.
pub(crate) const RECOVERING: &str = "recovering";
/// Generation directories are `gen-<n>`, `n` in decimal without leading zeros.
const GENERATION_PREFIX: &str = "gen-";
/// The files and directories sled 0.34 keeps in its directory (snapshots are `snap.*`).
const SLED_ENTRIES: [&str; 3] = ["conf", "db", "blobs"];
const SLED_SNAPSHOT_PREFIX: &str = "snap.";

/// The directory of generation `generation`.
pub(crate) fn generation_dir(store: &Path, generation: u64) -> PathBuf {
    store.join(format!("{GENERATION_PREFIX}{generation}"))
}

/// Takes the store lock: one process has the store open at a time, including while it
/// switches generations, so nobody can open a generation that is being replaced or wiped.
/// The OS releases the lock when the file is closed or the process dies.
pub(crate) fn lock_store(store: &Path) -> Result<File, StoreError> {
    let path = store.join(LOCK);
    let mut options = OpenOptions::new();
    options.create(true).truncate(false).write(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(&path).map_err(|e| io_error(&path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(StoreError::Locked {
            path: store.display().to_string(),
            message: "held by another process".into(),
        }),
        Err(TryLockError::Error(error)) => Err(io_error(&path, error)),
    }
}

/// The current generation, or `None` when there is no pointer (a new store, or one written
/// by 0.1.0). A pointer that cannot be read is an error, never "no store".
pub(crate) fn read_pointer(store: &Path) -> Result<Option<u64>, StoreError> {
    let path = store.join(POINTER);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(io_error(&path, error)),
    };
    parse_generation(text.trim()).map(Some).ok_or_else(|| {
        StoreError::io_context(format!(
            "{} does not name a generation (`gen-<n>`): the store is damaged",
            path.display()
        ))
    })
}

fn parse_generation(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(GENERATION_PREFIX)?;
    let generation: u64 = digits.parse().ok()?;
    // One spelling per generation, so `gen-01` is never mistaken for `gen-1`.
    (generation.to_string() == digits).then_some(generation)
}

/// Makes `generation` the current one: writes and flushes a temporary pointer, renames it over
/// the pointer (atomic), and flushes the directory so the rename itself is durable.
pub(crate) fn write_pointer(store: &Path, generation: u64) -> Result<(), StoreError> {
    let tmp = store.join(POINTER_TMP);
    let mut options = OpenOptions::new();
    options.create(true).truncate(true).write(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp).map_err(|e| io_error(&tmp, e))?;
    file.write_all(format!("{GENERATION_PREFIX}{generation}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| io_error(&tmp, e))?;
    drop(file);
    let pointer = store.join(POINTER);
    std::fs::rename(&tmp, &pointer).map_err(|e| io_error(&pointer, e))?;
    sync_dir(store)
}

/// The generation directories present in `store`, in order.
pub(crate) fn generations(store: &Path) -> Result<Vec<u64>, StoreError> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(store).map_err(|e| io_error(store, e))? {
        let entry = entry.map_err(|e| io_error(store, e))?;
        if let Some(generation) = entry.file_name().to_str().and_then(parse_generation) {
            found.push(generation);
        }
    }
    found.sort_unstable();
    Ok(found)
}

/// Whether `store` holds a database in the 0.1.0 layout (sled's files directly in it).
pub(crate) fn has_legacy_database(store: &Path) -> bool {
    store.join("conf").is_file() || store.join("db").is_file()
}

/// Wipes everything in `store` that belongs to no current database: generations other than
/// `current`, a temporary pointer, and (when `keep_legacy` is false) the 0.1.0 files.
pub(crate) fn remove_leftovers(
    store: &Path,
    current: Option<u64>,
    keep_legacy: bool,
) -> Result<(), StoreError> {
    for entry in std::fs::read_dir(store).map_err(|e| io_error(store, e))? {
        let entry = entry.map_err(|e| io_error(store, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let leftover = match parse_generation(name) {
            Some(generation) => Some(generation) != current,
            None => {
                name == POINTER_TMP
                    || name == RECOVERING
                    || (!keep_legacy
                        && (SLED_ENTRIES.contains(&name) || name.starts_with(SLED_SNAPSHOT_PREFIX)))
            }
        };
        if leftover {
            scrub(&entry.path())?;
        }
    }
    sync_dir(store)
}

/// Whether `name`, in a store directory, belongs to a database (a generation other than
/// `keep`, the 0.1.0 files) or is the pointer: what a salvage moves aside.
pub(crate) fn is_database_entry(name: &str, keep: u64) -> bool {
    match parse_generation(name) {
        Some(generation) => generation != keep,
        None => {
            name == POINTER
                || SLED_ENTRIES.contains(&name)
                || name.starts_with(SLED_SNAPSHOT_PREFIX)
        }
    }
}

/// Wipes the 0.1.0 database files from `store`.
pub(crate) fn remove_legacy_database(store: &Path) -> Result<(), StoreError> {
    remove_leftovers(store, read_pointer(store)?, false)
}

/// Overwrites every file under `path` with zeros (flushed), then removes it; then removes
/// the directories. The overwrite is what a file system that writes in place (ext4, XFS,
/// NTFS) needs for the old bytes to be gone from the disk, not only from the directory;
/// copy-on-write file systems and SSDs may keep old blocks regardless (see docs/security.md).
pub(crate) fn scrub(path: &Path) -> Result<(), StoreError> {
    scrub_at(path, true)
}

/// [`scrub`] without its crash point (the tests' kill at "scrubbing" aims at compactions).
pub(crate) fn wipe(path: &Path) -> Result<(), StoreError> {
    scrub_at(path, false)
}

fn scrub_at(path: &Path, crash: bool) -> Result<(), StoreError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(io_error(path, error)),
    };
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).map_err(|e| io_error(path, e))? {
            let entry = entry.map_err(|e| io_error(path, e))?;
            scrub_at(&entry.path(), crash)?;
        }
        if crash {
            crate::crash_point("scrubbing");
        }
        return match std::fs::remove_dir(path) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(io_error(path, error)),
        };
    }
    if meta.is_file() {
        overwrite_with_zeros(path, meta.len())?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(io_error(path, error)),
    }
}

fn overwrite_with_zeros(path: &Path, len: u64) -> Result<(), StoreError> {
    const CHUNK: usize = 64 * 1024;
    let mut file = match OpenOptions::new().write(true).open(path) {
        Ok(file) => file,
        // Not ours to overwrite (read-only): removing it is all that can be done.
        Err(error) if error.kind() == std::io::ErrorKind::PermissionDenied => return Ok(()),
        Err(error) => return Err(io_error(path, error)),
    };
    let zeros = [0u8; CHUNK];
    let mut left = len;
    while left > 0 {
        let n = usize::try_from(left).map_or(CHUNK, |left| left.min(CHUNK));
        file.write_all(&zeros[..n]).map_err(|e| io_error(path, e))?;
        left -= n as u64;
    }
    file.sync_all().map_err(|e| io_error(path, e))
}

#[cfg(unix)]
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(|e| io_error(dir, e))
}

#[cfg(not(unix))]
pub(crate) fn sync_dir(_dir: &Path) -> Result<(), StoreError> {
    // Windows cannot open a directory as a file; NTFS journals the rename itself.
    Ok(())
}

fn io_error(path: &Path, error: std::io::Error) -> StoreError {
    StoreError::io(path.display().to_string(), error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_have_one_spelling() {
        assert_eq!(parse_generation("gen-1"), Some(1));
        assert_eq!(parse_generation("gen-42"), Some(42));
        assert_eq!(parse_generation("gen-01"), None);
        assert_eq!(parse_generation("gen-"), None);
        assert_eq!(parse_generation("gen--1"), None);
        assert_eq!(parse_generation("refresh-locks"), None);
    }

    #[test]
    fn the_pointer_round_trips_and_a_damaged_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_pointer(dir.path()).unwrap(), None);
        write_pointer(dir.path(), 7).unwrap();
        assert_eq!(read_pointer(dir.path()).unwrap(), Some(7));
        assert!(!dir.path().join(POINTER_TMP).exists());
        std::fs::write(dir.path().join(POINTER), "gen-x\n").unwrap();
        assert!(matches!(
            read_pointer(dir.path()),
            Err(StoreError::Io { .. })
        ));
    }

    #[test]
    fn scrub_zeroes_and_removes_a_tree() {
        let dir = tempfile::tempdir().unwrap();
        let gen = dir.path().join("gen-1");
        std::fs::create_dir_all(gen.join("blobs")).unwrap();
        std::fs::write(gen.join("db"), b"secret".repeat(50_000)).unwrap();
        std::fs::write(gen.join("blobs").join("1"), b"secret").unwrap();
        scrub(&gen).unwrap();
        assert!(!gen.exists());
        scrub(&gen).unwrap();
    }

    #[test]
    fn leftovers_are_everything_but_the_current_generation() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path();
        for name in [
            "gen-1",
            "gen-2",
            "gen-3",
            "refresh-locks",
            "blobs",
            RECOVERING,
        ] {
            std::fs::create_dir(store.join(name)).unwrap();
        }
        for name in [
            "conf",
            "db",
            "snap.0000ABCD",
            POINTER_TMP,
            LOCK,
            "notes.txt",
        ] {
            std::fs::write(store.join(name), b"x").unwrap();
        }
        remove_leftovers(store, Some(2), true).unwrap();
        let names = |store: &Path| {
            let mut names: Vec<String> = std::fs::read_dir(store)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            names
        };
        assert_eq!(
            names(store),
            [
                "blobs",
                "conf",
                "db",
                "gen-2",
                "lock",
                "notes.txt",
                "refresh-locks",
                "snap.0000ABCD"
            ]
        );
        remove_leftovers(store, Some(2), false).unwrap();
        assert_eq!(
            names(store),
            ["gen-2", "lock", "notes.txt", "refresh-locks"]
        );
    }
}
