//! The breaker's state machine: pure, synchronous, time passed in.
//!
//! ```text
//!            trip (rate or consecutive)            open_for elapsed
//!   Closed ──────────────────────────────▶ Open ─────────────────▶ HalfOpen
//!     ▲  ▲                                  ▲                        │ │
//!     │  └──────── a probe succeeds ────────┼────────────────────────┘ │
//!     │                                     └──── a probe fails ───────┘
//!     └── operator close (from any state)      operator open: ForcedOpen (until close)
//! ```
//!
//! Shaped after failsafe's `StateMachine` (a policy decides *when* to trip,
//! the machine does the transitions, hooks report them), with what it lacks:
//! half-open admits at most `half_open_probes` calls at once, an operator can
//! hold it open, the state can be read, and time is an argument (tokio's
//! `Instant`), so tests need neither a clock nor a runtime.
//!
//! Every admitted call gets a [`Ticket`] stamped with the machine's epoch,
//! which moves on at each transition. A result that comes back under an old
//! epoch (a call admitted while closed, finishing after the circuit opened)
//! is ignored: it says nothing about the state the machine is in now.

use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::CircuitState;
use super::policy::{TripPolicy, TripReason, WindowCounts};
use crate::config::BreakerConfig;

/// How long a refused caller is told to wait while the probes are out.
const HALF_OPEN_RETRY_AFTER: Duration = Duration::from_secs(1);

/// What a finished call tells the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The factory answered properly (2xx/3xx, and 4xx: the caller's fault).
    Success,
    /// The factory failed the call.
    Failure,
    /// Nothing about the factory (the sidecar gave up first).
    Neutral,
}

/// Why the state changed (logged, and kept for `/status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    FailureRate,
    ConsecutiveFailures,
    OpenElapsed,
    ProbeSucceeded,
    ProbeFailed,
    OperatorOpen,
    OperatorClose,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::FailureRate => "failure_rate",
            Reason::ConsecutiveFailures => "consecutive_failures",
            Reason::OpenElapsed => "open_elapsed",
            Reason::ProbeSucceeded => "probe_succeeded",
            Reason::ProbeFailed => "probe_failed",
            Reason::OperatorOpen => "operator_open",
            Reason::OperatorClose => "operator_close",
        }
    }
}

impl From<TripReason> for Reason {
    fn from(r: TripReason) -> Self {
        match r {
            TripReason::FailureRate => Reason::FailureRate,
            TripReason::ConsecutiveFailures => Reason::ConsecutiveFailures,
        }
    }
}

/// A state change, for the caller to log and count once the lock is released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: CircuitState,
    pub to: CircuitState,
    pub reason: Reason,
    /// Window counts when it happened (what made a closed circuit open).
    pub counts: WindowCounts,
}

/// Permission to make one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    epoch: u64,
    probe: bool,
}

impl Ticket {
    pub fn is_probe(self) -> bool {
        self.probe
    }
}

/// The machine refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub retry_after: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Closed,
    Open {
        until: Instant,
    },
    HalfOpen {
        in_flight: u32,
    },
    /// Held open by the operator until they close it.
    ForcedOpen,
}

/// An operator action, as `/status` records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OverrideAction {
    Open,
    Close,
}

/// The machine's settings, from `[circuit_breaker]`.
#[derive(Debug, Clone, Copy)]
struct Settings {
    open_for: Duration,
    probes: u32,
}

/// The state machine. Callers serialize access (one lock around it).
#[derive(Debug)]
pub struct Machine {
    settings: Settings,
    mode: Mode,
    since: Instant,
    epoch: u64,
    policy: TripPolicy,
    last_reason: Option<Reason>,
    last_override: Option<(OverrideAction, Instant)>,
}

impl Machine {
    pub fn new(config: &BreakerConfig, now: Instant) -> Self {
        Self {
            settings: Settings {
                open_for: config.open_for,
                probes: config.half_open_probes.max(1),
            },
            mode: Mode::Closed,
            since: now,
            epoch: 0,
            policy: TripPolicy::new(config, now),
            last_reason: None,
            last_override: None,
        }
    }

    /// Takes a reloaded `[circuit_breaker]`: thresholds, `open_for` and the
    /// probe count apply from now on; the state, its deadline, the window's
    /// counts and the run of failures are kept (`window` itself is fixed at
    /// start). An open circuit keeps the `open_for` it was opened with.
    pub fn reconfigure(&mut self, config: &BreakerConfig) {
        self.settings = Settings {
            open_for: config.open_for,
            probes: config.half_open_probes.max(1),
        };
        self.policy.reconfigure(config);
    }

