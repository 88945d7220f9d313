//! The profile commands: `login`, `status`, `token`, `refresh`, `call`, `logout`.
//!
//! Human output goes to stdout except where a command's stdout is data (`token`, `call`):
//! there, progress and errors go to stderr only.

use std::io::{Read as _, Write as _};
use std::time::{Duration, SystemTime};

use mailup_auth::core::http_types::Method;
use mailup_auth::{
    Error, LoopbackRedirect, MailUpClient, Password, SessionState, SessionStatus, UnixTime, Url,
};
use serde_json::{json, Value};
use zeroize::Zeroizing;

use crate::cli::{CallArgs, Command, JsonArgs, LoginArgs, LogoutArgs, StatusArgs};
use crate::failure::{Failure, EXIT_REAUTHORIZE};
use crate::output::{inform, note, say};
use crate::profile::{store_failure, Context};
use crate::terminal;
use crate::timefmt;

/// The line printed (on stderr) right before the LogOn URL; the URL is the next line, alone.
pub(crate) const LOGON_URL_PROMPT: &str = "Open this URL in your browser:";

/// Runs a profile command.
pub(crate) async fn run(context: &Context, command: Command) -> Result<(), Failure> {
    if let Some(corrupt) = &context.corrupt {
        // `login` and `logout` recover from a corrupt record; everything else needs it.
        if !matches!(command, Command::Login(_) | Command::Logout(_)) {
            return Err(store_failure(corrupt.clone()));
        }
        context
            .store
            .delete(&context.global.profile)
            .await
            .map_err(store_failure)?;
        note!(
            "The stored record of profile `{}` could not be read ({corrupt}); it was removed.",
            context.global.profile
        );
        if matches!(command, Command::Logout(_)) {
            inform!(
                stdout,
                "Logged out of profile `{}`: its record is gone; log in again to use it.",
                context.global.profile
            );
            return Ok(());
        }
    }
    if !matches!(command, Command::Login(_)) {
        context.check_pinned_endpoints()?;
    }
    match command {
        Command::Login(args) if args.password => login_password(context, &args).await,
        Command::Login(args) => login_browser(context, &args).await,
        Command::Status(args) => status(context, &args).await,
        Command::Token(args) => token(context, &args).await,
        Command::Refresh(args) => refresh(context, &args).await,
        Command::Call(args) => call(context, &args).await,
        Command::Logout(args) => logout(context, &args).await,
        Command::Demo
        | Command::Recover
        | Command::Profiles(_)
        | Command::Use(_)
        | Command::Completions(_)
        | Command::Man(_) => Err(Failure::usage("this command does not run on one profile")),
    }
}

/// Writes a JSON value, pretty-printed, to stdout as the command's data.
pub(crate) fn print_json(value: &Value) -> Result<(), Failure> {
    print_data(&serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string()))
}

/// Writes a command's data and a newline to stdout. A reader that went away (`| head`) is not
/// an error worth a panic message; other write failures are local failures.
pub(crate) fn print_data(data: &str) -> Result<(), Failure> {
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{data}").and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Failure::local(format!("cannot write to stdout: {e}"))),
    }
}

pub(crate) fn now() -> UnixTime {
    UnixTime::from_system_time(SystemTime::now())
}

fn no_client_for_login() -> Failure {
    Failure::usage(
        "no client registration: pass --client-id (or set MAILUP_CLIENT_ID) and set \
         MAILUP_CLIENT_SECRET (or pass --client-secret)",
    )
}

// ---- login ---------------------------------------------------------------------------------

/// Where the loopback listener listens, and the redirect URI to send.
#[derive(Debug, PartialEq, Eq)]
struct LoopbackTarget {
    port: u16,
    path: String,
    /// The registered redirect URI, sent as is; `None`: the listener's own.
    redirect_uri: Option<Url>,
}

