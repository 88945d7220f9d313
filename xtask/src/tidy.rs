//! Repository-wide checks ("tidy"). Each check returns the problems it found, one line each;
//! `tests/tidy.rs` runs every check as a `#[test]` on the real workspace, so `cargo test`
//! enforces them, and `cargo xtask tidy` runs them all and prints a report.

use std::path::Path;

use crate::manifest;
use crate::workspace::Workspace;
use crate::{cargo, Error, Result};

/// The sans-IO core: no I/O, clock or RNG, neither in its dependencies nor in its source.
pub const CORE_CRATE: &str = "mailup-auth-core";

/// Crates that do I/O or produce randomness; none may be a normal dependency of the core,
/// directly or through another crate.
pub const IO_AND_RNG_CRATES: [&str; 9] = [
    "tokio",
    "reqwest",
    "hyper",
    "sled",
    "mio",
    "socket2",
    "async-std",
    "rand",
    "getrandom",
];

/// Calls that read the clock or draw randomness; the core's caller must inject both.
pub const CLOCK_AND_RNG_CALLS: [&str; 6] = [
    "SystemTime::now",
    "Instant::now",
    "thread_rng",
    "OsRng",
    "rand::random",
    "getrandom",
];

/// One tidy check.
#[derive(Debug, Clone, Copy)]
pub struct Check {
    /// Short name, as printed by `cargo xtask tidy`.
    pub name: &'static str,
    /// What it enforces.
    pub rule: &'static str,
    /// Runs it on the workspace; `Err` when it could not run at all.
    pub run: fn(&Workspace) -> Result<Vec<String>>,
}

/// Every check, in the order `cargo xtask tidy` runs them.
pub const CHECKS: [Check; 8] = [
    Check {
        name: "readme",
        rule: "every publishable crate has its README",
        run: readme_problems,
    },
    Check {
        name: "description",
        rule: "every publishable crate has a description",
        run: description_problems,
    },
    Check {
        name: "lints",
        rule: "every publishable crate has `[lints] workspace = true`",
        run: workspace_lints_problems,
    },
    Check {
        name: "version",
        rule: "every publishable crate has `version.workspace = true`",
        run: workspace_version_problems,
    },
    Check {
        name: "rust-version",
        rule: "the workspace's rust-version is the toolchain's that runs the checks (the one CI verifies), and every publishable crate inherits it",
        run: rust_version_problems,
    },
    Check {
        name: "core-dependencies",
        rule: "the core's normal dependencies, direct or not, include no I/O or RNG crate",
        run: core_dependency_problems,
    },
    Check {
        name: "core-source",
        rule: "the core's source calls no clock and no RNG",
        run: core_source_problems,
    },
    Check {
        name: "session-methods",
        rule: "docs/architecture.md's `Session` method table lists every public `Session` method, and only those",
        run: session_table_problems,
    },
];

/// The document whose method table must match `Session`'s public methods.
pub const ARCHITECTURE_DOC: &str = "docs/architecture.md";

/// The header of that table (the first table with this header in the document).
pub const SESSION_TABLE_HEADER: &str = "| group | methods |";

/// Runs every check and prints a report; fails if any found a problem.
pub fn run_all(dir: &Path) -> Result<()> {
    let workspace = Workspace::load(dir)?;
    let mut failed = 0;
    for check in CHECKS {
        let problems = (check.run)(&workspace).unwrap_or_else(|e| vec![e.to_string()]);
        if problems.is_empty() {
            println!("ok    {:<18} {}", check.name, check.rule);
        } else {
            failed += 1;
            println!("FAIL  {:<18} {}", check.name, check.rule);
            for problem in problems {
                println!("        - {problem}");
            }
        }
    }
    if failed > 0 {
        return Err(Error::new(format!(
            "tidy: {failed} of {} checks failed",
            CHECKS.len()
        )));
    }
    println!("tidy: all {} checks passed", CHECKS.len());
    Ok(())
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| Error::new(format!("cannot read {}: {e}", path.display())))
}

