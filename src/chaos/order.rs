//! One order try, after the factory answered: read the answer (if it is
//! small JSON), find the link and the jwt, verify the jwt, classify, record
//! the episode, follow the link, mask links in the body passed on.
//!
//! The healthy order is judged without waiting and without an allocation
//! ([`on_answer`]: its body came in one frame, its token is known or checked
//! with the keys at hand, there is no chaos to act on); anything else goes
//! the full, waiting path ([`judge_body`]) from the start, so both judge
//! alike (the same [`assess`]).
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
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::Body;

use http::header::{CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use tokio::time::Instant;

use crate::boxed::BoxError;
use crate::chaos::ChaosType;
use crate::chaos::buffer::{Buffered, read_limited};
use crate::chaos::detect::{Finding, JwtCheck, classify, classify_uninspected, is_oven_full};
use crate::chaos::episodes::FollowPlan;
use crate::chaos::handle::Chaos;
use crate::chaos::inspect::{Inspection, healthy_shape, inspect};
use crate::chaos::jwt::Verdict;
use crate::chaos::link::ReportLink;
use crate::chaos::mask::redact_with;
use crate::proxy::body::ProxyBody;
use crate::proxy::client::UpstreamError;
use crate::resilience::classify::{BadJwt, ChaosResolved, Outcome, classify_error};

/// How long an order try waits for the JWKS before passing its pizza on
/// unjudged (the fetch goes on beside it): a slow key endpoint must not
/// cost orders.
const VERIFY_WAIT: Duration = Duration::from_secs(2);

/// Whether a Content-Type is JSON (`application/json`, `*/*+json`, any params).
pub(crate) fn is_json(headers: &HeaderMap) -> bool {
    let Some(ct) = headers.get(CONTENT_TYPE) else {
        return false;
    };
    let ct = ct.as_bytes();
    let essence = ct
        .iter()
        .position(|&b| b == b';')
        .map_or(ct, |end| &ct[..end])
        .trim_ascii();
    essence.eq_ignore_ascii_case(b"application/json")
        || essence.len() >= 5 && essence[essence.len() - 5..].eq_ignore_ascii_case(b"+json")
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

/// An order try's answer, judged as far as it could be without waiting.
// Returned by value once per order try; boxing `Done` would add back the
// allocation this path exists to avoid.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Judged {
    /// What goes back up the stack.
    Done(Answer),
    /// The rest needs waiting (the body, the JWKS, a resolve): boxed, so an
    /// abandoned try can finish in a task of its own.
    Later(Pin<Box<dyn Future<Output = Answer> + Send>>),
}

pub(crate) type Answer = Result<Response<ProxyBody>, BoxError>;

/// The factory answered (or failed to): judges it at once when nothing has
/// to be waited for, which is the healthy order's case: the whole body in
/// the first frame, a token already known or checked with keys at hand, no
/// chaos to act on. `cx` is the caller's: a body frame that is not there
/// yet wakes it. `started` is when the try began.
pub(crate) fn on_answer(
    chaos: &Arc<Chaos>,
    answer: Answer,
    started: Instant,
    cx: &mut Context<'_>,
) -> Judged {
    let res = match answer {
        Ok(res) => res,
        Err(e) => {
            if matches!(classify_error(e.as_ref()), Outcome::Failure(_)) {
                let _ = chaos.sighting(ChaosType::Unknown, None, None);
            }
            return Judged::Done(Err(e));
        }
    };
    let elapsed = started.elapsed();
    let status = res.status();
    let limit = chaos.settings.inspect_max_bytes();
    let too_large = declared_length(res.headers()).is_some_and(|n| n > limit as u64);
    if !is_json(res.headers()) || too_large {
        uninspected(chaos, status);
        return Judged::Done(Ok(res));
    }
    let (parts, mut body) = res.into_parts();
    let first = match Pin::new(&mut body).poll_frame(cx) {
        Poll::Ready(None) => Bytes::new(),
        Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
            Ok(data) if body.is_end_stream() && data.len() <= limit => data,
            // More to read: the rest is read in order, this frame first.
            Ok(data) => {
                let body = body.with_prefix(data);
                let chaos = Arc::clone(chaos);
                return Judged::Later(Box::pin(read_and_judge(chaos, parts, body, elapsed)));
            }
            // Trailers: a factory JSON answer has none; dropped, as reading does.
            Err(_) => {
                let chaos = Arc::clone(chaos);
                return Judged::Later(Box::pin(read_and_judge(chaos, parts, body, elapsed)));
            }
        },
        Poll::Ready(Some(Err(e))) => return Judged::Done(Err(unreadable(chaos, status, e))),
        Poll::Pending => {
            let chaos = Arc::clone(chaos);
            return Judged::Later(Box::pin(read_and_judge(chaos, parts, body, elapsed)));
        }
    };
    judge_now(chaos, parts, first, elapsed)
}

