//! Polling a connection again at once when it wakes itself, instead of letting the runtime
//! reschedule it.
//!
//! hyper's HTTP/1 server hands a request's body to the handler through a channel inside the
//! connection's own task. The handler asking for the body, and the body arriving, each wake
//! that task while it is being polled. Tokio treats a wake during a poll as a yield: the task
//! goes to the back of the run queue and a sleeping worker thread is woken to steal it. On the
//! edge that was about two wake-ups of the other worker per request (`perf record -e
//! sched:sched_wakeup` at concurrency 1), and a request that hopped between threads. Polling
//! again here does what the yield would have done, without waking anyone.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures::task::AtomicWaker;

const IDLE: u8 = 0;
const POLLING: u8 = 1;
const WOKEN_WHILE_POLLING: u8 = 2;

/// Polls again at most this many times in one poll. A future that wakes itself on every poll
/// (a cooperative yield, tokio's exhausted budget) then still yields to the runtime.
const MAX_REPOLLS: usize = 4;

/// `inner`, polled again in the same poll when it wakes itself while being polled.
pub struct RepollOnSelfWake<F> {
    inner: Pin<Box<F>>,
    shared: Arc<Shared>,
    waker: Waker,
}

struct Shared {
    state: AtomicU8,
    /// The task that polls us, woken by wakes that come between polls.
    task: AtomicWaker,
}

impl<F: Future> RepollOnSelfWake<F> {
    /// Wraps `inner`.
    pub fn new(inner: F) -> Self {
        let shared = Arc::new(Shared {
            state: AtomicU8::new(IDLE),
            task: AtomicWaker::new(),
        });
        RepollOnSelfWake {
            inner: Box::pin(inner),
            waker: Waker::from(shared.clone()),
            shared,
        }
    }
}

impl<F: Future> Future for RepollOnSelfWake<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        this.shared.task.register(cx.waker());
        let mut inner_cx = Context::from_waker(&this.waker);
        for _ in 0..=MAX_REPOLLS {
            this.shared.state.store(POLLING, Ordering::SeqCst);
            if let Poll::Ready(output) = this.inner.as_mut().poll(&mut inner_cx) {
                this.shared.state.store(IDLE, Ordering::SeqCst);
                return Poll::Ready(output);
            }
            let not_woken = this.shared.state.compare_exchange(
                POLLING,
                IDLE,
                Ordering::SeqCst,
                Ordering::SeqCst,
            );
            if not_woken.is_ok() {
                return Poll::Pending;
            }
        }
        this.shared.state.store(IDLE, Ordering::SeqCst);
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl Wake for Shared {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // During a poll the wake is noted for the poller; between polls it goes to the task.
        // A poll that starts just after `IDLE` was seen only makes this wake a spare one.
        let noted = self.state.compare_exchange(
            POLLING,
            WOKEN_WHILE_POLLING,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
        if noted == Err(IDLE) {
            self.task.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts how often the task that polls it is woken.
    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn poll_once<F: Future>(future: &mut RepollOnSelfWake<F>) -> (Poll<F::Output>, usize) {
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(counter.clone());
        let poll = Pin::new(future).poll(&mut Context::from_waker(&waker));
        (poll, counter.0.load(Ordering::SeqCst))
    }

    #[test]
    fn a_future_that_wakes_itself_is_polled_again_without_waking_the_task() {
        let mut polls = 0;
        let mut future = RepollOnSelfWake::new(std::future::poll_fn(move |cx| {
            polls += 1;
            if polls < 3 {
                cx.waker().wake_by_ref();
                Poll::Pending
            } else {
                Poll::Ready(polls)
            }
        }));
        assert_eq!(poll_once(&mut future), (Poll::Ready(3), 0));
    }

    #[test]
    fn a_future_that_always_wakes_itself_still_yields() {
        let mut future = RepollOnSelfWake::new(std::future::poll_fn(|cx| {
            cx.waker().wake_by_ref();
            Poll::<()>::Pending
        }));
        assert_eq!(poll_once(&mut future), (Poll::Pending, 1));
    }

    #[test]
    fn a_wake_after_the_poll_reaches_the_task() {
        let stored: Arc<std::sync::Mutex<Option<Waker>>> = Arc::default();
        let keep = stored.clone();
        let mut future = RepollOnSelfWake::new(std::future::poll_fn(move |cx| {
            *keep.lock().unwrap() = Some(cx.waker().clone());
            Poll::<()>::Pending
        }));
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(counter.clone());
        assert!(
            Pin::new(&mut future)
                .poll(&mut Context::from_waker(&waker))
                .is_pending()
        );
        assert_eq!(counter.0.load(Ordering::SeqCst), 0);
        let later = stored.lock().unwrap().take().unwrap();
        std::thread::spawn(move || later.wake()).join().unwrap();
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
    }
}
