//! `recover`: rebuilds a damaged sled token store from what can still be read and verified
//! (`SledTokenStore::salvage`), and reports it. It runs before any profile is loaded, since
//! loading is exactly what a damaged store refuses.

use mailup_auth::{SledTokenStore, StoreError};

use crate::cli::GlobalOptions;
use crate::failure::{Failure, EXIT_REAUTHORIZE};
use crate::output::say;
use crate::profile::{key_source, store_failure};

/// Runs `recover` on the store the global options name.
pub(crate) async fn run(global: &GlobalOptions) -> Result<(), Failure> {
    let location = global.store.clone();
    if location
        .as_deref()
        .and_then(std::path::Path::to_str)
        .is_some_and(mailup_auth_store_redis::is_redis_url)
    {
        return Err(Failure::usage(
            "`recover` rebuilds a token store directory; a Redis store keeps its records in \
             Redis (use its own persistence and backups)",
        ));
    }
    let dir = match location {
        Some(dir) => dir,
        None => mailup_auth::default_store_dir().ok_or_else(|| {
            Failure::usage("no home directory for the default token store: pass --store DIR")
        })?,
    };
    if !dir.is_dir() {
        return Err(Failure::local(format!(
            "there is no token store at {} to recover",
            dir.display()
        )));
    }
    // The keychain entry is named after the absolute directory, as the other commands do.
    let account = std::path::absolute(&dir)
        .unwrap_or_else(|_| dir.clone())
        .display()
        .to_string();
    let key = key_source(global, account)?;
    let outcome = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || match SledTokenStore::open_with(&dir, key.as_ref()) {
            Ok(store) => {
                drop(store);
                Ok(None)
            }
            Err(StoreError::Damaged { .. } | StoreError::Io { .. }) => {
                SledTokenStore::salvage(&dir, key.as_ref()).map(Some)
            }
            Err(error) => Err(error),
        }
    })
    .await
    .map_err(|e| Failure::local(format!("the recovery did not complete: {e}")))?
    .map_err(store_failure)?;
    let Some(report) = outcome else {
        say!(
            "The token store at {} opens and reads: nothing to recover.",
            dir.display()
        );
        return Ok(());
    };
    say!("Rebuilt the token store at {}.", dir.display());
    for recovered in &report.recovered {
        let note = if recovered.newer_unverified {
            " (a newer copy was damaged: this one may hold a rotated refresh token)"
        } else {
            ""
        };
        say!(
            "  recovered: {} (version {}){note}",
            recovered.profile,
            recovered.version
        );
    }
    for lost in &report.lost {
        say!("  lost: {} ({})", lost.profile, lost.reason);
    }
    for deleted in &report.deleted {
        say!("  deleted before the damage, not recreated: {deleted}");
    }
    if report.truncated_scan {
        say!("  the scan stopped at its size limits: files beyond them were not read");
    }
    say!(
        "The damaged store was moved to {} and is kept (it may hold tokens: remove it once \
         you no longer need it).",
        report.moved_to.display()
    );
    if report.lost.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = report.lost.iter().map(|l| l.profile.as_str()).collect();
    Err(Failure::new(
        EXIT_REAUTHORIZE,
        format!(
            "{} profile(s) could not be recovered ({}): log in to each again with \
             `mailup-auth login --profile NAME`",
            names.len(),
            names.join(", ")
        ),
    ))
}
