//! `ChaosLayer`: the tower layer over the innermost (`Forward`) service.
//!
//! Only `POST /api/order` answers are looked at; every other request passes
//! through untouched and unbuffered, with nothing added.
//! An order try runs inside the caller's future: the factory's answer is
//! awaited in place and the healthy order is judged there at once, with no
//! allocation; only an answer that makes the try wait (a body still coming,
//! a key fetch, chaos to act on) boxes the rest. When the caller stops
//! waiting (the attempt timeout above cuts the try, or, for an order with
//! patience, another of its tries answered first or its patience ran out)
//! the unfinished try moves to a task of its own and goes on,
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

use http::{Method, Request, Response};
use tokio::time::Instant;
use tower::{Layer, Service};

use crate::boxed::BoxError;
use crate::chaos::ChaosType;
use crate::chaos::handle::Chaos;
use crate::chaos::order::{Answer, Judged, on_answer};
use crate::chaos::side::SideService;
use crate::proxy::Outgoing;
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
    S: Service<Outgoing, Response = Response<ProxyBody>, Error = BoxError>
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

impl<S> Service<Outgoing> for ChaosService<S>
where
    S: Service<Outgoing, Response = Response<ProxyBody>, Error = BoxError>,
    S::Future: Unpin + Send + 'static,
{
    type Response = Response<ProxyBody>;
    type Error = BoxError;
    type Future = ChaosFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Outgoing) -> Self::Future {
        if !self.chaos.inspects() || !is_order(&req) {
            return ChaosFuture::Pass {
                fut: self.inner.call(req),
            };
        }
        let started = Instant::now();
        ChaosFuture::Order {
            order: OrderTry {
                stage: Some(Stage::Answering(self.inner.call(req))),
                chaos: Arc::clone(&self.chaos),
                started,
            },
        }
    }
}

type Later = Pin<Box<dyn Future<Output = Answer> + Send>>;

/// Where an order try is.
enum Stage<F> {
    /// Waiting for the factory's answer (the inner future, which moves).
    Answering(F),
    /// Reading or judging it (boxed by [`on_answer`] when that has to wait).
    Judging(Later),
}

/// An order try the caller is waiting for; see the module docs for what
/// happens when the caller stops waiting (drop).
pub struct OrderTry<F>
where
    F: Future<Output = Answer> + Unpin + Send + 'static,
{
    stage: Option<Stage<F>>,
    chaos: Arc<Chaos>,
    started: Instant,
}

impl<F> Future for OrderTry<F>
where
    F: Future<Output = Answer> + Unpin + Send + 'static,
{
    type Output = Answer;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Answer> {
        let this = &mut *self;
        loop {
            match this.stage.as_mut() {
                Some(Stage::Answering(fut)) => {
                    let answer = ready!(Pin::new(fut).poll(cx));
                    match on_answer(&this.chaos, answer, this.started, cx) {
                        Judged::Done(out) => {
                            this.stage = None;
                            return Poll::Ready(out);
                        }
                        Judged::Later(rest) => this.stage = Some(Stage::Judging(rest)),
                    }
                }
                Some(Stage::Judging(rest)) => {
                    let out = ready!(rest.as_mut().poll(cx));
                    this.stage = None;
                    return Poll::Ready(out);
                }
                None => return Poll::Ready(Err("order try polled after it ended".into())),
            }
        }
    }
}

impl<F> Drop for OrderTry<F>
where
    F: Future<Output = Answer> + Unpin + Send + 'static,
{
    fn drop(&mut self) {
        let Some(stage) = self.stage.take() else {
            return;
        };
        // No runtime (it is shutting down): nothing left to learn from.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(finish_alone(Arc::clone(&self.chaos), stage, self.started));
        }
    }
}

/// An abandoned order try, finishing within `background_timeout` of `started`.
async fn finish_alone<F>(chaos: Arc<Chaos>, stage: Stage<F>, started: Instant)
where
    F: Future<Output = Answer> + Unpin + Send + 'static,
{
    let limit = chaos.settings.background_timeout();
    let until = started + limit;
    let mut rest = match stage {
        Stage::Judging(rest) => rest,
        Stage::Answering(fut) => {
            let Ok(answer) = tokio::time::timeout_at(until, fut).await else {
                // No answer within background_timeout: the factory is not
                // answering at all (an outage, no link to follow).
                tracing::debug!(?limit, "the factory did not answer an abandoned order try");
                let _ = chaos.sighting(ChaosType::Unknown, None, None);
                return;
            };
            let mut answer = Some(answer);
            let judged = std::future::poll_fn(|cx| {
                Poll::Ready(answer.take().map(|a| on_answer(&chaos, a, started, cx)))
            });
            match judged.await {
                Some(Judged::Done(out)) => return finished(&out),
                Some(Judged::Later(rest)) => rest,
                None => return,
            }
        }
    };
    match tokio::time::timeout_at(until, &mut rest).await {
        Ok(out) => finished(&out),
        Err(_) => tracing::debug!(?limit, "abandoned order try cut by background_timeout"),
    }
}

fn finished(out: &Answer) {
    match out {
        Ok(res) => tracing::debug!(
            status = res.status().as_u16(),
            "abandoned order try finished in the background"
        ),
        Err(e) => tracing::debug!(error = %e, "abandoned order try failed in the background"),
    }
}

pin_project_lite::pin_project! {
    /// See [`ChaosService`].
    #[project = ChaosFutureProj]
    pub enum ChaosFuture<F>
    where
        F: Future<Output = Answer>,
        F: Unpin,
        F: Send,
        F: 'static,
    {
        Pass { #[pin] fut: F },
        Order { order: OrderTry<F> },
    }
}

impl<F> Future for ChaosFuture<F>
where
    F: Future<Output = Answer> + Unpin + Send + 'static,
{
    type Output = Answer;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Answer> {
        match self.project() {
            ChaosFutureProj::Pass { fut } => fut.poll(cx),
            ChaosFutureProj::Order { order } => Pin::new(order).poll(cx),
        }
    }
}
