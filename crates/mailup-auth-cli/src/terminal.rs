//! The few things the CLI does with the person at the terminal: open a browser, show a
//! spinner while waiting, ask for a username or a hidden password.

use std::future::Future;
use std::io::{BufRead as _, IsTerminal as _};
use std::process::{Command, Stdio};
use std::time::Duration;

use zeroize::Zeroizing;

use crate::failure::Failure;
use crate::output;

/// Tries to open `url` in the default browser; failure is silent (the URL is printed anyway).
pub(crate) fn open_browser(url: &str) {
    let mut command = if cfg!(target_os = "macos") {
        let mut c = Command::new("open");
        c.arg(url);
        c
    } else if cfg!(windows) {
        // Not `cmd /C start`: cmd.exe would cut the URL at its first `&`.
        let mut c = Command::new("rundll32");
        c.arg("url.dll,FileProtocolHandler").arg(url);
        c
    } else {
        let mut c = Command::new("xdg-open");
        c.arg(url);
        c
    };
    let spawned = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    if let Ok(mut child) = spawned {
        // Reap it in the background so it does not linger as a zombie.
        std::thread::spawn(move || {
            let _ = child.wait();
        });
    }
}

/// Runs `work`, showing `message` with a spinner on stderr while it runs, when stderr is a
/// terminal (scripts and tests see no control characters).
pub(crate) async fn with_spinner<T>(message: &str, work: impl Future<Output = T>) -> T {
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
