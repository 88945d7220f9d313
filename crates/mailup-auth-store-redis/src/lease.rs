//! The distributed refresh lease: one holder per profile across every process and host that
//! uses the same Redis server and key prefix.
//!
//! Taking it is `SET <prefix>lease:<profile> <owner> NX PX <ttl>`, with a random owner id per
//! acquisition (in a script that also gives a lease key found without a TTL one, so that a
//! key nobody renews cannot block refreshes for ever). While the guard lives, a task renews the TTL every third of it with an
//! owner-checked script, so a live holder keeps it and a killed one loses it within one TTL.
//! Dropping the guard releases it with an owner-checked delete (a holder whose lease already
//! lapsed and was taken over never deletes its successor's) and publishes on the events
//! channel. The guard's `still_held` (asked by the facade right before it sends the refresh)
//! is one owner-checked script that answers the key's `PTTL` only while the key still holds our
//! owner id; a guard whose renewal ended (the lease was found gone, or held past
//! `max_lease_hold`) is not held, without a round trip. Waiters sleep on that channel (one subscription per lease object, shared by all
//! its waiters; a message names the profile saved, deleted or let go) with a bounded poll as
//! fallback, so they look again as soon as the holder saves or lets go: through
//! [`RefreshLease::try_acquire_or_wait`] the facade then adopts the holder's saved tokens
//! without taking the lease at all.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt as _;
use mailup_auth_core::{validate_profile_name, LeaseAttempt, LeaseGuard, RefreshLease, StoreError};
use rand::RngCore as _;
use redis::aio::ConnectionManager;
use redis::Script;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::{map_error, Keys};

/// The lease's TTL unless the builder sets another: how long a killed holder blocks the
/// others at most. A live holder renews it every third of it.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);

/// How long a live holder keeps renewing its lease, at most. The facade bounds each token
/// operation (30 s by default), so a holder still there after this is stuck: its lease lapses
/// and another process may take over.
pub const DEFAULT_MAX_LEASE_HOLD: Duration = Duration::from_secs(60);

/// How often a waiter tries again when no notification comes (a lost subscription, a holder
/// that died without releasing).
const POLL: Duration = Duration::from_millis(250);

/// The poll while the subscription is not up yet (a process's first wait): a holder's save
/// published before it is lost to us, so look again sooner.
const POLL_UNSUBSCRIBED: Duration = Duration::from_millis(20);

/// Notifications kept for a waiter that has not read them yet; one that falls further behind
/// looks at the store again (as if notified).
const EVENTS_BUFFER: usize = 256;
/// Deletes the lease if it is still ours, and tells the waiters.
const RELEASE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', KEYS[2], ARGV[2])
  return 1
end
return 0
";

/// Takes the lease for `ARGV[1]` for `ARGV[2]` ms if nobody holds it (`1`), or `0`. A lease
/// key without a TTL (not written by a lease: by hand, or by another program under the same
/// prefix) would block every refresh for ever; it is given the lease's TTL, so it lapses
/// like a dead holder's.
const TAKE_SCRIPT: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('PTTL', KEYS[1]) == -1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
";

/// The lease's remaining TTL in ms if it is still ours (`-1`: no TTL), or `-3`.
const CHECK_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PTTL', KEYS[1])
end
return -3
";

/// Extends the lease's TTL if it is still ours.
const EXTEND_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// A [`RefreshLease`] in Redis. Get one from
/// [`RedisTokenStore::refresh_lease`](crate::RedisTokenStore::refresh_lease); clones share
/// one subscription for waiters.
#[derive(Clone)]
pub struct RedisRefreshLease {
    inner: Arc<LeaseInner>,
}

struct LeaseInner {
    client: redis::Client,
    connection: ConnectionManager,
    keys: Keys,
    location: String,
    operation_timeout: Duration,
    ttl: Duration,
    max_hold: Duration,
    release: Script,
    extend: Script,
    take: Script,
    check: Script,
    /// The profile named by each notification on the events channel.
    events: broadcast::Sender<Arc<str>>,
    /// Whether the listener's subscription is up (notifications are not being lost).
    subscribed: Arc<AtomicBool>,
    listener: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for LeaseInner {
    fn drop(&mut self) {
        let listener = self
            .listener
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(task) = listener.take() {
            task.abort();
        }
    }
}

impl std::fmt::Debug for RedisRefreshLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRefreshLease")
            .field("location", &self.inner.location)
            .field("ttl", &self.inner.ttl)
            .finish_non_exhaustive()
    }
}

impl RedisRefreshLease {
    pub(crate) fn new(
        client: redis::Client,
        connection: ConnectionManager,
        keys: Keys,
        location: String,
        operation_timeout: Duration,
        ttl: Duration,
        max_hold: Duration,
    ) -> Self {
        Self {
            inner: Arc::new(LeaseInner {
                client,
                connection,
                keys,
                location,
                operation_timeout,
                ttl,
                max_hold,
                release: Script::new(RELEASE_SCRIPT),
                extend: Script::new(EXTEND_SCRIPT),
                take: Script::new(TAKE_SCRIPT),
                check: Script::new(CHECK_SCRIPT),
                events: broadcast::channel(EVENTS_BUFFER).0,
                subscribed: Arc::default(),
                listener: Mutex::new(None),
            }),
        }
    }

