//! Each thread's own copy of the published access token, so that readers on different cores
//! do not all write one shared reference count on every read.
//!
//! An [`AccessToken`]'s clones share one reference-counted buffer: handing out clones of the
//! one published token from two cores at once makes both write the same cache line on every
//! read (and on every drop of what they got), which kept two threads at 2–3× the one-thread
//! time. Here each thread that reads holds a copy with a buffer of its own and hands out
//! clones of that: a read writes only lines its own thread uses.
//!
//! What holds:
//! - A copy is made only from the token published in the client's cache (after it was saved:
//!   persist before publish is unchanged) and is handed out only while **that publication**
//!   is still the cache's: every publication has a number of its own (never reused), every
//!   read loads the cache and compares it with the copy's. A new token, a logout, a rejection
//!   or the 401 path's compare-and-swap replaces or empties the cache, so every thread's copy
//!   is unusable at once.
//! - The expiry check is the caller's, on the publication's `until`, before a copy is used.
//! - Copies are secrets: each is a zeroizing buffer, wiped when the last of its clones is
//!   dropped. A thread's copy is replaced (and so wiped, once the clones it handed out are
//!   gone) the next time that thread reads after a change, and every copy is dropped with
//!   the client. At most one copy per thread that has read through the client exists; a
//!   thread that never reads again keeps its (unusable) copy until the client is dropped
//!   (docs/security.md).
//! - A read made while the thread's locals are being destroyed (from another thread local's
//!   `Drop`) is served a shared clone, without the thread's copy: `thread_local`'s own
//!   per-thread id may already be gone then, and asking for it would panic, which in a thread
//!   local's destructor aborts the process. [`EXIT_GUARD`] tells: it is registered right after
//!   the thread's first copy (so after that id), and thread locals are destroyed in the
//!   reverse order of their registration. A thread whose *first* read through any client
//!   happens in such a destructor, after `thread_local`'s id guard on that thread was
//!   destroyed (another library's `ThreadLocal` registered it after the reader's own thread
//!   local; tracing-subscriber's registry uses one), cannot be told from a first read in a
//!   running thread: that read's panic is caught (the panic hook still prints it once) and
//!   the read is served a shared clone. Built with `panic = "abort"`, that case still aborts.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicU64, Ordering};

use mailup_auth_core::AccessToken;
use thread_local::ThreadLocal;

use super::CachedToken;

/// Every thread's copy of the published token (see the module docs).
pub(super) struct ThreadCopies {
    slots: ThreadLocal<Box<Slot>>,
    /// The last publication number handed out by [`next_publication`](Self::next_publication).
    publications: AtomicU64,
}

/// One thread's copy, on cache lines of its own: its borrow flag is written on every read, and
/// a neighbour's slot on the same line would bring the sharing back. Boxed, so that the
/// `ThreadLocal`'s table stays small (one client per account, many accounts).
#[repr(align(128))]
#[derive(Default)]
struct Slot(RefCell<Option<ThreadCopy>>);

struct ThreadCopy {
    /// The publication copied ([`CachedToken::publication`]).
    publication: u64,
    /// This thread's own copy of its token (a buffer of its own).
    token: AccessToken,
}

impl ThreadCopies {
    pub(super) fn new() -> Self {
        Self {
            slots: ThreadLocal::new(),
            publications: AtomicU64::new(0),
        }
    }

    /// A number for a new publication of the cache, never handed out before.
    pub(super) fn next_publication(&self) -> u64 {
        // Only uniqueness matters: the cache itself orders what readers see.
        self.publications.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// A clone of the calling thread's copy of `published`'s token, made now (replacing the
    /// thread's copy of an earlier publication) if the thread has none of this one.
    pub(super) fn token(&self, published: &CachedToken) -> AccessToken {
        match THREAD_STATE.with(Cell::get) {
            ThreadState::Reading => self.copy(published),
            ThreadState::New => {
                // A first read from a thread local's destructor, after `thread_local`'s id
                // guard on this thread was destroyed, panics asking for the id; in a
                // destructor that panic would abort the process. Caught here (the only place
                // a thread can meet that state unannounced), it is a shared clone instead.
                let copied =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.copy(published)));
                let Ok(token) = copied else {
                    THREAD_STATE.with(|state| state.set(ThreadState::Exiting));
                    return published.token.clone();
                };
                // After the copy: `thread_local`'s id guard is registered by now, so this
                // guard is destroyed before it.
                EXIT_GUARD.with(|_| ());
                THREAD_STATE.with(|state| state.set(ThreadState::Reading));
                token
            }
            ThreadState::Exiting => published.token.clone(),
        }
    }

    fn copy(&self, published: &CachedToken) -> AccessToken {
        let mut copy = self.slots.get_or(Box::default).0.borrow_mut();
        match &*copy {
            Some(copy) if copy.publication == published.publication => copy.token.clone(),
            _ => {
                let token = AccessToken::new(published.token.secret());
                *copy = Some(ThreadCopy {
                    publication: published.publication,
                    token: token.clone(),
                });
                token
            }
        }
    }
}