    /// Asks to make a call now. Moves an open circuit whose time is up to
    /// half-open (the transition is returned with the answer).
    pub fn admit(&mut self, now: Instant) -> (Result<Ticket, Refusal>, Option<Transition>) {
        let transition = self.tick(now);
        let answer = match &mut self.mode {
            Mode::Closed => Ok(Ticket {
                epoch: self.epoch,
                probe: false,
            }),
            Mode::HalfOpen { in_flight } if *in_flight < self.settings.probes => {
                *in_flight += 1;
                Ok(Ticket {
                    epoch: self.epoch,
                    probe: true,
                })
            }
            Mode::HalfOpen { .. } => Err(Refusal {
                retry_after: HALF_OPEN_RETRY_AFTER.min(self.settings.open_for),
            }),
            Mode::Open { until } => Err(Refusal {
                retry_after: until.saturating_duration_since(now),
            }),
            Mode::ForcedOpen => Err(Refusal {
                retry_after: self.settings.open_for,
            }),
        };
        (answer, transition)
    }

    /// Records how an admitted call ended.
    pub fn record(&mut self, ticket: Ticket, verdict: Verdict, now: Instant) -> Option<Transition> {
        if ticket.epoch != self.epoch {
            return None;
        }
        match (self.mode, ticket.probe) {
            (Mode::Closed, false) => match verdict {
                Verdict::Success => {
                    self.policy.on_success(now);
                    None
                }
                Verdict::Failure => {
                    let reason = self.policy.on_failure(now)?;
                    Some(self.open(now, reason.into()))
                }
                Verdict::Neutral => None,
            },
            (Mode::HalfOpen { in_flight }, true) => {
                self.mode = Mode::HalfOpen {
                    in_flight: in_flight.saturating_sub(1),
                };
                match verdict {
                    Verdict::Success => Some(self.close(now, Reason::ProbeSucceeded)),
                    Verdict::Failure => Some(self.open(now, Reason::ProbeFailed)),
                    Verdict::Neutral => None,
                }
            }
            // Same epoch always means same mode and kind: nothing else to do.
            _ => None,
        }
    }

    /// A call ended without a result (its future was dropped): frees its
    /// probe slot.
    pub fn release(&mut self, ticket: Ticket) {
        if ticket.probe
            && ticket.epoch == self.epoch
            && let Mode::HalfOpen { in_flight } = &mut self.mode
        {
            *in_flight = in_flight.saturating_sub(1);
        }
    }

    /// Operator: hold the circuit open until [`Machine::force_close`].
    pub fn force_open(&mut self, now: Instant) -> Option<Transition> {
        self.last_override = Some((OverrideAction::Open, now));
        if self.mode == Mode::ForcedOpen {
            return None;
        }
        Some(self.enter(Mode::ForcedOpen, now, Reason::OperatorOpen))
    }

    /// Operator: close now with a fresh window, back to automatic.
    pub fn force_close(&mut self, now: Instant) -> Option<Transition> {
        self.last_override = Some((OverrideAction::Close, now));
        if self.mode == Mode::Closed {
            // Still start afresh: the operator says the factory is fine.
            self.policy.reset(now);
            return None;
        }
        Some(self.close(now, Reason::OperatorClose))
    }

    /// Moves an open circuit whose `open_for` is over to half-open.
    pub fn tick(&mut self, now: Instant) -> Option<Transition> {
        match self.mode {
            Mode::Open { until } if now >= until => {
                Some(self.enter(Mode::HalfOpen { in_flight: 0 }, now, Reason::OpenElapsed))
            }
            _ => None,
        }
    }

    pub fn state(&self) -> CircuitState {
        mode_state(self.mode)
    }

    /// Whether [`Machine::admit`] would let a call through now (after
    /// [`Machine::tick`]), without taking a probe slot.
    pub fn would_admit(&self) -> bool {
        match self.mode {
            Mode::Closed => true,
            Mode::HalfOpen { in_flight } => in_flight < self.settings.probes,
            Mode::Open { .. } | Mode::ForcedOpen => false,
        }
    }

    pub fn is_forced_open(&self) -> bool {
        self.mode == Mode::ForcedOpen
    }

    /// When the current state began.
    pub fn since(&self) -> Instant {
        self.since
    }

    /// Time until an open circuit goes half-open (`None` unless open on its own).
    pub fn open_until(&self) -> Option<Instant> {
        match self.mode {
            Mode::Open { until } => Some(until),
            _ => None,
        }
    }

