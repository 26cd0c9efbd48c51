//! The one place where errors become answers.
//!
//! Layers fail with small typed errors (`BodyError`, `CircuitOpen`,
//! `DeadlineExceeded`, `UpstreamError`, ...) that travel boxed up the stack.
//! [`answer`] walks the cause chain and picks the status, the
//! `x-sidecar-error` kind and a JSON `{"message": ...}` a diner can read
//! (the pizza service passes factory messages on). No other module chooses a
//! status code for an error.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderValue, Response, StatusCode, header};

use crate::boxed::BoxError;
use crate::proxy::body::{BodyError, ProxyBody};
use crate::resilience::breaker::CircuitOpen;
use crate::resilience::classify::{FailureKind, Outcome, classify_error};
use crate::telemetry::outcome::RequestOutcome;

/// Header naming why the sidecar answered itself.
pub const X_SIDECAR_ERROR: &str = "x-sidecar-error";

/// Why the sidecar answered itself instead of passing a factory answer on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The breaker is open: 503 with `Retry-After`.
    CircuitOpen,
    /// No factory answer after every try: 502.
    Unreachable,
    /// A try or the whole request ran out of time: 504.
    Timeout,
    /// Request body over `server.max_body_bytes`: 413, nothing forwarded.
    BodyTooLarge,
    /// The request could not be read or forwarded as sent: 400.
    Malformed,
    /// A bug; logged. 500.
    Internal,
    /// `GET /orders/<id>`: no such order for this caller: 404.
    OrderNotFound,
    /// `GET /orders/<id>`: the queue's store cannot be read: 503.
    QueueUnavailable,
    /// `GET /orders/<id>`: the order was given up with no factory answer: 502.
    OrderGivenUp,
}

impl ErrorKind {
    /// The `x-sidecar-error` value.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::CircuitOpen => "circuit-open",
            ErrorKind::Unreachable => "unreachable",
            ErrorKind::Timeout => "timeout",
            ErrorKind::BodyTooLarge => "body-too-large",
            ErrorKind::Malformed => "malformed-request",
            ErrorKind::Internal => "internal",
            ErrorKind::OrderNotFound => "order-not-found",
            ErrorKind::QueueUnavailable => "queue-unavailable",
            ErrorKind::OrderGivenUp => "order-given-up",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            ErrorKind::CircuitOpen => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Unreachable => StatusCode::BAD_GATEWAY,
            ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::Malformed => StatusCode::BAD_REQUEST,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::OrderNotFound => StatusCode::NOT_FOUND,
            ErrorKind::QueueUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::OrderGivenUp => StatusCode::BAD_GATEWAY,
        }
    }
}

/// Response extension marking an answer the sidecar made itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SidecarAnswer(pub ErrorKind);

impl RequestOutcome {
    /// The outcome of a finished request, from the answer that goes back.
    pub fn of<B>(res: &Response<B>) -> RequestOutcome {
        match res.extensions().get::<SidecarAnswer>() {
            Some(SidecarAnswer(kind)) => Self::of_kind(*kind),
            None if res.status().is_server_error() => RequestOutcome::FactoryError,
            None if res
                .extensions()
                .get::<crate::resilience::classify::BadJwt>()
                .is_some() =>
            {
                RequestOutcome::FactoryError
            }
            None => RequestOutcome::Ok,
        }
    }

    /// The outcome of a request the sidecar answers itself for `err`.
    pub fn of_error(err: &(dyn std::error::Error + 'static)) -> RequestOutcome {
        Self::of_kind(kind_of(err))
    }

    fn of_kind(kind: ErrorKind) -> RequestOutcome {
        match kind {
            ErrorKind::CircuitOpen => RequestOutcome::CircuitOpen,
            ErrorKind::Timeout => RequestOutcome::Timeout,
            ErrorKind::Unreachable
            | ErrorKind::Internal
            | ErrorKind::QueueUnavailable
            | ErrorKind::OrderGivenUp => RequestOutcome::Unreachable,
            ErrorKind::BodyTooLarge | ErrorKind::Malformed | ErrorKind::OrderNotFound => {
                RequestOutcome::Rejected
            }
        }
    }
}

/// Which kind of answer an error deserves.
pub fn kind_of(err: &(dyn std::error::Error + 'static)) -> ErrorKind {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(b) = e.downcast_ref::<BodyError>() {
            return match b {
                BodyError::TooLarge { .. } => ErrorKind::BodyTooLarge,
                BodyError::Malformed(_) | BodyError::ConflictingFraming => ErrorKind::Malformed,
            };
        }
        if e.is::<http::Error>() || e.is::<http::uri::InvalidUri>() {
            return ErrorKind::Malformed;
        }
        if e.is::<crate::queue::error::OrderNotFound>() {
            return ErrorKind::OrderNotFound;
        }
        if e.is::<crate::queue::error::QueueUnavailable>() {
            return ErrorKind::QueueUnavailable;
        }
        if e.is::<crate::queue::error::OrderGivenUp>() {
            return ErrorKind::OrderGivenUp;
        }
        cur = e.source();
    }
    match classify_error(err) {
        Outcome::Rejected => ErrorKind::CircuitOpen,
        Outcome::Failure(FailureKind::Timeout) => ErrorKind::Timeout,
        Outcome::Failure(_) | Outcome::Excused(_) => ErrorKind::Unreachable,
        Outcome::Aborted if is_deadline(err) => ErrorKind::Timeout,
        _ => ErrorKind::Internal,
    }
}

