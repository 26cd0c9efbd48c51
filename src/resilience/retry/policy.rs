//! What to retry and when: pure decisions, no I/O.
//!
//! - Which requests: idempotent methods (GET HEAD OPTIONS PUT DELETE TRACE),
//!   and any method on a path listed in `retry_non_idempotent` (the factory's
//!   `POST /api/order` is safe to repeat: a failed order made no pizza).
//! - Which outcomes: the failure kinds listed in `retry.on`, as
//!   [`classify`](crate::resilience::classify) names them. A 4xx, a
//!   breaker rejection and the sidecar's own deadline are never retried.
//! - When: after the backoff delay, or after the factory's `Retry-After`
//!   when it sent one. No retry starts unless it leaves the try at least
//!   `min_try_time` before the request's deadline: a backoff delay is
//!   shortened to fit; a `Retry-After` that does not fit ends the retries
//!   (retrying earlier than the factory asked would ignore it).

use std::time::{Duration, SystemTime};

use http::{Method, Request, Response, header};
use tokio::time::Instant;

use super::backoff::Backoff;
use crate::config::{RetryConfig, RetryOn};
use crate::resilience::classify::{FailureKind, Outcome};

/// A try given less time than this cannot get a factory answer across the
/// internet; such a retry is not started.
pub const DEFAULT_MIN_TRY_TIME: Duration = Duration::from_millis(100);

/// Why no further try is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The factory's `Retry-After` reaches past the deadline (or past
    /// `max_backoff` when the request has none).
    RetryAfterTooLong,
    /// Too little time left before the deadline.
    Deadline,
}

/// The `[retry]` rules, ready for per-try decisions.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    max_attempts: u32,
    on: [bool; 4],
    paths: Box<[Box<str>]>,
    initial_backoff: Duration,
    max_backoff: Duration,
    min_try_time: Duration,
}

fn kind_index(kind: FailureKind) -> usize {
    match kind {
        FailureKind::Connect => 0,
        FailureKind::Timeout => 1,
        FailureKind::Status5xx => 2,
        FailureKind::BadJwt => 3,
    }
}

impl RetryPolicy {
    pub fn new(config: &RetryConfig) -> RetryPolicy {
        let mut on = [false; 4];
        for kind in &config.on {
            let kind = match kind {
                RetryOn::Connect => FailureKind::Connect,
                RetryOn::Timeout => FailureKind::Timeout,
                RetryOn::Status5xx => FailureKind::Status5xx,
                RetryOn::BadJwt => FailureKind::BadJwt,
            };
            on[kind_index(kind)] = true;
        }
        RetryPolicy {
            max_attempts: config.max_attempts.max(1),
            on,
            paths: config
                .retry_non_idempotent
                .iter()
                .map(|p| p.as_str().into())
                .collect(),
            initial_backoff: config.initial_backoff,
            max_backoff: config.max_backoff,
            min_try_time: DEFAULT_MIN_TRY_TIME,
        }
    }

    /// Retries must leave a try at least this long before the deadline.
    pub fn set_min_try_time(&mut self, d: Duration) {
        self.min_try_time = d;
    }

    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// Whether this request may ever be sent twice.
    pub fn may_retry<B>(&self, req: &Request<B>) -> bool {
        if self.max_attempts < 2 {
            return false;
        }
        let idempotent = matches!(
            *req.method(),
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::PUT
                | Method::DELETE
                | Method::TRACE
        );
        idempotent || self.paths.iter().any(|p| **p == *req.uri().path())
    }

    /// The failure to retry, if this outcome is one `retry.on` lists.
    pub fn retry_reason(&self, outcome: Outcome) -> Option<FailureKind> {
        match outcome {
            Outcome::Failure(kind) | Outcome::Excused(kind) if self.on[kind_index(kind)] => {
                Some(kind)
            }
            _ => None,
        }
    }

    /// A fresh backoff sequence for one request.
    pub fn backoff(&self) -> Backoff {
        Backoff::new(self.initial_backoff, self.max_backoff)
    }

    /// How long to wait before the next try, given the jittered backoff
    /// `backoff` and the factory's `retry_after`, or why not to retry.
    pub fn schedule(
        &self,
        now: Instant,
        deadline: Option<Instant>,
        backoff: Duration,
        retry_after: Option<Duration>,
    ) -> Result<Duration, Stop> {
        // The latest moment a try may start and still have min_try_time.
        let latest_start = deadline.map(|d| {
            d.checked_sub(self.min_try_time)
                .unwrap_or(d)
                .saturating_duration_since(now)
        });
        match (retry_after, latest_start) {
            (Some(wait), Some(latest)) if wait > latest => Err(Stop::RetryAfterTooLong),
            (Some(wait), None) if wait > self.max_backoff => Err(Stop::RetryAfterTooLong),
            (Some(wait), _) => Ok(wait),
            (None, Some(latest)) if latest.is_zero() => Err(Stop::Deadline),
            (None, Some(latest)) => Ok(backoff.min(latest)),
            (None, None) => Ok(backoff),
        }
    }
}

