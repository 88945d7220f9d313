//! A server that streams 1 GiB to a request with the default 32 MiB limit: the transport stops
//! at the limit, quickly, and the process never holds much more than the limit in memory.
//!
//! One test in this binary, so that the process's peak resident set (`VmHWM`) measures this
//! request alone.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::Method;
use mailup_auth_core::Transport;
use mailup_auth_core::{HttpRequest, TransportErrorKind, DEFAULT_API_RESPONSE_LIMIT};
use mailup_auth_http::ReqwestTransport;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const GIB: u64 = 1024 * 1024 * 1024;
const CHUNK: usize = 64 * 1024;

/// A `/proc/self/status` field in kB (Linux only).
fn status_kb(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_gib_chunked_answer_stops_at_the_limit_in_bounded_memory() {
    let rss_before = status_kb("VmRSS:");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sent = Arc::new(AtomicU64::new(0));
    let server = tokio::spawn({
        let sent = Arc::clone(&sent);
        async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buffer = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = stream.read(&mut buffer).await.unwrap();
                assert!(n > 0, "the client closed before sending its request");
                head.extend_from_slice(&buffer[..n]);
            }
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                .await
                .unwrap();
            // One chunk buffer, written again and again: 1 GiB is generated, never allocated.
            let mut frame = format!("{CHUNK:x}\r\n").into_bytes();
            frame.extend(std::iter::repeat_n(b'x', CHUNK));
            frame.extend_from_slice(b"\r\n");
            for _ in 0..GIB / CHUNK as u64 {
                // The client hung up: stop streaming.
                if stream.write_all(&frame).await.is_err() {
                    return;
                }
                sent.fetch_add(CHUNK as u64, Ordering::Relaxed);
            }
            let _ = stream.write_all(b"0\r\n\r\n").await;
        }
    });

    let transport = ReqwestTransport::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let request = HttpRequest::new(
        Method::GET,
        format!("http://{addr}/Console/User/Lists").parse().unwrap(),
    );
    assert_eq!(request.response_limit(), DEFAULT_API_RESPONSE_LIMIT);
    let started = Instant::now();
    let error = transport.send(request).await.unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(error.kind, TransportErrorKind::ResponseTooLarge, "{error}");
    assert!(
        error
            .message
            .contains(&format!("limit of {DEFAULT_API_RESPONSE_LIMIT} bytes")),
        "{error}"
    );
    assert!(elapsed < Duration::from_secs(20), "took {elapsed:?}");

    // The server notices the hang-up and stops well before 1 GiB.
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the server keeps streaming after the client left")
        .unwrap();
    let streamed = sent.load(Ordering::Relaxed);
    assert!(streamed < GIB / 2, "streamed {streamed} bytes");

    match (rss_before, status_kb("VmHWM:")) {
        (Some(before), Some(peak)) => {
            let grown_mb = peak.saturating_sub(before) / 1024;
            eprintln!(
                "VmRSS before: {before} kB, VmHWM after: {peak} kB (+{grown_mb} MB), \
                 {streamed} bytes streamed, {elapsed:?}"
            );
            assert!(grown_mb < 100, "peak memory grew by {grown_mb} MB");
        }
        // Not Linux: no /proc to read the peak from.
        _ => eprintln!("no /proc/self/status: memory not measured"),
    }
}
