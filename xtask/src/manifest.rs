//! Textual edits and reads of `Cargo.toml` and `Cargo.lock`.
//!
//! The edits change only the version strings they target and keep every comment, blank line and
//! key order, which a TOML library would not guarantee without a format-preserving parser that
//! this crate does not want to depend on. The scanner understands the subset of TOML that cargo
//! manifests use in practice: `[table]` headers (dotted and quoted keys), `key = value` lines,
//! single-line inline tables, basic and literal strings, and `#` comments.

use std::collections::BTreeSet;

use crate::version::Version;

/// Keys of a table header such as `[target.'cfg(unix)'.dependencies]`, unquoted.
fn header_keys(line: &str) -> Option<Vec<String>> {
    let trimmed = line.trim();
    let inner = trimmed
        .strip_prefix("[[")
        .and_then(|rest| rest.split_once("]]").map(|(keys, _)| keys))
        .or_else(|| {
            trimmed.strip_prefix('[').and_then(|rest| {
                let end = closing_bracket(rest)?;
                Some(&rest[..end])
            })
        })?;
    Some(split_dotted(inner))
}

fn closing_bracket(text: &str) -> Option<usize> {
    let mut quote = None;
    for (i, c) in text.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), _) if c == q => quote = None,
            (None, ']') => return Some(i),
            _ => {}
        }
    }
    None
}

/// `a."b.c".d` → `["a", "b.c", "d"]`.
fn split_dotted(text: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut current = String::new();
    let mut quote = None;
    for c in text.chars() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), _) if c == q => quote = None,
            (None, '.') => keys.push(std::mem::take(&mut current).trim().to_owned()),
            (None, c) if c.is_whitespace() => {}
            _ => current.push(c),
        }
    }
    keys.push(current.trim().to_owned());
    keys
}

const DEPENDENCY_TABLES: [&str; 3] = ["dependencies", "dev-dependencies", "build-dependencies"];

/// What the lines under a header are.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Table {
    /// `[workspace.package]`.
    WorkspacePackage,
    /// `[package]`.
    Package,
    /// `[lints]`.
    Lints,
    /// A table of dependencies: `[dependencies]`, `[workspace.dependencies]`,
    /// `[target.X.dev-dependencies]`, ...
    Dependencies,
    /// One dependency as a table: `[dependencies.NAME]`, ...
    Dependency(String),
    /// Anything else, and the lines before the first header.
    Other,
}

fn classify(keys: &[String]) -> Table {
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let is_deps = |key: &str| DEPENDENCY_TABLES.contains(&key);
    match keys.as_slice() {
        ["workspace", "package"] => Table::WorkspacePackage,
        ["package"] => Table::Package,
        ["lints"] => Table::Lints,
        [deps] | ["workspace", deps] | ["target", _, deps] if is_deps(deps) => Table::Dependencies,
        [deps, name] | ["workspace", deps, name] | ["target", _, deps, name] if is_deps(deps) => {
            Table::Dependency((*name).to_owned())
        }
        _ => Table::Other,
    }
}

/// A `key = value` line: the dotted key (unquoted) and the byte offset where the value starts.
fn key_value(line: &str) -> Option<(Vec<String>, usize)> {
    let trimmed = line.trim_start();
    if trimmed.starts_with('#') || trimmed.starts_with('[') {
        return None;
    }
    let mut quote = None;
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), _) if c == q => quote = None,
            (None, '=') => {
                let value_start = i + 1 + (line[i + 1..].len() - line[i + 1..].trim_start().len());
                return Some((split_dotted(&line[..i]), value_start));
            }
            _ => {}
        }
    }
    None
}

/// The byte range of the string value at `start` (inside the quotes), if the value is a string.
fn string_at(line: &str, start: usize) -> Option<(usize, usize)> {
    let rest = &line[start..];
    let quote = rest.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let end = rest[1..].find(quote)?;
    Some((start + 1, start + 1 + end))
}

