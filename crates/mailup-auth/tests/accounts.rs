//! `MailUpAccounts` and its scheduler against an in-process token server that enforces
//! rotation (a refresh token works once), on a manual clock: one client per account, eviction
//! without loss, due order and the concurrency bound, isolation of a revoked account, and a
//! scheduler that survives store errors and panicking hooks.

mod support;

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use mailup_auth::{AccountState, Clock, MailUpAccounts, Password, UnixTime};

use support::{connect, Setup, NOW};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_calls_for_one_account_load_one_client() {
    let setup = Setup::new();
    let accounts = setup.accounts(|b| b).await;
    let calls: Vec<_> = (0..16)
        .map(|_| {
            let accounts = accounts.clone();
            tokio::spawn(async move { accounts.client("acme").await.unwrap() })
        })
        .collect();
    let mut clients = Vec::new();
    for call in calls {
        clients.push(call.await.unwrap());
    }
    assert_eq!(accounts.loaded_count(), 1);
    assert_eq!(
        setup.store.loads.load(Ordering::SeqCst),
        1,
        "one store load"
    );
    // They are one client: a login through one is seen by all.
    clients[0]
        .login_with_password("acme", &Password::new("pw"))
        .await
        .unwrap();
    let token = clients[0].access_token().await.unwrap();
    for client in &clients {
        assert_eq!(
            client.cached_access_token().unwrap().secret(),
            token.secret()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_keeps_held_clients_and_loses_no_token() {
    let setup = Setup::new();
    let accounts = setup.accounts(|b| b.max_loaded(2)).await;
    for account in ["a", "b", "c"] {
        connect(&accounts, account).await;
    }
    // Loading `c` evicted the least recently used idle client (`a`).
    assert_eq!(accounts.loaded_count(), 2);
    assert!(accounts.loaded("a").is_none());
    // A client a caller holds is never evicted, so no second client for it can appear.
    let held = accounts.client("b").await.unwrap();
    for account in ["d", "e", "f"] {
        connect(&accounts, account).await;
    }
    assert!(accounts.loaded("b").is_some(), "held clients stay loaded");
    drop(held);
    // The evicted account reloads from the store with its tokens, and refreshes with the
    // latest refresh token (rotation continues, nothing lost).
    setup.clock.advance(Duration::from_secs(3600));
    let a = accounts.client("a").await.unwrap();
    a.access_token()
        .await
        .expect("refreshed with the stored token");
    assert_eq!(setup.server.refreshes.load(Ordering::SeqCst), 1);
    assert_eq!(
        accounts.state("a").await.unwrap(),
        AccountState::Connected {
            expires_at: setup.clock.now().saturating_add(Duration::from_secs(3600)),
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_clients_are_evicted_after_the_idle_timeout() {
    let setup = Setup::new();
    let accounts = setup
        .accounts(|b| b.idle_timeout(Duration::from_millis(100)))
        .await;
    connect(&accounts, "a").await;
    connect(&accounts, "b").await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    let _b = accounts.client("b").await.unwrap();
    assert!(accounts.loaded("a").is_none(), "idle `a` evicted");
    assert!(accounts.loaded("b").is_some());
    assert_eq!(accounts.evict_idle(), 0, "`b` is held");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_refreshes_1000_accounts_in_due_order_within_the_bound() {
    const ACCOUNTS: usize = 1000;
    const BOUND: usize = 4;
    let setup = Setup::new();
    setup.server.delay_ms.store(1, Ordering::SeqCst);
    let accounts = setup.accounts(|b| b.refresh_concurrency(BOUND)).await;
    // One login per second: account k is due for refresh at NOW + k + 3540 s.
    for k in 0..ACCOUNTS {
        connect(&accounts, &format!("acct{k:04}")).await;
        setup.clock.advance(Duration::from_secs(1));
    }
    assert_eq!(accounts.scheduler_stats().scheduled, ACCOUNTS);
    // Nothing is due yet: nothing runs, nothing is read.
    let loads = setup.store.loads.load(Ordering::SeqCst);
    assert_eq!(accounts.run_due_refreshes().await, 0);
    assert_eq!(setup.store.loads.load(Ordering::SeqCst), loads);

    // Half of them come due.
    setup.clock.set(UnixTime::from_secs(NOW + 3540 + 499));
    assert_eq!(accounts.run_due_refreshes().await, 500);
    assert_eq!(setup.server.refreshes.load(Ordering::SeqCst), 500);
    // The rest.
    setup.clock.set(UnixTime::from_secs(NOW + 3540 + 2000));
    assert_eq!(accounts.run_due_refreshes().await, 500);
    assert_eq!(
        setup.server.refreshes.load(Ordering::SeqCst),
        1000,
        "no duplicates"
    );

    let arrivals = setup.server.arrivals.lock().unwrap().clone();
    assert_eq!(arrivals.len(), ACCOUNTS);
    assert_eq!(
        arrivals.iter().collect::<HashSet<_>>().len(),
        ACCOUNTS,
        "each account refreshed once"
    );
    // Due order: jobs start in due order, at most BOUND at once. When the job of rank r
    // starts, at most BOUND - 1 others are running, all of lower rank, so every account of rank
    // below r - (BOUND - 1) has already been served: no request arrives more than BOUND - 1
    // places *early*. (A job can arrive late by any amount: a worker thread stalled by the OS
    // holds its slot while the other slots go on, so the late side is not asserted; it failed
    // once under load as "account 395 arrived at 404".)
    for (position, account) in arrivals.iter().enumerate() {
        let rank: usize = account.trim_start_matches("acct").parse().unwrap();
        assert!(
            rank <= position + (BOUND - 1),
            "account {rank} arrived at {position}, ahead of accounts due before it"
        );
    }
    assert!(setup.server.max_in_flight.load(Ordering::SeqCst) <= BOUND);
    // Every account is scheduled again, an hour on.
    assert_eq!(accounts.scheduler_stats().scheduled, ACCOUNTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_account_does_not_disturb_the_others() {
    let setup = Setup::new();
    let accounts = setup.accounts(|b| b).await;
    for account in ["a", "b", "c"] {
        connect(&accounts, account).await;
    }
    setup.server.revoke_account("b");
    setup.clock.advance(Duration::from_secs(3600));
    assert_eq!(accounts.run_due_refreshes().await, 3);
    for account in ["a", "c"] {
        accounts
            .client(account)
            .await
            .unwrap()
            .access_token()
            .await
            .expect("the others keep working");
    }
    let states = accounts.accounts().await.unwrap();
    let b = states.iter().find(|s| s.profile == "b").unwrap();
    assert!(
        matches!(b.state, AccountState::NeedsReconnect { .. }),
        "{states:?}"
    );
    assert!(states
        .iter()
        .filter(|s| s.profile != "b")
        .all(|s| matches!(s.state, AccountState::Connected { .. })));
    // `b` is not retried in a loop: nothing is scheduled for it.
    assert_eq!(accounts.scheduler_stats().scheduled, 2);
    assert!(accounts
        .client("b")
        .await
        .unwrap()
        .access_token()
        .await
        .unwrap_err()
        .is_reauthorization_required());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_survives_a_store_error_and_a_panicking_hook() {
    let setup = Setup::new();
    let builder = setup.builder().on_tokens_changed(|change| {
        if change.profile == "boom" && change.grant.is_some() && change.version > Some(1) {
            panic!("hook bug");
        }
    });
    let accounts = MailUpAccounts::builder(builder)
        .background_refresh(false)
        .build()
        .await
        .unwrap();
    for account in ["boom", "ok"] {
        connect(&accounts, account).await;
    }
    setup.clock.advance(Duration::from_secs(3600));
    // A panicking hook on `boom`: its job fails, `ok` is refreshed, the scheduler goes on.
    assert_eq!(accounts.run_due_refreshes().await, 2);
    let stats = accounts.scheduler_stats();
    assert_eq!(stats.failures, 1, "{stats:?}");
    assert_eq!(stats.scheduled, 2, "both scheduled again");
    // A store that cannot save: the job fails, nothing is lost, it is retried later.
    setup.store.fail_saves.store(true, Ordering::SeqCst);
    setup.clock.advance(Duration::from_secs(3600));
    accounts.run_due_refreshes().await;
    assert!(accounts.scheduler_stats().failures >= 2);
    setup.store.fail_saves.store(false, Ordering::SeqCst);
    setup.clock.advance(Duration::from_secs(120));
    accounts.run_due_refreshes().await;
    accounts
        .client("ok")
        .await
        .unwrap()
        .access_token()
        .await
        .expect("recovered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_task_refreshes_ahead_without_polling() {
    let setup = Setup::new();
    let accounts =
        MailUpAccounts::builder(setup.builder().clock(Arc::new(mailup_auth::SystemClock)))
            .build()
            .await
            .unwrap();
    // Nothing loaded, nothing due: the task sleeps without waking.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(accounts.scheduler_stats().wakeups, 0);
    connect(&accounts, "a").await;
    assert_eq!(accounts.scheduler_stats().scheduled, 1);
    assert_eq!(accounts.scheduler_stats().wakeups, 0);
}
