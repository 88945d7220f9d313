//! A byte copy of sled's files around every open, so that sled's own recovery never destroys
//! records it cannot read.
//!
//! sled 0.34 takes the first message whose checksum fails for the torn end of its log: opening
//! the database, it zeroes that message and everything after it, then may still fail. A flipped
//! bit in a message that holds no record (early in the log) costs every record, and a log
//! followed by garbage is cut short. So before sled sees a database, its files (`db`, `conf`,
//! `snap.*`) are copied into one file, `pre-open`, inside the database directory (their names,
//! lengths and bytes, then a CRC32 of it all):
//!
//! 1. the copy is written as `pre-open.tmp`, flushed, renamed to `pre-open` (the directory
//!    flushed): a valid copy is complete;
//! 2. sled opens the database; if it fails, or then serves a profile at an older version than
//!    the newest intact copy in the log (or not at all), sled is closed, each file is written
//!    back (as `restoring.<name>`, flushed, renamed over sled's), files sled created are
//!    removed, and the open is [`StoreError::Damaged`];
//! 3. otherwise the copy is overwritten with zeros, flushed (so that it is invalid on disk
//!    before the store is used: it must never be put back over later writes), and removed.
//!
//! One file keeps this to three flushes per open. A crash (even `kill -9`) during 1 leaves the
//! originals untouched and a `pre-open.tmp` that the next open wipes; during 2 or the restore,
//! a valid `pre-open` that the next open (or salvage) puts back first (repeating it is
//! harmless); during 3 or the end of a restore, an invalid (partly zeroed) copy, which is
//! wiped. The files sled keeps in `blobs/` (values over 4 MiB, which a token store never
//! writes) are not copied.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mailup_auth_core::StoreError;

use crate::layout;

/// The copy.
const BACKUP: &str = "pre-open";
/// A copy being written.
const BACKUP_TMP: &str = "pre-open.tmp";
/// A file being put back is written as `restoring.<name>` first.
const RESTORING_PREFIX: &str = "restoring.";
/// What the copy starts with.
const MAGIC: &[u8] = b"mailup-auth pre-open copy 1\n";
/// The most bytes of sled's files copied: above it an open is refused as damaged, without
/// letting sled touch the files. A token store's files are a few hundred KiB.
pub(crate) const MAX_GUARDED: u64 = 64 << 20;
/// How long a closed sled may take to let go of its files.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Whether `name` is one of the files sled may rewrite when it opens.
fn guarded(name: &str) -> bool {
    name == "db" || name == "conf" || name.starts_with("snap.")
}

/// The files of a copy: name and bytes.
type Files = Vec<(String, Vec<u8>)>;

/// A copy taken before sled opened the database in `dir`.
pub(crate) struct Guard {
    dir: PathBuf,
}

/// Puts back a copy that an open which died left in `dir`, and wipes a partial or invalid
/// one. Returns whether a copy was put back.
pub(crate) fn restore_pending(dir: &Path) -> Result<bool, StoreError> {
    layout::wipe(&dir.join(BACKUP_TMP))?;
    let backup = dir.join(BACKUP);
    if !backup.is_file() {
        return Ok(false);
    }
    match read_copy(&backup)? {
        Some(files) => {
            restore(dir, &files)?;
            Ok(true)
        }
        // A copy being wiped when the process died: the files are sled's own.
        None => {
            layout::wipe(&backup)?;
            Ok(false)
        }
    }
}

/// The guarded files in `dir`, and their total size.
fn guarded_files(dir: &Path) -> Result<(Vec<String>, u64), StoreError> {
    let mut names = Vec::new();
    let mut total = 0u64;
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok((names, 0)),
        Err(error) => return Err(io_error(dir, error)),
    };
    for entry in entries {
        let entry = entry.map_err(|error| io_error(dir, error))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let meta = entry.metadata().map_err(|error| io_error(dir, error))?;
        if guarded(&name) && meta.is_file() {
            total = total.saturating_add(meta.len());
            names.push(name);
        }
    }
    names.sort();
    Ok((names, total))
}

/// Refuses files too large to copy (and far larger than a token store writes) as damaged,
/// before anything reads them.
pub(crate) fn check_size(dir: &Path) -> Result<(), StoreError> {
    let (_, total) = guarded_files(dir)?;
    if total > MAX_GUARDED {
        return Err(StoreError::Damaged {
            path: dir.display().to_string(),
            message: format!(
                "sled's files hold {total} bytes, far more than a token store writes (at most \
                 {MAX_GUARDED} are opened): sled was not let near them and nothing was changed; \
                 {}",
                crate::SALVAGE_HINT
            ),
        });
    }
    Ok(())
}

/// Copies sled's files in `dir` (see the module docs). `None` when there is no log yet
/// (nothing to protect).
pub(crate) fn take(dir: &Path) -> Result<Option<Guard>, StoreError> {
    if !dir.join("db").is_file() {
        return Ok(None);
    }
    check_size(dir)?;
    let (names, _) = guarded_files(dir)?;
    let mut copy = MAGIC.to_vec();
    copy.extend_from_slice(&u32::try_from(names.len()).unwrap_or(u32::MAX).to_le_bytes());
    for name in &names {
        let path = dir.join(name);
        let bytes = std::fs::read(&path).map_err(|error| io_error(&path, error))?;
        copy.extend_from_slice(&u16::try_from(name.len()).unwrap_or(u16::MAX).to_le_bytes());
        copy.extend_from_slice(name.as_bytes());
        copy.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        copy.extend_from_slice(&bytes);
    }
    let crc = crc32fast::hash(&copy);
    copy.extend_from_slice(&crc.to_le_bytes());
    let tmp = dir.join(BACKUP_TMP);
    write_synced(&tmp, &copy)?;
    crate::crash_point("preopen-copied");
    let backup = dir.join(BACKUP);
    std::fs::rename(&tmp, &backup).map_err(|error| io_error(&backup, error))?;
    layout::sync_dir(dir)?;
    Ok(Some(Guard {
        dir: dir.to_path_buf(),
    }))
}

