//! Hostile tests of the cached read (`client/thread_copies.rs`, `client/token_future.rs`):
//! threads reading in tight loops while another thread invalidates the token, several clients
//! read from the same threads (also clients built where a dropped one was), clients dropped
//! while threads hold their tokens, many short-lived threads, and the future polled in odd
//! ways.

mod support;

use std::collections::HashSet;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::task::{Context, Poll, Waker};

use mailup_auth::{AccessToken, MailUpClient};
use mailup_auth_emulator::{Emulator, DEFAULT_PASSWORD, DEFAULT_USERNAME};
use support::{emulator_builder, log_in};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Tokens that must never be handed out again: each is added once the call that invalidated
/// it has returned. `generation` counts them, so a reader that saw generation `g` and then
/// reads the cache must not be handed any of the first `g`.
#[derive(Default)]
struct DeadTokens {
    tokens: Mutex<Vec<String>>,
    generation: AtomicU64,
    /// Tokens handed out although dead (the test fails if any).
    violations: Mutex<Vec<String>>,
    stop: AtomicBool,
    reads: AtomicU64,
}

impl DeadTokens {
    fn bury(&self, token: &AccessToken) {
        self.tokens.lock().unwrap().push(token.secret().to_owned());
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// One reader's view, refreshed before each read.
    fn refresh(&self, seen: &mut u64, known: &mut HashSet<String>) {
        let generation = self.generation.load(Ordering::SeqCst);
        if generation != *seen {
            *known = self.tokens.lock().unwrap().iter().cloned().collect();
            *seen = generation;
        }
    }

    fn check(&self, known: &HashSet<String>, token: Option<&AccessToken>) {
        self.reads.fetch_add(1, Ordering::Relaxed);
        if let Some(token) = token {
            if known.contains(token.secret()) {
                self.violations
                    .lock()
                    .unwrap()
                    .push("dead token handed out".into());
            }
        }
    }
}

/// Most reads one reader makes: a bound far above what the invalidations take (the reader
/// stops when told to), so that every reader reads through all of them.
const MAX_READS: u64 = 10_000_000_000;

#[test]
fn no_thread_is_handed_a_token_after_the_call_that_invalidated_it_returned() {
    let runtime = runtime();
    let emulator = runtime.block_on(Emulator::builder().start()).unwrap();
    let client = runtime.block_on(log_in(emulator_builder(&emulator)));
    let dead = Arc::new(DeadTokens::default());
    // Readers on tokio workers, through the future (they may take the slow path too).
    let tasks: Vec<_> = (0..2)
        .map(|_| {
            let client = client.clone();
            let dead = Arc::clone(&dead);
            runtime.spawn(async move {
                let (mut seen, mut known) = (0, HashSet::new());
                for _ in 0..MAX_READS {
                    if dead.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    dead.refresh(&mut seen, &mut known);
                    let token = client.access_token().await.ok();
                    dead.check(&known, token.as_ref());
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    std::thread::scope(|scope| {
        for _ in 0..3 {
            scope.spawn(|| {
                let (mut seen, mut known) = (0, HashSet::new());
                for _ in 0..MAX_READS {
                    if dead.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    dead.refresh(&mut seen, &mut known);
                    dead.check(&known, client.cached_access_token().as_ref());
                }
            });
        }
        let login = || {
            runtime
                .block_on(client.login_with_password(
                    DEFAULT_USERNAME,
                    &mailup_auth::Password::new(DEFAULT_PASSWORD),
                ))
                .unwrap();
        };
        for _round in 0..4 {
            // A refresh.
            let old = client.cached_access_token().unwrap();
            runtime.block_on(client.refresh()).unwrap();
            dead.bury(&old);
            // A 401 (the emulator expired the token), one refresh and one retry.
            let old = client.cached_access_token().unwrap();
            emulator.expire_all_access_tokens();
            runtime
                .block_on(client.get::<serde_json::Value>("Console/Authentication/Info"))
                .unwrap();
            dead.bury(&old);
            // A 401 whose refresh is rejected, then a login again.
            let old = client.cached_access_token().unwrap();
            emulator.revoke_all_refresh_tokens();
            emulator.expire_all_access_tokens();
            let error = runtime
                .block_on(client.get::<serde_json::Value>("Console/Authentication/Info"))
                .unwrap_err();
            assert!(error.is_reauthorization_required(), "{error}");
            dead.bury(&old);
            login();
            // A logout, then a login again.
            let old = client.cached_access_token().unwrap();
            runtime.block_on(client.logout()).unwrap();
            dead.bury(&old);
            login();
            // A login over a live session replaces its token.
            let old = client.cached_access_token().unwrap();
            login();
            dead.bury(&old);
        }
        dead.stop.store(true, Ordering::SeqCst);
    });
    for task in tasks {
        runtime.block_on(task).unwrap();
    }
    let violations = dead.violations.lock().unwrap();
    assert!(
        violations.is_empty(),
        "{} dead tokens handed out in {} reads",
        violations.len(),
        dead.reads.load(Ordering::Relaxed)
    );
    assert!(dead.reads.load(Ordering::Relaxed) > 0);
    runtime.block_on(emulator.shutdown());
}

/// A reader thread that lives across clients: it reads what it is sent and answers with the
/// secret it was handed (or `None`).
fn spawn_reader<'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
) -> (mpsc::Sender<MailUpClient>, mpsc::Receiver<Option<String>>) {
    let (jobs, job) = mpsc::channel::<MailUpClient>();
    let (answer, answers) = mpsc::channel();
    scope.spawn(move || {
        for client in job {
            // Twice: the first read makes the thread's copy, the second hands out a clone of it.
            let first = client.cached_access_token();
            let second = client.cached_access_token();
            assert_eq!(first, second);
            drop(client); // possibly the last handle, on this thread
            answer
                .send(second.map(|token| token.secret().to_owned()))
                .unwrap();
        }
    });
    (jobs, answers)
}

#[test]
fn threads_reading_several_clients_get_each_clients_own_token() {
    let runtime = runtime();
    let emulator = runtime.block_on(Emulator::builder().start()).unwrap();
    let build =
        |profile: &str| runtime.block_on(log_in(emulator_builder(&emulator).profile(profile)));
    std::thread::scope(|scope| {
        let readers: Vec<_> = (0..3).map(|_| spawn_reader(scope)).collect();
        let ask = |client: &MailUpClient| -> Vec<Option<String>> {
            for (jobs, _) in &readers {
                jobs.send(client.clone()).unwrap();
            }
            readers
                .iter()
                .map(|(_, answers)| answers.recv().unwrap())
                .collect()
        };
        // Different profiles, and the same profile twice (separate stores: separate tokens).
        let clients = [build("a"), build("b"), build("a")];
        for _ in 0..3 {
            for client in &clients {
                let own = client.cached_access_token().unwrap().secret().to_owned();
                for answer in ask(client) {
                    assert_eq!(answer.as_deref(), Some(own.as_str()));
                }
            }
        }
        drop(clients);
        // Clients dropped and built again (their memory is reused): every thread still holds
        // a copy made for an earlier client, whose publication numbers restart at 1 too.
        for round in 0..30 {
            let client = build(if round % 2 == 0 { "a" } else { "b" });
            let own = client.cached_access_token().unwrap().secret().to_owned();
            for answer in ask(&client) {
                assert_eq!(answer.as_deref(), Some(own.as_str()), "round {round}");
            }
            // A refresh in between: the next publication of this client.
            runtime.block_on(client.refresh()).unwrap();
            let own = client.cached_access_token().unwrap().secret().to_owned();
            for answer in ask(&client) {
                assert_eq!(answer.as_deref(), Some(own.as_str()), "round {round}");
            }
        }
    });
    runtime.block_on(emulator.shutdown());
}

#[test]
fn tokens_outlive_the_client_and_threads_mid_read_when_it_is_dropped() {
    let runtime = runtime();
    let emulator = runtime.block_on(Emulator::builder().start()).unwrap();
    for _ in 0..10 {
        let client = runtime.block_on(log_in(emulator_builder(&emulator)));
        let own = client.cached_access_token().unwrap().secret().to_owned();
        let held: Vec<AccessToken> = std::thread::scope(|scope| {
            let readers: Vec<_> = (0..4)
                .map(|_| {
                    let client = client.clone();
                    scope.spawn(move || {
                        let mut held = Vec::new();
                        for _ in 0..1000 {
                            held.push(client.cached_access_token().unwrap());
                        }
                        // The last handle may be this one: the client (and every thread's
                        // copy) is dropped here, while the clones are held.
                        drop(client);
                        held
                    })
                })
                .collect();
            drop(client);
            readers
                .into_iter()
                .flat_map(|reader| reader.join().unwrap())
                .collect()
        });
        assert_eq!(held.len(), 4000);
        assert!(held.iter().all(|token| token.secret() == own));
    }
    runtime.block_on(emulator.shutdown());
}

#[test]
fn many_short_lived_threads_each_read_the_current_token() {
    let runtime = runtime();
    let emulator = runtime.block_on(Emulator::builder().start()).unwrap();
    let client = runtime.block_on(log_in(emulator_builder(&emulator)));
    let own = client.cached_access_token().unwrap();
    for batch in 0..100 {
        if batch == 50 {
            runtime.block_on(client.logout()).unwrap();
        }
        std::thread::scope(|scope| {
            for _ in 0..20 {
                scope.spawn(|| {
                    let read = client.cached_access_token();
                    if batch < 50 {
                        assert_eq!(read.as_ref(), Some(&own));
                    } else {
                        assert!(read.is_none(), "a reused slot handed out its old copy");
                    }
                });
            }
        });
    }
    runtime.block_on(emulator.shutdown());
}

fn poll_once<F: Future>(future: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(Waker::noop()))
}

#[test]
fn the_future_polled_again_dropped_unpolled_spawned_and_raced() {
    let runtime = runtime();
    let emulator = runtime.block_on(Emulator::builder().start()).unwrap();
    let client = runtime.block_on(log_in(emulator_builder(&emulator)));
    let own = client.cached_access_token().unwrap();
    // Dropped before its first poll: nothing happens, the cache is untouched.
    drop(client.access_token());
    assert_eq!(client.cached_access_token().as_ref(), Some(&own));
    // Polled outside any runtime: the cached path needs none; polled again after it finished,
    // it reads the cache again.
    let mut future = pin!(client.access_token());
    match poll_once(future.as_mut()) {
        Poll::Ready(token) => assert_eq!(token.unwrap(), own),
        Poll::Pending => panic!("the cached path finishes on its first poll"),
    }
    match poll_once(future.as_mut()) {
        Poll::Ready(token) => assert_eq!(token.unwrap(), own),
        Poll::Pending => panic!("polled again, it reads the cache again"),
    }
    // Created on one runtime, awaited on another.
    let other = crate::runtime();
    let future = client.access_token();
    assert_eq!(other.block_on(future).unwrap(), own);
    // Spawned ('static and Send once it owns a handle).
    let spawned = runtime.spawn({
        let client = client.clone();
        async move { client.access_token().await }
    });
    assert_eq!(runtime.block_on(spawned).unwrap().unwrap(), own);
    // Raced in select!: the cached path wins on its first poll.
    let raced = runtime.block_on(async {
        tokio::select! {
            biased;
            token = client.access_token() => token.ok(),
            () = std::future::pending() => None,
        }
    });
    assert_eq!(raced.as_ref(), Some(&own));
    // The slow path, started on one runtime and finished on another: the cache is emptied by a
    // logout, so the future has to ask the session (which answers that a login is needed).
    runtime.block_on(client.logout()).unwrap();
    let mut future = Box::pin(client.access_token());
    let first = runtime.block_on(async { futures_poll_once(&mut future.as_mut()).await });
    let result = match first {
        Poll::Ready(result) => result,
        Poll::Pending => other.block_on(future),
    };
    let error = result.unwrap_err();
    assert!(error.is_reauthorization_required(), "{error}");
    drop(other);
    runtime.block_on(emulator.shutdown());
}

/// Polls `future` once from inside a task (so it has the runtime's context).
async fn futures_poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(std::pin::Pin::new(&mut *future).poll(cx))).await
}

/// Reads the cached token when its thread's locals are destroyed, and reports what it got.
struct ReadAtThreadExit {
    client: MailUpClient,
    answer: mpsc::Sender<Option<AccessToken>>,
}

impl Drop for ReadAtThreadExit {
    fn drop(&mut self) {
        let _ = self.answer.send(self.client.cached_access_token());
    }
}

thread_local! {
    static AT_EXIT: std::cell::RefCell<Option<ReadAtThreadExit>> =
        const { std::cell::RefCell::new(None) };
}

/// The token a thread reads through `client` while its thread locals are destroyed, `then`
/// having run on that thread after the read at exit was armed (its `AT_EXIT` is registered
/// first, so it is destroyed after whatever `then` registers); checked against the cached one.
fn read_at_thread_exit(then: impl Fn(&MailUpClient, &AccessToken) + Sync) {
    let runtime = runtime();
    let emulator = runtime.block_on(Emulator::builder().start()).unwrap();
    let client = runtime.block_on(log_in(emulator_builder(&emulator)));
    let own = client.cached_access_token().unwrap();
    let (answer, answers) = mpsc::channel();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            AT_EXIT.with(|at_exit| {
                *at_exit.borrow_mut() = Some(ReadAtThreadExit {
                    client: client.clone(),
                    answer: answer.clone(),
                });
            });
            then(&client, &own);
        });
    });
    drop(answer);
    assert_eq!(answers.recv().unwrap().as_ref(), Some(&own));
    runtime.block_on(emulator.shutdown());
}

#[test]
fn a_read_from_a_thread_local_destructor_is_served() {
    read_at_thread_exit(|client, own| {
        assert_eq!(client.cached_access_token().as_ref(), Some(own));
    });
}

/// The case the guard above cannot see: the thread's *first* read through any client happens
/// in a thread local's destructor after `thread_local`'s id guard on that thread is gone
/// (another `ThreadLocal`, here a stand-in for tracing-subscriber's registry, registered it
/// after the reader's thread local, so it is destroyed first). Asking for the id panics
/// there; uncaught in a destructor, that aborted the whole test process. Now the read is
/// served a shared clone.
#[test]
fn a_first_read_after_the_thread_id_guard_is_gone_is_served() {
    read_at_thread_exit(|_, _| {
        // Registers `thread_local`'s id guard after `AT_EXIT`: destroyed before it.
        let other_library = thread_local::ThreadLocal::<u8>::new();
        assert_eq!(*other_library.get_or(|| 7), 7);
        // No read through the client on this thread before its exit.
    });
}
