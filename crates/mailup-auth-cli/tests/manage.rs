//! The commands and options that make `mailup-auth` work like gh / az / gcloud auth, as
//! processes against the in-process emulator: `profiles`, `use`, `status --all`,
//! `logout --all`, `--json` on `token`/`login`/`refresh`/`profiles`, `-q`/`-v`, the client
//! secret from a file or stdin, `completions`, `man`, clap's suggestions and colours, and the
//! browser named in `BROWSER`.
//!
//! Every child process runs with a temporary `--store`, a temporary `HOME` (so the chosen
//! default profile is per test), no inherited `MAILUP_*` variables, and a bounded timeout.

use std::process::{Output, Stdio};
use std::time::Duration;

use mailup_auth_emulator::Consent;
use mailup_auth_emulator::{
    DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_PASSWORD, DEFAULT_USERNAME,
};
use serde_json::Value;
use tokio::process::Command;
use url::Url;

mod common;
use common::*;

impl Setup {
    /// Logs `profile` in with the password grant (the user and password from the
    /// environment).
    async fn login(&self, profile: &str) {
        let out = run(self
            .with_client()
            .args(["--profile", profile, "login", "--password"])
            .env("MAILUP_USERNAME", DEFAULT_USERNAME)
            .env("MAILUP_PASSWORD", DEFAULT_PASSWORD))
        .await;
        assert_success(&out);
    }

    /// `token` on `profile`: its access token.
    async fn token(&self, profile: &str) -> String {
        let out = run(self.bare().args(["--profile", profile, "token"])).await;
        assert_success(&out);
        stdout(&out).trim().to_owned()
    }
}

