//! The cached token as several threads see it: each reading thread hands out clones of its own
//! copy (`client/thread_copies.rs`), and a change made on another thread (a logout, a 401 and
//! its refresh, a rejection) makes every copy unusable at once.

mod support;

use std::sync::Barrier;

use mailup_auth::{AccessToken, MailUpClient};
use mailup_auth_emulator::Emulator;
use support::{emulator_builder, log_in};

const THREADS: usize = 4;

/// The emulator runs on this runtime's workers while the test's threads read.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// One thread's reads: before and after the change.
type Reads = (Option<AccessToken>, Option<AccessToken>);

/// Each of [`THREADS`] threads reads the cached token (making its copy); once they all hold
/// one, `change` runs on this thread; then each reads again. Returns what `change` returned
/// and every thread's two reads.
fn read_around<T>(client: &MailUpClient, change: impl FnOnce() -> T) -> (T, Vec<Reads>) {
    let barrier = Barrier::new(THREADS + 1);
    std::thread::scope(|scope| {
        let readers: Vec<_> = (0..THREADS)
            .map(|_| {
                scope.spawn(|| {
                    let before = client.cached_access_token();
                    barrier.wait(); // every thread holds its copy
                    barrier.wait(); // the change is made
                    (before, client.cached_access_token())
                })
            })
            .collect();
        barrier.wait();
        let changed = change();
        barrier.wait();
        let reads = readers.into_iter().map(|r| r.join().unwrap()).collect();
        (changed, reads)
    })
}

fn logged_in(runtime: &tokio::runtime::Runtime) -> (Emulator, MailUpClient) {
    runtime.block_on(async {
        let emulator = Emulator::builder().start().await.unwrap();
        let client = log_in(emulator_builder(&emulator)).await;
        (emulator, client)
    })
}

#[test]
fn after_a_logout_no_thread_hands_out_its_copy() {
    let runtime = runtime();
    let (emulator, client) = logged_in(&runtime);
    let published = client.cached_access_token().unwrap();
    let (logout, reads) = read_around(&client, || runtime.block_on(client.logout()));
    logout.unwrap();
    for (before, after) in reads {
        assert_eq!(before.as_ref(), Some(&published));
        assert!(
            after.is_none(),
            "a thread handed out its copy after the logout"
        );
    }
    runtime.block_on(emulator.shutdown());
}

#[test]
fn after_a_401_and_its_refresh_every_thread_hands_out_the_new_token() {
    let runtime = runtime();
    let (emulator, client) = logged_in(&runtime);
    let published = client.cached_access_token().unwrap();
    let (answer, reads) = read_around(&client, || {
        emulator.expire_all_access_tokens();
        runtime.block_on(client.get::<serde_json::Value>("Console/Authentication/Info"))
    });
    answer.expect("one refresh, one retry");
    let current = client.cached_access_token().unwrap();
    assert_ne!(current, published);
    for (before, after) in reads {
        assert_eq!(before.as_ref(), Some(&published));
        assert_eq!(
            after.as_ref(),
            Some(&current),
            "a thread kept the rejected token"
        );
    }
    runtime.block_on(emulator.shutdown());
}

#[test]
fn after_a_401_whose_refresh_is_rejected_no_thread_hands_out_a_token() {
    let runtime = runtime();
    let (emulator, client) = logged_in(&runtime);
    let published = client.cached_access_token().unwrap();
    let (answer, reads) = read_around(&client, || {
        emulator.revoke_all_refresh_tokens();
        emulator.expire_all_access_tokens();
        runtime.block_on(client.get::<serde_json::Value>("Console/Authentication/Info"))
    });
    let error = answer.unwrap_err();
    assert!(error.is_reauthorization_required(), "{error:?}");
    for (before, after) in reads {
        assert_eq!(before.as_ref(), Some(&published));
        assert!(after.is_none(), "a thread handed out the rejected token");
    }
    runtime.block_on(emulator.shutdown());
}
