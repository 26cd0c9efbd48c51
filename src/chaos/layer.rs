//! `ChaosLayer`: the tower layer over the innermost (`Forward`) service.
//!
//! Only `POST /api/order` answers are looked at; every other request passes
//! through untouched and unbuffered, with nothing added.
//! An order try runs inside the caller's future (one allocation holds both
//! its phases: waiting for the factory, then reading and judging the
//! answer). When the caller stops waiting (the attempt timeout above cuts
//! the try) the unfinished try moves to a task of its own and goes on,
//! bounded by `background_timeout` counted from the start of the try, only
//! to learn the report link and resolve it: a throttled factory answers
//! after about 32 s, well after a 5 s attempt timeout, and that late answer
//! is the only place its link is written. A try the factory does not answer
//! at all within `background_timeout` is recorded as an outage (`unknown`).
//!
//! Why not a task per try from the start: a spawned task and a oneshot per
//! order cost about 3 400 instructions a request (callgrind), and the common
//! try is never abandoned.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Method, Request, Response};
use tokio::time::Instant;
use tower::{Layer, Service};

use crate::chaos::ChaosType;
use crate::chaos::handle::Chaos;
use crate::chaos::order::after_answer;
use crate::chaos::side::SideService;
use crate::error::BoxError;
use crate::proxy::body::ProxyBody;

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
        let chaos = Arc::clone(&self.chaos);
        let work = phases(answer, move |answer| after_answer(chaos, answer, started));
        ChaosFuture::Order {
            order: OrderTry {
                work: Some(Box::pin(work)),
                chaos: Arc::clone(&self.chaos),
                started,
            },
        }
    }
}

type Answer = Result<Response<ProxyBody>, BoxError>;

/// An order try in progress, boxed once.
trait OrderWork: Future<Output = Answer> + Send {
    /// Whether the factory's answer (or its failure) is in.
    fn answered(&self) -> bool;
}

pin_project_lite::pin_project! {
    /// The two phases of an order try: the factory's answer `F`, then `G`,
    /// made by `then` from it (reading and judging the answer).
    struct Phases<F, G, M> {
        #[pin]
        answering: Option<F>,
        then: Option<M>,
        #[pin]
        judging: Option<G>,
    }
}

fn phases<F, G, M>(answer: F, then: M) -> Phases<F, G, M>
where
    M: FnOnce(Answer) -> G,
{
    Phases {
        answering: Some(answer),
        then: Some(then),
        judging: None,
    }
}

impl<F, G, M> Future for Phases<F, G, M>
where
    F: Future<Output = Answer>,
    G: Future<Output = Answer>,
    M: FnOnce(Answer) -> G,
{
    type Output = Answer;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Answer> {
        let mut this = self.project();
        if let Some(fut) = this.answering.as_mut().as_pin_mut() {
            let answer = ready!(fut.poll(cx));
            this.answering.set(None);
            match this.then.take() {
                Some(then) => this.judging.set(Some(then(answer))),
                None => return Poll::Ready(answer),
            }
        }
        match this.judging.as_pin_mut() {
            Some(fut) => fut.poll(cx),
            None => Poll::Ready(Err("order try polled after it ended".into())),
        }
    }
}

impl<F, G, M> OrderWork for Phases<F, G, M>
where
    F: Future<Output = Answer> + Send,
    G: Future<Output = Answer> + Send,
    M: FnOnce(Answer) -> G + Send,
{
    fn answered(&self) -> bool {
        self.answering.is_none()
    }
}

/// An order try the caller is waiting for; see the module docs for what
/// happens when the caller stops waiting (drop).
pub struct OrderTry {
    work: Option<Pin<Box<dyn OrderWork>>>,
    chaos: Arc<Chaos>,
    started: Instant,
}

impl Future for OrderTry {
    type Output = Answer;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Answer> {
        let Some(work) = self.work.as_mut() else {
            return Poll::Ready(Err("order try polled after it ended".into()));
        };
        let out = ready!(work.as_mut().poll(cx));
        self.work = None;
        Poll::Ready(out)
    }
}

impl Drop for OrderTry {
    fn drop(&mut self) {
        let Some(work) = self.work.take() else {
            return;
        };
        // No runtime (it is shutting down): nothing left to learn from.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(finish_alone(Arc::clone(&self.chaos), work, self.started));
        }
    }
}

/// An abandoned order try, finishing within `background_timeout` of `started`.
async fn finish_alone(chaos: Arc<Chaos>, mut work: Pin<Box<dyn OrderWork>>, started: Instant) {
    let limit = chaos.config.background_timeout;
    match tokio::time::timeout_at(started + limit, &mut work).await {
        Ok(Ok(res)) => tracing::debug!(
            status = res.status().as_u16(),
            "abandoned order try finished in the background"
        ),
        Ok(Err(e)) => tracing::debug!(error = %e, "abandoned order try failed in the background"),
        Err(_) if work.answered() => {
            tracing::debug!(?limit, "abandoned order try cut by background_timeout");
        }
        Err(_) => {
            // No answer within background_timeout: the factory is not
            // answering at all (an outage, no link to follow).
            tracing::debug!(?limit, "the factory did not answer an abandoned order try");
            let _ = chaos.sighting(ChaosType::Unknown, None, None);
        }
    }
}

pin_project_lite::pin_project! {
    /// See [`ChaosService`].
    #[project = ChaosFutureProj]
    pub enum ChaosFuture<F> {
        Pass { #[pin] fut: F },
        Order { order: OrderTry },
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
            ChaosFutureProj::Order { order } => Pin::new(order).poll(cx),
        }
    }
}

#[cfg(test)]
#[path = "layer_tests.rs"]
mod tests;
