//! A timer that is always due within a second, so that the timers every
//! order arms do not wake the runtime's driver.
//!
//! Why: tokio (1.54) wakes its I/O driver, a `write(2)` to an eventfd,
//! whenever a timer is registered with a deadline earlier than the moment
//! the driver last planned to wake at, even on a current-thread runtime
//! that is busy polling tasks and so cannot be parked at all
//! (tokio-rs/tokio#5207). Every order arms timers seconds ahead (the
//! attempt and request deadlines); with nothing else due sooner, each one
//! paid that `write`, and the next `epoll_wait` then returned at once for
//! the eventfd and had to be made again: 0.85 of each per order at one
//! connection, a fifth of the order's system calls (benches/README.md,
//! "Syscalls per order"). While a timer is due within [`PERIOD`], the
//! driver's planned wake-up is never further away than that, and only a
//! timer shorter than it (no default is) still wakes the driver. The cost:
//! one timer firing per second.
//!
//! With OTLP export on, its periodic reader already did this by accident
//! (every `export_interval`); the anchor makes it independent of config.

use std::time::Duration;

use tokio::task::JoinHandle;

/// How far ahead the anchor's timer is due, at most.
pub const PERIOD: Duration = Duration::from_secs(1);

/// Keeps a timer due within [`PERIOD`] on the current runtime until dropped.
#[derive(Debug)]
pub struct Anchor(JoinHandle<()>);

impl Anchor {
    /// Starts the anchor on the current runtime.
    pub fn spawn() -> Anchor {
        Anchor(tokio::spawn(async {
            loop {
                tokio::time::sleep(PERIOD).await;
            }
        }))
    }
}

impl Drop for Anchor {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::task::Poll;

    use super::*;

    /// `write(2)` calls (of any kind) made by this thread so far.
    #[cfg(target_os = "linux")]
    fn writes_by_this_thread() -> u64 {
        let io = std::fs::read_to_string("/proc/thread-self/io").expect("/proc/thread-self/io");
        io.lines()
            .find_map(|l| l.strip_prefix("syscw:"))
            .and_then(|n| n.trim().parse().ok())
            .expect("a syscw line")
    }

    /// Arms a timer five seconds ahead, as an order does, once the driver
    /// has planned its next wake-up; returns the writes that cost.
    #[cfg(target_os = "linux")]
    async fn writes_to_arm_an_order_timer() -> u64 {
        // The runtime parks (for no time) and plans its next wake-up.
        tokio::task::yield_now().await;
        let before = writes_by_this_thread();
        let mut sleep = std::pin::pin!(tokio::time::sleep(Duration::from_secs(5)));
        std::future::poll_fn(|cx| {
            assert!(sleep.as_mut().poll(cx).is_pending());
            Poll::Ready(())
        })
        .await;
        writes_by_this_thread() - before
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn order_timers_do_not_wake_the_driver_while_anchored() {
        assert_eq!(
            writes_to_arm_an_order_timer().await,
            1,
            "without the anchor, tokio writes to its eventfd for a timer due first"
        );
        let _anchor = Anchor::spawn();
        assert_eq!(writes_to_arm_an_order_timer().await, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn runs_until_dropped() {
        let anchor = Anchor::spawn();
        tokio::time::sleep(PERIOD * 3).await;
        assert!(!anchor.0.is_finished(), "the anchor keeps ticking");
        let handle = anchor.0.abort_handle();
        drop(anchor);
        tokio::task::yield_now().await;
        assert!(handle.is_finished(), "dropping the anchor stops its task");
    }
}
