//! The two places the stack is measured.
//!
//! [`ServerTelemetryLayer`] sits outermost and sees every request from the
//! service with the answer that really went back (the sidecar's own error
//! answers included): `http.server.request.duration` with `sidecar.outcome`,
//! and the per-status-class counts `/status` shows. [`ClientTelemetryLayer`]
//! sits inside the retry loop and sees each try to the factory:
//! `http.client.request.duration` with the status and/or `error.type`.
//! Durations run to the answer's head (the body streams on afterwards).
//! The server layer also writes the access log ([`super::access`]), from
//! the same measurement.
//!
//! With traces on ([`ServerTelemetryLayer::with_tracing`]), the server
//! layer opens a server span per request, continuing the caller's W3C
//! `traceparent`, and polls the inner stack inside it; the client layer
//! opens a child client span per try and sends *its* context to the
//! factory in `traceparent`. With traces off both cost one branch.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use http::{Method, Request, Response};
use opentelemetry::trace::{Status, TraceContextExt as _};
use opentelemetry::{Context as OtelContext, KeyValue};
use tokio::time::Instant;
use tower::{Layer, Service};

use crate::admin::AdminPart;
use crate::boxed::BoxError;
use crate::proxy::body::ProxyBody;
use crate::proxy::headers::X_FORWARDED_FOR;
use crate::resilience::classify::{Outcome, classify_error, classify_response};
use crate::resilience::retry::X_SIDECAR_ATTEMPTS;
use crate::telemetry::access::{AccessLog, Answered, Pending};
use crate::telemetry::metrics::{ClientResult, Metrics, Route};
use crate::telemetry::outcome::RequestOutcome;
use crate::telemetry::trace::Tracing;

/// Requests answered, by status class, since start.
#[derive(Debug, Default)]
pub struct RequestCounts {
    classes: [AtomicU64; 5],
}

impl RequestCounts {
    fn record(&self, status: http::StatusCode) {
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        if let Some(c) = self.classes.get(class) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `(class, count)` for 1xx to 5xx.
    pub fn snapshot(&self) -> [(&'static str, u64); 5] {
        let n = |i: usize| self.classes.get(i).map_or(0, |c| c.load(Ordering::Relaxed));
        [
            ("1xx", n(0)),
            ("2xx", n(1)),
            ("3xx", n(2)),
            ("4xx", n(3)),
            ("5xx", n(4)),
        ]
    }
}

impl AdminPart for RequestCounts {
    fn name(&self) -> &'static str {
        "requests"
    }

    fn status(&self) -> serde_json::Value {
        let snap = self.snapshot();
        let total: u64 = snap.iter().map(|(_, n)| n).sum();
        let mut map = serde_json::Map::new();
        map.insert("total".to_owned(), total.into());
        for (class, n) in snap {
            map.insert(class.to_owned(), n.into());
        }
        serde_json::Value::Object(map)
    }
}

/// Measures every request from the service (outermost layer).
#[derive(Debug, Clone)]
pub struct ServerTelemetryLayer {
    metrics: Arc<Metrics>,
    counts: Arc<RequestCounts>,
    tracing: Tracing,
    access: Option<AccessLog>,
}

impl ServerTelemetryLayer {
    pub fn new(metrics: Arc<Metrics>, counts: Arc<RequestCounts>) -> Self {
        Self {
            metrics,
            counts,
            tracing: Tracing::disabled(),
            access: None,
        }
    }

    /// A server span per request when `tracing` is enabled.
    pub fn with_tracing(mut self, tracing: Tracing) -> Self {
        self.tracing = tracing;
        self
    }

    /// An access line per request (`[log] access_log`), when given one.
    pub fn with_access_log(mut self, access: Option<AccessLog>) -> Self {
        self.access = access;
        self
    }
}

impl<S> Layer<S> for ServerTelemetryLayer {
    type Service = ServerTelemetry<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ServerTelemetry {
            inner,
            metrics: self.metrics.clone(),
            counts: self.counts.clone(),
            tracing: self.tracing.clone(),
            access: self.access.clone(),
        }
    }
}

/// See [`ServerTelemetryLayer`].
#[derive(Debug, Clone)]
pub struct ServerTelemetry<S> {
    inner: S,
    metrics: Arc<Metrics>,
    counts: Arc<RequestCounts>,
    tracing: Tracing,
    access: Option<AccessLog>,
}

