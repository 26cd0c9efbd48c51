//! Assembles the tower stack, top to bottom as `lib.rs` draws it.

use std::convert::Infallible;
use std::sync::Arc;

use http::{Request, Response};
use tower::{Service, ServiceBuilder};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;

use crate::chaos::{Chaos, ChaosLayer};
use crate::config::Config;
use crate::error::RescueLayer;
use crate::orders::Patience;
use crate::proxy::body::ProxyBody;
use crate::proxy::buffered::BufferedStack;
use crate::proxy::client::Forward;
use crate::proxy::collect::{CollectBodyLayer, RequestBody};
use crate::proxy::headers::ForwardedHeadersLayer;
use crate::queue::{AsyncOrderLayer, Queue};
use crate::resilience::breaker::{Breaker, BreakerLayer};
use crate::resilience::deadline::{AttemptTimeoutLayer, DeadlineLayer};
use crate::resilience::retry::{RetryBudget, RetryLayer};
use crate::telemetry::access::{AccessLog, OpenEpisode};
use crate::telemetry::layers::{ClientTelemetryLayer, RequestCounts, ServerTelemetryLayer};
use crate::telemetry::{Metrics, Tracing};

/// The shared state the layers hold (cheap to clone: all `Arc`s).
#[derive(Clone)]
pub struct Parts {
    pub forward: Forward,
    pub metrics: Arc<Metrics>,
    /// Server and client spans (disabled: one branch per request).
    pub tracing: Tracing,
    pub counts: Arc<RequestCounts>,
    pub breaker: Arc<Breaker>,
    pub budget: Arc<RetryBudget>,
    pub chaos: Arc<Chaos>,
    /// Async orders (`[queue]`); `None` when not configured.
    pub queue: Option<Arc<Queue>>,
    /// Orders' patience: the waiting room and what the async queue asks.
    pub patience: Arc<Patience>,
}

impl Parts {
    /// Fresh state for `config`: the client and the telemetry come from outside.
    pub fn new(
        config: &Config,
        forward: Forward,
        metrics: Arc<Metrics>,
        tracing: Tracing,
    ) -> Parts {
        let breaker = Breaker::new(&config.circuit_breaker, Arc::clone(&metrics));
        let chaos = Chaos::new(&config.chaos, Arc::clone(&metrics));
        let patience = Patience::new(
            &config.orders,
            &config.upstream,
            &config.circuit_breaker,
            Arc::clone(&breaker),
            &chaos,
            Arc::clone(&metrics),
        );
        Parts {
            forward,
            counts: Arc::new(RequestCounts::default()),
            breaker,
            budget: RetryBudget::new(&config.retry),
            chaos,
            queue: None,
            patience,
            metrics,
            tracing,
        }
    }
}

impl Parts {
    /// Takes a reloaded config: the breaker, the retry budget, the chaos
    /// handle and the orders' patience get its settings and keep their
    /// state (see `crate::reload`).
    pub fn reconfigure(&self, config: &Config) {
        self.breaker.reconfigure(&config.circuit_breaker);
        self.budget.reconfigure(&config.retry);
        self.chaos.reconfigure(&config.chaos);
        self.patience
            .reconfigure(&config.orders, &config.upstream, &config.circuit_breaker);
    }
}

/// The whole request path as one service, cloned per connection. It
/// borrows nothing from its arguments (`use<>`): a reload builds one from a
/// config it then lets go of.
pub fn build(
    config: &Config,
    parts: &Parts,
) -> impl Service<
    Request<RequestBody>,
    Response = Response<ProxyBody>,
    Error = Infallible,
    Future: Send + 'static,
>
+ Clone
+ Send
+ 'static
+ use<> {
    ServiceBuilder::new()
        // The service's `Authorization` carries the vendor apiKey: marked
        // sensitive, it is never shown by `Debug` and never HPACK-indexed
        // when the factory speaks h2.
        .layer(SetSensitiveRequestHeadersLayer::new([
            http::header::AUTHORIZATION,
        ]))
        .layer(
            ServerTelemetryLayer::new(Arc::clone(&parts.metrics), Arc::clone(&parts.counts))
                .with_tracing(parts.tracing.clone())
                .with_access_log(config.log.access_log.then(|| {
                    AccessLog::new(
                        Arc::clone(&parts.chaos) as Arc<dyn OpenEpisode>,
                        config.log.format,
                    )
                })),
        )
        .layer(RescueLayer)
        .layer(CollectBodyLayer::new(config.server.max_body_bytes))
        // Above the deadline: sees each order's final outcome. Only with a queue.
        .option_layer(
            parts
                .queue
                .clone()
                .map(|queue| AsyncOrderLayer::new(queue, Arc::clone(parts.patience.routes()))),
        )
        .service(build_buffered(config, parts))
}

/// The stack below body buffering: a request with its body in hand goes
/// through deadline, retry, breaker, per-try telemetry, attempt timeout and
/// chaos to the factory. The synthetic probe enters here, so its orders meet
/// exactly what a diner's order meets.
pub fn build_buffered(config: &Config, parts: &Parts) -> impl BufferedStack + use<> {
    ServiceBuilder::new()
        .layer(ForwardedHeadersLayer)
        .layer(DeadlineLayer::new(config.upstream.request_timeout).orders(
            Arc::clone(parts.patience.routes()),
            parts.patience.patience(),
        ))
        .layer(
            RetryLayer::new(
                &config.retry,
                Arc::clone(&parts.budget),
                Arc::clone(&parts.metrics),
            )
            .patience(Arc::clone(&parts.patience)),
        )
        // Disabled: not in the stack at all (its handle still answers /status).
        .option_layer(
            config
                .circuit_breaker
                .enabled
                .then(|| BreakerLayer::new(Arc::clone(&parts.breaker))),
        )
        .layer(
            ClientTelemetryLayer::new(Arc::clone(&parts.metrics))
                .with_tracing(parts.tracing.clone()),
        )
        .layer(AttemptTimeoutLayer::new(config.upstream.attempt_timeout))
        .layer(ChaosLayer::new(Arc::clone(&parts.chaos)))
        .service(parts.forward.clone())
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    /// The future of one request below body buffering: hyper keeps one per
    /// connection and every layer moves it on its way up, so its size is
    /// paid in memory per connection and in copies per request.
    #[tokio::test]
    async fn a_request_future_stays_small() {
        let no_env = |_: &str| None;
        let config = Config::parse("[upstream]\nurl = \"http://127.0.0.1:9\"\n", "t", &no_env)
            .expect("config");
        let parts = Parts::new(
            &config,
            Forward::new(&config.upstream).expect("forward"),
            Arc::new(Metrics::default()),
            Tracing::disabled(),
        );
        let mut svc = build_buffered(&config, &parts);
        let req = Request::post("/api/order")
            .body(Bytes::new())
            .expect("request");
        let fut = svc.call(req);
        let size = std::mem::size_of_val(&fut);
        assert!(size <= 2048, "the stack's future is {size} bytes");
    }
}