/// Where the calling thread stands (see the module docs' last point).
#[derive(Clone, Copy)]
enum ThreadState {
    /// It has not read through any client yet.
    New,
    /// It has a copy, and its [`EXIT_GUARD`] is registered after `thread_local`'s id guard.
    Reading,
    /// Its thread locals are being destroyed: its copies are not touched any more.
    Exiting,
}

/// Sets [`THREAD_STATE`] to [`ThreadState::Exiting`] when the thread's locals are destroyed.
struct ExitGuard;

impl Drop for ExitGuard {
    fn drop(&mut self) {
        // `THREAD_STATE` has no destructor: it stays readable while the others are destroyed.
        THREAD_STATE.with(|state| state.set(ThreadState::Exiting));
    }
}

thread_local! {
    static THREAD_STATE: Cell<ThreadState> = const { Cell::new(ThreadState::New) };
    static EXIT_GUARD: ExitGuard = const { ExitGuard };
}

#[cfg(test)]
mod tests {
    use mailup_auth_core::UnixTime;

    use super::*;

    fn published(secret: &str, publication: u64) -> CachedToken {
        CachedToken {
            token: AccessToken::new(secret),
            until: UnixTime::from_secs(u64::MAX / 1000),
            publication,
        }
    }

    /// Where a token's bytes are: clones of one token share them, copies do not.
    fn buffer(token: &AccessToken) -> *const u8 {
        token.secret().as_ptr()
    }

    #[test]
    fn each_thread_hands_out_clones_of_a_copy_of_its_own() {
        let copies = ThreadCopies::new();
        let cached = published("at-1", 1);
        let first = copies.token(&cached);
        let again = copies.token(&cached);
        assert_eq!(first, cached.token);
        assert_ne!(buffer(&first), buffer(&cached.token), "a copy, not a clone");
        assert_eq!(buffer(&again), buffer(&first), "the thread's copy, cloned");
        let elsewhere =
            std::thread::scope(|scope| scope.spawn(|| copies.token(&cached)).join().unwrap());
        assert_eq!(elsewhere, cached.token);
        assert_ne!(
            buffer(&elsewhere),
            buffer(&first),
            "each thread has its own"
        );
        assert_ne!(buffer(&elsewhere), buffer(&cached.token));
    }

    #[test]
    fn a_copy_of_an_earlier_publication_is_never_handed_out() {
        let copies = ThreadCopies::new();
        let held = copies.token(&published("at-1", 1));
        // The same value published again (e.g. adopted back from the store) is copied again.
        let again = copies.token(&published("at-1", 2));
        assert_ne!(buffer(&again), buffer(&held));
        assert_eq!(copies.token(&published("at-2", 3)).secret(), "at-2");
        // What a caller already holds stays usable; it is wiped when the caller drops it.
        assert_eq!(held.secret(), "at-1");
    }

    #[test]
    fn ten_thousand_short_lived_threads_leave_few_copies() {
        // A thread's slot outlives it, but `thread_local` hands its id to the next thread:
        // copies are bounded by the threads alive at once, not by the threads ever started.
        let mut copies = ThreadCopies::new();
        let cached = published("at-1", 1);
        for _ in 0..10_000 {
            std::thread::scope(|scope| {
                scope.spawn(|| assert_eq!(copies.token(&cached).secret(), "at-1"));
            });
        }
        let slots = copies.slots.iter_mut().count();
        // The test harness runs other tests' threads meanwhile: a loose bound, far below 10,000.
        assert!(slots <= 64, "{slots} copies for 10,000 threads");
        let later = published("at-2", 2);
        std::thread::scope(|scope| {
            scope.spawn(|| assert_eq!(copies.token(&later).secret(), "at-2"));
        });
    }
}