fn relative(workspace: &Workspace, path: &Path) -> String {
    path.strip_prefix(&workspace.root)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Every publishable crate has a README file (the one `readme` names, or `README.md`).
pub fn readme_problems(workspace: &Workspace) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    for package in workspace.publishable() {
        let readme = package
            .dir()
            .join(package.readme.as_deref().unwrap_or("README.md"));
        if !readme.is_file() {
            problems.push(format!(
                "{}: {} does not exist (each publishable crate needs a README with a \
                 runnable example)",
                package.name,
                relative(workspace, &readme)
            ));
        } else if package.readme.is_none() {
            problems.push(format!(
                "{}: Cargo.toml does not name its readme",
                package.name
            ));
        }
    }
    Ok(problems)
}

/// Every publishable crate has a description.
pub fn description_problems(workspace: &Workspace) -> Result<Vec<String>> {
    Ok(workspace
        .publishable()
        .filter(|p| p.description.is_none())
        .map(|p| {
            format!(
                "{}: no `description` in {}",
                p.name,
                relative(workspace, &p.manifest_path)
            )
        })
        .collect())
}

/// Every publishable crate inherits the workspace lints.
pub fn workspace_lints_problems(workspace: &Workspace) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    for package in workspace.publishable() {
        if !manifest::has_workspace_lints(&read(&package.manifest_path)?) {
            problems.push(format!(
                "{}: {} lacks `[lints] workspace = true`",
                package.name,
                relative(workspace, &package.manifest_path)
            ));
        }
    }
    Ok(problems)
}

/// Every publishable crate inherits, and so shares, the workspace version.
pub fn workspace_version_problems(workspace: &Workspace) -> Result<Vec<String>> {
    let root_manifest = read(&workspace.root.join("Cargo.toml"))?;
    let Some(shared) = manifest::workspace_version(&root_manifest) else {
        return Ok(vec![
            "the root Cargo.toml has no [workspace.package] version".to_owned(),
        ]);
    };
    let mut problems = Vec::new();
    for package in workspace.publishable() {
        let text = read(&package.manifest_path)?;
        if !manifest::uses_workspace_version(&text) || package.version != shared {
            problems.push(format!(
                "{}: version {} does not come from the workspace ({shared}): use \
                 `version.workspace = true`",
                package.name, package.version
            ));
        }
    }
    Ok(problems)
}

/// The declared `rust-version` is the `MAJOR.MINOR` of the toolchain running the checks, and
/// every publishable crate inherits it.
///
/// A `rust-version` is a promise that the code builds with that toolchain. Only one toolchain is
/// installed where the checks and CI run, so the only version they verify is that one: a lower
/// one would be an untested claim (a dependency added later may need a newer compiler, and
/// nothing would notice), a higher one cannot build at all. When CI's toolchain moves, raise
/// `rust-version` with it; to declare an older one, add a CI job that builds with it first.
pub fn rust_version_problems(workspace: &Workspace) -> Result<Vec<String>> {
    let root_manifest = read(&workspace.root.join("Cargo.toml"))?;
    let running = toolchain_version()?;
    let mut problems: Vec<String> = rust_version_mismatch(
        manifest::workspace_rust_version(&root_manifest).as_deref(),
        running,
    )
    .into_iter()
    .collect();
    for package in workspace.publishable() {
        if !manifest::uses_workspace_rust_version(&read(&package.manifest_path)?) {
            problems.push(format!(
                "{}: {} does not inherit the workspace's rust-version: use \
                 `rust-version.workspace = true`",
                package.name,
                relative(workspace, &package.manifest_path)
            ));
        }
    }
    Ok(problems)
}

/// `(major, minor)` of the toolchain that runs the checks, from `$CARGO --version`
/// (`cargo 1.95.0 (f2d3ce0bd 2026-03-21)`).
fn toolchain_version() -> Result<(u64, u64)> {
    let output = cargo()
        .arg("--version")
        .output()
        .map_err(|e| Error::new(format!("cannot run cargo --version: {e}")))?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.split_whitespace()
        .nth(1)
        .and_then(major_minor)
        .ok_or_else(|| Error::new(format!("cannot read a version in `{}`", text.trim())))
}

