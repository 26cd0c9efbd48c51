//! Deadlines: `request_timeout` over the whole request, `attempt_timeout` per try.
//!
//! Two layers, because the two limits answer different questions.
//! [`DeadlineLayer`] sits above retry: it fixes the moment the diner stops
//! waiting (all tries and all backoff included), publishes it to the layers
//! below ([`Deadline::current`]), and fails the request with
//! [`DeadlineExceeded`] when it passes. [`AttemptTimeoutLayer`] sits below the
//! breaker and bounds one try by `attempt_timeout`, clipped to the time left
//! to the deadline: a try never outlives the request. Its
//! [`AttemptTimedOut`] is a factory failure (the breaker counts it, retry may
//! retry it); a try that would start after the deadline is not started at all.
//!
//! The deadline travels as a task-local set while the layer calls and polls
//! the stack below it, not as a request extension: the first extension on a
//! request costs three allocations (the map, its table, the boxed value),
//! and every order would pay them. Work below the layer that leaves its
//! poll (a spawned task) does not see it, and needs no deadline of its own.
//!
//! Orders with patience ([`crate::orders`]) get `orders.patience` instead of
//! `request_timeout`, and are marked *patient* in the task-local: the
//! attempt timeout leaves their tries alone (a slow try is not a failed
//! one; the retry layer hedges it instead, with the timer this layer would
//! have used).
//!
//! Both read `tokio::time::Instant`, so paused-clock tests drive them. The
//! timer is a [`Sleep`] stored inside the response future: no allocation.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use std::sync::Arc;

use http::Request;
use tokio::time::{Instant, Sleep, sleep_until};

use crate::boxed::BoxError;
use crate::orders::routes::OrderRoutes;

/// The whole request (all tries and backoff) ran past `request_timeout`.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("request deadline exceeded")]
pub struct DeadlineExceeded;

/// One try ran past `attempt_timeout`.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("factory did not answer within the attempt timeout")]
pub struct AttemptTimedOut;

/// What the deadline layer publishes to the layers below it.
#[derive(Debug, Clone, Copy)]
struct Scope {
    at: Instant,
    /// An order with patience: its tries are not cut by `attempt_timeout`.
    patient: bool,
}

tokio::task_local! {
    /// See [`Deadline`].
    static DEADLINE: Scope;
}

/// When the request being served must be answered. Layers below
/// [`DeadlineLayer`] read it to avoid work that cannot finish in time.
#[derive(Debug, Clone, Copy)]
pub struct Deadline;

impl Deadline {
    /// The deadline of the request being called or polled, if a
    /// [`DeadlineLayer`] (or [`Deadline::scope`]) is above.
    pub fn current() -> Option<Instant> {
        DEADLINE.try_with(|s| s.at).ok()
    }

    /// Whether the request being called or polled is an order with
    /// patience (its tries are hedged, not cut: see [`crate::orders`]).
    pub fn patient() -> bool {
        DEADLINE.try_with(|s| s.patient).unwrap_or(false)
    }

    /// Runs `f` with `at` as the deadline (an enclosing one, for a caller
    /// inside the process; [`DeadlineLayer`] keeps the earlier of the two).
    pub fn scope<R>(at: Instant, f: impl FnOnce() -> R) -> R {
        DEADLINE.sync_scope(Scope { at, patient: false }, f)
    }

    /// [`Deadline::scope`] for every poll of `fut`.
    pub async fn within<F: Future>(at: Instant, fut: F) -> F::Output {
        DEADLINE.scope(Scope { at, patient: false }, fut).await
    }

    /// [`Deadline::within`] for an order with patience.
    pub async fn within_patient<F: Future>(at: Instant, fut: F) -> F::Output {
        DEADLINE.scope(Scope { at, patient: true }, fut).await
    }
}

/// `now + d`, saturating at a far future (about 30 years) instead of
/// panicking when a configured duration is absurdly long.
pub(crate) fn later(now: Instant, d: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(86_400 * 365 * 30);
    now.checked_add(d.min(FAR))
        .or_else(|| now.checked_add(Duration::from_secs(86_400)))
        .unwrap_or(now)
}

