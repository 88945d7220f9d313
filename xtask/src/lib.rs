//! Workspace automation for mailup-auth, run as `cargo xtask <command>` (see `docs/releasing.md`).
//!
//! This library owns the logic; `main.rs` only parses the command line. It is a library so that
//! the tidy checks can run as plain `#[test]`s (`tests/tidy.rs`) and the release logic can be
//! unit-tested. It is not for use outside this repository.
//!
//! Every child `cargo` runs through `$CARGO` (set by cargo for `cargo run` and `cargo test`), so
//! the toolchain that runs the xtask is the one that builds, tests and packages.
#![forbid(unsafe_code)]

pub mod changelog;
pub mod ci;
pub mod manifest;
pub mod release;
pub mod tidy;
pub mod version;
pub mod workspace;

use std::ffi::OsString;
use std::fmt;
use std::process::Command;

/// An error that ends an xtask command; its message is printed as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(String);

impl Error {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }

    /// The message, without the `error:` prefix that `main` adds.
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

/// Result of an xtask operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The cargo that runs this xtask (`$CARGO`), or `cargo` from `PATH`.
pub fn cargo_program() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"))
}

/// A `Command` for the child cargo.
pub fn cargo() -> Command {
    Command::new(cargo_program())
}

/// Renders a command line for messages, e.g. `cargo package -p a`.
pub fn display_command(program: &str, args: &[String]) -> String {
    let mut line = program.to_owned();
    for arg in args {
        line.push(' ');
        if arg.is_empty() || arg.contains(char::is_whitespace) {
            line.push_str(&format!("{arg:?}"));
        } else {
            line.push_str(arg);
        }
    }
    line
}
