//! Test support: a scripted stand-in for the factory, below a layer under test.
//!
//! Each call takes the next [`Step`] (200 when the script is empty) and is
//! recorded with its time, method, path and body, so tests can assert what
//! reached the factory and when (tokio's paused clock makes times exact).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tower::{Service, ServiceExt, service_fn};

use crate::boxed::BoxError;
use crate::proxy::Outgoing;
use crate::proxy::body::ProxyBody;
use crate::proxy::client::UpstreamError;
use crate::resilience::classify::BadJwt;
use crate::resilience::deadline::{AttemptTimedOut, DeadlineExceeded};

/// What the scripted factory does with the next call.
pub enum Step {
    Status(u16),
    /// A status with a `Retry-After` header value.
    RetryAfter(u16, String),
    BadJwt,
    /// Fails like a try cut by `attempt_timeout`.
    Timeout,
    /// Fails like a try past the request deadline.
    Aborted,
    /// No answer: connection refused.
    Refused,
    /// Hangs this long, then answers 200.
    Slow(Duration),
    /// Answers 200 when the sender fires (500 if it is dropped).
    Wait(oneshot::Receiver<()>),
}

/// One call the factory received.
#[derive(Debug, Clone)]
pub struct Call {
    pub at: Instant,
    pub method: Method,
    pub path: String,
    pub body: Bytes,
}

#[derive(Clone, Default)]
pub struct Script {
    steps: Arc<Mutex<VecDeque<Step>>>,
    calls: Arc<Mutex<Vec<Call>>>,
}

/// The scripted factory takes what the layers below retry pass on.
pub type TestService = tower::util::BoxCloneSyncService<Outgoing, Response<ProxyBody>, BoxError>;

impl Script {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&self, step: Step) -> &Self {
        self.steps.lock().push_back(step);
        self
    }

    pub fn push_n(&self, n: usize, status: u16) -> &Self {
        for _ in 0..n {
            self.push(Step::Status(status));
        }
        self
    }

    pub fn calls(&self) -> u32 {
        u32::try_from(self.calls.lock().len()).unwrap_or(u32::MAX)
    }

    pub fn log(&self) -> Vec<Call> {
        self.calls.lock().clone()
    }

    pub fn service(&self) -> TestService {
        let script = self.clone();
        TestService::new(service_fn(move |req: Outgoing| {
            script.calls.lock().push(Call {
                at: Instant::now(),
                method: req.method().clone(),
                path: req.uri().path().to_owned(),
                body: req.body().clone(),
            });
            let step = script.steps.lock().pop_front();
            async move {
                match step {
                    None => Ok(status(200)),
                    Some(Step::Status(code)) => Ok(status(code)),
                    Some(Step::RetryAfter(code, value)) => {
                        let mut res = status(code);
                        if let Ok(v) = HeaderValue::from_str(&value) {
                            res.headers_mut().insert(header::RETRY_AFTER, v);
                        }
                        Ok(res)
                    }
                    Some(Step::BadJwt) => {
                        let mut res = status(200);
                        res.extensions_mut().insert(BadJwt);
                        Ok(res)
                    }
                    Some(Step::Timeout) => Err(Box::new(AttemptTimedOut) as BoxError),
                    Some(Step::Aborted) => Err(Box::new(DeadlineExceeded) as BoxError),
                    Some(Step::Refused) => Err(Box::new(UpstreamError::new(
                        "connect",
                        "connection refused",
                    )) as BoxError),
                    Some(Step::Slow(d)) => {
                        tokio::time::sleep(d).await;
                        Ok(status(200))
                    }
                    Some(Step::Wait(rx)) => match rx.await {
                        Ok(()) => Ok(status(200)),
                        Err(_) => Ok(status(500)),
                    },
                }
            }
        }))
    }
}

/// An empty answer with this status.
pub fn status(code: u16) -> Response<ProxyBody> {
    let mut res = Response::new(ProxyBody::empty());
    *res.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    res
}

/// A request with a body (the factory's order path by default).
pub fn request(method: Method, path: &str, body: &'static str) -> Request<Bytes> {
    let mut req = Request::new(Bytes::from_static(body.as_bytes()));
    *req.method_mut() = method;
    *req.uri_mut() = path.parse().unwrap_or_default();
    req
}

/// Sends one request (a `Request<Bytes>`, or an [`Outgoing`] below retry)
/// through a clone of `svc`.
pub async fn send<S, R>(svc: &S, req: R) -> Result<Response<ProxyBody>, BoxError>
where
    S: Service<R, Response = Response<ProxyBody>, Error = BoxError> + Clone,
{
    svc.clone().oneshot(req).await
}

/// Lets spawned tasks run until `cond` holds (bounded: a test that can fail).
pub async fn until(cond: impl Fn() -> bool) {
    for _ in 0..1_000 {
        if cond() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("condition not reached");
}
