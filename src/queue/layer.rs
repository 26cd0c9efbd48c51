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

use super::http::{ORDERS_PREFIX, accepted, order_answer};
use super::prefer::wants_async;
use super::{Queue, QueuedBecause};
use crate::boxed::BoxError;
use crate::error::{ErrorKind, kind_of};
use crate::orders::OrderRoutes;
use crate::proxy::body::ProxyBody;
use crate::proxy::buffered::BufferedStack;
use crate::resilience::breaker::CircuitState;
use tower::ServiceExt;

/// See the module docs.
#[derive(Debug, Clone)]
pub struct AsyncOrderLayer {
    queue: Arc<Queue>,
    routes: Arc<OrderRoutes>,
}

impl AsyncOrderLayer {
    /// Orders are the `POST`s to `routes` (`[orders] paths`, shared with
    /// the deadline and retry layers).
    pub fn new(queue: Arc<Queue>, routes: Arc<OrderRoutes>) -> Self {
        Self { queue, routes }
    }
}

impl<S> tower::Layer<S> for AsyncOrderLayer {
    type Service = AsyncOrders<S>;
    fn layer(&self, inner: S) -> AsyncOrders<S> {
        AsyncOrders {
            inner,
            queue: Arc::clone(&self.queue),
            routes: Arc::clone(&self.routes),
        }
    }
}

