//! Edits and reads of `Cargo.toml` and `Cargo.lock`, through `toml_edit`: a format-preserving
//! TOML document, so an edit changes only the version strings it targets and keeps every
//! comment, blank line, key order and the form each dependency is written in (a string, an
//! inline table, dotted keys, a `[dependencies.NAME]` table).

use std::collections::BTreeSet;

use toml_edit::{DocumentMut, Item, TableLike, Value};

use crate::version::Version;
use crate::{Error, Result};

/// The dependency tables a manifest may have, at the root and under `[target.X]`.
const DEPENDENCY_TABLES: [&str; 3] = ["dependencies", "dev-dependencies", "build-dependencies"];

fn parse(text: &str, what: &str) -> Result<DocumentMut> {
    text.parse::<DocumentMut>()
        .map_err(|e| Error::new(format!("{what} is not valid TOML: {e}")))
}

/// The requirement with its version replaced, keeping an operator prefix (`=`, `^`, `~`).
fn bumped_requirement(old: &str, new: &Version) -> String {
    let operator: String = old.chars().take_while(|c| !c.is_ascii_digit()).collect();
    format!("{}{new}", operator.trim())
}

/// Replaces a string value, keeping the spaces and comment around it.
fn set_string(value: &mut Value, text: &str) {
    let decor = value.decor().clone();
    *value = Value::from(text);
    *value.decor_mut() = decor;
}

/// What `bump_manifest` changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ManifestBump {
    /// The new text.
    pub text: String,
    /// Whether `[workspace.package] version` was changed.
    pub workspace_version: bool,
    /// Internal dependency requirements changed, by dependency name: `[workspace.dependencies]`
    /// first, then `[dependencies]`, `[dev-dependencies]`, `[build-dependencies]`, then each
    /// `[target.X]`'s, each table in file order.
    pub requirements: Vec<String>,
}

/// Every dependency table of the document, in the order [`ManifestBump::requirements`] lists.
fn dependency_tables(doc: &mut DocumentMut) -> Vec<&mut dyn TableLike> {
    let mut tables: Vec<&mut dyn TableLike> = Vec::new();
    let root = doc.as_table_mut();
    let mut workspace_deps = None;
    let mut root_deps = Vec::new();
    let mut target_deps = Vec::new();
    for (key, item) in root.iter_mut() {
        match key.get() {
            "workspace" => {
                workspace_deps = item
                    .as_table_like_mut()
                    .and_then(|ws| ws.get_mut("dependencies"))
                    .and_then(Item::as_table_like_mut);
            }
            "target" => {
                if let Some(targets) = item.as_table_like_mut() {
                    for (_, target) in targets.iter_mut() {
                        if let Some(target) = target.as_table_like_mut() {
                            for (name, deps) in target.iter_mut() {
                                if DEPENDENCY_TABLES.contains(&name.get()) {
                                    if let Some(deps) = deps.as_table_like_mut() {
                                        target_deps.push(deps);
                                    }
                                }
                            }
                        }
                    }
                }
            }
            name if DEPENDENCY_TABLES.contains(&name) => {
                if let Some(deps) = item.as_table_like_mut() {
                    root_deps.push((name.to_owned(), deps));
                }
            }
            _ => {}
        }
    }
    root_deps.sort_by_key(|(name, _)| DEPENDENCY_TABLES.iter().position(|t| t == name));
    tables.extend(workspace_deps);
    tables.extend(root_deps.into_iter().map(|(_, deps)| deps));
    tables.extend(target_deps);
    tables
}

/// Sets `[workspace.package] version` (if `bump_workspace_version`) and the `version` of every
/// dependency on a crate in `internal`, in every dependency table form, to `new`.
pub fn bump_manifest(
    text: &str,
    internal: &BTreeSet<String>,
    new: &Version,
    bump_workspace_version: bool,
) -> Result<ManifestBump> {
    let mut doc = parse(text, "the manifest")?;
    let mut result = ManifestBump::default();
    if bump_workspace_version {
        let version = doc
            .get_mut("workspace")
            .and_then(Item::as_table_like_mut)
            .and_then(|ws| ws.get_mut("package"))
            .and_then(Item::as_table_like_mut)
            .and_then(|package| package.get_mut("version"))
            .and_then(Item::as_value_mut);
        if let Some(version) = version.filter(|v| v.is_str()) {
            set_string(version, &new.to_string());
            result.workspace_version = true;
        }
    }
    for table in dependency_tables(&mut doc) {
        for (key, dependency) in table.iter_mut() {
            let Some((package, requirement)) =
                internal_requirement(key.get(), dependency, internal)
            else {
                continue;
            };
            let old = requirement.as_str().unwrap_or_default().to_owned();
            let bumped = bumped_requirement(&old, new);
            if bumped != old {
                set_string(requirement, &bumped);
                result.requirements.push(package);
            }
        }
    }
    result.text = doc.to_string();
    Ok(result)
}

/// The package a dependency entry names (its `package` key, else its own name) and its version
/// requirement string, when that package is one of `internal`.
fn internal_requirement<'a>(
    name: &str,
    dependency: &'a mut Item,
    internal: &BTreeSet<String>,
) -> Option<(String, &'a mut Value)> {
    if dependency.as_value().is_some_and(Value::is_str) {
        // `name = "1.2.3"`
        return dependency
            .as_value_mut()
            .filter(|_| internal.contains(name))
            .map(|value| (name.to_owned(), value));
    }
    // `name = { ... }`, `name.version = ...`, `[dependencies.name]`
    let spec = dependency.as_table_like_mut()?;
    let package = spec
        .get("package")
        .and_then(Item::as_str)
        .unwrap_or(name)
        .to_owned();
    if !internal.contains(&package) {
        return None;
    }
    let version = spec
        .get_mut("version")
        .and_then(Item::as_value_mut)
        .filter(|v| v.is_str())?;
    Some((package, version))
}

