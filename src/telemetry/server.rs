//! `ServerTelemetryLayer`: the outermost layer. Measures each request from
//! the pizza service on the answer that really goes back.
//!
//! Per request: a server span (when traces are on) that every inner layer
//! runs inside, `http.server.request.duration` with method, normalised
//! route, status and `sidecar.outcome`, and the per-status-class counts the
//! admin `/status` shows. The inner service may fail (`BoxError`): the error
//! becomes its JSON answer here, through [`crate::error::answer`], so the
//! outcome recorded is the one the diner sees, and this layer never fails.
//!
//! The duration ends when the answer's head is ready: the factory's slow
//! answers (throttle chaos) are slow before their head, and a diner reading
//! a body slowly should not count as a slow factory.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context as TaskContext, Poll, ready};

use http::{Method, Request, Response, StatusCode};
use opentelemetry::context::{FutureExt as _, WithContext};
use opentelemetry::trace::{Status, TraceContextExt as _};
use opentelemetry::{Context, KeyValue};
use tokio::time::Instant;

use super::metrics::{Metrics, Route, attr};
use super::trace::Tracing;
use crate::admin::AdminPart;
use crate::error::{BoxError, RequestOutcome, SidecarAnswer};
use crate::proxy::body::ProxyBody;
use crate::proxy::headers::ClientAddr;

/// Requests answered, by status class and by outcome (admin `/status`).
#[derive(Debug, Default)]
pub struct RequestCounts {
    /// 1xx, 2xx, 3xx, 4xx, 5xx.
    by_class: [AtomicU64; 5],
    /// In the order of [`RequestOutcome::ALL`].
    by_outcome: [AtomicU64; 6],
}

impl RequestCounts {
    pub fn record(&self, status: StatusCode, outcome: RequestOutcome) {
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        self.by_class[class].fetch_add(1, Ordering::Relaxed);
        self.by_outcome[outcome_index(outcome)].fetch_add(1, Ordering::Relaxed);
    }

    /// Answers with status `class`xx (`class` in 1..=5; others read 0).
    pub fn class(&self, class: u16) -> u64 {
        match class {
            1..=5 => self.by_class[usize::from(class - 1)].load(Ordering::Relaxed),
            _ => 0,
        }
    }

    pub fn outcome(&self, outcome: RequestOutcome) -> u64 {
        self.by_outcome[outcome_index(outcome)].load(Ordering::Relaxed)
    }

    pub fn total(&self) -> u64 {
        (1..=5).map(|c| self.class(c)).sum()
    }

    /// `{"total": n, "byStatus": {"2xx": n, ...}, "byOutcome": {"ok": n, ...}}`.
    pub fn to_json(&self) -> serde_json::Value {
        let by_status: serde_json::Map<String, serde_json::Value> = (1..=5)
            .map(|c| (format!("{c}xx"), self.class(c).into()))
            .collect();
        let by_outcome: serde_json::Map<String, serde_json::Value> = RequestOutcome::ALL
            .iter()
            .map(|o| (o.as_str().to_owned(), self.outcome(*o).into()))
            .collect();
        serde_json::json!({
            "total": self.total(),
            "byStatus": by_status,
            "byOutcome": by_outcome,
        })
    }
}

fn outcome_index(o: RequestOutcome) -> usize {
    match o {
        RequestOutcome::Ok => 0,
        RequestOutcome::FactoryError => 1,
        RequestOutcome::CircuitOpen => 2,
        RequestOutcome::Timeout => 3,
        RequestOutcome::Unreachable => 4,
        RequestOutcome::Rejected => 5,
    }
}

impl AdminPart for RequestCounts {
    fn name(&self) -> &'static str {
        "requests"
    }
    fn status(&self) -> serde_json::Value {
        self.to_json()
    }
}

