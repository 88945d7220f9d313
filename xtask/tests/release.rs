//! `cargo xtask release` end to end, on a fresh temporary copy of `tests/fixtures/ws` made into
//! its own git repository for each test. Never on the real tree, never on the network: every
//! child cargo runs with `CARGO_NET_OFFLINE=true` (the fixture has no registry dependency, so
//! even `cargo package` works offline).
//!
//! The fixture: `fx-core`; `fx-mid` → `fx-core`; `fx-util`; `fx-app` → `fx-mid`, `fx-util`
//! (pinned in its own manifest); `fx-tool` (`publish = false`) → `fx-app` without a version.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const DATE: &str = "2024-05-06";

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("xtask-release-")
            .tempdir()
            .expect("temp dir");
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ws");
        copy_tree(&source, dir.path());
        let fixture = Self { dir };
        fixture.git(&["init", "-q"]);
        fixture.commit("fixture");
        fixture
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.root().join(relative)
    }

    fn read(&self, relative: &str) -> String {
        std::fs::read_to_string(self.path(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
    }

    /// Replaces `from` (which must be there) by `to` in a file.
    fn edit(&self, relative: &str, from: &str, to: &str) {
        let text = self.read(relative);
        assert!(text.contains(from), "{relative} does not contain {from:?}");
        std::fs::write(self.path(relative), text.replacen(from, to, 1)).unwrap();
    }

    fn git(&self, args: &[&str]) -> String {
        let output = Command::new("git")
            .args([
                "-c",
                "user.name=xtask test",
                "-c",
                "user.email=xtask@test.invalid",
            ])
            .args([
                "-c",
                "commit.gpgsign=false",
                "-c",
                "init.defaultBranch=main",
            ])
            .args(args)
            .current_dir(self.root())
            .output()
            .expect("git runs");
        assert!(
            output.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    fn commit(&self, message: &str) {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", message]);
    }

    fn status(&self) -> String {
        self.git(&["status", "--porcelain"])
    }

    fn xtask(&self, args: &[&str]) -> Run {
        let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args(args)
            .current_dir(self.root())
            .env("CARGO_NET_OFFLINE", "true")
            .env("CARGO_TARGET_DIR", self.path("target"))
            .output()
            .expect("xtask runs");
        Run::from(output)
    }

    /// A release that must be refused: the message names the reason, and nothing changed.
    fn assert_refused(&self, args: &[&str], reason: &str) {
        let before = (self.status(), self.git(&["diff", "HEAD"]));
        let run = self.xtask(args);
        assert!(!run.ok, "release should be refused:\n{run}");
        assert!(run.stderr.contains("release refused:"), "{run}");
        assert!(
            run.stderr.contains(reason),
            "expected {reason:?} in:\n{run}"
        );
        assert!(run.stderr.contains("nothing was changed"), "{run}");
        let after = (self.status(), self.git(&["diff", "HEAD"]));
        assert_eq!(before, after, "the refused release changed files");
    }
}

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl From<Output> for Run {
    fn from(output: Output) -> Self {
        Self {
            ok: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "--- stdout\n{}--- stderr\n{}---",
            self.stdout, self.stderr
        )
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_name() == "target" {
            continue;
        }
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Asserts the `needles` appear in `haystack` in this order.
fn assert_in_order(haystack: &str, needles: &[&str]) {
    let mut from = 0;
    for needle in needles {
        match haystack[from..].find(needle) {
            Some(at) => from += at + needle.len(),
            None => panic!("{needle:?} missing or out of order in:\n{haystack}"),
        }
    }
}

#[test]
fn dry_run_prints_the_plan_in_dependency_order_and_changes_nothing() {
    let fixture = Fixture::new();
    let run = fixture.xtask(&["release", "minor", "--dry-run", "--date", DATE]);
    assert!(run.ok, "{run}");
    assert_in_order(
        &run.stdout,
        &[
            "release plan: 1.4.2 → 1.5.0 (minor), dated 2024-05-06",
            "crates to publish, in dependency order:",
            "1. fx-core  1.4.2 → 1.5.0",
            "2. fx-mid   1.4.2 → 1.5.0",
            "3. fx-util  1.4.2 → 1.5.0",
            "4. fx-app   1.4.2 → 1.5.0",
            "skipped (publish = false): fx-tool",
            "files to change:",
            "Cargo.toml",
            "[workspace.package] version; requirements on fx-core, fx-mid, fx-util",
            "crates/fx-app/Cargo.toml",
            "requirements on fx-util",
            "Cargo.lock",
            "CHANGELOG.md",
            "\"Unreleased\" moved under \"1.5.0 - 2024-05-06\"",
            "then package and verify: cargo package --locked --allow-dirty -p fx-core -p fx-mid -p fx-util -p fx-app",
            "dry run: nothing was changed",
        ],
    );
    assert_eq!(fixture.status(), "");
    assert_eq!(fixture.git(&["diff", "HEAD", "--stat"]), "");
}

#[test]
fn release_bumps_every_version_and_moves_the_changelog() {
    let fixture = Fixture::new();
    let before_root = fixture.read("Cargo.toml");
    let before_app = fixture.read("crates/fx-app/Cargo.toml");
    let before_tool = fixture.read("tools/fx-tool/Cargo.toml");
    let before_lock = fixture.read("Cargo.lock");

    let run = fixture.xtask(&["release", "minor", "--no-package", "--date", DATE]);
    assert!(run.ok, "{run}");
    assert!(run.stdout.contains("wrote 4 files"), "{run}");
    assert!(run.stdout.contains("git tag v1.5.0"), "{run}");

    // Exactly the version strings changed; comments, layout and other crates did not.
    assert_eq!(
        fixture.read("Cargo.toml"),
        before_root.replace("\"1.4.2\"", "\"1.5.0\"")
    );
    assert_eq!(before_root.matches("\"1.4.2\"").count(), 4);
    assert_eq!(
        fixture.read("crates/fx-app/Cargo.toml"),
        before_app.replace("version = \"1.4.2\"", "version = \"1.5.0\"")
    );
    assert_eq!(fixture.read("tools/fx-tool/Cargo.toml"), before_tool);
    assert_eq!(
        fixture.read("Cargo.lock"),
        before_lock.replace("version = \"1.4.2\"", "version = \"1.5.0\"")
    );
    assert!(fixture
        .read("Cargo.lock")
        .contains("name = \"fx-tool\"\nversion = \"0.0.0\""));

    let changelog = fixture.read("CHANGELOG.md");
    assert_in_order(
        &changelog,
        &[
            "## [Unreleased]\n\n## [1.5.0] - 2024-05-06\n\n### Added\n- `fx-app` greets",
            "### Fixed\n- `fx-mid` no longer panics on empty input.\n\n## [1.4.2] - 2024-01-15",
            "[Unreleased]: https://example.invalid/fx/compare/v1.5.0...HEAD\n\
             [1.5.0]: https://example.invalid/fx/compare/v1.4.2...v1.5.0\n\
             [1.4.2]: ",
        ],
    );

    // cargo agrees: every publishable crate is 1.5.0 and the lockfile needs no update.
    let metadata = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["metadata", "--format-version", "1", "--locked", "--offline"])
        .current_dir(fixture.root())
        .output()
        .unwrap();
    assert!(
        metadata.status.success(),
        "{}",
        String::from_utf8_lossy(&metadata.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&metadata.stdout).unwrap();
    let mut versions: Vec<String> = json["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{} {}",
                p["name"].as_str().unwrap(),
                p["version"].as_str().unwrap()
            )
        })
        .collect();
    versions.sort();
    assert_eq!(
        versions,
        [
            "fx-app 1.5.0",
            "fx-core 1.5.0",
            "fx-mid 1.5.0",
            "fx-tool 0.0.0",
            "fx-util 1.5.0"
        ]
    );

    // Nothing new to ship: the next release is refused until the changelog says something.
    fixture.commit("Release 1.5.0");
    fixture.assert_refused(
        &["release", "patch", "--no-package"],
        "\"Unreleased\" section is empty",
    );
}

#[test]
fn release_packages_every_crate_in_order_offline() {
    let fixture = Fixture::new();
    let run = fixture.xtask(&["release", "patch", "--date", DATE]);
    assert!(run.ok, "{run}");
    assert!(
        run.stdout.contains(
            "$ cargo package --locked --allow-dirty -p fx-core -p fx-mid -p fx-util -p fx-app"
        ),
        "{run}"
    );
    for name in ["fx-core", "fx-mid", "fx-util", "fx-app"] {
        let package = fixture.path(&format!("target/package/{name}-1.4.3.crate"));
        assert!(package.is_file(), "{} missing\n{run}", package.display());
    }
    assert!(!fixture.path("target/package/fx-tool-0.0.0.crate").exists());
}

#[test]
fn release_takes_an_exact_version() {
    let fixture = Fixture::new();
    let run = fixture.xtask(&["release", "2.0.0-rc.1", "--no-package", "--date", DATE]);
    assert!(run.ok, "{run}");
    assert!(
        run.stdout.contains("1.4.2 → 2.0.0-rc.1 (exact 2.0.0-rc.1)"),
        "{run}"
    );
    assert!(fixture
        .read("Cargo.toml")
        .contains("version = \"2.0.0-rc.1\""));
    assert!(fixture
        .read("CHANGELOG.md")
        .contains("## [2.0.0-rc.1] - 2024-05-06"));
}

#[test]
fn refuses_a_dirty_tree_even_in_a_dry_run() {
    let fixture = Fixture::new();
    std::fs::write(fixture.path("notes.txt"), "wip").unwrap();
    fixture.edit("crates/fx-core/src/lib.rs", "1", "2");
    let run = fixture.xtask(&["release", "minor", "--dry-run"]);
    assert!(!run.ok, "{run}");
    // The plan is still shown, then the refusal with the offending paths.
    assert!(run.stdout.contains("1. fx-core"), "{run}");
    assert_in_order(
        &run.stderr,
        &[
            "the working tree is dirty",
            "crates/fx-core/src/lib.rs",
            "notes.txt",
        ],
    );
    fixture.assert_refused(
        &["release", "minor", "--no-package"],
        "the working tree is dirty",
    );
    assert_eq!(fixture.read("notes.txt"), "wip");

    let allowed = fixture.xtask(&["release", "minor", "--dry-run", "--allow-dirty"]);
    assert!(allowed.ok, "{allowed}");
}

#[test]
fn refuses_a_version_not_greater_than_the_current_one() {
    let fixture = Fixture::new();
    fixture.assert_refused(
        &["release", "1.4.2", "--no-package"],
        "version 1.4.2 is not greater than the current version 1.4.2",
    );
    fixture.assert_refused(
        &["release", "1.0.0", "--no-package"],
        "version 1.0.0 is not greater than the current version 1.4.2",
    );
    fixture.assert_refused(
        &["release", "1.4.2-rc.1", "--no-package"],
        "version 1.4.2-rc.1 is not greater",
    );
}

#[test]
fn refuses_an_empty_unreleased_section() {
    let fixture = Fixture::new();
    let changelog = fixture.read("CHANGELOG.md");
    let start = changelog.find("### Added").unwrap();
    let end = changelog.find("## [1.4.2]").unwrap();
    let emptied = format!("{}### Added\n\n{}", &changelog[..start], &changelog[end..]);
    std::fs::write(fixture.path("CHANGELOG.md"), emptied).unwrap();
    fixture.commit("empty changelog");
    fixture.assert_refused(
        &["release", "minor", "--no-package"],
        "CHANGELOG.md's \"Unreleased\" section is empty",
    );
}

#[test]
fn refuses_a_crate_without_a_description() {
    let fixture = Fixture::new();
    fixture.edit(
        "crates/fx-mid/Cargo.toml",
        "description = \"Fixture middle layer over fx-core\"\n",
        "",
    );
    fixture.commit("no description");
    fixture.assert_refused(&["release", "minor"], "fx-mid: no `description`");
}

#[test]
fn refuses_a_crate_without_a_license() {
    let fixture = Fixture::new();
    fixture.edit(
        "crates/fx-core/Cargo.toml",
        "license.workspace = true\n",
        "",
    );
    fixture.commit("no license");
    fixture.assert_refused(&["release", "minor"], "fx-core: no `license`");
}

#[test]
fn refuses_a_crate_without_a_readme() {
    let fixture = Fixture::new();
    std::fs::remove_file(fixture.path("crates/fx-util/README.md")).unwrap();
    fixture.commit("no readme");
    fixture.assert_refused(
        &["release", "minor"],
        "fx-util: its readme crates/fx-util/README.md does not exist",
    );

    fixture.edit("crates/fx-util/Cargo.toml", "readme = \"README.md\"\n", "");
    fixture.commit("no readme key");
    fixture.assert_refused(&["release", "minor"], "fx-util: no `readme`");
}

#[test]
fn refuses_a_crate_without_a_repository() {
    let fixture = Fixture::new();
    fixture.edit(
        "crates/fx-app/Cargo.toml",
        "repository.workspace = true\n",
        "",
    );
    fixture.commit("no repository");
    fixture.assert_refused(&["release", "minor"], "fx-app: no `repository`");
}

#[test]
fn refuses_an_internal_dependency_without_a_version() {
    let fixture = Fixture::new();
    fixture.edit(
        "crates/fx-app/Cargo.toml",
        "fx-util = { path = \"../fx-util\", version = \"1.4.2\" }",
        "fx-util = { path = \"../fx-util\" }",
    );
    fixture.commit("unversioned dependency");
    fixture.assert_refused(
        &["release", "minor"],
        "fx-app: its dependency on fx-util has no version",
    );
}

#[test]
fn refuses_a_crate_with_its_own_version() {
    let fixture = Fixture::new();
    fixture.edit(
        "crates/fx-util/Cargo.toml",
        "version.workspace = true",
        "version = \"1.4.2\"",
    );
    fixture.edit(
        "crates/fx-util/Cargo.toml",
        "version = \"1.4.2\"",
        "version = \"0.9.0\"",
    );
    fixture.commit("own version");
    // Cargo.lock is now stale, but the refusal comes before anything reads it.
    fixture.assert_refused(
        &["release", "minor"],
        "fx-util: version 0.9.0 is not the workspace version 1.4.2",
    );
}

#[test]
fn rejects_bad_command_lines() {
    let fixture = Fixture::new();
    let no_level = fixture.xtask(&["release", "--dry-run"]);
    assert!(
        !no_level.ok && no_level.stderr.contains("which version?"),
        "{no_level}"
    );
    let bad_level = fixture.xtask(&["release", "mini"]);
    assert!(
        !bad_level.ok
            && bad_level
                .stderr
                .contains("expected major, minor, patch or X.Y.Z"),
        "{bad_level}"
    );
    let bad_flag = fixture.xtask(&["release", "minor", "--publish"]);
    assert!(
        !bad_flag.ok && bad_flag.stderr.contains("unknown option `--publish`"),
        "{bad_flag}"
    );
    let help = fixture.xtask(&["release", "--help"]);
    assert!(help.ok && help.stdout.contains("--dry-run"), "{help}");
    let usage = fixture.xtask(&["--help"]);
    assert!(
        usage.ok && usage.stdout.contains("release") && usage.stdout.contains("bench"),
        "{usage}"
    );
    assert_eq!(fixture.status(), "");
}