/// Gives each request a [`Deadline`] of `now + request_timeout` (orders:
/// `now + patience`) and fails it with [`DeadlineExceeded`] when it passes.
/// An earlier enclosing deadline (one set by a caller inside the process)
/// is kept.
#[derive(Debug, Clone)]
pub struct DeadlineLayer {
    timeout: Duration,
    orders: Option<Patient>,
}

/// Orders and their patience, for [`DeadlineLayer::orders`].
#[derive(Debug, Clone)]
struct Patient {
    routes: Arc<OrderRoutes>,
    patience: Duration,
}

impl DeadlineLayer {
    pub fn new(request_timeout: Duration) -> Self {
        Self {
            timeout: request_timeout,
            orders: None,
        }
    }

    /// Requests `routes` matches get `patience` instead of
    /// `request_timeout`, and are patient for the layers below. A zero
    /// `patience` changes nothing (orders fail fast).
    pub fn orders(mut self, routes: Arc<OrderRoutes>, patience: Duration) -> Self {
        self.orders =
            (!patience.is_zero() && !routes.is_empty()).then_some(Patient { routes, patience });
        self
    }
}

impl<S> tower::Layer<S> for DeadlineLayer {
    type Service = DeadlineService<S>;
    fn layer(&self, inner: S) -> DeadlineService<S> {
        DeadlineService {
            inner,
            timeout: self.timeout,
            orders: self.orders.clone(),
        }
    }
}

/// See [`DeadlineLayer`].
#[derive(Debug, Clone)]
pub struct DeadlineService<S> {
    inner: S,
    timeout: Duration,
    orders: Option<Patient>,
}

impl<S, B> tower::Service<Request<B>> for DeadlineService<S>
where
    S: tower::Service<Request<B>, Error = BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = DeadlineFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let (timeout, patient) = match &self.orders {
            Some(o) if o.routes.matches(&req) => (o.patience, true),
            _ => (self.timeout, false),
        };
        let mut at = later(Instant::now(), timeout);
        if let Some(earlier) = Deadline::current() {
            at = at.min(earlier);
        }
        let scope = Scope { at, patient };
        let inner = &mut self.inner;
        DeadlineFuture {
            inner: DEADLINE.sync_scope(scope, || inner.call(req)),
            sleep: sleep_until(at),
            scope,
        }
    }
}

pin_project_lite::pin_project! {
    /// See [`DeadlineLayer`].
    #[derive(Debug)]
    pub struct DeadlineFuture<F> {
        #[pin]
        inner: F,
        #[pin]
        sleep: Sleep,
        scope: Scope,
    }
}

impl<F, T> Future for DeadlineFuture<F>
where
    F: Future<Output = Result<T, BoxError>>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        // The inner future first: when a try's clipped timer and this one fire
        // together, the try's own outcome (a counted timeout) wins.
        let inner = this.inner;
        if let Poll::Ready(r) = DEADLINE.sync_scope(*this.scope, || inner.poll(cx)) {
            return Poll::Ready(r);
        }
        ready!(this.sleep.poll(cx));
        Poll::Ready(Err(Box::new(DeadlineExceeded)))
    }
}

/// Bounds each try by `attempt_timeout`, clipped to the request's
/// [`Deadline`]. Over the limit: [`AttemptTimedOut`]. A try whose deadline
/// has already passed is not started: [`DeadlineExceeded`]. A patient
/// order's try is left alone (no timer at all).
#[derive(Debug, Clone, Copy)]
pub struct AttemptTimeoutLayer {
    timeout: Duration,
}

impl AttemptTimeoutLayer {
    pub fn new(attempt_timeout: Duration) -> Self {
        Self {
            timeout: attempt_timeout,
        }
    }
}

impl<S> tower::Layer<S> for AttemptTimeoutLayer {
    type Service = AttemptTimeout<S>;
    fn layer(&self, inner: S) -> AttemptTimeout<S> {
        AttemptTimeout {
            inner,
            timeout: self.timeout,
        }
    }
}