    /// The lease's TTL (see [`RedisStoreBuilder::lease_ttl`](crate::RedisStoreBuilder::lease_ttl)).
    pub fn ttl(&self) -> Duration {
        self.inner.ttl
    }

    /// Starts the subscription that wakes waiters, unless it is running.
    fn ensure_listener(&self) {
        let mut listener = self
            .inner
            .listener
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if listener.as_ref().is_some_and(|task| !task.is_finished()) {
            return;
        }
        let client = self.inner.client.clone();
        let channel = self.inner.keys.events();
        let events = self.inner.events.clone();
        let listening = Arc::clone(&self.inner.subscribed);
        let timeout = self.inner.operation_timeout;
        *listener = Some(tokio::spawn(async move {
            let subscribed = tokio::time::timeout(timeout, async {
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(&channel).await?;
                Ok::<_, redis::RedisError>(pubsub)
            })
            .await;
            let Ok(Ok(pubsub)) = subscribed else {
                // Waiters poll meanwhile; the next acquisition tries again.
                return;
            };
            listening.store(true, Ordering::SeqCst);
            let mut messages = pubsub.into_on_message();
            while let Some(message) = messages.next().await {
                // No receiver (nobody waiting) is not an error.
                let profile: String = message.get_payload().unwrap_or_default();
                let _ = events.send(profile.into());
            }
            listening.store(false, Ordering::SeqCst);
        }));
    }

    async fn try_take(&self, key: &str, owner: &str) -> Result<bool, StoreError> {
        let mut connection = self.inner.connection.clone();
        let taken: i64 = self
            .inner
            .take
            .key(key)
            .arg(owner)
            .arg(millis(self.inner.ttl))
            .invoke_async(&mut connection)
            .await
            .map_err(|error| {
                map_error(&self.inner.location, self.inner.operation_timeout, &error)
            })?;
        Ok(taken == 1)
    }
}

#[async_trait]
impl RefreshLease for RedisRefreshLease {
    /// Takes the lease, or waits for it up to `wait`. A Redis that cannot be reached is
    /// [`StoreError::Unavailable`] / [`StoreError::Timeout`] at once, not a wait: the caller
    /// then sends no refresh and keeps serving a still-valid token.
    async fn acquire(&self, profile: &str, wait: Duration) -> Result<LeaseGuard, StoreError> {
        validate_profile_name(profile)?;
        self.ensure_listener();
        let key = self.inner.keys.lease(profile);
        let owner = owner_id();
        let started = tokio::time::Instant::now();
        loop {
            // Subscribed before the attempt: a release right after it is not missed.
            let mut events = self.inner.events.subscribe();
            if self.try_take(&key, &owner).await? {
                return Ok(self.held(key, owner, profile));
            }
            let waited = started.elapsed();
            if waited >= wait {
                return Err(StoreError::LeaseTimeout {
                    profile: profile.to_owned(),
                    waited,
                });
            }
            self.ensure_listener();
            let until = started + wait;
            notified(&mut events, profile, until.min(self.next_poll())).await;
        }
    }

    /// One `SET NX`; when another process holds the lease, waits for the next notification
    /// about `profile` (its save, its release) or the polling period (250 ms; 20 ms while the
    /// subscription is not up yet), at most `wait`.
    async fn try_acquire_or_wait(
        &self,
        profile: &str,
        wait: Duration,
    ) -> Result<LeaseAttempt, StoreError> {
        validate_profile_name(profile)?;
        self.ensure_listener();
        let key = self.inner.keys.lease(profile);
        let owner = owner_id();
        let until = tokio::time::Instant::now() + wait;
        let mut events = self.inner.events.subscribe();
        if self.try_take(&key, &owner).await? {
            return Ok(LeaseAttempt::Acquired(self.held(key, owner, profile)));
        }
        notified(&mut events, profile, until.min(self.next_poll())).await;
        Ok(LeaseAttempt::HeldElsewhere)
    }
}

impl RedisRefreshLease {
    /// The guard of a lease just taken: renewed from now on, released with it.
    fn held(&self, key: String, owner: String, profile: &str) -> LeaseGuard {
        tracing::debug!(profile, "refresh lease taken");
        let held = HeldLease::start(Arc::clone(&self.inner), key, owner, profile.to_owned());
        let release = held.release_handle();
        let check = held.release_handle();
        LeaseGuard::with_release(held, move || release.run())
            .with_check(move || check.clone().still_held())
    }

    /// When a waiter that hears nothing looks again.
    fn next_poll(&self) -> tokio::time::Instant {
        let poll = if self.inner.subscribed.load(Ordering::SeqCst) {
            POLL
        } else {
            POLL_UNSUBSCRIBED
        };
        tokio::time::Instant::now() + poll
    }
}

