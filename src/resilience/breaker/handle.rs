//! The shared breaker: one [`Machine`] behind a lock, plus what the rest of
//! the sidecar needs from it (logs, metrics, `/status`, operator overrides).
//!
//! The lock is a `parking_lot` mutex held for a few field updates, never
//! across an `.await`, and taken at most twice per try (admit, then record).
//! Logging and metrics happen after it is released: a transition is logged
//! once, by the call that caused it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use tokio::time::Instant;

use super::state::{Machine, OverrideAction, Reason, Ticket, Transition, Verdict};
use super::{CircuitOpen, CircuitState};
use crate::admin::{ActionAnswer, ActionFuture, AdminPart};
use crate::config::BreakerConfig;
use crate::resilience::classify::Outcome;
use crate::telemetry::metrics::Metrics;

/// The operator tried to override a breaker that `circuit_breaker.enabled`
/// turned off.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the circuit breaker is disabled (circuit_breaker.enabled = false)")]
pub struct BreakerDisabled;

/// The circuit breaker shared by every connection (and the admin endpoints).
#[derive(Debug)]
pub struct Breaker {
    /// `circuit_breaker.enabled`; a reload may flip it.
    enabled: AtomicBool,
    machine: Mutex<Machine>,
    metrics: Arc<Metrics>,
    /// For `/status` and log lines (never read per call).
    config: RwLock<BreakerConfig>,
    rejections: AtomicU64,
    on_close: CloseHook,
}

/// What runs when the circuit closes (orders parked on it are released).
#[derive(Default)]
struct CloseHook(OnceLock<Box<dyn Fn() + Send + Sync>>);

impl std::fmt::Debug for CloseHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "set"
        } else {
            "none"
        })
    }
}

impl Breaker {
    /// A closed breaker. With `enabled = false` every call passes and nothing
    /// is counted (for comparison runs).
    pub fn new(config: &BreakerConfig, metrics: Arc<Metrics>) -> Arc<Breaker> {
        metrics.circuit_state(CircuitState::Closed);
        Arc::new(Breaker {
            enabled: AtomicBool::new(config.enabled),
            machine: Mutex::new(Machine::new(config, Instant::now())),
            metrics,
            config: RwLock::new(config.clone()),
            rejections: AtomicU64::new(0),
            on_close: CloseHook::default(),
        })
    }

    /// Runs `hook` (without the breaker's lock) each time the circuit
    /// closes: a probe succeeded, or the operator closed it. Set once.
    pub fn on_close(&self, hook: impl Fn() + Send + Sync + 'static) {
        if self.on_close.0.set(Box::new(hook)).is_err() {
            tracing::debug!("the breaker's close hook was already set");
        }
    }

