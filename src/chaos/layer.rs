//! `ChaosLayer`: the tower layer over the innermost (`Forward`) service.
//!
//! Only `POST /api/order` answers are looked at; every other request passes
//! through untouched and unbuffered, with no task and no allocation added.
//! An order try runs in a spawned task: when the caller stops waiting (the
//! attempt timeout above cuts the try) the task goes on, bounded by
//! `background_timeout` counted from the start of the try, only to learn
//! the report link and resolve it; a throttled factory answers after about
//! 32 s, well after a 5 s attempt timeout, and that late answer is the only
//! place its link is written.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, Request, Response};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tower::{Layer, Service};

use crate::chaos::handle::Chaos;
use crate::chaos::order::order_try;
use crate::chaos::side::SideService;
use crate::error::BoxError;
use crate::proxy::body::ProxyBody;

/// The order try's task ended without an answer (the runtime is shutting down).
#[derive(Debug, thiserror::Error)]
#[error("the order try ended without an answer")]
pub struct TryLost;

/// See the module docs. Made by [`Chaos::layer`].
#[derive(Debug, Clone)]
pub struct ChaosLayer {
    chaos: Arc<Chaos>,
}

impl ChaosLayer {
    pub fn new(chaos: Arc<Chaos>) -> ChaosLayer {
        ChaosLayer { chaos }
    }
}

impl<S> Layer<S> for ChaosLayer
where
    S: Service<Request<Bytes>, Response = Response<ProxyBody>, Error = BoxError>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    type Service = ChaosService<S>;

    fn layer(&self, inner: S) -> ChaosService<S> {
        self.chaos.attach(SideService::new(inner.clone()));
        ChaosService {
            inner,
            chaos: Arc::clone(&self.chaos),
        }
    }
}

/// See [`ChaosLayer`].
#[derive(Debug, Clone)]
pub struct ChaosService<S> {
    inner: S,
    chaos: Arc<Chaos>,
}

/// `POST /api/order` (Express also routes a trailing slash there).
fn is_order<B>(req: &Request<B>) -> bool {
    req.method() == Method::POST && matches!(req.uri().path(), "/api/order" | "/api/order/")
}

impl<S> Service<Request<Bytes>> for ChaosService<S>
where
    S: Service<Request<Bytes>, Response = Response<ProxyBody>, Error = BoxError>,
    S::Future: Send + 'static,
{
    type Response = Response<ProxyBody>;
    type Error = BoxError;
    type Future = ChaosFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Bytes>) -> Self::Future {
        if !self.chaos.inspects() || !is_order(&req) {
            return ChaosFuture::Pass {
                fut: self.inner.call(req),
            };
        }
        let started = Instant::now();
        let answer = self.inner.call(req);
        let (tx, rx) = oneshot::channel();
        tokio::spawn(run(Arc::clone(&self.chaos), answer, started, tx));
        ChaosFuture::Order { rx }
    }
}

type Answer = Result<Response<ProxyBody>, BoxError>;

/// The order try's task: answers the caller, or, once the caller is gone,
/// finishes alone within `background_timeout` of `started`.
async fn run<F>(chaos: Arc<Chaos>, answer: F, started: Instant, mut tx: oneshot::Sender<Answer>)
where
    F: Future<Output = Answer> + Send,
{
    let limit = chaos.config.background_timeout;
    let work = order_try(chaos, answer, started);
    tokio::pin!(work);
    tokio::select! {
        biased;
        out = &mut work => {
            let _ = tx.send(out);
        }
        () = tx.closed() => {
            match tokio::time::timeout_at(started + limit, work).await {
                Ok(Ok(res)) => tracing::debug!(
                    status = res.status().as_u16(),
                    "abandoned order try finished in the background"
                ),
                Ok(Err(e)) => tracing::debug!(error = %e, "abandoned order try failed in the background"),
                Err(_) => tracing::debug!(?limit, "abandoned order try cut by background_timeout"),
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// See [`ChaosService`].
    #[project = ChaosFutureProj]
    pub enum ChaosFuture<F> {
        Pass { #[pin] fut: F },
        Order { rx: oneshot::Receiver<Answer> },
    }
}

impl<F> Future for ChaosFuture<F>
where
    F: Future<Output = Answer>,
{
    type Output = Answer;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Answer> {
        match self.project() {
            ChaosFutureProj::Pass { fut } => fut.poll(cx),
            ChaosFutureProj::Order { rx } => Pin::new(rx)
                .poll(cx)
                .map(|r| r.unwrap_or_else(|_| Err(Box::new(TryLost)))),
        }
    }
}

#[cfg(test)]
#[path = "layer_tests.rs"]
mod tests;
