//! Standard output for people and scripts. Rust ignores SIGPIPE, so `println!` panics when the
//! reader goes away (`mailup-auth demo | head -1`); these never do: a closed stdout just ends
//! the output.

use std::io::Write as _;

/// Writes one line on stdout, ignoring a closed or failing stdout.
pub(crate) fn line(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{text}").and_then(|()| stdout.flush());
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
