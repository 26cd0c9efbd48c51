//! The retry loop, as a response future (no allocation of its own).
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

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, Uri, Version};
use tokio::time::{Instant, Sleep, sleep};

use super::backoff::Backoff;
use super::error::Attempted;
use super::policy::retry_after;
use super::{Shared, X_SIDECAR_ATTEMPTS};
use crate::error::BoxError;
use crate::proxy::body::ProxyBody;
use crate::resilience::classify::{Outcome, classify};

/// The request as first sent, kept for the tries after it.
///
/// Usually its head and body: a request that carries no extension (the
/// deadline travels beside it,
/// [`Deadline`](crate::resilience::deadline::Deadline)) needs no extension map cloned
/// and dropped, which cost a quarter of the layer's work on every request.
/// A request carrying an extension is kept whole.
#[derive(Debug, Clone)]
pub(super) enum Template {
    Head {
        method: Method,
        uri: Uri,
        version: Version,
        headers: HeaderMap,
        body: Bytes,
    },
    Whole(Request<Bytes>),
}

impl Template {
    pub(super) fn of(req: &Request<Bytes>) -> Self {
        if !req.extensions().is_empty() {
            return Template::Whole(req.clone());
        }
        Template::Head {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            headers: req.headers().clone(),
            body: req.body().clone(),
        }
    }

    fn request(&self) -> Request<Bytes> {
        self.clone().into_request()
    }

    fn into_request(self) -> Request<Bytes> {
        match self {
            Template::Head {
                method,
                uri,
                version,
                headers,
                body,
            } => {
                let mut req = Request::new(body);
                *req.method_mut() = method;
                *req.uri_mut() = uri;
                *req.version_mut() = version;
                *req.headers_mut() = headers;
                req
            }
            Template::Whole(req) => req,
        }
    }
}

/// What a request that may be retried keeps between tries.
#[derive(Debug)]
struct Again<S> {
    service: S,
    /// Taken (not cloned) for the last try.
    template: Option<Template>,
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
    /// See [`super::Retry`]. `tries` counts tries started, `reached` those
    /// the breaker let through (the `x-sidecar-attempts` value).
    pub struct ResponseFuture<S>
    where
        S: tower::Service<Request<Bytes>>,
    {
        #[pin]
        state: State<S::Future>,
        shared: Arc<Shared>,
        again: Option<Again<S>>,
        tries: u32,
        reached: u32,
    }
}

impl<S> std::fmt::Debug for ResponseFuture<S>
where
    S: tower::Service<Request<Bytes>>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("tries", &self.tries)
            .field("reached", &self.reached)
            .finish_non_exhaustive()
    }
}

impl<S> ResponseFuture<S>
where
    S: tower::Service<Request<Bytes>>,
{
    /// A request that is never retried: one try, then the header.
    pub(super) fn once(fut: S::Future, shared: Arc<Shared>) -> Self {
        Self {
            state: State::Called { fut },
            shared,
            again: None,
            tries: 0,
            reached: 0,
        }
    }

    pub(super) fn retrying(
        fut: S::Future,
        shared: Arc<Shared>,
        service: S,
        template: Template,
        deadline: Option<Instant>,
    ) -> Self {
        Self {
            state: State::Called { fut },
            shared,
            again: Some(Again {
                service,
                template: Some(template),
                deadline,
                backoff: None,
            }),
            tries: 0,
            reached: 0,
        }
    }
}

impl<S> Future for ResponseFuture<S>
where
    S: tower::Service<Request<Bytes>, Response = Response<ProxyBody>, Error = BoxError>,
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
                        None => return Poll::Ready(finish(result, *this.reached)),
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
                        again.template.take().map(Template::into_request)
                    } else {
                        again.template.as_ref().map(Template::request)
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

/// The header value; static for the counts `max_attempts` allows (1 to 10),
/// so the common case allocates nothing.
fn attempts_value(n: u32) -> HeaderValue {
    match n {
        0 => HeaderValue::from_static("0"),
        1 => HeaderValue::from_static("1"),
        2 => HeaderValue::from_static("2"),
        3 => HeaderValue::from_static("3"),
        4 => HeaderValue::from_static("4"),
        5 => HeaderValue::from_static("5"),
        6 => HeaderValue::from_static("6"),
        7 => HeaderValue::from_static("7"),
        8 => HeaderValue::from_static("8"),
        9 => HeaderValue::from_static("9"),
        10 => HeaderValue::from_static("10"),
        n => HeaderValue::from(n),
    }
}

fn finish(
    result: Result<Response<ProxyBody>, BoxError>,
    reached: u32,
) -> Result<Response<ProxyBody>, BoxError> {
    match result {
        Ok(mut res) => {
            res.headers_mut()
                .insert(X_SIDECAR_ATTEMPTS, attempts_value(reached));
            Ok(res)
        }
        Err(source) => Err(Box::new(Attempted {
            attempts: reached,
            source,
        })),
    }
}

/// Unreachable by construction (a retry is only scheduled with its service
/// and request at hand); an error rather than a panic on the request path.
fn lost(reached: u32) -> BoxError {
    Box::new(Attempted {
        attempts: reached,
        source: "retry state lost".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn original() -> Request<Bytes> {
        let mut req = Request::new(Bytes::from_static(b"{\"diner\":{\"id\":1}}"));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = Uri::from_static("/api/order?x=1");
        *req.version_mut() = Version::HTTP_2;
        let h = req.headers_mut();
        h.append("accept", HeaderValue::from_static("a"));
        h.append("accept", HeaderValue::from_static("b"));
        h.insert("authorization", HeaderValue::from_static("Bearer k"));
        req
    }

    fn same_head(a: &Request<Bytes>, b: &Request<Bytes>) {
        assert_eq!(a.method(), b.method());
        assert_eq!(a.uri(), b.uri());
        assert_eq!(a.version(), b.version());
        assert_eq!(a.headers(), b.headers());
        assert_eq!(a.body(), b.body());
    }

    #[test]
    fn replays_keep_head_and_body() {
        let req = original();
        let t = Template::of(&req);
        assert!(matches!(t, Template::Head { .. }));
        same_head(&t.request(), &req);
        same_head(&t.into_request(), &req);
    }

    #[test]
    fn a_request_with_extensions_is_kept_whole() {
        #[derive(Debug, Clone, PartialEq)]
        struct Marker(u8);
        let mut req = original();
        req.extensions_mut().insert(Marker(7));
        let t = Template::of(&req);
        assert!(matches!(t, Template::Whole(_)));
        let again = t.request();
        same_head(&again, &req);
        assert_eq!(again.extensions().get::<Marker>(), Some(&Marker(7)));
        assert_eq!(
            t.into_request().extensions().get::<Marker>(),
            Some(&Marker(7))
        );
    }
}
