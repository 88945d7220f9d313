//! The loopback redirect helper over real TCP on 127.0.0.1: the right callback ends the wait,
//! other paths and wrong states are answered and ignored, and the wait times out.

use std::time::Duration;

use mailup_auth::{CsrfState, LoopbackCallback, LoopbackError, LoopbackRedirect};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A plain HTTP/1.1 GET to 127.0.0.1; returns the status code and the body.
async fn get(port: u16, target: &str) -> (u16, String) {
    get_from("127.0.0.1", port, target).await
}

async fn get_from(host: &str, port: u16, target: &str) -> (u16, String) {
    let mut stream = TcpStream::connect((host, port)).await.unwrap();
    let request =
        format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response))
        .await
        .expect("the listener answers")
        .unwrap();
    let status = response.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    (status, body)
}

/// Sends the browser's request for `target` in the background, waits for the listener to hand
/// over the callback, lets `finish` report the login's outcome, and returns the browser's page
/// and the callback URL.
async fn complete<F: std::future::Future<Output = ()>>(
    port: u16,
    host: &'static str,
    target: &'static str,
    waiting: tokio::task::JoinHandle<Result<LoopbackCallback, LoopbackError>>,
    finish: impl FnOnce(LoopbackCallback) -> F,
) -> ((u16, String), mailup_auth::Url) {
    let browser = tokio::spawn(get_from(host, port, target));
    let callback = waiting.await.unwrap().unwrap();
    let url = callback.url().clone();
    // The page is not sent before the application says how the login ended.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!browser.is_finished(), "the page came before the outcome");
    finish(callback).await;
    // The page has been written by the time the outcome is reported.
    assert!(
        browser.is_finished()
            || tokio::time::timeout(Duration::from_secs(1), async {
                while !browser.is_finished() {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await
            .is_ok()
    );
    (browser.await.unwrap(), url)
}

#[tokio::test]
async fn the_right_callback_ends_the_wait_after_favicons_and_forgeries() {
    let listener = LoopbackRedirect::bind(0).await.unwrap();
    let uri = listener.redirect_uri().clone();
    assert_eq!(uri.host_str(), Some("127.0.0.1"));
    assert_eq!(uri.path(), "/callback");
    let port = listener.local_addr().port();
    let state = CsrfState::new("s3cret-state");
    let waiting = tokio::spawn(async move {
        listener
            .wait_for_callback(&state, Duration::from_secs(10))
            .await
    });

    let (status, _) = get(port, "/favicon.ico").await;
    assert_eq!(status, 404);
    let (status, body) = get(port, "/callback?code=evil&state=forged").await;
    assert_eq!(status, 400);
    assert!(body.contains("ignored"));
    let (status, _) = get(port, "/callback?code=evil").await;
    assert_eq!(status, 400);
    assert!(
        !waiting.is_finished(),
        "forged requests must not end the wait"
    );

    let ((status, body), url) = complete(
        port,
        "127.0.0.1",
        "/callback?code=abc&state=s3cret-state",
        waiting,
        LoopbackCallback::succeeded,
    )
    .await;
    assert_eq!(status, 200);
    assert!(body.contains("Authorization complete"));
    assert!(!body.contains("abc"), "the page does not echo the code");
    assert_eq!(url.query(), Some("code=abc&state=s3cret-state"));
    assert_eq!(url.path(), "/callback");
}

#[tokio::test]
async fn the_page_says_logged_in_only_after_the_exchange_succeeded() {
    // Hardening item 17: a failed exchange shows a failure page, never "logged in".
    let listener = LoopbackRedirect::bind(0).await.unwrap();
    let port = listener.local_addr().port();
    let state = CsrfState::new("st");
    let waiting = tokio::spawn(async move {
        listener
            .wait_for_callback(&state, Duration::from_secs(10))
            .await
    });
    let ((status, body), _) = complete(
        port,
        "127.0.0.1",
        "/callback?code=abc&state=st",
        waiting,
        |callback| async move {
            callback
                .failed("login failed: token endpoint answered 400 invalid_grant")
                .await
        },
    )
    .await;
    assert_eq!(status, 200);
    assert!(body.contains("Login failed"), "{body}");
    assert!(body.contains("invalid_grant"));
    assert!(!body.contains("logged in"), "{body}");

    // An application that drops the callback without a word: a failure page too.
    let listener = LoopbackRedirect::bind(0).await.unwrap();
    let port = listener.local_addr().port();
    let state = CsrfState::new("st");
    let waiting = tokio::spawn(async move {
        listener
            .wait_for_callback(&state, Duration::from_secs(10))
            .await
    });
    let ((_, body), _) = complete(
        port,
        "127.0.0.1",
        "/callback?code=abc&state=st",
        waiting,
        |callback| async move { drop(callback) },
    )
    .await;
    assert!(
        body.contains("Login failed") && !body.contains("logged in"),
        "{body}"
    );
}

#[tokio::test]
async fn an_error_callback_is_shown_and_returned() {
    let listener = LoopbackRedirect::bind_with_path(0, "oauth/done")
        .await
        .unwrap();
    assert_eq!(listener.redirect_uri().path(), "/oauth/done");
    let port = listener.local_addr().port();
    let state = CsrfState::new("st");
    let waiting = tokio::spawn(async move {
        listener
            .wait_for_callback(&state, Duration::from_secs(10))
            .await
    });
    let ((status, body), url) = complete(
        port,
        "127.0.0.1",
        "/oauth/done?error=access_denied&state=st",
        waiting,
        |callback| async move { callback.failed("authorization denied: access_denied").await },
    )
    .await;
    assert_eq!(status, 200);
    assert!(body.contains("Login failed") && body.contains("access_denied"));
    assert!(url.as_str().contains("error=access_denied"));
}

#[tokio::test]
async fn the_error_page_escapes_what_it_shows() {
    let listener = LoopbackRedirect::bind(0).await.unwrap();
    let port = listener.local_addr().port();
    let state = CsrfState::new("st");
    let waiting = tokio::spawn(async move {
        listener
            .wait_for_callback(&state, Duration::from_secs(10))
            .await
    });
    let ((_, body), _) = complete(
        port,
        "127.0.0.1",
        "/callback?error=%3Cscript%3E&state=st",
        waiting,
        |callback| async move { callback.failed("authorization denied: <script>").await },
    )
    .await;
    assert!(!body.contains("<script>"));
    assert!(body.contains("&lt;script&gt;"));
}

#[tokio::test]
async fn the_wait_times_out() {
    let listener = LoopbackRedirect::bind(0).await.unwrap();
    let err = listener
        .wait_for_callback(&CsrfState::new("st"), Duration::from_millis(100))
        .await
        .unwrap_err();
    assert_eq!(err, LoopbackError::Timeout(Duration::from_millis(100)));
}

#[tokio::test]
async fn a_busy_port_is_a_typed_error() {
    let first = LoopbackRedirect::bind(0).await.unwrap();
    let port = first.local_addr().port();
    let err = LoopbackRedirect::bind(port).await.unwrap_err();
    assert!(
        matches!(err, LoopbackError::Bind { port: p, .. } if p == port),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_busy_port_keeps_the_os_error_as_the_source() {
    use std::error::Error as _;

    let first = LoopbackRedirect::bind(0).await.unwrap();
    let port = first.local_addr().port();
    let err = LoopbackRedirect::bind(port).await.unwrap_err();
    let source = err.source().expect("the bind error is kept");
    assert_eq!(
        source
            .downcast_ref::<std::io::Error>()
            .map(std::io::Error::kind),
        Some(std::io::ErrorKind::AddrInUse),
        "{err}"
    );
    assert!(err
        .to_string()
        .starts_with(&format!("cannot listen on 127.0.0.1:{port}: ")));
}

#[tokio::test]
async fn a_registered_loopback_uri_gives_the_port_and_path() {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = probe.local_addr().unwrap().port();
    drop(probe);
    let uri = mailup_auth::Url::parse(&format!("http://localhost:{port}/mailup/cb")).unwrap();
    let listener = LoopbackRedirect::bind_for(&uri).await.unwrap();
    assert_eq!(listener.redirect_uri(), &uri);
    assert_eq!(listener.local_addr().port(), port);
    let state = CsrfState::new("st");
    let waiting = tokio::spawn(async move {
        listener
            .wait_for_callback(&state, Duration::from_secs(10))
            .await
    });
    assert_eq!(get(port, "/callback?code=x&state=st").await.0, 404);
    let ((status, _), _) = complete(
        port,
        "127.0.0.1",
        "/mailup/cb?code=x&state=st",
        waiting,
        LoopbackCallback::succeeded,
    )
    .await;
    assert_eq!(status, 200);

    // A `localhost` URI is also reachable over the IPv6 loopback, where the machine has one;
    // a registered query is kept.
    if std::net::TcpListener::bind("[::1]:0").is_ok() {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = probe.local_addr().unwrap().port();
        drop(probe);
        let uri = mailup_auth::Url::parse(&format!("http://localhost:{port}/cb?app=1")).unwrap();
        let listener = LoopbackRedirect::bind_for(&uri).await.unwrap();
        assert_eq!(listener.redirect_uri(), &uri);
        let state = CsrfState::new("st6");
        let waiting = tokio::spawn(async move {
            listener
                .wait_for_callback(&state, Duration::from_secs(10))
                .await
        });
        let ((status, _), url) = complete(
            port,
            "::1",
            "/cb?app=1&code=x&state=st6",
            waiting,
            LoopbackCallback::succeeded,
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(url.query(), Some("app=1&code=x&state=st6"));
    }

    for bad in [
        "https://127.0.0.1:8400/cb",
        "http://example.com:8400/cb",
        "http://127.0.0.1/cb",
    ] {
        let err = LoopbackRedirect::bind_for(&mailup_auth::Url::parse(bad).unwrap())
            .await
            .unwrap_err();
        assert!(
            matches!(err, LoopbackError::NotLoopback(_)),
            "{bad}: {err:?}"
        );
    }
}

/// Hostile review of issue 17: `Duration::MAX` as "no bound" waits for the callback instead of
/// panicking on the deadline's overflow.
#[tokio::test]
async fn an_unbounded_wait_does_not_overflow_its_deadline() {
    let listener = LoopbackRedirect::bind(0).await.unwrap();
    let port = listener.local_addr().port();
    let state = CsrfState::new("s3cret-state");
    let waiting =
        tokio::spawn(async move { listener.wait_for_callback(&state, Duration::MAX).await });
    let browser = tokio::spawn(get(port, "/callback?code=c0de&state=s3cret-state"));
    let callback = waiting
        .await
        .expect("the wait does not panic")
        .expect("the callback");
    assert_eq!(callback.url().query(), Some("code=c0de&state=s3cret-state"));
    callback.succeeded().await;
    assert_eq!(browser.await.unwrap().0, 200);
}
