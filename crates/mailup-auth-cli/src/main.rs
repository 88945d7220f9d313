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
mod default_profile;
mod demo;
mod failure;
mod manage;
mod output;
mod profile;
mod recover;
mod shell;
mod store;
mod terminal;
mod timefmt;

use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{CommandFactory as _, FromArgMatches as _};

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
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
    if cli.global.client_secret_file.is_some() && secret_given_as_flag(&matches) {
        return Failure::usage(
            "--client-secret and --client-secret-file both give the client secret: pass one \
             (MAILUP_CLIENT_SECRET in the environment is replaced by the file)",
        )
        .report();
    }
    output::set_quiet(cli.global.quiet);
    init_logging(cli.global.verbose);
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

/// Whether `--client-secret` was given on the command line (not from the environment), at the
/// top level or after the command (it is a global option).
fn secret_given_as_flag(matches: &clap::ArgMatches) -> bool {
    let on_command_line =
        |m: &clap::ArgMatches| m.value_source("client_secret") == Some(ValueSource::CommandLine);
    on_command_line(matches)
        || matches
            .subcommand()
            .is_some_and(|(_, sub)| on_command_line(sub))
}

/// `-v`/`-vv`/`-vvv` (or `RUST_LOG=mailup_auth=debug`, which wins) log the library's steps
/// on stderr (never a secret: the library's spans and events carry none). Silent otherwise.
fn init_logging(verbose: u8) {
    let filter = match std::env::var("RUST_LOG") {
        Ok(filter) => filter,
        Err(_) => match verbose_filter(verbose) {
            Some(filter) => filter,
            None => return,
        },
    };
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = log_format(filter).try_init();
}

/// The log filter for `-v` repeated `verbose` times: this project's crates at info, debug,
/// then trace; every other crate (hyper, reqwest, sled, redis) stays at `warn`, so no
/// dependency's own tracing, which this project does not vouch for, reaches the terminal.
fn verbose_filter(verbose: u8) -> Option<String> {
    const OURS: [&str; 7] = [
        "mailup_auth",
        "mailup_auth_core",
        "mailup_auth_http",
        "mailup_auth_store_sled",
        "mailup_auth_store_redis",
        "mailup_auth_seal",
        "mailup_auth_cli",
    ];
    let level = match verbose {
        0 => return None,
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let mut filter = String::from("warn");
    for target in OURS {
        filter.push_str(&format!(",{target}={level}"));
    }
    Some(filter)
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
    let mut global = cli.global;
    match cli.command {
        // These need no profile, no store and no secret.
        Command::Demo => return demo::run().await,
        Command::Completions(args) => return shell::completions(&args),
        Command::Man(args) => return shell::man(&args),
        Command::Recover => return recover::run(&global).await,
        _ => {}
    }
    profile::read_client_secret_file(&mut global)?;
    let source = match (&cli.command, default_profile::resolve(&mut global)) {
        // `use PROFILE` rewrites a damaged choice; it must not be stopped by it.
        (Command::Use(args), Err(_)) if args.profile.is_some() => {
            default_profile::ProfileSource::Builtin
        }
        (_, resolved) => resolved?,
    };
    match cli.command {
        Command::Use(args) => manage::use_profile(global, source, &args).await,
        Command::Profiles(args) => manage::profiles(global, &args).await,
        Command::Status(args) if args.all => manage::status_all(global, &args).await,
        Command::Logout(args) if args.all => manage::logout_all(global, args).await,
        command => {
            let context = profile::Context::open(global).await?;
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

    #[test]
    fn verbose_raises_only_this_projects_crates() {
        assert_eq!(super::verbose_filter(0), None);
        let debug = super::verbose_filter(2).unwrap();
        assert!(debug.starts_with("warn,"), "{debug}");
        assert!(debug.contains("mailup_auth=debug") && debug.contains("mailup_auth_core=debug"));
        assert!(!debug.contains("hyper") && !debug.contains("reqwest"));
        assert!(super::verbose_filter(9)
            .unwrap()
            .contains("mailup_auth_http=trace"));
        for verbose in 1..=3 {
            let filter = super::verbose_filter(verbose).unwrap();
            assert!(
                tracing_subscriber::EnvFilter::try_new(&filter).is_ok(),
                "{filter}"
            );
        }
    }
}
