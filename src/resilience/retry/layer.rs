//! [`RetryLayer`]: builds [`Retry`] services sharing one policy and budget.

use std::sync::Arc;
use std::time::Duration;

use super::budget::RetryBudget;
use super::policy::RetryPolicy;
use super::{Retry, Shared};
use crate::config::RetryConfig;
use crate::orders::Patience;
use crate::telemetry::metrics::Metrics;

/// Retries failed tries per `[retry]`, under a shared [`RetryBudget`].
#[derive(Debug, Clone)]
pub struct RetryLayer {
    shared: Arc<Shared>,
}

impl RetryLayer {
    pub fn new(config: &RetryConfig, budget: Arc<RetryBudget>, metrics: Arc<Metrics>) -> Self {
        Self {
            shared: Arc::new(Shared {
                policy: RetryPolicy::new(config),
                budget,
                metrics,
                patience: None,
            }),
        }
    }

    /// Orders the deadline layer marks patient wait, hedge and park
    /// (see [`crate::orders`]) instead of failing fast.
    pub fn patience(mut self, patience: Arc<Patience>) -> Self {
        Arc::make_mut(&mut self.shared).patience = Some(patience);
        self
    }

    /// A retry must leave its try at least this long before the request's
    /// deadline (default [`super::policy::DEFAULT_MIN_TRY_TIME`]).
    pub fn min_try_time(mut self, d: Duration) -> Self {
        let shared = Arc::make_mut(&mut self.shared);
        shared.policy.set_min_try_time(d);
        self
    }
}

impl<S> tower::Layer<S> for RetryLayer {
    type Service = Retry<S>;
    fn layer(&self, inner: S) -> Retry<S> {
        Retry {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}
