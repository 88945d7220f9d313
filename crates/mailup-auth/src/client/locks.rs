//! A client's two locks, named for what they protect, and the guard types that prove one is
//! held (as quinn names its locks for their purpose).
//!
//! | lock | kind | protects | guard | held across an `await` |
//! |---|---|---|---|---|
//! | `Inner::state` | `std::sync::Mutex<ProfileState>` | the session, the store version and record, unsaved tokens | [`StateGuard`] | never |
//! | `Inner::refresh_flight` | `tokio::sync::Mutex<()>` | the right to drive the session: one token operation per client at a time (single flight) | [`RefreshGuard`], owned by a [`Driver`](super::driver::Driver) | yes, for the whole operation |
//!
//! Each release of the flight is announced on `Inner::flight_ended` (a `tokio::sync::Notify`,
//! all waiters at once). A caller of `access_token` that finds the flight taken waits for that
//! announcement rather than queueing on the lock: after a refresh, the waiters of a storm all
//! wake together and read the published token from the cache, instead of taking the lock one
//! after another only to find the work done (see
//! [`wait_for_flight`](MailUpClient::wait_for_flight)).
//!
//! Order: the flight first, then the state, never the other way round (the state lock is only
//! taken for a few assignments and never waits for anything).
//!
//! A function that needs the state held takes `&StateGuard`; a function that needs the flight
//! is a method of [`Driver`](super::driver::Driver), which exists only while its
//! [`RefreshGuard`] is held. Neither can be called without its lock.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, MutexGuard};

use mailup_auth_core::{Grant, ProfileRecord, Session};
use tokio::sync::{Notify, OwnedMutexGuard};

use super::MailUpClient;

/// What the state lock protects: the profile's session and what the store holds of it.
#[derive(Debug)]
pub(super) struct ProfileState {
    pub(super) session: Session,
    /// The store version our record was last read or written at (`None`: nothing stored).
    pub(super) version: Option<u64>,
    pub(super) record: ProfileRecord,
    /// Tokens obtained but not yet saved (a save failed): saved before anything is handed out.
    pub(super) unsaved: Option<Grant>,
}

/// Proof that the state lock is held; dereferences to the [`ProfileState`]. Never kept across
/// an `await`.
pub(super) struct StateGuard<'a>(MutexGuard<'a, ProfileState>);

impl Deref for StateGuard<'_> {
    type Target = ProfileState;

    fn deref(&self) -> &ProfileState {
        &self.0
    }
}

impl DerefMut for StateGuard<'_> {
    fn deref_mut(&mut self) -> &mut ProfileState {
        &mut self.0
    }
}

/// Proof that this client's refresh flight is held: no other token operation of the client
/// runs until it is dropped. Owned (not borrowed), so it moves into the task that finishes the
/// operation when its caller gives up. Dropping it releases the flight, then announces the
/// release to every caller waiting in [`wait_for_flight`](MailUpClient::wait_for_flight).
pub(super) struct RefreshGuard {
    /// `None` only inside `drop`, once the flight is released.
    held: Option<OwnedMutexGuard<()>>,
    ended: Arc<Notify>,
}

impl RefreshGuard {
    fn new(held: OwnedMutexGuard<()>, client: &MailUpClient) -> Self {
        Self {
            held: Some(held),
            ended: client.inner.flight_ended.clone(),
        }
    }

    /// Whether this is `client`'s flight (and not another client's).
    pub(super) fn is_of(&self, client: &MailUpClient) -> bool {
        self.held.as_ref().is_some_and(|held| {
            Arc::ptr_eq(OwnedMutexGuard::mutex(held), &client.inner.refresh_flight)
        })
    }
}

impl Drop for RefreshGuard {
    fn drop(&mut self) {
        // Released first: a waiter woken by the announcement may take the flight at once.
        drop(self.held.take());
        self.ended.notify_waiters();
    }
}

impl MailUpClient {
    /// Takes the state lock. Every critical section is a few plain assignments on the session;
    /// a panic inside one cannot leave it half-updated, so a poisoned lock is still consistent.
    pub(super) fn lock_state(&self) -> StateGuard<'_> {
        StateGuard(
            self.inner
                .state
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    /// Waits for this client's refresh flight (callers queue here in arrival order).
    pub(super) async fn lock_refresh_flight(&self) -> RefreshGuard {
        let held = self.inner.refresh_flight.clone().lock_owned().await;
        RefreshGuard::new(held, self)
    }

    /// For a caller that needs the flight only if nobody else brings what it wants: the flight
    /// at once when it is free (`Some`), otherwise `None` once the operation that held it has
    /// ended (or whichever ended first, when several follow one another). The caller then
    /// looks at what that operation published before it queues on the flight.
    ///
    /// The storm's waiters end here: woken all at once by the release, each reads the cache
    /// without a lock, where queueing on the flight would hand it from one waiter to the next
    /// ten thousand times. Single flight is kept: whoever finds nothing published queues on
    /// the flight as before and re-checks the cache once it holds it.
    pub(super) async fn wait_for_flight(&self) -> Option<RefreshGuard> {
        // Registered before the flight is tried: a release between the try and the wait is
        // still seen (`notify_waiters` wakes every `Notified` created before it).
        let ended = self.inner.flight_ended.notified();
        match self.inner.refresh_flight.clone().try_lock_owned() {
            Ok(held) => Some(RefreshGuard::new(held, self)),
            Err(_) => {
                ended.await;
                None
            }
        }
    }
}