impl<S, B> Service<Request<B>> for ServerTelemetry<S>
where
    S: Service<Request<B>, Response = Response<ProxyBody>>,
{
    type Response = Response<ProxyBody>;
    type Error = S::Error;
    type Future = ServerFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // A request came: keep polling for its answer (busy_poll.rs).
        crate::busy_poll::mark();
        let started = Instant::now();
        let method = req.method().clone();
        let route = Route::of(req.uri().path());
        let access = self
            .access
            .as_ref()
            .and_then(|a| a.start(req.uri(), req.headers().get(X_FORWARDED_FOR)));
        let span = if self.tracing.is_enabled() {
            self.tracing.server_span(
                req.headers(),
                &method,
                req.version(),
                route,
                req.headers().get(X_FORWARDED_FOR),
            )
        } else {
            None
        };
        // Inner layers that start work in `call` already see the span.
        let inner = {
            let _guard = span.clone().map(OtelContext::attach);
            self.inner.call(req)
        };
        ServerFuture {
            inner,
            started,
            method,
            route,
            metrics: self.metrics.clone(),
            counts: self.counts.clone(),
            span,
            access,
        }
    }
}

pin_project_lite::pin_project! {
    /// See [`ServerTelemetry`].
    pub struct ServerFuture<F> {
        #[pin]
        inner: F,
        started: Instant,
        method: Method,
        route: Route,
        metrics: Arc<Metrics>,
        counts: Arc<RequestCounts>,
        // The request's server span (traces on); taken when it ends.
        span: Option<OtelContext>,
        // The request's access line, written with the answer (when on).
        access: Option<Pending>,
    }

    impl<F> PinnedDrop for ServerFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            // Dropped before the answer: the diner went away or the server
            // stopped. The span still ends, marked as such.
            if let Some(cx) = this.project().span.take() {
                end_with_error(&cx, "cancelled");
            }
        }
    }
}

/// Ends `cx`'s span as failed with `error.type` `error_type`.
fn end_with_error(cx: &OtelContext, error_type: &'static str) {
    let span = cx.span();
    span.set_attribute(KeyValue::new("error.type", error_type));
    span.set_status(Status::error(error_type));
    span.end();
}

impl<F, E> Future for ServerFuture<F>
where
    F: Future<Output = Result<Response<ProxyBody>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = {
            // The inner stack (retries, tries, client spans) runs in the span.
            let _guard = this.span.clone().map(OtelContext::attach);
            std::task::ready!(this.inner.poll(cx))
        };
        crate::busy_poll::mark();
        let span = this.span.take();
        if let Ok(res) = &result {
            let status = res.status();
            let outcome = RequestOutcome::of(res);
            let elapsed = this.started.elapsed();
            this.counts.record(status);
            this.metrics
                .server_request(this.method, *this.route, status, outcome, elapsed);
            if let Some(access) = this.access.take() {
                access.finish(&Answered {
                    method: this.method,
                    status,
                    outcome,
                    attempts: res.headers().get(X_SIDECAR_ATTEMPTS),
                    elapsed,
                    bytes: http_body::Body::size_hint(res.body()).exact(),
                    trace_id: span.as_ref().map(|cx| cx.span().span_context().trace_id()),
                });
            }
            if let Some(span) = span {
                let s = span.span();
                s.set_attribute(KeyValue::new(
                    "http.response.status_code",
                    i64::from(status.as_u16()),
                ));
                s.set_attribute(KeyValue::new("sidecar.outcome", outcome.as_str()));
                // Server spans: only a 5xx is an error (a 4xx is the caller's).
                if status.is_server_error() {
                    end_with_error(&span, outcome.as_str());
                } else {
                    s.end();
                }
            }
        } else if let Some(span) = span {
            end_with_error(&span, "_OTHER");
        }
        Poll::Ready(result)
    }
}

/// Measures each try to the factory (inside the retry loop).
#[derive(Debug, Clone)]
pub struct ClientTelemetryLayer {
    metrics: Arc<Metrics>,
    tracing: Tracing,
}

impl ClientTelemetryLayer {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            tracing: Tracing::disabled(),
        }
    }

    /// A client span per try, its `traceparent` sent upstream, when
    /// `tracing` is enabled.
    pub fn with_tracing(mut self, tracing: Tracing) -> Self {
        self.tracing = tracing;
        self
    }
}

impl<S> Layer<S> for ClientTelemetryLayer {
    type Service = ClientTelemetry<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ClientTelemetry {
            inner,
            metrics: self.metrics.clone(),
            tracing: self.tracing.clone(),
        }
    }
}

/// See [`ClientTelemetryLayer`].
#[derive(Debug, Clone)]
pub struct ClientTelemetry<S> {
    inner: S,
    metrics: Arc<Metrics>,
    tracing: Tracing,
}

