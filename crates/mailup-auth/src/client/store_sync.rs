//! Keeping the session in step with the store: adopting what another instance saved, and
//! telling a logout (a tombstone, or a record without tokens) from a store that lost the
//! record (emptied, or restarted without persistence).

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

impl MailUpClient {
    /// Adopts the stored record when its version differs from ours. Returns whether it did.
    pub(super) async fn sync_from_store(&self) -> Result<bool> {
        Ok(self.sync_with_store().await? == Synced::Adopted)
    }

    /// [`sync_from_store`](Self::sync_from_store), also saying whether the store lost the
    /// record.
    pub(super) async fn sync_with_store(&self) -> Result<Synced> {
        let loaded = self
            .inner
            .settings
            .store
            .load_entry(&self.inner.profile)
            .await?;
        let (loaded, lost) = match loaded {
            StoredProfile::Record(stored) => (Some(stored), false),
            StoredProfile::Absent => (None, true),
            // `Deleted`, and whatever a later version may add: no record, as a logout.
            _ => (None, false),
        };
        let changed = {
            let mut shared = self.shared();
            match loaded {
                // Our rotated tokens are not saved yet and the store only says the old ones
                // are dead: keep ours (the next save overwrites the mark).
                Some(stored)
                    if Some(stored.version) != shared.version
                        && shared.unsaved.is_some()
                        && stored.value.reauthorization_required.is_some() =>
                {
                    shared.version = Some(stored.version);
                    shared.record.client = stored.value.client;
                    false
                }
                Some(stored) if Some(stored.version) != shared.version => {
                    shared.version = Some(stored.version);
                    match &stored.value.tokens {
                        Some(tokens) => shared.session.restore_tokens(tokens.clone()),
                        None => shared.session.logout(),
                    }
                    if let Some(reason) = &stored.value.reauthorization_required {
                        shared.session.mark_reauthorization_required(
                            ReauthReason::RejectedEarlier(reason.clone()),
                        );
                    }
                    shared.record = stored.value;
                    shared.unsaved = None;
                    true
                }
                // Gone without a logout: the store was emptied. Not a reason to forget the
                // session; the next save puts the record back.
                None if lost && shared.version.is_some() => {
                    drop(shared);
                    tracing::warn!(
                        "the token store lost this profile's record (emptied, or restarted \
                         without persistence); keeping the tokens in memory"
                    );
                    return Ok(Synced::Lost);
                }
                None if shared.version.is_some() => {
                    shared.version = None;
                    shared.record = ProfileRecord::default();
                    shared.session.logout();
                    shared.unsaved = None;
                    true
                }
                _ => false,
            }
        };
        if changed {
            self.clear_cache();
            let tokens = self.shared().session.tokens().cloned();
            let version = self.shared().version;
            self.run_hooks(tokens.as_ref(), None, version);
            return Ok(Synced::Adopted);
        }
        Ok(Synced::Unchanged)
    }
}
