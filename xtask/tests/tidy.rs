//! The tidy checks, one `#[test]` each, on the real workspace (read-only), so `cargo test`
//! enforces them. `cargo xtask tidy` runs the same checks with a report.

use std::path::Path;
use std::sync::OnceLock;

use xtask::tidy::{Check, CHECKS};
use xtask::workspace::Workspace;

fn workspace() -> &'static Workspace {
    static WORKSPACE: OnceLock<Workspace> = OnceLock::new();
    WORKSPACE.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("xtask is in the workspace");
        Workspace::load(root).unwrap_or_else(|e| panic!("cannot read the workspace: {e}"))
    })
}

fn assert_tidy(name: &str) {
    let check: &Check = CHECKS
        .iter()
        .find(|c| c.name == name)
        .expect("a tidy check of that name");
    let problems = (check.run)(workspace())
        .unwrap_or_else(|e| panic!("tidy check `{name}` could not run: {e}"));
    assert!(
        problems.is_empty(),
        "tidy check `{name}` failed: {}\n  - {}\n",
        check.rule,
        problems.join("\n  - ")
    );
}

#[test]
fn every_publishable_crate_has_a_readme() {
    assert_tidy("readme");
}

#[test]
fn every_publishable_crate_has_a_description() {
    assert_tidy("description");
}

#[test]
fn every_publishable_crate_uses_the_workspace_lints() {
    assert_tidy("lints");
}

#[test]
fn every_publishable_crate_shares_the_workspace_version() {
    assert_tidy("version");
}

#[test]
fn rust_version_is_the_toolchain_ci_verifies() {
    assert_tidy("rust-version");
}

#[test]
fn the_core_has_no_io_or_rng_dependency() {
    assert_tidy("core-dependencies");
}

#[test]
fn the_core_source_calls_no_clock_or_rng() {
    assert_tidy("core-source");
}

#[test]
fn the_architecture_table_lists_every_public_session_method() {
    assert_tidy("session-methods");
}

#[test]
fn every_check_has_a_test_above() {
    let tested = [
        "readme",
        "description",
        "lints",
        "version",
        "rust-version",
        "core-dependencies",
        "core-source",
        "session-methods",
    ];
    let names: Vec<&str> = CHECKS.iter().map(|c| c.name).collect();
    assert_eq!(names, tested, "add a #[test] for the new tidy check");
}