fn loopback_target(
    redirect_uri: Option<&str>,
    port: Option<u16>,
) -> Result<LoopbackTarget, Failure> {
    let Some(redirect_uri) = redirect_uri else {
        return Ok(LoopbackTarget {
            port: port.unwrap_or(0),
            path: mailup_auth::DEFAULT_CALLBACK_PATH.to_owned(),
            redirect_uri: None,
        });
    };
    let url = Url::parse(redirect_uri).map_err(|e| {
        Failure::usage(format!("--redirect-uri `{redirect_uri}` is not a URL: {e}"))
    })?;
    let loopback_host = matches!(url.host_str(), Some("127.0.0.1" | "localhost"));
    if url.scheme() != "http" || !loopback_host || url.query().is_some() || url.fragment().is_some()
    {
        return Err(Failure::usage(format!(
            "--redirect-uri must be a loopback URL like http://127.0.0.1:8765/callback \
             (the CLI listens on 127.0.0.1), not `{redirect_uri}`"
        )));
    }
    let uri_port = url.port_or_known_default().unwrap_or(80);
    if let Some(port) = port {
        if port != uri_port {
            return Err(Failure::usage(format!(
                "--port {port} differs from the redirect URI's port {uri_port}"
            )));
        }
    }
    Ok(LoopbackTarget {
        port: uri_port,
        path: url.path().to_owned(),
        redirect_uri: Some(url),
    })
}

async fn login_browser(context: &Context, args: &LoginArgs) -> Result<(), Failure> {
    // The store is opened only to load and to save (see `store`): other `mailup-auth`
    // commands keep working while the browser takes its time.
    let url_client = context
        .builder(no_client_for_login(), false)?
        .build()
        .await
        .map_err(Failure::from)?;
    let target = loopback_target(context.redirect_uri().as_deref(), args.port)?;
    let listener = LoopbackRedirect::bind_with_path(target.port, &target.path)
        .await
        .map_err(Error::from)?;
    let redirect_uri = target
        .redirect_uri
        .unwrap_or_else(|| listener.redirect_uri().clone());
    let start = url_client.begin_authorization_with_redirect(Some(redirect_uri))?;
    note!("{LOGON_URL_PROMPT}");
    note!("{}", start.url);
    if !args.no_browser {
        terminal::open_browser(start.url.as_str());
    }
    let timeout = Duration::from_secs(args.timeout);
    let waiting = format!(
        "Waiting for MailUp to redirect to http://{} (up to {} s, Ctrl-C to cancel)...",
        listener.local_addr(),
        timeout.as_secs()
    );
    let callback = terminal::with_spinner(
        &waiting,
        listener.wait_for_callback(start.pending.state(), timeout),
    )
    .await
    .map_err(Error::from)?;
    // The browser waits for the outcome: its page says "logged in" only once the tokens are
    // stored, and shows the failure otherwise.
    let completed = async {
        let client = context
            .builder(no_client_for_login(), true)?
            .build()
            .await
            .map_err(Failure::from)?;
        client
            .complete_authorization(&start.pending, callback.as_str())
            .await?;
        Ok::<_, Failure>(client)
    }
    .await;
    let client = match completed {
        // Both wait (briefly) until the page is written: the process exits right after.
        Ok(client) => {
            callback.succeeded().await;
            client
        }
        Err(failure) => {
            callback.failed(failure.message()).await;
            return Err(failure);
        }
    };
    print_logged_in(context, &client, args.json)
}

async fn login_password(context: &Context, args: &LoginArgs) -> Result<(), Failure> {
    let client = context
        .builder(no_client_for_login(), true)?
        .build()
        .await?;
    let username = match &args.username {
        Some(name) if !name.trim().is_empty() => name.trim().to_owned(),
        _ => terminal::prompt_username()?,
    };
    let password = match password_from_env() {
        Some(password) => password,
        None => terminal::prompt_password()?,
    };
    client
        .login_with_password(&username, &Password::new(password.as_str()))
        .await?;
    print_logged_in(context, &client, args.json)
}

/// `MAILUP_PASSWORD`, when set and not empty, in memory that is wiped when it is dropped.
fn password_from_env() -> Option<Zeroizing<String>> {
    std::env::var("MAILUP_PASSWORD")
        .ok()
        .map(Zeroizing::new)
        .filter(|password| !password.is_empty())
}