    pub fn probes_in_flight(&self) -> u32 {
        match self.mode {
            Mode::HalfOpen { in_flight } => in_flight,
            _ => 0,
        }
    }

    pub fn counts(&mut self, now: Instant) -> WindowCounts {
        self.policy.counts(now)
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.policy.consecutive_failures()
    }

    pub fn last_reason(&self) -> Option<Reason> {
        self.last_reason
    }

    pub fn last_override(&self) -> Option<(OverrideAction, Instant)> {
        self.last_override
    }

    fn open(&mut self, now: Instant, reason: Reason) -> Transition {
        let until = crate::resilience::deadline::later(now, self.settings.open_for);
        self.enter(Mode::Open { until }, now, reason)
    }

    fn close(&mut self, now: Instant, reason: Reason) -> Transition {
        let t = self.enter(Mode::Closed, now, reason);
        self.policy.reset(now);
        t
    }

    fn enter(&mut self, mode: Mode, now: Instant, reason: Reason) -> Transition {
        let from = self.state();
        let counts = self.policy.counts(now);
        self.mode = mode;
        self.since = now;
        self.epoch = self.epoch.wrapping_add(1);
        self.last_reason = Some(reason);
        Transition {
            from,
            to: self.state(),
            reason,
            counts,
        }
    }
}

