//! A rolling time window of counters, cut into buckets.
//!
//! The breaker needs "calls and failures over the last `window`" and the
//! retry budget "requests and retries over the last `budget_window`". Both
//! want the same thing: sums over a sliding window that cost O(1) to update
//! and read, and no allocation after start. Time comes in as an argument
//! (tokio's [`Instant`], so paused-clock tests drive it), which keeps this a
//! plain data structure: the caller owns the lock.
//!
//! Granularity: the window is split into `buckets` equal slices; the sums
//! cover the current (partial) slice and the `buckets - 1` before it, so an
//! event is forgotten between `window - slice` and `window` after it happened.

use std::time::Duration;

use tokio::time::Instant;

/// `K` counters summed over a sliding window.
#[derive(Debug)]
pub struct RollingWindow<const K: usize> {
    origin: Instant,
    bucket_ms: u64,
    /// Index (in slices since `origin`) of the newest bucket.
    head: u64,
    buckets: Box<[[u64; K]]>,
    /// Sum of every bucket: kept up to date so reads need no loop.
    total: [u64; K],
}

impl<const K: usize> RollingWindow<K> {
    /// A window of length `window` cut into `buckets` slices (at least one,
    /// each at least a millisecond long).
    pub fn new(now: Instant, window: Duration, buckets: usize) -> Self {
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
        let buckets = buckets.clamp(1, usize::try_from(window_ms).unwrap_or(usize::MAX));
        let bucket_ms = (window_ms / buckets as u64).max(1);
        Self {
            origin: now,
            bucket_ms,
            head: 0,
            buckets: vec![[0; K]; buckets].into_boxed_slice(),
            total: [0; K],
        }
    }

    /// Adds `n` to counter `k` at time `now`.
    pub fn add(&mut self, now: Instant, k: usize, n: u64) {
        self.advance(now);
        let len = self.buckets.len() as u64;
        let idx = (self.head % len) as usize;
        if let (Some(bucket), Some(total)) = (
            self.buckets.get_mut(idx).and_then(|b| b.get_mut(k)),
            self.total.get_mut(k),
        ) {
            *bucket = bucket.saturating_add(n);
            *total = total.saturating_add(n);
        }
    }

    /// The counters summed over the window ending at `now`.
    pub fn sums(&mut self, now: Instant) -> [u64; K] {
        self.advance(now);
        self.total
    }

    /// Forgets everything (the breaker starts a fresh window when it closes).
    pub fn reset(&mut self, now: Instant) {
        self.buckets.iter_mut().for_each(|b| *b = [0; K]);
        self.total = [0; K];
        self.origin = now;
        self.head = 0;
    }

    /// Drops the buckets that slid out of the window by `now`.
    fn advance(&mut self, now: Instant) {
        let elapsed = u64::try_from(now.saturating_duration_since(self.origin).as_millis())
            .unwrap_or(u64::MAX);
        let idx = elapsed / self.bucket_ms;
        if idx <= self.head {
            return;
        }
        let len = self.buckets.len() as u64;
        let steps = (idx - self.head).min(len);
        for s in 1..=steps {
            let b = ((self.head + s) % len) as usize;
            if let Some(bucket) = self.buckets.get_mut(b) {
                for (t, v) in self.total.iter_mut().zip(bucket.iter_mut()) {
                    *t = t.saturating_sub(*v);
                    *v = 0;
                }
            }
        }
        self.head = idx;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn sums_slide_out_bucket_by_bucket() {
        let t0 = Instant::now();
        let mut w = RollingWindow::<2>::new(t0, Duration::from_secs(10), 10);
        w.add(t0, 0, 3);
        w.add(t0 + ms(500), 1, 1);
        w.add(t0 + ms(4_200), 0, 2);
        assert_eq!(w.sums(t0 + ms(4_300)), [5, 1]);
        // Bucket 0 (0..1s) is still inside at 9.9s, gone at 10s.
        assert_eq!(w.sums(t0 + ms(9_900)), [5, 1]);
        assert_eq!(w.sums(t0 + ms(10_000)), [2, 0]);
        assert_eq!(w.sums(t0 + ms(13_999)), [2, 0]);
        assert_eq!(w.sums(t0 + ms(14_000)), [0, 0]);
    }

    #[test]
    fn a_long_gap_clears_everything_once() {
        let t0 = Instant::now();
        let mut w = RollingWindow::<1>::new(t0, Duration::from_secs(2), 4);
        for i in 0..8 {
            w.add(t0 + ms(i * 250), 0, 1);
        }
        assert_eq!(w.sums(t0 + ms(1_999)), [8]);
        assert_eq!(w.sums(t0 + Duration::from_secs(3_600)), [0]);
        w.add(t0 + Duration::from_secs(3_600), 0, 1);
        assert_eq!(w.sums(t0 + Duration::from_secs(3_600)), [1]);
    }

    #[test]
    fn reset_forgets_and_restarts_the_clock() {
        let t0 = Instant::now();
        let mut w = RollingWindow::<2>::new(t0, Duration::from_secs(1), 1);
        w.add(t0, 0, 7);
        w.reset(t0 + ms(300));
        assert_eq!(w.sums(t0 + ms(300)), [0, 0]);
        w.add(t0 + ms(400), 1, 1);
        // One bucket starting at the reset: still there 999ms after it.
        assert_eq!(w.sums(t0 + ms(1_299)), [0, 1]);
        assert_eq!(w.sums(t0 + ms(1_300)), [0, 0]);
    }

    #[test]
    fn degenerate_sizes_do_not_panic() {
        let t0 = Instant::now();
        let mut w = RollingWindow::<1>::new(t0, Duration::ZERO, 0);
        w.add(t0, 0, 1);
        w.add(t0, 5, 1); // out-of-range counter: ignored
        assert_eq!(w.sums(t0), [1]);
    }
}
