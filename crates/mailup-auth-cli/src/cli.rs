//! The command-line interface: global options (each with an environment variable), the
//! commands and their options. Names here are part of the product; keep them.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use zeroize::Zeroizing;

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  local failure (the token store cannot be opened, read or written)
  2  usage or configuration error (also: the token store's key is missing or wrong)
  3  re-authorization required: run `mailup-auth login` (also: not logged in, login refused)
  4  the API answered with an error (the MailUp ErrorCode and description are printed)
  5  network error, or the token endpoint / API is unavailable

Every error prints one line on stderr, `error: ...`, never a token or a secret.

Endpoints are fixed at login: a later command given another --auth-base, --logon-url,
--token-url or --api-base (or MAILUP_* variable) than the profile's is refused (exit 2);
run `login` with them to rebind the profile.

Parallel use: the token store is opened only to load and to save (never during an API call
or the browser wait), so several mailup-auth commands can run at once; each waits up to 10 s
for the others.

A corrupt profile record: `logout` removes it, `login` replaces it; other commands exit 1.
A damaged token store (its files cannot be read as a whole): every command exits 1 and
names `mailup-auth recover`, which rebuilds the store from the records that can still be
read and verified, keeping the damaged one aside.

Secrets on disk: `logout` wipes the profile's tokens from the token store's files (the store
is rewritten without them); `logout --forget-client` wipes its client secret too. With
--store-key (MAILUP_STORE_KEY) the records are encrypted, in a store directory or in Redis;
a store created with a key needs that key every time (every host sharing a Redis store needs
a copy of the key file). A rediss:// store whose certificate a private CA signed: --store-ca
FILE (MAILUP_STORE_CA).";

/// Log in to MailUp with OAuth 2.0, keep the tokens valid, call the API.
#[derive(Debug, Parser)]
#[command(name = "mailup-auth", version, after_help = EXIT_CODES)]
pub(crate) struct Cli {
    /// Options shared by every command.
    #[command(flatten)]
    pub(crate) global: GlobalOptions,
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Options shared by every command; each can come from an environment variable.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Global options")]
pub(crate) struct GlobalOptions {
    /// The profile the tokens and the client registration are kept under [default: the one
    /// chosen with `mailup-auth use`, else `default`].
    #[arg(
        long = "profile",
        global = true,
        env = "MAILUP_PROFILE",
        value_name = "NAME"
    )]
    pub(crate) profile_option: Option<String>,
    /// The profile in effect: `--profile` / `MAILUP_PROFILE`, else the `use`d default, else
    /// `default` (filled in by [`crate::default_profile::resolve`] before a command runs).
    #[arg(skip = String::from(DEFAULT_PROFILE))]
    pub(crate) profile: String,
    /// Print only data and errors: no progress or confirmation messages.
    #[arg(long, short = 'q', global = true, conflicts_with = "verbose")]
    pub(crate) quiet: bool,
    /// Log what the library does on stderr: `-v` steps, `-vv` details, `-vvv` everything
    /// (never a token or a secret; `RUST_LOG` overrides).
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count)]
    pub(crate) verbose: u8,
    /// The token store: a directory [default: the platform data directory], or a Redis URL
    /// (`redis://host:port/db`, loopback only; `rediss://user:password@host:port/db` for
    /// TLS, with --store-ca for a private CA) shared by every process and host that uses it.
    // `hide_env_values`: a Redis URL in MAILUP_STORE may hold a password, which `--help`
    // would otherwise print.
    #[arg(
        long,
        global = true,
        env = "MAILUP_STORE",
        value_name = "DIR|URL",
        hide_env_values = true
    )]
    pub(crate) store: Option<PathBuf>,
    /// Encrypt the token store with a key kept elsewhere: `file:PATH` (a key file, created
    /// `0600` with a new store) or `keychain` (the OS keychain; builds with the `keyring`
    /// feature). Off by default.
    #[arg(
        long,
        global = true,
        env = "MAILUP_STORE_KEY",
        hide_env_values = true,
        value_name = "file:PATH|keychain",
        // Checked later (`store_key()`), so that a value that is key material pasted by
        // mistake is never echoed in clap's error.
        value_parser = secret_value,
        help = "Encrypt the token store (off by default): `file:PATH` keeps the key in a file \
                (created 0600 with a new store; keep it outside the store directory), \
                `keychain` in the OS keychain (builds with the `keyring` feature). A store \
                created with a key needs it every time"
    )]
    pub(crate) store_key: Option<Zeroizing<String>>,
    /// The CA certificate (PEM file) that signed a `rediss://` store's certificate, trusted
    /// instead of the system's roots: for a private Redis.
    #[arg(long, global = true, env = "MAILUP_STORE_CA", value_name = "FILE")]
    pub(crate) store_ca: Option<PathBuf>,
    /// The client id of your MailUp app registration (remembered with the profile at login).
    #[arg(long, global = true, env = "MAILUP_CLIENT_ID", value_name = "ID")]
    pub(crate) client_id: Option<String>,
    /// The client secret (prefer the environment variable; remembered with the profile at
    /// login, never printed).
    #[arg(
        long,
        global = true,
        env = "MAILUP_CLIENT_SECRET",
        hide_env_values = true,
        value_name = "SECRET",
        value_parser = secret_value
    )]
    pub(crate) client_secret: Option<Zeroizing<String>>,
    /// Read the client secret from a file (its first line), or from standard input with `-`;
    /// takes the place of MAILUP_CLIENT_SECRET (together with --client-secret it is a usage
    /// error).
    #[arg(
        long,
        global = true,
        env = "MAILUP_CLIENT_SECRET_FILE",
        value_name = "PATH|-"
    )]
    pub(crate) client_secret_file: Option<PathBuf>,
    /// The redirect URI registered for the app (a loopback URL; default: the listener's own).
    #[arg(
        long,
        global = true,
        env = "MAILUP_REDIRECT_URI",
        value_name = "URL",
        help = "The redirect URI registered for the app: a loopback \
                http://127.0.0.1:PORT/PATH (or localhost) URL whose port the login listener \
                uses [default: the listener's own, http://127.0.0.1:<port>/callback]"
    )]
    pub(crate) redirect_uri: Option<String>,
    /// A server laid out like MailUp (the LogOn, Token and Console API paths are appended;
    /// fixed at login).
    #[arg(
        long,
        global = true,
        env = "MAILUP_AUTH_BASE",
        value_name = "URL",
        help = "A server laid out like MailUp: the LogOn, Token and Console API paths are \
                appended [default: https://services.mailup.com]. Endpoints are remembered at \
                `login`; other commands refuse different ones"
    )]
    pub(crate) auth_base: Option<String>,
    /// The LogOn (authorization) URL, overriding the one from the auth base.
    #[arg(long, global = true, env = "MAILUP_LOGON_URL", value_name = "URL")]
    pub(crate) logon_url: Option<String>,
    /// The token URL, overriding the one from the auth base.
    #[arg(long, global = true, env = "MAILUP_TOKEN_URL", value_name = "URL")]
    pub(crate) token_url: Option<String>,
    /// The REST API base that `call` paths are relative to (default: MailUp's Console API).
    #[arg(
        long,
        global = true,
        env = "MAILUP_API_BASE",
        value_name = "URL",
        help = "The REST API base that `call` paths are relative to [default: MailUp's \
                Console API, https://services.mailup.com/API/v1.1/Rest/ConsoleService.svc]"
    )]
    pub(crate) api_base: Option<String>,
    /// How long before the access token expires it is refreshed, in seconds (0: only when
    /// expired).
    #[arg(
        long,
        global = true,
        env = "MAILUP_REFRESH_SKEW",
        value_name = "SECS",
        default_value_t = 60
    )]
    pub(crate) refresh_skew: u64,
    /// The longest one HTTP request, and one token operation with its retries, may take, in
    /// seconds.
    #[arg(
        long,
        global = true,
        env = "MAILUP_HTTP_TIMEOUT",
        value_name = "SECS",
        default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub(crate) http_timeout: u64,
}

