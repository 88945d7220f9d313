//! The [`TokenStore`] contract of `mailup-auth`, as scenarios any store implementation runs
//! in its own tests: the core's `MemoryTokenStore` (the reference semantics), the sled store,
//! the Redis store, and yours.
//!
//! ## What this crate is for, and what it is not for
//!
//! It checks the semantics the facade relies on: versions that count saves and never restart
//! (tombstones), a logout told from a record the store lost (`load_entry`, `restore_lost`),
//! an entry loaded only when it changed since a known version (`load_entry_if_changed`),
//! compare-and-swap that refuses a stale writer, independent and sorted profiles,
//! profile-name validation, one-time keys consumed once even by concurrent callers, and a
//! version sequence without gaps or duplicates under 50 concurrent writers. It does not test
//! durability across a crash or a restart (that depends on the engine: the sled store has its
//! own `kill -9` tests), nor the refresh lease.
//!
//! ## Running it against a store
//!
//! [`token_store_conformance!`] writes one `#[test]` per scenario. Its second argument makes
//! a fresh, empty store for each: it gets a path inside a new temporary directory (use it or
//! not) and returns `Some((store, guard))`, where `guard` is anything that must live as long
//! as the store (a server process, a directory), or `None` to skip the scenario (say why on
//! stderr: a server that is not installed, say).
//!
//! ```
//! use std::sync::Arc;
//! use mailup_auth_core::{MemoryTokenStore, TokenStore};
//!
//! mailup_auth_store_conformance::token_store_conformance!(memory, |_path| async {
//!     Some((Arc::new(MemoryTokenStore::new()) as Arc<dyn TokenStore>, ()))
//! });
//! # fn main() {}
//! ```
//!
//! [`run`] runs one scenario by name, for harnesses that are not `#[test]`s; [`SCENARIOS`]
//! lists them.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
// Public types stay open to new variants and fields unless one is exhaustive on purpose (each
// such item says why at its `allow`).
#![warn(clippy::exhaustive_enums, clippy::exhaustive_structs)]

use std::collections::BTreeSet;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use mailup_auth_core::TokenSet;
use mailup_auth_core::UnixTime;
use mailup_auth_core::{AccessToken, ClientSecret, RefreshToken};
use mailup_auth_core::{
    ProfileRecord, StoreError, StoredClient, StoredProfile, TokenStore, Versioned,
};

/// Token set number `n`: distinct tokens and times per `n`.
pub fn tokens(n: u64) -> TokenSet {
    TokenSet {
        access_token: AccessToken::new(format!("at-{n}")),
        refresh_token: Some(RefreshToken::new(format!("rt-{n}"))),
        expires_at: UnixTime::from_millis(1_700_003_600_123 + n),
        obtained_at: UnixTime::from_millis(1_700_000_000_456 + n),
        token_type: None,
        scope: None,
    }
}

/// A record with every field set, including non-ASCII and JSON-hostile characters.
pub fn full_record() -> ProfileRecord {
    ProfileRecord {
        tokens: Some(TokenSet {
            access_token: AccessToken::new("at-\"quoted\"\\slash\u{e9}"),
            refresh_token: Some(RefreshToken::new("rt-\n-newline")),
            expires_at: UnixTime::from_millis(u64::MAX / 2),
            obtained_at: UnixTime::from_millis(1),
            token_type: Some("bearer".into()),
            scope: Some("console statistics".into()),
        }),
        client: Some(StoredClient {
            client_id: "client-1".into(),
            client_secret: Some(ClientSecret::new("cs-\u{1f511}")),
            logon_url: Some("https://services.mailup.com/Authorization/OAuth/LogOn".into()),
            token_url: Some("https://services.mailup.com/Authorization/OAuth/Token".into()),
            api_base: Some("https://services.mailup.com/API/v1.1/Rest/ConsoleService.svc".into()),
            redirect_uri: Some("http://127.0.0.1:8765/callback?x=1&y=2".into()),
        }),
        last_refreshed_at: Some(UnixTime::from_secs(1_700_000_100)),
        reauthorization_required: Some("the refresh token was rejected".into()),
    }
}

