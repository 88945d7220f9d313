//! A scripted user agent that walks a LogOn flow over real HTTP, as a person with a browser
//! would: GET the LogOn page, fill in and POST the login form (with every hidden field, the
//! CSRF token included), follow to the consent page, press Allow or Deny, and hand back the
//! final redirect **without following it**.
//!
//! It reads forms generically (the form with a password field, then the form with an
//! Allow / Deny button), so it works against the emulator's pages and against pages shaped
//! like them. It is for tests and demos; it runs no JavaScript and keeps no cookies.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use mailup_auth_emulator::{Consent, ScriptedBrowser};
//! use mailup_auth_emulator::{Emulator, DEFAULT_CLIENT_ID, DEFAULT_PASSWORD, DEFAULT_USERNAME};
//!
//! let emu = Emulator::builder().start().await?;
//! let logon = emu.authorize_url(DEFAULT_CLIENT_ID, "http://127.0.0.1:8765/callback", "state-1");
//! let browser = ScriptedBrowser::new();
//! let location = browser
//!     .authorize(&logon, DEFAULT_USERNAME, DEFAULT_PASSWORD, Consent::Allow)
//!     .await?;
//! assert!(location.query_pairs().any(|(k, _)| k == "code"));
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::time::Duration;

use url::Url;

/// The user's answer on the consent page.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Consent {
    /// Press Allow: the application gets a code.
    Allow,
    /// Press Deny: the application gets `error=access_denied`.
    Deny,
}

impl Consent {
    fn word(self) -> &'static str {
        match self {
            Consent::Allow => "allow",
            Consent::Deny => "deny",
        }
    }
}

impl fmt::Display for Consent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.word())
    }
}

/// Which step of the flow an error happened in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Step {
    /// Loading the LogOn page.
    LogOnPage,
    /// Posting the login form.
    LoginForm,
    /// Loading the consent page.
    ConsentPage,
    /// Posting the consent form.
    ConsentForm,
    /// Following the final redirect.
    Follow,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::LogOnPage => "loading the LogOn page",
            Step::LoginForm => "posting the login form",
            Step::ConsentPage => "loading the consent page",
            Step::ConsentForm => "posting the consent form",
            Step::Follow => "following the redirect",
        })
    }
}

/// Why the scripted flow failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrowserError {
    /// The HTTP request itself failed (connection, timeout, body).
    #[error("HTTP request failed while {step}")]
    Http {
        /// Where.
        step: Step,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with a status the flow does not expect (a 400 page, say).
    #[error("unexpected HTTP status {status} while {step}{}", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    UnexpectedStatus {
        /// Where.
        step: Step,
        /// The status code.
        status: u16,
        /// The page's alert text, if it had one.
        message: Option<String>,
    },
    /// The page had no usable form.
    #[error("no suitable form found while {step}")]
    FormNotFound {
        /// Where.
        step: Step,
    },
    /// The login form came back with an error: wrong username or password.
    #[error("login rejected: {message}")]
    LoginRejected {
        /// The message shown on the page.
        message: String,
    },
    /// The consent page has no button for the requested choice.
    #[error("the consent page has no {choice} button")]
    ChoiceNotFound {
        /// The choice asked for.
        choice: Consent,
    },
    /// A redirect had no usable `Location`.
    #[error("missing or invalid Location header while {step}")]
    MissingLocation {
        /// Where.
        step: Step,
    },
    /// The server kept redirecting inside its own pages.
    #[error("too many redirects while {step}")]
    TooManyRedirects {
        /// Where.
        step: Step,
    },
}

/// What the application's redirect URI answered when [`ScriptedBrowser::follow`] loaded it.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowedRedirect {
    /// The HTTP status.
    pub status: u16,
    /// The body, as text.
    pub body: String,
}

/// A user agent without JavaScript or cookies that fills in the LogOn and consent forms.
#[derive(Debug, Clone)]
pub struct ScriptedBrowser {
    http: reqwest::Client,
}

