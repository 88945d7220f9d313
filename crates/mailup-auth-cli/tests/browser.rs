//! A real browser: headless Chromium, driven over WebDriver (chromedriver), opens the LogOn URL
//! printed by `mailup-auth login --no-browser` against the emulator, fills in the login form,
//! clicks Allow, and the CLI finishes with the tokens stored.
//!
//! Needs `chromium` and `chromedriver` (Debian: `chromium`, `chromium-driver`; `.ci/run`
//! installs them). Without them the test fails when `CI` is set and is skipped otherwise.
//! The WebDriver client is a few JSON calls over reqwest (W3C WebDriver is HTTP + JSON).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use mailup_auth_emulator::{
    Emulator, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_PASSWORD, DEFAULT_USERNAME,
};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

mod common;
use common::clean_command;

/// The W3C WebDriver element reference key.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.push(PathBuf::from("/usr/bin"));
    dirs.push(PathBuf::from("/usr/lib/chromium"));
    for name in names {
        for dir in &dirs {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// A WebDriver session on a chromedriver this test started.
struct WebDriver {
    http: reqwest::Client,
    base: String,
    session: Option<String>,
    driver: Child,
}

impl WebDriver {
    async fn start(chromedriver: &Path) -> Result<Self, String> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start chromedriver: {e}"))?;
        let http = reqwest::Client::builder()
            .timeout(STEP_TIMEOUT)
            .no_proxy()
            .build()
            .map_err(|e| e.to_string())?;
        let mut webdriver = Self {
            http,
            base: format!("http://127.0.0.1:{port}"),
            session: None,
            driver,
        };
        // Wait (bounded) until chromedriver answers.
        for _ in 0..200 {
            let ready = webdriver
                .http
                .get(format!("{}/status", webdriver.base))
                .send()
                .await;
            if let Ok(response) = ready {
                let status: Value = response.json().await.unwrap_or_default();
                if status["value"]["ready"] == true {
                    return Ok(webdriver);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        webdriver.stop().await;
        Err("chromedriver did not become ready within 20 s".into())
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let request = self.http.request(method.clone(), &url);
        let request = if method == reqwest::Method::GET || method == reqwest::Method::DELETE {
            request
        } else {
            request.json(&body)
        };
        let response = request
            .send()
            .await
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let status = response.status();
        let value: Value = response
            .json()
            .await
            .map_err(|e| format!("{method} {path}: {e}"))?;
        if !status.is_success() {
            return Err(format!(
                "{method} {path}: HTTP {status}: {}",
                value["value"]["message"]
            ));
        }
        Ok(value["value"].clone())
    }

    fn session_path(&self, rest: &str) -> String {
        format!(
            "/session/{}{rest}",
            self.session.as_deref().unwrap_or_default()
        )
    }

    async fn new_session(&mut self, chromium: &Path, profile_dir: &TempDir) -> Result<(), String> {
        let args = [
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--no-default-browser-check".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-extensions".to_owned(),
            "--no-proxy-server".to_owned(),
            format!("--user-data-dir={}", profile_dir.path().display()),
        ];
        let capabilities = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "pageLoadStrategy": "normal",
                    "goog:chromeOptions": {
                        "binary": chromium.display().to_string(),
                        "args": args,
                    }
                }
            }
        });
        let value = self
            .send(reqwest::Method::POST, "/session", capabilities)
            .await?;
        let id = value["sessionId"]
            .as_str()
            .ok_or_else(|| format!("no session id in {value}"))?;
        self.session = Some(id.to_owned());
        Ok(())
    }

    async fn navigate(&self, url: &str) -> Result<(), String> {
        self.send(
            reqwest::Method::POST,
            &self.session_path("/url"),
            json!({ "url": url }),
        )
        .await
        .map(drop)
    }

    /// Finds an element by CSS selector, retrying while the page loads (bounded).
    async fn find(&self, css: &str) -> Result<String, String> {
        let mut last = String::new();
        for _ in 0..100 {
            match self
                .send(
                    reqwest::Method::POST,
                    &self.session_path("/element"),
                    json!({ "using": "css selector", "value": css }),
                )
                .await
            {
                Ok(value) => {
                    if let Some(id) = value[ELEMENT_KEY].as_str() {
                        return Ok(id.to_owned());
                    }
                    last = value.to_string();
                }
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!("element `{css}` not found: {last}"))
    }

    async fn type_into(&self, css: &str, text: &str) -> Result<(), String> {
        let element = self.find(css).await?;
        let path = self.session_path(&format!("/element/{element}"));
        self.send(reqwest::Method::POST, &format!("{path}/clear"), json!({}))
            .await?;
        self.send(
            reqwest::Method::POST,
            &format!("{path}/value"),
            json!({ "text": text }),
        )
        .await
        .map(drop)
    }

    async fn click(&self, css: &str) -> Result<(), String> {
        let element = self.find(css).await?;
        self.send(
            reqwest::Method::POST,
            &self.session_path(&format!("/element/{element}/click")),
            json!({}),
        )
        .await
        .map(drop)
    }

    async fn title(&self) -> Result<String, String> {
        let value = self
            .send(
                reqwest::Method::GET,
                &self.session_path("/title"),
                json!(null),
            )
            .await?;
        Ok(value.as_str().unwrap_or_default().to_owned())
    }

    async fn current_url(&self) -> Result<String, String> {
        let value = self
            .send(
                reqwest::Method::GET,
                &self.session_path("/url"),
                json!(null),
            )
            .await?;
        Ok(value.as_str().unwrap_or_default().to_owned())
    }

    /// Closes the browser and stops chromedriver (the process this test started).
    async fn stop(&mut self) {
        if self.session.is_some() {
            let path = self.session_path("");
            let _ = tokio::time::timeout(
                Duration::from_secs(10),
                self.send(reqwest::Method::DELETE, &path, json!(null)),
            )
            .await;
            self.session = None;
        }
        let _ = self.driver.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.driver.wait()).await;
    }
}