/// Waits until `until` at most for a notification about `profile`. `true` when one came, or
/// when some were missed (this waiter fell behind): either way the store is worth a look.
/// Notifications about other profiles are skipped; the wait stays bounded by `until`.
async fn notified(
    events: &mut broadcast::Receiver<Arc<str>>,
    profile: &str,
    until: tokio::time::Instant,
) -> bool {
    loop {
        match tokio::time::timeout_at(until, events.recv()).await {
            Err(_) => return false,
            Ok(Ok(name)) if &*name == profile => return true,
            Ok(Ok(_)) => {}
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => return true,
            Ok(Err(broadcast::error::RecvError::Closed)) => {
                tokio::time::sleep_until(until).await;
                return false;
            }
        }
    }
}

/// A held lease: renews it while alive, releases it when dropped.
struct HeldLease {
    release: ReleaseHandle,
    renewal: JoinHandle<()>,
}

/// What releasing a lease takes; shared by the guard's explicit release and its `Drop`.
#[derive(Clone)]
struct ReleaseHandle {
    inner: Arc<LeaseInner>,
    key: Arc<str>,
    owner: Arc<str>,
    profile: Arc<str>,
    renewal: Arc<Mutex<Option<tokio::task::AbortHandle>>>,
    released: Arc<std::sync::atomic::AtomicBool>,
}

impl ReleaseHandle {
    /// Whether the lease is still ours: not released, still renewed (a renewal that found
    /// the lease gone, or that stopped after the longest hold, ended), and the key in Redis
    /// still holds our owner id with time left on it. One round trip.
    async fn still_held(self) -> Result<bool, StoreError> {
        if self.released.load(Ordering::SeqCst) {
            return Ok(false);
        }
        let renewing = self
            .renewal
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .as_ref()
            .is_some_and(|renewal| !renewal.is_finished());
        if !renewing {
            return Ok(false);
        }
        let inner = &self.inner;
        let mut connection = inner.connection.clone();
        let ttl: i64 = inner
            .check
            .key(&*self.key)
            .arg(&*self.owner)
            .invoke_async(&mut connection)
            .await
            .map_err(|error| map_error(&inner.location, inner.operation_timeout, &error))?;
        let held = ttl > 0 || ttl == -1;
        if !held {
            tracing::warn!("refresh lease lost (it lapsed or was taken over); nothing is sent");
        }
        Ok(held)
    }

    /// Stops the renewal and deletes the lease if it is still ours (once).
    async fn run(self) {
        if let Some(renewal) = self
            .renewal
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
        {
            renewal.abort();
        }
        if self
            .released
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        let inner = &self.inner;
        let mut connection = inner.connection.clone();
        let released: Result<i64, _> = inner
            .release
            .key(&*self.key)
            .key(inner.keys.events())
            .arg(&*self.owner)
            .arg(&*self.profile)
            .invoke_async(&mut connection)
            .await;
        if let Err(error) = released {
            let error = map_error(&inner.location, inner.operation_timeout, &error);
            tracing::warn!(%error, "refresh lease not released; it lapses after its TTL");
        }
    }
}

impl HeldLease {
    fn start(inner: Arc<LeaseInner>, key: String, owner: String, profile: String) -> Self {
        let renewal = {
            let inner = Arc::clone(&inner);
            let key = key.clone();
            let owner = owner.clone();
            tokio::spawn(async move {
                let period = inner.ttl / 3;
                let until = tokio::time::Instant::now() + inner.max_hold;
                loop {
                    tokio::time::sleep(period).await;
                    if tokio::time::Instant::now() >= until {
                        tracing::warn!(
                            "refresh lease held longer than its maximum; no longer renewed"
                        );
                        return;
                    }
                    let mut connection = inner.connection.clone();
                    let renewed: Result<i64, _> = inner
                        .extend
                        .key(&key)
                        .arg(&owner)
                        .arg(millis(inner.ttl))
                        .invoke_async(&mut connection)
                        .await;
                    match renewed {
                        Ok(1) => {}
                        Ok(_) => {
                            tracing::warn!("refresh lease lost (it expired before renewal)");
                            return;
                        }
                        Err(error) => {
                            let error = map_error(&inner.location, inner.operation_timeout, &error);
                            tracing::warn!(%error, "refresh lease not renewed");
                        }
                    }
                }
            })
        };
        Self {
            release: ReleaseHandle {
                inner,
                key: key.into(),
                owner: owner.into(),
                profile: profile.into(),
                renewal: Arc::new(Mutex::new(Some(renewal.abort_handle()))),
                released: Arc::default(),
            },
            renewal,
        }
    }

    fn release_handle(&self) -> ReleaseHandle {
        self.release.clone()
    }
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        self.renewal.abort();
        if self
            .release
            .released
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        // Dropped without `LeaseGuard::release`: release in the background if a runtime is
        // there to do it; otherwise the lease lapses after its TTL.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(self.release.clone().run());
        }
    }
}

/// A fresh owner id: the process id (for people reading Redis) and 128 random bits.
fn owner_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let random: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{random}", std::process::id())
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}