impl Default for ScriptedBrowser {
    fn default() -> Self {
        Self::new()
    }
}

const MAX_INTERNAL_REDIRECTS: usize = 5;

impl ScriptedBrowser {
    /// A browser with a 30 s timeout per request.
    pub fn new() -> Self {
        Self::with_timeout(Duration::from_secs(30))
    }

    /// A browser with this timeout per request.
    pub fn with_timeout(timeout: Duration) -> Self {
        // The emulator is on this machine: a system proxy (HTTP_PROXY) must not be asked.
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .user_agent(concat!(
                "mailup-auth-emulator-browser/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self { http }
    }

    /// Runs the LogOn flow from `logon_url` (the full URL with its query) and returns the
    /// `Location` of the final redirect to the application, unfollowed.
    ///
    /// If the server redirects back at once (say `error=unsupported_response_type`), that
    /// location is returned too: the caller reads `code` or `error` from it.
    pub async fn authorize(
        &self,
        logon_url: &Url,
        username: &str,
        password: &str,
        consent: Consent,
    ) -> Result<Url, BrowserError> {
        // 1. The LogOn page.
        let page = match self.get(logon_url, Step::LogOnPage).await? {
            Loaded::Page(page) => page,
            Loaded::Redirect(location) => return Ok(location),
        };
        let login = find_forms(&page.body)
            .into_iter()
            .find(|f| f.inputs.iter().any(|i| i.kind == "password"))
            .ok_or(BrowserError::FormNotFound {
                step: Step::LogOnPage,
            })?;
        // 2. Post the credentials with every hidden field.
        let mut fields = Vec::new();
        let mut username_done = false;
        for input in &login.inputs {
            match input.kind.as_str() {
                "password" => fields.push((input.name.clone(), password.to_owned())),
                "text" | "email" if !username_done => {
                    username_done = true;
                    fields.push((input.name.clone(), username.to_owned()));
                }
                "hidden" => fields.push((input.name.clone(), input.value.clone())),
                _ => {}
            }
        }
        let action = resolve(&page.url, &login.action, Step::LoginForm)?;
        let response = self.post(&action, &fields, Step::LoginForm).await?;
        let consent_page = match response {
            Loaded::Page(page) => {
                let still_login = find_forms(&page.body)
                    .iter()
                    .any(|f| f.inputs.iter().any(|i| i.kind == "password"));
                if still_login {
                    return Err(BrowserError::LoginRejected {
                        message: alert_text(&page.body)
                            .unwrap_or_else(|| "the login form was shown again".to_owned()),
                    });
                }
                page
            }
            Loaded::Redirect(location) => {
                match self
                    .follow_internal(logon_url, location, Step::ConsentPage)
                    .await?
                {
                    Loaded::Page(page) => page,
                    Loaded::Redirect(back) => return Ok(back),
                }
            }
        };
        // 3. Press Allow or Deny.
        let wanted = consent.word();
        let (form, button) = find_forms(&consent_page.body)
            .into_iter()
            .find_map(|form| {
                let button = form.buttons.iter().find(|b| {
                    b.value.eq_ignore_ascii_case(wanted)
                        || b.text.trim().eq_ignore_ascii_case(wanted)
                })?;
                let button = button.clone();
                Some((form, button))
            })
            .ok_or(BrowserError::ChoiceNotFound { choice: consent })?;
        let mut fields: Vec<(String, String)> = form
            .inputs
            .iter()
            .filter(|i| i.kind == "hidden")
            .map(|i| (i.name.clone(), i.value.clone()))
            .collect();
        if !button.name.is_empty() {
            fields.push((button.name.clone(), button.value.clone()));
        }
        let action = resolve(&consent_page.url, &form.action, Step::ConsentForm)?;
        match self.post(&action, &fields, Step::ConsentForm).await? {
            Loaded::Redirect(location) => Ok(location),
            Loaded::Page(page) => Err(BrowserError::UnexpectedStatus {
                step: Step::ConsentForm,
                status: page.status,
                message: alert_text(&page.body),
            }),
        }
    }

    /// GETs `location` (typically the redirect [`ScriptedBrowser::authorize`] returned, sent
    /// to the application's loopback listener) and returns its status and body. Redirects are
    /// not followed.
    pub async fn follow(&self, location: &Url) -> Result<FollowedRedirect, BrowserError> {
        let response = self
            .http
            .get(location.clone())
            .send()
            .await
            .map_err(|source| BrowserError::Http {
                step: Step::Follow,
                source,
            })?;
        let status = response.status().as_u16();
        let body = response.text().await.map_err(|source| BrowserError::Http {
            step: Step::Follow,
            source,
        })?;
        Ok(FollowedRedirect { status, body })
    }

    /// Follows redirects that stay on the authorization server's origin; returns the first
    /// page, or the first redirect that leaves the origin.
    async fn follow_internal(
        &self,
        origin_of: &Url,
        mut location: Url,
        step: Step,
    ) -> Result<Loaded, BrowserError> {
        for _ in 0..MAX_INTERNAL_REDIRECTS {
            if location.origin() != origin_of.origin() {
                return Ok(Loaded::Redirect(location));
            }
            match self.get(&location, step).await? {
                Loaded::Redirect(next) => location = next,
                page => return Ok(page),
            }
        }
        Err(BrowserError::TooManyRedirects { step })
    }

    async fn get(&self, url: &Url, step: Step) -> Result<Loaded, BrowserError> {
        let response = self
            .http
            .get(url.clone())
            .send()
            .await
            .map_err(|source| BrowserError::Http { step, source })?;
        Loaded::from_response(url, response, step).await
    }

    async fn post(
        &self,
        url: &Url,
        fields: &[(String, String)],
        step: Step,
    ) -> Result<Loaded, BrowserError> {
        // Built before the request: the serializer is not `Send` and must not live across
        // the await, or this future could not be spawned on a multi-threaded runtime.
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let response = self
            .http
            .post(url.clone())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|source| BrowserError::Http { step, source })?;
        Loaded::from_response(url, response, step).await
    }
}

#[derive(Debug)]
struct Page {
    url: Url,
    status: u16,
    body: String,
}

#[derive(Debug)]
enum Loaded {
    Page(Page),
    Redirect(Url),
}

impl Loaded {
    /// A redirect, a 200 page, or an error for anything else (with the page's alert text).
    async fn from_response(
        url: &Url,
        response: reqwest::Response,
        step: Step,
    ) -> Result<Self, BrowserError> {
        let status = response.status();
        if status.is_redirection() {
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| url.join(v).ok())
                .ok_or(BrowserError::MissingLocation { step })?;
            return Ok(Loaded::Redirect(location));
        }
        let body = response
            .text()
            .await
            .map_err(|source| BrowserError::Http { step, source })?;
        if status != reqwest::StatusCode::OK {
            return Err(BrowserError::UnexpectedStatus {
                step,
                status: status.as_u16(),
                message: alert_text(&body),
            });
        }
        Ok(Loaded::Page(Page {
            url: url.clone(),
            status: status.as_u16(),
            body,
        }))
    }
}