/// The factory's `Retry-After` (seconds, or an HTTP date), as a delay from
/// `now`. Unreadable values are ignored (the backoff applies).
pub fn retry_after<B>(res: &Response<B>, now: SystemTime) -> Option<Duration> {
    let value = res
        .headers()
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use http::StatusCode;

    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy::new(&RetryConfig::default())
    }

    fn req(method: Method, path: &str) -> Request<()> {
        let mut r = Request::new(());
        *r.method_mut() = method;
        *r.uri_mut() = path.parse().expect("valid path");
        r
    }

    #[test]
    fn idempotent_methods_and_listed_paths() {
        let p = policy();
        for m in [
            Method::GET,
            Method::HEAD,
            Method::OPTIONS,
            Method::PUT,
            Method::DELETE,
            Method::TRACE,
        ] {
            assert!(p.may_retry(&req(m, "/anything")));
        }
        assert!(p.may_retry(&req(Method::POST, "/api/order")));
        assert!(p.may_retry(&req(Method::POST, "/api/order?x=1")));
        assert!(!p.may_retry(&req(Method::POST, "/api/order/verify")));
        assert!(!p.may_retry(&req(Method::PATCH, "/api/orders")));
        let once = RetryPolicy::new(&RetryConfig {
            max_attempts: 1,
            ..RetryConfig::default()
        });
        assert!(!once.may_retry(&req(Method::GET, "/")));
    }

    #[test]
    fn only_listed_failures_are_retried() {
        let p = RetryPolicy::new(&RetryConfig {
            on: vec![RetryOn::Connect, RetryOn::Status5xx],
            ..RetryConfig::default()
        });
        assert_eq!(
            p.retry_reason(Outcome::Failure(FailureKind::Connect)),
            Some(FailureKind::Connect)
        );
        assert_eq!(
            p.retry_reason(Outcome::Failure(FailureKind::Status5xx)),
            Some(FailureKind::Status5xx)
        );
        assert_eq!(
            p.retry_reason(Outcome::Excused(FailureKind::Status5xx)),
            Some(FailureKind::Status5xx),
            "resolved chaos is retried like the failure it was"
        );
        assert_eq!(p.retry_reason(Outcome::Failure(FailureKind::Timeout)), None);
        assert_eq!(p.retry_reason(Outcome::Failure(FailureKind::BadJwt)), None);
        for o in [
            Outcome::Success,
            Outcome::CallerError,
            Outcome::Rejected,
            Outcome::Aborted,
        ] {
            assert_eq!(policy().retry_reason(o), None, "{o:?}");
        }
    }

    #[test]
    fn schedule_respects_the_deadline() {
        let p = policy();
        let now = Instant::now();
        let ms = Duration::from_millis;
        // No deadline: the backoff as drawn.
        assert_eq!(p.schedule(now, None, ms(700), None), Ok(ms(700)));
        // Enough time: unchanged.
        let deadline = Some(now + ms(5_000));
        assert_eq!(p.schedule(now, deadline, ms(700), None), Ok(ms(700)));
        // Shortened so the try still gets min_try_time (100ms).
        let deadline = Some(now + ms(500));
        assert_eq!(p.schedule(now, deadline, ms(700), None), Ok(ms(400)));
        // Not even min_try_time left: no retry.
        let deadline = Some(now + ms(100));
        assert_eq!(p.schedule(now, deadline, ms(1), None), Err(Stop::Deadline));
        let deadline = Some(now + ms(50));
        assert_eq!(p.schedule(now, deadline, ms(1), None), Err(Stop::Deadline));
    }

    #[test]
    fn schedule_honours_retry_after_only_when_it_fits() {
        let p = policy();
        let now = Instant::now();
        let s = Duration::from_secs;
        let deadline = Some(now + s(20));
        assert_eq!(p.schedule(now, deadline, s(1), Some(s(3))), Ok(s(3)));
        assert_eq!(
            p.schedule(now, deadline, s(1), Some(s(20))),
            Err(Stop::RetryAfterTooLong)
        );
        // Without a deadline, up to max_backoff (2s by default).
        assert_eq!(p.schedule(now, None, s(1), Some(s(2))), Ok(s(2)));
        assert_eq!(
            p.schedule(now, None, s(1), Some(s(3))),
            Err(Stop::RetryAfterTooLong)
        );
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        let with = |v: &'static str| {
            let mut r = Response::new(());
            *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            r.headers_mut()
                .insert(header::RETRY_AFTER, http::HeaderValue::from_static(v));
            r
        };
        assert_eq!(retry_after(&with("3"), now), Some(Duration::from_secs(3)));
        assert_eq!(retry_after(&with(" 0 "), now), Some(Duration::ZERO));
        // Wed, 21 Oct 2015 07:28:00 GMT is 1445412480.
        assert_eq!(
            retry_after(&with("Wed, 21 Oct 2015 07:28:05 GMT"), now),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            retry_after(&with("Wed, 21 Oct 2015 07:27:00 GMT"), now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after(&with("soon"), now), None);
        assert_eq!(retry_after(&with("-1"), now), None);
        assert_eq!(retry_after(&Response::new(()), now), None);
    }
}
