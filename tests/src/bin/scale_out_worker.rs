//! A worker process for the scale-out tests (`tests/scale_out.rs`): one `MailUpClient` on a
//! Redis store, driven by lines on stdin, answering on stdout.
//!
//! `scale_out_worker REDIS_URL AUTH_BASE CLIENT_ID CLIENT_SECRET TASKS` prints `ready`, then:
//! - `go` (or `go N`): TASKS (or N) concurrent `access_token()` calls; prints
//!   `done OK FAILED TOKEN...` (the distinct tokens served) and, per failure, `error MESSAGE`;
//! - `read N`: N `access_token()` calls one after the other (on a fresh token: the cached
//!   path); prints `read OK FAILED`;
//! - `refresh`: one forced refresh; prints `refreshed` or `error MESSAGE`;
//! - `quit` (or end of input): exits.
//!
//! With `STORM_TRACE` set, each `go` also writes to stderr when its tasks were spawned and
//! served (first, median, last), to see where a storm's time goes (the refresh storm bench).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use mailup_auth::{ClientSecret, MailUpClient};
use tokio::io::{AsyncBufReadExt as _, BufReader};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [redis, auth_base, client_id, client_secret, tasks] = args.as_slice() else {
        eprintln!("usage: scale_out_worker REDIS_URL AUTH_BASE CLIENT_ID CLIENT_SECRET TASKS");
        std::process::exit(2);
    };
    let tasks: usize = tasks.parse().expect("TASKS is a number");
    let client = MailUpClient::builder(client_id.clone(), ClientSecret::new(client_secret.clone()))
        .auth_base(auth_base.clone())
        .store_url(redis.clone())
        .build()
        .await
        .expect("client builds");
    let client = Arc::new(client);
    let trace = std::env::var_os("STORM_TRACE").is_some();
    println!("ready");
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let mut words = line.split_whitespace();
        let command = words.next().unwrap_or("");
        let count: Option<usize> = words.next().map(|n| n.parse().expect("N is a number"));
        match command {
            "go" => {
                let tasks = count.unwrap_or(tasks);
                let started = Instant::now();
                let calls: Vec<_> = (0..tasks)
                    .map(|_| {
                        let client = Arc::clone(&client);
                        tokio::spawn(async move {
                            let result = client.access_token().await;
                            (result, started.elapsed())
                        })
                    })
                    .collect();
                let spawned = started.elapsed();
                let mut served_after = Vec::with_capacity(tasks);
                let mut tokens = BTreeSet::new();
                let mut errors = Vec::new();
                let mut last = None;
                for call in calls {
                    let (result, after) = call.await.expect("task");
                    served_after.push(after);
                    match result {
                        // Copied only when it differs from the last one: a storm hands
                        // out one token, and the copies would cost more than the calls.
                        Ok(token) if last.as_ref() != Some(&token) => {
                            tokens.insert(token.secret().to_owned());
                            last = Some(token);
                        }
                        Ok(_) => {}
                        Err(error) => errors.push(error.to_string()),
                    }
                }
                served_after.sort();
                if trace && tasks > 0 {
                    eprintln!(
                        "worker {}: {tasks} tasks spawned in {spawned:?}; served: first {:?}, median {:?}, last {:?}",
                        std::process::id(),
                        served_after[0],
                        served_after[tasks / 2],
                        served_after[tasks - 1],
                    );
                }
                for error in &errors {
                    println!("error {error}");
                }
                let tokens: Vec<_> = tokens.into_iter().collect();
                println!(
                    "done {} {} {}",
                    tasks - errors.len(),
                    errors.len(),
                    tokens.join(" ")
                );
            }
            "read" => {
                let calls = count.unwrap_or(1);
                let mut failed = 0;
                for _ in 0..calls {
                    if client.access_token().await.is_err() {
                        failed += 1;
                    }
                }
                println!("read {} {failed}", calls - failed);
            }
            "refresh" => match client.refresh().await {
                Ok(_) => println!("refreshed"),
                Err(error) => println!("error {error}"),
            },
            _ => break,
        }
    }
}
