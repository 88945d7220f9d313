//! Hostile review of issue 13's origin check and path resolution (the API base's scheme, host
//! and port compared in place instead of building `Origin`s; a path appended to a clone of the
//! base instead of parsing `base/path` again): every entry point that adds the token
//! (`send`, `send_http`, `request`/`get`, the reqwest middleware, the tower layer) is given
//! hostile URLs and paths, and each answer is compared with the rule before issue 13
//! (`url.origin() == api_base.origin() || trusted.contains(&url.origin())`, and
//! `Url::parse("{base}/{path}")`). The client's transport is a recording one (nothing leaves
//! the process); the last test sends over loopback to the emulator and to a trap server.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use async_trait::async_trait;
use http::{Method, StatusCode};
use mailup_auth::{
    ClientSecret, Error, ErrorKind, HttpRequest, HttpResponse, MailUpClient, MailUpLayer, Password,
    Transport, TransportError,
};
use mailup_auth_emulator::Emulator;
use tower_service::Service;
use url::{Origin, Url};

mod support;

const TOKEN: &str = "tok-hostile13-5ecret";

/// Answers token requests with [`TOKEN`] and records every other request: its URL and the
/// `Authorization` it carried.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<(String, Option<String>)>>,
}

#[async_trait]
impl Transport for Recorder {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        if request.body().windows(10).any(|w| w == b"grant_type") {
            let body = format!(
                r#"{{"access_token":"{TOKEN}","refresh_token":"r-1","expires_in":3600,"token_type":"bearer"}}"#
            );
            return Ok(HttpResponse::new(StatusCode::OK, body.into_bytes()));
        }
        let authorization = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap().to_owned());
        self.seen
            .lock()
            .unwrap()
            .push((request.url().to_string(), authorization));
        Ok(HttpResponse::new(StatusCode::OK, b"{}".to_vec()))
    }
}

impl Recorder {
    fn take(&self) -> Vec<(String, Option<String>)> {
        std::mem::take(&mut self.seen.lock().unwrap())
    }
}

async fn client(base: &str, trusted: &[&str]) -> (MailUpClient, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let mut builder = MailUpClient::builder("cid", ClientSecret::new("csecret"))
        .auth_base("http://127.0.0.1:9")
        .api_base(base)
        .allow_insecure_http()
        .memory_store()
        .transport(recorder.clone());
    for origin in trusted {
        builder = builder.trust_origin(*origin);
    }
    let client = builder.build().await.unwrap();
    client
        .login_with_password("user", &Password::new("pw"))
        .await
        .unwrap();
    (client, recorder)
}

/// The rule before issue 13.
fn old_rule(url: &Url, base: &Url, trusted: &[Origin]) -> bool {
    url.origin() == base.origin() || trusted.contains(&url.origin())
}

const BASES: [&str; 5] = [
    "https://services.mailup.com/API/v1.1/Rest/ConsoleService.svc",
    "https://services.mailup.com:443/API/v1.1/Rest/ConsoleService.svc/",
    "http://127.0.0.1:8080/API/v1.1/Rest/ConsoleService.svc",
    "http://[::1]:8080/prefix/",
    "https://xn--mller-kva.example/api",
];

/// Hostile URLs; `{h}` is replaced by the base's host (as it is written in the base).
const URLS: [&str; 40] = [
    "https://{h}/x",
    "http://{h}/x",
    "https://{h}:443/x",
    "http://{h}:80/x",
    "https://{h}:8080/x",
    "http://{h}:8080/x",
    "http://{h}:08080/x",
    "https://{h}./x",
    "http://{h}.:8080/x",
    "https://{h}.evil.test/x",
    "http://{h}.evil.test:8080/x",
    "https://evil.test/{h}/x",
    "http://evil.test/{h}:8080/x",
    "https://{h}@evil.test/x",
    "http://{h}:8080@evil.test/x",
    "http://evil.test@{h}:8080/x",
    "https://evil.test:443@{h}/x",
    "https://user:pw@{h}/x",
    "https://{h}%2eevil.test/x",
    "https://{h}\\@evil.test/x",
    "http://{h}:8080\\@evil.test/x",
    "https://{h}/..//evil.test/x",
    "https://{h}//evil.test/x",
    "https://{h}?@evil.test/x",
    "https://{h}#@evil.test/x",
    "HTTPS://{h}/x",
    "blob:https://{h}/x",
    "blob:http://{h}:8080/x",
    "ws://{h}/x",
    "wss://{h}/x",
    "ftp://{h}/x",
    "https://SERVICES.MAILUP.COM/x",
    "https://services.mailup.com.evil.test/x",
    "https://xn--mller-kva.example/x",
    "https://m\u{fc}ller.example/x",
    "https://M\u{dc}LLER.example/x",
    "http://127.1:8080/x",
    "http://0x7f.0.0.1:8080/x",
    "http://[0:0:0:0:0:0:0:1]:8080/x",
    "http://%31%32%37.0.0.1:8080/x",
];

