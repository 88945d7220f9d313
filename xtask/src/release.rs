//! `cargo xtask release`: bump the shared version, move the changelog, package in order.
//!
//! Everything is decided up front in a [`Plan`]: the new version, the publish order, the exact
//! new text of every file, and every reason to refuse. `--dry-run` prints the plan; a real run
//! prints it, refuses if there is any problem, and only then writes files and packages.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::changelog;
use crate::manifest;
use crate::version::{Bump, Version};
use crate::workspace::{DepKind, Workspace};
use crate::{cargo, display_command, Error, Result};

/// What `cargo xtask release` was asked to do.
#[derive(Debug, Clone)]
pub struct ReleaseOptions {
    /// The level or exact version.
    pub bump: Bump,
    /// Print the plan, change nothing.
    pub dry_run: bool,
    /// Skip the clean-tree check.
    pub allow_dirty: bool,
    /// Run `cargo package` after the edits (on by default; `--no-package` turns it off).
    pub package: bool,
    /// The changelog date, `YYYY-MM-DD`; today (UTC) when `None`.
    pub date: Option<String>,
}

/// One file the release rewrites.
#[derive(Debug, Clone)]
pub struct FileEdit {
    /// Absolute path.
    pub path: PathBuf,
    /// Path relative to the workspace root, for messages.
    pub relative: String,
    /// What changes, in a few words.
    pub summary: String,
    /// The complete new text.
    pub new_text: String,
}

/// Everything a release would do, and why it must not.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The workspace root.
    pub root: PathBuf,
    /// `[workspace.package] version` now.
    pub current: Version,
    /// The version being released.
    pub next: Version,
    /// The changelog date.
    pub date: String,
    /// Publishable crates, in publish order.
    pub order: Vec<String>,
    /// Members with `publish = false`.
    pub skipped: Vec<String>,
    /// Files to rewrite.
    pub edits: Vec<FileEdit>,
    /// Reasons to refuse; empty when the release can go ahead.
    pub problems: Vec<String>,
}

impl Plan {
    /// Arguments of the `cargo package` run that packages and verifies every publishable crate
    /// against the others (recent cargo packages workspace members together and resolves their
    /// not-yet-published siblings from the freshly built packages).
    pub fn package_args(&self) -> Vec<String> {
        let mut args = vec![
            "package".to_owned(),
            "--locked".to_owned(),
            "--allow-dirty".to_owned(),
        ];
        for name in &self.order {
            args.push("-p".to_owned());
            args.push(name.clone());
        }
        args
    }

    /// The plan as printed by `release` and `release --dry-run`.
    pub fn render(&self, options: &ReleaseOptions) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "release plan: {} → {} ({}), dated {}",
            self.current, self.next, options.bump, self.date
        );
        let _ = writeln!(out, "\ncrates to publish, in dependency order:");
        let width = self.order.iter().map(String::len).max().unwrap_or(0);
        for (i, name) in self.order.iter().enumerate() {
            let _ = writeln!(
                out,
                "  {}. {name:<width$}  {} → {}",
                i + 1,
                self.current,
                self.next
            );
        }
        if !self.skipped.is_empty() {
            let _ = writeln!(
                out,
                "skipped (publish = false): {}",
                self.skipped.join(", ")
            );
        }
        let _ = writeln!(out, "\nfiles to change:");
        let width = self
            .edits
            .iter()
            .map(|e| e.relative.len())
            .max()
            .unwrap_or(0);
        for edit in &self.edits {
            let _ = writeln!(out, "  {:<width$}  {}", edit.relative, edit.summary);
        }
        let package = if options.package {
            display_command("cargo", &self.package_args())
        } else {
            "skipped (--no-package)".to_owned()
        };
        let _ = writeln!(out, "\nthen package and verify: {package}");
        out
    }
}