/// See [`AttemptTimeoutLayer`].
#[derive(Debug, Clone)]
pub struct AttemptTimeout<S> {
    inner: S,
    timeout: Duration,
}

impl<S, R> tower::Service<R> for AttemptTimeout<S>
where
    S: tower::Service<R, Error = BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = AttemptFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        let scope = DEADLINE.try_with(|s| *s).ok();
        if scope.is_some_and(|s| s.patient) {
            return AttemptFuture::Unbounded {
                inner: self.inner.call(req),
            };
        }
        let now = Instant::now();
        let own = later(now, self.timeout);
        let at = match scope {
            Some(s) if s.at <= now => return AttemptFuture::Expired,
            Some(s) => s.at.min(own),
            None => own,
        };
        AttemptFuture::Running {
            inner: self.inner.call(req),
            sleep: sleep_until(at),
        }
    }
}

pin_project_lite::pin_project! {
    /// See [`AttemptTimeoutLayer`].
    #[project = AttemptProj]
    #[derive(Debug)]
    pub enum AttemptFuture<F> {
        Running { #[pin] inner: F, #[pin] sleep: Sleep },
        Unbounded { #[pin] inner: F },
        Expired,
    }
}

impl<F, T> Future for AttemptFuture<F>
where
    F: Future<Output = Result<T, BoxError>>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            AttemptProj::Running { inner, sleep } => {
                if let Poll::Ready(r) = inner.poll(cx) {
                    return Poll::Ready(r);
                }
                ready!(sleep.poll(cx));
                Poll::Ready(Err(Box::new(AttemptTimedOut)))
            }
            AttemptProj::Unbounded { inner } => inner.poll(cx),
            AttemptProj::Expired => Poll::Ready(Err(Box::new(DeadlineExceeded))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use tower::{Layer, ServiceExt, service_fn};

    use super::*;
    use crate::resilience::classify::{FailureKind, Outcome, classify_error};

    /// An inner service that answers after `delay` and reports the deadline it saw.
    fn slow(
        delay: Duration,
        calls: Arc<AtomicU32>,
    ) -> impl tower::Service<Request<()>, Response = Option<Instant>, Error = BoxError, Future: Send>
    + Clone {
        service_fn(move |req: Request<()>| {
            calls.fetch_add(1, Ordering::SeqCst);
            let _ = req;
            let seen = Deadline::current();
            async move {
                tokio::time::sleep(delay).await;
                Ok::<_, BoxError>(seen)
            }
        })
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_is_published_and_enforced() {
        let calls = Arc::new(AtomicU32::new(0));
        let start = Instant::now();
        let svc = DeadlineLayer::new(Duration::from_secs(2))
            .layer(slow(Duration::from_millis(500), calls.clone()));
        let seen = svc
            .clone()
            .oneshot(Request::new(()))
            .await
            .expect("in time");
        assert_eq!(seen, Some(start + Duration::from_secs(2)));

        let svc = DeadlineLayer::new(Duration::from_secs(2))
            .layer(slow(Duration::from_secs(3), calls.clone()));
        let err = svc.oneshot(Request::new(())).await.expect_err("too slow");
        assert!(err.is::<DeadlineExceeded>());
        assert_eq!(classify_error(err.as_ref()), Outcome::Aborted);
        assert_eq!(Instant::now(), start + Duration::from_millis(2_500));
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_deadline_on_the_request_is_kept() {
        let calls = Arc::new(AtomicU32::new(0));
        let start = Instant::now();
        let svc =
            DeadlineLayer::new(Duration::from_secs(20)).layer(slow(Duration::ZERO, calls.clone()));
        let seen = Deadline::within(
            start + Duration::from_secs(1),
            svc.oneshot(Request::new(())),
        )
        .await
        .expect("answer");
        assert_eq!(seen, Some(start + Duration::from_secs(1)));
    }

    #[tokio::test(start_paused = true)]
    async fn attempt_timeout_alone() {
        let calls = Arc::new(AtomicU32::new(0));
        let start = Instant::now();
        let svc = AttemptTimeoutLayer::new(Duration::from_secs(5))
            .layer(slow(Duration::from_secs(32), calls.clone()));
        let err = svc.oneshot(Request::new(())).await.expect_err("timeout");
        assert!(err.is::<AttemptTimedOut>());
        assert_eq!(
            classify_error(err.as_ref()),
            Outcome::Failure(FailureKind::Timeout)
        );
        assert_eq!(Instant::now(), start + Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn attempt_timeout_is_clipped_by_the_deadline() {
        let calls = Arc::new(AtomicU32::new(0));
        let start = Instant::now();
        let svc = AttemptTimeoutLayer::new(Duration::from_secs(5))
            .layer(slow(Duration::from_secs(32), calls.clone()));
        let err = Deadline::within(
            start + Duration::from_millis(1_200),
            svc.oneshot(Request::new(())),
        )
        .await
        .expect_err("timeout");
        assert!(err.is::<AttemptTimedOut>());
        assert_eq!(Instant::now(), start + Duration::from_millis(1_200));
    }

    #[tokio::test(start_paused = true)]
    async fn no_try_starts_past_the_deadline() {
        let calls = Arc::new(AtomicU32::new(0));
        let start = Instant::now();
        let svc = AttemptTimeoutLayer::new(Duration::from_secs(5))
            .layer(slow(Duration::ZERO, calls.clone()));
        let err = Deadline::within(start, svc.oneshot(Request::new(())))
            .await
            .expect_err("expired");
        assert!(err.is::<DeadlineExceeded>());
        assert_eq!(calls.load(Ordering::SeqCst), 0, "inner must not be called");
    }

    #[tokio::test(start_paused = true)]
    async fn orders_get_patience_and_their_tries_are_not_cut() {
        let calls = Arc::new(AtomicU32::new(0));
        let start = Instant::now();
        let routes = Arc::new(OrderRoutes::new(&["/api/order"]));
        let inner = AttemptTimeoutLayer::new(Duration::from_secs(5))
            .layer(slow(Duration::from_secs(32), calls.clone()));
        let svc = DeadlineLayer::new(Duration::from_secs(20))
            .orders(routes, Duration::from_secs(60))
            .layer(inner);
        let order = || {
            let mut r = Request::new(());
            *r.method_mut() = http::Method::POST;
            *r.uri_mut() = "/api/order".parse().expect("uri");
            r
        };
        // 32 s is past both attempt_timeout and request_timeout: waited for.
        let seen = svc.clone().oneshot(order()).await.expect("waited for");
        assert_eq!(seen, Some(start + Duration::from_secs(60)));
        assert_eq!(Instant::now(), start + Duration::from_secs(32));
        // Any other request keeps request_timeout and the attempt timeout.
        let err = svc
            .oneshot(Request::new(()))
            .await
            .expect_err("cut by the attempt timeout");
        assert!(err.is::<AttemptTimedOut>());
    }

    #[tokio::test(start_paused = true)]
    async fn zero_patience_leaves_orders_alone() {
        let layer = DeadlineLayer::new(Duration::from_secs(20))
            .orders(Arc::new(OrderRoutes::new(&["/api/order"])), Duration::ZERO);
        assert!(layer.orders.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn both_layers_together_end_with_the_counted_timeout() {
        // request_timeout == attempt timer after clipping: the try's own
        // timeout must surface (so the breaker counts it), not the deadline.
        let calls = Arc::new(AtomicU32::new(0));
        let inner = AttemptTimeoutLayer::new(Duration::from_secs(5))
            .layer(slow(Duration::from_secs(32), calls.clone()));
        let svc = DeadlineLayer::new(Duration::from_secs(3)).layer(inner);
        let err = svc.oneshot(Request::new(())).await.expect_err("timeout");
        assert!(err.is::<AttemptTimedOut>(), "got {err}");
    }
}