/// `1.95` or `1.95.0` → `(1, 95)`.
fn major_minor(version: &str) -> Option<(u64, u64)> {
    let mut parts = version.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The problem with a declared `rust-version` against the running toolchain, if any.
fn rust_version_mismatch(declared: Option<&str>, running: (u64, u64)) -> Option<String> {
    let (major, minor) = running;
    let Some(declared) = declared else {
        return Some(format!(
            "the root Cargo.toml declares no [workspace.package] rust-version: declare \
             \"{major}.{minor}\", the toolchain the checks run on"
        ));
    };
    let Some(wanted) = major_minor(declared) else {
        return Some(format!(
            "rust-version \"{declared}\" is not MAJOR.MINOR[.PATCH]"
        ));
    };
    match wanted.cmp(&running) {
        std::cmp::Ordering::Equal => None,
        std::cmp::Ordering::Greater => Some(format!(
            "rust-version {declared} is newer than the toolchain running the checks \
             ({major}.{minor}): it cannot be built here"
        )),
        std::cmp::Ordering::Less => Some(format!(
            "rust-version {declared} is older than the toolchain running the checks \
             ({major}.{minor}), and nothing builds with {declared}: declare \"{major}.{minor}\" \
             (what is verified), or add a CI job that builds with {declared} first"
        )),
    }
}

/// The core's normal dependency tree (host platform, all features) holds no I/O or RNG crate.
pub fn core_dependency_problems(workspace: &Workspace) -> Result<Vec<String>> {
    if workspace.package(CORE_CRATE).is_none() {
        return Ok(vec![format!("the workspace has no {CORE_CRATE} crate")]);
    }
    let args = [
        "tree",
        "--locked",
        "-p",
        CORE_CRATE,
        "-e",
        "normal",
        "--all-features",
        "--prefix",
        "none",
        "--format",
        "{p}",
    ];
    let output = cargo()
        .args(args)
        .current_dir(&workspace.root)
        .output()
        .map_err(|e| Error::new(format!("cannot run cargo tree: {e}")))?;
    if !output.status.success() {
        return Err(Error::new(format!(
            "cargo {} failed:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim_end()
        )));
    }
    Ok(banned_in_tree(&String::from_utf8_lossy(&output.stdout)))
}

/// The banned crates in `cargo tree --prefix none --format {p}` output.
fn banned_in_tree(tree: &str) -> Vec<String> {
    let mut found: Vec<&str> = tree
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| IO_AND_RNG_CRATES.contains(name))
        .collect();
    found.sort_unstable();
    found.dedup();
    found
        .into_iter()
        .map(|name| {
            format!(
                "{CORE_CRATE} depends on {name} (see why: cargo tree -p {CORE_CRATE} -e normal \
                 --all-features -i {name})"
            )
        })
        .collect()
}

/// No file under the core's `src/` calls the clock or an RNG (comments and strings aside).
pub fn core_source_problems(workspace: &Workspace) -> Result<Vec<String>> {
    let Some(core) = workspace.package(CORE_CRATE) else {
        return Ok(vec![format!("the workspace has no {CORE_CRATE} crate")]);
    };
    let mut files = Vec::new();
    collect_rust_files(&core.dir().join("src"), &mut files)?;
    files.sort();
    let mut problems = Vec::new();
    for file in files {
        for (line, call) in forbidden_calls(&read(&file)?) {
            problems.push(format!(
                "{}:{line}: calls {call}; take the time or randomness from the caller instead",
                relative(workspace, &file)
            ));
        }
    }
    Ok(problems)
}

/// docs/architecture.md's `Session` method table names exactly the public methods of the core's
/// `impl Session` block (`src/session.rs`): none missing, none that does not exist.
pub fn session_table_problems(workspace: &Workspace) -> Result<Vec<String>> {
    let Some(core) = workspace.package(CORE_CRATE) else {
        return Ok(vec![format!("the workspace has no {CORE_CRATE} crate")]);
    };
    let source_path = core.dir().join("src/session.rs");
    let source = read(&source_path)?;
    let doc = read(&workspace.root.join(ARCHITECTURE_DOC))?;
    Ok(session_table_mismatches(
        &source,
        &doc,
        &relative(workspace, &source_path),
    ))
}

