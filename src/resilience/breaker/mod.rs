//! Circuit breaker (skeleton: the state machine and layer land with the resilience issue).

use std::time::Duration;

/// The breaker refused a try: the factory was not asked.
#[derive(Debug, Clone, thiserror::Error)]
#[error("circuit open; retry after {retry_after:?}")]
pub struct CircuitOpen {
    /// Time until the breaker lets a probe through.
    pub retry_after: Duration,
}

/// Breaker state, as the `sidecar.circuit.state` gauge reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CircuitState {
    Closed,
    HalfOpen,
    Open,
}

impl CircuitState {
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::HalfOpen => "half_open",
            CircuitState::Open => "open",
        }
    }

    /// Gauge value: 0 closed, 1 half-open, 2 open.
    pub fn gauge(self) -> i64 {
        match self {
            CircuitState::Closed => 0,
            CircuitState::HalfOpen => 1,
            CircuitState::Open => 2,
        }
    }
}
