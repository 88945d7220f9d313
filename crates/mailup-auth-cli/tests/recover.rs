//! `mailup-auth recover` on real token stores damaged the ways sled refuses (bit flips,
//! truncation), run as a process: every other command names it, it exits 0 (all recovered)
//! or 3 (some lost, listed), never panics, keeps the damaged directory, and every profile it
//! recovers serves its own token against the emulator; never a changed or another profile's
//! token. Seeded: `MAILUP_RECOVER_TRIALS` (default 8) and `MAILUP_RECOVER_SEED`.

use std::path::PathBuf;
use std::process::Output;

use mailup_auth_emulator::Emulator;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

mod common;
use common::damaged_store::*;

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn one_error_line(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_rebuilds_the_other_profiles_and_never_accepts_a_changed_token() {
    let emulator = Emulator::builder()
        .start()
        .await
        .expect("the emulator starts");
    let base = emulator.base_url().to_string();
    let home = tempfile::tempdir().unwrap();
    let store = home.path().join("store");
    let originals = logged_in_store(home.path(), &store, &base).await;

    // A store that opens: nothing to do.
    let out = run(home.path(), &store, &base, &["recover"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to recover"));

    // One byte of gamma's access token changed in every copy in the log (same length, still
    // valid JSON: only the checksum tells).
    let db = current_files(&store)
        .into_iter()
        .find(|f| f.file_name().is_some_and(|n| n == "db"))
        .expect("a log");
    let mut bytes = std::fs::read(&db).unwrap();
    let gamma = originals[2].as_bytes();
    let mut changed = 0;
    while let Some(at) = find(&bytes, gamma) {
        bytes[at + gamma.len() / 2] ^= 0x01;
        changed += 1;
    }
    assert!(changed > 0);
    std::fs::write(&db, &bytes).unwrap();

    // Every command says the store is damaged and names `recover`.
    for profile in PROFILES {
        let out = run(home.path(), &store, &base, &["token", "--profile", profile]).await;
        assert_eq!(out.status.code(), Some(1));
        let error = one_error_line(&out);
        assert!(error.contains("mailup-auth recover"), "{error}");
    }

    let out = run(home.path(), &store, &base, &["recover"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(3), "a profile was lost");
    let error = one_error_line(&out);
    assert!(error.contains("gamma"), "{error}");
    assert!(stdout.contains("recovered: alpha (version 1)"), "{stdout}");
    assert!(stdout.contains("recovered: beta (version 1)"), "{stdout}");
    assert!(stdout.contains("lost: gamma"), "{stdout}");
    let moved: Vec<PathBuf> = std::fs::read_dir(home.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("store.corrupt-"))
        .collect();
    assert_eq!(moved.len(), 1, "the damaged store is kept");
    assert!(stdout.contains(&*moved[0].to_string_lossy()));

    // The recovered profiles work, with their own tokens; gamma must log in again, and can.
    for (profile, original) in PROFILES.iter().zip(&originals).take(2) {
        serves_its_own_token(home.path(), &store, &base, profile, original).await;
    }
    let out = run(home.path(), &store, &base, &["token", "--profile", "gamma"]).await;
    assert_eq!(out.status.code(), Some(3));
    let login = login_args("gamma");
    assert!(run(home.path(), &store, &base, &login)
        .await
        .status
        .success());
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_after_random_damage_gives_only_right_tokens_never_a_panic() {
    let emulator = Emulator::builder()
        .start()
        .await
        .expect("the emulator starts");
    let base = emulator.base_url().to_string();
    let home = tempfile::tempdir().unwrap();
    let pristine = home.path().join("pristine");
    let originals = logged_in_store(home.path(), &pristine, &base).await;
    let trials = env_u64("MAILUP_RECOVER_TRIALS", 8);
    let seed = env_u64("MAILUP_RECOVER_SEED", 21);
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut rebuilt, mut healthy, mut served, mut lost) = (0, 0, 0, 0);
    for trial in 0..trials {
        let store = home.path().join(format!("damaged-{trial}"));
        copy_dir(&pristine, &store);
        let files = current_files(&store);
        let file = &files[rng.gen_range(0..files.len())];
        let what = damage(&mut rng, file);
        let out = run(home.path(), &store, &base, &["recover"]).await;
        let code = out.status.code().expect("exited");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            code == 0 || code == 3,
            "trial {trial} ({what}): exit {code}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if stdout.contains("nothing to recover") {
            healthy += 1;
        } else {
            rebuilt += 1;
        }
        for (profile, original) in PROFILES.iter().zip(&originals) {
            let out = run(home.path(), &store, &base, &["token", "--profile", profile]).await;
            let code = out.status.code().expect("exited");
            assert_ne!(code, 101, "trial {trial} ({what}): a panic");
            if code == 0 {
                let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                assert!(
                    token == *original || emulator.is_access_token_live(&token),
                    "trial {trial} ({what}): {profile} got a wrong token"
                );
                assert!(
                    originals
                        .iter()
                        .filter(|o| *o != original)
                        .all(|o| *o != token),
                    "trial {trial} ({what}): {profile} got another profile's token"
                );
                served += 1;
            } else {
                // Lost with the damage (or never in the intact part of a cut log): the store
                // itself works, so the answer is "log in".
                assert_eq!(code, 3, "trial {trial} ({what}): {}", one_error_line(&out));
                lost += 1;
            }
        }
    }
    println!(
        "recover trials (seed {seed}): {trials} damaged stores: {rebuilt} rebuilt, {healthy} \
         opened as they were; {served} profiles served their own token, {lost} need a new \
         login; 0 panics, 0 wrong tokens"
    );
    emulator.shutdown().await;
}

/// The store sled's test hook kills a debug build at (see `MAILUP_AUTH_STORE_SLED_CRASH_AT`):
/// after the fresh database is written, and after the damaged files are moved aside.
#[cfg(debug_assertions)]
const SALVAGE_CRASH_POINTS: [&str; 2] = ["salvage-written", "salvage-moved"];

#[cfg(debug_assertions)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_killed_at_any_point_never_leaves_an_empty_store_and_runs_again() {
    // `recover` used to rename the store away and the fresh one into its place: killed
    // between the two (or racing another command), the next command created an empty store
    // where the old one was (every profile "not logged in", `recover` then "nothing to
    // recover") and the recovered tokens stayed in `<store>.recovering-*`.
    let emulator = Emulator::builder()
        .start()
        .await
        .expect("the emulator starts");
    let base = emulator.base_url().to_string();
    let home = tempfile::tempdir().unwrap();
    let pristine = home.path().join("pristine");
    let originals = logged_in_store(home.path(), &pristine, &base).await;
    // One byte of beta's token changed in every copy: alpha and gamma are recoverable.
    let db = current_files(&pristine)
        .into_iter()
        .find(|f| f.file_name().is_some_and(|n| n == "db"))
        .expect("a log");
    let mut bytes = std::fs::read(&db).unwrap();
    let beta = originals[1].as_bytes();
    while let Some(at) = find(&bytes, beta) {
        bytes[at + beta.len() / 2] ^= 0x01;
    }
    std::fs::write(&db, &bytes).unwrap();
    for point in SALVAGE_CRASH_POINTS {
        let store = home.path().join(point);
        copy_dir(&pristine, &store);
        let out = run_with(
            home.path(),
            &store,
            &base,
            &["recover"],
            &[("MAILUP_AUTH_STORE_SLED_CRASH_AT", point)],
        )
        .await;
        assert_eq!(out.status.code(), None, "{point}: killed by the hook");
        // Every command either serves the profile's own token or names `recover`.
        for (profile, original) in PROFILES.iter().zip(&originals) {
            let out = run(home.path(), &store, &base, &["token", "--profile", profile]).await;
            match out.status.code() {
                Some(0) => assert_eq!(
                    String::from_utf8_lossy(&out.stdout).trim(),
                    original,
                    "{point}: {profile}"
                ),
                Some(1) => assert!(
                    one_error_line(&out).contains("recover"),
                    "{point}: {profile}"
                ),
                other => panic!(
                    "{point}: {profile}: exit {other:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                ),
            }
        }
        // 3 (beta lost) when it rebuilds from the damaged files again; 0 when it finds only
        // the fresh generation the killed run moved in (beta's loss was that run's to report,
        // and beta's `token` below says to log in).
        let out = run(home.path(), &store, &base, &["recover"]).await;
        assert!(
            matches!(out.status.code(), Some(0 | 3)),
            "{point}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for (profile, original) in PROFILES.iter().zip(&originals) {
            let out = run(home.path(), &store, &base, &["token", "--profile", profile]).await;
            if *profile == "beta" {
                assert_eq!(out.status.code(), Some(3), "{point}: beta was lost");
            } else {
                assert!(out.status.success(), "{point}: {}", one_error_line(&out));
                assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), original);
            }
        }
        assert!(!store.join("recovering").exists(), "{point}");
        let beside: Vec<String> = std::fs::read_dir(home.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with(point) && name != point)
            .collect();
        assert!(
            beside.iter().all(|name| name.contains(".corrupt-")),
            "{point}: only the damaged copies are kept beside the store: {beside:?}"
        );
        assert!(!beside.is_empty(), "{point}: the damaged copy is kept");
    }
    emulator.shutdown().await;
}

/// A flipped bit before any record message (bytes 21 and 30 of the log): sled's recovery used
/// to zero every record behind it on the first open, and `recover` then found nothing. Every
/// command now refuses the store naming `recover`, its bytes unchanged, and `recover` brings
/// every profile back, serving its own token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bit_flip_before_any_record_leaves_the_store_untouched_and_recover_brings_every_profile_back(
) {
    let emulator = Emulator::builder()
        .start()
        .await
        .expect("the emulator starts");
    let base = emulator.base_url().to_string();
    for byte in [21usize, 30] {
        let home = tempfile::tempdir().unwrap();
        let store = home.path().join("store");
        let originals = logged_in_store(home.path(), &store, &base).await;
        let db = current_files(&store)
            .into_iter()
            .find(|f| f.file_name().is_some_and(|n| n == "db"))
            .expect("a log");
        let mut bytes = std::fs::read(&db).unwrap();
        bytes[byte] ^= 0x01;
        std::fs::write(&db, &bytes).unwrap();
        let files_before: Vec<(PathBuf, Vec<u8>)> = current_files(&store)
            .into_iter()
            .map(|f| (f.clone(), std::fs::read(&f).unwrap()))
            .collect();

        for profile in PROFILES {
            let out = run(home.path(), &store, &base, &["token", "--profile", profile]).await;
            assert_eq!(out.status.code(), Some(1), "byte {byte}");
            let error = one_error_line(&out);
            assert!(error.contains("mailup-auth recover"), "{error}");
            let files_now: Vec<(PathBuf, Vec<u8>)> = current_files(&store)
                .into_iter()
                .map(|f| (f.clone(), std::fs::read(&f).unwrap()))
                .collect();
            assert!(files_now == files_before, "byte {byte}: the store changed");
        }

        let out = run(home.path(), &store, &base, &["recover"]).await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for (profile, original) in PROFILES.iter().zip(&originals) {
            assert!(
                stdout.contains(&format!("recovered: {profile}")),
                "{stdout}"
            );
            serves_its_own_token(home.path(), &store, &base, profile, original).await;
        }
    }
    emulator.shutdown().await;
}

/// `mailup-auth token --profile P` prints `original` (the profile's own token, from before
/// the damage) and an API call through that profile succeeds.
async fn serves_its_own_token(
    home: &std::path::Path,
    store: &std::path::Path,
    base: &str,
    profile: &str,
    original: &str,
) {
    let out = run(home, store, base, &["token", "--profile", profile]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), original);
    let call = run(
        home,
        store,
        base,
        &[
            "call",
            "GET",
            "Console/Authentication/Info",
            "--profile",
            profile,
        ],
    )
    .await;
    assert!(
        call.status.success(),
        "{}",
        String::from_utf8_lossy(&call.stderr)
    );
}