/// The command's stdout, parsed as JSON.
fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is JSON ({e}): {}", stdout(out)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_lists_each_profile_with_its_state() {
    let setup = Setup::start().await;
    // An empty store: no error, an empty JSON array.
    let out = run(setup.bare().arg("profiles")).await;
    assert_success(&out);
    assert!(stdout(&out).contains("No profiles"), "{}", stdout(&out));
    let out = run(setup.bare().args(["profiles", "--json"])).await;
    assert_success(&out);
    assert_eq!(json(&out), Value::Array(vec![]));

    setup.login("default").await;
    setup.login("work").await;
    let work_token = setup.token("work").await;
    let out = run(setup.bare().args(["--profile", "work", "logout"])).await;
    assert_success(&out);

    let out = run(setup.bare().arg("profiles")).await;
    assert_success(&out);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].contains("PROFILE") && lines[0].contains("STATE"),
        "{text}"
    );
    assert!(lines[1].starts_with("* default"), "{text}");
    assert!(
        lines[1].contains("authorized (access token expires in"),
        "{text}"
    );
    assert!(lines[2].starts_with("  work"), "{text}");
    assert!(lines[2].contains("needs login (logged out"), "{text}");

    let out = run(setup.bare().args(["profiles", "--json"])).await;
    assert_success(&out);
    let list = json(&out);
    let list = list.as_array().expect("an array");
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["profile"], "default");
    assert_eq!(list[0]["state"], "authorized");
    assert_eq!(list[0]["authorized"], true);
    assert_eq!(list[0]["in_effect"], true);
    assert_eq!(list[0]["client_id"], DEFAULT_CLIENT_ID);
    assert_eq!(list[0]["has_refresh_token"], true);
    assert!(list[0]["expires_in_seconds"].as_i64().unwrap() > 0);
    assert_eq!(list[1]["profile"], "work");
    assert_eq!(list[1]["state"], "needs_login");
    assert_eq!(list[1]["reason"], "logged out");
    assert_eq!(list[1]["expires_at"], Value::Null);
    let token = setup.token("default").await;
    assert_no_secrets(
        &format!("{text}{}", stdout(&out)),
        &[&token, &work_token, DEFAULT_CLIENT_SECRET],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn use_chooses_the_profile_commands_run_on() {
    let setup = Setup::start().await;
    setup.login("work").await;
    let out = run(setup.bare().arg("use")).await;
    assert_success(&out);
    assert!(
        stdout(&out).starts_with("default (nothing chosen"),
        "{}",
        stdout(&out)
    );
    // Only a profile the store holds (or `default`) can be chosen.
    let out = run(setup.bare().args(["use", "nowhere"])).await;
    let err = assert_exit(&out, 2);
    assert!(
        err.contains("profile `nowhere` is not in the token store"),
        "{err}"
    );

    let out = run(setup.bare().args(["use", "work"])).await;
    assert_success(&out);
    assert!(
        stdout(&out).contains("Using profile `work` by default"),
        "{}",
        stdout(&out)
    );
    let out = run(setup.bare().arg("use")).await;
    assert!(
        stdout(&out).starts_with("work (chosen with `mailup-auth use`"),
        "{}",
        stdout(&out)
    );
    // Commands without --profile now run on `work`.
    let out = run(setup.bare().args(["status", "--json"])).await;
    assert_success(&out);
    assert_eq!(json(&out)["profile"], "work");
    let out = run(setup.bare().args(["profiles", "--json"])).await;
    assert_eq!(json(&out)[0]["in_effect"], true);
    assert!(!setup.token("work").await.is_empty());
    let out = run(setup.bare().arg("token")).await;
    assert_success(&out);
    // --profile and MAILUP_PROFILE still win.
    let out = run(setup.bare().args(["--profile", "default", "status"])).await;
    assert_exit(&out, 3);
    let out = run(setup.bare().env("MAILUP_PROFILE", "default").arg("status")).await;
    assert_exit(&out, 3);
    let out = run(setup.bare().env("MAILUP_PROFILE", "default").arg("use")).await;
    assert!(
        stdout(&out).starts_with("default (from --profile"),
        "{}",
        stdout(&out)
    );
    // Back to the built-in default.
    let out = run(setup.bare().args(["use", "default"])).await;
    assert_success(&out);
    let out = run(setup.bare().arg("status")).await;
    assert_exit(&out, 3);

    // A damaged choice is a usage error naming the file, never another profile silently.
    let file = setup
        .home
        .path()
        .join("config")
        .join("mailup-auth")
        .join("default-profile");
    std::fs::write(&file, "bad\u{1b}name\n").unwrap();
    let out = run(setup.bare().arg("status")).await;
    let err = assert_exit(&out, 2);
    assert!(err.contains(&file.display().to_string()), "{err}");
    // `use` repairs it.
    let out = run(setup.bare().args(["use", "work"])).await;
    assert_success(&out);
    let out = run(setup.bare().arg("status")).await;
    assert_success(&out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_all_and_logout_all_cover_every_profile() {
    let setup = Setup::start().await;
    // No profiles: nothing is authorized.
    let out = run(setup.bare().args(["status", "--all"])).await;
    assert_exit(&out, 3);
    let out = run(setup.bare().args(["logout", "--all"])).await;
    assert_success(&out);

    setup.login("default").await;
    setup.login("work").await;
    let out = run(setup.bare().args(["status", "--all"])).await;
    assert_success(&out);
    let text = stdout(&out);
    assert!(text.contains("profile:        default"), "{text}");
    assert!(text.contains("profile:        work"), "{text}");
    assert_eq!(text.matches("authorized:     yes").count(), 2, "{text}");
    let out = run(setup.bare().args(["status", "--all", "--json"])).await;
    assert_success(&out);
    let all = json(&out);
    let all = all.as_array().unwrap();
    assert_eq!(all.len(), 2);
    assert!(all.iter().all(|status| status["authorized"] == true));
    assert_eq!(all[1]["profile"], "work");

    // One logged out: status --all names it and exits 3.
    let out = run(setup.bare().args(["--profile", "work", "logout"])).await;
    assert_success(&out);
    let out = run(setup.bare().args(["status", "--all"])).await;
    let err = assert_exit(&out, 3);
    assert!(err.contains("not authorized: work"), "{err}");

    // logout --all logs out of every profile, keeping the client registrations...
    let out = run(setup.bare().args(["logout", "--all"])).await;
    assert_success(&out);
    assert_eq!(stdout(&out).matches("Logged out of profile").count(), 2);
    let out = run(setup.bare().args(["profiles", "--json"])).await;
    let list = json(&out);
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert!(list
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["state"] == "needs_login" && p["client_id"] == DEFAULT_CLIENT_ID));
    // ... and with --forget-client removes them.
    let out = run(setup.bare().args(["logout", "--all", "--forget-client"])).await;
    assert_success(&out);
    let out = run(setup.bare().args(["profiles", "--json"])).await;
    assert_eq!(json(&out), Value::Array(vec![]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_on_login_token_and_refresh() {
    let setup = Setup::start().await;
    let out = run(setup
        .with_client()
        .args(["login", "--password", "--json"])
        .env("MAILUP_USERNAME", DEFAULT_USERNAME)
        .env("MAILUP_PASSWORD", DEFAULT_PASSWORD))
    .await;
    assert_success(&out);
    let login = json(&out);
    assert_eq!(login["profile"], "default");
    assert_eq!(login["authorized"], true);
    assert_eq!(login["has_refresh_token"], true);
    assert!(login["expires_at"].as_str().unwrap().ends_with('Z'));
    assert!(login.get("access_token").is_none(), "login prints no token");

    let plain = setup.token("default").await;
    let out = run(setup.bare().args(["token", "--json"])).await;
    assert_success(&out);
    let token = json(&out);
    assert_eq!(token["access_token"], plain.as_str());
    assert_eq!(token["token_type"], "Bearer");
    assert_eq!(token["profile"], "default");
    assert_eq!(token["expires_at"], login["expires_at"]);
    assert!(token["expires_in_seconds"].as_i64().unwrap() > 0);
    assert!(token["expires_at_unix"].as_u64().is_some());

    let out = run(setup.bare().args(["refresh", "--json"])).await;
    assert_success(&out);
    let refreshed = json(&out);
    assert_eq!(refreshed["profile"], "default");
    assert_eq!(refreshed["authorized"], true);
    assert!(refreshed.get("access_token").is_none());
    assert_no_secrets(&stdout(&out), &[&plain, DEFAULT_CLIENT_SECRET]);
    assert_ne!(
        setup.token("default").await,
        plain,
        "the refresh replaced the token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_keeps_data_and_errors_and_verbose_logs_no_secret() {
    let setup = Setup::start().await;
    let out = run(setup
        .with_client()
        .args(["-q", "login", "--password"])
        .env("MAILUP_USERNAME", DEFAULT_USERNAME)
        .env("MAILUP_PASSWORD", DEFAULT_PASSWORD))
    .await;
    assert_success(&out);
    assert_eq!(stdout(&out), "", "no confirmation under --quiet");
    let out = run(setup.bare().args(["refresh", "--quiet"])).await;
    assert_success(&out);
    assert_eq!(stdout(&out), "");
    // Data still comes out, and errors too.
    let out = run(setup.bare().args(["-q", "token"])).await;
    assert_success(&out);
    let first = stdout(&out).trim().to_owned();
    assert!(!first.is_empty());
    let out = run(setup.bare().args(["-q", "--profile", "nobody", "token"])).await;
    let err = assert_exit(&out, 3);
    assert!(err.starts_with("error: "), "{err}");
    let out = run(setup.bare().args(["-q", "-v", "token"])).await;
    assert_exit(&out, 2);

    // -v logs the library's steps on stderr; at the most verbose, still no secret.
    let out = run(setup.bare().args(["-vvv", "refresh"])).await;
    assert_success(&out);
    let log = stderr(&out);
    assert!(
        log.contains("mailup_auth"),
        "the library's events are logged: {log}"
    );
    assert!(log.contains("TRACE") || log.contains("DEBUG"), "{log}");
    let second = setup.token("default").await;
    assert_no_secrets(
        &log,
        &[&first, &second, DEFAULT_CLIENT_SECRET, DEFAULT_PASSWORD],
    );
    // Without -v (and without RUST_LOG) stderr stays quiet.
    let out = run(setup.bare().arg("refresh")).await;
    assert_success(&out);
    assert_eq!(stderr(&out), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_secret_comes_from_a_file_or_stdin() {
    let setup = Setup::start().await;
    let file = setup.home.path().join("client-secret");
    std::fs::write(&file, format!("{DEFAULT_CLIENT_SECRET}\n")).unwrap();
    let password_login = |command: &mut Command| {
        command
            .args(["login", "--password"])
            .env("MAILUP_USERNAME", DEFAULT_USERNAME)
            .env("MAILUP_PASSWORD", DEFAULT_PASSWORD);
    };
    // From a file (the environment holds no secret).
    let mut command = setup.with_client_id();
    command.arg("--client-secret-file").arg(&file);
    password_login(&mut command);
    assert_success(&run(&mut command).await);
    // From the environment variable naming the file, for another profile.
    let mut command = setup.with_client_id();
    command
        .args(["--profile", "env"])
        .env("MAILUP_CLIENT_SECRET_FILE", &file);
    password_login(&mut command);
    assert_success(&run(&mut command).await);
    // From standard input.
    let mut command = setup.with_client_id();
    command.args(["--profile", "piped", "--client-secret-file", "-"]);
    password_login(&mut command);
    let out = run_with_stdin(&mut command, &format!("{DEFAULT_CLIENT_SECRET}\r\n")).await;
    assert_success(&out);
    let out = run(setup.bare().args(["profiles", "--json"])).await;
    let list = json(&out);
    assert_eq!(list.as_array().unwrap().len(), 3);
    assert!(list
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["authorized"] == true));

    // The file replaces a wrong secret in the environment.
    let mut command = setup.with_client_id();
    command
        .args(["--profile", "over"])
        .env("MAILUP_CLIENT_SECRET", "wrong-secret")
        .arg("--client-secret-file")
        .arg(&file);
    password_login(&mut command);
    assert_success(&run(&mut command).await);

    // A wrong secret from the file is refused by the server like any other.
    let wrong = setup.home.path().join("wrong-secret");
    std::fs::write(&wrong, "not-the-secret-at-all\n").unwrap();
    let mut command = setup.with_client_id();
    command
        .args(["--profile", "wrong", "--client-secret-file"])
        .arg(&wrong);
    password_login(&mut command);
    let out = run(&mut command).await;
    assert!(!out.status.success());
    assert_no_secrets(&stderr(&out), &["not-the-secret-at-all"]);

    // Bad files are usage errors that name the file, never its content.
    let empty = setup.home.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let binary = setup.home.path().join("binary");
    std::fs::write(&binary, [0xff, 0xfe, b's', b'3']).unwrap();
    let missing = setup.home.path().join("missing");
    for path in [&empty, &binary, &missing] {
        let out = run(setup
            .with_client_id()
            .arg("--client-secret-file")
            .arg(path)
            .arg("status"))
        .await;
        let err = assert_exit(&out, 2);
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(!err.contains("s3"), "{err}");
    }
    // Both the flag and the file: a usage error that shows neither value.
    let out = run(setup
        .with_client_id()
        .args([
            "--client-secret",
            "flag-secret-value",
            "--client-secret-file",
        ])
        .arg(&file)
        .arg("status"))
    .await;
    let err = assert_exit(&out, 2);
    assert!(err.contains("--client-secret-file"), "{err}");
    assert_no_secrets(&err, &["flag-secret-value", DEFAULT_CLIENT_SECRET]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_for_each_shell_and_man_pages() {
    let setup = Setup::start().await;
    for (shell, marker) in [
        ("bash", "_mailup__auth()"),
        ("zsh", "#compdef mailup-auth"),
        ("fish", "complete -c mailup-auth"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let out = run(setup.bare().args(["completions", shell])).await;
        assert_success(&out);
        let script = stdout(&out);
        assert!(script.contains(marker), "{shell}: {script}");
        for command in ["profiles", "status", "completions", "logout"] {
            assert!(script.contains(command), "{shell} completes {command}");
        }
        assert!(script.contains("client-secret-file"), "{shell}");
    }
    let out = run(setup.bare().args(["completions", "tcsh"])).await;
    assert_exit(&out, 2);

    let out = run(setup.bare().arg("man")).await;
    assert_success(&out);
    let page = stdout(&out);
    assert!(page.contains(".TH mailup-auth 1"), "{page}");
    assert!(
        page.contains("Exit codes:"),
        "the page carries the help's notes"
    );
    let dir = setup.home.path().join("man");
    // A file where the directory should be: said so, not "File exists".
    let file = setup.home.path().join("man-file");
    std::fs::write(&file, "x").unwrap();
    let out = run(setup.bare().args(["man", "--out"]).arg(&file)).await;
    let err = assert_exit(&out, 1);
    assert!(err.contains("it is not a directory"), "{err}");
    let out = run(setup.bare().args(["man", "--out"]).arg(&dir)).await;
    assert_success(&out);
    for page in [
        "mailup-auth.1",
        "mailup-auth-login.1",
        "mailup-auth-profiles.1",
        "mailup-auth-use.1",
    ] {
        let text = std::fs::read_to_string(dir.join(page)).unwrap();
        assert!(text.contains(".TH"), "{page}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clap_suggests_wraps_and_colours_only_when_allowed() {
    let setup = Setup::start().await;
    let out = run(setup.bare().arg("statsu")).await;
    let err = assert_exit(&out, 2);
    assert!(
        err.contains("a similar subcommand exists: 'status'"),
        "{err}"
    );
    assert!(!err.contains('\u{1b}'), "not a terminal: no colour");
    // Colour forced on, then NO_COLOR wins over it.
    let mut forced = setup.bare();
    forced.env_remove("NO_COLOR").env("CLICOLOR_FORCE", "1");
    let out = run(forced.arg("statsu")).await;
    assert!(stderr(&out).contains("\u{1b}["), "{}", stderr(&out));
    let out = run(setup.bare().env("CLICOLOR_FORCE", "1").arg("statsu")).await;
    assert!(!stderr(&out).contains('\u{1b}'), "{}", stderr(&out));

    // Help fits the width it is given (only unbreakable words stick out).
    let out = run(setup.bare().env("COLUMNS", "60").args(["login", "--help"])).await;
    assert_success(&out);
    let help = stdout(&out);
    for line in help.lines().filter(|line| line.chars().count() > 60) {
        assert!(
            !line.trim().contains(' '),
            "a breakable line is wider than 60 columns: {line:?}"
        );
    }
    let wide = run(setup.bare().env("COLUMNS", "200").args(["login", "--help"])).await;
    assert!(stdout(&wide).lines().count() < help.lines().count());
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_opens_the_browser_named_in_browser() {
    use std::os::unix::fs::PermissionsExt as _;
    let setup = Setup::start().await;
    // A "browser" that writes down the URL it was given.
    let opened = setup.home.path().join("opened-url");
    let script = setup.home.path().join("fake-browser");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nprintf '%s' \"$1\" > '{}.tmp' && mv '{0}.tmp' '{0}'\n",
            opened.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let child = setup
        .with_client()
        .env("BROWSER", &script)
        .args(["login", "--timeout", "30"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("login starts");
    // Wait (bounded) for the browser to be given the URL.
    let mut url = None;
    for _ in 0..300 {
        if let Ok(text) = std::fs::read_to_string(&opened) {
            url = Some(Url::parse(text.trim()).expect("the browser got a URL"));
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let logon_url = url.expect("the browser named in BROWSER was started with the LogOn URL");
    assert_eq!(logon_url.path(), "/Authorization/OAuth/LogOn");
    let (browser, location) = authorize_in_browser(&logon_url, Consent::Allow).await;
    let page = browser
        .follow(&location)
        .await
        .expect("the listener answers");
    assert_eq!(page.status, 200, "{}", page.body);
    let out = tokio::time::timeout(RUN_TIMEOUT, child.wait_with_output())
        .await
        .expect("login finished in time")
        .expect("login ran");
    assert_success(&out);
    assert!(stdout(&out).contains("Logged in"), "{}", stdout(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_profile_names_and_config_paths() {
    let setup = Setup::start().await;
    setup.login("work").await;
    // A name with a space: the hint is a command that can be pasted into a shell.
    let out = run(setup.bare().args(["use", "a b"])).await;
    let err = assert_exit(&out, 2);
    assert!(err.contains("`mailup-auth --profile 'a b' login`"), "{err}");
    // A path-like name is a name like any other, not a file: nothing is written.
    let out = run(setup.bare().args(["use", "../x"])).await;
    assert_exit(&out, 2);
    let out = run(setup.bare().args(["use", ""])).await;
    assert_exit(&out, 2);
    // A 10 KB name: a usage error of a few lines, not 10 KB.
    let out = run(setup.bare().args(["use", &"n".repeat(10 * 1024)])).await;
    let err = assert_exit(&out, 2);
    assert!(err.len() < 300 && err.contains("(10240 bytes)"), "{err}");
    assert!(!setup.home.path().join("config").exists(), "nothing chosen");

    // The config directory's path runs through a file: nothing can be chosen there, so the
    // commands run on `default` ...
    let file = setup.home.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let out = run(setup
        .bare()
        .env("XDG_CONFIG_HOME", &file)
        .args(["status", "--json"]))
    .await;
    assert_exit(&out, 3);
    assert_eq!(json(&out)["profile"], "default");
    let out = run(setup
        .bare()
        .env("XDG_CONFIG_HOME", &file)
        .args(["--profile", "work", "token"]))
    .await;
    assert_success(&out);
    // ... and `use` says it cannot write the choice (exit 1, naming the path).
    let out = run(setup
        .bare()
        .env("XDG_CONFIG_HOME", &file)
        .args(["use", "work"]))
    .await;
    let err = assert_exit(&out, 1);
    assert!(err.contains(&file.display().to_string()), "{err}");

    // A failing `--json` command: nothing on stdout, the error on stderr.
    let out = run(setup
        .bare()
        .args(["--profile", "nobody", "token", "--json"]))
    .await;
    let err = assert_exit(&out, 3);
    assert!(stdout(&out).is_empty(), "{}", stdout(&out));
    assert!(err.starts_with("error: "), "{err}");
    let out = run(setup
        .bare()
        .args(["-q", "--profile", "work", "token", "--json"]))
    .await;
    assert_success(&out);
    assert_eq!(json(&out)["profile"], "work");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bash_completion_script_parses() {
    let Ok(bash) = which_bash() else {
        assert!(std::env::var_os("CI").is_none(), "bash is needed under CI");
        return;
    };
    let setup = Setup::start().await;
    let out = run(setup.bare().args(["completions", "bash"])).await;
    assert_success(&out);
    let script = setup.home.path().join("mailup-auth.bash");
    std::fs::write(&script, &out.stdout).unwrap();
    let check = run(Command::new(bash).arg("-n").arg(&script)).await;
    assert_success(&check);
}

fn which_bash() -> Result<std::path::PathBuf, ()> {
    ["/bin/bash", "/usr/bin/bash", "/usr/local/bin/bash"]
        .iter()
        .map(std::path::PathBuf::from)
        .find(|path| path.exists())
        .ok_or(())
}