/// What `login --json` and `refresh --json` print: the profile and its new expiry (no token).
fn session_json(context: &Context, status: &SessionStatus, now: UnixTime) -> Value {
    let (expires_at, expires_at_unix) = time_fields(status.expires_at);
    json!({
        "profile": status.profile,
        "store": context.store_location.clone(),
        "authorized": is_authorized(status),
        "expires_at": expires_at,
        "expires_at_unix": expires_at_unix,
        "expires_in_seconds": status.expires_at.map(|at| seconds_until(at, now)),
        "has_refresh_token": status.has_refresh_token,
    })
}

/// Seconds from `now` to `at`, negative when `at` is past.
fn seconds_until(at: UnixTime, now: UnixTime) -> i64 {
    if at >= now {
        at.duration_since(now).as_secs() as i64
    } else {
        -(now.duration_since(at).as_secs() as i64)
    }
}

fn print_logged_in(context: &Context, client: &MailUpClient, json: bool) -> Result<(), Failure> {
    let status = client.status();
    if json {
        return print_json(&session_json(context, &status, now()));
    }
    let expiry = status
        .expires_at
        .map(|at| {
            format!(
                "; the access token expires {} ({})",
                timefmt::display(at),
                timefmt::relative(at, now())
            )
        })
        .unwrap_or_default();
    inform!(
        stdout,
        "Logged in: profile `{}`{expiry}. Tokens stored in {}.",
        status.profile,
        context.store_location
    );
    Ok(())
}

// ---- status --------------------------------------------------------------------------------

pub(crate) fn state_name(state: SessionState) -> &'static str {
    match state {
        SessionState::NoTokens => "no_tokens",
        SessionState::AwaitingCallback => "awaiting_callback",
        SessionState::ExchangingCode => "exchanging_code",
        SessionState::Authorized => "authorized",
        SessionState::Refreshing => "refreshing",
        SessionState::ReauthorizationRequired => "reauthorization_required",
    }
}

/// Whether the profile can produce an access token without the user (fresh, or refreshable).
pub(crate) fn is_authorized(status: &SessionStatus) -> bool {
    status.expires_at.is_some()
        && status.reauthorization_reason.is_none()
        && (status.has_fresh_token || status.has_refresh_token)
        && !matches!(
            status.state,
            SessionState::NoTokens | SessionState::ReauthorizationRequired
        )
}

fn time_fields(time: Option<UnixTime>) -> (Value, Value) {
    match time {
        Some(t) => (json!(timefmt::rfc3339(t)), json!(t.as_secs())),
        None => (Value::Null, Value::Null),
    }
}

/// The status as one JSON object. Built field by field from [`SessionStatus`], which holds no
/// secret; the tests check the output for tokens and the client secret anyway.
pub(crate) fn status_json(
    context: &Context,
    status: Option<&SessionStatus>,
    now: UnixTime,
) -> Value {
    let Some(status) = status else {
        return json!({
            "profile": context.global.profile,
            "store": context.store_location.clone(),
            "client_id": null,
            "endpoints": null,
            "redirect_uri": null,
            "authorized": false,
            "state": "not_logged_in",
            "access_token_fresh": false,
            "expires_at": null,
            "expires_at_unix": null,
            "expires_in_seconds": null,
            "obtained_at": null,
            "obtained_at_unix": null,
            "last_refreshed_at": null,
            "last_refreshed_at_unix": null,
            "has_refresh_token": false,
            "store_version": null,
            "reauthorization_reason": "no client registration for this profile",
        });
    };
    let (expires_at, expires_at_unix) = time_fields(status.expires_at);
    let (obtained_at, obtained_at_unix) = time_fields(status.obtained_at);
    let (refreshed_at, refreshed_at_unix) = time_fields(status.last_refreshed_at);
    let expires_in = status.expires_at.map(|at| seconds_until(at, now));
    json!({
        "profile": status.profile,
        "store": context.store_location.clone(),
        "client_id": status.client_id,
        "endpoints": {
            "logon_url": status.endpoints.logon.as_str(),
            "token_url": status.endpoints.token.as_str(),
            "api_base": status.endpoints.api_base.as_str(),
        },
        "redirect_uri": context.redirect_uri(),
        "authorized": is_authorized(status),
        "state": state_name(status.state),
        "access_token_fresh": status.has_fresh_token,
        "expires_at": expires_at,
        "expires_at_unix": expires_at_unix,
        "expires_in_seconds": expires_in,
        "obtained_at": obtained_at,
        "obtained_at_unix": obtained_at_unix,
        "last_refreshed_at": refreshed_at,
        "last_refreshed_at_unix": refreshed_at_unix,
        "has_refresh_token": status.has_refresh_token,
        "store_version": status.store_version,
        "reauthorization_reason": status.reauthorization_reason,
    })
}

