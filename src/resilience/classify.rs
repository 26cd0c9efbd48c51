//! Which factory outcomes are failures: decided here, and only here.
//!
//! The breaker counts failures, the retry policy retries (some of) them, and
//! telemetry labels them; all three ask this module so they never disagree.
//! A 4xx is the caller's fault: never a failure, never retried.

use http::Response;

use crate::boxed::BoxError;
use crate::proxy::client::UpstreamError;
use crate::resilience::breaker::CircuitOpen;
use crate::resilience::deadline::{AttemptTimedOut, DeadlineExceeded};

/// Response extension set by the chaos layer when a 2xx order answer carried
/// a JWT that does not verify against the factory's keys (badjwt chaos).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadJwt;

/// Response extension set by the chaos layer on a failed answer (`fail`,
/// `badjwt`) whose report link the sidecar followed and the factory
/// confirmed resolved: the chaos is already over, so the try is retried
/// but says nothing about the factory's health (the breaker ignores it).
/// Without it a burst of orders caught by one episode would open the
/// breaker just as the episode ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChaosResolved;

/// What one try amounted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 1xx/2xx/3xx with nothing wrong.
    Success,
    /// 4xx: the request was wrong; the factory is fine.
    CallerError,
    /// The factory failed this try.
    Failure(FailureKind),
    /// The factory failed this try with chaos the sidecar has already
    /// resolved ([`ChaosResolved`]): retried like a failure, not counted.
    Excused(FailureKind),
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
    pub const ALL: [FailureKind; 4] = [
        FailureKind::Connect,
        FailureKind::Timeout,
        FailureKind::Status5xx,
        FailureKind::BadJwt,
    ];

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
    let failure = if status.is_server_error() {
        FailureKind::Status5xx
    } else if status.is_client_error() {
        return Outcome::CallerError;
    } else if res.extensions().get::<BadJwt>().is_some() {
        FailureKind::BadJwt
    } else {
        return Outcome::Success;
    };
    if res.extensions().get::<ChaosResolved>().is_some() {
        Outcome::Excused(failure)
    } else {
        Outcome::Failure(failure)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16) -> Response<()> {
        let mut r = Response::new(());
        *r.status_mut() = http::StatusCode::from_u16(status).expect("status");
        r
    }

    #[test]
    fn answers_are_classified_in_one_place() {
        assert_eq!(classify_response(&answer(200)), Outcome::Success);
        assert_eq!(classify_response(&answer(404)), Outcome::CallerError);
        assert_eq!(
            classify_response(&answer(503)),
            Outcome::Failure(FailureKind::Status5xx)
        );
        let mut bad = answer(200);
        bad.extensions_mut().insert(BadJwt);
        assert_eq!(
            classify_response(&bad),
            Outcome::Failure(FailureKind::BadJwt)
        );
        bad.extensions_mut().insert(ChaosResolved);
        assert_eq!(
            classify_response(&bad),
            Outcome::Excused(FailureKind::BadJwt)
        );
        let mut fail = answer(500);
        fail.extensions_mut().insert(ChaosResolved);
        assert_eq!(
            classify_response(&fail),
            Outcome::Excused(FailureKind::Status5xx)
        );
        // A 4xx stays the caller's fault whatever else is attached.
        let mut caller = answer(400);
        caller.extensions_mut().insert(ChaosResolved);
        assert_eq!(classify_response(&caller), Outcome::CallerError);
    }

    #[test]
    fn errors_are_classified_through_their_cause_chain() {
        let open = CircuitOpen {
            retry_after: std::time::Duration::from_secs(1),
        };
        assert_eq!(classify_error(&open), Outcome::Rejected);
        assert_eq!(
            classify_error(&AttemptTimedOut),
            Outcome::Failure(FailureKind::Timeout)
        );
        assert_eq!(classify_error(&DeadlineExceeded), Outcome::Aborted);
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let up = UpstreamError::new("cannot connect", io);
        assert_eq!(classify_error(&up), Outcome::Failure(FailureKind::Connect));
    }
}
