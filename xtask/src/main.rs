//! `cargo xtask`: workspace automation for mailup-auth (see `docs/releasing.md`).
//!
//! This file only reads the command line; the work is in the `xtask` library.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use xtask::release::ReleaseOptions;
use xtask::{cargo, ci, release, tidy, Error, Result};

const USAGE: &str = "\
usage: cargo xtask <COMMAND> [ARGS]

commands:
  ci        run what CI runs, stopping at the first failure:
              cargo fmt --all -- --check
              cargo clippy --workspace --all-targets --locked -- -D warnings
              cargo test --workspace --locked
              RUSTDOCFLAGS=\"-D warnings\" cargo doc --workspace --no-deps --locked
              cargo xtask tidy
  tidy      repository-wide checks (READMEs, descriptions, lints, shared version, a core
            without I/O, clock or RNG); they also run as tests in `cargo test`
  release   bump the shared version, move the changelog, package every publishable crate
            in dependency order (see `cargo xtask release --help`)
  bench     cargo bench --workspace [ARGS...]
  man       write the mailup-auth man pages (clap_mangen, from the CLI's own definition) to
            target/man/, or to the directory given: `cargo xtask man [DIR]`
  fuzz      the stable fuzz loop: replay fuzz/corpus, then N seeded mutants per target
            (see `cargo xtask fuzz --help`; `cargo +nightly fuzz` runs the real fuzzer)
  help      print this message (also -h, --help)

Run `cargo xtask <COMMAND> --help` for a command's options.";

const RELEASE_USAGE: &str = "\
usage: cargo xtask release <major|minor|patch|X.Y.Z> [OPTIONS]

Bumps [workspace.package] version and every internal dependency requirement, moves the
\"Unreleased\" section of CHANGELOG.md under the new version and today's date, then runs
`cargo package` on every publishable crate in dependency order (core first). It publishes
nothing: the plan it prints ends with the commands to publish.

It refuses, and changes nothing, when: the git tree is dirty; the new version is not greater
than the current one; CHANGELOG.md's \"Unreleased\" section is empty; a publishable crate lacks
a description, license, readme or repository, or has its own version; a publishable crate
depends on another member without a version.

options:
  --dry-run          print the plan (and any reason to refuse), change nothing
  --no-package       edit the files but skip `cargo package`
  --allow-dirty      skip the clean-tree check
  --date YYYY-MM-DD  date for the changelog heading (default: today, UTC)
  -h, --help         print this message";

const FUZZ_USAGE: &str = "\
usage: cargo xtask fuzz [--count N] [--seed S] [--target NAME] [--release]

Runs the stable fuzz loop of crates/mailup-auth-fuzz-bodies (tests/stable.rs): each target
replays its committed corpus (fuzz/corpus/<target>/), then runs N inputs made by seeded random
mutation, and prints its executions. On the stable toolchain, without coverage feedback; for
coverage-guided runs use `cargo +nightly fuzz run <target>` (see fuzz/README.md).

options:
  --count N      mutants per target (default 50000, as in `cargo test`)
  --seed S       the PRNG seed (default fixed; a failure prints the input to commit)
  --target NAME  one of token_answer, api_answer, urls, stored_record, redis_record,
                 session_ops
  --release      build optimized (slower to build, about ten times faster to run)
  -h, --help     print this message";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn wants_help(args: &[String]) -> bool {
    args.iter().any(|a| a == "-h" || a == "--help")
}

fn current_dir() -> Result<PathBuf> {
    std::env::current_dir()
        .map_err(|e| Error::new(format!("cannot read the current directory: {e}")))
}

fn run(args: &[String]) -> Result<()> {
    let Some((command, rest)) = args.split_first() else {
        println!("{USAGE}");
        return Err(Error::new("no command given"));
    };
    match command.as_str() {
        "help" | "-h" | "--help" => {
            println!("{USAGE}");
            Ok(())
        }
        "ci" | "tidy" if wants_help(rest) => {
            println!("{USAGE}");
            Ok(())
        }
        "ci" => {
            no_arguments(command, rest)?;
            ci::run(&workspace_root()?)
        }
        "tidy" => {
            no_arguments(command, rest)?;
            tidy::run_all(&current_dir()?)
        }
        "release" if wants_help(rest) => {
            println!("{RELEASE_USAGE}");
            Ok(())
        }
        "release" => {
            let options = release_options(rest)?;
            release::run(&current_dir()?, &options, &mut std::io::stdout())
        }
        "bench" => {
            let status = cargo()
                .args(["bench", "--workspace"])
                .args(rest)
                .current_dir(workspace_root()?)
                .status()
                .map_err(|e| Error::new(format!("cannot run cargo bench: {e}")))?;
            if status.success() {
                Ok(())
            } else {
                Err(Error::new(format!("cargo bench failed ({status})")))
            }
        }
        "fuzz" if wants_help(rest) => {
            println!("{FUZZ_USAGE}");
            Ok(())
        }
        "fuzz" => fuzz(rest),
        "man" if wants_help(rest) => {
            println!("{USAGE}");
            Ok(())
        }
        "man" => man(rest),
        other => {
            eprintln!("{USAGE}");
            Err(Error::new(format!("unknown command `{other}`")))
        }
    }
}

