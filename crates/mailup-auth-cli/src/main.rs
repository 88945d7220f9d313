//! `mailup-auth`: log in to MailUp with OAuth 2.0, keep the tokens valid, call the API.
//!
//! A thin command-line shell over the `mailup-auth` facade: it resolves a profile (flags and
//! environment first, then what the profile remembers), runs one command, and turns every
//! failure into one line on stderr and a documented exit code (see [`failure`]). It holds no
//! OAuth logic of its own; `demo` runs the whole flow against the embedded emulator.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod cli;
mod commands;
mod demo;
mod failure;
mod output;
mod profile;
mod recover;
mod store;
mod terminal;
mod timefmt;

use std::process::ExitCode;

use clap::Parser as _;

use crate::cli::{Cli, Command};
use crate::failure::Failure;

fn main() -> ExitCode {
    // clap would quote the value in its usage error; a password must never be echoed.
    if std::env::args_os().any(|arg| arg.to_string_lossy().starts_with("--password=")) {
        return Failure::usage(
            "--password takes no value: the password comes from MAILUP_PASSWORD, a hidden \
             prompt, or standard input",
        )
        .report();
    }
    let cli = Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            return Failure::local(format!("cannot start the async runtime: {e}")).report();
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.report(),
    }
}

/// `RUST_LOG=mailup_auth=debug mailup-auth ...` logs the library's steps on stderr (never a
/// secret: the library's spans and events carry none). Silent unless `RUST_LOG` is set.
fn init_logging() {
    let Ok(filter) = std::env::var("RUST_LOG") else {
        return;
    };
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = log_format(filter).try_init();
}

/// The log format: plain text, whatever stderr is. Colours would need tracing-subscriber's
/// `ansi` feature, which is off; asking for them without it panics (on a terminal). Written
/// through [`output::QuietStderr`], so a closed stderr drops log lines instead of failing.
fn log_format(
    filter: tracing_subscriber::EnvFilter,
) -> tracing_subscriber::fmt::SubscriberBuilder<
    tracing_subscriber::fmt::format::DefaultFields,
    tracing_subscriber::fmt::format::Format,
    tracing_subscriber::EnvFilter,
    fn() -> output::QuietStderr,
> {
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(output::QuietStderr::default as fn() -> output::QuietStderr)
        .with_ansi(false)
}

async fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Demo => demo::run().await,
        Command::Recover => recover::run(&cli.global).await,
        command => {
            let context = profile::Context::open(cli.global).await?;
            commands::run(&context, command).await
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn logging_can_be_set_up_whatever_stderr_is() {
        // Building the subscriber is where a colour request without the `ansi` feature panics.
        let _subscriber = super::log_format(tracing_subscriber::EnvFilter::new("debug")).finish();
    }
}