fn is_deadline(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if e.is::<crate::resilience::deadline::DeadlineExceeded>() {
            return true;
        }
        cur = e.source();
    }
    false
}

/// Finds the breaker's rejection in a cause chain, for its `Retry-After`.
fn circuit_open<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a CircuitOpen> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(c) = e.downcast_ref::<CircuitOpen>() {
            return Some(c);
        }
        cur = e.source();
    }
    None
}

/// Turns an error from the stack into the sidecar's own JSON answer.
pub fn answer(err: &(dyn std::error::Error + 'static)) -> Response<ProxyBody> {
    let kind = kind_of(err);
    match kind {
        ErrorKind::Internal => tracing::error!(error = %err, "internal error on the request path"),
        _ => tracing::debug!(error = %err, kind = kind.as_str(), "answering with an error"),
    }
    let mut res = match kind {
        ErrorKind::CircuitOpen => {
            circuit_open_answer(circuit_open(err).map_or(Duration::from_secs(1), |c| c.retry_after))
        }
        _ => {
            let message = match kind {
                ErrorKind::Unreachable => {
                    "The pizza factory could not be reached. Please try again shortly."
                }
                ErrorKind::Timeout => {
                    "The pizza factory did not answer in time. Please try again shortly."
                }
                ErrorKind::BodyTooLarge => "The request body is too large.",
                ErrorKind::Malformed => "The request is malformed.",
                ErrorKind::OrderNotFound => "No such order.",
                ErrorKind::QueueUnavailable => {
                    "Queued orders cannot be read right now. Please try again shortly."
                }
                ErrorKind::OrderGivenUp => {
                    "The pizza factory could not make this order; it was given up."
                }
                _ => "Something went wrong in the factory sidecar.",
            };
            json_answer(kind, serde_json::json!({ "message": message }), None)
        }
    };
    // How many tries reached the factory (0 when the breaker refused them all).
    if let Some(n) = crate::resilience::retry::attempts_of(err) {
        res.headers_mut().insert(
            crate::resilience::retry::X_SIDECAR_ATTEMPTS,
            HeaderValue::from(n),
        );
    }
    res
}

/// The breaker's fail-fast answer: readable by a diner, machine-readable
/// delay in `Retry-After` and `retryAfterSeconds`.
pub fn circuit_open_answer(retry_after: Duration) -> Response<ProxyBody> {
    // Round up: a client that waits the advertised time must find it half-open.
    let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    let secs = secs.max(1);
    let body = serde_json::json!({
        "message": format!(
            "The pizza kitchen is closed for a moment. Please try again in {secs} second{}.",
            if secs == 1 { "" } else { "s" }
        ),
        "retryAfterSeconds": secs,
    });
    json_answer(ErrorKind::CircuitOpen, body, Some(secs))
}

fn json_answer(
    kind: ErrorKind,
    body: serde_json::Value,
    retry_after_secs: Option<u64>,
) -> Response<ProxyBody> {
    let bytes = serde_json::to_vec(&body).unwrap_or_else(|_| b"{\"message\":\"error\"}".to_vec());
    let mut res = Response::new(ProxyBody::full(bytes));
    *res.status_mut() = kind.status();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(X_SIDECAR_ERROR, HeaderValue::from_static(kind.as_str()));
    if let Some(secs) = retry_after_secs {
        h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    res.extensions_mut().insert(SidecarAnswer(kind));
    res
}

/// Makes a stack infallible: every error becomes its JSON answer here.
#[derive(Debug, Clone, Copy, Default)]
pub struct RescueLayer;

impl<S> tower::Layer<S> for RescueLayer {
    type Service = Rescue<S>;
    fn layer(&self, inner: S) -> Rescue<S> {
        Rescue {
            inner,
            not_ready: None,
        }
    }
}

/// See [`RescueLayer`].
#[derive(Debug)]
pub struct Rescue<S> {
    inner: S,
    /// The inner service failed to become ready: the next call answers that.
    not_ready: Option<BoxError>,
}

impl<S: Clone> Clone for Rescue<S> {
    fn clone(&self) -> Self {
        Rescue {
            inner: self.inner.clone(),
            not_ready: None,
        }
    }
}

impl<S, Req> tower::Service<Req> for Rescue<S>
where
    S: tower::Service<Req, Response = Response<ProxyBody>, Error = BoxError>,
{
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = RescueFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx).map(|r| {
            self.not_ready = r.err();
            Ok(())
        })
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self.not_ready.take() {
            Some(e) => RescueFuture::Failed { error: Some(e) },
            None => RescueFuture::Inner {
                inner: self.inner.call(req),
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// See [`Rescue`].
    #[project = RescueProj]
    pub enum RescueFuture<F> {
        Inner { #[pin] inner: F },
        Failed { error: Option<BoxError> },
    }
}

impl<F> Future for RescueFuture<F>
where
    F: Future<Output = Result<Response<ProxyBody>, BoxError>>,
{
    type Output = Result<Response<ProxyBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            RescueProj::Inner { inner } => inner
                .poll(cx)
                .map(|r| Ok(r.unwrap_or_else(|e| answer(e.as_ref())))),
            RescueProj::Failed { error } => Poll::Ready(Ok(match error.take() {
                Some(e) => answer(e.as_ref()),
                None => answer(&PolledAfterCompletion),
            })),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("future polled after completion")]
struct PolledAfterCompletion;

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body_json(res: Response<ProxyBody>) -> serde_json::Value {
        let bytes = res.into_body().collect().await.expect("body").to_bytes();
        serde_json::from_slice(&bytes).expect("json")
    }

    #[tokio::test]
    async fn circuit_open_is_503_with_retry_after() {
        let err: BoxError = Box::new(CircuitOpen {
            retry_after: Duration::from_millis(2500),
        });
        let res = answer(err.as_ref());
        assert_eq!(res.status(), 503);
        assert_eq!(res.headers()[X_SIDECAR_ERROR], "circuit-open");
        assert_eq!(res.headers()[header::RETRY_AFTER], "3");
        assert_eq!(RequestOutcome::of(&res), RequestOutcome::CircuitOpen);
        let v = body_json(res).await;
        assert_eq!(v["retryAfterSeconds"], 3);
        assert!(
            v["message"]
                .as_str()
                .expect("msg")
                .contains("pizza kitchen is closed")
        );
    }

    #[tokio::test]
    async fn body_errors_and_deadlines_map_to_their_statuses() {
        let too_large: BoxError = Box::new(BodyError::TooLarge { limit: 10 });
        let res = answer(too_large.as_ref());
        assert_eq!(res.status(), 413);
        assert_eq!(RequestOutcome::of(&res), RequestOutcome::Rejected);

        let deadline: BoxError = Box::new(crate::resilience::deadline::DeadlineExceeded);
        let res = answer(deadline.as_ref());
        assert_eq!(res.status(), 504);
        assert_eq!(res.headers()[X_SIDECAR_ERROR], "timeout");
        assert!(body_json(res).await["message"].is_string());
    }

    #[test]
    fn the_try_count_of_the_retry_layer_reaches_the_answer() {
        use crate::resilience::retry::{Attempted, X_SIDECAR_ATTEMPTS};
        let open: BoxError = Box::new(Attempted {
            attempts: 2,
            source: Box::new(CircuitOpen {
                retry_after: Duration::from_secs(4),
            }),
        });
        let res = answer(open.as_ref());
        assert_eq!(res.status(), 503);
        assert_eq!(res.headers()[header::RETRY_AFTER], "4");
        assert_eq!(res.headers()[X_SIDECAR_ATTEMPTS], "2");

        let late: BoxError = Box::new(Attempted {
            attempts: 3,
            source: Box::new(crate::resilience::deadline::AttemptTimedOut),
        });
        let res = answer(late.as_ref());
        assert_eq!(res.status(), 504);
        assert_eq!(res.headers()[X_SIDECAR_ATTEMPTS], "3");

        let plain: BoxError = Box::new(BodyError::TooLarge { limit: 10 });
        assert!(
            answer(plain.as_ref())
                .headers()
                .get(X_SIDECAR_ATTEMPTS)
                .is_none()
        );
    }
}
