//! A worker process for the scale-out tests (`tests/scale_out.rs`): one `MailUpClient` on a
//! Redis store, driven by lines on stdin, answering on stdout.
//!
//! `scale_out_worker REDIS_URL AUTH_BASE CLIENT_ID CLIENT_SECRET TASKS` prints `ready`, then:
//! - `go`: TASKS concurrent `access_token()` calls; prints `done OK FAILED TOKEN...` (the
//!   distinct tokens served) and, per failure, `error MESSAGE`;
//! - `refresh`: one forced refresh; prints `refreshed` or `error MESSAGE`;
//! - `quit` (or end of input): exits.

use std::collections::BTreeSet;
use std::sync::Arc;

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
    println!("ready");
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        match line.trim() {
            "go" => {
                let calls: Vec<_> = (0..tasks)
                    .map(|_| {
                        let client = Arc::clone(&client);
                        tokio::spawn(async move { client.access_token().await })
                    })
                    .collect();
                let mut tokens = BTreeSet::new();
                let mut errors = Vec::new();
                for call in calls {
                    match call.await.expect("task") {
                        Ok(token) => {
                            tokens.insert(token.secret().to_owned());
                        }
                        Err(error) => errors.push(error.to_string()),
                    }
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
            "refresh" => match client.refresh().await {
                Ok(_) => println!("refreshed"),
                Err(error) => println!("error {error}"),
            },
            _ => break,
        }
    }
}
