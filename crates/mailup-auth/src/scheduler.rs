//! One background scheduler for any number of clients: a timer queue holding each client's next
//! due time, one task that sleeps until the earliest, and a bound on how many refreshes run at
//! once.
//!
//! A client reports its next due time after every token operation
//! ([`MailUpClient::report_due`]); nothing is polled, so a client with nothing due costs
//! nothing (no wake-up, no store read). `MailUpClient::spawn_background_refresh` is the same
//! scheduler with one client; [`MailUpAccounts`](crate::MailUpAccounts) shares one among all
//! its accounts.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use mailup_auth_core::UnixTime;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::MailUpClient;

/// The longest pause after a failed background refresh (it doubles from one second).
const MAX_FAILURE_PAUSE: Duration = Duration::from_secs(60);

/// Figures about a scheduler's work so far, for monitoring and for the benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SchedulerStats {
    /// Times the scheduler's task woke up to look at the queue.
    pub wakeups: u64,
    /// Background refresh jobs run (each may or may not have sent a refresh).
    pub jobs: u64,
    /// Jobs that failed (an error or a panic); the account is retried later.
    pub failures: u64,
    /// Accounts with a due time right now.
    pub scheduled: usize,
}

/// Finds the client of a profile, if it is still around (an evicted or dropped client is not
/// refreshed in the background: it reloads on its next use).
type Resolve = Box<dyn Fn(&str) -> Option<MailUpClient> + Send + Sync>;
/// Whether whoever owns the scheduler still exists; the task ends when not.
type Alive = Box<dyn Fn() -> bool + Send + Sync>;

#[derive(Default)]
struct Queue {
    by_due: BTreeMap<(UnixTime, u64), String>,
    by_profile: HashMap<String, (UnixTime, u64)>,
    /// Consecutive background failures per profile, for the pause before the next try.
    failures: HashMap<String, u32>,
    /// Profiles whose background job is running: the job sets their next due time when it
    /// ends (what the client reports meanwhile would start it again at once after a failure).
    running: HashSet<String>,
    next_seq: u64,
}

/// See the [module docs](self).
pub(crate) struct Scheduler {
    queue: Mutex<Queue>,
    wake: Notify,
    clock: Arc<dyn Clock>,
    permits: Arc<Semaphore>,
    resolve: Resolve,
    alive: Alive,
    wakeups: AtomicU64,
    jobs: AtomicU64,
    failures: AtomicU64,
}

impl Scheduler {
    /// A scheduler running at most `concurrency` refreshes at once.
    pub(crate) fn new(
        clock: Arc<dyn Clock>,
        concurrency: usize,
        resolve: Resolve,
        alive: Alive,
    ) -> Arc<Self> {
        Arc::new(Self {
            queue: Mutex::new(Queue::default()),
            wake: Notify::new(),
            clock,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            resolve,
            alive,
            wakeups: AtomicU64::new(0),
            jobs: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        })
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        // Each critical section is a few map operations: a poisoned queue is still consistent.
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sets (or clears, with `None`) a profile's next due time.
    pub(crate) fn schedule(&self, profile: &str, due: Option<UnixTime>) {
        let (before, after) = {
            let mut queue = self.queue();
            if queue.running.contains(profile) {
                return;
            }
            let before = queue.by_due.keys().next().map(|(at, _)| *at);
            if let Some(old) = queue.by_profile.remove(profile) {
                queue.by_due.remove(&old);
            }
            if let Some(due) = due {
                let seq = queue.next_seq;
                queue.next_seq += 1;
                queue.by_due.insert((due, seq), profile.to_owned());
                queue.by_profile.insert(profile.to_owned(), (due, seq));
            }
            (before, queue.by_due.keys().next().map(|(at, _)| *at))
        };
        // The task sleeps until the earliest entry: tell it only when that changed (earlier,
        // later or gone), so it never wakes for nothing.
        if before != after {
            self.wake.notify_one();
        }
    }

    /// Forgets a profile (its client went away) and lets the task look again.
    pub(crate) fn unschedule(&self, profile: &str) {
        {
            let mut queue = self.queue();
            if let Some(old) = queue.by_profile.remove(profile) {
                queue.by_due.remove(&old);
            }
            queue.failures.remove(profile);
        }
        self.wake.notify_one();
    }

    /// The figures so far.
    pub(crate) fn stats(&self) -> SchedulerStats {
        SchedulerStats {
            wakeups: self.wakeups.load(Ordering::Relaxed),
            jobs: self.jobs.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            scheduled: self.queue().by_profile.len(),
        }
    }

    /// The profiles due at `now`, earliest first, taken off the queue.
    fn take_due(&self, now: UnixTime) -> Vec<String> {
        let mut queue = self.queue();
        let mut due = Vec::new();
        while let Some(entry) = queue.by_due.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let profile = entry.remove();
            queue.by_profile.remove(&profile);
            queue.running.insert(profile.clone());
            due.push(profile);
        }
        due
    }

