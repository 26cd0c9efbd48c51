//! One order try, after the factory answered: read the answer (if it is
//! small JSON), find the link and the jwt, verify the jwt, classify, record
//! the episode, follow the link, mask links in the body passed on.
//!
//! Order of things, and why:
//! - A `fail` or `badjwt` answer waits for the resolve GET (single flight,
//!   bounded by the side-request timeout) before it goes back up, so the
//!   retry layer's next try meets a factory that is healthy again: the
//!   episode costs no failed order.
//! - A `throttle` answer is a good pizza: it goes back at once and the
//!   resolve runs beside it, so the next orders are fast.
//! - Anything not inspectable (not JSON, larger than `inspect_max_bytes`,
//!   not a JSON document) passes on untouched; a large body is not even
//!   buffered beyond the limit.

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use http::header::{CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use tokio::time::Instant;

use crate::chaos::ChaosType;
use crate::chaos::buffer::{Buffered, read_limited};
use crate::chaos::detect::{Finding, JwtCheck, classify, classify_uninspected, is_oven_full};
use crate::chaos::episodes::FollowPlan;
use crate::chaos::handle::Chaos;
use crate::chaos::inspect::inspect;
use crate::chaos::jwt::Verdict;
use crate::chaos::link::ReportLink;
use crate::chaos::mask::redact_with;
use crate::error::BoxError;
use crate::proxy::body::ProxyBody;
use crate::proxy::client::UpstreamError;
use crate::resilience::classify::{BadJwt, ChaosResolved, Outcome, classify_error};

/// How long an order try waits for the JWKS before passing its pizza on
/// unjudged (the fetch goes on beside it): a slow key endpoint must not
/// cost orders.
const VERIFY_WAIT: Duration = Duration::from_secs(2);

/// Whether a Content-Type is JSON (`application/json`, `*/*+json`, any params).
pub(crate) fn is_json(headers: &HeaderMap) -> bool {
    let Some(ct) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = ct.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
        || essence
            .get(essence.len().saturating_sub(5)..)
            .is_some_and(|tail| tail.eq_ignore_ascii_case("+json"))
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The rest of an order try, once the factory answered (or failed to):
/// see the module docs. `started` is when the try began.
pub(crate) async fn after_answer(
    chaos: Arc<Chaos>,
    answer: Result<Response<ProxyBody>, BoxError>,
    started: Instant,
) -> Result<Response<ProxyBody>, BoxError> {
    let res = match answer {
        Ok(res) => res,
        Err(e) => {
            if matches!(classify_error(e.as_ref()), Outcome::Failure(_)) {
                let _ = chaos.sighting(ChaosType::Unknown, None, None);
            }
            return Err(e);
        }
    };
    let elapsed = started.elapsed();
    let status = res.status();
    let limit = chaos.config.inspect_max_bytes;
    let too_large = declared_length(res.headers()).is_some_and(|n| n > limit as u64);
    if !is_json(res.headers()) || too_large {
        uninspected(&chaos, status);
        return Ok(res);
    }

    let (mut parts, body) = res.into_parts();
    let bytes = match read_limited(body, limit).await {
        Ok(Buffered::Whole(bytes)) => bytes,
        Ok(Buffered::TooLarge(body)) => {
            uninspected(&chaos, status);
            return Ok(Response::from_parts(parts, body));
        }
        Err(e) => {
            // The answer cannot be passed on whole: a failed try.
            let _ = chaos.sighting(ChaosType::Unknown, None, Some(status));
            return Err(Box::new(UpstreamError::new(
                "the factory's answer body could not be read",
                e,
            )));
        }
    };

    let redacted = {
        let Ok(found) = inspect(&bytes) else {
            uninspected(&chaos, status);
            return Ok(Response::from_parts(parts, ProxyBody::full(bytes)));
        };
        let verdict = match found.jwt() {
            Some(token) if status.is_success() && chaos.config.verify_jwt => {
                Some(verify_within(&chaos, token, VERIFY_WAIT).await)
            }
            _ => None,
        };
        let check = verdict
            .as_ref()
            .map_or(JwtCheck::NotChecked, JwtCheck::from);
        if let Some(Verdict::Invalid(why)) = &verdict {
            tracing::debug!(reason = why, "pizza JWT does not verify");
            parts.extensions.insert(BadJwt);
        }
        let finding = if is_oven_full(status, found.has_link(), &bytes) {
            Finding::Nothing
        } else {
            classify(
                status,
                elapsed,
                found.has_link(),
                check,
                chaos.config.slow_threshold,
            )
        };
        match finding {
            Finding::Chaos(kind) => {
                // Prefer a followable link when an answer holds several.
                let link = found
                    .links()
                    .find(|l| ReportLink::parse(l).is_some())
                    .or_else(|| found.links().next());
                let plan = chaos.sighting(kind, link, Some(status));
                act(&chaos, plan, kind).await;
                // Chaos already resolved says nothing about the factory's
                // health: the retry gets its pizza, the breaker stays out.
                if kind != ChaosType::Throttle && link.is_some_and(|l| chaos.is_resolved(l)) {
                    parts.extensions.insert(ChaosResolved);
                }
            }
            Finding::Healthy => chaos.healthy(),
            Finding::Nothing => {}
        }
        if chaos.config.redact_in_responses {
            redact_with(&bytes, &found)
        } else {
            None
        }
    };
    let bytes = match redacted {
        Some(masked) => {
            parts.headers.remove(TRANSFER_ENCODING);
            parts
                .headers
                .insert(CONTENT_LENGTH, HeaderValue::from(masked.len()));
            masked
        }
        None => bytes,
    };
    Ok(Response::from_parts(parts, ProxyBody::full(bytes)))
}

/// Checks `token`, waiting at most `wait` for the JWKS. A check that needs
/// no fetch (keys held, or a remembered token) is done in its first poll,
/// and then no timer is made at all.
async fn verify_within(chaos: &Chaos, token: &str, wait: Duration) -> Verdict {
    let check = chaos.verify(token);
    tokio::pin!(check);
    let first = std::future::poll_fn(|cx| Poll::Ready(check.as_mut().poll(cx))).await;
    match first {
        Poll::Ready(verdict) => verdict,
        Poll::Pending => tokio::time::timeout(wait, check)
            .await
            .unwrap_or_else(|_| Verdict::Unknown("the JWKS is slow to come".to_owned())),
    }
}

/// An answer that could not be inspected says something only when it is a 5xx.
fn uninspected(chaos: &Chaos, status: StatusCode) {
    if let Finding::Chaos(kind) = classify_uninspected(status) {
        let _ = chaos.sighting(kind, None, Some(status));
    }
}

/// Follows (or waits for) a link as the module docs say.
async fn act(chaos: &Arc<Chaos>, plan: FollowPlan, kind: ChaosType) {
    let beside = kind == ChaosType::Throttle;
    match plan {
        FollowPlan::Go(ticket) if beside => {
            let chaos = Arc::clone(chaos);
            tokio::spawn(async move {
                chaos.follow(ticket).await;
            });
        }
        FollowPlan::Go(ticket) => {
            chaos.follow(ticket).await;
        }
        FollowPlan::Wait(mut done) if !beside => {
            let _ = done.wait_for(|d| *d).await;
        }
        FollowPlan::Wait(_) | FollowPlan::None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(CONTENT_TYPE, HeaderValue::from_str(v).expect("value"));
            is_json(&m)
        };
        assert!(h("application/json"));
        assert!(h("application/json; charset=utf-8"));
        assert!(h("Application/JSON"));
        assert!(h("application/problem+json"));
        assert!(!h("text/html"));
        assert!(!h("application/jsonp"));
        assert!(!h("json"));
        assert!(!is_json(&HeaderMap::new()));
    }
}