/// What differs between the public methods of `impl Session` in `source` and the method table
/// of `doc`, one line each; `source_name` names the source in the messages.
pub fn session_table_mismatches(source: &str, doc: &str, source_name: &str) -> Vec<String> {
    let methods = public_session_methods(source);
    if methods.is_empty() {
        return vec![format!(
            "{source_name}: no `pub fn` found in `impl Session {{ .. }}`"
        )];
    }
    let Some(table) = session_table_methods(doc) else {
        return vec![format!(
            "{ARCHITECTURE_DOC}: no table with the header `{SESSION_TABLE_HEADER}`"
        )];
    };
    let mut problems = Vec::new();
    for method in &methods {
        if !table.contains(method) {
            problems.push(format!(
                "{ARCHITECTURE_DOC}: the `Session` table misses `{method}` (public in {source_name})"
            ));
        }
    }
    for (index, name) in table.iter().enumerate() {
        if !methods.contains(name) {
            problems.push(format!(
                "{ARCHITECTURE_DOC}: the `Session` table names `{name}`, which is not a public method in {source_name}"
            ));
        } else if table[..index].contains(name) {
            problems.push(format!(
                "{ARCHITECTURE_DOC}: the `Session` table names `{name}` twice"
            ));
        }
    }
    problems
}

/// The names of the `pub fn`s of the first inherent `impl Session {` block (comments and strings
/// aside), in source order. The block ends at the first line that is a lone `}`.
pub fn public_session_methods(source: &str) -> Vec<String> {
    let code = blank_comments_and_strings(source);
    let mut lines = code
        .lines()
        .skip_while(|l| l.trim_end() != "impl Session {");
    if lines.next().is_none() {
        return Vec::new();
    }
    lines
        .take_while(|l| l.trim_end() != "}")
        .filter_map(|line| {
            let rest = line.trim_start().strip_prefix("pub fn ")?;
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            (!name.is_empty()).then_some(name)
        })
        .collect()
}

