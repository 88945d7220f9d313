//! The cross-process refresh lease for a sled store directory: an OS file lock per profile.
//!
//! MailUp rotates the refresh token on every refresh, so two processes must never send the
//! same one. The facade takes this lease before it sends a refresh and keeps it until the
//! answer is saved; a process that waits for it then finds the saved tokens and sends nothing.
//! The lock is an advisory `flock`-style lock on `refresh-locks/<profile>.lock` inside the
//! store directory, released when the guard is dropped or when the process dies (the OS
//! releases it), so a killed holder never blocks the others.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use mailup_auth_core::{validate_profile_name, LeaseGuard, RefreshLease, StoreError};

/// The subdirectory of the store directory that holds the lock files.
const LOCK_DIR: &str = "refresh-locks";

/// How often a waiter tries the lock again.
const POLL: Duration = Duration::from_millis(20);

/// A [`RefreshLease`] over OS file locks in a store directory: processes on one host that
/// use the same directory refresh each profile one at a time.
///
/// It does not need the database to be open, so it also serves programs that open the sled
/// store only for each load and save (as the `mailup-auth` CLI does).
#[derive(Clone, Debug)]
pub struct SledRefreshLease {
    dir: PathBuf,
}

impl SledRefreshLease {
    /// The lease for the store directory `store_dir` (lock files go in a subdirectory of it).
    pub fn new(store_dir: impl AsRef<Path>) -> Self {
        Self {
            dir: store_dir.as_ref().join(LOCK_DIR),
        }
    }

    /// The lock file of `profile`.
    fn lock_path(&self, profile: &str) -> PathBuf {
        self.dir.join(format!("{}.lock", file_stem(profile)))
    }

    fn open_lock_file(&self, profile: &str) -> Result<File, StoreError> {
        create_lock_dir(&self.dir)?;
        let path = self.lock_path(profile);
        let mut options = OpenOptions::new();
        options.create(true).truncate(false).write(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options
            .open(&path)
            .map_err(|error| StoreError::io(path.display().to_string(), error))
    }
}

#[async_trait]
impl RefreshLease for SledRefreshLease {
    async fn acquire(&self, profile: &str, wait: Duration) -> Result<LeaseGuard, StoreError> {
        validate_profile_name(profile)?;
        let file = self.open_lock_file(profile)?;
        let started = tokio::time::Instant::now();
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(LeaseGuard::new(file)),
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(error)) => {
                    return Err(StoreError::io(
                        format!("cannot lock {}", self.lock_path(profile).display()),
                        error,
                    ))
                }
            }
            let waited = started.elapsed();
            if waited >= wait {
                return Err(StoreError::LeaseTimeout {
                    profile: profile.to_owned(),
                    waited,
                });
            }
            tokio::time::sleep(POLL.min(wait - waited)).await;
        }
    }
}

/// A file name for a profile: its bytes in hex (profile names may hold `/`, `..` or anything
/// but control characters), shortened with a hash when long. Two profiles that shared a name
/// would only refresh one after the other, never both at once.
fn file_stem(profile: &str) -> String {
    const MAX_HEX_BYTES: usize = 48;
    let bytes = profile.as_bytes();
    let mut stem: String = bytes
        .iter()
        .take(MAX_HEX_BYTES)
        .map(|b| format!("{b:02x}"))
        .collect();
    if bytes.len() > MAX_HEX_BYTES {
        // FNV-1a: stable across releases and platforms (std's hasher is not).
        let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, b| {
            (hash ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        stem.push_str(&format!("-{hash:016x}"));
    }
    stem
}

#[cfg(unix)]
fn create_lock_dir(dir: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|error| StoreError::io(dir.display().to_string(), error))
}

#[cfg(not(unix))]
fn create_lock_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::create_dir_all(dir).map_err(|error| StoreError::io(dir.display().to_string(), error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_stems_are_safe_and_distinct() {
        assert_eq!(file_stem("default"), "64656661756c74");
        assert_eq!(file_stem("../x"), "2e2e2f78");
        let long_a = "a".repeat(128);
        let long_b = format!("{}b", "a".repeat(127));
        assert_ne!(file_stem(&long_a), file_stem(&long_b));
        assert!(file_stem(&long_a).len() < 120);
    }

    #[tokio::test]
    async fn one_holder_at_a_time_and_a_timeout_when_held() {
        let dir = tempfile::tempdir().unwrap();
        let lease = SledRefreshLease::new(dir.path());
        let held = lease.acquire("p", Duration::from_secs(1)).await.unwrap();
        // A second handle (another process would open its own file too) must wait.
        let other = SledRefreshLease::new(dir.path());
        let error = other
            .acquire("p", Duration::from_millis(60))
            .await
            .unwrap_err();
        assert!(
            matches!(error, StoreError::LeaseTimeout { .. }),
            "{error:?}"
        );
        // Another profile is independent.
        let _q = other.acquire("q", Duration::ZERO).await.unwrap();
        drop(held);
        let _again = other.acquire("p", Duration::ZERO).await.unwrap();
    }

    #[tokio::test]
    async fn a_waiter_gets_the_lease_when_the_holder_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let lease = SledRefreshLease::new(dir.path());
        let held = lease.acquire("p", Duration::from_secs(1)).await.unwrap();
        let waiter = {
            let lease = lease.clone();
            tokio::spawn(async move { lease.acquire("p", Duration::from_secs(10)).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        drop(held);
        let _lease = waiter.await.unwrap().unwrap();
    }
}
