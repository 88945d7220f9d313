//! The few things the CLI does with the person at the terminal: open a browser, show a
//! spinner while waiting (not under `--quiet`), ask for a username or a hidden password.

use std::future::Future;
use std::io::{BufRead as _, IsTerminal as _};
use std::time::Duration;

use zeroize::Zeroizing;

use crate::failure::Failure;
use crate::output;

/// Tries to open `url` in the user's browser; failure is silent (the URL is printed anyway).
///
/// The `webbrowser` crate picks the browser as people expect: `$BROWSER` first (a command, or
/// a list separated by `:`, with `%s` for the URL), then the desktop's default (`xdg-open`
/// and friends, macOS `open`, Windows' URL handler), and under WSL the Windows browser. A
/// graphical browser's output is suppressed; a text browser named in `$BROWSER` (lynx, w3m)
/// runs in this terminal, where the LogOn form can be filled in too.
pub(crate) fn open_browser(url: &str) {
    let mut options = webbrowser::BrowserOptions::new();
    options.with_suppress_output(true);
    let url = url.to_owned();
    // `webbrowser` waits for some launchers to exit: off the async workers, and never waited
    // for (the listener must keep answering).
    std::thread::spawn(move || {
        let _ = webbrowser::open_browser_with_options(webbrowser::Browser::Default, &url, &options);
    });
}

/// Runs `work`, showing `message` with a spinner on stderr while it runs, when stderr is a
/// terminal (scripts and tests see no control characters).
pub(crate) async fn with_spinner<T>(message: &str, work: impl Future<Output = T>) -> T {
    if output::is_quiet() {
        return work.await;
    }
    if !std::io::stderr().is_terminal() {
        output::stderr_line(message);
        return work.await;
    }
    const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
    tokio::pin!(work);
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    let mut frame = 0usize;
    let output = loop {
        tokio::select! {
            output = &mut work => break output,
            _ = ticker.tick() => {
                output::stderr(&format!("\r{} {message}", FRAMES[frame % FRAMES.len()]));
                frame += 1;
            }
        }
    };
    // Clear the spinner line.
    output::stderr("\r\x1b[2K");
    output
}

/// Asks for the username on the terminal (or reads a line from a piped stdin).
pub(crate) fn prompt_username() -> Result<String, Failure> {
    if std::io::stdin().is_terminal() {
        output::stderr("MailUp username: ");
    }
    let line = read_stdin_line()?;
    let name = line.trim().to_owned();
    if name.is_empty() {
        return Err(Failure::usage(
            "no username: pass --username or set MAILUP_USERNAME",
        ));
    }
    Ok(name)
}

/// Asks for the password without echo on a terminal, or reads one line from a piped stdin.
/// The password stays in memory that is wiped when it is dropped.
pub(crate) fn prompt_password() -> Result<Zeroizing<String>, Failure> {
    let password = if std::io::stdin().is_terminal() {
        Zeroizing::new(
            rpassword::prompt_password("MailUp password: ")
                .map_err(|e| Failure::usage(format!("cannot read the password: {e}")))?,
        )
    } else {
        let line = read_stdin_line()?;
        Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_owned())
    };
    if password.is_empty() {
        return Err(Failure::usage(
            "no password: set MAILUP_PASSWORD or type it at the prompt",
        ));
    }
    Ok(password)
}

/// One line of standard input, in memory that is wiped when it is dropped (room for a long
/// line is reserved first, so that growing the buffer leaves no copy behind in most cases).
fn read_stdin_line() -> Result<Zeroizing<String>, Failure> {
    let mut line = Zeroizing::new(String::with_capacity(4096));
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| Failure::usage(format!("cannot read standard input: {e}")))?;
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_read_into_memory_that_is_wiped() {
        let _: fn() -> Result<Zeroizing<String>, Failure> = prompt_password;
        let _: fn() -> Result<Zeroizing<String>, Failure> = read_stdin_line;
    }
}