/// Every field of a record (non-ASCII, JSON-hostile characters, the empty record, a client
/// without a secret) comes back as saved, with versions 1, 2, 3.
pub async fn round_trip_of_every_field(store: &dyn TokenStore) {
    let record = full_record();
    let version = store.save("main", &record, None).await.unwrap();
    assert_eq!(version, 1);
    let loaded = store.load("main").await.unwrap().unwrap();
    assert_eq!(loaded.version, 1);
    assert_eq!(loaded.value, record);

    // The empty record (a logged-out profile that remembers nothing) round-trips too.
    let empty = ProfileRecord::default();
    assert_eq!(store.save("main", &empty, Some(1)).await.unwrap(), 2);
    let loaded = store.load("main").await.unwrap().unwrap();
    assert_eq!((loaded.version, loaded.value), (2, empty));

    // A client without a secret or endpoints.
    let minimal = ProfileRecord {
        client: Some(StoredClient {
            client_id: "id".into(),
            ..StoredClient::default()
        }),
        ..ProfileRecord::with_tokens(tokens(0))
    };
    assert_eq!(store.save("main", &minimal, Some(2)).await.unwrap(), 3);
    assert_eq!(store.load("main").await.unwrap().unwrap().value, minimal);
}

/// A profile never saved loads as `None`, deletes without error and is not listed.
pub async fn missing_profile_loads_as_none(store: &dyn TokenStore) {
    assert_eq!(store.load("nobody").await.unwrap(), None);
    store.delete("nobody").await.unwrap();
    assert_eq!(store.profiles().await.unwrap(), Vec::<String>::new());
}

/// Versions start at 1 and grow by one per save.
pub async fn versions_count_saves(store: &dyn TokenStore) {
    let mut expected = None;
    for n in 1..=5u64 {
        let version = store
            .save("p", &ProfileRecord::with_tokens(tokens(n)), expected)
            .await
            .unwrap();
        assert_eq!(version, n);
        expected = Some(version);
    }
    let loaded = store.load("p").await.unwrap().unwrap();
    assert_eq!(loaded.version, 5);
    assert_eq!(loaded.value, ProfileRecord::with_tokens(tokens(5)));
}

/// A save that expects the wrong version (or a record where there is none, or none where
/// there is one) is a `Conflict` naming both versions, and changes nothing.
pub async fn compare_and_swap_conflicts(store: &dyn TokenStore) {
    let first = ProfileRecord::with_tokens(tokens(1));
    store.save("p", &first, None).await.unwrap();

    // Creating again when a record exists.
    assert_eq!(
        store.save("p", &first, None).await,
        Err(StoreError::Conflict {
            profile: "p".into(),
            expected: None,
            found: Some(1),
        })
    );
    // Expecting a version that is not the stored one.
    assert_eq!(
        store.save("p", &first, Some(7)).await,
        Err(StoreError::Conflict {
            profile: "p".into(),
            expected: Some(7),
            found: Some(1),
        })
    );
    // Expecting a record where there is none.
    assert_eq!(
        store.save("q", &first, Some(1)).await,
        Err(StoreError::Conflict {
            profile: "q".into(),
            expected: Some(1),
            found: None,
        })
    );
    // Failed saves changed nothing.
    let loaded = store.load("p").await.unwrap().unwrap();
    assert_eq!((loaded.version, loaded.value), (1, first));
    assert_eq!(store.load("q").await.unwrap(), None);
}

/// Two refreshers load the same version; the one that saves second holds the old refresh
/// token and must not overwrite the rotated one.
pub async fn stale_refresh_token_never_overwrites_newer(store: &dyn TokenStore) {
    store
        .save("p", &ProfileRecord::with_tokens(tokens(1)), None)
        .await
        .unwrap();
    let a = store.load("p").await.unwrap().unwrap();
    let b = store.load("p").await.unwrap().unwrap();
    let rotated = ProfileRecord::with_tokens(tokens(2));
    assert_eq!(store.save("p", &rotated, Some(a.version)).await.unwrap(), 2);
    let stale = ProfileRecord::with_tokens(tokens(3));
    assert!(matches!(
        store.save("p", &stale, Some(b.version)).await,
        Err(StoreError::Conflict {
            expected: Some(1),
            found: Some(2),
            ..
        })
    ));
    assert_eq!(store.load("p").await.unwrap().unwrap().value, rotated);
}

/// Profiles are independent records, listed sorted; a deleted one is not listed.
pub async fn profiles_are_independent_and_sorted(store: &dyn TokenStore) {
    for (n, name) in ["zeta", "alpha", "m\u{fc}ller", "Beta", "with space"]
        .iter()
        .enumerate()
    {
        store
            .save(name, &ProfileRecord::with_tokens(tokens(n as u64)), None)
            .await
            .unwrap();
    }
    assert_eq!(
        store.profiles().await.unwrap(),
        ["Beta", "alpha", "m\u{fc}ller", "with space", "zeta"]
    );
    assert_eq!(
        store.load("alpha").await.unwrap().unwrap().value,
        ProfileRecord::with_tokens(tokens(1))
    );
    store
        .save("alpha", &ProfileRecord::default(), Some(1))
        .await
        .unwrap();
    assert_eq!(
        store.load("zeta").await.unwrap().unwrap().value,
        ProfileRecord::with_tokens(tokens(0))
    );

    store.delete("alpha").await.unwrap();
    assert_eq!(store.load("alpha").await.unwrap(), None);
    assert_eq!(
        store.profiles().await.unwrap(),
        ["Beta", "m\u{fc}ller", "with space", "zeta"]
    );
    assert_eq!(store.load("zeta").await.unwrap().unwrap().version, 1);
}

