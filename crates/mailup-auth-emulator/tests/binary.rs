//! The `mailup-auth-emulator` binary: starts with one command, prints its URLs and accounts,
//! serves, stops on Ctrl-C (SIGINT).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    banner: Vec<String>,
}

impl Running {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mailup-auth-emulator"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut banner = Vec::new();
        loop {
            let line = lines
                .recv_timeout(Duration::from_secs(30))
                .expect("the binary prints its banner within 30 s");
            let done = line.starts_with("Press Ctrl-C");
            banner.push(line);
            if done {
                break;
            }
        }
        Self {
            child,
            lines,
            banner,
        }
    }

    fn base_url(&self) -> url::Url {
        let first = &self.banner[0];
        let url = first.rsplit(' ').next().unwrap();
        url::Url::parse(url).unwrap()
    }

    fn line_with(&self, needle: &str) -> &str {
        self.banner
            .iter()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle} in {:?}", self.banner))
    }

    /// Sends SIGINT, as Ctrl-C does, and waits (bounded) for a clean exit.
    fn interrupt(mut self) -> (bool, Vec<String>) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break Some(status);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let rest: Vec<String> = self.lines.try_iter().collect();
        (status.is_some_and(|s| s.success()), rest)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

#[tokio::test]
async fn binary_starts_prints_urls_serves_and_stops() {
    let running = Running::start(&["--port", "0", "--admin", "--access-token-lifetime", "120"]);
    let base = running.base_url();
    assert_eq!(base.host_str(), Some("127.0.0.1"));
    assert_ne!(base.port(), Some(0));
    assert!(running
        .line_with("LogOn:")
        .ends_with("/Authorization/OAuth/LogOn"));
    assert!(running
        .line_with("Token:")
        .ends_with("/Authorization/OAuth/Token"));
    assert!(running
        .line_with("API:")
        .ends_with("/API/v1.1/Rest/ConsoleService.svc"));
    assert!(running.line_with("Admin:").contains("/_emulator"));
    assert!(running.line_with("client:").contains("mailup-demo-client"));
    assert!(running.line_with("user:").contains("m1234"));

    let http = http();
    let token: Value = http
        .post(base.join("Authorization/OAuth/Token").unwrap())
        .basic_auth("mailup-demo-client", Some("mailup-demo-secret"))
        .form(&[
            ("grant_type", "password"),
            ("username", "m1234"),
            ("password", "demo-password"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(token["expires_in"], 120);
    let info: Value = http
        .get(
            base.join("API/v1.1/Rest/ConsoleService.svc/Console/Authentication/Info")
                .unwrap(),
        )
        .bearer_auth(token["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["Username"], "m1234");
    let counters: Value = http
        .get(base.join("_emulator/counters").unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(counters["token_password"], 1);

    let (clean, rest) = running.interrupt();
    assert!(clean, "exits 0 on Ctrl-C");
    assert!(rest.iter().any(|l| l.contains("Stopping")), "{rest:?}");
}

#[tokio::test]
async fn binary_reads_a_config_file() {
    let path =
        std::env::temp_dir().join(format!("mailup-emulator-test-{}.toml", std::process::id()));
    std::fs::write(
        &path,
        r#"
        code_lifetime_secs = 30
        rate_limit = { requests = 1, window_secs = 60 }
        [[clients]]
        id = "file-client"
        secret = "file-secret"
        name = "From a file"
        [[users]]
        username = "m999"
        password = "pw999"
        company = "File Co"
        "#,
    )
    .unwrap();
    let running = Running::start(&["--port", "0", "--config", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
    assert!(running.line_with("client:").contains("file-client"));
    assert!(running.line_with("user:").contains("m999"));
    assert!(running.line_with("Admin:").contains("disabled"));
    let base = running.base_url();
    let http = http();
    let token: Value = http
        .post(base.join("Authorization/OAuth/Token").unwrap())
        .form(&[
            ("grant_type", "password"),
            ("username", "m999"),
            ("password", "pw999"),
            ("client_id", "file-client"),
            ("client_secret", "file-secret"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = token["access_token"].as_str().unwrap();
    let url = base
        .join("API/v1.1/Rest/ConsoleService.svc/Console/Authentication/Info")
        .unwrap();
    let first = http
        .get(url.clone())
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    let info: Value = first.json().await.unwrap();
    assert_eq!(info["Company"], "File Co");
    let second = http.get(url).bearer_auth(access).send().await.unwrap();
    assert_eq!(second.status(), 429, "rate limit from the file");
    drop(running);
}

#[test]
fn binary_rejects_bad_arguments_and_configs() {
    let output = Command::new(env!("CARGO_BIN_EXE_mailup-auth-emulator"))
        .args(["--port", "0", "--rate-limit", "five"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let output = Command::new(env!("CARGO_BIN_EXE_mailup-auth-emulator"))
        .args(["--port", "0", "--config", "/nonexistent/emulator.toml"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read"));
    let output = Command::new(env!("CARGO_BIN_EXE_mailup-auth-emulator"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("--admin"));
}
