//! Which factory outcomes are failures: decided here, and only here.
//!
//! The breaker counts failures, the retry policy retries (some of) them, and
//! telemetry labels them; all three ask this module so they never disagree.
//! A 4xx is the caller's fault: never a failure, never retried.

use http::Response;

use crate::error::BoxError;
use crate::proxy::client::UpstreamError;
use crate::resilience::breaker::CircuitOpen;
use crate::resilience::deadline::{AttemptTimedOut, DeadlineExceeded};

/// Response extension set by the chaos layer when a 2xx order answer carried
/// a JWT that does not verify against the factory's keys (badjwt chaos).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadJwt;

/// What one try amounted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 1xx/2xx/3xx with nothing wrong.
    Success,
    /// 4xx: the request was wrong; the factory is fine.
    CallerError,
    /// The factory failed this try.
    Failure(FailureKind),
    /// The breaker refused the try; the factory was not asked.
    Rejected,
    /// The sidecar itself gave up (overall deadline) or failed for a reason
    /// that says nothing about the factory.
    Aborted,
}

/// How the factory failed; the names match `retry.on` and `error.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// No answer: refused, reset, closed, TLS failure.
    Connect,
    /// No answer within `attempt_timeout`.
    Timeout,
    /// The factory answered 5xx.
    Status5xx,
    /// The factory answered 2xx with a pizza JWT that does not verify.
    BadJwt,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Connect => "connect",
            FailureKind::Timeout => "timeout",
            FailureKind::Status5xx => "5xx",
            FailureKind::BadJwt => "badjwt",
        }
    }
}

/// Classifies one try.
pub fn classify<B>(result: &Result<Response<B>, BoxError>) -> Outcome {
    match result {
        Ok(res) => classify_response(res),
        Err(e) => classify_error(e.as_ref()),
    }
}

/// Classifies a factory answer.
pub fn classify_response<B>(res: &Response<B>) -> Outcome {
    let status = res.status();
    if status.is_server_error() {
        Outcome::Failure(FailureKind::Status5xx)
    } else if status.is_client_error() {
        Outcome::CallerError
    } else if res.extensions().get::<BadJwt>().is_some() {
        Outcome::Failure(FailureKind::BadJwt)
    } else {
        Outcome::Success
    }
}

/// Classifies a try that ended without a factory answer.
pub fn classify_error(e: &(dyn std::error::Error + 'static)) -> Outcome {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<CircuitOpen>() {
            return Outcome::Rejected;
        }
        if err.is::<AttemptTimedOut>() || err.is::<tower::timeout::error::Elapsed>() {
            return Outcome::Failure(FailureKind::Timeout);
        }
        if err.is::<DeadlineExceeded>() {
            return Outcome::Aborted;
        }
        if err.is::<UpstreamError>() {
            return Outcome::Failure(FailureKind::Connect);
        }
        cur = err.source();
    }
    Outcome::Aborted
}