/// After a delete only a save that expects no record succeeds, and versions do not restart.
pub async fn save_after_delete_starts_from_no_record(store: &dyn TokenStore) {
    store
        .save("p", &ProfileRecord::with_tokens(tokens(1)), None)
        .await
        .unwrap();
    store.delete("p").await.unwrap();
    store.delete("p").await.unwrap();
    // After a delete, the only save that succeeds is one that expects no record.
    assert!(matches!(
        store.save("p", &ProfileRecord::default(), Some(1)).await,
        Err(StoreError::Conflict { found: None, .. })
    ));
    let version = store
        .save("p", &ProfileRecord::with_tokens(tokens(2)), None)
        .await
        .unwrap();
    assert!(version >= 1);
    let loaded = store.load("p").await.unwrap().unwrap();
    assert_eq!(loaded.version, version);
    assert_eq!(loaded.value, ProfileRecord::with_tokens(tokens(2)));
}

/// `load_entry` tells a logout (a tombstone: `Deleted`) from no trace at all (`Absent`:
/// never saved, or lost by the store, as when a Redis is emptied), and `restore_lost` writes
/// only over no trace: at the lost version + 1, never over a tombstone or a live record.
/// (A store emptied from outside looks like a profile never saved: the Redis store's own tests
/// empty a real server to show it.)
pub async fn a_lost_record_is_told_from_a_logout_and_restored_only_when_lost(
    store: &dyn TokenStore,
) {
    assert_eq!(
        store.load_entry("never").await.unwrap(),
        StoredProfile::Absent
    );

    // A logout leaves a tombstone: no restore over it, the logout stands.
    store
        .save("out", &ProfileRecord::with_tokens(tokens(1)), None)
        .await
        .unwrap();
    assert!(matches!(
        store.load_entry("out").await.unwrap(),
        StoredProfile::Record(Versioned { version: 1, .. })
    ));
    store.delete("out").await.unwrap();
    assert_eq!(
        store.load_entry("out").await.unwrap(),
        StoredProfile::Deleted
    );
    assert_eq!(
        store
            .restore_lost("out", &ProfileRecord::with_tokens(tokens(2)), 1)
            .await,
        Err(StoreError::Conflict {
            profile: "out".into(),
            expected: None,
            found: None,
        })
    );
    assert_eq!(store.load("out").await.unwrap(), None);

    // Over a live record: a conflict naming its version, nothing written.
    let version = store
        .save("out", &ProfileRecord::with_tokens(tokens(3)), None)
        .await
        .unwrap();
    assert_eq!(
        store
            .restore_lost("out", &ProfileRecord::with_tokens(tokens(4)), 1)
            .await,
        Err(StoreError::Conflict {
            profile: "out".into(),
            expected: None,
            found: Some(version),
        })
    );
    assert_eq!(
        store.load("out").await.unwrap().unwrap().value,
        ProfileRecord::with_tokens(tokens(3))
    );

    // No trace: restored after the version its writer last saw, listed, and saved over as
    // usual from there.
    let restored = ProfileRecord::with_tokens(tokens(5));
    assert_eq!(store.restore_lost("gone", &restored, 7).await.unwrap(), 8);
    let loaded = store.load("gone").await.unwrap().unwrap();
    assert_eq!((loaded.version, loaded.value), (8, restored));
    assert_eq!(store.profiles().await.unwrap(), ["gone", "out"]);
    assert_eq!(
        store
            .save("gone", &ProfileRecord::with_tokens(tokens(6)), Some(8))
            .await
            .unwrap(),
        9
    );
    // Restoring twice (a second process that also saw the loss) finds the first restore.
    assert!(matches!(
        store
            .restore_lost("gone", &ProfileRecord::with_tokens(tokens(7)), 7)
            .await,
        Err(StoreError::Conflict {
            expected: None,
            found: Some(9),
            ..
        })
    ));
    assert!(matches!(
        store.load_entry("bad\nname").await,
        Err(StoreError::InvalidProfile(_))
    ));
}