pub(crate) fn status_text(
    context: &Context,
    status: Option<&SessionStatus>,
    now: UnixTime,
) -> String {
    let mut lines = vec![
        format!("profile:        {}", context.global.profile),
        format!("store:          {}", context.store_location),
    ];
    let Some(status) = status else {
        lines.push(
            "authorized:     no (no client registration: run `mailup-auth login --client-id ID`)"
                .into(),
        );
        return lines.join("\n");
    };
    // What comes from the store or a server is shown on one line, control characters removed.
    let clean = crate::output::one_line;
    lines.push(format!("client id:      {}", clean(&status.client_id)));
    lines.push(format!("logon url:      {}", status.endpoints.logon));
    lines.push(format!("token url:      {}", status.endpoints.token));
    lines.push(format!("api base:       {}", status.endpoints.api_base));
    if let Some(uri) = context.redirect_uri() {
        lines.push(format!("redirect uri:   {}", clean(&uri)));
    }
    let authorized = if is_authorized(status) {
        "yes".to_owned()
    } else {
        let why = status
            .reauthorization_reason
            .as_deref()
            .map_or_else(|| "not logged in".to_owned(), clean);
        format!("no ({why}: run `mailup-auth login`)")
    };
    lines.push(format!("authorized:     {authorized}"));
    if let Some(at) = status.expires_at {
        let note = if status.has_fresh_token {
            ""
        } else if status.reauthorization_reason.is_some()
            || status.state == SessionState::ReauthorizationRequired
        {
            // Nothing will be refreshed: the refresh token was refused.
            if at > now {
                ", unusable: log in again"
            } else {
                ", expired"
            }
        } else if at > now {
            ", within the refresh margin: refreshed on next use"
        } else if status.has_refresh_token {
            ", expired: refreshed on next use"
        } else {
            ", expired"
        };
        lines.push(format!(
            "access token:   expires {} ({}{note})",
            timefmt::display(at),
            timefmt::relative(at, now)
        ));
    } else {
        lines.push("access token:   none".into());
    }
    lines.push(format!(
        "refresh token:  {}",
        if status.has_refresh_token {
            "held"
        } else {
            "none"
        }
    ));
    if let Some(at) = status.obtained_at {
        lines.push(format!(
            "obtained:       {} ({})",
            timefmt::display(at),
            timefmt::relative(at, now)
        ));
    }
    match status.last_refreshed_at {
        Some(at) => lines.push(format!(
            "last refreshed: {} ({})",
            timefmt::display(at),
            timefmt::relative(at, now)
        )),
        None => lines.push("last refreshed: never".into()),
    }
    if let Some(version) = status.store_version {
        lines.push(format!("store version:  {version}"));
    }
    lines.join("\n")
}

/// The profile's status; `None` when no client registration is known for it.
pub(crate) async fn session_status(context: &Context) -> Result<Option<SessionStatus>, Failure> {
    if context.has_client() {
        Ok(Some(context.client().await?.status()))
    } else {
        Ok(None)
    }
}

/// Prints the status; exits 3 when the profile is not authorized (for scripts).
async fn status(context: &Context, args: &StatusArgs) -> Result<(), Failure> {
    let status = session_status(context).await?;
    let now = now();
    if args.json {
        let value = status_json(context, status.as_ref(), now);
        say!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_else(|_| value.to_string())
        );
    } else {
        say!("{}", status_text(context, status.as_ref(), now));
    }
    match &status {
        Some(status) if is_authorized(status) => Ok(()),
        _ => Err(Failure::new(
            EXIT_REAUTHORIZE,
            format!(
                "profile `{}` is not authorized (run `mailup-auth login`)",
                context.global.profile
            ),
        )),
    }
}

