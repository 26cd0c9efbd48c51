//! What the resilience layers cost a healthy request.
//!
//! The same ready-made answer, once straight from the inner service and once
//! through deadline -> retry -> breaker -> attempt timeout, as the stack puts
//! them. The futures complete on their first poll (a healthy factory seen
//! from the layers), so this measures the layers' own work: two timers set
//! up, the breaker's two lock turns, the budget deposit, the request clone
//! kept for a retry, and the `x-sidecar-attempts` header.
//!
//! Run: `cargo bench --bench resilience`.

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use factory_sidecar::boxed::BoxError;
use factory_sidecar::config::{BreakerConfig, RetryConfig};
use factory_sidecar::proxy::body::ProxyBody;
use factory_sidecar::resilience::breaker::{Breaker, BreakerLayer};
use factory_sidecar::resilience::deadline::{AttemptTimeoutLayer, DeadlineLayer};
use factory_sidecar::resilience::retry::{RetryBudget, RetryLayer};
use factory_sidecar::telemetry::metrics::Metrics;
use http::{Method, Request, Response};
use tower::{Service, ServiceBuilder, service_fn};

/// A factory that answers at once; `R` is `Request<Bytes>` alone, or
/// `Outgoing` below the retry layer.
fn factory<R>() -> impl Service<
    R,
    Response = Response<ProxyBody>,
    Error = BoxError,
    Future = std::future::Ready<Result<Response<ProxyBody>, BoxError>>,
> + Clone {
    service_fn(|_req: R| std::future::ready(Ok(Response::new(ProxyBody::empty()))))
}

fn order() -> Request<Bytes> {
    let mut req = Request::new(Bytes::from_static(b"{\"diner\":{\"id\":1}}"));
    *req.method_mut() = Method::POST;
    *req.uri_mut() = http::Uri::from_static("/api/order");
    req
}

/// One request, polled to completion without a runtime loop.
fn once<S>(svc: &mut S, cx: &mut Context<'_>) -> bool
where
    S: Service<Request<Bytes>, Response = Response<ProxyBody>, Error = BoxError>,
{
    if !matches!(svc.poll_ready(cx), Poll::Ready(Ok(()))) {
        return false;
    }
    let mut fut = pin!(svc.call(order()));
    matches!(fut.as_mut().poll(cx), Poll::Ready(Ok(_)))
}

fn layers(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap_or_else(|e| panic!("tokio runtime: {e}"));
    let _guard = rt.enter();
    let mut cx = Context::from_waker(Waker::noop());

    let mut bare = factory::<Request<Bytes>>();
    c.bench_function("healthy request, no layers", |b| {
        b.iter(|| black_box(once(&mut bare, &mut cx)))
    });

    let metrics = Arc::new(Metrics::default());
    let retry = RetryConfig::default();
    let breaker = Breaker::new(&BreakerConfig::default(), Arc::clone(&metrics));
    let mut stacked = ServiceBuilder::new()
        .layer(DeadlineLayer::new(Duration::from_secs(20)))
        .layer(RetryLayer::new(
            &retry,
            RetryBudget::new(&retry),
            Arc::clone(&metrics),
        ))
        .layer(BreakerLayer::new(breaker))
        .layer(AttemptTimeoutLayer::new(Duration::from_secs(5)))
        .service(factory());
    c.bench_function(
        "healthy request, deadline+retry+breaker+attempt timeout",
        |b| b.iter(|| black_box(once(&mut stacked, &mut cx))),
    );
}

criterion_group!(benches, layers);
criterion_main!(benches);
