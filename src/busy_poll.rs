//! Busy polling: after a request comes or goes, the one-worker runtime
//! keeps asking the kernel for new events for a short window instead of
//! going to sleep in `epoll_wait`.
//!
//! Why: an idle CPU halts, and on a virtual machine waking it again (an
//! interrupt from the CPU that made the event, the hypervisor resuming the
//! halted vCPU) takes tens of microseconds, twice per proxied order: when
//! the client's request comes and when the factory's answer does. Polling
//! for a little longer than the gap between the two keeps the CPU awake
//! while an order is under way, the way Linux's `busy_poll` sockets and
//! Seastar's idle polling do. The cost is CPU: up to one window of polling
//! after the last request or answer, so a sidecar idle between orders
//! spends at most `window` per event, and one loaded steadily enough that
//! the gaps are shorter than the window keeps its CPU busy.
//!
//! How: tokio's current-thread runtime calls its `on_thread_park` hook when
//! it has no task left to run; when the hook wakes a task, tokio checks the
//! kernel for events without blocking (`epoll_wait` with a zero timeout)
//! and runs what became ready (tokio 1.54, `current_thread::Context::park`).
//! [`before_park`] is that hook and [`Spinner`] the task it wakes while the
//! window is open. Requests and answers [`mark`] activity (the outermost
//! layer, `telemetry::layers::ServerTelemetry`, sees both), which reopens
//! it. With several workers (the work-stealing runtime) the hook is not
//! installed: its workers already look for work before parking.
//!
//! The window is `server.busy_poll` (50 µs unless set, `0s` off). The time
//! spent polling with nothing to do is counted apart
//! (`sidecar_busy_poll_idle_seconds_total`), so that CPU bought only latency
//! can be told from CPU spent on orders.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::times;

/// The window in nanoseconds (`server.busy_poll`); 0 turns polling off.
static WINDOW_NS: AtomicU64 = AtomicU64::new(0);

/// Time spent polling with nothing to do, nanoseconds, over the process's
/// life (`sidecar_busy_poll_idle_seconds_total`): CPU that bought only latency.
static IDLE_NS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Requests and answers seen on this thread; compared, never read as a count.
    static ACTIVITY: Cell<u64> = const { Cell::new(0) };
    static STATE: RefCell<State> = const {
        RefCell::new(State { seen: 0, until: None, polled: None, waker: None })
    };
}

struct State {
    /// `ACTIVITY` when the hook last looked.
    seen: u64,
    /// End of the open window.
    until: Option<Instant>,
    /// When the hook last kept the runtime polling with nothing new.
    polled: Option<Instant>,
    /// The [`Spinner`] task's waker.
    waker: Option<Waker>,
}

/// Sets the window (when the proxy's listener starts: `[server]` keys need
/// a restart); zero turns polling off.
pub fn set_window(window: Duration) {
    WINDOW_NS.store(times::nanos(window), Ordering::Relaxed);
}

/// Seconds spent polling with nothing to do so far.
pub fn idle_seconds() -> f64 {
    Duration::from_nanos(IDLE_NS.load(Ordering::Relaxed)).as_secs_f64()
}

/// Notes that a request came or an answer went: the window opens again.
#[inline]
pub fn mark() {
    ACTIVITY.with(|a| a.set(a.get().wrapping_add(1)));
}

/// The runtime's `on_thread_park` hook: while the window is open, wakes
/// the spinner so that tokio polls the kernel instead of blocking.
pub fn before_park() {
    let window = WINDOW_NS.load(Ordering::Relaxed);
    if window == 0 {
        return;
    }
    let activity = ACTIVITY.with(Cell::get);
    STATE.with(|state| {
        let Ok(mut s) = state.try_borrow_mut() else {
            return;
        };
        let now = Instant::now();
        if activity != s.seen {
            s.seen = activity;
            s.until = now.checked_add(Duration::from_nanos(window));
            s.polled = None;
        } else if let Some(polled) = s.polled {
            let idle = times::nanos(now.saturating_duration_since(polled));
            IDLE_NS.fetch_add(idle, Ordering::Relaxed);
        }
        match s.until {
            Some(until) if now < until => {
                s.polled = Some(now);
                if let Some(waker) = &s.waker {
                    waker.wake_by_ref();
                }
            }
            _ => {
                s.until = None;
                s.polled = None;
            }
        }
    });
}

