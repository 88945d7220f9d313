//! Keeping the session in step with the store: adopting what another instance saved, and
//! telling a logout (a tombstone, or a record without tokens) from a store that lost the
//! record (emptied, or restarted without persistence).

use super::driver::Driver;
use super::*;

/// What one look at the store found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Synced {
    /// The stored record (or a logout) differed from ours and was adopted.
    Adopted,
    /// Nothing to adopt.
    Unchanged,
    /// The record we knew is gone without a trace of a logout ([`StoredProfile::Absent`]):
    /// the store lost it. What we hold is kept (the version too), for
    /// [`TokenStore::restore_lost`] to put back.
    Lost,
}

impl Driver {
    /// Adopts what another instance saved before a refresh. A store that cannot be reached
    /// right now is not an error here: the refresh then cannot take its lease either and is
    /// not sent, and a still-valid token keeps being served.
    pub(super) async fn sync_before_refresh(&self) -> Result<()> {
        match self.sync_from_store().await.map_err(Error::into_kind) {
            Ok(_) => Ok(()),
            Err(ErrorKind::Store(error)) if error.is_transient() => {
                tracing::warn!(%error, "token store unreachable; using the tokens in memory");
                Ok(())
            }
            Err(kind) => Err(kind.into()),
        }
    }

    /// Adopts the stored record when its version differs from ours. Returns whether it did.
    pub(super) async fn sync_from_store(&self) -> Result<bool> {
        Ok(self.sync_with_store().await? == Synced::Adopted)
    }

    /// [`sync_from_store`](Self::sync_from_store), also saying whether the store lost the
    /// record.
    pub(super) async fn sync_with_store(&self) -> Result<Synced> {
        let store = &self.inner.settings.store;
        let known = self.lock_state().version;
        let loaded = match known {
            // The usual case before a refresh: nothing changed, and a store that can tell
            // without decoding the record says so cheaply.
            Some(known) => match store
                .load_entry_if_changed(&self.inner.profile, known)
                .await?
            {
                Some(entry) => entry,
                None => return Ok(Synced::Unchanged),
            },
            None => store.load_entry(&self.inner.profile).await?,
        };
        let (loaded, lost) = match loaded {
            StoredProfile::Record(stored) => (Some(stored), false),
            StoredProfile::Absent => (None, true),
            // `Deleted`, and whatever a later version may add: no record, as a logout.
            _ => (None, false),
        };
        let changed =
            {
                let mut state = self.lock_state();
                match loaded {
                    // Our rotated tokens are not saved yet and the store only says the old ones
                    // are dead: keep ours (the next save overwrites the mark).
                    Some(stored)
                        if Some(stored.version) != state.version
                            && state.unsaved.is_some()
                            && stored.value.reauthorization_required.is_some() =>
                    {
                        state.version = Some(stored.version);
                        state.record.client = stored.value.client;
                        false
                    }
                    Some(stored) if Some(stored.version) != state.version => {
                        state.version = Some(stored.version);
                        match &stored.value.tokens {
                            Some(tokens) => state.session.restore_tokens(tokens.clone()),
                            None => state.session.logout(),
                        }
                        if let Some(reason) = &stored.value.reauthorization_required {
                            state.session.mark_reauthorization_required(
                                ReauthReason::RejectedEarlier(reason.clone()),
                            );
                        }
                        state.record = stored.value;
                        state.unsaved = None;
                        true
                    }
                    // Gone without a logout: the store was emptied. Not a reason to forget the
                    // session; the next save puts the record back.
                    None if lost && state.version.is_some() => {
                        drop(state);
                        tracing::warn!(
                            "the token store lost this profile's record (emptied, or restarted \
                         without persistence); keeping the tokens in memory"
                        );
                        return Ok(Synced::Lost);
                    }
                    None if state.version.is_some() => {
                        state.version = None;
                        state.record = ProfileRecord::default();
                        state.session.logout();
                        state.unsaved = None;
                        true
                    }
                    _ => false,
                }
            };
        if changed {
            self.clear_cache();
            let (tokens, version) = {
                let state = self.lock_state();
                (state.session.tokens().cloned(), state.version)
            };
            self.run_hooks(tokens.as_ref(), None, version);
            return Ok(Synced::Adopted);
        }
        Ok(Synced::Unchanged)
    }
}
