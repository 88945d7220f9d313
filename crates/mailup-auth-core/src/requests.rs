//! Token endpoint requests as data, exactly as MailUp expects them: `POST` with a form body
//! carrying the client credentials (never in a URL). Every one carries the
//! [`TOKEN_RESPONSE_LIMIT`]: a token answer is small, so a transport stops reading early.

use base64::Engine as _;
use http::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::Method;
use url::Url;
use zeroize::Zeroizing;

use crate::config::ClientConfig;
use crate::http::{HttpRequest, TOKEN_RESPONSE_LIMIT};
use crate::secret::{AuthorizationCode, Password, RefreshToken};

/// Which grant a token request uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Grant {
    /// `authorization_code`: the code exchange after the LogOn redirect.
    AuthorizationCode,
    /// `refresh_token`: a refresh (MailUp rotates the refresh token).
    RefreshToken,
    /// `password`: MailUp's "2-legged" option.
    Password,
}

impl Grant {
    /// The `grant_type` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AuthorizationCode => "authorization_code",
            Self::RefreshToken => "refresh_token",
            Self::Password => "password",
        }
    }
}

impl std::fmt::Display for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn form_request(config: &ClientConfig, grant: Grant, fields: &[(&str, &str)]) -> HttpRequest {
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("grant_type", grant.as_str());
    for (key, value) in fields {
        form.append_pair(key, value);
    }
    form.append_pair("client_id", config.client_id());
    if !config.client_secret().is_empty() {
        form.append_pair("client_secret", config.client_secret().secret());
    }
    HttpRequest::new(Method::POST, config.endpoints().token.clone())
        .with_header(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        )
        .with_header(ACCEPT, HeaderValue::from_static("application/json"))
        .with_body(form.finish().into_bytes())
        .with_response_limit(TOKEN_RESPONSE_LIMIT)
}

/// The code exchange: `grant_type=authorization_code&code=..&redirect_uri=..&client_id=..&client_secret=..`.
///
/// Takes the code by value: a code is exchanged at most once.
pub fn code_exchange_request(
    config: &ClientConfig,
    code: AuthorizationCode,
    redirect_uri: &Url,
) -> HttpRequest {
    form_request(
        config,
        Grant::AuthorizationCode,
        &[
            ("code", code.secret()),
            ("redirect_uri", redirect_uri.as_str()),
        ],
    )
}

/// The refresh: `grant_type=refresh_token&refresh_token=..&client_id=..&client_secret=..`.
pub fn refresh_request(config: &ClientConfig, refresh_token: &RefreshToken) -> HttpRequest {
    form_request(
        config,
        Grant::RefreshToken,
        &[("refresh_token", refresh_token.secret())],
    )
}

/// The password grant: `grant_type=password&username=..&password=..&client_id=..&client_secret=..`,
/// plus `Authorization: Basic base64(client_id:client_secret)` as MailUp's samples send.
pub fn password_request(config: &ClientConfig, username: &str, password: &Password) -> HttpRequest {
    form_request(
        config,
        Grant::Password,
        &[("username", username), ("password", password.secret())],
    )
    .with_header(AUTHORIZATION, basic_authorization(config))
}