fn mode_state(mode: Mode) -> CircuitState {
    match mode {
        Mode::Closed => CircuitState::Closed,
        Mode::Open { .. } | Mode::ForcedOpen => CircuitState::Open,
        Mode::HalfOpen { .. } => CircuitState::HalfOpen,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layer tests' config, tripping after three failures in a row.
    fn config() -> BreakerConfig {
        BreakerConfig {
            consecutive_failures: 3,
            ..super::super::tests::config()
        }
    }

    fn admit(m: &mut Machine, now: Instant) -> Ticket {
        m.admit(now).0.expect("admitted")
    }

    fn trip(m: &mut Machine, now: Instant) -> Transition {
        for _ in 0..2 {
            let t = admit(m, now);
            assert_eq!(m.record(t, Verdict::Failure, now), None);
        }
        let t = admit(m, now);
        m.record(t, Verdict::Failure, now).expect("opens")
    }

    #[test]
    fn opens_on_consecutive_failures_and_rejects_with_retry_after() {
        let t0 = Instant::now();
        let mut m = Machine::new(&config(), t0);
        let tr = trip(&mut m, t0);
        assert_eq!(
            (tr.from, tr.to, tr.reason),
            (
                CircuitState::Closed,
                CircuitState::Open,
                Reason::ConsecutiveFailures
            )
        );
        assert_eq!(
            tr.counts,
            WindowCounts {
                calls: 3,
                failures: 3
            }
        );
        let later = t0 + Duration::from_secs(2);
        let (answer, transition) = m.admit(later);
        assert_eq!(
            answer,
            Err(Refusal {
                retry_after: Duration::from_secs(3)
            })
        );
        assert_eq!(transition, None);
    }

    #[test]
    fn half_open_admits_the_probe_limit_then_closes_on_success() {
        let t0 = Instant::now();
        let mut m = Machine::new(&config(), t0);
        trip(&mut m, t0);
        let t5 = t0 + Duration::from_secs(5);
        let (probe, tr) = m.admit(t5);
        let probe = probe.expect("probe admitted");
        assert!(probe.is_probe());
        assert_eq!(tr.map(|t| t.to), Some(CircuitState::HalfOpen));
        // A second call while the probe is out: refused.
        assert!(m.admit(t5).0.is_err());
        assert_eq!(m.probes_in_flight(), 1);
        let tr = m.record(probe, Verdict::Success, t5).expect("closes");
        assert_eq!(
            (tr.from, tr.to, tr.reason),
            (
                CircuitState::HalfOpen,
                CircuitState::Closed,
                Reason::ProbeSucceeded
            )
        );
        // Closed with a fresh window.
        assert_eq!(m.counts(t5), WindowCounts::default());
        assert!(!admit(&mut m, t5).is_probe());
    }

    #[test]
    fn probe_failure_reopens_for_another_open_for() {
        let t0 = Instant::now();
        let mut m = Machine::new(&config(), t0);
        trip(&mut m, t0);
        let t6 = t0 + Duration::from_secs(6);
        let probe = admit(&mut m, t6);
        let tr = m.record(probe, Verdict::Failure, t6).expect("reopens");
        assert_eq!(
            (tr.to, tr.reason),
            (CircuitState::Open, Reason::ProbeFailed)
        );
        assert_eq!(m.open_until(), Some(t6 + Duration::from_secs(5)));
        assert!(m.admit(t6 + Duration::from_secs(4)).0.is_err());
        assert!(admit(&mut m, t6 + Duration::from_secs(5)).is_probe());
    }

    #[test]
    fn a_dropped_probe_frees_its_slot_and_neutral_results_change_nothing() {
        let t0 = Instant::now();
        let mut m = Machine::new(&config(), t0);
        trip(&mut m, t0);
        let t5 = t0 + Duration::from_secs(5);
        let probe = admit(&mut m, t5);
        m.release(probe);
        let probe = admit(&mut m, t5);
        assert_eq!(m.record(probe, Verdict::Neutral, t5), None);
        assert_eq!(m.state(), CircuitState::HalfOpen);
        assert!(admit(&mut m, t5).is_probe());
    }

    #[test]
    fn several_probes_when_configured() {
        let t0 = Instant::now();
        let mut m = Machine::new(
            &BreakerConfig {
                half_open_probes: 2,
                ..config()
            },
            t0,
        );
        trip(&mut m, t0);
        let t5 = t0 + Duration::from_secs(5);
        let a = admit(&mut m, t5);
        let b = admit(&mut m, t5);
        assert!(m.admit(t5).0.is_err());
        // The first failure reopens; the other probe's late success is stale.
        assert!(m.record(a, Verdict::Failure, t5).is_some());
        assert_eq!(m.record(b, Verdict::Success, t5), None);
        assert_eq!(m.state(), CircuitState::Open);
    }

    #[test]
    fn late_results_from_before_a_transition_are_ignored() {
        let t0 = Instant::now();
        let mut m = Machine::new(&config(), t0);
        let slow = admit(&mut m, t0);
        trip(&mut m, t0);
        let t5 = t0 + Duration::from_secs(5);
        let _probe = admit(&mut m, t5);
        // The closed-era call succeeds now: it must not close the circuit.
        assert_eq!(m.record(slow, Verdict::Success, t5), None);
        assert_eq!(m.state(), CircuitState::HalfOpen);
        m.release(slow);
        assert_eq!(m.probes_in_flight(), 1);
    }

    #[test]
    fn opens_on_failure_rate() {
        let t0 = Instant::now();
        let mut m = Machine::new(
            &BreakerConfig {
                consecutive_failures: 100,
                minimum_calls: 4,
                ..config()
            },
            t0,
        );
        for v in [Verdict::Success, Verdict::Failure, Verdict::Success] {
            let t = admit(&mut m, t0);
            assert_eq!(m.record(t, v, t0), None);
        }
        let t = admit(&mut m, t0);
        let tr = m.record(t, Verdict::Failure, t0).expect("2/4 failed");
        assert_eq!(tr.reason, Reason::FailureRate);
        assert_eq!(
            tr.counts,
            WindowCounts {
                calls: 4,
                failures: 2
            }
        );
    }

    #[test]
    fn operator_open_holds_until_close() {
        let t0 = Instant::now();
        let mut m = Machine::new(&config(), t0);
        let tr = m.force_open(t0).expect("opens");
        assert_eq!(
            (tr.to, tr.reason),
            (CircuitState::Open, Reason::OperatorOpen)
        );
        assert_eq!(m.force_open(t0), None, "already held open");
        let much_later = t0 + Duration::from_secs(3_600);
        assert_eq!(
            m.admit(much_later).0,
            Err(Refusal {
                retry_after: Duration::from_secs(5)
            })
        );
        assert!(m.is_forced_open());
        let tr = m.force_close(much_later).expect("closes");
        assert_eq!(
            (tr.from, tr.to, tr.reason),
            (
                CircuitState::Open,
                CircuitState::Closed,
                Reason::OperatorClose
            )
        );
        assert_eq!(m.last_override(), Some((OverrideAction::Close, much_later)));
        // Automatic again: failures trip it as usual.
        assert_eq!(trip(&mut m, much_later).reason, Reason::ConsecutiveFailures);
    }

    #[test]
    fn operator_close_of_a_closed_circuit_clears_its_counts() {
        let t0 = Instant::now();
        let mut m = Machine::new(&config(), t0);
        let t = admit(&mut m, t0);
        m.record(t, Verdict::Failure, t0);
        assert_eq!(m.force_close(t0), None);
        assert_eq!(m.consecutive_failures(), 0);
        assert_eq!(m.counts(t0), WindowCounts::default());
    }
}
