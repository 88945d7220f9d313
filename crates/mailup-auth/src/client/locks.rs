//! A client's two locks, named for what they protect, and the guard types that prove one is
//! held (as quinn names its locks for their purpose).
//!
//! | lock | kind | protects | guard | held across an `await` |
//! |---|---|---|---|---|
//! | `Inner::state` | `std::sync::Mutex<ProfileState>` | the session, the store version and record, unsaved tokens | [`StateGuard`] | never |
//! | `Inner::refresh_flight` | `tokio::sync::Mutex<()>` | the right to drive the session: one token operation per client at a time (single flight) | [`RefreshGuard`], owned by a [`Driver`](super::driver::Driver) | yes, for the whole operation |
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
use tokio::sync::OwnedMutexGuard;

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
/// runs until it is dropped. Owned (not borrowed), so it moves into the task that runs the
/// operation.
pub(super) struct RefreshGuard(OwnedMutexGuard<()>);

impl RefreshGuard {
    /// Whether this is `client`'s flight (and not another client's).
    pub(super) fn is_of(&self, client: &MailUpClient) -> bool {
        Arc::ptr_eq(
            OwnedMutexGuard::mutex(&self.0),
            &client.inner.refresh_flight,
        )
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
        RefreshGuard(self.inner.refresh_flight.clone().lock_owned().await)
    }
}
