//! How a command fails: one line on stderr and a documented exit code.
//!
//! The mapping from the facade's [`Error`] is the product's contract with scripts (it is
//! printed by `--help`): 1 local failure, 2 usage or configuration, 3 re-authorization
//! required, 4 the API answered with an error, 5 network or server unavailable.

use std::process::ExitCode;

use mailup_auth::core::{ApiError, OAuthErrorCode, TokenError};
use mailup_auth::{Error, ErrorKind, LoopbackError, ReauthReason, StoreError};

/// Exit code: a local failure (the token store).
pub(crate) const EXIT_LOCAL: u8 = 1;
/// Exit code: usage or configuration error (clap uses 2 for usage errors too).
pub(crate) const EXIT_USAGE: u8 = 2;
/// Exit code: re-authorization required.
pub(crate) const EXIT_REAUTHORIZE: u8 = 3;
/// Exit code: the API answered with an error.
pub(crate) const EXIT_API: u8 = 4;
/// Exit code: network error or server unavailable.
pub(crate) const EXIT_UNAVAILABLE: u8 = 5;

/// A failed command: what to print and how to exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    /// A failure with this exit code and one-line message.
    pub(crate) fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// Exit 2: usage or configuration.
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Self::new(EXIT_USAGE, message)
    }

    /// Exit 1: a local failure.
    pub(crate) fn local(message: impl Into<String>) -> Self {
        Self::new(EXIT_LOCAL, message)
    }

    /// Exit 3: the user has to log in.
    pub(crate) fn reauthorize(message: impl Into<String>) -> Self {
        Self::new(EXIT_REAUTHORIZE, message)
    }

    /// The exit code.
    #[cfg(test)]
    pub(crate) fn code(&self) -> u8 {
        self.code
    }

    /// The one-line message (without the `error: ` prefix).
    pub(crate) fn message(&self) -> &str {
        &self.message
    }

    /// Prints `error: <message>` on stderr and returns the exit code.
    pub(crate) fn report(&self) -> ExitCode {
        // One line, whatever the message holds (a server's description could hold newlines).
        let line = crate::output::one_line(&self.message);
        crate::output::stderr_line(&format!("error: {line}"));
        ExitCode::from(self.code)
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        let code = exit_code(&error);
        let mut message = error.to_string();
        match error.kind() {
            // The login itself was refused (wrong password, denied consent): running it again
            // as is will not help.
            ErrorKind::Login(_) | ErrorKind::Callback(_) if code == EXIT_REAUTHORIZE => {
                message.push_str(" (check the username, the password and the consent)");
            }
            ErrorKind::ReauthorizationRequired(ReauthReason::ClientRejected(_)) => {
                message.push_str(" (check --client-id / --client-secret)");
            }
            ErrorKind::UntrustedOrigin(url) => {
                message = format!(
                    "refusing to send the access token to {url}: it is outside the profile's \
                     API base (scheme, host and port); give `call` a path relative to the API \
                     base, or run `mailup-auth login --api-base URL` to use that host"
                );
            }
            ErrorKind::Store(store) => message = store_message(store),
            ErrorKind::TokensNeverFresh { .. } => {
                message.push_str(" (with --refresh-skew / MAILUP_REFRESH_SKEW)");
            }
            _ if code == EXIT_REAUTHORIZE => message.push_str(" (run `mailup-auth login`)"),
            _ => {}
        }
        Self { code, message }
    }
}

/// A token store failure in words, with the way out of a corrupt record.
pub(crate) fn store_message(error: &StoreError) -> String {
    match error {
        StoreError::Corrupt { profile, .. } => format!(
            "token store: {error}; run `mailup-auth logout --profile {}` to remove it, then \
             log in again",
            shell_word(profile)
        ),
        StoreError::Damaged { path, .. } => format!(
            "the token store at {path} is damaged (its files cannot be read as a whole): run \
             `mailup-auth recover` with the same --store / --store-key to rebuild it from the \
             records that can still be read"
        ),
        error => format!("token store: {error}"),
    }
}

/// `word`, quoted for a POSIX shell when it needs to be.
pub(crate) fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@' | '+' | ':'));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// The exit code for a facade error. The facade's `Display` never holds a secret: it carries
/// at most OAuth `error` / `error_description` or MailUp's `ErrorCode` / `ErrorDescription`.
pub(crate) fn exit_code(error: &Error) -> u8 {
    match error.kind() {
        // Wrong client credentials: a configuration problem, not a stale login.
        ErrorKind::ReauthorizationRequired(ReauthReason::ClientRejected(_)) => EXIT_USAGE,
        ErrorKind::ReauthorizationRequired(_) => EXIT_REAUTHORIZE,
        ErrorKind::UntrustedOrigin(_) => EXIT_USAGE,
        ErrorKind::TokenEndpointUnavailable { .. } | ErrorKind::Transport(_) => EXIT_UNAVAILABLE,
        ErrorKind::Login(token_error) => login_exit_code(token_error),
        // The user denied access, or the callback did not belong to this login.
        ErrorKind::Callback(_) => EXIT_REAUTHORIZE,
        // `Config` includes what the core refuses in the configuration, e.g. plain http to a
        // host that is not a loopback address.
        ErrorKind::Authorization(_)
        | ErrorKind::Config(_)
        | ErrorKind::InvalidPath(_)
        | ErrorKind::Missing(_)
        | ErrorKind::TokensNeverFresh { .. } => EXIT_USAGE,
        ErrorKind::Api(api) => match api {
            // A gateway or an overloaded server: "unavailable", retrying later may help.
            ApiError::Server(e) if matches!(e.status, 502..=504) => EXIT_UNAVAILABLE,
            _ => EXIT_API,
        },
        ErrorKind::Loopback(LoopbackError::Bind { .. }) => EXIT_USAGE,
        // Nobody came back through the browser in time, or the listener broke.
        ErrorKind::Loopback(_) => EXIT_UNAVAILABLE,
        ErrorKind::Store(_) => EXIT_LOCAL,
        ErrorKind::Decode { .. } => EXIT_API,
        // A future variant: treat it as a local failure rather than guess.
        _ => EXIT_LOCAL,
    }
}