#[tokio::test]
async fn send_gives_the_token_exactly_where_the_old_rule_did() {
    let (mut sent, mut refused_count) = (0, 0);
    for base_text in BASES {
        let base = Url::parse(base_text).unwrap();
        let host = base.host_str().unwrap().to_owned();
        for trusted in [&[][..], &["https://evil.test"][..]] {
            let (client, recorder) = client(base_text, trusted).await;
            let trusted_origins: Vec<Origin> = trusted
                .iter()
                .map(|t| Url::parse(t).unwrap().origin())
                .collect();
            for pattern in URLS {
                let text = pattern.replace("{h}", &host);
                let Ok(url) = Url::parse(&text) else { continue };
                let result = client
                    .send(HttpRequest::new(Method::GET, url.clone()))
                    .await;
                let seen = recorder.take();
                let refused = matches!(
                    result.as_ref().map_err(Error::kind),
                    Err(ErrorKind::UntrustedOrigin(_))
                );
                let before = old_rule(&url, &base, &trusted_origins);
                // A blob: URL's origin is its inner URL's: the old rule let it through to the
                // transport (which cannot send it); the new one refuses it. Stricter is fine.
                let blob = url.scheme() == "blob";
                if !(blob && before && refused) {
                    assert_eq!(
                        !refused, before,
                        "{text} against {base_text} (trusted {trusted:?}): {result:?}"
                    );
                }
                if refused {
                    refused_count += 1;
                    assert!(seen.is_empty(), "{text}: refused but sent: {seen:?}");
                } else {
                    sent += 1;
                    assert_eq!(
                        seen,
                        vec![(url.to_string(), Some(format!("Bearer {TOKEN}")))],
                        "{text} against {base_text}"
                    );
                }
            }
        }
    }
    // Both answers were exercised, many times.
    assert!(
        sent > 20 && refused_count > 100,
        "{sent} sent, {refused_count} refused"
    );
}

#[tokio::test]
async fn send_http_gives_the_token_exactly_where_the_old_rule_did() {
    for base_text in BASES {
        let base = Url::parse(base_text).unwrap();
        let host = base.host_str().unwrap().to_owned();
        let (client, recorder) = client(base_text, &[]).await;
        for pattern in URLS {
            let text = pattern.replace("{h}", &host);
            let Ok(request) = http::Request::get(text.as_str()).body(Vec::new()) else {
                continue;
            };
            let parsed = Url::parse(&request.uri().to_string());
            let result = client.send_http(request).await;
            let seen = recorder.take();
            match parsed {
                Ok(url) if matches!(url.scheme(), "http" | "https") => {
                    let before = old_rule(&url, &base, &[]);
                    assert_eq!(result.is_ok(), before, "{text}: {result:?}");
                    if before {
                        assert_eq!(seen.len(), 1, "{text}");
                        // What is sent is on the base's origin.
                        assert_eq!(Url::parse(&seen[0].0).unwrap().origin(), base.origin());
                    } else {
                        assert!(seen.is_empty(), "{text}: {seen:?}");
                    }
                }
                _ => {
                    assert!(result.is_err(), "{text}");
                    assert!(seen.is_empty(), "{text}: {seen:?}");
                }
            }
        }
    }
}