/// See [`AsyncOrderLayer`].
#[derive(Debug, Clone)]
pub struct AsyncOrders<S> {
    inner: S,
    queue: Arc<Queue>,
    routes: Arc<OrderRoutes>,
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

impl<S: BufferedStack> tower::Service<Request<Bytes>> for AsyncOrders<S> {
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
        if !self.routes.matches(&req) || !wants_async(req.headers()) || !self.queue.is_accepting() {
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use http::StatusCode;
    use tower::{Layer, ServiceExt};

    use super::*;

    fn routes() -> Arc<OrderRoutes> {
        Arc::new(OrderRoutes::new(&["/api/order"]))
    }
    use crate::config::{BreakerConfig, QueueConfig};
    use crate::proxy::client::UpstreamError;
    use crate::queue::record::OrderRecord;
    use crate::queue::store::{Claim, Lookup, QueueStats, Store, StoreError, StoreFuture};
    use crate::resilience::breaker::Breaker;
    use crate::telemetry::Metrics;
    use crate::telemetry::metrics::AsyncOffReason;

    /// A store that keeps nothing and can be told the disk is full.
    #[derive(Default)]
    struct FakeStore {
        full: AtomicBool,
        enqueued: AtomicUsize,
    }

    impl Store for FakeStore {
        fn backend(&self) -> &'static str {
            "fake"
        }
        fn enqueue(&self, _: OrderRecord) -> StoreFuture<'_, ()> {
            let full = self.full.load(Ordering::SeqCst);
            if !full {
                self.enqueued.fetch_add(1, Ordering::SeqCst);
            }
            Box::pin(async move {
                if full {
                    Err(StoreError::Full(
                        "No space left on device (os error 28)".into(),
                    ))
                } else {
                    Ok(())
                }
            })
        }
        fn claim(&self, _: u64) -> StoreFuture<'_, Option<Claim>> {
            Box::pin(async { Ok(None) })
        }
        fn finish(&self, _: Claim, _: OrderRecord) -> StoreFuture<'_, ()> {
            Box::pin(async { Ok(()) })
        }
        fn get(&self, _: crate::queue::OrderId) -> StoreFuture<'_, Option<Lookup>> {
            Box::pin(async { Ok(None) })
        }
        fn stats(&self) -> StoreFuture<'_, QueueStats> {
            Box::pin(async { Ok(QueueStats::default()) })
        }
        fn dead_letters(&self) -> StoreFuture<'_, Vec<OrderRecord>> {
            Box::pin(async { Ok(vec![]) })
        }
        fn drop_dead_letter(&self, _: crate::queue::OrderId) -> StoreFuture<'_, bool> {
            Box::pin(async { Ok(false) })
        }
        fn expire(&self, _: u64) -> StoreFuture<'_, u64> {
            Box::pin(async { Ok(0) })
        }
        fn check(&self) -> StoreFuture<'_, ()> {
            let full = self.full.load(Ordering::SeqCst);
            Box::pin(async move {
                if full {
                    Err(StoreError::Full("still full".into()))
                } else {
                    Ok(())
                }
            })
        }
    }

    fn queue(store: Arc<FakeStore>) -> Arc<Queue> {
        let metrics = Arc::new(Metrics::default());
        Queue::with_store(
            &QueueConfig::default(),
            Some(store as Arc<dyn Store>),
            None,
            None,
            Breaker::new(&BreakerConfig::default(), Arc::clone(&metrics)),
            metrics,
        )
    }

    /// The stack below: the factory cannot be reached; counts calls.
    fn unreachable(calls: Arc<AtomicUsize>) -> impl BufferedStack {
        tower::service_fn(move |_req: Request<Bytes>| {
            calls.fetch_add(1, Ordering::SeqCst);
            async {
                let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
                Err::<Response<ProxyBody>, BoxError>(Box::new(UpstreamError::new(
                    "cannot connect",
                    io,
                )))
            }
        })
    }

    fn order(prefer: Option<&str>) -> Request<Bytes> {
        let mut b = Request::post("/api/order").header("authorization", "Bearer k");
        if let Some(p) = prefer {
            b = b.header("prefer", p);
        }
        b.body(Bytes::from_static(b"{}")).expect("request")
    }

    #[tokio::test]
    async fn only_async_orders_are_queued() {
        let store = Arc::new(FakeStore::default());
        let calls = Arc::new(AtomicUsize::new(0));
        let svc = AsyncOrderLayer::new(queue(Arc::clone(&store)), routes())
            .layer(unreachable(calls.clone()));

        let err = svc
            .clone()
            .oneshot(order(None))
            .await
            .expect_err("as today");
        assert_eq!(kind_of(err.as_ref()), ErrorKind::Unreachable);
        let mut verify = order(Some("respond-async"));
        *verify.uri_mut() = "/api/order/verify".parse().expect("uri");
        assert!(
            svc.clone().oneshot(verify).await.is_err(),
            "not an order route"
        );
        assert_eq!(store.enqueued.load(Ordering::SeqCst), 0);

        let res = svc
            .clone()
            .oneshot(order(Some("wait=5, Respond-Async")))
            .await
            .expect("202");
        assert_eq!(res.status(), StatusCode::ACCEPTED);
        assert_eq!(res.headers()["preference-applied"], "respond-async");
        assert!(
            res.headers()["location"]
                .to_str()
                .expect("ascii")
                .starts_with("/orders/")
        );
        assert_eq!(store.enqueued.load(Ordering::SeqCst), 1);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            3,
            "every order was tried first"
        );
    }

    #[tokio::test]
    async fn an_open_circuit_queues_without_sending() {
        let store = Arc::new(FakeStore::default());
        let calls = Arc::new(AtomicUsize::new(0));
        let q = queue(Arc::clone(&store));
        q.breaker().force_open().expect("enabled");
        let svc = AsyncOrderLayer::new(Arc::clone(&q), routes()).layer(unreachable(calls.clone()));
        let res = svc
            .oneshot(order(Some("respond-async")))
            .await
            .expect("202");
        assert_eq!(res.status(), StatusCode::ACCEPTED);
        assert_eq!(calls.load(Ordering::SeqCst), 0, "not sent, not parked");
    }

    #[tokio::test]
    async fn a_full_disk_gives_todays_answer_and_turns_async_off_until_it_clears() {
        let store = Arc::new(FakeStore::default());
        store.full.store(true, Ordering::SeqCst);
        let calls = Arc::new(AtomicUsize::new(0));
        let q = queue(Arc::clone(&store));
        let svc = AsyncOrderLayer::new(Arc::clone(&q), routes()).layer(unreachable(calls.clone()));

        let err = svc
            .clone()
            .oneshot(order(Some("respond-async")))
            .await
            .expect_err("today's answer");
        assert_eq!(kind_of(err.as_ref()), ErrorKind::Unreachable);
        assert!(!q.is_accepting());
        let off = q.off().expect("off");
        assert_eq!(off.reason, AsyncOffReason::DiskFull);
        assert!(off.message.contains("No space left"), "{}", off.message);
        let text = q.metrics.prometheus_text();
        assert!(
            text.contains("sidecar_queue_async_off{reason=\"disk_full\"} 1"),
            "{text}"
        );

        // Off: an async order is not even considered.
        let _ = svc.clone().oneshot(order(Some("respond-async"))).await;
        assert_eq!(store.enqueued.load(Ordering::SeqCst), 0);

        // With the circuit open and the store failing, the order is not lost
        // in silence: it goes down the stack as it would without a queue.
        store.full.store(false, Ordering::SeqCst);
        q.set_on();
        store.full.store(true, Ordering::SeqCst);
        q.breaker().force_open().expect("enabled");
        let before = calls.load(Ordering::SeqCst);
        let _ = svc.clone().oneshot(order(Some("respond-async"))).await;
        assert_eq!(
            calls.load(Ordering::SeqCst),
            before + 1,
            "fell back to the stack"
        );

        store.full.store(false, Ordering::SeqCst);
        assert!(q.store().expect("store").check().await.is_ok());
        q.set_on();
        assert!(q.is_accepting());
        assert!(
            q.metrics
                .prometheus_text()
                .contains("sidecar_queue_async_off{reason=\"disk_full\"} 0")
        );
    }
}