/// The answer body cannot be passed on whole: a failed try.
fn unreadable(chaos: &Chaos, status: StatusCode, e: BoxError) -> BoxError {
    let _ = chaos.sighting(ChaosType::Unknown, None, Some(status));
    Box::new(UpstreamError::new(
        "the factory's answer body could not be read",
        e,
    ))
}

/// Reads the rest of the body (up to `inspect_max_bytes`), then judges it.
async fn read_and_judge(
    chaos: Arc<Chaos>,
    parts: http::response::Parts,
    body: ProxyBody,
    elapsed: Duration,
) -> Answer {
    let status = parts.status;
    match read_limited(body, chaos.settings.inspect_max_bytes()).await {
        Ok(Buffered::Whole(bytes)) => judge_body(chaos, parts, bytes, elapsed, None).await,
        Ok(Buffered::TooLarge(body)) => {
            uninspected(&chaos, status);
            Ok(Response::from_parts(parts, body))
        }
        Err(e) => Err(unreadable(&chaos, status, e)),
    }
}

/// [`judge_body`] without waiting, when nothing has to be waited for;
/// otherwise hands the answer, untouched, to it.
fn judge_now(
    chaos: &Arc<Chaos>,
    mut parts: http::response::Parts,
    bytes: Bytes,
    elapsed: Duration,
) -> Judged {
    let status = parts.status;
    // The factory's usual answer, `{"jwt":"<token>"}`, with a token that
    // verifies (remembered, or checked now with the keys at hand): healthy,
    // no link, nothing to mask (a verified token is base64url and dots), so
    // not inspected. Anything else takes the full path below, from the start.
    if status.is_success()
        && chaos.settings.verify_jwt()
        && healthy_shape(&bytes)
            .is_some_and(|token| chaos.verify_now(token) == Some(Verdict::Valid))
    {
        chaos.healthy();
        return Judged::Done(Ok(finish(parts, bytes, None)));
    }
    let done = {
        let Ok(found) = inspect(&bytes) else {
            uninspected(chaos, status);
            return Judged::Done(Ok(Response::from_parts(parts, ProxyBody::full(bytes))));
        };
        // `None`: the check needs a key fetch.
        let verdict = match found.jwt() {
            Some(token) if status.is_success() && chaos.settings.verify_jwt() => {
                chaos.verify_now(token.as_bytes()).map(Some)
            }
            _ => Some(None),
        };
        match verdict {
            Some(verdict) => {
                match assess(chaos, &mut parts, &bytes, &found, verdict.clone(), elapsed) {
                    Finding::Chaos(_) => Err(Some(verdict)),
                    finding => {
                        if finding == Finding::Healthy {
                            chaos.healthy();
                        }
                        Ok(redacted(chaos, &bytes, &found))
                    }
                }
            }
            None => Err(None),
        }
    };
    match done {
        Ok(masked) => Judged::Done(Ok(finish(parts, bytes, masked))),
        // Chaos to act on or a key fetch: the full path, from the start
        // (nothing was recorded yet), with the verdict if there is one.
        Err(known) => {
            parts.extensions.remove::<BadJwt>();
            let chaos = Arc::clone(chaos);
            Judged::Later(Box::pin(judge_body(chaos, parts, bytes, elapsed, known)))
        }
    }
}