/// Paths for `request()` and `get()`: none of them may take the token off the base's origin,
/// and each resolves to the URL that parsing `base/path` gave before issue 13.
const PATHS: [&str; 30] = [
    "Console/Authentication/Info",
    "/Console/Authentication/Info",
    "//evil.test/x",
    "///evil.test/x",
    "\\\\evil.test\\x",
    "/\\evil.test/x",
    "..//evil.test/x",
    "../../../../evil.test",
    "%2e%2e/%2e%2e/%2e%2e/x",
    "./.././/evil.test",
    "@evil.test/x",
    ":8081@evil.test/x",
    "?@evil.test",
    "#@evil.test",
    "?x=1#//evil.test",
    "http:evil.test/x",
    "http:/evil.test/x",
    "http:\\\\evil.test/x",
    "https:\\\\evil.test\\x",
    "javascript:alert(1)",
    "file:///etc/passwd",
    "HTTP://evil.test/x",
    "hTtPs://evil.test/x",
    " http://evil.test/x",
    "\thttp://evil.test/x",
    "http://evil.test/x",
    "https://evil.test:443/x",
    "http://{h}@evil.test/x",
    "https://{h}.evil.test/x",
    "\u{ff0f}\u{ff0f}evil.test/x",
];

#[tokio::test]
async fn request_and_get_never_take_the_token_off_the_base_origin() {
    for base_text in BASES {
        let base = Url::parse(base_text).unwrap();
        let host = base.host_str().unwrap().to_owned();
        let (client, recorder) = client(base_text, &[]).await;
        for pattern in PATHS {
            let path = pattern.replace("{h}", &host);
            let result = client.request(Method::GET, &path, None).await;
            let seen = recorder.take();
            let trimmed = path.trim();
            let old = if trimmed.starts_with("http://") || trimmed.starts_with("https://") {
                Url::parse(trimmed).ok()
            } else if trimmed.contains("://") {
                None
            } else {
                Url::parse(&format!(
                    "{}/{}",
                    base.as_str().trim_end_matches('/'),
                    trimmed.trim_start_matches('/')
                ))
                .ok()
            };
            match &old {
                Some(url) if old_rule(url, &base, &[]) => {
                    assert!(result.is_ok(), "{path:?} against {base_text}: {result:?}");
                    assert_eq!(seen.len(), 1, "{path:?}");
                    let sent = Url::parse(&seen[0].0).unwrap();
                    assert_eq!(sent.origin(), base.origin(), "{path:?}");
                    assert_eq!(sent, *url, "{path:?} against {base_text}");
                }
                _ => {
                    assert!(result.is_err(), "{path:?} against {base_text}");
                    assert!(seen.is_empty(), "{path:?}: {seen:?}");
                }
            }
            // `get` takes the same road.
            let got = client.get::<serde_json::Value>(&path).await;
            assert_eq!(got.is_ok(), result.is_ok(), "{path:?}");
            recorder.take();
        }
    }
}

/// What the application's stack was asked to send: the URI and its `Authorization`.
type Sent = Vec<(http::Uri, Option<String>)>;

/// The application's own stack under the tower layer: records what it was asked to send.
#[derive(Clone, Default)]
struct Stack {
    seen: Arc<Mutex<Sent>>,
}

impl Service<http::Request<Vec<u8>>> for Stack {
    type Response = http::Response<Vec<u8>>;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Vec<u8>>) -> Self::Future {
        let authorization = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap().to_owned());
        self.seen
            .lock()
            .unwrap()
            .push((request.uri().clone(), authorization));
        std::future::ready(Ok(http::Response::new(Vec::new())))
    }
}