impl Guard {
    /// sled opened the database and lost nothing: the copy is wiped (invalid on disk before
    /// this returns).
    pub(crate) fn release(self) -> Result<(), StoreError> {
        crate::crash_point("preopen-wiping");
        layout::wipe(&self.dir.join(BACKUP))
    }

    /// Puts the original bytes back. sled must be closed (`db` dropped): this waits for its
    /// threads to let go of the log.
    pub(crate) fn restore(self) -> Result<(), StoreError> {
        wait_released(&self.dir.join("db"));
        let backup = self.dir.join(BACKUP);
        let files = read_copy(&backup)?.ok_or_else(|| {
            StoreError::io_context(format!(
                "{}: the copy of sled's files taken before opening them does not verify",
                backup.display()
            ))
        })?;
        restore(&self.dir, &files)
    }
}

/// Waits (boundedly) until nothing holds sled's lock on `db`.
fn wait_released(db: &Path) {
    let started = Instant::now();
    while started.elapsed() < CLOSE_WAIT {
        let Ok(file) = File::open(db) else { return };
        if file.try_lock().is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Writes `bytes` to a new file at `path` (mode `0600`) and flushes it.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(path)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        })
        .map_err(|error| io_error(path, error))
}

/// The files in the copy at `path`, or `None` when it does not verify (its CRC32, its form).
fn read_copy(path: &Path) -> Result<Option<Files>, StoreError> {
    let bytes = std::fs::read(path).map_err(|error| io_error(path, error))?;
    Ok(parse_copy(&bytes))
}

fn parse_copy(bytes: &[u8]) -> Option<Files> {
    let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
    if crc32fast::hash(body).to_le_bytes() != crc {
        return None;
    }
    let mut rest = body.strip_prefix(MAGIC)?;
    let mut take = |n: usize| -> Option<&[u8]> {
        let (head, tail) = rest.split_at_checked(n)?;
        rest = tail;
        Some(head)
    };
    let count = u32::from_le_bytes(take(4)?.try_into().ok()?);
    let mut files = Vec::new();
    for _ in 0..count {
        let name_len = u16::from_le_bytes(take(2)?.try_into().ok()?);
        let name = std::str::from_utf8(take(usize::from(name_len))?).ok()?;
        if !guarded(name) || name.contains(['/', '\\']) {
            return None;
        }
        let len = u64::from_le_bytes(take(8)?.try_into().ok()?);
        let data = take(usize::try_from(len).ok()?)?;
        files.push((name.to_owned(), data.to_vec()));
    }
    Some(files)
}

/// Writes each file of the copy back over sled's (through `restoring.<name>` and a rename),
/// removes guarded files the copy does not hold (sled created them), then wipes the copy.
/// Repeating it after a crash half way is harmless.
fn restore(dir: &Path, files: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
    for (name, bytes) in files {
        let staging = dir.join(format!("{RESTORING_PREFIX}{name}"));
        write_synced(&staging, bytes)?;
        std::fs::rename(&staging, dir.join(name)).map_err(|error| io_error(&staging, error))?;
    }
    for entry in std::fs::read_dir(dir).map_err(|error| io_error(dir, error))? {
        let entry = entry.map_err(|error| io_error(dir, error))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let created = guarded(&name) && !files.iter().any(|(kept, _)| *kept == name);
        if created || name.starts_with(RESTORING_PREFIX) {
            layout::wipe(&entry.path())?;
        }
    }
    layout::sync_dir(dir)?;
    crate::crash_point("preopen-restored");
    layout::wipe(&dir.join(BACKUP))?;
    layout::sync_dir(dir)
}

fn io_error(path: &Path, error: std::io::Error) -> StoreError {
    StoreError::io(path.display().to_string(), error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_reads_back_and_any_damage_or_zeroing_invalidates_it() {
        let dir = tempfile::tempdir().expect("a temp dir");
        std::fs::write(dir.path().join("db"), b"log bytes").expect("db");
        std::fs::write(dir.path().join("conf"), b"conf bytes").expect("conf");
        let guard = take(dir.path()).expect("copied").expect("a log");
        let copy = std::fs::read(dir.path().join(BACKUP)).expect("the copy");
        let files = parse_copy(&copy).expect("it verifies");
        assert_eq!(
            files,
            [
                ("conf".to_owned(), b"conf bytes".to_vec()),
                ("db".to_owned(), b"log bytes".to_vec())
            ]
        );
        for at in 0..copy.len() {
            let mut damaged = copy.clone();
            damaged[at] ^= 0x10;
            assert_eq!(parse_copy(&damaged), None, "byte {at}");
            let mut zeroed = copy.clone();
            zeroed[..=at].fill(0);
            assert_eq!(parse_copy(&zeroed), None, "zeroed to {at}");
        }
        guard.release().expect("wiped");
        assert!(!dir.path().join(BACKUP).exists());
    }
}
