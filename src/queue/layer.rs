//! [`AsyncOrderLayer`]: the one place an async order is queued. It sits
//! above the deadline layer (so it sees the order's final outcome, every
//! try and wait included) and is in the stack only when a queue is
//! configured.
//!
//! An order request (`POST` to an order route) that prefers
//! `respond-async` is queued instead of failed when the circuit is open
//! (checked before anything is sent: the order is neither sent nor parked)
//! or when the stack below ends it with a sidecar-made timeout,
//! unreachable or circuit-open error. The `202` leaves only once the order
//! is durable; if it cannot be stored, the request gets today's answer.
//! `GET /orders/<id>` is answered here too. Every other request goes
//! straight through: one path comparison, no allocation.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, Request, Response};

use super::http::{accepted, order_answer};
use super::prefer::wants_async;
use super::{Queue, QueuedBecause};
use crate::boxed::BoxError;
use crate::error::{ErrorKind, kind_of};
use crate::proxy::body::ProxyBody;
use crate::resilience::breaker::CircuitState;
use tower::ServiceExt;

/// Where order status is read: `GET /orders/<id>` on the proxy listener.
pub const ORDERS_PREFIX: &str = "/orders/";

/// The order routes: the paths whose `POST` may be queued. The one place
/// they are read (`[orders] paths` once that section exists).
pub fn order_routes() -> &'static [&'static str] {
    &["/api/order"]
}

fn is_order(req: &Request<Bytes>) -> bool {
    req.method() == Method::POST && order_routes().contains(&req.uri().path())
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct AsyncOrderLayer {
    queue: Arc<Queue>,
}

impl AsyncOrderLayer {
    pub fn new(queue: Arc<Queue>) -> Self {
        Self { queue }
    }
}

impl<S> tower::Layer<S> for AsyncOrderLayer {
    type Service = AsyncOrders<S>;
    fn layer(&self, inner: S) -> AsyncOrders<S> {
        AsyncOrders {
            inner,
            queue: Arc::clone(&self.queue),
        }
    }
}

/// See [`AsyncOrderLayer`].
#[derive(Debug, Clone)]
pub struct AsyncOrders<S> {
    inner: S,
    queue: Arc<Queue>,
}

type Boxed = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, BoxError>> + Send>>;

pin_project_lite::pin_project! {
    /// Straight through, or the async path (boxed: it is the rare one).
    #[project = AsyncFutureProj]
    pub enum AsyncFuture<F> {
        Through { #[pin] inner: F },
        Async { fut: Boxed },
    }
}

impl<F> Future for AsyncFuture<F>
where
    F: Future<Output = Result<Response<ProxyBody>, BoxError>>,
{
    type Output = Result<Response<ProxyBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            AsyncFutureProj::Through { inner } => inner.poll(cx),
            AsyncFutureProj::Async { fut } => fut.as_mut().poll(cx),
        }
    }
}

/// Which sidecar-made failure makes a queueable order, and why.
fn queueable(err: &(dyn std::error::Error + 'static)) -> Option<QueuedBecause> {
    match kind_of(err) {
        ErrorKind::CircuitOpen => Some(QueuedBecause::CircuitOpen),
        ErrorKind::Timeout => Some(QueuedBecause::Timeout),
        ErrorKind::Unreachable => Some(QueuedBecause::Unreachable),
        _ => None,
    }
}

impl<S> tower::Service<Request<Bytes>> for AsyncOrders<S>
where
    S: tower::Service<Request<Bytes>, Response = Response<ProxyBody>, Error = BoxError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<ProxyBody>;
    type Error = BoxError;
    type Future = AsyncFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Bytes>) -> Self::Future {
        if req.method() == Method::GET
            && let Some(id) = req.uri().path().strip_prefix(ORDERS_PREFIX)
        {
            let queue = Arc::clone(&self.queue);
            let id = id.to_owned();
            let headers = req.headers().clone();
            return AsyncFuture::Async {
                fut: Box::pin(async move { order_answer(&queue, &id, &headers).await }),
            };
        }
        if !is_order(&req) || !wants_async(req.headers()) || !self.queue.is_accepting() {
            return AsyncFuture::Through {
                inner: self.inner.call(req),
            };
        }
        let queue = Arc::clone(&self.queue);
        let (parts, body) = req.into_parts();
        // Circuit open: not sent, not parked; queued at once.
        let inner = (queue.breaker().state() != CircuitState::Open).then(|| {
            let mut copy = Request::new(body.clone());
            *copy.method_mut() = parts.method.clone();
            *copy.uri_mut() = parts.uri.clone();
            *copy.version_mut() = parts.version;
            *copy.headers_mut() = parts.headers.clone();
            self.inner.call(copy)
        });
        // For an order that could not be stored and was not sent yet.
        let fallback = inner.is_none().then(|| self.inner.clone());
        AsyncFuture::Async {
            fut: Box::pin(async move {
                let (because, failure) = match inner {
                    None => (QueuedBecause::CircuitOpen, None),
                    Some(fut) => match fut.await {
                        Ok(res) => return Ok(res),
                        Err(e) => match queueable(e.as_ref()) {
                            Some(because) => (because, Some(e)),
                            None => return Err(e),
                        },
                    },
                };
                match queue.accept(&parts, &body, because).await {
                    Ok(record) => Ok(accepted(&record)),
                    // Not stored: the answer it would have had without the queue.
                    Err(store_error) => {
                        tracing::warn!(error = %store_error, "async order not queued");
                        match (failure, fallback) {
                            (Some(e), _) => Err(e),
                            (None, Some(svc)) => {
                                svc.oneshot(Request::from_parts(parts, body)).await
                            }
                            (None, None) => Err(Box::new(store_error)),
                        }
                    }
                }
            }),
        }
    }
}
