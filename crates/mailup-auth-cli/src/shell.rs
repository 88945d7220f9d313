//! What the CLI gives shells and packagers: completion scripts (`clap_complete`) and man
//! pages (`clap_mangen`), both generated from the same command definition as `--help`, so
//! they never disagree with it.

use std::path::Path;

use clap::CommandFactory as _;

use crate::cli::{Cli, CompletionsArgs, ManArgs};
use crate::failure::Failure;

/// The binary's name, as shells and `man` know it.
const BIN: &str = "mailup-auth";

/// `completions SHELL`: the completion script on stdout.
pub(crate) fn completions(args: &CompletionsArgs) -> Result<(), Failure> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), BIN, &mut script);
    write_stdout(&script)
}

/// `man [--out DIR]`: the main page on stdout, or every page into `DIR`.
pub(crate) fn man(args: &ManArgs) -> Result<(), Failure> {
    let command = Cli::command();
    match &args.out {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(command)
                .render(&mut page)
                .map_err(|e| Failure::local(format!("cannot render the man page: {e}")))?;
            write_stdout(&page)
        }
        Some(dir) => {
            let written = write_pages(command, dir)?;
            crate::output::inform!(stdout, "Wrote {written} man pages to {}.", dir.display());
            Ok(())
        }
    }
}

/// Writes `mailup-auth.1` and `mailup-auth-<command>.1` for each visible command into `dir`;
/// returns how many.
fn write_pages(command: clap::Command, dir: &Path) -> Result<usize, Failure> {
    let cannot = |what: &str, e: std::io::Error| {
        Failure::local(format!("cannot write {what} in {}: {e}", dir.display()))
    };
    if dir.exists() && !dir.is_dir() {
        // create_dir_all would say only "File exists".
        return Err(Failure::local(format!(
            "cannot write the man pages in {}: it is not a directory",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| cannot("the man pages", e))?;
    // Subcommand pages are named after the full command (`mailup-auth-login`), as `man` expects.
    let command = command.name(BIN);
    let mut pages = vec![command.clone()];
    pages.extend(
        command
            .get_subcommands()
            .filter(|sub| !sub.is_hide_set() && sub.get_name() != "help")
            .map(|sub| {
                let name = format!("{BIN}-{}", sub.get_name());
                let shown = format!("{BIN} {}", sub.get_name());
                sub.clone()
                    .name(name)
                    .display_name(shown.clone())
                    .bin_name(shown)
            }),
    );
    for page in &pages {
        let file = dir.join(format!("{}.1", page.get_name()));
        let mut text = Vec::new();
        clap_mangen::Man::new(page.clone())
            .render(&mut text)
            .map_err(|e| cannot(&page_name(&file), e))?;
        std::fs::write(&file, text).map_err(|e| cannot(&page_name(&file), e))?;
    }
    Ok(pages.len())
}

/// A page's file name alone (the error names the directory once).
fn page_name(file: &Path) -> String {
    file.file_name().map_or_else(
        || file.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

fn write_stdout(bytes: &[u8]) -> Result<(), Failure> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Failure::local(format!("cannot write to stdout: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_visible_command_gets_a_man_page() {
        let dir = tempfile::tempdir().unwrap();
        let written = write_pages(Cli::command(), dir.path()).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names.len(), written);
        for expected in [
            "mailup-auth.1",
            "mailup-auth-login.1",
            "mailup-auth-profiles.1",
        ] {
            assert!(names.iter().any(|n| n == expected), "{names:?}");
        }
        let login = std::fs::read_to_string(dir.path().join("mailup-auth-login.1")).unwrap();
        assert!(login.starts_with(".ie") || login.contains(".TH"), "{login}");
        // clap_mangen names a subcommand's page `mailup-auth-login` or `mailup-auth login`
        // depending on its version; either names the command.
        assert!(
            login.contains("mailup\\-auth\\-login") || login.contains("mailup\\-auth login"),
            "{login}"
        );
    }
}