/// The profile used when none is named and none was chosen with `mailup-auth use`.
pub(crate) const DEFAULT_PROFILE: &str = "default";

/// Keeps a secret option's value in memory that is wiped when it is dropped (clap's own copy
/// of the argument or the environment variable is beyond our reach).
fn secret_value(value: &str) -> Result<Zeroizing<String>, std::convert::Infallible> {
    Ok(Zeroizing::new(value.to_owned()))
}

/// Where the token store's key is kept, as `--store-key` gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StoreKeyOption {
    /// `file:PATH`.
    File(PathBuf),
    /// `keychain`.
    Keychain,
}

impl GlobalOptions {
    /// `--store-key` / `MAILUP_STORE_KEY`, parsed. A value that is neither form is a usage
    /// error that does not repeat it (it may be the key itself, pasted by mistake).
    pub(crate) fn store_key(&self) -> Result<Option<StoreKeyOption>, String> {
        let Some(value) = self.store_key.as_deref() else {
            return Ok(None);
        };
        if value.as_str() == "keychain" {
            return Ok(Some(StoreKeyOption::Keychain));
        }
        match value.strip_prefix("file:") {
            Some(path) if !path.is_empty() => Ok(Some(StoreKeyOption::File(PathBuf::from(path)))),
            _ => Err(
                "--store-key (MAILUP_STORE_KEY) must be `file:PATH` or `keychain`; the \
                      value given is not shown (it may be key material)"
                    .into(),
            ),
        }
    }
}

