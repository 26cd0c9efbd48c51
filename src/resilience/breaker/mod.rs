//! Circuit breaker: fail fast while the factory is down.
//!
//! When the factory fails most calls (or several in a row), sending it more
//! only makes every diner wait for the same 500. The breaker counts every try
//! (retries included, so a failing factory trips it fast), opens, answers at
//! once with [`CircuitOpen`] (error.rs makes it the 503 with `Retry-After`),
//! and after `open_for` lets `half_open_probes` calls through to see whether
//! the factory is back.
//!
//! - [`policy`]: when a closed circuit trips (failure rate over the window,
//!   or consecutive failures).
//! - [`state`]: the pure state machine (time passed in; tested without I/O).
//! - [`handle`]: the shared [`Breaker`]: lock, logs, metrics, `/status`
//!   snapshot, operator overrides.
//! - this module: the tower [`BreakerService`]; [`layer`] and [`future`].
//!
//! # Why not the failsafe crate's state machine
//! Its shape is kept (a failure policy decides when to trip, the state
//! machine does the transitions, hooks report them once), but its code could
//! not serve (failsafe 1.3.0, read from its source): its clock is
//! `std::time::Instant` behind a thread-local mock (`clock::freeze`), so
//! tokio's paused clock cannot drive it, and tests of the real layers would
//! need two clocks; its rate policy is a time-weighted moving average that
//! only trips once a full window has passed since start or the last close,
//! and that ignores every observation after the first in the same
//! millisecond; half-open admits every call, and any success closes it, even
//! a slow one admitted before the circuit opened; there is no state getter,
//! no way to hold it open, and no way to learn when it will half-open (for
//! `Retry-After`). The machine here ([`state`], [`policy`]) is about as long
//! as the glue those gaps would have needed, so the crate is not a
//! dependency.
//!
//! Which outcomes count is decided by [`crate::resilience::classify`]: a
//! failure (connect, timeout, 5xx, bad JWT) counts against the factory; a
//! 4xx is the caller's fault and counts as a sign of life; a try the sidecar
//! abandoned (its deadline) counts for nothing.

use std::task::{Context, Poll};
use std::time::Duration;

use http::Response;
use serde::Serialize;

use crate::boxed::BoxError;
use crate::proxy::Outgoing;
use crate::proxy::body::ProxyBody;

pub mod future;
pub mod handle;
pub mod layer;
pub mod policy;
pub mod state;

pub use future::ResponseFuture;
pub use handle::{Breaker, BreakerDisabled, BreakerSnapshot, Permit};
pub use layer::BreakerLayer;

/// The breaker refused a try: the factory was not asked.
#[derive(Debug, Clone, thiserror::Error)]
#[error("circuit open; retry after {retry_after:?}")]
pub struct CircuitOpen {
    /// Time until the breaker lets a probe through.
    pub retry_after: Duration,
}

/// Breaker state, as the `sidecar.circuit.state` gauge reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    Closed,
    HalfOpen,
    Open,
}

impl CircuitState {
    /// Every (from, to) the breaker can take: trip, half-open after
    /// `open_for`, a probe closing or reopening it, an operator's close of
    /// an open circuit (an operator's open starts from closed or half-open).
    pub const TRANSITIONS: [(CircuitState, CircuitState); 5] = [
        (CircuitState::Closed, CircuitState::Open),
        (CircuitState::Open, CircuitState::HalfOpen),
        (CircuitState::HalfOpen, CircuitState::Closed),
        (CircuitState::HalfOpen, CircuitState::Open),
        (CircuitState::Open, CircuitState::Closed),
    ];

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

/// Asks the [`Breaker`] before each try and tells it how the try ended.
#[derive(Debug, Clone)]
pub struct BreakerService<S> {
    inner: S,
    breaker: std::sync::Arc<Breaker>,
}

impl<S> BreakerService<S> {
    pub fn new(inner: S, breaker: std::sync::Arc<Breaker>) -> Self {
        Self { inner, breaker }
    }
}

impl<S> tower::Service<Outgoing> for BreakerService<S>
where
    S: tower::Service<Outgoing, Response = Response<ProxyBody>, Error = BoxError>,
{
    type Response = Response<ProxyBody>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Outgoing) -> Self::Future {
        match self.breaker.admit() {
            Ok(permit) => ResponseFuture::called(self.inner.call(req), permit),
            Err(open) => ResponseFuture::rejected(open),
        }
    }
}

#[cfg(test)]
mod tests;