/// Builds the plan for the workspace that contains `dir`. Fails only when no plan can be made
/// (cargo metadata fails, no shared version, a dependency cycle); every other obstacle is a
/// problem in the plan.
pub fn plan(dir: &Path, options: &ReleaseOptions) -> Result<Plan> {
    let workspace = Workspace::load(dir)?;
    let root = workspace.root.clone();
    let root_manifest_path = root.join("Cargo.toml");
    let root_manifest = read(&root_manifest_path)?;
    let current_text = manifest::workspace_version(&root_manifest).ok_or_else(|| {
        Error::new(format!(
            "{} has no [workspace.package] version: the crates must share one version",
            root_manifest_path.display()
        ))
    })?;
    let current: Version = current_text.parse()?;
    let next = options.bump.apply(&current);
    let date = match &options.date {
        Some(date) => changelog::parse_date(date)?,
        None => changelog::today_utc(),
    };
    let order = workspace.publish_order()?;
    let skipped = workspace
        .packages
        .iter()
        .filter(|p| !p.publishable)
        .map(|p| p.name.clone())
        .collect();

    let mut problems = Vec::new();
    if !options.allow_dirty {
        if let Err(problem) = check_clean(&root) {
            problems.push(problem);
        }
    }
    if next <= current {
        problems.push(format!(
            "version {next} is not greater than the current version {current}"
        ));
    }
    problems.extend(package_problems(&workspace, &current_text));

    // The edits.
    let members = workspace.member_names();
    let mut edits = Vec::new();
    let root_bump = manifest::bump_manifest(&root_manifest, &members, &next, true)?;
    edits.push(FileEdit {
        path: root_manifest_path.clone(),
        relative: "Cargo.toml".to_owned(),
        summary: manifest_summary(&root_bump),
        new_text: root_bump.text,
    });
    let mut inheriting = BTreeSet::new();
    for package in &workspace.packages {
        let text = read(&package.manifest_path)?;
        if manifest::uses_workspace_version(&text) {
            inheriting.insert(package.name.clone());
        }
        if package.manifest_path == root_manifest_path {
            continue;
        }
        let bump = manifest::bump_manifest(&text, &members, &next, false)?;
        if bump.text != text {
            edits.push(FileEdit {
                path: package.manifest_path.clone(),
                relative: relative(&root, &package.manifest_path),
                summary: manifest_summary(&bump),
                new_text: bump.text,
            });
        }
    }
    let lock_path = root.join("Cargo.lock");
    if lock_path.exists() {
        let text = read(&lock_path)?;
        let bumped = manifest::bump_lockfile(&text, &inheriting, &current_text, &next)?;
        if bumped != text {
            edits.push(FileEdit {
                path: lock_path,
                relative: "Cargo.lock".to_owned(),
                summary: format!("version of the {} crates that share it", inheriting.len()),
                new_text: bumped,
            });
        }
    }
    let changelog_path = root.join("CHANGELOG.md");
    match std::fs::read_to_string(&changelog_path) {
        Err(_) => problems.push("there is no CHANGELOG.md at the workspace root".to_owned()),
        Ok(text) => match changelog::release(&text, &next, &date) {
            Err(problem) => problems.push(problem.to_string()),
            Ok(new_text) => edits.push(FileEdit {
                path: changelog_path,
                relative: "CHANGELOG.md".to_owned(),
                summary: format!("\"Unreleased\" moved under \"{next} - {date}\""),
                new_text,
            }),
        },
    }
    Ok(Plan {
        root,
        current,
        next,
        date,
        order,
        skipped,
        edits,
        problems,
    })
}