/// The task [`before_park`] wakes (being woken is all it is for), on the
/// current runtime until dropped.
#[derive(Debug)]
pub struct Spinner(JoinHandle<()>);

impl Spinner {
    /// Starts the spinner on the current runtime, whose `on_thread_park`
    /// hook should be [`before_park`] (without it the task only waits).
    pub fn spawn() -> Spinner {
        Spinner(tokio::spawn(std::future::poll_fn(|cx| {
            STATE.with(|state| {
                if let Ok(mut s) = state.try_borrow_mut()
                    && !s.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker()))
                {
                    s.waker = Some(cx.waker().clone());
                }
            });
            Poll::Pending
        })))
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.0.abort();
        let _ = STATE.try_with(|state| {
            if let Ok(mut s) = state.try_borrow_mut() {
                s.waker = None;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    /// Runs `phase` on a one-worker runtime with the hook and a spinner,
    /// as the sidecar runs; returns the runtime's park count before and
    /// after it.
    fn on_runtime<F, Fut>(phase: F) -> (u64, u64)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()>,
    {
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .on_thread_park(before_park)
                .build()
                .expect("runtime");
            rt.block_on(async {
                let _spinner = Spinner::spawn();
                tokio::task::yield_now().await;
                let metrics = tokio::runtime::Handle::current().metrics();
                let before = metrics.worker_park_count(0);
                phase().await;
                (before, metrics.worker_park_count(0))
            })
        })
        .join()
        .expect("runtime thread")
    }

    /// A request, then `quiet` with nothing to do: the runtime must park.
    fn assert_parks_after_a_request(quiet: Duration, case: &str) {
        let (before, after) = on_runtime(move || async move {
            mark();
            tokio::time::sleep(quiet).await;
        });
        assert!(
            after > before,
            "{case}: the runtime parked ({before} -> {after})"
        );
    }

    /// One test, as the window and the idle count are process-wide.
    #[test]
    fn polls_while_the_window_is_open_then_sleeps() {
        // Off: an order's request, then nothing; the runtime sleeps.
        set_window(Duration::ZERO);
        let idle = IDLE_NS.load(Ordering::Relaxed);
        assert_parks_after_a_request(Duration::from_millis(5), "off");
        assert_eq!(
            IDLE_NS.load(Ordering::Relaxed),
            idle,
            "off: no idle polling"
        );

        // Open (a window longer than the test): after a request the runtime
        // polls without ever blocking until the test thread, having seen the
        // idle time grow, sends the answer.
        set_window(Duration::from_secs(3600));
        let (tx, rx) = mpsc::channel::<tokio::sync::oneshot::Sender<()>>();
        let watcher = std::thread::spawn(move || {
            let answer = rx.recv().expect("the runtime's sender");
            let start = IDLE_NS.load(Ordering::Relaxed);
            let deadline = Instant::now() + Duration::from_secs(30);
            while IDLE_NS.load(Ordering::Relaxed) == start && Instant::now() < deadline {
                std::thread::yield_now();
            }
            let grew = IDLE_NS.load(Ordering::Relaxed) > start;
            let _ = answer.send(());
            grew
        });
        let (before, after) = on_runtime(move || async move {
            let (answer, answered) = tokio::sync::oneshot::channel();
            tx.send(answer).expect("watcher");
            mark();
            let _ = answered.await;
        });
        assert!(watcher.join().expect("watcher"), "idle polling was counted");
        assert_eq!(before, after, "open: the runtime never blocked");
        assert!(idle_seconds() > 0.0);

        // A short window ends: the runtime blocks again once it has passed.
        set_window(Duration::from_micros(200));
        assert_parks_after_a_request(Duration::from_millis(20), "closed");
        set_window(Duration::ZERO);
    }
}
