//! The TokenStore contract (`mailup-auth-store-conformance`), run against both the core's
//! `MemoryTokenStore` (the reference semantics) and `SledTokenStore`, with its saves on the
//! blocking pool (the default) and on the calling thread.

use std::sync::Arc;

use mailup_auth_core::{MemoryTokenStore, TokenStore};
use mailup_auth_store_sled::SledTokenStore;

mailup_auth_store_conformance::token_store_conformance!(memory, |_path| async {
    Some((Arc::new(MemoryTokenStore::new()) as Arc<dyn TokenStore>, ()))
});

mailup_auth_store_conformance::token_store_conformance!(sled, |path| async move {
    let store: Arc<dyn TokenStore> = Arc::new(SledTokenStore::open(path).unwrap());
    Some((store, ()))
});

// Saves on the calling thread (`WriteThread::CallingThread`): the same contract.
mailup_auth_store_conformance::token_store_conformance!(sled_writes_in_place, |path| async move {
    let store: Arc<dyn TokenStore> = Arc::new(
        SledTokenStore::open(path)
            .unwrap()
            .with_write_thread(mailup_auth_store_sled::WriteThread::CallingThread),
    );
    Some((store, ()))
});