/// The commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Log in: print MailUp's LogOn URL and open it in the browser, wait for the redirect on
    /// 127.0.0.1, store the tokens (or, with --password, use the password grant). Remembers
    /// the client and the endpoints with the profile; replaces a corrupt profile record.
    Login(LoginArgs),
    /// Show the profile, its endpoints and its tokens' state (never a secret).
    Status(StatusArgs),
    /// Print a valid access token on stdout and nothing else (refreshing first if needed).
    Token(JsonArgs),
    /// Refresh the tokens now (MailUp rotates the refresh token; the new one is stored).
    Refresh(JsonArgs),
    /// Send an authenticated API request and print the response body.
    Call(CallArgs),
    /// Forget the profile's tokens and wipe them from the token store's files (the client
    /// registration is kept, unless --forget-client); removes a corrupt profile record.
    Logout(LogoutArgs),
    /// Rebuild a damaged token store (one that cannot be opened: bit flips, a truncated
    /// file) from the records that can still be read and verified; the damaged directory is
    /// moved aside to `<store>.corrupt-<time>`, never deleted. Lists the profiles recovered
    /// and lost; exits 3 when a profile was lost (log in to it again). Does nothing to a store
    /// that opens.
    Recover,
    /// List the profiles in the token store with their state (authorized, when the access
    /// token expires, or that a login is needed); `*` marks the one in effect.
    Profiles(JsonArgs),
    /// Choose the profile used when --profile and MAILUP_PROFILE are not given (kept in the
    /// CLI's config directory); without a name, show the one in effect and why.
    Use(UseArgs),
    /// Print a shell completion script on stdout: e.g. `mailup-auth completions bash >
    /// ~/.local/share/bash-completion/completions/mailup-auth`.
    Completions(CompletionsArgs),
    /// Print the man page (roff) on stdout, or write one page per command into a directory
    /// (`cargo xtask man` does that for packagers).
    Man(ManArgs),
    /// Run the whole flow against a local MailUp emulator and report each step; leaves
    /// nothing behind.
    Demo,
}

/// `--json` for the commands whose result scripts read.
#[derive(Debug, Args)]
pub(crate) struct JsonArgs {
    /// Print one JSON object (for `profiles`: an array) on stdout instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Options of `use`.
#[derive(Debug, Args)]
pub(crate) struct UseArgs {
    /// The profile to use by default (it must be in the token store, or be `default`).
    #[arg(value_name = "PROFILE")]
    pub(crate) profile: Option<String>,
}

/// Options of `completions`.
#[derive(Debug, Args)]
pub(crate) struct CompletionsArgs {
    /// The shell to complete in.
    #[arg(value_name = "SHELL")]
    pub(crate) shell: clap_complete::Shell,
}

/// Options of `man`.
#[derive(Debug, Args)]
pub(crate) struct ManArgs {
    /// Write `mailup-auth.1` and one `mailup-auth-<command>.1` per command into this
    /// directory (created if missing) instead of printing the main page.
    #[arg(long, value_name = "DIR")]
    pub(crate) out: Option<PathBuf>,
}

/// Options of `login`.
#[derive(Debug, Args)]
pub(crate) struct LoginArgs {
    /// Do not open a browser (the LogOn URL is printed on stderr either way).
    #[arg(long)]
    pub(crate) no_browser: bool,
    /// The loopback port to listen on [default: the --redirect-uri port, or any free port].
    #[arg(long, value_name = "P")]
    pub(crate) port: Option<u16>,
    /// How long to wait for the browser to come back, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) timeout: u64,
    /// Use the password grant instead of the browser (password from MAILUP_PASSWORD, a
    /// hidden prompt, or one line on standard input; never a flag).
    #[arg(long)]
    pub(crate) password: bool,
    /// The MailUp username for --password.
    #[arg(long, env = "MAILUP_USERNAME", value_name = "NAME")]
    pub(crate) username: Option<String>,
    /// Print the outcome as one JSON object on stdout (the LogOn URL still goes to stderr).
    #[arg(long)]
    pub(crate) json: bool,
}

/// Options of `logout`.
#[derive(Debug, Args)]
pub(crate) struct LogoutArgs {
    /// Remove the profile entirely: its client registration (client secret included) and
    /// endpoints too, wiped from the store's files like the tokens.
    #[arg(long)]
    pub(crate) forget_client: bool,
    /// Log out of every profile in the token store.
    #[arg(long)]
    pub(crate) all: bool,
}

/// Options of `status`.
#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// Print one JSON object (with --all: an array) instead of text.
    #[arg(long)]
    pub(crate) json: bool,
    /// Show every profile in the token store; exits 3 when any is not authorized.
    #[arg(long)]
    pub(crate) all: bool,
}