// ---- token, refresh ------------------------------------------------------------------------

async fn token(context: &Context, args: &JsonArgs) -> Result<(), Failure> {
    let client = context.client().await?;
    // The library waits for a refresh it sent (bounded) and saves its answer before it hands
    // anything out; if that refresh failed, it hands out the still-valid current token.
    let token = client.access_token().await?;
    warn_if_refresh_failed(&client);
    if !args.json {
        return print_data(token.secret());
    }
    let status = client.status();
    let now = now();
    let (expires_at, expires_at_unix) = time_fields(status.expires_at);
    // The one output of this CLI that holds a token, as `token` without --json does: it is
    // what the user asked for, on stdout only.
    let value = Zeroizing::new(
        serde_json::to_string_pretty(&json!({
            "profile": status.profile,
            "access_token": token.secret(),
            "token_type": "Bearer",
            "expires_at": expires_at,
            "expires_at_unix": expires_at_unix,
            "expires_in_seconds": status.expires_at.map(|at| seconds_until(at, now)),
        }))
        .map_err(|e| Failure::local(format!("cannot write JSON: {e}")))?,
    );
    print_data(&value)
}

/// A still-valid token was handed out because its refresh failed: say so on stderr (the
/// token itself is fine to use until it expires).
fn warn_if_refresh_failed(client: &MailUpClient) {
    let status = client.status();
    if let (Some(error), Some(at)) = (&status.refresh_error, status.expires_at) {
        crate::output::stderr_line(&crate::output::one_line(&format!(
            "warning: the refresh failed ({error}); using the current access token, valid until \
             {} ({}); the next command tries again",
            timefmt::display(at),
            timefmt::relative(at, now())
        )));
    }
}

async fn refresh(context: &Context, args: &JsonArgs) -> Result<(), Failure> {
    let client = context.client().await?;
    // A rejected or failed refresh is an error (exit 3 or 5), even while the current access
    // token is still valid.
    client.refresh().await?;
    let status = client.status();
    if args.json {
        return print_json(&session_json(context, &status, now()));
    }
    match status.expires_at {
        Some(at) => inform!(
            stdout,
            "Refreshed profile `{}`: the access token expires {} ({}); the refresh token was rotated and stored.",
            status.profile,
            timefmt::display(at),
            timefmt::relative(at, now())
        ),
        None => inform!(stdout, "Refreshed profile `{}`.", status.profile),
    }
    Ok(())
}

// ---- call ----------------------------------------------------------------------------------

fn parse_method(method: &str) -> Result<Method, Failure> {
    let upper = method.to_ascii_uppercase();
    Method::from_bytes(upper.as_bytes())
        .map_err(|_| Failure::usage(format!("`{method}` is not an HTTP method")))
}

