//! Hostile review 2: `MailUpAccounts` under misuse: removing an account a caller still holds,
//! two instances sharing one store (two replicas of a web app), eviction churn after expiry,
//! the scheduler task's life, `spawn_background_refresh` called twice.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use mailup_auth::{AccountState, MailUpAccounts, Password};

use support::{connect, Setup};

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// `remove` drops the slot even while a request handler still holds the account's client; the
/// customer reconnects, which loads a second client for the same profile. When the handler
/// finally drops its (old) clone, the old client's `Drop` unschedules the profile, taking the
/// *new* client's background refresh with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_an_account_a_caller_holds_leaves_two_clients_and_loses_the_schedule() {
    let setup = Setup::new();
    let accounts = setup.accounts(|b| b).await;
    connect(&accounts, "a").await;
    let held = accounts.client("a").await.unwrap(); // a request in progress
    accounts.remove("a").await.unwrap();
    connect(&accounts, "a").await; // the customer connects again
    assert_eq!(accounts.scheduler_stats().scheduled, 1);
    drop(held); // the old request ends
    assert_eq!(
        accounts.scheduler_stats().scheduled,
        1,
        "dropping the removed client's last clone unscheduled the reconnected account"
    );
    setup.clock.advance(Duration::from_secs(3600));
    assert_eq!(
        accounts.run_due_refreshes().await,
        1,
        "the reconnected account is refreshed ahead"
    );
}

/// Same root: while the old clone is held, it and the reconnected client are two clients for
/// one profile (the docs: "a caller's clone and a second client for the same account never
/// coexist").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_remove_a_held_clone_and_the_new_client_coexist() {
    let setup = Setup::new();
    let accounts = setup.accounts(|b| b).await;
    connect(&accounts, "a").await;
    let held = accounts.client("a").await.unwrap();
    accounts.remove("a").await.unwrap();
    connect(&accounts, "a").await;
    let current = accounts.client("a").await.unwrap();
    assert!(current.cached_access_token().is_some());
    assert!(
        held.cached_access_token().is_some(),
        "the held clone is a second client: it does not see the login made through the new one"
    );
}

/// Two `MailUpAccounts` over one store (two replicas of a web app, or a worker and the web
/// process). `AccountState` is documented as "what an account's stored record says", but a
/// loaded client answers from memory: after the other replica disconnects the account,
/// this one still reports it connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_reports_a_stale_connected_after_another_instance_logs_out() {
    let setup = Setup::new();
    let web = setup.accounts(|b| b).await;
    let worker = setup.accounts(|b| b).await;
    connect(&web, "a").await;
    // The worker uses the account too (its client loads the stored tokens).
    worker
        .client("a")
        .await
        .unwrap()
        .access_token()
        .await
        .unwrap();
    // The customer clicks "disconnect MailUp" in the web app.
    web.logout("a").await.unwrap();
    assert_eq!(web.state("a").await.unwrap(), AccountState::NotConnected);
    assert_eq!(
        worker.state("a").await.unwrap(),
        AccountState::NotConnected,
        "the store says not connected"
    );
}

/// After expiry, with `max_loaded(1)` and many tasks churning through four accounts (each
/// call loads, uses and drops a client, so clients are evicted and reloaded all the time),
/// every account is refreshed exactly once and no refresh token is burnt twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_churn_after_expiry_causes_one_refresh_per_account() {
    let setup = Setup::new();
    setup.server.delay_ms.store(5, Ordering::SeqCst);
    let accounts = setup.accounts(|b| b.max_loaded(1)).await;
    let names = ["a", "b", "c", "d"];
    for name in names {
        connect(&accounts, name).await;
    }
    setup.clock.advance(Duration::from_secs(3600));
    let tasks: Vec<_> = (0..40)
        .map(|t| {
            let accounts = accounts.clone();
            tokio::spawn(async move {
                for round in 0..5 {
                    let name = names[(t + round) % names.len()];
                    let client = accounts.client(name).await.unwrap();
                    client.access_token().await.unwrap();
                    tokio::task::yield_now().await;
                    drop(client);
                }
            })
        })
        .collect();
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("no hang")
            .expect("no failure");
    }
    assert_eq!(setup.server.refreshes.load(Ordering::SeqCst), 4);
}

/// `MailUpAccounts::build` spawns its scheduler task inside `Arc::new_cyclic`, and the task's
/// first act is to check that the accounts are alive (a `Weak` that cannot be upgraded until
/// `new_cyclic` returns). Built from outside the runtime's workers (`block_on`, as
/// `#[tokio::main]` does), the task can run at once on a worker, see "dead" and end: those
/// accounts never refresh in the background. A race: 10,000 builds lose a few dozen tasks.
#[test]
fn the_scheduler_task_survives_being_started_from_block_on() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let setup = Setup::new();
        let base = alive_tasks();
        let mut all = Vec::new();
        for _ in 0..10_000 {
            all.push(
                MailUpAccounts::builder(setup.builder())
                    .build()
                    .await
                    .unwrap(),
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            alive_tasks() - base,
            all.len(),
            "every MailUpAccounts has its scheduler task"
        );
        drop(all);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(alive_tasks(), base, "dropped accounts stop their task");
    });
}

/// A standalone client: the background task ends when the client is dropped (the handle
/// still held), and when the handle is dropped (the client still held).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_background_refresh_ends_with_the_client_or_the_handle() {
    let setup = Setup::new();
    let base = alive_tasks();
    let client = setup.builder().profile("solo").build().await.unwrap();
    client
        .login_with_password("solo", &Password::new("pw"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let base = base.max(alive_tasks());
    let handle = client.spawn_background_refresh();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(alive_tasks(), base + 1);
    drop(client);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(alive_tasks(), base, "client dropped: the task ended");
    drop(handle);

    let client = setup.builder().profile("solo").build().await.unwrap();
    let handle = client.spawn_background_refresh();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(alive_tasks(), base + 1);
    drop(handle);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(alive_tasks(), base, "handle dropped: the task ended");
    // A client of MailUpAccounts: a no-op handle, no second task.
    let accounts = setup.accounts(|b| b).await;
    let from_accounts = accounts.client("solo").await.unwrap();
    let before = alive_tasks();
    let noop = from_accounts.spawn_background_refresh();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(alive_tasks(), before);
    drop(noop);
    drop(client);
}

/// Two parts of one program each ask a standalone client for a background refresh and keep
/// their handle. The second call returns a handle that does nothing, so when the first owner
/// drops its handle, nothing refreshes the client although the second handle is alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_background_handle_keeps_the_refresh_going_when_the_first_is_dropped() {
    let setup = Setup::new();
    let client = setup.builder().profile("solo").build().await.unwrap();
    client
        .login_with_password("solo", &Password::new("pw"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let base = alive_tasks();
    let first = client.spawn_background_refresh();
    let second = client.spawn_background_refresh();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(alive_tasks(), base + 1);
    drop(first);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        alive_tasks(),
        base + 1,
        "a background refresh is still running while `second` is held"
    );
    drop(second);
}
