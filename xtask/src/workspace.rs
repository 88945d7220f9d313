//! The workspace as `cargo metadata --no-deps` describes it: members, what each publishes, and
//! the order in which the publishable ones must be released.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::{cargo, Error, Result};

/// The kind of a dependency edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DepKind {
    /// `[dependencies]`.
    Normal,
    /// `[dev-dependencies]`: stripped by `cargo publish` when it has no version.
    Dev,
    /// `[build-dependencies]`.
    Build,
}

/// One dependency of a member, as declared.
#[derive(Debug, Clone)]
pub struct Dependency {
    /// The package it names (not the rename).
    pub name: String,
    /// The version requirement; `*` when the manifest gives none.
    pub req: String,
    /// Normal, dev or build.
    pub kind: DepKind,
    /// Set for path dependencies.
    pub path: Option<PathBuf>,
}

/// A workspace member.
#[derive(Debug, Clone)]
pub struct Package {
    /// Package name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Absolute path of its `Cargo.toml`.
    pub manifest_path: PathBuf,
    /// `false` for `publish = false`.
    pub publishable: bool,
    /// `package.description`.
    pub description: Option<String>,
    /// `package.license`.
    pub license: Option<String>,
    /// `package.license-file`.
    pub license_file: Option<String>,
    /// `package.readme`, relative to the package directory (cargo fills in `README.md` when the
    /// manifest does not say and the file exists).
    pub readme: Option<String>,
    /// `package.repository`.
    pub repository: Option<String>,
    /// Declared dependencies, all kinds.
    pub dependencies: Vec<Dependency>,
}

impl Package {
    /// The directory that holds its `Cargo.toml`.
    pub fn dir(&self) -> &Path {
        self.manifest_path.parent().unwrap_or(Path::new("."))
    }
}

/// The members of a workspace.
#[derive(Debug, Clone)]
pub struct Workspace {
    /// The directory of the root `Cargo.toml`.
    pub root: PathBuf,
    /// Members, sorted by name.
    pub packages: Vec<Package>,
}

impl Workspace {
    /// Runs `cargo metadata --format-version 1 --no-deps` in `dir` and reads its members.
    pub fn load(dir: &Path) -> Result<Self> {
        let output = cargo()
            .args(["metadata", "--format-version", "1", "--no-deps"])
            .current_dir(dir)
            .output()
            .map_err(|e| Error::new(format!("cannot run cargo metadata: {e}")))?;
        if !output.status.success() {
            return Err(Error::new(format!(
                "cargo metadata failed in {}:\n{}",
                dir.display(),
                String::from_utf8_lossy(&output.stderr).trim_end()
            )));
        }
        let json: Value = serde_json::from_slice(&output.stdout)
            .map_err(|e| Error::new(format!("cannot parse cargo metadata output: {e}")))?;
        Self::from_metadata(&json)
    }

    /// Reads the members out of `cargo metadata` JSON.
    pub fn from_metadata(json: &Value) -> Result<Self> {
        let missing = |what: &str| Error::new(format!("cargo metadata output has no {what}"));
        let root = json["workspace_root"]
            .as_str()
            .ok_or_else(|| missing("workspace_root"))?;
        let members: BTreeSet<&str> = json["workspace_members"]
            .as_array()
            .ok_or_else(|| missing("workspace_members"))?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let mut packages = Vec::new();
        for package in json["packages"]
            .as_array()
            .ok_or_else(|| missing("packages"))?
        {
            let is_member = package["id"]
                .as_str()
                .is_some_and(|id| members.contains(id));
            if is_member {
                packages.push(parse_package(package)?);
            }
        }
        packages.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Self {
            root: PathBuf::from(root),
            packages,
        })
    }

    /// The member with this name.
    pub fn package(&self, name: &str) -> Option<&Package> {
        self.packages.iter().find(|p| p.name == name)
    }

    /// Names of all members.
    pub fn member_names(&self) -> BTreeSet<String> {
        self.packages.iter().map(|p| p.name.clone()).collect()
    }

    /// Members that `cargo publish` would publish.
    pub fn publishable(&self) -> impl Iterator<Item = &Package> {
        self.packages.iter().filter(|p| p.publishable)
    }

    /// A member's dependencies on other members (any kind).
    pub fn internal_dependencies<'a>(
        &'a self,
        package: &'a Package,
    ) -> impl Iterator<Item = &'a Dependency> + 'a {
        package
            .dependencies
            .iter()
            .filter(move |d| d.path.is_some() && self.package(&d.name).is_some())
    }

    /// The publishable members in the order they must be released: each after every member it
    /// needs at build or run time (dev-dependencies do not count; they may form cycles and are
    /// not needed to package). Among crates that are ready at the same time, by name.
    pub fn publish_order(&self) -> Result<Vec<String>> {
        let publishable: BTreeSet<&str> = self.publishable().map(|p| p.name.as_str()).collect();
        let mut waiting_on: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for package in self.publishable() {
            let needs = self
                .internal_dependencies(package)
                .filter(|d| d.kind != DepKind::Dev && publishable.contains(d.name.as_str()))
                .map(|d| d.name.as_str())
                .filter(|name| *name != package.name)
                .collect();
            waiting_on.insert(package.name.as_str(), needs);
        }
        let mut order = Vec::new();
        while !waiting_on.is_empty() {
            // BTreeMap iterates by name, so the first ready crate is the smallest name.
            let next = waiting_on
                .iter()
                .find(|(_, needs)| needs.is_empty())
                .map(|(n, _)| *n);
            let Some(next) = next else {
                let stuck: Vec<&str> = waiting_on.keys().copied().collect();
                return Err(Error::new(format!(
                    "internal dependencies form a cycle among: {}",
                    stuck.join(", ")
                )));
            };
            waiting_on.remove(next);
            for needs in waiting_on.values_mut() {
                needs.remove(next);
            }
            order.push(next.to_owned());
        }
        Ok(order)
    }
}