/// What every request of a layer shares (one `Arc` clone per request).
#[derive(Debug)]
struct Shared {
    metrics: Arc<Metrics>,
    counts: Arc<RequestCounts>,
    tracing: Tracing,
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct ServerTelemetryLayer {
    shared: Arc<Shared>,
}

impl ServerTelemetryLayer {
    pub fn new(metrics: Arc<Metrics>, counts: Arc<RequestCounts>, tracing: Tracing) -> Self {
        ServerTelemetryLayer {
            shared: Arc::new(Shared {
                metrics,
                counts,
                tracing,
            }),
        }
    }
}

impl<S> tower::Layer<S> for ServerTelemetryLayer {
    type Service = ServerTelemetry<S>;
    fn layer(&self, inner: S) -> ServerTelemetry<S> {
        ServerTelemetry {
            inner,
            shared: self.shared.clone(),
            not_ready: None,
        }
    }
}

/// See [`ServerTelemetryLayer`].
#[derive(Debug)]
pub struct ServerTelemetry<S> {
    inner: S,
    shared: Arc<Shared>,
    /// The inner service failed to become ready: the next call answers that.
    not_ready: Option<BoxError>,
}

impl<S: Clone> Clone for ServerTelemetry<S> {
    fn clone(&self) -> Self {
        ServerTelemetry {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
            not_ready: None,
        }
    }
}

impl<S, B> tower::Service<Request<B>> for ServerTelemetry<S>
where
    S: tower::Service<Request<B>, Response = Response<ProxyBody>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = ServerFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx).map(|r| {
            self.not_ready = r.err().map(Into::into);
            Ok(())
        })
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let start = Instant::now();
        let method = req.method().clone();
        let route = Route::of(req.uri().path());
        let span = self.shared.tracing.server_span(
            req.headers(),
            req.method(),
            req.version(),
            route,
            req.extensions().get::<ClientAddr>().map(|c| c.0),
        );
        let inner = match (self.not_ready.take(), span.as_ref()) {
            (Some(error), _) => Inner::NotReady { error: Some(error) },
            (None, None) => Inner::Plain {
                fut: self.inner.call(req),
            },
            (None, Some(cx)) => {
                // Inner layers that start work in `call` see the span too.
                let _guard = cx.clone().attach();
                Inner::Traced {
                    fut: self.inner.call(req).with_context(cx.clone()),
                }
            }
        };
        ServerFuture {
            inner,
            record: Some(Record {
                start,
                method,
                route,
                span,
                shared: self.shared.clone(),
            }),
        }
    }
}

struct Record {
    start: Instant,
    method: Method,
    route: Route,
    span: Option<Context>,
    shared: Arc<Shared>,
}

impl Record {
    fn finish(self, res: &Response<ProxyBody>) {
        let status = res.status();
        let outcome = RequestOutcome::of(res);
        self.shared.metrics.server_request(
            &self.method,
            self.route,
            status,
            outcome,
            self.start.elapsed(),
        );
        self.shared.counts.record(status, outcome);
        tracing::debug!(
            method = %self.method,
            route = self.route.as_str(),
            status = status.as_u16(),
            outcome = outcome.as_str(),
            elapsed_ms = self.start.elapsed().as_millis() as u64,
            "request answered"
        );
        if let Some(cx) = self.span {
            let span = cx.span();
            span.set_attribute(KeyValue::new(
                attr::HTTP_RESPONSE_STATUS_CODE,
                i64::from(status.as_u16()),
            ));
            span.set_attribute(KeyValue::new(attr::SIDECAR_OUTCOME, outcome.as_str()));
            if status.is_server_error() {
                let error_type = match res.extensions().get::<SidecarAnswer>() {
                    Some(SidecarAnswer(kind)) => kind.as_str(),
                    None => "5xx",
                };
                span.set_attribute(KeyValue::new(attr::ERROR_TYPE, error_type));
                span.set_status(Status::error(error_type));
            }
            span.end();
        }
    }

    /// The diner went away (or the server shut down) before the answer.
    fn cancelled(self) {
        if let Some(cx) = self.span {
            let span = cx.span();
            span.set_attribute(KeyValue::new(
                attr::ERROR_TYPE,
                super::metrics::ERROR_TYPE_CANCELLED,
            ));
            span.set_status(Status::error("cancelled"));
            span.end();
        }
    }
}

