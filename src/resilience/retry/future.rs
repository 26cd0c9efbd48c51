//! The retry loop, as a response future (no allocation of its own); orders
//! with patience take [`Patient`] instead.
//!
//! ```text
//! Called ──try ends──▶ decide ──retry──▶ Waiting (backoff) ──▶ Calling (poll_ready)
//!   ▲                    │ stop                                     │
//!   │                    ▼                                          │
//!   │          answer + x-sidecar-attempts                          │
//!   └───────────────────────────── next try ────────────────────────┘
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime};

use http::Response;
use tokio::time::{Instant, Sleep, sleep};

use super::Shared;
use super::attempts::finish;
use super::backoff::Backoff;
use super::error::Attempted;
use super::patient::Patient;
use super::policy::retry_after;
use crate::boxed::BoxError;
use crate::proxy::body::ProxyBody;
use crate::proxy::{Outgoing, recycle};
use crate::resilience::classify::{Outcome, classify};

/// What a request that may be retried keeps between tries.
#[derive(Debug)]
struct Again<S> {
    service: S,
    /// The request as first sent; given away (not cloned) for the last try.
    template: Option<Outgoing>,
    deadline: Option<Instant>,
    backoff: Option<Backoff>,
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    #[derive(Debug)]
    enum State<F> {
        Called { #[pin] fut: F },
        Waiting { #[pin] sleep: Sleep },
        Calling,
    }
}

pin_project_lite::pin_project! {
    /// See [`super::Retry`]: the plain retry loop, or an order's patient one.
    #[project = ResponseProj]
    pub enum ResponseFuture<S>
    where
        S: tower::Service<Outgoing>,
    {
        Plain { #[pin] fut: Plain<S> },
        Patient { #[pin] fut: Patient<S> },
    }
}

impl<S> std::fmt::Debug for ResponseFuture<S>
where
    S: tower::Service<Outgoing>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResponseFuture::Plain { fut } => fut.fmt(f),
            ResponseFuture::Patient { fut } => fut.fmt(f),
        }
    }
}

impl<S> ResponseFuture<S>
where
    S: tower::Service<Outgoing>,
{
    /// A request that is never retried: one try, then the header.
    pub(super) fn once(fut: S::Future, shared: Arc<Shared>) -> Self {
        Self::plain(fut, shared, None)
    }

    pub(super) fn retrying(
        fut: S::Future,
        shared: Arc<Shared>,
        service: S,
        template: Outgoing,
        deadline: Option<Instant>,
    ) -> Self {
        let again = Again {
            service,
            template: Some(template),
            deadline,
            backoff: None,
        };
        Self::plain(fut, shared, Some(again))
    }

    fn plain(fut: S::Future, shared: Arc<Shared>, again: Option<Again<S>>) -> Self {
        ResponseFuture::Plain {
            fut: Plain {
                state: State::Called { fut },
                shared,
                again,
                tries: 0,
                reached: 0,
            },
        }
    }

    pub(super) fn patient(fut: Patient<S>) -> Self {
        ResponseFuture::Patient { fut }
    }
}

impl<S> Future for ResponseFuture<S>
where
    S: tower::Service<Outgoing, Response = Response<ProxyBody>, Error = BoxError>,
{
    type Output = Result<Response<ProxyBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ResponseProj::Plain { fut } => fut.poll(cx),
            ResponseProj::Patient { fut } => fut.poll(cx),
        }
    }
}

pin_project_lite::pin_project! {
    /// The plain retry loop. `tries` counts tries started, `reached` those
    /// the breaker let through (the `x-sidecar-attempts` value).
    pub struct Plain<S>
    where
        S: tower::Service<Outgoing>,
    {
        #[pin]
        state: State<S::Future>,
        shared: Arc<Shared>,
        again: Option<Again<S>>,
        tries: u32,
        reached: u32,
    }
}

impl<S> std::fmt::Debug for Plain<S>
where
    S: tower::Service<Outgoing>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plain")
            .field("tries", &self.tries)
            .field("reached", &self.reached)
            .finish_non_exhaustive()
    }
}

impl<S> Future for Plain<S>
where
    S: tower::Service<Outgoing, Response = Response<ProxyBody>, Error = BoxError>,
{
    type Output = Result<Response<ProxyBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Called { fut } => {
                    let result = ready!(fut.poll(cx));
                    *this.tries += 1;
                    let outcome = classify(&result);
                    if outcome != Outcome::Rejected {
                        *this.reached += 1;
                    }
                    let delay = match this.again.as_mut() {
                        Some(again) => decide(this.shared, again, &result, outcome, *this.tries),
                        None => None,
                    };
                    match delay {
                        // Dropping the failed answer here frees its connection.
                        Some(d) if d.is_zero() => this.state.set(State::Calling),
                        Some(d) => this.state.set(State::Waiting { sleep: sleep(d) }),
                        None => {
                            // No try needs the request any more: its header
                            // map serves a later one.
                            let kept = this.again.as_mut().and_then(|a| a.template.take());
                            if let Some(Ok(req)) = kept.map(std::sync::Arc::try_unwrap) {
                                recycle::recycle(req.into_parts().0.headers);
                            }
                            return Poll::Ready(finish(result, *this.reached));
                        }
                    }
                }
                StateProj::Waiting { sleep } => {
                    ready!(sleep.poll(cx));
                    this.state.set(State::Calling);
                }
                StateProj::Calling => {
                    let Some(again) = this.again.as_mut() else {
                        return Poll::Ready(Err(lost(*this.reached)));
                    };
                    if let Err(e) = ready!(again.service.poll_ready(cx)) {
                        return Poll::Ready(finish(Err(e), *this.reached));
                    }
                    let last = *this.tries + 1 >= this.shared.policy.max_attempts();
                    let req = if last {
                        again.template.take()
                    } else {
                        again.template.clone()
                    };
                    let Some(req) = req else {
                        return Poll::Ready(Err(lost(*this.reached)));
                    };
                    let fut = again.service.call(req);
                    this.state.set(State::Called { fut });
                }
            }
        }
    }
}

/// The wait before the next try, or `None` to answer with this result.
fn decide<S>(
    shared: &Shared,
    again: &mut Again<S>,
    result: &Result<Response<ProxyBody>, BoxError>,
    outcome: Outcome,
    tries: u32,
) -> Option<Duration> {
    let policy = &shared.policy;
    let reason = policy.retry_reason(outcome)?;
    if tries >= policy.max_attempts() || again.template.is_none() {
        return None;
    }
    let factory_wait = result
        .as_ref()
        .ok()
        .and_then(|res| retry_after(res, SystemTime::now()));
    let drawn = again
        .backoff
        .get_or_insert_with(|| policy.backoff())
        .next_delay();
    let delay = match policy.schedule(Instant::now(), again.deadline, drawn, factory_wait) {
        Ok(d) => d,
        Err(stop) => {
            tracing::debug!(
                tries,
                reason = reason.as_str(),
                ?stop,
                "not retrying: no time"
            );
            return None;
        }
    };
    if !shared.budget.withdraw() {
        tracing::debug!(
            tries,
            reason = reason.as_str(),
            "not retrying: retry budget spent"
        );
        return None;
    }
    shared.metrics.retry(reason);
    tracing::debug!(tries, reason = reason.as_str(), ?delay, "retrying");
    Some(delay)
}

/// Unreachable by construction (a retry is only scheduled with its service
/// and request at hand); an error rather than a panic on the request path.
fn lost(reached: u32) -> BoxError {
    Box::new(Attempted {
        attempts: reached,
        source: "retry state lost".into(),
    })
}
