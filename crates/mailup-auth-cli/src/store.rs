//! The CLI's token store: the sled database, opened for one operation at a time (with its
//! encryption key, when the user chose one).
//!
//! sled lets one process (and one handle per process) open a database. A CLI command that kept
//! it open for its whole run would hold it during API calls, retries, token requests and the
//! browser wait, and every other `mailup-auth` started meanwhile (a script running twenty
//! `call`s in parallel, a `status` while a refresh hangs) would fail. So every `load`, `save`,
//! `delete` and `profiles` opens the database, does its one thing (a save is flushed before it
//! returns), and closes it again; while another process has it, the operation waits and
//! retries for a bounded time. Nothing here knows about OAuth: it is a [`TokenStore`] like any
//! other, so it can be shared as an `Arc<dyn TokenStore>`.

use std::future::Future;
use std::hash::{BuildHasher as _, Hasher as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use mailup_auth::core::{StoredProfile, Versioned};
use mailup_auth::{ProfileRecord, SledTokenStore, StoreError, TokenStore, UnixTime};
use mailup_auth_store_sled::KeySource;

/// How long one operation waits for other `mailup-auth` processes to let go of the database.
pub(crate) const LOCK_WAIT: Duration = Duration::from_secs(10);

/// A [`TokenStore`] over the sled database in one directory, open only during an operation.
#[derive(Debug, Clone)]
pub(crate) struct OnDemandSledStore {
    dir: PathBuf,
    /// Where the store's encryption key is kept; `None`: records in clear.
    key: Option<KeySource>,
    lock_wait: Duration,
    /// sled refuses a second open in the same process: operations of this process take turns.
    turn: Arc<tokio::sync::Mutex<()>>,
}

impl OnDemandSledStore {
    /// A store in `dir` (created at the first operation), encrypted with the key in `key`
    /// when one is given, waiting up to [`LOCK_WAIT`] for other processes.
    pub(crate) fn new(dir: impl Into<PathBuf>, key: Option<KeySource>) -> Self {
        Self {
            dir: dir.into(),
            key,
            lock_wait: LOCK_WAIT,
            turn: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// Opens the database, runs `operation` on it and closes it again.
    async fn with_store<T, F, Fut>(&self, operation: F) -> Result<T, StoreError>
    where
        F: FnOnce(SledTokenStore) -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let _turn = self.turn.lock().await;
        let dir = self.dir.clone();
        let key = self.key.clone();
        let lock_wait = self.lock_wait;
        let store =
            tokio::task::spawn_blocking(move || open_waiting(&dir, key.as_ref(), lock_wait))
                .await
                .map_err(|e| StoreError::io("opening the token store did not complete", e))??;
        // The operation gets a clone; ours is dropped last, off the async workers (sled joins
        // its flusher when the last handle goes), before the turn is given up.
        let result = operation(store.clone()).await;
        let _ = tokio::task::spawn_blocking(move || drop(store)).await;
        result
    }
}

/// Opens the database, retrying while another process holds it, for at most `wait`.
fn open_waiting(
    dir: &Path,
    key: Option<&KeySource>,
    wait: Duration,
) -> Result<SledTokenStore, StoreError> {
    let started = Instant::now();
    let mut attempt: u32 = 0;
    loop {
        match SledTokenStore::open_with(dir, key) {
            Err(StoreError::Locked { .. }) if started.elapsed() < wait => {
                attempt = attempt.saturating_add(1);
                std::thread::sleep(retry_delay(attempt));
            }
            result => return result,
        }
    }
}

/// 5 to 25 ms, varying per attempt and process, so that waiting processes do not retry in step.
fn retry_delay(attempt: u32) -> Duration {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(attempt);
    hasher.write_u32(std::process::id());
    Duration::from_millis(5 + hasher.finish() % 21)
}

#[async_trait]
impl TokenStore for OnDemandSledStore {
    async fn load(&self, profile: &str) -> Result<Option<Versioned<ProfileRecord>>, StoreError> {
        self.with_store(|store| async move { store.load(profile).await })
            .await
    }

    async fn save(
        &self,
        profile: &str,
        record: &ProfileRecord,
        expected: Option<u64>,
    ) -> Result<u64, StoreError> {
        self.with_store(|store| async move { store.save(profile, record, expected).await })
            .await
    }

    async fn delete(&self, profile: &str) -> Result<(), StoreError> {
        self.with_store(|store| async move { store.delete(profile).await })
            .await
    }

    async fn profiles(&self) -> Result<Vec<String>, StoreError> {
        self.with_store(|store| async move { store.profiles().await })
            .await
    }

    async fn load_entry(&self, profile: &str) -> Result<StoredProfile, StoreError> {
        self.with_store(|store| async move { store.load_entry(profile).await })
            .await
    }

    async fn restore_lost(
        &self,
        profile: &str,
        record: &ProfileRecord,
        lost_version: u64,
    ) -> Result<u64, StoreError> {
        self.with_store(
            |store| async move { store.restore_lost(profile, record, lost_version).await },
        )
        .await
    }

    async fn consume_once(
        &self,
        key: &str,
        expires_at: UnixTime,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        self.with_store(|store| async move { store.consume_once(key, expires_at, now).await })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_database_is_closed_between_operations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let store = OnDemandSledStore::new(&path, None);
        let shared: Arc<dyn TokenStore> = Arc::new(store.clone());
        assert_eq!(shared.load("p").await.unwrap(), None);
        assert_eq!(
            shared
                .save("p", &ProfileRecord::default(), None)
                .await
                .unwrap(),
            1
        );
        // Closed again: this process can open it directly (sled allows one open per process).
        let direct = tokio::task::spawn_blocking({
            let path = path.clone();
            move || open_waiting(&path, None, Duration::from_secs(5))
        })
        .await
        .unwrap()
        .expect("the store was released after the save");
        assert_eq!(direct.load("p").await.unwrap().unwrap().version, 1);
        // While it is held, an operation waits for it (bounded) rather than failing at once.
        let waiting = tokio::spawn(async move { store.profiles().await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!waiting.is_finished(), "the operation waits for the holder");
        tokio::task::spawn_blocking(move || drop(direct))
            .await
            .unwrap();
        assert_eq!(waiting.await.unwrap().unwrap(), ["p"]);
        shared.delete("p").await.unwrap();
        assert_eq!(shared.profiles().await.unwrap(), Vec::<String>::new());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_logout_and_a_lost_record_are_told_apart_through_the_cli_store() {
        // The facade keeps freshly refreshed tokens when the record vanished without a logout
        // (`Absent`) and puts them back with `restore_lost`; the CLI's store must pass both on
        // to sled, not fall back to the trait's defaults (a lost record read as a logout).
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn TokenStore> =
            Arc::new(OnDemandSledStore::new(dir.path().join("store"), None));
        assert_eq!(store.load_entry("p").await.unwrap(), StoredProfile::Absent);
        assert_eq!(
            store
                .restore_lost("p", &ProfileRecord::default(), 4)
                .await
                .unwrap(),
            5
        );
        assert!(matches!(
            store.load_entry("p").await.unwrap(),
            StoredProfile::Record(Versioned { version: 5, .. })
        ));
        store.delete("p").await.unwrap();
        assert_eq!(store.load_entry("p").await.unwrap(), StoredProfile::Deleted);
        assert!(matches!(
            store.restore_lost("p", &ProfileRecord::default(), 5).await,
            Err(StoreError::Conflict { found: None, .. })
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_store_held_too_long_is_reported_as_locked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let held = SledTokenStore::open(&path).unwrap();
        let mut store = OnDemandSledStore::new(&path, None);
        store.lock_wait = Duration::from_millis(100);
        assert!(matches!(
            store.load("p").await,
            Err(StoreError::Locked { .. })
        ));
        drop(held);
    }
}
