//! Assembles the tower stack, top to bottom as `lib.rs` draws it.

use std::convert::Infallible;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use tower::{Service, ServiceBuilder};

use crate::chaos::Chaos;
use crate::config::Config;
use crate::error::RescueLayer;
use crate::proxy::body::ProxyBody;
use crate::proxy::client::Forward;
use crate::proxy::collect::CollectBodyLayer;
use crate::proxy::headers::ForwardedHeadersLayer;
use crate::resilience::breaker::{Breaker, BreakerLayer};
use crate::resilience::deadline::{AttemptTimeoutLayer, DeadlineLayer};
use crate::resilience::retry::{RetryBudget, RetryLayer};
use crate::telemetry::Metrics;
use crate::telemetry::layers::{ClientTelemetryLayer, RequestCounts, ServerTelemetryLayer};

/// The shared state the layers hold (cheap to clone: all `Arc`s).
#[derive(Clone)]
pub struct Parts {
    pub forward: Forward,
    pub metrics: Arc<Metrics>,
    pub counts: Arc<RequestCounts>,
    pub breaker: Arc<Breaker>,
    pub budget: Arc<RetryBudget>,
    pub chaos: Arc<Chaos>,
}

/// The whole request path as one service, cloned per connection.
pub fn build(
    config: &Config,
    parts: &Parts,
) -> impl Service<
    Request<Incoming>,
    Response = Response<ProxyBody>,
    Error = Infallible,
    Future: Send + 'static,
> + Clone
+ Send
+ 'static {
    ServiceBuilder::new()
        .layer(ServerTelemetryLayer::new(
            Arc::clone(&parts.metrics),
            Arc::clone(&parts.counts),
        ))
        .layer(RescueLayer)
        .layer(CollectBodyLayer::new(config.server.max_body_bytes))
        .layer(ForwardedHeadersLayer)
        .layer(DeadlineLayer::new(config.upstream.request_timeout))
        .layer(RetryLayer::new(
            &config.retry,
            Arc::clone(&parts.budget),
            Arc::clone(&parts.metrics),
        ))
        .layer(BreakerLayer::new(Arc::clone(&parts.breaker)))
        .layer(ClientTelemetryLayer::new(Arc::clone(&parts.metrics)))
        .layer(AttemptTimeoutLayer::new(config.upstream.attempt_timeout))
        .layer(parts.chaos.layer())
        .service(parts.forward.clone())
}