impl<S, B> Service<Arc<Request<B>>> for ClientTelemetry<S>
where
    S: Service<Arc<Request<B>>, Response = Response<ProxyBody>, Error = BoxError>,
    Request<B>: Clone,
{
    type Response = Response<ProxyBody>;
    type Error = BoxError;
    type Future = ClientFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Arc<Request<B>>) -> Self::Future {
        let method = req.method().clone();
        let span = if self.tracing.is_enabled() {
            let route = Route::of(req.uri().path());
            // The try's own trace context: a copy of the request when the
            // retry layer holds it too (traces are off by default).
            self.tracing.client_span(
                Arc::make_mut(&mut req).headers_mut(),
                &method,
                self.metrics.server_address(),
                route,
            )
        } else {
            None
        };
        ClientFuture {
            method,
            inner: self.inner.call(req),
            started: Instant::now(),
            metrics: self.metrics.clone(),
            span,
        }
    }
}

pin_project_lite::pin_project! {
    /// See [`ClientTelemetry`].
    pub struct ClientFuture<F> {
        #[pin]
        inner: F,
        started: Instant,
        method: Method,
        metrics: Arc<Metrics>,
        // The try's client span (traces on); taken when it ends.
        span: Option<OtelContext>,
    }

    impl<F> PinnedDrop for ClientFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            // Dropped unfinished: the overall deadline or the diner ended it.
            if let Some(cx) = this.project().span.take() {
                end_with_error(&cx, "cancelled");
            }
        }
    }
}