/// `[workspace.package] version`, if the manifest sets one.
pub fn workspace_version(text: &str) -> Option<String> {
    workspace_package_string(text, "version")
}

/// `[workspace.package] rust-version`, if the manifest sets one.
pub fn workspace_rust_version(text: &str) -> Option<String> {
    workspace_package_string(text, "rust-version")
}

fn workspace_package_string(text: &str, key: &str) -> Option<String> {
    let doc = text.parse::<DocumentMut>().ok()?;
    doc.get("workspace")?
        .get("package")?
        .get(key)?
        .as_str()
        .map(str::to_owned)
}

/// Whether `item` (a table in any form) has `workspace = true`.
fn inherits(item: Option<&Item>) -> bool {
    item.and_then(Item::as_table_like)
        .and_then(|table| table.get("workspace"))
        .and_then(Item::as_bool)
        == Some(true)
}

/// Whether the manifest has `[lints] workspace = true` (or `lints.workspace = true`, or
/// `lints = { workspace = true }`).
pub fn has_workspace_lints(text: &str) -> bool {
    text.parse::<DocumentMut>()
        .is_ok_and(|doc| inherits(doc.get("lints")))
}

/// Whether the manifest has `version.workspace = true` (or `version = { workspace = true }`)
/// in `[package]`.
pub fn uses_workspace_version(text: &str) -> bool {
    package_inherits(text, "version")
}

/// Whether the manifest has `rust-version.workspace = true` in `[package]`.
pub fn uses_workspace_rust_version(text: &str) -> bool {
    package_inherits(text, "rust-version")
}

fn package_inherits(text: &str, key: &str) -> bool {
    text.parse::<DocumentMut>()
        .is_ok_and(|doc| inherits(doc.get("package").and_then(|p| p.get(key))))
}

/// Sets the version of the workspace's own packages named in `internal` in a `Cargo.lock`, as
/// cargo would on its next run. Registry packages of the same name (with a `source`) are left.
pub fn bump_lockfile(
    text: &str,
    internal: &BTreeSet<String>,
    old: &str,
    new: &Version,
) -> Result<String> {
    let mut doc = parse(text, "Cargo.lock")?;
    let Some(packages) = doc
        .get_mut("package")
        .and_then(Item::as_array_of_tables_mut)
    else {
        return Ok(text.to_owned());
    };
    let name_of = |package: &toml_edit::Table| {
        package
            .get("name")
            .and_then(Item::as_str)
            .map(str::to_owned)
    };
    let version_of = |package: &toml_edit::Table| {
        package
            .get("version")
            .and_then(Item::as_str)
            .map(str::to_owned)
    };
    // Registry packages that have exactly the old version: references to them must stay.
    let registry_at_old: BTreeSet<String> = packages
        .iter()
        .filter(|p| p.contains_key("source") && version_of(p).as_deref() == Some(old))
        .filter_map(name_of)
        .collect();
    let renamed: Vec<(String, String)> = internal
        .iter()
        .filter(|name| !registry_at_old.contains(*name))
        .map(|name| (format!("{name} {old}"), format!("{name} {new}")))
        .collect();
    for package in packages.iter_mut() {
        let own = name_of(package).is_some_and(|n| internal.contains(&n))
            && !package.contains_key("source");
        if own && version_of(package).as_deref() == Some(old) {
            if let Some(version) = package.get_mut("version").and_then(Item::as_value_mut) {
                set_string(version, &new.to_string());
            }
        }
        // A dependency is listed with its version (`"name 1.0.0"`) when several packages share
        // its name; rewrite it unless a registry package has that very version.
        let Some(dependencies) = package.get_mut("dependencies").and_then(Item::as_array_mut)
        else {
            continue;
        };
        for dependency in dependencies.iter_mut() {
            let Some(text) = dependency.as_str() else {
                continue;
            };
            if let Some((_, to)) = renamed.iter().find(|(from, _)| from == text) {
                let to = to.clone();
                set_string(dependency, &to);
            }
        }
    }
    Ok(doc.to_string())
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
        let bump = bump_manifest(before, &internal(), &new, true).unwrap();
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
        let bump = bump_manifest(before, &internal(), &"2.0.0".parse().unwrap(), false).unwrap();
        assert_eq!(bump.text, before);
        assert!(bump.requirements.is_empty());
    }

    #[test]
    fn invalid_toml_is_an_error_not_a_silent_no_op() {
        let error =
            bump_manifest("[package\n", &internal(), &"1.0.0".parse().unwrap(), true).unwrap_err();
        assert!(error.message().contains("not valid TOML"), "{error:?}");
        assert!(bump_lockfile(
            "[[package]\n",
            &internal(),
            "1.0.0",
            &"1.0.1".parse().unwrap()
        )
        .is_err());
        assert_eq!(workspace_version("[workspace.package\n"), None);
    }

    #[test]
    fn reads_workspace_version_and_inheritance() {
        let root = "[workspace]\nmembers = []\n\n[workspace.package]\nversion = \"0.3.1\"\nrust-version = \"1.95\"\n";
        assert_eq!(workspace_version(root).as_deref(), Some("0.3.1"));
        assert_eq!(workspace_rust_version(root).as_deref(), Some("1.95"));
        assert!(uses_workspace_rust_version(
            "[package]\nrust-version.workspace = true\n"
        ));
        assert!(!uses_workspace_rust_version(
            "[package]\nrust-version = \"1.70\"\n"
        ));
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
        let bumped = bump_lockfile(lock, &internal(), "1.4.2", &"1.5.0".parse().unwrap()).unwrap();
        assert_eq!(bumped, expected);
    }
}