/// `Basic base64(client_id:client_secret)`, marked sensitive. The clear-text buffers are sized
/// up front (no reallocation leaves a copy behind) and wiped when they go out of scope.
fn basic_authorization(config: &ClientConfig) -> HeaderValue {
    let (id, secret) = (config.client_id(), config.client_secret().secret());
    let mut credentials = Zeroizing::new(String::with_capacity(id.len() + 1 + secret.len()));
    credentials.push_str(id);
    credentials.push(':');
    credentials.push_str(secret);
    let encoded_len = base64::encoded_len(credentials.len(), true).unwrap_or(0);
    let mut value = Zeroizing::new(String::with_capacity("Basic ".len() + encoded_len));
    value.push_str("Basic ");
    base64::engine::general_purpose::STANDARD.encode_string(credentials.as_bytes(), &mut value);
    let mut header = HeaderValue::from_str(&value).expect("base64 is always a valid header value");
    header.set_sensitive(true);
    header
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::ClientSecret;

    fn config() -> ClientConfig {
        ClientConfig::builder("cid", ClientSecret::new("csecret"))
            .token_url("http://127.0.0.1:9/Authorization/OAuth/Token")
            .build()
            .unwrap()
    }

    fn form(request: &HttpRequest) -> Vec<(String, String)> {
        form_urlencoded::parse(request.body())
            .into_owned()
            .collect()
    }

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn code_exchange_is_a_form_post() {
        let redirect = Url::parse("http://127.0.0.1:8400/callback").unwrap();
        let request = code_exchange_request(&config(), AuthorizationCode::new("c&de"), &redirect);
        assert_eq!(request.method(), Method::POST);
        assert_eq!(
            request.url().as_str(),
            "http://127.0.0.1:9/Authorization/OAuth/Token"
        );
        assert_eq!(request.url().query(), None);
        assert_eq!(
            request.headers()[CONTENT_TYPE],
            "application/x-www-form-urlencoded"
        );
        assert_eq!(request.headers()[ACCEPT], "application/json");
        assert_eq!(
            form(&request),
            pairs(&[
                ("grant_type", "authorization_code"),
                ("code", "c&de"),
                ("redirect_uri", "http://127.0.0.1:8400/callback"),
                ("client_id", "cid"),
                ("client_secret", "csecret"),
            ])
        );
    }

    #[test]
    fn refresh_is_a_form_post() {
        let request = refresh_request(&config(), &RefreshToken::new("rt 1"));
        assert_eq!(
            form(&request),
            pairs(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", "rt 1"),
                ("client_id", "cid"),
                ("client_secret", "csecret"),
            ])
        );
        assert!(request.headers().get(AUTHORIZATION).is_none());
    }

    #[test]
    fn password_grant_has_basic_auth_too() {
        let request = password_request(&config(), "m1234", &Password::new("p@ss"));
        assert_eq!(
            form(&request),
            pairs(&[
                ("grant_type", "password"),
                ("username", "m1234"),
                ("password", "p@ss"),
                ("client_id", "cid"),
                ("client_secret", "csecret"),
            ])
        );
        // base64("cid:csecret")
        assert_eq!(request.headers()[AUTHORIZATION], "Basic Y2lkOmNzZWNyZXQ=");
        assert!(!format!("{request:?}").contains("csecret"));
    }

    #[test]
    fn token_requests_carry_the_token_response_limit() {
        let redirect = Url::parse("http://127.0.0.1:8400/callback").unwrap();
        let requests = [
            code_exchange_request(&config(), AuthorizationCode::new("c"), &redirect),
            refresh_request(&config(), &RefreshToken::new("r")),
            password_request(&config(), "m1234", &Password::new("p")),
        ];
        for request in &requests {
            assert_eq!(
                request.response_limit(),
                TOKEN_RESPONSE_LIMIT,
                "{request:?}"
            );
        }
    }

    #[test]
    fn token_request_bodies_are_wiped_on_drop() {
        let redirect = Url::parse("http://127.0.0.1:8400/callback").unwrap();
        let requests = [
            code_exchange_request(&config(), AuthorizationCode::new("c"), &redirect),
            refresh_request(&config(), &RefreshToken::new("r")),
            password_request(&config(), "m1234", &Password::new("p")),
        ];
        for request in &requests {
            // The body is the zeroizing buffer `with_body` wraps (see http.rs's tests).
            let body: &bytes::Bytes = request.shared_body();
            assert!(body.windows(7).any(|w| w == b"csecret"), "{request:?}");
        }
    }

    #[test]
    fn password_grant_basic_header_is_sensitive() {
        let request = password_request(&config(), "m1234", &Password::new("p@ss"));
        let header = &request.headers()[AUTHORIZATION];
        assert!(header.is_sensitive());
        assert!(!format!("{header:?}").contains("Y2lk"), "{header:?}");
    }

    #[test]
    fn refresh_and_code_requests_have_no_authorization_header() {
        let redirect = Url::parse("http://127.0.0.1:8400/callback").unwrap();
        let code = code_exchange_request(&config(), AuthorizationCode::new("c"), &redirect);
        assert!(code.headers().get(AUTHORIZATION).is_none());
        let refresh = refresh_request(&config(), &RefreshToken::new("r"));
        assert!(refresh.headers().get(AUTHORIZATION).is_none());
    }

    #[test]
    fn empty_secret_is_omitted() {
        let config = ClientConfig::builder("public", ClientSecret::new(""))
            .build()
            .unwrap();
        let request = refresh_request(&config, &RefreshToken::new("r"));
        assert!(!form(&request).iter().any(|(k, _)| k == "client_secret"));
    }
}
