//! The facade with its default sled store inside a tokio `LocalSet` on a multi-thread runtime
//! (how an application runs `!Send` futures under `#[tokio::main]`): before the hostile review
//! of issue 13, every store call made there (building the client, logging in, logging out)
//! panicked in the sled store's `block_in_place`. Real emulator over loopback, real sled.

use mailup_auth::Password;
use mailup_auth_emulator::{Emulator, DEFAULT_PASSWORD, DEFAULT_USERNAME};
use tokio::task::LocalSet;

mod support;

#[test]
fn a_client_on_a_sled_store_works_inside_a_local_set_on_a_multi_thread_runtime() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let store_for_check = store.clone();
    LocalSet::new().block_on(&runtime, async move {
        let emulator = Emulator::builder().start().await.unwrap();
        let client = support::emulator_builder(&emulator)
            .store_path(&store)
            .build()
            .await
            .unwrap();
        client
            .login_with_password(DEFAULT_USERNAME, &Password::new(DEFAULT_PASSWORD))
            .await
            .unwrap();
        // From a `spawn_local` task too.
        let local = client.clone();
        let info: serde_json::Value =
            tokio::task::spawn_local(async move { local.get("Console/Authentication/Info").await })
                .await
                .unwrap()
                .unwrap();
        assert!(info.is_object());
        client.refresh().await.unwrap();
        client.logout().await.unwrap();
    });
    // The sled store was the one in use.
    assert!(store_for_check.join("CURRENT").is_file());
}