fn parse_package(json: &Value) -> Result<Package> {
    let text = |key: &str| json[key].as_str().map(str::to_owned);
    let name = text("name").ok_or_else(|| Error::new("a package in cargo metadata has no name"))?;
    let mut dependencies = Vec::new();
    for dep in json["dependencies"].as_array().into_iter().flatten() {
        let kind = match dep["kind"].as_str() {
            None => DepKind::Normal,
            Some("dev") => DepKind::Dev,
            Some("build") => DepKind::Build,
            Some(other) => {
                return Err(Error::new(format!(
                    "{name}: unknown dependency kind `{other}`"
                )))
            }
        };
        dependencies.push(Dependency {
            name: dep["name"].as_str().unwrap_or_default().to_owned(),
            req: dep["req"].as_str().unwrap_or("*").to_owned(),
            kind,
            path: dep["path"].as_str().map(PathBuf::from),
        });
    }
    // `publish`: null = anywhere, [] = `publish = false`, [names] = those registries.
    let publishable = match &json["publish"] {
        Value::Array(registries) => !registries.is_empty(),
        _ => true,
    };
    Ok(Package {
        version: text("version").unwrap_or_default(),
        manifest_path: PathBuf::from(text("manifest_path").unwrap_or_default()),
        publishable,
        description: text("description").filter(|s| !s.trim().is_empty()),
        license: text("license").filter(|s| !s.trim().is_empty()),
        license_file: text("license_file").filter(|s| !s.trim().is_empty()),
        readme: text("readme").filter(|s| !s.trim().is_empty()),
        repository: text("repository").filter(|s| !s.trim().is_empty()),
        dependencies,
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package(name: &str, deps: &[(&str, DepKind)], publishable: bool) -> Package {
        Package {
            name: name.to_owned(),
            version: "1.0.0".to_owned(),
            manifest_path: PathBuf::from(format!("/ws/{name}/Cargo.toml")),
            publishable,
            description: None,
            license: None,
            license_file: None,
            readme: None,
            repository: None,
            dependencies: deps
                .iter()
                .map(|(dep, kind)| Dependency {
                    name: (*dep).to_owned(),
                    req: "^1.0.0".to_owned(),
                    kind: *kind,
                    path: Some(PathBuf::from(format!("/ws/{dep}"))),
                })
                .collect(),
        }
    }

    #[test]
    fn orders_by_dependencies_then_name() {
        use DepKind::*;
        let ws = Workspace {
            root: PathBuf::from("/ws"),
            packages: vec![
                package("app", &[("mid", Normal), ("util", Build)], true),
                package("core", &[("app", Dev)], true),
                package("mid", &[("core", Normal)], true),
                package("tool", &[("app", Normal)], false),
                package("util", &[], true),
            ],
        };
        assert_eq!(ws.publish_order().unwrap(), ["core", "mid", "util", "app"]);
    }

    #[test]
    fn reports_a_cycle() {
        use DepKind::*;
        let ws = Workspace {
            root: PathBuf::from("/ws"),
            packages: vec![
                package("a", &[("b", Normal)], true),
                package("b", &[("a", Normal)], true),
            ],
        };
        let error = ws.publish_order().unwrap_err();
        assert!(error.message().contains("cycle among: a, b"), "{error}");
    }
}
