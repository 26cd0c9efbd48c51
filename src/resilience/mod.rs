//! Resilience layers: what keeps a failing factory from costing orders.
//!
//! - [`classify`]: the one definition of a failed try.
//! - [`deadline`]: `request_timeout` for the whole request, `attempt_timeout` per try.
//! - [`retry`]: exponential backoff with full jitter, under a retry budget.
//! - [`breaker`]: fail fast while the factory is down.
//! - [`window`]: the rolling counters the breaker and the budget share.

pub mod breaker;
pub mod classify;
pub mod deadline;
pub mod retry;
pub mod window;

#[cfg(test)]
mod testing;
