//! Retry: a momentary factory blip should cost no order.
//!
//! A failed try (as [`classify`](crate::resilience::classify) defines it,
//! and only the kinds listed in `retry.on`) of a request that is safe to
//! repeat is tried again, up to `max_attempts` tries in all, after an
//! exponential backoff with full jitter ([`backoff`]) or the factory's
//! `Retry-After`, never past the request's deadline ([`policy`]), and only
//! while the shared [`RetryBudget`] allows ([`budget`]: retries add at most
//! `budget_percent` of recent traffic, so a dead factory is not hammered
//! `max_attempts` times over).
//!
//! The request body is already buffered (`Bytes`), and the tries below
//! share the request ([`Outgoing`]): a replay is another handle on it, not
//! a copy. Every answer that leaves the layer carries
//! `x-sidecar-attempts: N`, N being the tries that reached the breaker's far
//! side (a try the breaker refused is not counted); when every try failed
//! with a factory answer, the last one is returned as it is. An error
//! leaves wrapped in [`Attempted`] with the same count.
//!
//! Orders with patience ([`crate::orders`]) take [`patient`] instead: their
//! slow tries are hedged rather than cut, and when tries run out they park
//! rather than fail.
//!
//! # Why not `tower::retry::Retry`
//! Same split (mechanism here and in [`future`], decisions in [`policy`]),
//! but tower's `Retry` consults its policy only for requests it cloned up
//! front, so the header on never-retried requests would cost a clone of
//! every request; and the per-request budget deposit and try count would
//! have to ride on `clone_request`. The mechanism is one small future.

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderName, Request, Response};

use crate::boxed::BoxError;
use crate::orders::Patience;
use crate::proxy::Outgoing;
use crate::proxy::body::ProxyBody;
use crate::resilience::deadline::Deadline;
use crate::telemetry::metrics::Metrics;

mod attempts;
pub mod backoff;
pub mod budget;
pub mod error;
pub mod future;
pub mod layer;
pub mod patient;
pub mod policy;

pub use budget::{BudgetSnapshot, RetryBudget};
pub use error::{Attempted, attempts_of};
pub use future::ResponseFuture;
pub use layer::RetryLayer;
pub use policy::RetryPolicy;

/// Response header: how many tries this answer took.
pub const X_SIDECAR_ATTEMPTS: HeaderName = HeaderName::from_static("x-sidecar-attempts");

/// What every [`Retry`] clone shares.
#[derive(Debug, Clone)]
pub(crate) struct Shared {
    pub(crate) policy: RetryPolicy,
    pub(crate) budget: Arc<RetryBudget>,
    pub(crate) metrics: Arc<Metrics>,
    /// Orders the deadline layer marked patient take [`patient::Patient`].
    pub(crate) patience: Option<Arc<Patience>>,
}

/// See the module docs; built by [`RetryLayer`].
#[derive(Debug, Clone)]
pub struct Retry<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> tower::Service<Request<Bytes>> for Retry<S>
where
    S: tower::Service<Outgoing, Response = Response<ProxyBody>, Error = BoxError> + Clone,
{
    type Response = Response<ProxyBody>;
    type Error = BoxError;
    type Future = ResponseFuture<S>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Bytes>) -> Self::Future {
        self.shared.budget.deposit();
        let req = Arc::new(req);
        if let Some(patience) = &self.shared.patience
            && Deadline::patient()
        {
            let may_repeat = self.shared.policy.may_retry(&req);
            let service = self.inner.clone();
            let first = self.inner.call(Arc::clone(&req));
            return ResponseFuture::patient(patient::Patient::new(
                first,
                Arc::clone(&self.shared),
                Arc::clone(patience),
                service,
                req,
                may_repeat,
            ));
        }
        if !self.shared.policy.may_retry(&req) {
            return ResponseFuture::once(self.inner.call(req), Arc::clone(&self.shared));
        }
        let deadline = Deadline::current();
        // A handle, not a copy: no try changes the request.
        let template = Arc::clone(&req);
        // `self.inner` is the ready one; the clone is polled ready before a retry.
        let service = self.inner.clone();
        let first = self.inner.call(req);
        ResponseFuture::retrying(first, Arc::clone(&self.shared), service, template, deadline)
    }
}

#[cfg(test)]
mod tests;
