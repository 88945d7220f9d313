//! A whole session traced at TRACE level: the captured output holds none of the secrets.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mailup_auth::ManualClock;
use mailup_auth_emulator::{Emulator, DEFAULT_CLIENT_SECRET, DEFAULT_PASSWORD};
use mailup_auth_tests::{client_builder, password_login};
use tracing_subscriber::fmt::MakeWriter;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[test]
fn trace_output_contains_no_secret() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(capture.clone())
        .with_ansi(false)
        .finish();
    // Global, so spans and events from every runtime thread are captured.
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let secrets = runtime.block_on(async {
        let emulator = Emulator::builder().start().await.unwrap();
        let clock = Arc::new(ManualClock::starting_now());
        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let hook_seen = seen.clone();
        let client = client_builder(&emulator)
            .clock(clock.clone())
            .memory_store()
            .on_tokens_changed(move |change| {
                if let Some(tokens) = change.tokens {
                    let mut seen = hook_seen.lock().unwrap();
                    seen.push(tokens.access_token.secret().to_owned());
                    if let Some(refresh) = &tokens.refresh_token {
                        seen.push(refresh.secret().to_owned());
                    }
                }
            })
            .build()
            .await
            .unwrap();
        password_login(&client).await;
        let _: serde_json::Value = client.get("Console/Authentication/Info").await.unwrap();
        clock.advance(Duration::from_secs(7200));
        let _: serde_json::Value = client.get("Console/User/Lists").await.unwrap();
        emulator.expire_all_access_tokens();
        let _: serde_json::Value = client.get("Console/Authentication/Info").await.unwrap();
        client.refresh().await.unwrap();
        tracing::debug!(client = ?client, status = ?client.status(), "final state");
        let mut secrets = seen.lock().unwrap().clone();
        secrets.extend(emulator.issued_refresh_tokens());
        emulator.shutdown().await;
        secrets
    });
    let output = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(
        output.contains("mailup_auth.token_request"),
        "tracing was captured:\n{output}"
    );
    assert!(
        secrets.len() >= 8,
        "the session rotated tokens: {}",
        secrets.len()
    );
    let mut all = secrets;
    all.push(DEFAULT_CLIENT_SECRET.to_owned());
    all.push(DEFAULT_PASSWORD.to_owned());
    for secret in all {
        assert!(
            !output.contains(&secret),
            "a secret leaked into the trace output"
        );
    }
}