/// Options of `call`.
#[derive(Debug, Args)]
pub(crate) struct CallArgs {
    /// The HTTP method (GET, POST, PUT, DELETE, ...).
    #[arg(value_name = "METHOD")]
    pub(crate) method: String,
    /// A path relative to the API base (e.g. `Console/Authentication/Info`) or a full
    /// http(s) URL on the API base's origin (the access token is sent nowhere else).
    #[arg(value_name = "PATH")]
    pub(crate) path: String,
    /// A JSON request body, or `@file` to read it from a file (`@-`: standard input).
    #[arg(long, short = 'd', value_name = "JSON|@FILE")]
    pub(crate) data: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn the_interface_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_options_work_after_the_command() {
        let cli = Cli::try_parse_from([
            "mailup-auth",
            "status",
            "--profile",
            "work",
            "--auth-base",
            "http://127.0.0.1:9",
        ])
        .unwrap();
        assert_eq!(cli.global.profile_option.as_deref(), Some("work"));
        assert_eq!(cli.global.auth_base.as_deref(), Some("http://127.0.0.1:9"));
    }

    #[test]
    fn the_client_secret_is_kept_in_memory_that_is_wiped() {
        let cli =
            Cli::try_parse_from(["mailup-auth", "--client-secret", "s3cret", "status"]).unwrap();
        let secret: Option<Zeroizing<String>> = cli.global.client_secret;
        assert_eq!(secret.as_deref().map(String::as_str), Some("s3cret"));
    }

    #[test]
    fn store_key_is_a_key_file_or_the_keychain() {
        let parse = |args: &[&str]| {
            let mut argv = vec!["mailup-auth"];
            argv.extend_from_slice(args);
            argv.push("status");
            Cli::try_parse_from(argv)
                .map_err(|e| e.to_string())
                .and_then(|cli| cli.global.store_key())
        };
        assert_eq!(parse(&[]).unwrap(), None);
        assert_eq!(
            parse(&["--store-key", "file:/k/store.key"]).unwrap(),
            Some(StoreKeyOption::File("/k/store.key".into()))
        );
        assert_eq!(
            parse(&["--store-key", "keychain"]).unwrap(),
            Some(StoreKeyOption::Keychain)
        );
        assert!(parse(&["--store-key", "file:"]).is_err());
        for bad in ["/k/store.key", "vault", "c2VjcmV0LWtleS1tYXRlcmlhbA=="] {
            let error = parse(&["--store-key", bad]).unwrap_err();
            assert!(!error.contains(bad), "the value is not echoed: {error}");
        }
    }

    #[test]
    fn refresh_skew_defaults_to_60_and_allows_0() {
        let parse = |args: &[&str]| {
            let mut argv = vec!["mailup-auth"];
            argv.extend_from_slice(args);
            argv.push("token");
            Cli::try_parse_from(argv).map(|cli| cli.global.refresh_skew)
        };
        assert_eq!(parse(&[]).unwrap(), 60);
        assert_eq!(parse(&["--refresh-skew", "0"]).unwrap(), 0);
        assert_eq!(parse(&["--refresh-skew", "300"]).unwrap(), 300);
        assert!(parse(&["--refresh-skew", "-1"]).is_err());
        assert!(parse(&["--refresh-skew", "soon"]).is_err());
    }

    #[test]
    fn help_documents_exit_codes_and_hides_secret_env_values() {
        let help = Cli::command().render_help().to_string();
        assert!(help.contains("Exit codes:"));
        assert!(help.contains("re-authorization required"));
        assert!(help.contains("MAILUP_CLIENT_SECRET"));
    }

    #[test]
    fn there_is_no_password_flag_value() {
        // `--password` is a switch: a value after it is a usage error, so a password can never
        // end up in the shell history or the process list through this flag.
        let parsed = Cli::try_parse_from(["mailup-auth", "login", "--password=hunter2"]);
        assert!(parsed.is_err());
    }
}
