//! What recording costs on the request path: one measurement per
//! instrument, the two telemetry layers around a ready inner service
//! (traces off, as without an OTLP endpoint), and a `/metrics` render.
//!
//! `cargo bench --bench metrics`; the README quotes the ns per record.

use std::hint::black_box;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use factory_sidecar::boxed::BoxError;
use factory_sidecar::chaos::ChaosType;
use factory_sidecar::proxy::body::ProxyBody;
use factory_sidecar::resilience::breaker::CircuitState;
use factory_sidecar::resilience::classify::FailureKind;
use factory_sidecar::telemetry::layers::{
    ClientTelemetryLayer, RequestCounts, ServerTelemetryLayer,
};
use factory_sidecar::telemetry::outcome::RequestOutcome;
use factory_sidecar::telemetry::{ClientResult, Metrics, Route};
use http::{Method, Request, Response, StatusCode};
use tower::{Layer as _, Service as _};

fn records(c: &mut Criterion) {
    let m = Metrics::new("pizza-factory.cs329.click");
    let mut g = c.benchmark_group("record");
    g.bench_function("http.server.request.duration", |b| {
        b.iter(|| {
            m.server_request(
                black_box(&Method::POST),
                black_box(Route::Order),
                black_box(StatusCode::OK),
                black_box(RequestOutcome::Ok),
                black_box(Duration::from_micros(1234)),
            )
        })
    });
    g.bench_function("http.client.request.duration", |b| {
        b.iter(|| {
            m.client_request(
                black_box(&Method::POST),
                black_box(ClientResult::Status(StatusCode::OK)),
                black_box(Duration::from_micros(987)),
            )
        })
    });
    g.bench_function("sidecar.retries", |b| {
        b.iter(|| m.retry(black_box(FailureKind::Status5xx)))
    });
    g.bench_function("sidecar.circuit.rejections", |b| {
        b.iter(|| m.circuit_rejection())
    });
    g.bench_function("sidecar.circuit.state", |b| {
        b.iter(|| m.circuit_state(black_box(CircuitState::Closed)))
    });
    g.bench_function("sidecar.chaos.active", |b| {
        b.iter(|| m.chaos_active(black_box(ChaosType::Fail), black_box(false)))
    });
    g.finish();
}

fn layers(c: &mut Criterion) {
    let metrics = Arc::new(Metrics::new("pizza-factory.cs329.click"));
    let counts = Arc::new(RequestCounts::default());
    let inner = tower::service_fn(|_req: Arc<Request<bytes::Bytes>>| {
        std::future::ready(Ok::<_, BoxError>(Response::new(ProxyBody::empty())))
    });
    // The client layer sits below retry, where requests are shared.
    let mut svc =
        ServerTelemetryLayer::new(metrics.clone(), counts).layer(tower::util::MapRequest::new(
            ClientTelemetryLayer::new(metrics.clone()).layer(inner),
            Arc::new,
        ));
    let mut cx = Context::from_waker(Waker::noop());
    c.bench_function("layers/server+client, traces off, one request", |b| {
        b.iter(|| {
            let req = Request::post("/api/order")
                .body(bytes::Bytes::new())
                .unwrap_or_default();
            let mut fut = std::pin::pin!(svc.call(req));
            match fut.as_mut().poll(&mut cx) {
                Poll::Ready(r) => black_box(r).is_ok(),
                Poll::Pending => false,
            }
        })
    });
    c.bench_function("render /metrics", |b| {
        b.iter(|| black_box(metrics.prometheus_text()))
    });
}

criterion_group!(benches, records, layers);
criterion_main!(benches);
