//! The two places the stack is measured.
//!
//! [`ServerTelemetryLayer`] sits outermost and sees every request from the
//! service with the answer that really went back (the sidecar's own error
//! answers included): `http.server.request.duration` with `sidecar.outcome`,
//! and the per-status-class counts `/status` shows. [`ClientTelemetryLayer`]
//! sits inside the retry loop and sees each try to the factory:
//! `http.client.request.duration` with the status or `error.type`. Durations
//! run to the answer's head (the body streams on afterwards).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use http::{Method, Request, Response};
use tokio::time::Instant;
use tower::{Layer, Service};

use crate::admin::AdminPart;
use crate::error::{BoxError, RequestOutcome};
use crate::proxy::body::ProxyBody;
use crate::resilience::classify::{Outcome, classify_error};
use crate::telemetry::metrics::{ClientResult, Metrics, Route};

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
}

impl ServerTelemetryLayer {
    pub fn new(metrics: Arc<Metrics>, counts: Arc<RequestCounts>) -> Self {
        Self { metrics, counts }
    }
}

impl<S> Layer<S> for ServerTelemetryLayer {
    type Service = ServerTelemetry<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ServerTelemetry {
            inner,
            metrics: self.metrics.clone(),
            counts: self.counts.clone(),
        }
    }
}

/// See [`ServerTelemetryLayer`].
#[derive(Debug, Clone)]
pub struct ServerTelemetry<S> {
    inner: S,
    metrics: Arc<Metrics>,
    counts: Arc<RequestCounts>,
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
        let method = req.method().clone();
        let route = Route::of(req.uri().path());
        ServerFuture {
            inner: self.inner.call(req),
            started: Instant::now(),
            method,
            route,
            metrics: self.metrics.clone(),
            counts: self.counts.clone(),
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
    }
}

impl<F, E> Future for ServerFuture<F>
where
    F: Future<Output = Result<Response<ProxyBody>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        if let Ok(res) = &result {
            let status = res.status();
            this.counts.record(status);
            this.metrics.server_request(
                this.method,
                *this.route,
                status,
                RequestOutcome::of(res),
                this.started.elapsed(),
            );
        }
        Poll::Ready(result)
    }
}

/// Measures each try to the factory (inside the retry loop).
#[derive(Debug, Clone)]
pub struct ClientTelemetryLayer {
    metrics: Arc<Metrics>,
}

impl ClientTelemetryLayer {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for ClientTelemetryLayer {
    type Service = ClientTelemetry<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ClientTelemetry {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// See [`ClientTelemetryLayer`].
#[derive(Debug, Clone)]
pub struct ClientTelemetry<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B> Service<Request<B>> for ClientTelemetry<S>
where
    S: Service<Request<B>, Response = Response<ProxyBody>, Error = BoxError>,
{
    type Response = Response<ProxyBody>;
    type Error = BoxError;
    type Future = ClientFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        ClientFuture {
            method: req.method().clone(),
            inner: self.inner.call(req),
            started: Instant::now(),
            metrics: self.metrics.clone(),
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
            Ok(res) => Some(ClientResult::Status(res.status())),
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
        Poll::Ready(result)
    }
}