/// Runs the release: prints the plan to `out`; refuses (an error listing every problem) if
/// the plan has any; unless `--dry-run`, writes the edits and packages the crates.
pub fn run(dir: &Path, options: &ReleaseOptions, out: &mut dyn std::io::Write) -> Result<()> {
    let plan = plan(dir, options)?;
    let io = |e: std::io::Error| Error::new(format!("cannot write output: {e}"));
    write!(out, "{}", plan.render(options)).map_err(io)?;
    if !plan.problems.is_empty() {
        let mut message = String::from("release refused:");
        for problem in &plan.problems {
            let _ = write!(message, "\n  - {problem}");
        }
        message.push_str("\nnothing was changed");
        return Err(Error::new(message));
    }
    if options.dry_run {
        writeln!(out, "\ndry run: nothing was changed").map_err(io)?;
        return Ok(());
    }
    for edit in &plan.edits {
        std::fs::write(&edit.path, &edit.new_text)
            .map_err(|e| Error::new(format!("cannot write {}: {e}", edit.path.display())))?;
    }
    writeln!(out, "\nwrote {} files", plan.edits.len()).map_err(io)?;
    if options.package {
        let args = plan.package_args();
        writeln!(out, "\n$ {}", display_command("cargo", &args)).map_err(io)?;
        out.flush().map_err(io)?;
        let status = cargo()
            .args(&args)
            .current_dir(&plan.root)
            .status()
            .map_err(|e| Error::new(format!("cannot run cargo package: {e}")))?;
        if !status.success() {
            return Err(Error::new(format!(
                "cargo package failed ({status}); the version bump and changelog move are \
                 written: fix the problem and rerun `{}`, or undo them with `git checkout -- .`",
                display_command("cargo", &args)
            )));
        }
        writeln!(out, "packaged: target/package/<crate>-{}.crate", plan.next).map_err(io)?;
    }
    let tag = format!("v{}", plan.next);
    writeln!(
        out,
        "\nnext: review `git diff`, then\n  git commit -am \"Release {next}\" && git tag {tag}\n  \
         cargo publish{} (in the order above)\n  git push && git push origin {tag}",
        plan.order
            .iter()
            .map(|c| format!(" -p {c}"))
            .collect::<String>(),
        next = plan.next,
    )
    .map_err(io)?;
    Ok(())
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| Error::new(format!("cannot read {}: {e}", path.display())))
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

fn manifest_summary(bump: &manifest::ManifestBump) -> String {
    let mut parts = Vec::new();
    if bump.workspace_version {
        parts.push("[workspace.package] version".to_owned());
    }
    if !bump.requirements.is_empty() {
        parts.push(format!("requirements on {}", bump.requirements.join(", ")));
    }
    if parts.is_empty() {
        "nothing to change".to_owned()
    } else {
        parts.join("; ")
    }
}

/// `git status --porcelain` must print nothing.
fn check_clean(root: &Path) -> std::result::Result<(), String> {
    let output = Command::new("git")
        .args(["status", "--porcelain"])
        .current_dir(root)
        .output()
        .map_err(|e| format!("cannot run git to check the tree is clean: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "cannot check the tree is clean: git status failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let status = String::from_utf8_lossy(&output.stdout);
    if status.trim().is_empty() {
        return Ok(());
    }
    let lines: Vec<&str> = status.lines().collect();
    let mut shown = lines
        .iter()
        .take(10)
        .map(|l| format!("\n      {l}"))
        .collect::<String>();
    if lines.len() > 10 {
        shown.push_str(&format!("\n      ... and {} more", lines.len() - 10));
    }
    Err(format!(
        "the working tree is dirty (commit or stash first, or pass --allow-dirty):{shown}"
    ))
}

/// What every publishable crate needs before it can go to crates.io.
fn package_problems(workspace: &Workspace, shared_version: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for package in workspace.publishable() {
        let name = &package.name;
        if package.description.is_none() {
            problems.push(format!("{name}: no `description` in its Cargo.toml"));
        }
        if package.license.is_none() && package.license_file.is_none() {
            problems.push(format!(
                "{name}: no `license` (or `license-file`) in its Cargo.toml"
            ));
        }
        match &package.readme {
            None => problems.push(format!("{name}: no `readme` (and no README.md beside it)")),
            Some(readme) if !package.dir().join(readme).is_file() => problems.push(format!(
                "{name}: its readme {} does not exist",
                relative(&workspace.root, &package.dir().join(readme))
            )),
            Some(_) => {}
        }
        if package.repository.is_none() {
            problems.push(format!("{name}: no `repository` in its Cargo.toml"));
        }
        if package.version != shared_version {
            problems.push(format!(
                "{name}: version {} is not the workspace version {shared_version} \
                 (use `version.workspace = true`)",
                package.version
            ));
        }
        for dep in workspace.internal_dependencies(package) {
            // cargo publish drops dev-dependencies that have no version, so those are fine.
            if dep.kind == DepKind::Dev {
                continue;
            }
            if dep.req == "*" {
                problems.push(format!(
                    "{name}: its dependency on {} has no version (crates.io needs one: add \
                     `version = \"{shared_version}\"` next to its `path`)",
                    dep.name
                ));
            }
            if workspace.package(&dep.name).is_some_and(|d| !d.publishable) {
                problems.push(format!(
                    "{name}: depends on {}, which is `publish = false`",
                    dep.name
                ));
            }
        }
    }
    problems
}