impl<F> Future for ClientFuture<F>
where
    F: Future<Output = Result<Response<ProxyBody>, BoxError>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        let recorded = match &result {
            // A factory answer that failed the try (5xx, or a pizza whose
            // JWT does not verify) carries `error.type` beside its status,
            // so "tries without error.type" is the factory's success rate.
            Ok(res) => match classify_response(res) {
                Outcome::Failure(kind) | Outcome::Excused(kind) => {
                    Some(ClientResult::FailedAnswer(res.status(), kind))
                }
                _ => Some(ClientResult::Status(res.status())),
            },
            // A try the breaker refused or the deadline aborted never reached
            // the factory: it is not a client request.
            Err(e) => match classify_error(e.as_ref()) {
                Outcome::Failure(kind) => Some(ClientResult::Error(kind)),
                _ => None,
            },
        };
        if let Some(r) = recorded {
            this.metrics
                .client_request(this.method, r, this.started.elapsed());
        }
        if let Some(span) = this.span.take() {
            let s = span.span();
            match recorded {
                Some(ClientResult::Status(status)) => {
                    s.set_attribute(KeyValue::new(
                        "http.response.status_code",
                        i64::from(status.as_u16()),
                    ));
                    // Client spans: a 4xx is an error too.
                    if status.is_client_error() {
                        s.set_status(Status::error("4xx"));
                    }
                    s.end();
                }
                Some(ClientResult::FailedAnswer(status, kind)) => {
                    s.set_attribute(KeyValue::new(
                        "http.response.status_code",
                        i64::from(status.as_u16()),
                    ));
                    end_with_error(&span, kind.as_str());
                }
                Some(ClientResult::Error(kind)) => end_with_error(&span, kind.as_str()),
                None => end_with_error(&span, "_OTHER"),
            }
        }
        Poll::Ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::client::UpstreamError;
    use crate::resilience::classify::BadJwt;
    use crate::resilience::deadline::AttemptTimedOut;
    use crate::telemetry::trace::testing;
    use http::{HeaderValue, StatusCode};
    use opentelemetry::trace::SpanKind;
    use tower::ServiceExt as _;

    const CALLER: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    fn answer(status: StatusCode, bad_jwt: bool) -> Response<ProxyBody> {
        let mut res = Response::new(ProxyBody::empty());
        *res.status_mut() = status;
        if bad_jwt {
            res.extensions_mut().insert(BadJwt);
        }
        res
    }

    fn count(text: &str, labels: &str) -> Option<String> {
        let prefix = format!("http_client_request_duration_seconds_count{{{labels}}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
    }

    #[tokio::test]
    async fn each_try_is_measured_by_status_and_error_type() {
        let metrics = Arc::new(Metrics::new("factory.test"));
        let script = Arc::new(parking_lot::Mutex::new(vec![
            Ok(answer(StatusCode::OK, false)),
            Ok(answer(StatusCode::INTERNAL_SERVER_ERROR, false)),
            Ok(answer(StatusCode::OK, true)),
            Err::<Response<ProxyBody>, BoxError>(Box::new(UpstreamError::new(
                "connect",
                std::io::Error::other("refused"),
            ))),
            Err(Box::new(AttemptTimedOut)),
        ]));
        let svc =
            ClientTelemetryLayer::new(metrics.clone()).layer(tower::service_fn(move |_req| {
                let next = script.lock().remove(0);
                async move { next }
            }));
        for _ in 0..5 {
            let req = Request::post("/api/order")
                .body(bytes::Bytes::new())
                .expect("request");
            let _ = svc.clone().oneshot(Arc::new(req)).await;
        }
        let text = metrics.prometheus_text();
        let a = "server_address=\"factory.test\"";
        for labels in [
            format!("http_request_method=\"POST\",http_response_status_code=\"200\",{a}"),
            format!(
                "error_type=\"5xx\",http_request_method=\"POST\",http_response_status_code=\"500\",{a}"
            ),
            format!(
                "error_type=\"badjwt\",http_request_method=\"POST\",http_response_status_code=\"200\",{a}"
            ),
            format!("error_type=\"connect\",http_request_method=\"POST\",{a}"),
            format!("error_type=\"timeout\",http_request_method=\"POST\",{a}"),
        ] {
            assert_eq!(
                count(&text, &labels).as_deref(),
                Some("1"),
                "{labels} in\n{text}"
            );
        }
    }

    /// Server layer -> client layer -> a "factory" recording `traceparent`.
    fn stack(
        tracing: Tracing,
        sent: Arc<parking_lot::Mutex<Vec<String>>>,
    ) -> impl Service<
        Request<bytes::Bytes>,
        Response = Response<ProxyBody>,
        Error = BoxError,
        Future: Send,
    > + Clone {
        let metrics = Arc::new(Metrics::new("factory.test"));
        let factory = tower::service_fn(move |req: Arc<Request<bytes::Bytes>>| {
            if let Some(tp) = req.headers().get("traceparent") {
                sent.lock()
                    .push(tp.to_str().unwrap_or("not ascii").to_owned());
            }
            async { Ok::<_, BoxError>(answer(StatusCode::OK, false)) }
        });
        ServerTelemetryLayer::new(metrics.clone(), Arc::default())
            .with_tracing(tracing.clone())
            .layer(tower::util::MapRequest::new(
                ClientTelemetryLayer::new(metrics)
                    .with_tracing(tracing)
                    .layer(factory),
                Arc::new,
            ))
    }

    fn traced_request() -> Request<bytes::Bytes> {
        let mut req = Request::post("/api/order")
            .body(bytes::Bytes::new())
            .expect("request");
        req.headers_mut()
            .insert("traceparent", HeaderValue::from_static(CALLER));
        req
    }

    #[tokio::test]
    async fn spans_nest_under_the_callers_trace_and_each_try_sends_its_own() {
        let (tracing, collected, _provider) = testing::tracing();
        let sent = Arc::default();
        let svc = stack(tracing, Arc::clone(&sent));
        let res = svc.oneshot(traced_request()).await.expect("answer");
        assert_eq!(res.status(), StatusCode::OK);

        let spans = collected.0.lock();
        let server = spans
            .iter()
            .find(|s| s.span_kind == SpanKind::Server)
            .expect("server span");
        let client = spans
            .iter()
            .find(|s| s.span_kind == SpanKind::Client)
            .expect("client span");
        assert_eq!(server.name, "POST /api/order");
        assert_eq!(server.parent_span_id.to_string(), "b7ad6b7169203331");
        assert_eq!(
            server.span_context.trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(client.parent_span_id, server.span_context.span_id());
        assert!(
            client.attributes.iter().any(
                |kv| kv.key.as_str() == "server.address" && kv.value.as_str() == "factory.test"
            )
        );
        assert_eq!(
            sent.lock().as_slice(),
            [format!(
                "00-0af7651916cd43dd8448eb211c80319c-{}-01",
                client.span_context.span_id()
            )]
        );
    }

    #[tokio::test]
    async fn without_traces_the_callers_traceparent_passes_untouched() {
        let sent = Arc::default();
        let svc = stack(Tracing::disabled(), Arc::clone(&sent));
        svc.oneshot(traced_request()).await.expect("answer");
        assert_eq!(sent.lock().as_slice(), [CALLER.to_owned()]);
    }

    #[tokio::test]
    async fn a_request_dropped_unanswered_still_ends_its_spans() {
        let (tracing, collected, _provider) = testing::tracing();
        let metrics = Arc::new(Metrics::new("f"));
        let mut svc = ServerTelemetryLayer::new(metrics.clone(), Arc::default())
            .with_tracing(tracing.clone())
            .layer(tower::util::MapRequest::new(
                ClientTelemetryLayer::new(metrics)
                    .with_tracing(tracing)
                    .layer(tower::service_fn(|_req: Arc<Request<bytes::Bytes>>| {
                        std::future::pending::<Result<Response<ProxyBody>, BoxError>>()
                    })),
                Arc::new,
            ));
        drop(svc.call(traced_request()));
        let spans = collected.0.lock();
        assert_eq!(spans.len(), 2, "{spans:?}");
        for s in spans.iter() {
            assert!(
                s.attributes
                    .iter()
                    .any(|kv| kv.key.as_str() == "error.type" && kv.value.as_str() == "cancelled"),
                "{s:?}"
            );
        }
    }
}