/// Starts `mailup-auth login --no-browser` and returns it with the LogOn URL it printed.
async fn start_login(
    emulator: &Emulator,
    home: &TempDir,
) -> Result<(Child, String, tokio::task::JoinHandle<String>), String> {
    let mut child = clean_command(home.path())
        .env("MAILUP_CLIENT_ID", DEFAULT_CLIENT_ID)
        .env("MAILUP_CLIENT_SECRET", DEFAULT_CLIENT_SECRET)
        .env("MAILUP_AUTH_BASE", emulator.base_url().as_str())
        .arg("--store")
        .arg(home.path().join("store"))
        .args(["login", "--no-browser", "--timeout", "60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start mailup-auth: {e}"))?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    let read_url = async {
        let mut prompt = false;
        while let Ok(Some(line)) = lines.next_line().await {
            if prompt {
                return Some(line.trim().to_owned());
            }
            prompt = line.trim() == "Open this URL in your browser:";
        }
        None
    };
    let url = tokio::time::timeout(STEP_TIMEOUT, read_url)
        .await
        .map_err(|_| "no LogOn URL printed in time".to_owned())?
        .ok_or("mailup-auth ended without printing the LogOn URL")?;
    let rest = tokio::spawn(async move {
        let mut rest = String::new();
        while let Ok(Some(line)) = lines.next_line().await {
            rest.push_str(&line);
            rest.push('\n');
        }
        rest
    });
    Ok((child, url, rest))
}

/// The person at the browser: log in, allow, land on the loopback listener's page.
async fn browse(webdriver: &WebDriver, logon_url: &str) -> Result<(), String> {
    webdriver.navigate(logon_url).await?;
    let title = webdriver.title().await?;
    if !title.contains("Log in") {
        return Err(format!("unexpected LogOn page title `{title}`"));
    }
    webdriver.type_into("#username", DEFAULT_USERNAME).await?;
    webdriver.type_into("#password", DEFAULT_PASSWORD).await?;
    webdriver.click("button[type=submit]").await?;
    webdriver
        .click("button[name=decision][value=allow]")
        .await?;
    // The browser follows MailUp's redirect to the CLI's loopback listener, whose page comes
    // once the code exchange is done (a cold Chromium can take seconds to get there).
    for _ in 0..300 {
        if webdriver.title().await? == "Authorization complete" {
            let url = webdriver.current_url().await?;
            if !url.starts_with("http://127.0.0.1:") {
                return Err(format!("landed on {url}"));
            }
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!(
        "the browser did not reach the loopback page; title `{}`",
        webdriver.title().await?
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headless_chromium_logs_in_through_the_printed_url() {
    let chromium = find_program(&["chromium", "chromium-browser"]);
    let chromedriver = find_program(&["chromedriver"]);
    let (Some(chromium), Some(chromedriver)) = (chromium, chromedriver) else {
        let message = "chromium and chromedriver are needed for the browser test \
                       (Debian: apt-get install chromium chromium-driver)";
        if std::env::var_os("CI").is_some() {
            panic!("{message}; .ci/run installs them");
        }
        eprintln!("skipped: {message}");
        return;
    };

    let emulator = Emulator::builder().start().await.expect("emulator starts");
    let home = TempDir::new().unwrap();
    let profile_dir = TempDir::new().unwrap();
    let (mut login, logon_url, rest_of_stderr) = start_login(&emulator, &home)
        .await
        .expect("login prints the URL");

    let mut webdriver = WebDriver::start(&chromedriver)
        .await
        .expect("chromedriver starts");
    let browsed = match webdriver.new_session(&chromium, &profile_dir).await {
        Ok(()) => browse(&webdriver, &logon_url).await,
        Err(e) => Err(e),
    };
    webdriver.stop().await;
    if let Err(error) = browsed {
        let _ = login.start_kill();
        panic!("browser flow failed: {error}");
    }

    let output = tokio::time::timeout(STEP_TIMEOUT, login.wait_with_output())
        .await
        .expect("login finished in time")
        .expect("login ran");
    let stderr = rest_of_stderr.await.unwrap_or_default();
    assert!(
        output.status.success(),
        "login exited {:?}: {stderr}",
        output.status.code()
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("Logged in"));
    let counters = emulator.counters();
    assert_eq!(counters.token_authorization_code, 1);
    assert_eq!(counters.consents_denied, 0);

    // The tokens are stored: another process gets a live access token from the profile alone.
    let token = clean_command(home.path())
        .arg("--store")
        .arg(home.path().join("store"))
        .arg("token")
        .output();
    let token = tokio::time::timeout(STEP_TIMEOUT, token)
        .await
        .expect("token finished in time")
        .expect("token ran");
    assert!(token.status.success());
    let token = String::from_utf8_lossy(&token.stdout).trim().to_owned();
    assert!(emulator.is_access_token_live(&token));
}
