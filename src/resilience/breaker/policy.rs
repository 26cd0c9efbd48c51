//! When a closed breaker trips: the failure-accrual policy.
//!
//! Two rules, either one opens the circuit (failsafe's
//! `success_rate_over_time_window(..).or_else(consecutive_failures(..))`,
//! with the rate kept as plain counts):
//! - the failure rate over the last `window` reaches `failure_rate_percent`,
//!   once the window holds at least `minimum_calls` calls;
//! - `consecutive_failures` failures in a row (a dead factory trips this at
//!   once, long before the rate has enough calls at low traffic).
//!
//! Plain counts rather than failsafe's moving average: the operator's
//! `/status` shows the very numbers the decision used, and a burst of
//! failures inside one millisecond counts as many failures (failsafe's
//! average ignores all but the first observation per millisecond).

use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::config::BreakerConfig;
use crate::resilience::window::RollingWindow;

const CALLS: usize = 0;
const FAILURES: usize = 1;

/// More buckets than this and the window's resolution drops below a second
/// (windows are whole seconds; this bounds memory for very long windows).
const MAX_BUCKETS: u64 = 600;

/// Why a closed breaker opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TripReason {
    FailureRate,
    ConsecutiveFailures,
}

/// Counts over the current window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WindowCounts {
    pub calls: u64,
    pub failures: u64,
}

impl WindowCounts {
    /// Failure rate in percent; 0 without calls.
    pub fn failure_rate_percent(self) -> f64 {
        if self.calls == 0 {
            0.0
        } else {
            self.failures as f64 * 100.0 / self.calls as f64
        }
    }
}

/// The failure-accrual policy of a closed breaker.
#[derive(Debug)]
pub struct TripPolicy {
    rate_percent: u64,
    minimum_calls: u64,
    consecutive_limit: u32,
    consecutive: u32,
    window: RollingWindow<2>,
}

impl TripPolicy {
    pub fn new(config: &BreakerConfig, now: Instant) -> Self {
        let window = config.window.max(Duration::from_secs(1));
        let buckets = window.as_secs().clamp(1, MAX_BUCKETS) as usize;
        Self {
            rate_percent: u64::from(config.failure_rate_percent.get()),
            minimum_calls: u64::from(config.minimum_calls.max(1)),
            consecutive_limit: config.consecutive_failures.max(1),
            consecutive: 0,
            window: RollingWindow::new(now, window, buckets),
        }
    }

    /// New thresholds from a reloaded config; the window and its counts,
    /// and the run of failures so far, are kept.
    pub fn reconfigure(&mut self, config: &BreakerConfig) {
        self.rate_percent = u64::from(config.failure_rate_percent.get());
        self.minimum_calls = u64::from(config.minimum_calls.max(1));
        self.consecutive_limit = config.consecutive_failures.max(1);
    }

    /// A call succeeded (the factory answered properly).
    pub fn on_success(&mut self, now: Instant) {
        self.consecutive = 0;
        self.window.add(now, CALLS, 1);
    }

    /// A call failed; `Some` when the circuit must open.
    pub fn on_failure(&mut self, now: Instant) -> Option<TripReason> {
        self.consecutive = self.consecutive.saturating_add(1);
        self.window.add(now, CALLS, 1);
        self.window.add(now, FAILURES, 1);
        if self.consecutive >= self.consecutive_limit {
            return Some(TripReason::ConsecutiveFailures);
        }
        let c = self.counts(now);
        // failures / calls >= rate / 100, in integers.
        (self.rate_percent > 0
            && c.calls >= self.minimum_calls
            && c.failures * 100 >= self.rate_percent * c.calls)
            .then_some(TripReason::FailureRate)
    }

    /// A fresh start (the circuit closed again).
    pub fn reset(&mut self, now: Instant) {
        self.consecutive = 0;
        self.window.reset(now);
    }

    pub fn counts(&mut self, now: Instant) -> WindowCounts {
        let [calls, failures] = self.window.sums(now);
        WindowCounts { calls, failures }
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Percent;

    fn config(rate: u8, minimum: u32, consecutive: u32) -> BreakerConfig {
        BreakerConfig {
            failure_rate_percent: Percent::new(rate).expect("valid percent"),
            minimum_calls: minimum,
            consecutive_failures: consecutive,
            window: Duration::from_secs(10),
            ..BreakerConfig::default()
        }
    }

    #[test]
    fn rate_trips_only_with_minimum_calls() {
        let t0 = Instant::now();
        let mut p = TripPolicy::new(&config(50, 10, 100), t0);
        // Alternate: 50% failures, but fewer than 10 calls until the 10th.
        for i in 0..9 {
            if i % 2 == 0 {
                assert_eq!(p.on_failure(t0), None, "call {i}");
            } else {
                p.on_success(t0);
            }
        }
        assert_eq!(
            p.counts(t0),
            WindowCounts {
                calls: 9,
                failures: 5
            }
        );
        // 10th call, 6/10 failures >= 50%.
        assert_eq!(p.on_failure(t0), Some(TripReason::FailureRate));
    }

    #[test]
    fn rate_below_threshold_does_not_trip() {
        let t0 = Instant::now();
        let mut p = TripPolicy::new(&config(50, 4, 100), t0);
        for _ in 0..6 {
            p.on_success(t0);
        }
        for _ in 0..5 {
            assert_eq!(p.on_failure(t0), None);
        }
        // 5/11 < 50%; the 6th failure makes 6/12 = 50%: trips.
        assert_eq!(p.on_failure(t0), Some(TripReason::FailureRate));
    }

    #[test]
    fn old_calls_leave_the_window() {
        let t0 = Instant::now();
        let mut p = TripPolicy::new(&config(50, 4, 100), t0);
        for _ in 0..3 {
            assert_eq!(p.on_failure(t0), None);
        }
        // 11s later the three failures are gone: a single failure is 1/1 of
        // a window with too few calls.
        let later = t0 + Duration::from_secs(11);
        assert_eq!(p.on_failure(later), None);
        assert_eq!(
            p.counts(later),
            WindowCounts {
                calls: 1,
                failures: 1
            }
        );
    }

    #[test]
    fn consecutive_failures_trip_and_successes_reset_them() {
        let t0 = Instant::now();
        let mut p = TripPolicy::new(&config(100, 1_000, 3), t0);
        assert_eq!(p.on_failure(t0), None);
        assert_eq!(p.on_failure(t0), None);
        p.on_success(t0);
        assert_eq!(p.consecutive_failures(), 0);
        assert_eq!(p.on_failure(t0), None);
        assert_eq!(p.on_failure(t0), None);
        assert_eq!(p.on_failure(t0), Some(TripReason::ConsecutiveFailures));
    }

    #[test]
    fn reset_starts_over() {
        let t0 = Instant::now();
        let mut p = TripPolicy::new(&config(50, 2, 3), t0);
        assert_eq!(p.on_failure(t0), None);
        p.reset(t0);
        assert_eq!(p.counts(t0), WindowCounts::default());
        assert_eq!(p.consecutive_failures(), 0);
        assert_eq!(p.counts(t0).failure_rate_percent(), 0.0);
    }
}