    /// Whether a try made now would be let through, without taking a
    /// half-open probe slot (a caller deciding before it calls the stack).
    pub fn would_admit(&self) -> bool {
        if !self.is_enabled() {
            return true;
        }
        let (admits, transition) = {
            let mut m = self.machine.lock();
            let t = m.tick(Instant::now());
            (m.would_admit(), t)
        };
        self.report(transition);
        admits
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Takes a reloaded `[circuit_breaker]`: the state, the window and its
    /// counts survive; thresholds, `open_for`, probes and `enabled` apply
    /// from now on (`window` is fixed at start: a change needs a restart).
    pub fn reconfigure(&self, config: &BreakerConfig) {
        self.machine.lock().reconfigure(config);
        *self.config.write() = config.clone();
        self.enabled.store(config.enabled, Ordering::Relaxed);
    }

    /// The current state (an open circuit whose time is up reads half-open).
    pub fn state(&self) -> CircuitState {
        let (state, transition) = {
            let mut m = self.machine.lock();
            let t = m.tick(Instant::now());
            (m.state(), t)
        };
        self.report(transition);
        state
    }

    /// Asks to make one call: a permit, or the rejection to answer with.
    pub fn admit(self: &Arc<Self>) -> Result<Permit, CircuitOpen> {
        if !self.is_enabled() {
            return Ok(Permit {
                breaker: None,
                ticket: None,
            });
        }
        let (answer, transition) = self.machine.lock().admit(Instant::now());
        self.report(transition);
        match answer {
            Ok(ticket) => Ok(Permit {
                breaker: Some(Arc::clone(self)),
                ticket: Some(ticket),
            }),
            Err(refusal) => {
                self.rejections.fetch_add(1, Ordering::Relaxed);
                self.metrics.circuit_rejection();
                Err(CircuitOpen {
                    retry_after: refusal.retry_after,
                })
            }
        }
    }

    /// Operator override: hold the circuit open until [`Breaker::force_close`].
    pub fn force_open(&self) -> Result<BreakerSnapshot, BreakerDisabled> {
        if !self.is_enabled() {
            return Err(BreakerDisabled);
        }
        let transition = self.machine.lock().force_open(Instant::now());
        if transition.is_none() {
            tracing::info!("operator open: the circuit was already held open");
        }
        self.report(transition);
        Ok(self.snapshot())
    }

    /// Operator override: close now, forget the window, resume automatic
    /// operation (failures can open it again).
    pub fn force_close(&self) -> Result<BreakerSnapshot, BreakerDisabled> {
        if !self.is_enabled() {
            return Err(BreakerDisabled);
        }
        let transition = self.machine.lock().force_close(Instant::now());
        if transition.is_none() {
            tracing::info!("operator close: the circuit was closed; its window starts afresh");
        }
        self.report(transition);
        Ok(self.snapshot())
    }

    /// What `/status` shows.
    pub fn snapshot(&self) -> BreakerSnapshot {
        let now = Instant::now();
        let wall = SystemTime::now();
        let config = self.config.read().clone();
        let (snap, transition) = {
            let mut m = self.machine.lock();
            let transition = m.tick(now);
            let counts = m.counts(now);
            let since = m.since();
            let snap = BreakerSnapshot {
                enabled: self.is_enabled(),
                state: m.state(),
                since: Stamp::of(since, now, wall),
                retry_after_seconds: m
                    .open_until()
                    .map(|until| until.saturating_duration_since(now).as_secs_f64()),
                reason: m.last_reason(),
                forced_open: m.is_forced_open(),
                last_override: m.last_override().map(|(action, at)| OverrideRecord {
                    action,
                    at: Stamp::of(at, now, wall),
                }),
                window: WindowSnapshot {
                    seconds: config.window.as_secs(),
                    calls: counts.calls,
                    failures: counts.failures,
                    failure_rate_percent: counts.failure_rate_percent(),
                    minimum_calls: config.minimum_calls,
                    open_at_failure_rate_percent: config.failure_rate_percent.get(),
                },
                consecutive_failures: m.consecutive_failures(),
                open_at_consecutive_failures: config.consecutive_failures,
                probes_in_flight: m.probes_in_flight(),
                half_open_probes: config.half_open_probes,
                open_for_seconds: config.open_for.as_secs_f64(),
                rejections_total: self.rejections.load(Ordering::Relaxed),
            };
            (snap, transition)
        };
        self.report(transition);
        snap
    }

    fn finish(&self, ticket: Ticket, outcome: Outcome) {
        let verdict = match outcome {
            // The factory answered: a 4xx is the caller's fault, not the
            // factory's, so it is a sign of life like any proper answer.
            Outcome::Success | Outcome::CallerError => Verdict::Success,
            Outcome::Failure(_) => Verdict::Failure,
            Outcome::Rejected | Outcome::Aborted | Outcome::Excused(_) => Verdict::Neutral,
        };
        let transition = self.machine.lock().record(ticket, verdict, Instant::now());
        self.report(transition);
    }

    fn release(&self, ticket: Ticket) {
        self.machine.lock().release(ticket);
    }

    /// Logs and counts a transition (called without the lock).
    fn report(&self, transition: Option<Transition>) {
        let Some(t) = transition else { return };
        self.metrics.circuit_transition(t.from, t.to);
        self.metrics.circuit_state(t.to);
        let (from, to, reason) = (t.from.as_str(), t.to.as_str(), t.reason.as_str());
        let (open_for, probes) = {
            let c = self.config.read();
            (c.open_for, c.half_open_probes)
        };
        match t.to {
            CircuitState::Open => tracing::warn!(
                from,
                to,
                reason,
                calls = t.counts.calls,
                failures = t.counts.failures,
                open_for = ?open_for,
                "circuit opened: failing fast"
            ),
            CircuitState::HalfOpen => tracing::info!(
                from,
                to,
                reason,
                probes,
                "circuit half-open: probing the factory"
            ),
            CircuitState::Closed => {
                tracing::info!(from, to, reason, "circuit closed");
                if let Some(hook) = self.on_close.0.get() {
                    hook();
                }
            }
        }
    }
}

/// Permission for one call; frees a half-open probe slot if dropped unused.
#[derive(Debug)]
pub struct Permit {
    breaker: Option<Arc<Breaker>>,
    ticket: Option<Ticket>,
}

impl Permit {
    /// Records how the call ended.
    pub fn finish(mut self, outcome: Outcome) {
        if let (Some(breaker), Some(ticket)) = (self.breaker.take(), self.ticket.take()) {
            breaker.finish(ticket, outcome);
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let (Some(breaker), Some(ticket)) = (&self.breaker, self.ticket.take())
            && ticket.is_probe()
        {
            breaker.release(ticket);
        }
    }
}

/// A moment, three ways: RFC 3339 for people, Unix milliseconds for
/// scripts, and seconds ago (which needs no clock agreement at all).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stamp {
    pub rfc3339: String,
    pub unix_ms: u64,
    pub seconds_ago: f64,
}

impl Stamp {
    /// `at` on the monotonic clock, placed on the wall clock `wall` = `now`.
    fn of(at: Instant, now: Instant, wall: SystemTime) -> Stamp {
        let ago = now.saturating_duration_since(at);
        let when = wall.checked_sub(ago).unwrap_or(UNIX_EPOCH);
        Stamp {
            rfc3339: humantime::format_rfc3339_millis(when).to_string(),
            unix_ms: u64::try_from(
                when.duration_since(UNIX_EPOCH)
                    .unwrap_or(Duration::ZERO)
                    .as_millis(),
            )
            .unwrap_or(u64::MAX),
            seconds_ago: ago.as_secs_f64(),
        }
    }
}

/// An operator override, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OverrideRecord {
    pub action: OverrideAction,
    pub at: Stamp,
}