/// Reads `--data`: inline JSON, `@file`, or `@-` (stdin). It must be JSON.
fn read_body(data: &str) -> Result<Vec<u8>, Failure> {
    let bytes = match data.strip_prefix('@') {
        Some("-") => {
            let mut buffer = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buffer)
                .map_err(|e| Failure::usage(format!("cannot read --data from stdin: {e}")))?;
            buffer
        }
        Some(path) => std::fs::read(path)
            .map_err(|e| Failure::usage(format!("cannot read --data file `{path}`: {e}")))?,
        None => data.as_bytes().to_vec(),
    };
    // Report where the JSON is broken, not its content (a body can hold personal data).
    serde_json::from_slice::<Value>(&bytes).map_err(|e| {
        Failure::usage(format!(
            "--data is not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    Ok(bytes)
}

/// Pretty JSON when the body is JSON (its strings escaped by the JSON writer), the text
/// otherwise, with control characters escaped when it goes to a terminal (a server's bytes must
/// not drive it; piped output stays byte-exact for scripts).
fn render_body(body: &[u8]) -> String {
    match serde_json::from_slice::<Value>(body) {
        Ok(value) => serde_json::to_string_pretty(&value).unwrap_or_else(|_| value.to_string()),
        Err(_) => {
            let text = String::from_utf8_lossy(body).into_owned();
            if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                crate::output::escape_controls(&text)
            } else {
                text
            }
        }
    }
}

async fn call(context: &Context, args: &CallArgs) -> Result<(), Failure> {
    let method = parse_method(&args.method)?;
    let body = args.data.as_deref().map(read_body).transpose()?;
    let client = context.client().await?;
    let response = client.request(method, &args.path, body).await?;
    warn_if_refresh_failed(&client);
    if response.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    print_data(&render_body(&response.body))
}

// ---- logout --------------------------------------------------------------------------------

async fn logout(context: &Context, args: &LogoutArgs) -> Result<(), Failure> {
    let profile = &context.global.profile;
    // The store wipes what a logout removes from its files before it returns (it rewrites
    // itself without them): the tokens, and with --forget-client the client secret too.
    if args.forget_client {
        // A tombstone keeps the version, so a refresh still running elsewhere cannot bring
        // the record back.
        context.store.delete(profile).await.map_err(store_failure)?;
        inform!(
            stdout,
            "Logged out of profile `{profile}` and removed it: its tokens and client \
             registration are wiped from the token store (MailUp has no revocation endpoint)."
        );
        return Ok(());
    }
    if context.has_client() {
        context.client().await?.logout().await?;
    } else {
        context.store.delete(profile).await.map_err(store_failure)?;
    }
    let kept = if context.has_client() {
        "; the client registration is kept (`logout --forget-client` removes it too)"
    } else {
        ""
    };
    inform!(
        stdout,
        "Logged out of profile `{profile}`: its tokens are wiped from the token store \
         (MailUp has no revocation endpoint{kept})."
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_target_defaults_to_any_port() {
        let target = loopback_target(None, None).unwrap();
        assert_eq!(target.port, 0);
        assert_eq!(target.path, "/callback");
        assert_eq!(loopback_target(None, Some(8765)).unwrap().port, 8765);
    }

    #[test]
    fn loopback_target_uses_the_redirect_uri_port_and_path() {
        let target = loopback_target(Some("http://localhost:8765/oauth/cb"), None).unwrap();
        assert_eq!(target.port, 8765);
        assert_eq!(target.path, "/oauth/cb");
        assert_eq!(
            target.redirect_uri.unwrap().as_str(),
            "http://localhost:8765/oauth/cb"
        );
        assert!(loopback_target(Some("http://127.0.0.1:8765/cb"), Some(9000)).is_err());
    }

    #[test]
    fn loopback_target_refuses_non_loopback_redirects() {
        for uri in [
            "https://127.0.0.1:8765/cb",
            "http://example.com/cb",
            "http://127.0.0.1:8765/cb?x=1",
            "not a url",
        ] {
            let failure = loopback_target(Some(uri), None).unwrap_err();
            assert_eq!(failure.code(), 2, "{uri}");
        }
    }

    #[test]
    fn bodies_must_be_json() {
        assert_eq!(read_body(r#"{"a":1}"#).unwrap(), br#"{"a":1}"#);
        let failure = read_body("{secret-ish").unwrap_err();
        assert_eq!(failure.code(), 2);
        assert!(!failure.message().contains("secret-ish"));
        assert!(read_body("@/nonexistent/file.json").is_err());
    }

    #[test]
    fn renders_json_pretty_and_text_as_is() {
        assert_eq!(render_body(br#"{"a":1}"#), "{\n  \"a\": 1\n}");
        assert_eq!(render_body(b"plain"), "plain");
    }

    #[test]
    fn the_password_from_the_environment_is_wiped_after_use() {
        let _: fn() -> Option<Zeroizing<String>> = password_from_env;
    }

    #[test]
    fn methods_are_case_insensitive() {
        assert_eq!(parse_method("get").unwrap(), Method::GET);
        assert_eq!(parse_method("DELETE").unwrap(), Method::DELETE);
        assert!(parse_method("GE T").is_err());
    }
}
