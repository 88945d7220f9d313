//! Thousands of concurrent requests over keep-alive connections: the state stays consistent and
//! the counters add up exactly.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use mailup_auth_emulator::{
    Emulator, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_PASSWORD, DEFAULT_USERNAME,
};
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

const USERS_TOKENS: usize = 1000;
const BOGUS_CALLS: usize = 500;
const RACED_REFRESH_TOKENS: usize = 100;
const RACERS: usize = 5;
const FLOWS: usize = 100;
/// In flight at once: keeps the socket count sane while still far above the 2 cores.
const IN_FLIGHT: usize = 256;

#[derive(Clone)]
struct Ctx {
    emu: Arc<Emulator>,
    http: reqwest::Client,
    permits: Arc<Semaphore>,
}

impl Ctx {
    async fn token(&self, params: Vec<(&'static str, String)>) -> (u16, Value) {
        let _permit = self.permits.acquire().await.unwrap();
        let mut form = params;
        form.push(("client_id", DEFAULT_CLIENT_ID.to_owned()));
        form.push(("client_secret", DEFAULT_CLIENT_SECRET.to_owned()));
        let response = self
            .http
            .post(self.emu.token_url())
            .form(&form)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    async fn api(&self, path: &str, token: &str) -> u16 {
        let _permit = self.permits.acquire().await.unwrap();
        let response = self
            .http
            .get(format!("{}{}", self.emu.console_api_base(), path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let _ = response.bytes().await.unwrap();
        status
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_concurrent_requests_keep_state_consistent() {
    let emu = Arc::new(Emulator::builder().start().await.unwrap());
    let ctx = Ctx {
        emu: emu.clone(),
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(IN_FLIGHT)
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap(),
        permits: Arc::new(Semaphore::new(IN_FLIGHT)),
    };

    // Phase 1: many password grants at once.
    let mut tasks = JoinSet::new();
    for _ in 0..USERS_TOKENS {
        let ctx = ctx.clone();
        tasks.spawn(async move {
            let (status, body) = ctx
                .token(vec![
                    ("grant_type", "password".to_owned()),
                    ("username", DEFAULT_USERNAME.to_owned()),
                    ("password", DEFAULT_PASSWORD.to_owned()),
                ])
                .await;
            assert_eq!(status, 200, "{body}");
            (
                body["access_token"].as_str().unwrap().to_owned(),
                body["refresh_token"].as_str().unwrap().to_owned(),
            )
        });
    }
    let pairs: Vec<(String, String)> = tasks.join_all().await;
    let access: HashSet<&String> = pairs.iter().map(|(a, _)| a).collect();
    let refresh: HashSet<&String> = pairs.iter().map(|(_, r)| r).collect();
    assert_eq!(access.len(), USERS_TOKENS, "access tokens are unique");
    assert_eq!(refresh.len(), USERS_TOKENS, "refresh tokens are unique");

    // Phase 2: a mix, all at once.
    let mut api_tasks = JoinSet::new();
    for (a, _) in &pairs {
        for path in [
            "/Console/Authentication/Info",
            "/Console/User/Lists?pageSize=2",
        ] {
            let ctx = ctx.clone();
            let a = a.clone();
            api_tasks.spawn(async move { ctx.api(path, &a).await });
        }
    }
    for i in 0..BOGUS_CALLS {
        let ctx = ctx.clone();
        api_tasks.spawn(async move {
            let status = ctx
                .api("/Console/Authentication/Info", &format!("bogus-{i}"))
                .await;
            status + 10_000 // tag the expected 401s
        });
    }
    // Every raced refresh token: RACERS simultaneous refreshes, exactly one may win.
    let mut race_tasks = JoinSet::new();
    for (_, r) in pairs.iter().take(RACED_REFRESH_TOKENS) {
        for _ in 0..RACERS {
            let ctx = ctx.clone();
            let r = r.clone();
            race_tasks.spawn(async move {
                let (status, body) = ctx
                    .token(vec![
                        ("grant_type", "refresh_token".to_owned()),
                        ("refresh_token", r.clone()),
                    ])
                    .await;
                (r, status, body)
            });
        }
    }
    let mut flow_tasks = JoinSet::new();
    for _ in 0..FLOWS {
        let ctx = ctx.clone();
        flow_tasks.spawn(async move {
            let location = {
                let _permit = ctx.permits.acquire().await.unwrap();
                login_and_consent(&ctx.emu, "allow", "conc").await
            };
            let code = query_param(&location, "code").unwrap();
            let (status, body) = ctx
                .token(vec![
                    ("grant_type", "authorization_code".to_owned()),
                    ("code", code),
                ])
                .await;
            assert_eq!(status, 200, "{body}");
        });
    }

    let api_results = api_tasks.join_all().await;
    assert_eq!(
        api_results.iter().filter(|&&s| s == 200).count(),
        2 * USERS_TOKENS
    );
    assert_eq!(
        api_results.iter().filter(|&&s| s == 10_401).count(),
        BOGUS_CALLS
    );
    let races = race_tasks.join_all().await;
    let mut winners = std::collections::HashMap::<String, Vec<String>>::new();
    for (old, status, body) in races {
        match status {
            200 => winners
                .entry(old)
                .or_default()
                .push(body["refresh_token"].as_str().unwrap().to_owned()),
            400 => assert_eq!(body["error"], "invalid_grant"),
            other => panic!("unexpected status {other}: {body}"),
        }
    }
    assert_eq!(winners.len(), RACED_REFRESH_TOKENS);
    assert!(
        winners.values().all(|w| w.len() == 1),
        "exactly one refresh wins each race"
    );
    flow_tasks.join_all().await;

    // The state and the counters agree with what was sent.
    for (old, new) in &winners {
        assert!(!emu.is_refresh_token_live(old));
        assert!(emu.is_refresh_token_live(&new[0]));
    }
    let issued = USERS_TOKENS + RACED_REFRESH_TOKENS + FLOWS;
    assert_eq!(emu.issued_refresh_tokens().len(), issued);
    let live = emu
        .issued_refresh_tokens()
        .iter()
        .filter(|t| emu.is_refresh_token_live(t))
        .count();
    assert_eq!(live, issued - RACED_REFRESH_TOKENS);
    let c = emu.counters();
    assert_eq!(c.token_password, USERS_TOKENS as u64);
    assert_eq!(
        c.token_refresh_token,
        (RACED_REFRESH_TOKENS * RACERS) as u64
    );
    assert_eq!(c.token_authorization_code, FLOWS as u64);
    assert_eq!(
        c.token_requests,
        (USERS_TOKENS + RACED_REFRESH_TOKENS * RACERS + FLOWS) as u64
    );
    assert_eq!(c.token_errors, (RACED_REFRESH_TOKENS * (RACERS - 1)) as u64);
    assert_eq!(c.access_tokens_issued, issued as u64);
    assert_eq!(c.api_calls, (2 * USERS_TOKENS + BOGUS_CALLS) as u64);
    assert_eq!(c.api_unauthorized, BOGUS_CALLS as u64);
    assert_eq!(c.codes_issued, FLOWS as u64);
    assert_eq!(c.logon_pages, FLOWS as u64);
    assert_eq!(c.token_faults, 0);
}
