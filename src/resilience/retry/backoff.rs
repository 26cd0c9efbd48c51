//! Exponential backoff with full jitter.
//!
//! The n-th retry waits a uniformly random time in
//! `[0, min(max_backoff, initial_backoff * 2^n)]` ("full jitter", from the
//! AWS architecture blog's comparison): clients that failed together do not
//! come back together, and the expected wait is half the capped exponential.
//!
//! The capped exponential sequence comes from the `backon` crate's
//! `ExponentialBuilder` (the `backoff` crate named in the design is
//! unmaintained: RUSTSEC-2025-0012, and pulls in the unmaintained `instant`).
//! backon's own jitter adds up to one more delay on top (`[d, 2d)`), which
//! is not full jitter and can exceed `max_backoff`, so the jitter is drawn
//! here with `fastrand` over backon's un-jittered caps.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// The delays of one request's retries. Built lazily, on its first retry.
#[derive(Debug)]
pub struct Backoff {
    caps: ExponentialBackoff,
    max: Duration,
    rng: fastrand::Rng,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Self::with_rng(initial, max, fastrand::Rng::new())
    }

    /// Deterministic draws, for tests.
    pub fn with_seed(initial: Duration, max: Duration, seed: u64) -> Backoff {
        Self::with_rng(initial, max, fastrand::Rng::with_seed(seed))
    }

    fn with_rng(initial: Duration, max: Duration, rng: fastrand::Rng) -> Backoff {
        let max = max.max(initial);
        let caps = ExponentialBuilder::new()
            .with_min_delay(initial)
            .with_max_delay(max)
            .with_factor(2.0)
            .without_max_times()
            .build();
        Backoff { caps, max, rng }
    }

    /// The upper bound of the next delay: `min(max, initial * 2^n)`.
    pub fn next_cap(&mut self) -> Duration {
        self.caps.next().unwrap_or(self.max).min(self.max)
    }

    /// The next delay: uniform in `[0, next_cap()]`.
    pub fn next_delay(&mut self) -> Duration {
        let cap = self.next_cap();
        cap.mul_f64(self.rng.f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn close(a: Duration, b: Duration) -> bool {
        a.abs_diff(b) < Duration::from_micros(100)
    }

    #[test]
    fn caps_double_up_to_max() {
        let mut b = Backoff::new(ms(100), ms(2_000));
        let caps: Vec<Duration> = (0..8).map(|_| b.next_cap()).collect();
        let want = [100, 200, 400, 800, 1_600, 2_000, 2_000, 2_000].map(ms);
        for (got, want) in caps.iter().zip(want) {
            assert!(close(*got, want), "{caps:?}");
        }
    }

    #[test]
    fn full_jitter_stays_within_zero_and_the_cap() {
        let mut lowest = Duration::MAX;
        let mut highest = Duration::ZERO;
        for seed in 0..2_000 {
            let mut b = Backoff::with_seed(ms(100), ms(2_000), seed);
            for cap in [100, 200, 400, 800, 1_600, 2_000, 2_000].map(ms) {
                let d = b.next_delay();
                assert!(d <= cap + Duration::from_micros(100), "{d:?} > {cap:?}");
                if cap == ms(2_000) {
                    lowest = lowest.min(d);
                    highest = highest.max(d);
                }
            }
        }
        // Full jitter: the draws cover the whole range, down to near zero.
        assert!(lowest < ms(20), "lowest {lowest:?}");
        assert!(highest > ms(1_980), "highest {highest:?}");
    }

    #[test]
    fn max_below_initial_is_lifted() {
        let mut b = Backoff::new(ms(500), ms(100));
        assert!(close(b.next_cap(), ms(500)));
        assert!(close(b.next_cap(), ms(500)));
    }
}