/// The tower layer decides on `Url::parse(uri)`, while the application's stack sends to the
/// `http::Uri`'s own authority: whenever the token is added, the two must name the base's
/// host and port (no parser differential takes it elsewhere).
#[tokio::test]
async fn the_tower_layer_adds_the_token_only_where_the_uri_itself_points_at_the_base() {
    use tower_layer::Layer as _;
    for base_text in BASES {
        let base = Url::parse(base_text).unwrap();
        let host = base.host_str().unwrap().to_owned();
        let (client, _) = client(base_text, &[]).await;
        let stack = Stack::default();
        let mut service = MailUpLayer::new(client).layer(stack.clone());
        for pattern in URLS {
            let text = pattern.replace("{h}", &host);
            let Ok(request) = http::Request::get(text.as_str()).body(Vec::new()) else {
                continue;
            };
            let uri = request.uri().clone();
            std::future::poll_fn(|cx| service.poll_ready(cx))
                .await
                .unwrap();
            service.call(request).await.unwrap();
            let seen = std::mem::take(&mut *stack.seen.lock().unwrap());
            assert_eq!(seen.len(), 1, "{text}");
            let got_token = seen[0].1.is_some();
            let before = Url::parse(&uri.to_string()).is_ok_and(|url| old_rule(&url, &base, &[]));
            assert_eq!(got_token, before, "{text} against {base_text}");
            if got_token {
                let uri_host = uri
                    .host()
                    .unwrap()
                    .trim_start_matches('[')
                    .trim_end_matches(']');
                let base_host = host.trim_start_matches('[').trim_end_matches(']');
                assert!(
                    uri_host.eq_ignore_ascii_case(base_host)
                        || uri_host.parse::<std::net::IpAddr>().ok()
                            == base_host
                                .parse::<std::net::IpAddr>()
                                .ok()
                                .filter(|_| uri_host.parse::<std::net::IpAddr>().is_ok()),
                    "{text}: the stack sends to {uri} ({uri_host}), the token is for {base_text}"
                );
                let uri_port = uri
                    .port_u16()
                    .unwrap_or(if uri.scheme_str() == Some("https") {
                        443
                    } else {
                        80
                    });
                assert_eq!(Some(uri_port), base.port_or_known_default(), "{text}");
                assert_eq!(uri.scheme_str(), Some(base.scheme()), "{text}");
            }
        }
    }
}

/// Over loopback: the emulator is the API base, a second server is the trap. Hostile URLs and
/// paths aimed at the trap through `send`, `request` and `get` never bring it a token; the
/// base's own calls work.
#[tokio::test]
async fn over_loopback_the_trap_never_sees_a_token() {
    let emulator = Emulator::builder().start().await.unwrap();
    let trap = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let trap_port = trap.local_addr().unwrap().port();
    let arrivals = Arc::new(Mutex::new(Vec::<String>::new()));
    let record = arrivals.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = trap.accept().await else {
                return;
            };
            let record = record.clone();
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
                let mut buffer = vec![0_u8; 64 * 1024];
                let n = socket.read(&mut buffer).await.unwrap_or(0);
                record
                    .lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buffer[..n]).into_owned());
                let _ = socket
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
                    .await;
            });
        }
    });
    let client = support::log_in(support::emulator_builder(&emulator)).await;
    let token = client.access_token().await.unwrap();
    let api_port = emulator.base_url().port().unwrap();
    let info: serde_json::Value = client.get("Console/Authentication/Info").await.unwrap();
    assert!(info.is_object());
    let urls = [
        format!("http://127.0.0.1:{trap_port}/x"),
        format!("http://127.0.0.1:{api_port}@127.0.0.1:{trap_port}/x"),
        format!("http://localhost:{trap_port}/x"),
        format!("http://127.0.0.1:{trap_port}/127.0.0.1:{api_port}/x"),
        format!("http://127.0.0.1:{api_port}\\@127.0.0.1:{trap_port}/x"),
    ];
    for text in &urls {
        if let Ok(url) = Url::parse(text) {
            let _ = client.send(HttpRequest::new(Method::GET, url)).await;
        }
        let _ = client.request(Method::GET, text, None).await;
        let _ = client.get::<serde_json::Value>(text).await;
    }
    for path in [
        format!("//127.0.0.1:{trap_port}/x"),
        format!("\\\\127.0.0.1:{trap_port}\\x"),
        format!("..//127.0.0.1:{trap_port}/x"),
        format!("http:127.0.0.1:{trap_port}/x"),
        format!("http:\\\\127.0.0.1:{trap_port}/x"),
        format!("@127.0.0.1:{trap_port}/x"),
    ] {
        let _ = client.request(Method::GET, &path, None).await;
    }
    // The trap works: a request sent to it without the library arrives.
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("http://127.0.0.1:{trap_port}/plain"))
        .send()
        .await
        .unwrap();
    let arrived = arrivals.lock().unwrap().clone();
    assert!(
        arrived.iter().any(|r| r.starts_with("GET /plain ")),
        "{arrived:?}"
    );
    for request in &arrived {
        assert!(
            !request.contains(token.secret()) && !request.to_ascii_lowercase().contains("bearer"),
            "the trap got a token: {request}"
        );
    }
}