/// Builds the CLI and has it write its man pages (the pages come from the CLI's clap
/// definition, which only the CLI crate has; the xtask stays free of clap).
fn man(args: &[String]) -> Result<()> {
    let root = workspace_root()?;
    let dir = match args {
        [] => root.join("target").join("man"),
        [dir] => std::path::absolute(dir)
            .map_err(|e| Error::new(format!("cannot use `{dir}` as a directory: {e}")))?,
        _ => return Err(Error::new("usage: cargo xtask man [DIR]")),
    };
    let status = cargo()
        .args([
            "run",
            "--locked",
            "-q",
            "-p",
            "mailup-auth-cli",
            "--",
            "man",
            "--out",
        ])
        .arg(&dir)
        .current_dir(&root)
        .status()
        .map_err(|e| Error::new(format!("cannot run cargo run: {e}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::new(format!(
            "writing the man pages failed ({status})"
        )))
    }
}

fn fuzz(args: &[String]) -> Result<()> {
    let mut command = cargo();
    command.args(["test", "-p", "mailup-auth-fuzz-bodies", "--test", "stable"]);
    let mut filter = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .cloned()
                .ok_or_else(|| Error::new(format!("{name} needs a value")))
        };
        match arg.as_str() {
            "--count" => {
                let count = value("--count")?;
                count
                    .parse::<u64>()
                    .map_err(|_| Error::new(format!("--count takes a number, not `{count}`")))?;
                command.env("MAILUP_FUZZ_COUNT", count);
            }
            "--seed" => {
                let seed = value("--seed")?;
                seed.parse::<u64>()
                    .map_err(|_| Error::new(format!("--seed takes a number, not `{seed}`")))?;
                command.env("MAILUP_FUZZ_SEED", seed);
            }
            "--target" => filter = Some(value("--target")?),
            "--release" => {
                command.arg("--release");
            }
            other => {
                return Err(Error::new(format!(
                    "unknown option `{other}` (see `cargo xtask fuzz --help`)"
                )))
            }
        }
    }
    command.args(["--", "--nocapture", "--test-threads", "2"]);
    if let Some(target) = filter {
        let test = match target.as_str() {
            "token_answer" => "token_answers",
            "api_answer" => "api_answers",
            "urls" => "urls_keep",
            "stored_record" => "stored_records_keep",
            "redis_record" => "redis_records_keep",
            "session_ops" => "session_operation",
            other => return Err(Error::new(format!("unknown fuzz target `{other}`"))),
        };
        command.arg(test);
    }
    let status = command
        .current_dir(workspace_root()?)
        .status()
        .map_err(|e| Error::new(format!("cannot run cargo test: {e}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::new(format!("the fuzz loop failed ({status})")))
    }
}

fn no_arguments(command: &str, rest: &[String]) -> Result<()> {
    match rest.first() {
        Some(extra) => Err(Error::new(format!(
            "`cargo xtask {command}` takes no argument `{extra}`"
        ))),
        None => Ok(()),
    }
}

/// The workspace root, from `cargo metadata`, so `cargo xtask ci` works from any subdirectory.
fn workspace_root() -> Result<PathBuf> {
    Ok(xtask::workspace::Workspace::load(&current_dir()?)?.root)
}

fn release_options(args: &[String]) -> Result<ReleaseOptions> {
    let mut bump = None;
    let mut options = ReleaseOptions {
        bump: xtask::version::Bump::Patch,
        dry_run: false,
        allow_dirty: false,
        package: true,
        date: None,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--dry-run" => options.dry_run = true,
            "--no-package" => options.package = false,
            "--allow-dirty" => options.allow_dirty = true,
            "--date" => {
                let date = args
                    .next()
                    .ok_or_else(|| Error::new("--date needs a YYYY-MM-DD value"))?;
                options.date = Some(date.clone());
            }
            flag if flag.starts_with("--date=") => {
                options.date = Some(flag["--date=".len()..].to_owned());
            }
            flag if flag.starts_with('-') => {
                return Err(Error::new(format!(
                    "unknown option `{flag}` (see `cargo xtask release --help`)"
                )))
            }
            level if bump.is_none() => bump = Some(level.parse()?),
            extra => return Err(Error::new(format!("unexpected argument `{extra}`"))),
        }
    }
    options.bump = bump.ok_or_else(|| {
        Error::new("which version? `cargo xtask release <major|minor|patch|X.Y.Z> [--dry-run]`")
    })?;
    Ok(options)
}
