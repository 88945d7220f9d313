//! The profile in effect when none is named: `--profile` / `MAILUP_PROFILE` first, then the
//! one chosen with `mailup-auth use` (one line in `default-profile`, in the CLI's config
//! directory), then `default`.
//!
//! The choice is a preference of the person at this machine, not part of a token store, so it
//! lives beside the CLI's other per-user files and applies to every store.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use mailup_auth::core::validate_profile_name;

use crate::cli::{GlobalOptions, DEFAULT_PROFILE};
use crate::failure::Failure;

/// The file's name in the config directory.
const FILE_NAME: &str = "default-profile";
/// A profile name is at most 128 bytes; anything much longer is not a file this CLI wrote.
const MAX_FILE_LEN: u64 = 1024;

/// Where the profile in effect came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ProfileSource {
    /// `--profile` or `MAILUP_PROFILE`.
    Option,
    /// `mailup-auth use`, kept in this file.
    Chosen(PathBuf),
    /// Nothing named or chosen: `default`.
    Builtin,
}

/// The file `mailup-auth use` writes: `<config dir>/mailup-auth/default-profile` (on Linux
/// `$XDG_CONFIG_HOME` or `~/.config`). `None` without a home directory.
pub(crate) fn chosen_file() -> Option<PathBuf> {
    directories::ProjectDirs::from("com", "mailup-auth", "mailup-auth")
        .map(|dirs| dirs.config_dir().join(FILE_NAME))
}

/// Fills in `global.profile` and says where it came from. A chosen-profile file that cannot
/// be read or holds no valid name is a usage error naming the file (never silently ignored:
/// the commands would act on another profile than the user chose).
pub(crate) fn resolve(global: &mut GlobalOptions) -> Result<ProfileSource, Failure> {
    if let Some(name) = &global.profile_option {
        global.profile = name.clone();
        return Ok(ProfileSource::Option);
    }
    match chosen_file() {
        Some(file) => match read_chosen(&file)? {
            Some(name) => {
                global.profile = name;
                Ok(ProfileSource::Chosen(file))
            }
            None => {
                global.profile = DEFAULT_PROFILE.to_owned();
                Ok(ProfileSource::Builtin)
            }
        },
        None => {
            global.profile = DEFAULT_PROFILE.to_owned();
            Ok(ProfileSource::Builtin)
        }
    }
}

/// The chosen profile in `file`, or `None` when there is no such file.
pub(crate) fn read_chosen(file: &Path) -> Result<Option<String>, Failure> {
    let broken = |why: String| {
        Failure::usage(format!(
            "the default profile file {} {why}; run `mailup-auth use PROFILE` to rewrite it \
             (or delete it)",
            file.display()
        ))
    };
    let handle = match std::fs::File::open(file) {
        Ok(handle) => handle,
        // No file, or no directory to hold one (a path component is a file): nothing chosen.
        // `use` could not have written there; refusing would only block every command.
        Err(error)
            if matches!(
                error.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(None)
        }
        Err(error) => return Err(broken(format!("cannot be read: {error}"))),
    };
    let mut text = String::new();
    handle
        .take(MAX_FILE_LEN + 1)
        .read_to_string(&mut text)
        .map_err(|error| broken(format!("cannot be read: {error}")))?;
    if text.len() as u64 > MAX_FILE_LEN {
        return Err(broken("is too large to hold a profile name".into()));
    }
    let name = text.trim_end_matches(['\r', '\n']);
    if validate_profile_name(name).is_err() {
        return Err(broken("does not hold a valid profile name".into()));
    }
    Ok(Some(name.to_owned()))
}

/// Records `profile` as the one to use (written to a temporary file and renamed, so a reader
/// sees the old choice or the new one). Returns the file.
pub(crate) fn write_chosen(profile: &str) -> Result<PathBuf, Failure> {
    let file = chosen_file().ok_or_else(|| {
        Failure::usage("no home directory to keep the default profile in: pass --profile")
    })?;
    write_chosen_to(&file, profile)?;
    Ok(file)
}

fn write_chosen_to(file: &Path, profile: &str) -> Result<(), Failure> {
    let cannot = |error: std::io::Error| {
        Failure::local(format!(
            "cannot write the default profile to {}: {error}",
            file.display()
        ))
    };
    let dir = file.parent().unwrap_or_else(|| Path::new("."));
    std::fs::create_dir_all(dir).map_err(cannot)?;
    let temporary = dir.join(format!(".{FILE_NAME}.{}", std::process::id()));
    std::fs::write(&temporary, format!("{profile}\n")).map_err(cannot)?;
    std::fs::rename(&temporary, file).map_err(|error| {
        let _ = std::fs::remove_file(&temporary);
        cannot(error)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chosen_profile_is_written_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("nested").join(FILE_NAME);
        assert_eq!(read_chosen(&file).unwrap(), None);
        write_chosen_to(&file, "work").unwrap();
        assert_eq!(read_chosen(&file).unwrap().as_deref(), Some("work"));
        write_chosen_to(&file, "default").unwrap();
        assert_eq!(read_chosen(&file).unwrap().as_deref(), Some("default"));
        // No temporary file is left behind.
        assert_eq!(
            std::fs::read_dir(file.parent().unwrap()).unwrap().count(),
            1
        );
    }

    #[test]
    fn a_broken_file_is_a_usage_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(FILE_NAME);
        for bad in [&b""[..], b"\n", b"a\x1bb\n", &[b'x'; 2000]] {
            std::fs::write(&file, bad).unwrap();
            let failure = read_chosen(&file).unwrap_err();
            assert_eq!(failure.code(), 2);
            assert!(failure.message().contains(&file.display().to_string()));
        }
    }
}
