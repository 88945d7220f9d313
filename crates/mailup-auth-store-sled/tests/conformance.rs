//! The TokenStore contract (`mailup-auth-store-conformance`), run against both the core's
//! `MemoryTokenStore` (the reference semantics) and `SledTokenStore`.

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
