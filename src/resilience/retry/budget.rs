//! The retry budget: retries may add at most `budget_percent` of the recent
//! request rate, plus a small floor.
//!
//! Why a budget and not just `max_attempts`: when the factory fails every
//! call, per-request retry limits multiply the load on it by `max_attempts`
//! exactly when it can least take it (a retry storm). Linkerd and Finagle cap
//! retries as a share of traffic instead: each request deposits
//! `budget_percent` of a retry, each retry withdraws a whole one, over a
//! sliding `budget_window`. A 100% failing factory then sees about
//! `(1 + budget_percent/100)` times the offered load, while a blip at normal
//! traffic is still retried in full. The floor (`budget_min_per_second` times
//! the window) lets a quiet service retry its rare failures.
//!
//! Same algorithm as tower's `TpsBudget`, written out because `/status` needs
//! to show the balance and the refusals (tower's exposes neither), and to
//! count in exact integers (tower's rounds `1 / percent` down, so 30% would
//! allow 33%).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;
use tokio::time::Instant;

use crate::admin::AdminPart;
use crate::config::RetryConfig;
use crate::resilience::window::RollingWindow;

const REQUESTS: usize = 0;
const RETRIES: usize = 1;
/// Slices of the budget window (tower and linkerd use 10 as well).
const BUCKETS: usize = 10;

/// Retries allowed as a share of recent requests. Shared by every
/// connection; cheap to call (one short lock, no allocation).
#[derive(Debug)]
pub struct RetryBudget {
    /// `budget_percent` and `budget_min_per_second`: a reload may change
    /// them (the window and its counts are kept).
    percent: AtomicU64,
    min_per_second: AtomicU32,
    /// Retries the floor allows per window.
    reserve: AtomicU64,
    window: Duration,
    counts: Mutex<RollingWindow<2>>,
    requests_total: AtomicU64,
    retries_total: AtomicU64,
    refused_total: AtomicU64,
}

impl RetryBudget {
    pub fn new(config: &RetryConfig) -> Arc<RetryBudget> {
        Arc::new(Self::at(config, Instant::now()))
    }

    fn at(config: &RetryConfig, now: Instant) -> RetryBudget {
        let window = config.budget_window.max(Duration::from_secs(1));
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        RetryBudget {
            percent: AtomicU64::new(u64::from(config.budget_percent.get())),
            min_per_second: AtomicU32::new(config.budget_min_per_second),
            reserve: AtomicU64::new(
                u64::from(config.budget_min_per_second).saturating_mul(window_ms) / 1_000,
            ),
            window,
            counts: Mutex::new(RollingWindow::new(now, window, BUCKETS)),
            requests_total: AtomicU64::new(0),
            retries_total: AtomicU64::new(0),
            refused_total: AtomicU64::new(0),
        }
    }

    /// Takes a reloaded `[retry]`: `budget_percent` and
    /// `budget_min_per_second` apply from now on; the window's counts and
    /// totals are kept (`budget_window` is fixed at start).
    pub fn reconfigure(&self, config: &RetryConfig) {
        let window_ms = u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX);
        let relaxed = Ordering::Relaxed;
        self.percent
            .store(u64::from(config.budget_percent.get()), relaxed);
        self.min_per_second
            .store(config.budget_min_per_second, relaxed);
        self.reserve.store(
            u64::from(config.budget_min_per_second).saturating_mul(window_ms) / 1_000,
            relaxed,
        );
    }

    /// A request arrived (its first try): earns `budget_percent` of a retry.
    pub fn deposit(&self) {
        self.deposit_at(Instant::now());
    }

    /// Asks for one retry; `false` when the budget is spent.
    pub fn withdraw(&self) -> bool {
        self.withdraw_at(Instant::now())
    }

    pub(crate) fn deposit_at(&self, now: Instant) {
        self.counts.lock().add(now, REQUESTS, 1);
        self.requests_total.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn withdraw_at(&self, now: Instant) -> bool {
        let granted = {
            let mut counts = self.counts.lock();
            let [requests, retries] = counts.sums(now);
            let ok = self.available(requests, retries) > 0;
            if ok {
                counts.add(now, RETRIES, 1);
            }
            ok
        };
        let counter = if granted {
            &self.retries_total
        } else {
            &self.refused_total
        };
        counter.fetch_add(1, Ordering::Relaxed);
        granted
    }

    /// Whole retries left: `requests * percent / 100 + reserve - retries`.
    fn available(&self, requests: u64, retries: u64) -> u64 {
        let earned = requests.saturating_mul(self.percent.load(Ordering::Relaxed)) / 100;
        earned
            .saturating_add(self.reserve.load(Ordering::Relaxed))
            .saturating_sub(retries)
    }

    /// What `/status` shows.
    pub fn snapshot(&self) -> BudgetSnapshot {
        self.snapshot_at(Instant::now())
    }

    pub(crate) fn snapshot_at(&self, now: Instant) -> BudgetSnapshot {
        let [requests, retries] = self.counts.lock().sums(now);
        BudgetSnapshot {
            percent: self.percent.load(Ordering::Relaxed),
            min_per_second: self.min_per_second.load(Ordering::Relaxed),
            window_seconds: self.window.as_secs_f64(),
            requests_in_window: requests,
            retries_in_window: retries,
            available_retries: self.available(requests, retries),
            requests_total: self.requests_total.load(Ordering::Relaxed),
            retries_total: self.retries_total.load(Ordering::Relaxed),
            refused_total: self.refused_total.load(Ordering::Relaxed),
        }
    }
}

