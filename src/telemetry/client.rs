//! `ClientTelemetryLayer`: one measurement per try to the factory, below
//! the breaker and retry layers (so every try counts, and a request the
//! breaker refused counts none).
//!
//! Per try: a client span (when traces are on) whose context goes to the
//! factory in `traceparent`, and `http.client.request.duration` with the
//! status code, or `error.type` from the one classifier
//! ([`crate::resilience::classify`]): `connect`, `timeout`, `5xx` (with the
//! status), `badjwt` (with the 2xx status), `cancelled` when the stack
//! dropped the try (overall deadline, diner gone), `_OTHER` otherwise.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, ready};

use http::{Method, Request, Response};
use opentelemetry::trace::{Status, TraceContextExt as _};
use opentelemetry::{Context, KeyValue};
use tokio::time::Instant;

use super::metrics::{ClientResult, ERROR_TYPE_CANCELLED, ERROR_TYPE_OTHER, Metrics, Route, attr};
use super::trace::Tracing;
use crate::error::BoxError;
use crate::proxy::body::ProxyBody;
use crate::resilience::classify::{FailureKind, Outcome, classify_error, classify_response};

#[derive(Debug)]
struct Shared {
    metrics: Arc<Metrics>,
    tracing: Tracing,
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct ClientTelemetryLayer {
    shared: Arc<Shared>,
}

impl ClientTelemetryLayer {
    pub fn new(metrics: Arc<Metrics>, tracing: Tracing) -> Self {
        ClientTelemetryLayer {
            shared: Arc::new(Shared { metrics, tracing }),
        }
    }
}

impl<S> tower::Layer<S> for ClientTelemetryLayer {
    type Service = ClientTelemetry<S>;
    fn layer(&self, inner: S) -> ClientTelemetry<S> {
        ClientTelemetry {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// See [`ClientTelemetryLayer`].
#[derive(Debug, Clone)]
pub struct ClientTelemetry<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S, B> tower::Service<Request<B>> for ClientTelemetry<S>
where
    S: tower::Service<Request<B>, Response = Response<ProxyBody>, Error = BoxError>,
{
    type Response = Response<ProxyBody>;
    type Error = BoxError;
    type Future = ClientFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let start = Instant::now();
        let method = req.method().clone();
        let span = if self.shared.tracing.is_enabled() {
            let route = Route::of(req.uri().path());
            let (server_address, tracing) =
                (self.shared.metrics.server_address(), &self.shared.tracing);
            tracing.client_span(req.headers_mut(), &method, server_address, route)
        } else {
            None
        };
        ClientFuture {
            fut: self.inner.call(req),
            record: Some(Record {
                start,
                method,
                span,
                shared: self.shared.clone(),
            }),
        }
    }
}

struct Record {
    start: Instant,
    method: Method,
    span: Option<Context>,
    shared: Arc<Shared>,
}

impl Record {
    fn finish(self, result: &Result<Response<ProxyBody>, BoxError>) {
        let elapsed = self.start.elapsed();
        let m = &self.shared.metrics;
        let (status, error_type): (Option<u16>, Option<&'static str>) = match result {
            Ok(res) => {
                let status = res.status();
                match classify_response(res) {
                    Outcome::Failure(kind) if kind != FailureKind::Status5xx => {
                        m.client_answer_failed(&self.method, status, kind, elapsed);
                        (Some(status.as_u16()), Some(kind.as_str()))
                    }
                    _ => {
                        m.client_request(&self.method, ClientResult::Status(status), elapsed);
                        let error = status
                            .is_server_error()
                            .then_some(FailureKind::Status5xx.as_str());
                        (Some(status.as_u16()), error)
                    }
                }
            }
            Err(e) => match classify_error(e.as_ref()) {
                Outcome::Failure(kind) => {
                    m.client_request(&self.method, ClientResult::Error(kind), elapsed);
                    (None, Some(kind.as_str()))
                }
                _ => {
                    m.client_other_error(&self.method, elapsed);
                    (None, Some(ERROR_TYPE_OTHER))
                }
            },
        };
        if let Some(cx) = self.span {
            let span = cx.span();
            if let Some(s) = status {
                span.set_attribute(KeyValue::new(attr::HTTP_RESPONSE_STATUS_CODE, i64::from(s)));
            }
            if let Some(e) = error_type {
                span.set_attribute(KeyValue::new(attr::ERROR_TYPE, e));
                span.set_status(Status::error(e));
            } else if status.is_some_and(|s| s >= 400) {
                // Client spans: a 4xx is an error too (the server's is not).
                span.set_status(Status::error("4xx"));
            }
            span.end();
        }
    }

    fn cancelled(self) {
        self.shared
            .metrics
            .client_cancelled(&self.method, self.start.elapsed());
        if let Some(cx) = self.span {
            let span = cx.span();
            span.set_attribute(KeyValue::new(attr::ERROR_TYPE, ERROR_TYPE_CANCELLED));
            span.set_status(Status::error(ERROR_TYPE_CANCELLED));
            span.end();
        }
    }
}

pin_project_lite::pin_project! {
    /// See [`ClientTelemetry`].
    pub struct ClientFuture<F> {
        #[pin]
        fut: F,
        record: Option<Record>,
    }

    impl<F> PinnedDrop for ClientFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(record) = this.project().record.take() {
                record.cancelled();
            }
        }
    }
}

impl<F> Future for ClientFuture<F>
where
    F: Future<Output = Result<Response<ProxyBody>, BoxError>>,
{
    type Output = Result<Response<ProxyBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.fut.poll(cx));
        if let Some(record) = this.record.take() {
            record.finish(&result);
        }
        Poll::Ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::client::UpstreamError;
    use crate::resilience::classify::BadJwt;
    use crate::telemetry::trace::testing;
    use http::StatusCode;
    use opentelemetry::trace::SpanKind;
    use tower::{Layer as _, Service as _, ServiceExt as _};

