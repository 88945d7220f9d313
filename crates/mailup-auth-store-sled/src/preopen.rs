//! A byte copy of sled's files around every open, so that sled's own recovery never destroys
//! records it cannot read.
//!
//! sled 0.34 takes the first message whose checksum fails for the torn end of its log: opening
//! the database, it zeroes that message and everything after it, then may still fail. A flipped
//! bit in a message that holds no record (early in the log) costs every record, and a log
//! followed by garbage is cut short. So before sled sees a database, its files (`db`, `conf`,
//! `snap.*`) are copied into `pre-open/` inside the database directory:
//!
//! 1. the copy is written into `pre-open.tmp/` with a manifest of the names, each file flushed,
//!    then renamed to `pre-open/` (flushed): the copy is complete or absent;
//! 2. sled opens the database; if it fails, or the record messages that verified before are
//!    not all still in the log, sled is closed, the copies are renamed back over sled's files
//!    (and files sled created are removed) and the open is [`StoreError::Damaged`];
//! 3. otherwise `pre-open/` is renamed to `pre-open.tmp/` and wiped (it holds copies of
//!    secrets).
//!
//! A crash (even `kill -9`) during 1 leaves the originals untouched and a `pre-open.tmp/` that
//! the next open wipes; during 2 or the restore, a `pre-open/` that the next open (or salvage)
//! puts back first, renaming file by file as the manifest lists them, which may be repeated;
//! during 3, a `pre-open.tmp/` that is wiped. The files sled keeps in `blobs/` (values over
//! 4 MiB, which a token store never writes) are not copied.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mailup_auth_core::ports::StoreError;

use crate::layout;

/// The complete copy.
const BACKUP: &str = "pre-open";
/// A copy being written, or being wiped.
const BACKUP_TMP: &str = "pre-open.tmp";
/// The names of the files copied, one a line.
const MANIFEST: &str = "MANIFEST";
/// The most bytes of sled's files copied: above it an open is refused as damaged, without
/// letting sled touch the files. A token store's files are a few hundred KiB.
pub(crate) const MAX_GUARDED: u64 = 64 << 20;
/// How long a closed sled may take to let go of its files.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Whether `name` is one of the files sled may rewrite when it opens.
fn guarded(name: &str) -> bool {
    name == "db" || name == "conf" || name.starts_with("snap.")
}

/// A copy taken before sled opened the database in `dir`.
pub(crate) struct Guard {
    dir: PathBuf,
}

/// Puts back a copy that an open which died left in `dir`, and wipes a partial copy. Returns
/// whether a copy was put back.
pub(crate) fn restore_pending(dir: &Path) -> Result<bool, StoreError> {
    let backup = dir.join(BACKUP);
    let restored = if backup.is_dir() {
        restore(dir)?;
        true
    } else {
        false
    };
    layout::wipe(&dir.join(BACKUP_TMP))?;
    Ok(restored)
}

/// The guarded files in `dir`, and their total size.
fn guarded_files(dir: &Path) -> Result<(Vec<String>, u64), StoreError> {
    let mut names = Vec::new();
    let mut total = 0u64;
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok((names, 0)),
        Err(error) => return Err(io_error(dir, &error)),
    };
    for entry in entries {
        let entry = entry.map_err(|error| io_error(dir, &error))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let meta = entry.metadata().map_err(|error| io_error(dir, &error))?;
        if guarded(&name) && meta.is_file() {
            total = total.saturating_add(meta.len());
            names.push(name);
        }
    }
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
    let tmp = dir.join(BACKUP_TMP);
    layout::wipe(&tmp)?;
    std::fs::create_dir(&tmp).map_err(|error| io_error(&tmp, &error))?;
    for name in &names {
        let to = tmp.join(name);
        std::fs::copy(dir.join(name), &to).map_err(|error| io_error(&to, &error))?;
        File::open(&to)
            .and_then(|file| file.sync_all())
            .map_err(|error| io_error(&to, &error))?;
    }
    let manifest = tmp.join(MANIFEST);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&manifest)
        .map_err(|error| io_error(&manifest, &error))?;
    file.write_all(names.join("\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|error| io_error(&manifest, &error))?;
    layout::sync_dir(&tmp)?;
    crate::crash_point("preopen-copied");
    let backup = dir.join(BACKUP);
    std::fs::rename(&tmp, &backup).map_err(|error| io_error(&backup, &error))?;
    layout::sync_dir(dir)?;
    Ok(Some(Guard {
        dir: dir.to_path_buf(),
    }))
}

impl Guard {
    /// sled opened the database and lost nothing: the copy is wiped.
    pub(crate) fn release(self) -> Result<(), StoreError> {
        let backup = self.dir.join(BACKUP);
        let tmp = self.dir.join(BACKUP_TMP);
        // Renamed first: a wipe that dies half way must never be taken for a copy to put back.
        std::fs::rename(&backup, &tmp).map_err(|error| io_error(&backup, &error))?;
        layout::sync_dir(&self.dir)?;
        crate::crash_point("preopen-wiping");
        layout::wipe(&tmp)
    }

    /// Puts the original bytes back. sled must be closed (`db` dropped): this waits for its
    /// threads to let go of the log.
    pub(crate) fn restore(self) -> Result<(), StoreError> {
        wait_released(&self.dir.join("db"));
        restore(&self.dir)
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

/// Renames the copies in `dir/pre-open` back over sled's files, removes guarded files the
/// manifest does not list (sled created them), and removes the copy. Repeating it after a
/// crash half way is harmless: a name already put back is no longer in the copy.
fn restore(dir: &Path) -> Result<(), StoreError> {
    let backup = dir.join(BACKUP);
    let manifest = backup.join(MANIFEST);
    let listed = std::fs::read_to_string(&manifest).map_err(|error| io_error(&manifest, &error))?;
    let names: Vec<&str> = listed.lines().filter(|name| guarded(name)).collect();
    for name in &names {
        let from = backup.join(name);
        if from.is_file() {
            std::fs::rename(&from, dir.join(name)).map_err(|error| io_error(&from, &error))?;
        }
    }
    for entry in std::fs::read_dir(dir).map_err(|error| io_error(dir, &error))? {
        let entry = entry.map_err(|error| io_error(dir, &error))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if guarded(&name) && !names.contains(&name.as_str()) {
            layout::wipe(&entry.path())?;
        }
    }
    layout::sync_dir(dir)?;
    crate::crash_point("preopen-restored");
    layout::wipe(&backup)?;
    layout::sync_dir(dir)
}

fn io_error(path: &Path, error: &std::io::Error) -> StoreError {
    StoreError::Io(format!("{}: {error}", path.display()))
}