/// `load_entry_if_changed` answers nothing for a live record still at the version the caller
/// knows, and what `load_entry` answers for anything else: a newer record, a tombstone, no
/// trace, a version the caller never saw.
pub async fn an_entry_is_loaded_only_when_it_changed(store: &dyn TokenStore) {
    let first = store
        .save("p", &ProfileRecord::with_tokens(tokens(1)), None)
        .await
        .unwrap();
    assert_eq!(store.load_entry_if_changed("p", first).await.unwrap(), None);
    assert_eq!(
        store.load_entry_if_changed("p", first + 1).await.unwrap(),
        Some(store.load_entry("p").await.unwrap())
    );

    // Another writer saved: the new record, in full.
    let second = store
        .save("p", &ProfileRecord::with_tokens(tokens(2)), Some(first))
        .await
        .unwrap();
    assert_eq!(
        store.load_entry_if_changed("p", first).await.unwrap(),
        Some(StoredProfile::Record(Versioned {
            version: second,
            value: ProfileRecord::with_tokens(tokens(2)),
        }))
    );
    assert_eq!(
        store.load_entry_if_changed("p", second).await.unwrap(),
        None
    );

    // A logout, and a profile never saved: told apart as `load_entry` tells them.
    store.delete("p").await.unwrap();
    assert_eq!(
        store.load_entry_if_changed("p", second).await.unwrap(),
        Some(store.load_entry("p").await.unwrap())
    );
    assert_eq!(
        store.load_entry_if_changed("never", 1).await.unwrap(),
        Some(StoredProfile::Absent)
    );
    assert!(matches!(
        store.load_entry_if_changed("bad\nname", 1).await,
        Err(StoreError::InvalidProfile(_))
    ));
}

/// Empty, control-character and over-long (129 bytes) names are `InvalidProfile`; 128 bytes
/// is fine.
pub async fn invalid_profile_names_are_rejected(store: &dyn TokenStore) {
    let long = "x".repeat(129);
    for name in ["", "tab\there", "new\nline", long.as_str()] {
        assert!(
            matches!(store.load(name).await, Err(StoreError::InvalidProfile(_))),
            "{name:?}"
        );
        assert!(matches!(
            store.save(name, &ProfileRecord::default(), None).await,
            Err(StoreError::InvalidProfile(_))
        ));
        assert!(matches!(
            store.delete(name).await,
            Err(StoreError::InvalidProfile(_))
        ));
    }
    assert_eq!(store.profiles().await.unwrap(), Vec::<String>::new());
    // The longest valid name works.
    let longest = "y".repeat(128);
    assert_eq!(
        store
            .save(&longest, &ProfileRecord::default(), None)
            .await
            .unwrap(),
        1
    );
}

const TASKS: u64 = 50;
const SAVES_PER_TASK: u64 = 20;

/// Many tasks each do load → save(expected) with retry on conflict. Every successful save
/// must get a distinct version and the versions must be exactly 1..=total.
pub async fn concurrent_saves_keep_the_version_sequence(store: Arc<dyn TokenStore>) {
    let mut handles = Vec::new();
    for task in 0..TASKS {
        let store = Arc::clone(&store);
        handles.push(tokio::spawn(async move {
            let mut won = Vec::new();
            let mut conflicts = 0u64;
            while (won.len() as u64) < SAVES_PER_TASK {
                let current = store.load("shared").await.unwrap();
                let expected = current.as_ref().map(|c| c.version);
                let record = ProfileRecord::with_tokens(tokens(task * 1000 + won.len() as u64));
                match store.save("shared", &record, expected).await {
                    Ok(version) => {
                        assert_eq!(Some(version), Some(expected.unwrap_or(0) + 1));
                        won.push(version);
                    }
                    Err(StoreError::Conflict { found, .. }) => {
                        assert_ne!(found, expected);
                        conflicts += 1;
                        // Bounded: each conflict means another task's save succeeded.
                        assert!(conflicts <= TASKS * SAVES_PER_TASK);
                    }
                    Err(other) => panic!("unexpected error: {other}"),
                }
                tokio::task::yield_now().await;
            }
            won
        }));
    }
    let mut all = BTreeSet::new();
    for handle in handles {
        for version in handle.await.unwrap() {
            assert!(all.insert(version), "version {version} handed out twice");
        }
    }
    let total = TASKS * SAVES_PER_TASK;
    assert_eq!(all, (1..=total).collect::<BTreeSet<_>>());
    assert_eq!(store.load("shared").await.unwrap().unwrap().version, total);
}