fn resolve(base: &Url, action: &str, step: Step) -> Result<Url, BrowserError> {
    if action.is_empty() {
        return Ok(base.clone());
    }
    base.join(action)
        .map_err(|_| BrowserError::FormNotFound { step })
}

// ----- a small, tolerant HTML form reader -----

#[derive(Debug, Clone, Default)]
struct Form {
    action: String,
    inputs: Vec<Input>,
    buttons: Vec<Button>,
}

#[derive(Debug, Clone)]
struct Input {
    name: String,
    value: String,
    kind: String,
}

#[derive(Debug, Clone)]
struct Button {
    name: String,
    value: String,
    text: String,
}

/// A start or end tag: its lower-case name, attributes, and the byte offset after it.
struct Tag {
    name: String,
    closing: bool,
    attributes: Vec<(String, String)>,
    end: usize,
}

impl Tag {
    fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses the tag starting at `html[start] == '<'`, or `None` if it is not a tag.
fn parse_tag(html: &str, start: usize) -> Option<Tag> {
    let bytes = html.as_bytes();
    let mut i = start + 1;
    let closing = bytes.get(i) == Some(&b'/');
    if closing {
        i += 1;
    }
    let name_start = i;
    while i < bytes.len() && bytes[i].is_ascii_alphanumeric() {
        i += 1;
    }
    if i == name_start {
        return None;
    }
    let name = html[name_start..i].to_ascii_lowercase();
    let mut attributes = Vec::new();
    loop {
        while i < bytes.len() && (bytes[i].is_ascii_whitespace() || bytes[i] == b'/') {
            i += 1;
        }
        if i >= bytes.len() {
            return None;
        }
        if bytes[i] == b'>' {
            return Some(Tag {
                name,
                closing,
                attributes,
                end: i + 1,
            });
        }
        let attr_start = i;
        while i < bytes.len()
            && !bytes[i].is_ascii_whitespace()
            && !matches!(bytes[i], b'=' | b'>' | b'/')
        {
            i += 1;
        }
        let attr = html[attr_start..i].to_ascii_lowercase();
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let mut value = String::new();
        if bytes.get(i) == Some(&b'=') {
            i += 1;
            while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            match bytes.get(i) {
                Some(&quote @ (b'"' | b'\'')) => {
                    let value_start = i + 1;
                    let len = bytes[value_start..].iter().position(|&b| b == quote)?;
                    value = decode_entities(&html[value_start..value_start + len]);
                    i = value_start + len + 1;
                }
                Some(_) => {
                    let value_start = i;
                    while i < bytes.len() && !bytes[i].is_ascii_whitespace() && bytes[i] != b'>' {
                        i += 1;
                    }
                    value = decode_entities(&html[value_start..i]);
                }
                None => return None,
            }
        }
        if !attr.is_empty() {
            attributes.push((attr, value));
        }
    }
}

/// Every `<form>` with its inputs and buttons.
fn find_forms(html: &str) -> Vec<Form> {
    let mut forms = Vec::new();
    let mut current: Option<Form> = None;
    let mut pos = 0;
    while let Some(offset) = html[pos..].find('<') {
        let start = pos + offset;
        if html[start..].starts_with("<!--") {
            pos = html[start..]
                .find("-->")
                .map_or(html.len(), |e| start + e + 3);
            continue;
        }
        let Some(tag) = parse_tag(html, start) else {
            pos = start + 1;
            continue;
        };
        pos = tag.end;
        match (tag.name.as_str(), tag.closing) {
            ("style" | "script", false) => {
                let close = format!("</{}", tag.name);
                pos = find_ascii_ci(&html[pos..], &close).map_or(html.len(), |e| pos + e);
            }
            ("form", false) => {
                if let Some(form) = current.take() {
                    forms.push(form);
                }
                current = Some(Form {
                    action: tag.attribute("action").unwrap_or("").to_owned(),
                    ..Form::default()
                });
            }
            ("form", true) => {
                if let Some(form) = current.take() {
                    forms.push(form);
                }
            }
            ("input", false) => {
                if let (Some(form), Some(name)) = (current.as_mut(), tag.attribute("name")) {
                    let kind = tag.attribute("type").unwrap_or("text").to_ascii_lowercase();
                    if kind == "submit" {
                        form.buttons.push(Button {
                            name: name.to_owned(),
                            value: tag.attribute("value").unwrap_or("").to_owned(),
                            text: tag.attribute("value").unwrap_or("").to_owned(),
                        });
                    } else {
                        form.inputs.push(Input {
                            name: name.to_owned(),
                            value: tag.attribute("value").unwrap_or("").to_owned(),
                            kind,
                        });
                    }
                }
            }
            ("button", false) => {
                if let Some(form) = current.as_mut() {
                    let kind = tag.attribute("type").unwrap_or("submit");
                    if kind.eq_ignore_ascii_case("submit") {
                        let text_end =
                            find_ascii_ci(&html[pos..], "</button").map_or(html.len(), |e| pos + e);
                        form.buttons.push(Button {
                            name: tag.attribute("name").unwrap_or("").to_owned(),
                            value: tag.attribute("value").unwrap_or("").to_owned(),
                            text: decode_entities(&strip_tags(&html[pos..text_end])),
                        });
                    }
                }
            }
            _ => {}
        }
    }
    if let Some(form) = current {
        forms.push(form);
    }
    forms
}

fn find_ascii_ci(haystack: &str, needle: &str) -> Option<usize> {
    let needle = needle.as_bytes();
    haystack
        .as_bytes()
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
}

fn strip_tags(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

/// The text of the first element with `role="alert"` or `class="error"`.
fn alert_text(html: &str) -> Option<String> {
    let mut pos = 0;
    while let Some(offset) = html[pos..].find('<') {
        let start = pos + offset;
        let Some(tag) = parse_tag(html, start) else {
            pos = start + 1;
            continue;
        };
        pos = tag.end;
        let is_alert = tag.attribute("role") == Some("alert")
            || tag
                .attribute("class")
                .is_some_and(|c| c.split_whitespace().any(|c| c == "error"));
        if !tag.closing && is_alert {
            let end = html[pos..].find('<').map_or(html.len(), |e| pos + e);
            let text = decode_entities(html[pos..end].trim());
            return (!text.is_empty()).then_some(text);
        }
    }
    None
}

fn decode_entities(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let Some(semi) = rest[..rest.len().min(12)].find(';') else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..semi];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            "nbsp" => Some('\u{a0}'),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_forms_inputs_and_buttons() {
        let html = r#"<!DOCTYPE html><html><head><style>a>b{c:d}</style></head><body>
            <!-- <form action="/fake"> -->
            <p class="error" role="alert">Wrong &amp; bad</p>
            <form method=post action='/login?x=1&amp;y=2'>
              <input type="hidden" name="csrf" value="a&quot;b">
              <INPUT name=user>
              <input type="password" name="pw" />
            </form>
            <form action="/consent"><input type=hidden name=id value=7>
              <button type="submit" name="decision" value="allow"><b>Allow</b></button>
              <button name="decision" value="deny">Deny</button>
              <input type="submit" name="other" value="Later">
            </form>"#;
        let forms = find_forms(html);
        assert_eq!(forms.len(), 2);
        assert_eq!(forms[0].action, "/login?x=1&y=2");
        assert_eq!(forms[0].inputs[0].value, "a\"b");
        assert_eq!(forms[0].inputs[1].kind, "text");
        assert_eq!(forms[0].inputs[2].kind, "password");
        assert_eq!(forms[1].buttons.len(), 3);
        assert_eq!(forms[1].buttons[0].text, "Allow");
        assert_eq!(forms[1].buttons[1].value, "deny");
        assert_eq!(alert_text(html).as_deref(), Some("Wrong & bad"));
    }

    #[test]
    fn tolerates_garbage() {
        for html in [
            "<",
            "<form",
            "<form action=\"x",
            "<input name='a",
            "&#xZZ; &#99999999; &",
            "<<<>>>",
            "<é>",
        ] {
            let _ = find_forms(html);
            let _ = alert_text(html);
            let _ = decode_entities(html);
        }
        assert_eq!(decode_entities("&#65;&#x42;&lt;&unknown;"), "AB<&unknown;");
    }
}