pin_project_lite::pin_project! {
    #[project = InnerProj]
    enum Inner<F> {
        Plain { #[pin] fut: F },
        Traced { #[pin] fut: WithContext<F> },
        NotReady { error: Option<BoxError> },
    }
}

pin_project_lite::pin_project! {
    /// See [`ServerTelemetry`].
    pub struct ServerFuture<F> {
        #[pin]
        inner: Inner<F>,
        record: Option<Record>,
    }

    impl<F> PinnedDrop for ServerFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(record) = this.project().record.take() {
                record.cancelled();
            }
        }
    }
}

impl<F, E> Future for ServerFuture<F>
where
    F: Future<Output = Result<Response<ProxyBody>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<ProxyBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result: Result<Response<ProxyBody>, BoxError> = match this.inner.project() {
            InnerProj::Plain { fut } => ready!(fut.poll(cx)).map_err(Into::into),
            InnerProj::Traced { fut } => ready!(fut.poll(cx)).map_err(Into::into),
            InnerProj::NotReady { error } => Err(error
                .take()
                .unwrap_or_else(|| Box::new(PolledAfterCompletion))),
        };
        let res = result.unwrap_or_else(|e| crate::error::answer(e.as_ref()));
        if let Some(record) = this.record.take() {
            record.finish(&res);
        }
        Poll::Ready(Ok(res))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("future polled after completion")]
