//! Keeping the session in step with the store: adopting what another instance saved.

use super::*;

impl MailUpClient {
    /// Adopts the stored record when its version differs from ours. Returns whether it did.
    pub(super) async fn sync_from_store(&self) -> Result<bool> {
        let loaded = self.inner.settings.store.load(&self.inner.profile).await?;
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
        }
        Ok(changed)
    }
}
