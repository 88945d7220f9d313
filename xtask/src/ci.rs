//! `cargo xtask ci`: the checks CI runs, in order, stopping at the first failure, with a summary
//! of what ran and how long each step took.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::{cargo, display_command, tidy, Error, Result};

/// One step of CI.
#[derive(Debug, Clone)]
pub struct Step {
    /// Short name, for the header and the summary.
    pub name: &'static str,
    /// What it runs.
    pub action: Action,
}

/// How a step runs.
#[derive(Debug, Clone)]
pub enum Action {
    /// A child cargo with these arguments and extra environment.
    Cargo {
        /// Arguments after `cargo`.
        args: Vec<&'static str>,
        /// Extra environment variables.
        env: Vec<(&'static str, String)>,
    },
    /// The tidy checks, in this process.
    Tidy,
}

/// The CI steps, in order.
pub fn steps() -> Vec<Step> {
    // Keep warnings that the caller already denies for rustdoc, and add ours.
    let rustdocflags = match std::env::var("RUSTDOCFLAGS") {
        Ok(flags) if !flags.trim().is_empty() => format!("{flags} -D warnings"),
        _ => "-D warnings".to_owned(),
    };
    let cargo_step = |name, args: &[&'static str], env| Step {
        name,
        action: Action::Cargo {
            args: args.to_vec(),
            env,
        },
    };
    vec![
        cargo_step("fmt", &["fmt", "--all", "--", "--check"], vec![]),
        cargo_step(
            "clippy",
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--locked",
                "--",
                "-D",
                "warnings",
            ],
            vec![],
        ),
        cargo_step("test", &["test", "--workspace", "--locked"], vec![]),
        cargo_step(
            "doc",
            &["doc", "--workspace", "--no-deps", "--locked"],
            vec![("RUSTDOCFLAGS", rustdocflags)],
        ),
        Step {
            name: "tidy",
            action: Action::Tidy,
        },
    ]
}

impl Step {
    /// The command line, as shown in its header.
    pub fn describe(&self) -> String {
        match &self.action {
            Action::Cargo { args, env } => {
                let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
                let env: String = env.iter().map(|(k, v)| format!("{k}={v:?} ")).collect();
                format!("{env}{}", display_command("cargo", &args))
            }
            Action::Tidy => "cargo xtask tidy".to_owned(),
        }
    }

    fn run(&self, root: &Path) -> Result<()> {
        match &self.action {
            Action::Cargo { args, env } => {
                let status = cargo()
                    .args(args)
                    .envs(env.iter().map(|(k, v)| (k, v)))
                    .current_dir(root)
                    .status()
                    .map_err(|e| Error::new(format!("cannot run cargo: {e}")))?;
                if status.success() {
                    Ok(())
                } else {
                    Err(Error::new(format!(
                        "`{}` failed ({status})",
                        self.describe()
                    )))
                }
            }
            Action::Tidy => tidy::run_all(root),
        }
    }
}

/// Runs every step in the workspace at `root`; stops at the first failure.
pub fn run(root: &Path) -> Result<()> {
    let mut results: Vec<(&'static str, Duration, bool)> = Vec::new();
    let mut failure = None;
    // The durations are for people reading CI logs; nothing depends on them.
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now;
    for step in steps() {
        println!("\n== {}: {}", step.name, step.describe());
        let started = now();
        let outcome = step.run(root);
        results.push((step.name, started.elapsed(), outcome.is_ok()));
        if let Err(error) = outcome {
            failure = Some(error);
            break;
        }
    }
    println!("\n== ci summary");
    for (name, took, ok) in &results {
        println!(
            "  {:<6} {:<7} {:>8.1}s",
            if *ok { "ok" } else { "FAILED" },
            name,
            took.as_secs_f64()
        );
    }
    let skipped: Vec<&str> = steps().iter().skip(results.len()).map(|s| s.name).collect();
    if !skipped.is_empty() {
        println!("  not run: {}", skipped.join(", "));
    }
    let total: Duration = results.iter().map(|(_, took, _)| *took).sum();
    println!("  total          {:>8.1}s", total.as_secs_f64());
    match failure {
        Some(error) => Err(error),
        None => Ok(()),
    }
}