/// In an inline table (`{ path = "..", version = "1.0" }`) starting at `start`: the byte range
/// of the string value of `key`.
fn inline_string(line: &str, start: usize, key: &str) -> Option<(usize, usize)> {
    let bytes = line.as_bytes();
    let mut quote = None;
    let mut i = start;
    let mut key_start = None;
    while i < bytes.len() {
        let c = bytes[i] as char;
        match (quote, c) {
            (Some(q), _) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '#') => return None,
            (None, '{' | ',') => key_start = Some(i + 1),
            (None, '=') => {
                if let Some(from) = key_start.take() {
                    if line[from..i].trim() == key {
                        let value =
                            i + 1 + (line[i + 1..].len() - line[i + 1..].trim_start().len());
                        return string_at(line, value);
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// The requirement with its version replaced, keeping an operator prefix (`=`, `^`, `~`).
fn bumped_requirement(old: &str, new: &Version) -> String {
    let operator: String = old.chars().take_while(|c| !c.is_ascii_digit()).collect();
    format!("{}{new}", operator.trim())
}

/// What `bump_manifest` changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ManifestBump {
    /// The new text.
    pub text: String,
    /// Whether `[workspace.package] version` was changed.
    pub workspace_version: bool,
    /// Internal dependency requirements changed, by dependency name, in file order.
    pub requirements: Vec<String>,
}

/// Sets `[workspace.package] version` (if `bump_workspace_version`) and the `version` of every
/// dependency on a crate in `internal`, in every dependency table form, to `new`.
pub fn bump_manifest(
    text: &str,
    internal: &BTreeSet<String>,
    new: &Version,
    bump_workspace_version: bool,
) -> ManifestBump {
    let mut result = ManifestBump::default();
    let mut table = Table::Other;
    let replace = |line: &mut String, range: (usize, usize)| {
        let old = line[range.0..range.1].to_owned();
        let new = bumped_requirement(&old, new);
        line.replace_range(range.0..range.1, &new);
        old != new
    };
    for raw in text.split_inclusive('\n') {
        let mut line = raw.to_owned();
        if let Some(keys) = header_keys(raw) {
            table = classify(&keys);
        } else if let Some((key, value)) = key_value(raw) {
            let key: Vec<&str> = key.iter().map(String::as_str).collect();
            match (&table, key.as_slice()) {
                (Table::WorkspacePackage, ["version"]) if bump_workspace_version => {
                    if let Some(range) = string_at(raw, value) {
                        line.replace_range(range.0..range.1, &new.to_string());
                        result.workspace_version = true;
                    }
                }
                (Table::Dependency(name), ["version"]) if internal.contains(name) => {
                    if let Some(range) = string_at(raw, value) {
                        if replace(&mut line, range) {
                            result.requirements.push(name.clone());
                        }
                    }
                }
                (Table::Dependencies, [name, "version"]) if internal.contains(*name) => {
                    if let Some(range) = string_at(raw, value) {
                        if replace(&mut line, range) {
                            result.requirements.push((*name).to_owned());
                        }
                    }
                }
                (Table::Dependencies, [name]) => {
                    let package = inline_string(raw, value, "package")
                        .map(|(a, b)| &raw[a..b])
                        .unwrap_or(name);
                    if internal.contains(package) {
                        let range = if raw[value..].starts_with('{') {
                            inline_string(raw, value, "version")
                        } else {
                            string_at(raw, value)
                        };
                        if let Some(range) = range {
                            if replace(&mut line, range) {
                                result.requirements.push(package.to_owned());
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        result.text.push_str(&line);
    }
    result
}

/// `[workspace.package] version`, if the manifest sets one.
pub fn workspace_version(text: &str) -> Option<String> {
    string_in_table(text, &Table::WorkspacePackage, "version")
}

fn string_in_table(text: &str, wanted: &Table, wanted_key: &str) -> Option<String> {
    let mut table = Table::Other;
    for line in text.lines() {
        if let Some(keys) = header_keys(line) {
            table = classify(&keys);
        } else if let Some((key, value)) = key_value(line) {
            if &table == wanted && key == [wanted_key] {
                let (a, b) = string_at(line, value)?;
                return Some(line[a..b].to_owned());
            }
        }
    }
    None
}

/// Whether a `[table]`-scoped `key` (possibly given in the table's parent as `table.key` or
/// `key = { workspace = true }`) is set to `true`-`workspace` inheritance.
fn inherits_from_workspace(text: &str, in_table: &Table, table_name: &str, key: &str) -> bool {
    let mut table = Table::Other;
    let mut before_any_header = true;
    for line in text.lines() {
        if let Some(keys) = header_keys(line) {
            table = classify(&keys);
            before_any_header = false;
            continue;
        }
        let Some((keys, value)) = key_value(line) else {
            continue;
        };
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let value = line[value..].trim_end();
        let value = value.split('#').next().unwrap_or("").trim();
        let is_true = value == "true";
        let inline_workspace =
            value.starts_with('{') && value.replace(' ', "").contains("workspace=true");
        if &table == in_table {
            match keys.as_slice() {
                [k, "workspace"] if *k == key && is_true => return true,
                [k] if *k == key && inline_workspace => return true,
                ["workspace"] if key.is_empty() && is_true => return true,
                _ => {}
            }
        }
        if before_any_header {
            match keys.as_slice() {
                [t, "workspace"] if *t == table_name && key.is_empty() && is_true => return true,
                [t, k, "workspace"] if *t == table_name && *k == key && is_true => return true,
                _ => {}
            }
        }
    }
    false
}

/// Whether the manifest has `[lints] workspace = true`.
pub fn has_workspace_lints(text: &str) -> bool {
    inherits_from_workspace(text, &Table::Lints, "lints", "")
}

/// Whether the manifest has `version.workspace = true` in `[package]`.
pub fn uses_workspace_version(text: &str) -> bool {
    inherits_from_workspace(text, &Table::Package, "package", "version")
}

/// Sets the version of the workspace's own packages named in `internal` in a `Cargo.lock`, as
/// cargo would on its next run. Registry packages of the same name (with a `source`) are left.
pub fn bump_lockfile(text: &str, internal: &BTreeSet<String>, old: &str, new: &Version) -> String {
    // Blocks start at a `[[package]]` (or any other) header; the first holds the preamble.
    let mut blocks: Vec<Vec<&str>> = vec![Vec::new()];
    for line in text.split_inclusive('\n') {
        if line.starts_with('[') {
            blocks.push(Vec::new());
        }
        blocks.last_mut().unwrap_or(&mut Vec::new()).push(line);
    }
    let name_of = |block: &[&str]| {
        block
            .iter()
            .find_map(|l| l.strip_prefix("name = "))
            .map(|n| n.trim().trim_matches('"').to_owned())
    };
    let has_source = |block: &[&str]| block.iter().any(|l| l.starts_with("source = "));
    let old_line = format!("version = \"{old}\"");
    // Registry packages that have exactly the old version: references to them must stay.
    let registry_at_old: BTreeSet<String> = blocks
        .iter()
        .filter(|b| has_source(b) && b.iter().any(|l| l.trim_end() == old_line))
        .filter_map(|b| name_of(b))
        .collect();
    let mut out = String::with_capacity(text.len());
    for block in &blocks {
        let own = name_of(block).is_some_and(|n| internal.contains(&n)) && !has_source(block);
        for line in block {
            if own && line.trim_end() == old_line {
                out.push_str(&format!("version = \"{new}\"\n"));
                continue;
            }
            // A dependency is listed with its version (`"name 1.0.0"`) when several packages
            // share its name; rewrite it unless a registry package has that very version.
            let mut line = (*line).to_owned();
            for name in internal.iter().filter(|n| !registry_at_old.contains(*n)) {
                let reference = format!("\"{name} {old}\"");
                line = line.replace(&reference, &format!("\"{name} {new}\""));
            }
            out.push_str(&line);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn internal() -> BTreeSet<String> {
        ["core", "mid", "util", "app"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect()
    }

    #[test]
    fn bumps_every_internal_requirement_form_and_nothing_else() {
        let before = r#"# top comment, version = "1.4.2"
[workspace.package]
version = "1.4.2" # the shared version
edition = "2021"

[workspace.dependencies]
core = { path = "crates/core", version = "1.4.2" }
mid = {version="=1.4.2",path="crates/mid"}
renamed = { package = "util", path = "crates/util", version = "~1.4" }
serde = { version = "1.4.2", features = ["derive"] }
plain = "1.4.2"

[workspace.dependencies.app]
path = "crates/app"
version = "1.4.2"

[dependencies]
core.workspace = true
mid.version = "1.4.2"
mid.path = "../mid"
other = "1.4.2"

[target.'cfg(unix)'.dev-dependencies]
util = { path = "../util", version = "^1.4.2" }

[package]
version = "1.4.2"
"#;
        let new: Version = "1.5.0".parse().unwrap();
        let bump = bump_manifest(before, &internal(), &new, true);
        let expected = r#"# top comment, version = "1.4.2"
[workspace.package]
version = "1.5.0" # the shared version
edition = "2021"

[workspace.dependencies]
core = { path = "crates/core", version = "1.5.0" }
mid = {version="=1.5.0",path="crates/mid"}
renamed = { package = "util", path = "crates/util", version = "~1.5.0" }
serde = { version = "1.4.2", features = ["derive"] }
plain = "1.4.2"

[workspace.dependencies.app]
path = "crates/app"
version = "1.5.0"

[dependencies]
core.workspace = true
mid.version = "1.5.0"
mid.path = "../mid"
other = "1.4.2"

[target.'cfg(unix)'.dev-dependencies]
util = { path = "../util", version = "^1.5.0" }

[package]
version = "1.4.2"
"#;
        assert_eq!(bump.text, expected);
        assert!(bump.workspace_version);
        assert_eq!(
            bump.requirements,
            ["core", "mid", "util", "app", "mid", "util"]
        );
    }

    #[test]
    fn member_manifest_keeps_its_package_version() {
        let before = "[package]\nname = \"x\"\nversion = \"0.0.0\"\n\n[dependencies]\napp = { path = \"../app\" }\n";
        let bump = bump_manifest(before, &internal(), &"2.0.0".parse().unwrap(), false);
        assert_eq!(bump.text, before);
        assert!(bump.requirements.is_empty());
    }

    #[test]
    fn reads_workspace_version_and_inheritance() {
        let root = "[workspace]\nmembers = []\n\n[workspace.package]\nversion = \"0.3.1\"\n";
        assert_eq!(workspace_version(root).as_deref(), Some("0.3.1"));
        assert_eq!(workspace_version("[package]\nversion = \"1.0.0\"\n"), None);

        let member =
            "[package]\nname = \"a\"\nversion.workspace = true\n\n[lints]\nworkspace = true\n";
        assert!(has_workspace_lints(member));
        assert!(uses_workspace_version(member));
        let inline = "lints.workspace = true\n[package]\nversion = { workspace = true }\n";
        assert!(has_workspace_lints(inline));
        assert!(uses_workspace_version(inline));
        let neither = "[package]\nversion = \"1.0.0\"\n\n[lints.rust]\nworkspace = true\n";
        assert!(!has_workspace_lints(neither));
        assert!(!uses_workspace_version(neither));
    }

    #[test]
    fn bumps_own_packages_in_the_lockfile() {
        // `util` is both a member and, at another version, a registry package.
        let lock = r#"version = 4

[[package]]
name = "core"
version = "1.4.2"

[[package]]
name = "mid"
version = "1.4.2"
dependencies = [
 "core",
 "util 1.4.2",
 "util 0.9.0",
]

[[package]]
name = "util"
version = "1.4.2"

[[package]]
name = "util"
version = "0.9.0"
source = "registry+https://github.com/rust-lang/crates.io-index"
checksum = "00"
"#;
        let expected = r#"version = 4

[[package]]
name = "core"
version = "1.5.0"

[[package]]
name = "mid"
version = "1.5.0"
dependencies = [
 "core",
 "util 1.5.0",
 "util 0.9.0",
]

[[package]]
name = "util"
version = "1.5.0"

[[package]]
name = "util"
version = "0.9.0"
source = "registry+https://github.com/rust-lang/crates.io-index"
checksum = "00"
"#;
        let bumped = bump_lockfile(lock, &internal(), "1.4.2", &"1.5.0".parse().unwrap());
        assert_eq!(bumped, expected);
    }
}