/// A one-time key is consumed once until it expires (by the caller's clock); markers are
/// not profiles.
pub async fn a_one_time_key_is_consumed_once(store: &dyn TokenStore) {
    let t = UnixTime::from_secs;
    assert!(store.consume_once("state-a", t(1000), t(0)).await.unwrap());
    assert!(!store.consume_once("state-a", t(1000), t(10)).await.unwrap());
    assert!(store.consume_once("state-b", t(1000), t(10)).await.unwrap());
    // Markers are not profiles.
    assert!(store.profiles().await.unwrap().is_empty());
    assert_eq!(store.load("state-a").await.unwrap(), None);
    // Expired markers may go: a key past its expiry is accepted again (its authorization's
    // own expiry refuses it by then).
    assert!(store
        .consume_once("state-a", t(5000), t(1001))
        .await
        .unwrap());
}

/// Sixteen concurrent consumers of one key: exactly one wins.
pub async fn concurrent_consumers_of_one_key_have_one_winner(store: Arc<dyn TokenStore>) {
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .consume_once(
                        "the-state",
                        UnixTime::from_secs(1000),
                        UnixTime::from_secs(1),
                    )
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut winners = 0;
    for task in tasks {
        winners += usize::from(task.await.unwrap());
    }
    assert_eq!(winners, 1);
}

/// A scenario: gets a fresh, empty store and panics when the store breaks the contract.
pub type Scenario = fn(Arc<dyn TokenStore>) -> Pin<Box<dyn Future<Output = ()> + Send>>;

macro_rules! by_ref {
    ($name:ident) => {
        (stringify!($name), |store| {
            Box::pin(async move { $name(&*store).await })
        })
    };
}

macro_rules! by_arc {
    ($name:ident) => {
        (stringify!($name), |store| Box::pin($name(store)))
    };
}

/// Every scenario, by name.
pub const SCENARIOS: &[(&str, Scenario)] = &[
    by_ref!(round_trip_of_every_field),
    by_ref!(missing_profile_loads_as_none),
    by_ref!(versions_count_saves),
    by_ref!(compare_and_swap_conflicts),
    by_ref!(stale_refresh_token_never_overwrites_newer),
    by_ref!(profiles_are_independent_and_sorted),
    by_ref!(save_after_delete_starts_from_no_record),
    by_ref!(a_lost_record_is_told_from_a_logout_and_restored_only_when_lost),
    by_ref!(an_entry_is_loaded_only_when_it_changed),
    by_ref!(invalid_profile_names_are_rejected),
    by_ref!(a_one_time_key_is_consumed_once),
    by_arc!(concurrent_consumers_of_one_key_have_one_winner),
    by_arc!(concurrent_saves_keep_the_version_sequence),
];

/// Runs the scenario `name` on a store from `make` (see the crate docs), on a multi-threaded
/// runtime of its own. Returns `false` when `make` gave `None` (skipped).
///
/// # Panics
/// When the store breaks the contract, or there is no scenario `name`.
pub fn run<M, F, G>(name: &str, make: M) -> bool
where
    M: FnOnce(PathBuf) -> F,
    F: Future<Output = Option<(Arc<dyn TokenStore>, G)>>,
{
    let scenario = SCENARIOS
        .iter()
        .find(|(known, _)| *known == name)
        .unwrap_or_else(|| panic!("no store scenario named {name}"))
        .1;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let dir = tempfile::tempdir().expect("a temporary directory");
    runtime.block_on(async {
        let Some((store, guard)) = make(dir.path().join("store")).await else {
            return false;
        };
        scenario(store).await;
        drop(guard);
        true
    })
}

/// Writes one `#[test]` per scenario in a module `$module`, each on a fresh store from
/// `$make` (see the crate docs).
#[macro_export]
macro_rules! token_store_conformance {
    ($module:ident, $make:expr) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;

            $crate::token_store_conformance!(@tests $make;
                round_trip_of_every_field,
                missing_profile_loads_as_none,
                versions_count_saves,
                compare_and_swap_conflicts,
                stale_refresh_token_never_overwrites_newer,
                profiles_are_independent_and_sorted,
                save_after_delete_starts_from_no_record,
                a_lost_record_is_told_from_a_logout_and_restored_only_when_lost,
                an_entry_is_loaded_only_when_it_changed,
                invalid_profile_names_are_rejected,
                a_one_time_key_is_consumed_once,
                concurrent_consumers_of_one_key_have_one_winner,
                concurrent_saves_keep_the_version_sequence,
            );
        }
    };
    (@tests $make:expr; $($name:ident,)*) => {
        $(
            #[test]
            fn $name() {
                $crate::run(stringify!($name), $make);
            }
        )*
    };
}
