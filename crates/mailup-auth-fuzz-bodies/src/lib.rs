#![doc = include_str!("../README.md")]
//!
//! ## What this crate is for, and what it is not for
//!
//! It holds the body of every fuzz target of the workspace (one per parser that takes
//! untrusted input) with the invariants each must keep, so that two drivers run the same code:
//! `cargo +nightly fuzz run <target>` in `fuzz/` (coverage-guided, libFuzzer) and
//! [`run_stable`], a seeded random-mutation loop over the committed seed corpus that runs on
//! the stable toolchain under `cargo test` and `cargo xtask fuzz`. It is not published and has
//! no API for anyone else.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::path::{Path, PathBuf};

pub mod input;
mod mutate;
pub mod seeds;
pub mod targets;

pub use mutate::{run_stable, StableRun};

/// A fuzz target: its name (the file in `fuzz/fuzz_targets/` and the folder in
/// `fuzz/corpus/`) and its body.
#[derive(Clone, Copy)]
pub struct Target {
    /// The target's name.
    pub name: &'static str,
    /// The body: panics on a broken invariant.
    pub body: fn(&[u8]),
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// Every target.
pub const TARGETS: [Target; 6] = [
    Target {
        name: "token_answer",
        body: targets::token_answer,
    },
    Target {
        name: "api_answer",
        body: targets::api_answer,
    },
    Target {
        name: "urls",
        body: targets::urls,
    },
    Target {
        name: "stored_record",
        body: targets::stored_record,
    },
    Target {
        name: "redis_record",
        body: targets::redis_record,
    },
    Target {
        name: "session_ops",
        body: targets::session_ops,
    },
];

/// The target named `name`.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().copied().find(|t| t.name == name)
}

/// `fuzz/corpus/` in the repository.
pub fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus")
}

/// The committed corpus of `target`: every file in `fuzz/corpus/<target>/`, sorted by name
/// (seeds, and any reproducer committed after a finding).
pub fn committed_corpus(target: &str) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let dir = corpus_root().join(target);
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            let name = entry.file_name().to_string_lossy().into_owned();
            files.push((name, std::fs::read(entry.path())?));
        }
    }
    files.sort();
    Ok(files)
}