/// Counts over the breaker's window.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WindowSnapshot {
    pub seconds: u64,
    pub calls: u64,
    pub failures: u64,
    pub failure_rate_percent: f64,
    pub minimum_calls: u32,
    pub open_at_failure_rate_percent: u8,
}

/// The breaker as `/status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BreakerSnapshot {
    pub enabled: bool,
    pub state: CircuitState,
    /// When the current state began.
    pub since: Stamp,
    /// Open on its own: time until it lets a probe through.
    pub retry_after_seconds: Option<f64>,
    /// Why it entered the current state.
    pub reason: Option<Reason>,
    /// Held open by the operator (until `POST /circuit/close`).
    pub forced_open: bool,
    pub last_override: Option<OverrideRecord>,
    pub window: WindowSnapshot,
    pub consecutive_failures: u32,
    pub open_at_consecutive_failures: u32,
    pub probes_in_flight: u32,
    pub half_open_probes: u32,
    pub open_for_seconds: f64,
    /// Calls refused since start.
    pub rejections_total: u64,
}

impl AdminPart for Breaker {
    fn name(&self) -> &'static str {
        "circuit"
    }

    fn status(&self) -> serde_json::Value {
        serde_json::to_value(self.snapshot()).unwrap_or(serde_json::Value::Null)
    }

    fn actions(&self) -> &'static [&'static str] {
        &["/circuit/open", "/circuit/close"]
    }

    fn action<'a>(&'a self, path: &'a str) -> ActionFuture<'a> {
        let result = match path {
            "/circuit/open" => Some(self.force_open()),
            "/circuit/close" => Some(self.force_close()),
            _ => None,
        };
        let answer = match result {
            Some(Ok(snap)) => ActionAnswer {
                status: http::StatusCode::OK,
                body: serde_json::to_value(snap).unwrap_or(serde_json::Value::Null),
            },
            Some(Err(e)) => ActionAnswer {
                status: http::StatusCode::CONFLICT,
                body: serde_json::json!({ "message": e.to_string() }),
            },
            None => ActionAnswer {
                status: http::StatusCode::NOT_FOUND,
                body: serde_json::json!({ "message": "unknown admin action" }),
            },
        };
        Box::pin(std::future::ready(answer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resilience::classify::FailureKind;

    fn breaker(config: BreakerConfig) -> Arc<Breaker> {
        Breaker::new(&config, Arc::new(Metrics::default()))
    }

    fn fast_config() -> BreakerConfig {
        BreakerConfig {
            consecutive_failures: 2,
            ..BreakerConfig::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn excused_failures_never_open_the_circuit() {
        let b = breaker(fast_config());
        for _ in 0..50 {
            b.admit()
                .expect("closed")
                .finish(Outcome::Excused(FailureKind::Status5xx));
        }
        let s = b.snapshot();
        assert_eq!(s.state, CircuitState::Closed);
        assert_eq!(
            s.window.calls, 0,
            "resolved chaos says nothing about the factory"
        );
        assert_eq!(s.consecutive_failures, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn snapshot_shows_state_since_and_counts() {
        let b = breaker(fast_config());
        b.admit().expect("closed").finish(Outcome::Success);
        b.admit()
            .expect("closed")
            .finish(Outcome::Failure(FailureKind::Status5xx));
        tokio::time::advance(Duration::from_secs(3)).await;
        let s = b.snapshot();
        assert_eq!(s.state, CircuitState::Closed);
        assert_eq!(s.window.calls, 2);
        assert_eq!(s.window.failures, 1);
        assert_eq!(s.window.failure_rate_percent, 50.0);
        assert_eq!(s.consecutive_failures, 1);
        assert_eq!(s.since.seconds_ago, 3.0);

        b.admit()
            .expect("closed")
            .finish(Outcome::Failure(FailureKind::Connect));
        let s = b.snapshot();
        assert_eq!(s.state, CircuitState::Open);
        assert_eq!(s.reason, Some(Reason::ConsecutiveFailures));
        assert_eq!(s.retry_after_seconds, Some(5.0));
        assert_eq!(s.rejections_total, 0);
        assert!(b.admit().is_err());
        assert_eq!(b.snapshot().rejections_total, 1);

        let json = serde_json::to_value(b.snapshot()).expect("serializes");
        assert_eq!(json["state"], "open");
        assert_eq!(json["window"]["calls"], 3);
        assert_eq!(json["reason"], "consecutive_failures");
        assert!(json["since"]["rfc3339"].as_str().is_some());
        assert!(json["since"]["unixMs"].as_u64() > Some(1_600_000_000_000));

        // The half-open move shows in /status without waiting for traffic.
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(b.snapshot().state, CircuitState::HalfOpen);
    }

    #[tokio::test(start_paused = true)]
    async fn overrides_are_recorded() {
        let b = breaker(fast_config());
        let s = b.force_open().expect("enabled");
        assert!(s.forced_open);
        assert_eq!(s.state, CircuitState::Open);
        assert_eq!(
            s.last_override.as_ref().map(|o| o.action),
            Some(OverrideAction::Open)
        );
        let rejected = b.admit().expect_err("held open");
        assert_eq!(rejected.retry_after, Duration::from_secs(5));
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(b.admit().is_err(), "still held open");

        let s = b.force_close().expect("enabled");
        assert!(!s.forced_open);
        assert_eq!(s.state, CircuitState::Closed);
        assert_eq!(s.reason, Some(Reason::OperatorClose));
        assert_eq!(
            s.last_override.map(|o| o.action),
            Some(OverrideAction::Close)
        );
        assert!(b.admit().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn closing_runs_the_hook_and_would_admit_takes_no_probe() {
        let b = breaker(BreakerConfig {
            consecutive_failures: 1,
            ..BreakerConfig::default()
        });
        let closes = Arc::new(AtomicU64::new(0));
        let seen = Arc::clone(&closes);
        b.on_close(move || {
            seen.fetch_add(1, Ordering::SeqCst);
        });
        assert!(b.would_admit());
        b.admit()
            .expect("closed")
            .finish(Outcome::Failure(FailureKind::Connect));
        assert!(!b.would_admit(), "open");
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(b.would_admit(), "half-open with a free probe slot");
        assert!(b.would_admit(), "asking took no slot");
        let probe = b.admit().expect("the probe");
        assert!(!b.would_admit(), "the only slot is taken");
        probe.finish(Outcome::Success);
        assert_eq!(closes.load(Ordering::SeqCst), 1);
        b.force_open().expect("enabled");
        b.force_close().expect("enabled");
        assert_eq!(closes.load(Ordering::SeqCst), 2, "an operator close too");
    }

    #[tokio::test]
    async fn admin_actions() {
        let b = breaker(fast_config());
        let answer = b.action("/circuit/open").await;
        assert_eq!(answer.status, http::StatusCode::OK);
        assert_eq!(answer.body["forcedOpen"], true);
        assert_eq!(b.status()["state"], "open");
        let answer = b.action("/circuit/close").await;
        assert_eq!(answer.body["state"], "closed");

        let off = breaker(BreakerConfig {
            enabled: false,
            ..fast_config()
        });
        assert_eq!(
            off.action("/circuit/open").await.status,
            http::StatusCode::CONFLICT
        );
    }

    #[tokio::test]
    async fn disabled_breaker_admits_everything() {
        let b = breaker(BreakerConfig {
            enabled: false,
            ..fast_config()
        });
        for _ in 0..10 {
            b.admit()
                .expect("disabled")
                .finish(Outcome::Failure(FailureKind::Connect));
        }
        assert_eq!(b.state(), CircuitState::Closed);
        assert_eq!(b.snapshot().window.calls, 0);
    }
}
