//! Standard output and standard error for people and scripts. Rust ignores SIGPIPE, so
//! `println!` and `eprintln!` panic when the reader goes away (`mailup-auth demo | head -1`,
//! `mailup-auth status 2>&1 | head -1`); these never do: a closed stream just ends the output.
//! Every write of the CLI goes through them (or through `print_data`, which reports failures).

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};

/// `--quiet`: progress and confirmation messages ([`inform!`]) are dropped.
static QUIET: AtomicBool = AtomicBool::new(false);

/// Sets `--quiet` for the rest of the process.
pub(crate) fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

/// Whether `--quiet` was given.
pub(crate) fn is_quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// Writes one line on stdout, ignoring a closed or failing stdout.
pub(crate) fn line(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{text}").and_then(|()| stdout.flush());
}

/// Writes `text` on stderr as is (no newline added), ignoring a closed or failing stderr.
pub(crate) fn stderr(text: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = stderr
        .write_all(text.as_bytes())
        .and_then(|()| stderr.flush());
}

/// Writes one line on stderr, ignoring a closed or failing stderr.
pub(crate) fn stderr_line(text: &str) {
    stderr(&format!("{text}\n"));
}

/// `text` on one line with every control character (escape sequences, bells, newlines) turned
/// into a space: server text (an error description, a recorded rejection reason) must never
/// drive the terminal or forge a line of output.
pub(crate) fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// `text` with control characters other than newline and tab shown as escapes (`\u{1b}`), for
/// a server's body printed to a terminal.
pub(crate) fn escape_controls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() && c != '\n' && c != '\t' {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// A `tracing` writer for stderr that drops what cannot be written instead of failing.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct QuietStderr;

impl std::io::Write for QuietStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

/// `println!` that never panics on a closed stdout.
macro_rules! say {
    () => {
        $crate::output::line("")
    };
    ($($arg:tt)*) => {
        $crate::output::line(&format!($($arg)*))
    };
}
pub(crate) use say;

/// A progress or confirmation message for people ("Logged in", "Waiting for MailUp..."): on
/// stdout (`inform!(stdout, ...)`) or stderr (`inform!(stderr, ...)`), dropped under
/// `--quiet`. Data, warnings and errors never go through it.
macro_rules! inform {
    (stdout, $($arg:tt)*) => {
        if !$crate::output::is_quiet() {
            $crate::output::line(&format!($($arg)*))
        }
    };
    (stderr, $($arg:tt)*) => {
        if !$crate::output::is_quiet() {
            $crate::output::stderr_line(&format!($($arg)*))
        }
    };
}
pub(crate) use inform;

/// `eprintln!` that never panics on a closed stderr.
macro_rules! note {
    ($($arg:tt)*) => {
        $crate::output::stderr_line(&format!($($arg)*))
    };
}
pub(crate) use note;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_writer_swallows_write_errors() {
        let mut writer = QuietStderr;
        assert_eq!(writer.write(b"").unwrap(), 0);
        assert!(writer.flush().is_ok());
    }

    #[test]
    fn server_text_cannot_drive_the_terminal() {
        let hostile = "ok\u{1b}]0;owned\u{7}\u{1b}[2J\nerror: forged";
        let line = one_line(hostile);
        assert!(!line.chars().any(char::is_control), "{line:?}");
        assert_eq!(line.lines().count(), 1);
        let escaped = escape_controls(hostile);
        assert!(!escaped.contains('\u{1b}') && !escaped.contains('\u{7}'));
        assert!(escaped.contains("\\u{1b}"));
        // Newlines and tabs of a text body stay.
        assert_eq!(escape_controls("a\tb\nc"), "a\tb\nc");
    }
}
