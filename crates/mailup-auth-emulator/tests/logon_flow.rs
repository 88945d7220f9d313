//! The LogOn pages over plain HTTP: login form, consent, redirects, and the 400 pages.

mod common;

use common::*;
use mailup_auth_emulator::{Emulator, RegisteredClient, DEFAULT_CLIENT_ID, DEFAULT_USERNAME};

#[tokio::test]
async fn allow_redirects_with_code_and_state() {
    let emu = Emulator::builder().start().await.unwrap();
    let location = login_and_consent(&emu, "allow", "xyz-state").await;
    assert_eq!(location.host_str(), Some("127.0.0.1"));
    assert_eq!(location.path(), "/callback");
    assert_eq!(
        query_param(&location, "state").as_deref(),
        Some("xyz-state")
    );
    let code = query_param(&location, "code").unwrap();
    assert!(code.len() >= 40, "{code}");
    assert_eq!(emu.counters().codes_issued, 1);
    assert_eq!(emu.counters().logon_pages, 1);
    // The code works once at the token endpoint.
    let (status, body) = token_post(
        &emu,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    emu.shutdown().await;
}

#[tokio::test]
async fn deny_redirects_with_access_denied_and_state() {
    let emu = Emulator::builder().start().await.unwrap();
    let location = login_and_consent(&emu, "deny", "st8").await;
    assert_eq!(
        query_param(&location, "error").as_deref(),
        Some("access_denied")
    );
    assert_eq!(query_param(&location, "state").as_deref(), Some("st8"));
    assert!(query_param(&location, "code").is_none());
    assert_eq!(emu.counters().codes_issued, 0);
    assert_eq!(emu.counters().consents_denied, 1);
}

#[tokio::test]
async fn login_page_is_real_html_with_the_app_name() {
    let emu = Emulator::builder()
        .client(RegisteredClient::new("app", "sec").name("Fancy <App>"))
        .start()
        .await
        .unwrap();
    let response = http()
        .get(emu.authorize_url("app", REDIRECT, "s"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let page = response.text().await.unwrap();
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(page.contains("Fancy &lt;App&gt;"));
    assert!(page.contains("type=\"password\""));
    assert!(page.contains("<style>"));
    assert!(
        !page.contains("src=") && !page.contains("<link"),
        "no external assets"
    );
}

#[tokio::test]
async fn wrong_password_shows_the_form_again() {
    let emu = Emulator::builder().start().await.unwrap();
    let http = http();
    let page = http
        .get(emu.authorize_url(DEFAULT_CLIENT_ID, REDIRECT, "s"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = hidden_field(&page, "csrf_token");
    let id = hidden_field(&page, "auth_request");
    let response = http
        .post(emu.logon_url())
        .form(&[
            ("auth_request", id.as_str()),
            ("csrf_token", &csrf),
            ("username", DEFAULT_USERNAME),
            ("password", "nope"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let again = response.text().await.unwrap();
    assert!(again.contains("Wrong username or password"));
    assert!(again.contains("type=\"password\""));
    assert!(again.contains(&format!("value=\"{DEFAULT_USERNAME}\"")));
    assert_eq!(emu.counters().logon_failures, 1);
    // The CSRF token rotated: the old one no longer works.
    let stale = http
        .post(emu.logon_url())
        .form(&[
            ("auth_request", id.as_str()),
            ("csrf_token", &csrf),
            ("username", DEFAULT_USERNAME),
            ("password", "demo-password"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 400);
    // The new one does.
    let fresh = http
        .post(emu.logon_url())
        .form(&[
            ("auth_request", id.as_str()),
            ("csrf_token", &hidden_field(&again, "csrf_token")),
            ("username", DEFAULT_USERNAME),
            ("password", "demo-password"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(fresh.status(), 303);
}

#[tokio::test]
async fn bad_requests_get_400_pages_never_redirects() {
    let emu = Emulator::builder()
        .client(RegisteredClient::new("strict", "s").redirect_prefix("http://127.0.0.1"))
        .start()
        .await
        .unwrap();
    let http = http();
    let cases = [
        // unknown client
        emu.authorize_url("nobody", REDIRECT, "s"),
        // relative and non-http redirect URIs
        emu.authorize_url(DEFAULT_CLIENT_ID, "/callback", "s"),
        emu.authorize_url(DEFAULT_CLIENT_ID, "javascript:alert(1)", "s"),
        // outside the registered prefix
        emu.authorize_url("strict", "http://127.0.0.1.evil.example/cb", "s"),
        emu.authorize_url("strict", "https://example.com/cb", "s"),
        // missing parameters
        emu.logon_url(),
        emu.base_url()
            .join("Authorization/OAuth/LogOn?client_id=mailup-demo-client&response_type=code")
            .unwrap(),
    ];
    for url in cases {
        let response = http.get(url.clone()).send().await.unwrap();
        assert_eq!(response.status(), 400, "{url}");
        assert!(response.headers().get("location").is_none());
        assert!(response.text().await.unwrap().contains("<html"));
    }
    // A registered prefix that matches is accepted.
    let ok = http
        .get(emu.authorize_url("strict", "http://127.0.0.1:4567/cb", "s"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn wrong_response_type_redirects_with_an_error() {
    let emu = Emulator::builder().start().await.unwrap();
    let mut url = emu.logon_url();
    url.query_pairs_mut()
        .append_pair("client_id", DEFAULT_CLIENT_ID)
        .append_pair("response_type", "token")
        .append_pair("redirect_uri", REDIRECT)
        .append_pair("state", "abc");
    let response = http().get(url).send().await.unwrap();
    assert_eq!(response.status(), 302);
    let location = url::Url::parse(response.headers()["location"].to_str().unwrap()).unwrap();
    assert_eq!(
        query_param(&location, "error").as_deref(),
        Some("unsupported_response_type")
    );
    assert_eq!(query_param(&location, "state").as_deref(), Some("abc"));
}

#[tokio::test]
async fn forged_or_replayed_forms_are_refused() {
    let emu = Emulator::builder().start().await.unwrap();
    let http = http();
    // Garbage bodies.
    for body in ["", "auth_request=x&csrf_token=y", "%%%", "a=1&a=2"] {
        let response = http
            .post(emu.logon_url())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{body}");
        let response = http
            .post(
                emu.base_url()
                    .join(mailup_auth_emulator::CONSENT_PATH)
                    .unwrap(),
            )
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{body}");
    }
    // Consent page without a login.
    let response = http
        .get(
            emu.base_url()
                .join("Authorization/OAuth/Consent?auth_request=nope")
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    // A consent form can be answered once.
    let page = http
        .get(emu.authorize_url(DEFAULT_CLIENT_ID, REDIRECT, "s"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let response = http
        .post(emu.logon_url())
        .form(&[
            ("auth_request", hidden_field(&page, "auth_request")),
            ("csrf_token", hidden_field(&page, "csrf_token")),
            ("username", DEFAULT_USERNAME.to_owned()),
            ("password", "demo-password".to_owned()),
        ])
        .send()
        .await
        .unwrap();
    let consent_url = emu
        .base_url()
        .join(response.headers()["location"].to_str().unwrap())
        .unwrap();
    let consent = http
        .get(consent_url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let form = [
        ("auth_request", hidden_field(&consent, "auth_request")),
        ("csrf_token", hidden_field(&consent, "csrf_token")),
        ("decision", "allow".to_owned()),
    ];
    let consent_post = emu
        .base_url()
        .join(mailup_auth_emulator::CONSENT_PATH)
        .unwrap();
    let first = http
        .post(consent_post.clone())
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 302);
    let second = http.post(consent_post).form(&form).send().await.unwrap();
    assert_eq!(second.status(), 400);
    assert_eq!(emu.counters().codes_issued, 1);
}