    fn answer(status: StatusCode, bad_jwt: bool) -> Response<ProxyBody> {
        let mut res = Response::new(ProxyBody::empty());
        *res.status_mut() = status;
        if bad_jwt {
            res.extensions_mut().insert(BadJwt);
        }
        res
    }

    fn count_line(text: &str, labels: &str) -> Option<String> {
        let prefix = format!("http_client_request_duration_seconds_count{{{labels}}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
    }

    #[tokio::test]
    async fn each_try_is_measured_by_status_or_error_type() {
        let metrics = Arc::new(Metrics::new("factory.test"));
        let layer = ClientTelemetryLayer::new(metrics.clone(), Tracing::disabled());
        let script = Arc::new(parking_lot::Mutex::new(vec![
            Ok(answer(StatusCode::OK, false)),
            Ok(answer(StatusCode::INTERNAL_SERVER_ERROR, false)),
            Ok(answer(StatusCode::OK, true)),
            Err::<Response<ProxyBody>, BoxError>(Box::new(UpstreamError::new(
                "connect",
                std::io::Error::other("refused"),
            ))),
            Err(Box::new(crate::resilience::deadline::AttemptTimedOut)),
        ]));
        let svc = layer.layer(tower::service_fn(move |_req: Request<bytes::Bytes>| {
            let next = script.lock().remove(0);
            async move { next }
        }));
        for _ in 0..5 {
            let _ = svc
                .clone()
                .oneshot(
                    Request::post("/api/order")
                        .body(bytes::Bytes::new())
                        .expect("req"),
                )
                .await;
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
                count_line(&text, &labels).as_deref(),
                Some("1"),
                "{labels} in\n{text}"
            );
        }
    }

    #[tokio::test]
    async fn a_dropped_try_counts_as_cancelled() {
        let metrics = Arc::new(Metrics::new("f"));
        let layer = ClientTelemetryLayer::new(metrics.clone(), Tracing::disabled());
        let mut svc = layer.layer(tower::service_fn(|_req: Request<()>| {
            std::future::pending::<Result<Response<ProxyBody>, BoxError>>()
        }));
        drop(svc.call(Request::get("/api/order").body(()).expect("req")));
        let text = metrics.prometheus_text();
        assert_eq!(
            count_line(
                &text,
                "error_type=\"cancelled\",http_request_method=\"GET\",server_address=\"f\""
            )
            .as_deref(),
            Some("1"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn each_try_gets_a_child_span_whose_context_goes_upstream() {
        let (tracing, collected, _provider) = testing::tracing();
        let metrics = Arc::new(Metrics::new("factory.test"));
        let layer = ClientTelemetryLayer::new(metrics, tracing.clone());
        let seen = Arc::new(parking_lot::Mutex::new(Vec::<String>::new()));
        let seen2 = seen.clone();
        let svc = layer.layer(tower::service_fn(move |req: Request<()>| {
            if let Some(tp) = req
                .headers()
                .get("traceparent")
                .and_then(|v| v.to_str().ok())
            {
                seen2.lock().push(tp.to_owned());
            }
            async { Ok::<_, BoxError>(answer(StatusCode::OK, false)) }
        }));
        let headers = {
            let mut h = http::HeaderMap::new();
            h.insert(
                "traceparent",
                http::HeaderValue::from_static(
                    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                ),
            );
            h
        };
        let server = tracing
            .server_span(
                &headers,
                &Method::POST,
                http::Version::HTTP_11,
                Route::Order,
                None,
            )
            .expect("span");
        let server_id = server.span().span_context().span_id();
        {
            use opentelemetry::context::FutureExt as _;
            let req = Request::post("/api/order")
                .header(
                    "traceparent",
                    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                )
                .body(())
                .expect("req");
            svc.clone()
                .oneshot(req)
                .with_context(server.clone())
                .await
                .expect("ok");
        }
        server.span().end();
        let spans = collected.0.lock();
        let client = spans
            .iter()
            .find(|s| s.span_kind == SpanKind::Client)
            .expect("client span");
        assert_eq!(client.parent_span_id, server_id);
        assert_eq!(client.name, "POST");
        let sent = seen.lock();
        assert_eq!(
            sent.as_slice(),
            [format!(
                "00-0af7651916cd43dd8448eb211c80319c-{}-01",
                client.span_context.span_id()
            )]
        );
    }
}