/// The retry budget as `/status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BudgetSnapshot {
    /// `budget_percent`: retries may add this share of requests.
    pub percent: u64,
    /// `budget_min_per_second`: the floor.
    pub min_per_second: u32,
    pub window_seconds: f64,
    /// Requests (deposits) and retries (withdrawals) in the current window.
    pub requests_in_window: u64,
    pub retries_in_window: u64,
    /// Retries that may start now.
    pub available_retries: u64,
    pub requests_total: u64,
    pub retries_total: u64,
    /// Retries the budget refused since start.
    pub refused_total: u64,
}

impl AdminPart for RetryBudget {
    fn name(&self) -> &'static str {
        "retryBudget"
    }

    fn status(&self) -> serde_json::Value {
        serde_json::to_value(self.snapshot()).unwrap_or(serde_json::Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Percent;

    fn config(percent: u8, min_per_second: u32) -> RetryConfig {
        RetryConfig {
            budget_percent: Percent::new(percent).expect("valid percent"),
            budget_min_per_second: min_per_second,
            budget_window: Duration::from_secs(10),
            ..RetryConfig::default()
        }
    }

    #[test]
    fn retries_are_a_share_of_requests() {
        let t0 = Instant::now();
        let b = RetryBudget::at(&config(20, 0), t0);
        let mut granted = 0;
        for _ in 0..1_000 {
            b.deposit_at(t0);
            // Every request wants two retries (max_attempts = 3).
            for _ in 0..2 {
                granted += u32::from(b.withdraw_at(t0));
            }
        }
        assert_eq!(granted, 200);
        let s = b.snapshot_at(t0);
        assert_eq!(
            (
                s.requests_in_window,
                s.retries_in_window,
                s.available_retries
            ),
            (1_000, 200, 0)
        );
        assert_eq!(s.refused_total, 1_800);
    }

    #[test]
    fn thirty_percent_is_thirty_percent() {
        let t0 = Instant::now();
        let b = RetryBudget::at(&config(30, 0), t0);
        for _ in 0..100 {
            b.deposit_at(t0);
        }
        let granted = (0..100).filter(|_| b.withdraw_at(t0)).count();
        assert_eq!(granted, 30);
    }

    #[test]
    fn the_floor_serves_a_quiet_service() {
        let t0 = Instant::now();
        let b = RetryBudget::at(&config(20, 1), t0);
        // One request, no earned retries yet: the floor (1/s x 10s) pays.
        b.deposit_at(t0);
        let granted = (0..20).filter(|_| b.withdraw_at(t0)).count();
        assert_eq!(granted, 10);
        // Ten seconds later the spent retries have left the window.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(b.snapshot_at(later).available_retries, 10);
        assert!(b.withdraw_at(later));
    }

    #[test]
    fn zero_percent_and_no_floor_means_no_retries() {
        let t0 = Instant::now();
        let b = RetryBudget::at(&config(0, 0), t0);
        b.deposit_at(t0);
        assert!(!b.withdraw_at(t0));
        let json = serde_json::to_value(b.snapshot_at(t0)).expect("serializes");
        assert_eq!(json["refusedTotal"], 1);
        assert_eq!(json["requestsInWindow"], 1);
    }
}