    /// Starts the refresh of every profile due now, in due order, at most `concurrency` at a
    /// time (this waits for a free slot before starting the next). Returns the jobs started.
    pub(crate) async fn start_due(self: &Arc<Self>) -> Vec<JoinHandle<()>> {
        let mut jobs = Vec::new();
        for profile in self.take_due(self.clock.now()) {
            let Some(client) = (self.resolve)(&profile) else {
                self.queue().running.remove(&profile);
                continue;
            };
            let Ok(permit) = self.permits.clone().acquire_owned().await else {
                self.queue().running.remove(&profile);
                break;
            };
            let scheduler = self.clone();
            jobs.push(tokio::spawn(async move {
                let _permit = permit;
                scheduler.run_job(client).await;
            }));
        }
        jobs
    }

    /// Refreshes every profile due now and waits for all of them.
    pub(crate) async fn run_due(self: &Arc<Self>) -> usize {
        let jobs = self.start_due().await;
        let started = jobs.len();
        for job in jobs {
            let _ = job.await;
        }
        started
    }

    /// One background refresh. Whatever happens (an error, a panic in a hook), the profile
    /// gets a next due time: the client's own, but after a failure never sooner than a pause
    /// that doubles with each consecutive failure.
    async fn run_job(&self, client: MailUpClient) {
        self.jobs.fetch_add(1, Ordering::Relaxed);
        let profile = client.profile().to_owned();
        // Its own task, so that a panic (a hook) is caught here and not in the scheduler.
        let worker = client.clone();
        let outcome = tokio::spawn(async move { worker.refresh_ahead().await }).await;
        let failed = match outcome {
            Ok(Ok(())) => false,
            Ok(Err(error)) => {
                tracing::warn!(profile = %profile, %error, "background refresh failed");
                !error.is_reauthorization_required()
            }
            Err(join_error) => {
                tracing::error!(profile = %profile, panicked = join_error.is_panic(), "background refresh task failed");
                true
            }
        };
        let due = client.next_background_due();
        self.queue().running.remove(&profile);
        if !failed {
            self.queue().failures.remove(&profile);
            self.schedule(&profile, due);
            return;
        }
        self.failures.fetch_add(1, Ordering::Relaxed);
        let pause = {
            let mut queue = self.queue();
            let failures = queue.failures.entry(profile.clone()).or_insert(0);
            *failures = failures.saturating_add(1);
            (Duration::from_secs(1) * 2u32.saturating_pow((*failures - 1).min(6)))
                .min(MAX_FAILURE_PAUSE)
        };
        let not_before = self.clock.now().saturating_add(pause);
        self.schedule(
            &profile,
            Some(due.map_or(not_before, |due| due.max(not_before))),
        );
    }

    /// The task: sleep until the earliest due time (or until told the queue changed), start
    /// what is due, repeat; end when the owner is gone.
    pub(crate) fn spawn(self: &Arc<Self>) -> JoinHandle<()> {
        let scheduler = self.clone();
        tokio::spawn(async move {
            loop {
                if !(scheduler.alive)() {
                    break;
                }
                let next = scheduler.queue().by_due.keys().next().map(|(at, _)| *at);
                match next {
                    None => scheduler.wake.notified().await,
                    Some(due) => {
                        let wait = due.duration_since(scheduler.clock.now());
                        if !wait.is_zero() {
                            tokio::select! {
                                () = tokio::time::sleep(wait) => {}
                                () = scheduler.wake.notified() => continue,
                            }
                        }
                        scheduler.wakeups.fetch_add(1, Ordering::Relaxed);
                        // Started jobs run on their own; the loop goes back to the queue.
                        drop(scheduler.start_due().await);
                    }
                }
            }
        })
    }
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}
