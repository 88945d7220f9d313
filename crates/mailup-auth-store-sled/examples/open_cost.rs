//! What an open costs, and how much of it is the log check and the byte copy taken before
//! sled sees its files (docs/reliability.md, section 4): a store with three profiles, each
//! refreshed 50 times, opened 50 times with `SledTokenStore::open`, then 50 times with sled
//! alone on the same generation. Run with `cargo run --example open_cost [--release]`.

use std::time::{Duration, Instant};

use mailup_auth_core::TokenSet;
use mailup_auth_core::UnixTime;
use mailup_auth_core::{AccessToken, RefreshToken};
use mailup_auth_core::{ProfileRecord, StoredClient, TokenStore};
use mailup_auth_store_sled::SledTokenStore;

const ROUNDS: u32 = 50;

fn record(profile: &str, n: u32) -> ProfileRecord {
    ProfileRecord {
        tokens: Some(TokenSet {
            access_token: AccessToken::new(format!("access-{profile}-{n}-{}", "a".repeat(400))),
            refresh_token: Some(RefreshToken::new(format!("refresh-{profile}-{n}"))),
            expires_at: UnixTime::from_secs(1_700_003_600),
            obtained_at: UnixTime::from_secs(1_700_000_000),
            token_type: Some("bearer".into()),
            scope: None,
        }),
        client: Some(StoredClient {
            client_id: format!("client-{profile}"),
            ..StoredClient::default()
        }),
        ..ProfileRecord::default()
    }
}

fn reopen(path: &std::path::Path) -> SledTokenStore {
    let started = Instant::now();
    loop {
        match SledTokenStore::open(path) {
            Ok(store) => return store,
            Err(error) if started.elapsed() > Duration::from_secs(10) => panic!("{error}"),
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

fn main() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("store");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let store = reopen(&path);
    runtime.block_on(async {
        for n in 0..ROUNDS {
            for profile in ["alpha", "beta", "gamma"] {
                let expected = store.load(profile).await.expect("load").map(|v| v.version);
                store
                    .save(profile, &record(profile, n), expected)
                    .await
                    .expect("save");
            }
        }
    });
    drop(store);
    let current = std::fs::read_to_string(path.join("CURRENT")).expect("a pointer");
    let generation = path.join(current.trim());
    let size: u64 = std::fs::read_dir(&generation)
        .expect("the generation")
        .filter_map(|entry| entry.ok()?.metadata().ok())
        .filter(std::fs::Metadata::is_file)
        .map(|meta| meta.len())
        .sum();

    let mut store_total = Duration::ZERO;
    for _ in 0..ROUNDS {
        let started = Instant::now();
        let store = reopen(&path);
        store_total += started.elapsed();
        drop(store);
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut sled_total = Duration::ZERO;
    for _ in 0..ROUNDS {
        let started = Instant::now();
        let db = loop {
            match sled::Config::new().path(&generation).open() {
                Ok(db) => break db,
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        };
        sled_total += started.elapsed();
        drop(db);
        std::thread::sleep(Duration::from_millis(20));
    }
    let per = |total: Duration| total / ROUNDS;
    println!("sled's files: {size} bytes");
    println!("SledTokenStore::open: {:?} per open", per(store_total));
    println!("sled alone:           {:?} per open", per(sled_total));
}
