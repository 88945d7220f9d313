//! The stable fuzz loop: every target replays its committed corpus (`fuzz/corpus/<target>/`)
//! and then runs a bounded, seeded random-mutation loop, on the stable toolchain, in every
//! `cargo test`. `MAILUP_FUZZ_COUNT` sets the mutants per target (default 50,000) and
//! `MAILUP_FUZZ_SEED` the seed (default fixed, so a failure reproduces); `cargo xtask fuzz`
//! sets both.

use mailup_auth_core::{ProfileRecord, TokenStore as _};
use mailup_auth_fuzz_bodies::{committed_corpus, corpus_root, run_stable, seeds, target, TARGETS};
use mailup_auth_store_sled::SledTokenStore;

const DEFAULT_COUNT: u64 = 50_000;
const DEFAULT_SEED: u64 = 0x6d61_696c_7570;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn fuzz(name: &str) {
    let target = target(name).expect("a known target");
    let corpus: Vec<Vec<u8>> = committed_corpus(name)
        .unwrap_or_else(|e| panic!("fuzz/corpus/{name} is missing: {e}"))
        .into_iter()
        .map(|(_, bytes)| bytes)
        .collect();
    assert!(!corpus.is_empty(), "fuzz/corpus/{name} is empty");
    let count = env_u64("MAILUP_FUZZ_COUNT", DEFAULT_COUNT);
    let seed = env_u64("MAILUP_FUZZ_SEED", DEFAULT_SEED);
    let run = run_stable(target, &corpus, count, seed);
    // Read by `cargo xtask fuzz` and quoted in docs/reliability.md.
    println!(
        "fuzz {name}: {} executions ({} corpus files, {count} mutants, seed {seed})",
        run.executions, run.corpus
    );
}

#[test]
fn token_answers_keep_their_invariants() {
    fuzz("token_answer");
}

#[test]
fn api_answers_keep_their_invariants() {
    fuzz("api_answer");
}

#[test]
fn urls_keep_their_invariants() {
    fuzz("urls");
}

#[test]
fn stored_records_keep_their_invariants() {
    fuzz("stored_record");
}

#[test]
fn redis_records_keep_their_invariants() {
    fuzz("redis_record");
}

#[test]
fn session_operation_sequences_keep_their_invariants() {
    fuzz("session_ops");
}

#[test]
fn every_target_has_a_committed_corpus_with_its_seeds() {
    for t in TARGETS {
        let committed = committed_corpus(t.name).unwrap_or_default();
        for (name, bytes) in seeds::seeds(t.name) {
            assert!(
                committed.iter().any(|(_, c)| *c == bytes),
                "seed {name} of {} is not in fuzz/corpus (run `cargo test -p \
                 mailup-auth-fuzz-bodies -- --ignored write_corpus`)",
                t.name
            );
        }
    }
}

/// Writes the built-in seeds into `fuzz/corpus/<target>/seed-<name>`.
#[test]
#[ignore = "writes the committed corpus; run by hand after changing the seeds"]
fn write_corpus() {
    for t in TARGETS {
        let dir = corpus_root().join(t.name);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in seeds::seeds(t.name) {
            std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
        }
    }
}

/// The envelope codec the target exercises is the one a real store uses: every record of
/// the corpus that decodes is saved into a real sled store and loaded back unchanged.
#[test]
fn decodable_corpus_records_round_trip_through_a_real_sled_store() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = SledTokenStore::open(dir.path().join("store")).unwrap();
    let mut round_trips = 0;
    for (index, (_, bytes)) in committed_corpus("stored_record")
        .unwrap()
        .into_iter()
        .enumerate()
    {
        let Ok(Some(versioned)) = mailup_auth_store_sled::internal::envelope::decode("p", &bytes)
        else {
            continue;
        };
        let profile = format!("p{index}");
        let record: ProfileRecord = versioned.value;
        runtime.block_on(async {
            let version = store.save(&profile, &record, None).await.unwrap();
            let loaded = store.load(&profile).await.unwrap().unwrap();
            assert_eq!(loaded.version, version);
            assert_eq!(loaded.value, record);
        });
        round_trips += 1;
    }
    assert!(round_trips >= 2, "the corpus has decodable records");
}