/// A refused login: wrong client credentials are a configuration problem (2), a refused
/// grant (wrong password, a used or expired code) means logging in again (3), and anything
/// transient means the server is unavailable (5).
fn login_exit_code(error: &TokenError) -> u8 {
    if error.is_transient() {
        return EXIT_UNAVAILABLE;
    }
    match error.oauth_error() {
        Some(OAuthErrorCode::InvalidClient | OAuthErrorCode::UnauthorizedClient) => EXIT_USAGE,
        _ => EXIT_REAUTHORIZE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailup_auth::core::{MailUpError, ReauthReason, TransportError};

    fn oauth(error: OAuthErrorCode) -> TokenError {
        TokenError::OAuth {
            status: 400,
            error,
            description: None,
        }
    }

    #[test]
    fn maps_errors_to_documented_codes() {
        assert_eq!(
            exit_code(&Error::from(ErrorKind::ReauthorizationRequired(
                ReauthReason::NoTokens
            ))),
            3
        );
        assert_eq!(
            exit_code(&Error::from(ErrorKind::Login(oauth(
                OAuthErrorCode::InvalidGrant
            )))),
            3
        );
        assert_eq!(
            exit_code(&Error::from(ErrorKind::Login(oauth(
                OAuthErrorCode::InvalidClient
            )))),
            2
        );
        assert_eq!(
            exit_code(&Error::from(ErrorKind::Login(oauth(
                OAuthErrorCode::ServerError
            )))),
            5
        );
        let mut not_found = MailUpError::default();
        not_found.status = 404;
        assert_eq!(
            exit_code(&Error::from(ErrorKind::Api(ApiError::Client(not_found)))),
            4
        );
        let mut unavailable = MailUpError::default();
        unavailable.status = 503;
        assert_eq!(
            exit_code(&Error::from(ErrorKind::Api(ApiError::Server(unavailable)))),
            5
        );
        let timeout =
            TransportError::new(mailup_auth::core::TransportErrorKind::Timeout, "timed out");
        assert_eq!(exit_code(&Error::from(ErrorKind::Transport(timeout))), 5);
        assert_eq!(
            exit_code(&Error::from(ErrorKind::Loopback(LoopbackError::Timeout(
                std::time::Duration::from_secs(1)
            )))),
            5
        );
        let bad_client = Error::from(ErrorKind::ReauthorizationRequired(
            ReauthReason::ClientRejected(oauth(OAuthErrorCode::InvalidClient)),
        ));
        assert_eq!(exit_code(&bad_client), 2);
        assert!(Failure::from(bad_client)
            .message()
            .contains("--client-secret"));
        let foreign = Error::from(ErrorKind::UntrustedOrigin("http://127.0.0.1:1".into()));
        assert_eq!(exit_code(&foreign), 2);
        let foreign = Failure::from(foreign);
        assert!(foreign.message().contains("login --api-base"));
        assert!(foreign.message().contains("relative"));
        assert!(!foreign.message().contains("trust_origin"));
        let wrong_password = Failure::from(Error::from(ErrorKind::Login(oauth(
            OAuthErrorCode::InvalidGrant,
        ))));
        assert!(!wrong_password.message().contains("run `mailup-auth login`"));
    }

    #[test]
    fn a_corrupt_record_says_how_to_recover() {
        let corrupt = Error::from(ErrorKind::Store(StoreError::Corrupt {
            profile: "my work".into(),
            message: "envelope".into(),
        }));
        assert_eq!(exit_code(&corrupt), 1);
        let failure = Failure::from(corrupt);
        assert!(
            failure
                .message()
                .contains("run `mailup-auth logout --profile 'my work'` to remove it"),
            "{}",
            failure.message()
        );
    }

    #[test]
    fn a_damaged_store_names_the_recover_command() {
        let damaged = Error::from(ErrorKind::Store(StoreError::Damaged {
            path: "/s".into(),
            message: "sled cannot read its files".into(),
        }));
        assert_eq!(exit_code(&damaged), 1);
        let failure = Failure::from(damaged);
        assert!(
            failure.message().contains("run `mailup-auth recover`"),
            "{}",
            failure.message()
        );
    }

    #[test]
    fn configuration_errors_exit_2_on_one_line() {
        let error = Error::from(ErrorKind::Config(
            mailup_auth::core::ConfigError::NotHttpUrl { field: "token url" },
        ));
        let failure = Failure::from(error);
        assert_eq!(failure.code(), 2);
        assert!(!failure.message().contains('\n'), "{}", failure.message());
        let stale = Error::from(ErrorKind::TokensNeverFresh {
            skew: std::time::Duration::from_secs(60),
        });
        assert_eq!(exit_code(&stale), 2);
        assert!(Failure::from(stale).message().contains("--refresh-skew"));
    }

    #[test]
    fn reauthorization_tells_what_to_run() {
        let failure = Failure::from(Error::from(ErrorKind::ReauthorizationRequired(
            ReauthReason::NoTokens,
        )));
        assert_eq!(failure.code(), 3);
        assert!(failure.message().contains("mailup-auth login"));
    }
}