/// The backticked names in the second column of the first table headed
/// [`SESSION_TABLE_HEADER`], in order; `None` without such a table.
pub fn session_table_methods(doc: &str) -> Option<Vec<String>> {
    let mut lines = doc.lines().skip_while(|l| l.trim() != SESSION_TABLE_HEADER);
    lines.next()?;
    let names = lines
        .skip_while(|l| l.trim_start().starts_with("|---") || l.trim_start().starts_with("| ---"))
        .take_while(|l| l.trim_start().starts_with('|'))
        .filter_map(|row| row.split('|').nth(2))
        .flat_map(|cell| {
            cell.split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    Some(names)
}

fn collect_rust_files(dir: &Path, files: &mut Vec<std::path::PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| Error::new(format!("cannot list {}: {e}", dir.display())))?;
    for entry in entries {
        let path = entry
            .map_err(|e| Error::new(format!("cannot list {}: {e}", dir.display())))?
            .path();
        if path.is_dir() {
            collect_rust_files(&path, files)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    Ok(())
}

/// (1-based line, call) for each clock or RNG call in Rust source, ignoring comments (so docs
/// may say "never calls `SystemTime::now`") and string literals.
pub fn forbidden_calls(source: &str) -> Vec<(usize, &'static str)> {
    let code = blank_comments_and_strings(source);
    let mut found = Vec::new();
    for (index, line) in code.lines().enumerate() {
        for call in CLOCK_AND_RNG_CALLS {
            if line.contains(call) {
                found.push((index + 1, call));
            }
        }
    }
    found
}

/// The source with comments and string/char literal contents replaced by spaces (newlines
/// kept, so line numbers stay right).
fn blank_comments_and_strings(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if c == 'r'
            && matches!(next, Some('"' | '#'))
            && !is_ident(chars.get(i.wrapping_sub(1)))
        {
            // Raw string r"..." / r#"..."#.
            let hashes = chars[i + 1..].iter().take_while(|c| **c == '#').count();
            if chars.get(i + 1 + hashes) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            let closing: Vec<char> = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            out.push_str(&" ".repeat(hashes + 2));
            i += hashes + 2;
            while i < chars.len() && !chars[i..].starts_with(&closing) {
                out.push(blank(chars[i]));
                i += 1;
            }
            out.push_str(&" ".repeat(closing.len().min(chars.len() - i.min(chars.len()))));
            i += closing.len();
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                let skip = if chars[i] == '\\' { 2 } else { 1 };
                for k in 0..skip {
                    if let Some(ch) = chars.get(i + k) {
                        out.push(blank(*ch));
                    }
                }
                i += skip;
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' && (next == Some('\\') || chars.get(i + 2) == Some(&'\'')) {
            // A char literal ('x' or '\n'); a lone quote is a lifetime.
            let end = chars[i + 1..]
                .iter()
                .skip(1)
                .position(|c| *c == '\'')
                .map_or(chars.len(), |p| i + 2 + p);
            while i <= end && i < chars.len() {
                out.push(' ');
                i += 1;
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn is_ident(c: Option<&char>) -> bool {
    c.is_some_and(|c| c.is_alphanumeric() || *c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_version_must_be_the_verified_toolchain() {
        assert_eq!(rust_version_mismatch(Some("1.95"), (1, 95)), None);
        assert_eq!(rust_version_mismatch(Some("1.95.0"), (1, 95)), None);
        let older = rust_version_mismatch(Some("1.89"), (1, 95)).unwrap();
        assert!(older.contains("nothing builds with 1.89"), "{older}");
        let newer = rust_version_mismatch(Some("1.96"), (1, 95)).unwrap();
        assert!(newer.contains("cannot be built here"), "{newer}");
        assert!(rust_version_mismatch(None, (1, 95))
            .unwrap()
            .contains("declare \"1.95\""));
        assert!(rust_version_mismatch(Some("one"), (1, 95)).is_some());
        assert_eq!(major_minor("1.95.0"), Some((1, 95)));
        assert_eq!(major_minor("1"), None);
    }

    #[test]
    fn finds_calls_but_not_mentions_in_comments_or_strings() {
        let source = r##"//! The core never calls `SystemTime::now()`: the caller passes `now`.
use std::time::Instant;
/* a block comment: Instant::now()
   /* nested: thread_rng() */ still a comment: OsRng */
fn f() -> (Instant, char, &'static str) {
    let label = "rand::random is banned";
    let raw = r#"getrandom "quoted""#;
    let c = '"'; let started = Instant::now(); // and SystemTime::now() here is a comment
    (started, c, label)
}
fn g<'a>(x: &'a str) -> u8 { let _ = x; rand::random() }
"##;
        assert_eq!(
            forbidden_calls(source),
            [(8, "Instant::now"), (11, "rand::random")]
        );
    }

    const SESSION: &str = r#"
pub struct Session {}
impl Session {
    /// Not `pub fn hidden` (a comment), nor "pub fn quoted" (a string).
    pub fn new() -> Self { Self {} }
    fn private(&self) {}
    pub fn state(&self) -> u8 { 0 }
    pub(crate) fn internal(&self) {}
}
impl Other {
    pub fn elsewhere(&self) {}
}
"#;

    #[test]
    fn reads_the_public_methods_of_impl_session() {
        assert_eq!(public_session_methods(SESSION), ["new", "state"]);
        assert!(public_session_methods("struct Session;").is_empty());
    }

    #[test]
    fn reads_the_method_table() {
        let doc =
            "text `not_this`\n\n| group | methods |\n|---|---|\n| getters | `state`, `tokens` |\n\
                   | outputs (`#[must_use]`) | `poll` |\n\nafter `not_that`\n";
        assert_eq!(
            session_table_methods(doc).unwrap(),
            ["state", "tokens", "poll"]
        );
        assert_eq!(session_table_methods("no table"), None);
    }

    #[test]
    fn reports_missing_unknown_and_repeated_methods() {
        let doc = "| group | methods |\n|---|---|\n| all | `new`, `gone`, `new` |\n";
        let problems = session_table_mismatches(SESSION, doc, "session.rs");
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("misses `state`"));
        assert!(problems[1].contains("names `gone`, which is not"));
        assert!(problems[2].contains("names `new` twice"));
        let good = "| group | methods |\n|---|---|\n| all | `new`, `state` |\n";
        assert!(session_table_mismatches(SESSION, good, "session.rs").is_empty());
    }

    #[test]
    fn reads_banned_crates_from_cargo_tree() {
        let tree = "mailup-auth-core v0.1.0 (/ws/crates/core)\nhttp v1.3.1\ntokio v1.45.0\n\
                    rand v0.8.5\ntokio v1.45.0\nrand_core v0.6.4\n";
        let problems = banned_in_tree(tree);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("depends on rand "));
        assert!(problems[1].contains("depends on tokio "));
    }
}
