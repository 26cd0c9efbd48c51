//! [`BreakerLayer`]: puts a shared [`Breaker`] in front of a service.

use std::sync::Arc;

use super::{Breaker, BreakerService};

/// Wraps a service with the shared breaker (every clone asks the same one).
#[derive(Debug, Clone)]
pub struct BreakerLayer {
    breaker: Arc<Breaker>,
}

impl BreakerLayer {
    pub fn new(breaker: Arc<Breaker>) -> Self {
        Self { breaker }
    }
}

impl<S> tower::Layer<S> for BreakerLayer {
    type Service = BreakerService<S>;
    fn layer(&self, inner: S) -> BreakerService<S> {
        BreakerService::new(inner, Arc::clone(&self.breaker))
    }
}