/// Inspects a whole answer body, checks its jwt (unless `known` already
/// holds the verdict), records and acts on what it finds, and masks its
/// links (see the module docs).
async fn judge_body(
    chaos: Arc<Chaos>,
    mut parts: http::response::Parts,
    bytes: Bytes,
    elapsed: Duration,
    known: Option<Option<Verdict>>,
) -> Answer {
    let status = parts.status;
    let masked = {
        let Ok(found) = inspect(&bytes) else {
            uninspected(&chaos, status);
            return Ok(Response::from_parts(parts, ProxyBody::full(bytes)));
        };
        let verdict = match (known, found.jwt()) {
            (Some(known), _) => known,
            (None, Some(token)) if status.is_success() && chaos.settings.verify_jwt() => {
                Some(verify_within(&chaos, token.as_bytes(), VERIFY_WAIT).await)
            }
            (None, _) => None,
        };
        match assess(&chaos, &mut parts, &bytes, &found, verdict, elapsed) {
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
        redacted(&chaos, &bytes, &found)
    };
    Ok(finish(parts, bytes, masked))
}

/// What an inspected answer with this jwt verdict is; marks a bad pizza
/// ([`BadJwt`]) on the answer.
fn assess(
    chaos: &Chaos,
    parts: &mut http::response::Parts,
    bytes: &[u8],
    found: &Inspection<'_>,
    verdict: Option<Verdict>,
    elapsed: Duration,
) -> Finding {
    let status = parts.status;
    let check = verdict
        .as_ref()
        .map_or(JwtCheck::NotChecked, JwtCheck::from);
    if let Some(Verdict::Invalid(why)) = &verdict {
        tracing::debug!(reason = why, "pizza JWT does not verify");
        parts.extensions.insert(BadJwt);
    }
    if is_oven_full(status, found.has_link(), bytes) {
        Finding::Nothing
    } else {
        classify(
            status,
            elapsed,
            found.has_link(),
            check,
            chaos.settings.slow_threshold(),
        )
    }
}

/// The masked body, when links must be masked and there are any.
fn redacted(chaos: &Chaos, bytes: &[u8], found: &Inspection<'_>) -> Option<Bytes> {
    if chaos.settings.redact_in_responses() {
        redact_with(bytes, found)
    } else {
        None
    }
}

/// The answer passed on: the body whole, masked if it had to be (with its
/// length corrected).
fn finish(
    mut parts: http::response::Parts,
    bytes: Bytes,
    masked: Option<Bytes>,
) -> Response<ProxyBody> {
    let bytes = match masked {
        Some(masked) => {
            parts.headers.remove(TRANSFER_ENCODING);
            parts
                .headers
                .insert(CONTENT_LENGTH, HeaderValue::from(masked.len()));
            masked
        }
        None => bytes,
    };
    Response::from_parts(parts, ProxyBody::full(bytes))
}

/// Checks `token`, waiting at most `wait` for the JWKS. A check that needs
/// no fetch (keys held, or a remembered token) makes no timer at all.
async fn verify_within(chaos: &Chaos, token: &[u8], wait: Duration) -> Verdict {
    if let Some(verdict) = chaos.verify_now(token) {
        return verdict;
    }
    tokio::time::timeout(wait, chaos.verify(token))
        .await
        .unwrap_or_else(|_| Verdict::Unknown("the JWKS is slow to come".to_owned()))
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
        assert!(h(" application/json ; charset=utf-8"));
        assert!(!h("text/plain; x=application/json"));
        assert!(!h("+jso"));
        assert!(!is_json(&HeaderMap::new()));
    }
}