struct PolledAfterCompletion;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resilience::breaker::CircuitOpen;
    use crate::telemetry::trace::testing;
    use opentelemetry::trace::SpanKind;
    use std::time::Duration;
    use tower::{Layer as _, Service as _, ServiceExt as _};

    fn layer(tracing: Tracing) -> (ServerTelemetryLayer, Arc<Metrics>, Arc<RequestCounts>) {
        let metrics = Arc::new(Metrics::new("factory.test"));
        let counts = Arc::new(RequestCounts::default());
        (
            ServerTelemetryLayer::new(metrics.clone(), counts.clone(), tracing),
            metrics,
            counts,
        )
    }

    fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(prefix))
    }

    #[tokio::test]
    async fn records_the_factory_answer() {
        let (layer, metrics, counts) = layer(Tracing::disabled());
        let svc = layer.layer(tower::service_fn(|_req: Request<()>| async {
            let mut res = Response::new(ProxyBody::empty());
            *res.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            Ok::<_, BoxError>(res)
        }));
        let req = Request::post("/api/order").body(()).expect("request");
        let res = svc.oneshot(req).await.expect("infallible");
        assert_eq!(res.status(), 500);
        assert_eq!(counts.class(5), 1);
        assert_eq!(counts.outcome(RequestOutcome::FactoryError), 1);
        let text = metrics.prometheus_text();
        assert!(
            line(&text, "http_server_request_duration_seconds_count{http_request_method=\"POST\",http_response_status_code=\"500\",http_route=\"/api/order\",sidecar_outcome=\"factory_error\"} 1").is_some(),
            "{text}"
        );
    }

    #[tokio::test]
    async fn an_error_is_measured_as_the_answer_it_becomes() {
        let (layer, metrics, counts) = layer(Tracing::disabled());
        let svc = layer.layer(tower::service_fn(|_req: Request<()>| async {
            Err::<Response<ProxyBody>, BoxError>(Box::new(CircuitOpen {
                retry_after: Duration::from_secs(2),
            }))
        }));
        let req = Request::get("/api/support/SECRETKEY/report/x")
            .body(())
            .expect("request");
        let res = svc.oneshot(req).await.expect("infallible");
        assert_eq!(res.status(), 503);
        assert_eq!(res.headers()["retry-after"], "2");
        assert_eq!(counts.outcome(RequestOutcome::CircuitOpen), 1);
        let text = metrics.prometheus_text();
        assert!(
            line(&text, "http_server_request_duration_seconds_count{http_request_method=\"GET\",http_response_status_code=\"503\",http_route=\"other\",sidecar_outcome=\"circuit_open\"} 1").is_some(),
            "{text}"
        );
        assert!(!text.contains("SECRETKEY"));
    }

    #[derive(Clone)]
    struct NeverReady;
    impl tower::Service<Request<()>> for NeverReady {
        type Response = Response<ProxyBody>;
        type Error = BoxError;
        type Future = std::future::Ready<Result<Response<ProxyBody>, BoxError>>;
        fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), BoxError>> {
            Poll::Ready(Err(Box::new(crate::resilience::deadline::DeadlineExceeded)))
        }
        fn call(&mut self, _req: Request<()>) -> Self::Future {
            std::future::ready(Ok(Response::new(ProxyBody::empty())))
        }
    }

    #[tokio::test]
    async fn a_readiness_error_is_answered_too() {
        let (layer, _metrics, counts) = layer(Tracing::disabled());
        let mut svc = layer.layer(NeverReady);
        let svc = svc.ready().await.expect("infallible");
        let res = svc
            .call(Request::get("/api/order").body(()).expect("request"))
            .await
            .expect("infallible");
        assert_eq!(res.status(), 504);
        assert_eq!(counts.outcome(RequestOutcome::Timeout), 1);
    }

    #[tokio::test]
    async fn the_server_span_is_current_for_inner_layers_and_carries_the_outcome() {
        let (tracing, collected, _provider) = testing::tracing();
        let (layer, _metrics, _counts) = layer(tracing);
        let svc = layer.layer(tower::service_fn(|_req: Request<()>| async {
            // An inner layer sees the server span as the current context.
            let cx = Context::current();
            assert!(cx.has_active_span());
            Ok::<_, BoxError>(Response::new(ProxyBody::empty()))
        }));
        let req = Request::post("/api/order")
            .header(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            )
            .body(())
            .expect("request");
        svc.oneshot(req).await.expect("infallible");
        let spans = collected.0.lock();
        assert_eq!(spans.len(), 1);
        let s = &spans[0];
        assert_eq!(s.span_kind, SpanKind::Server);
        assert_eq!(s.name, "POST /api/order");
        assert_eq!(
            s.span_context.trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        let has = |k: &str, v: &str| {
            s.attributes
                .iter()
                .any(|kv| kv.key.as_str() == k && kv.value.as_str() == v)
        };
        assert!(has("http.response.status_code", "200"));
        assert!(has("sidecar.outcome", "ok"));
        assert!(has("http.route", "/api/order"));
    }

    #[tokio::test]
    async fn a_dropped_request_ends_its_span_without_a_metric() {
        let (tracing, collected, _provider) = testing::tracing();
        let (layer, metrics, counts) = layer(tracing);
        let mut svc = layer.layer(tower::service_fn(|_req: Request<()>| {
            std::future::pending::<Result<Response<ProxyBody>, BoxError>>()
        }));
        let fut = svc.call(Request::get("/api/order").body(()).expect("request"));
        drop(fut);
        assert_eq!(counts.total(), 0);
        assert!(
            !metrics
                .prometheus_text()
                .contains("http_server_request_duration_seconds_count")
        );
        let spans = collected.0.lock();
        assert_eq!(spans.len(), 1);
        assert!(matches!(spans[0].status, Status::Error { .. }));
    }

    #[test]
    fn counts_render_for_status() {
        let c = RequestCounts::default();
        c.record(StatusCode::OK, RequestOutcome::Ok);
        c.record(StatusCode::BAD_GATEWAY, RequestOutcome::Unreachable);
        let v = c.status();
        assert_eq!(v["total"], 2);
        assert_eq!(v["byStatus"]["2xx"], 1);
        assert_eq!(v["byStatus"]["5xx"], 1);
        assert_eq!(v["byOutcome"]["unreachable"], 1);
        assert_eq!(c.name(), "requests");
    }
}
