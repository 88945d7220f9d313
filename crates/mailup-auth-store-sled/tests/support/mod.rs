//! What the sled store's hostile and context tests share: runtimes of each flavor, a minimal
//! executor with no tokio runtime, and a bound on a scenario that might hang.

#![allow(dead_code)] // Each test file uses its own part.

use std::future::Future;
use std::sync::{mpsc, Arc};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use tokio::runtime::{Builder, Runtime};

/// A multi-thread runtime with `workers` workers, I/O and time enabled.
pub(crate) fn multi_thread(workers: usize) -> Runtime {
    Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap()
}

/// A current-thread runtime, I/O and time enabled.
pub(crate) fn current_thread() -> Runtime {
    Builder::new_current_thread().enable_all().build().unwrap()
}

struct ThreadWaker(std::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// A minimal executor on the calling thread, with no tokio runtime of its own (what
/// `futures::executor::block_on` does).
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        std::thread::park();
    }
}

/// Runs `scenario` on its own thread; a hang past `hang` fails the test (a bound against a
/// deadlock, not a timed assertion), a panic fails it with the panic's message.
pub(crate) fn bounded(name: &str, hang: Duration, scenario: impl FnOnce() + Send + 'static) {
    let (done, finished) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            scenario();
            let _ = done.send(());
        })
        .unwrap();
    match finished.recv_timeout(hang) {
        Ok(()) => thread.join().unwrap(),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            std::panic::resume_unwind(thread.join().unwrap_err())
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{name} hung (deadlock?)"),
    }
}
