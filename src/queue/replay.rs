//! The replayer and the sweeper, two background tasks started only when a
//! queue is configured.
//!
//! The replayer sends queued orders oldest first through the same stack as
//! a diner's order, below the server layer (headers, deadline, retry and
//! budget, breaker, chaos detection and JWT check), at most
//! `replay_per_second` starts a second and `replay_concurrency` at once, so
//! live traffic keeps its room. It waits while the circuit is open; while
//! half-open it sends one order at a time, which serves as the breaker's
//! probe (without it a quiet sidecar would never close again). A replay
//! that reached the factory while the circuit was half-open does not count
//! toward `dead_letter_after`: it tested the factory, not the order.
//!
//! What a replay's outcome means:
//! - a 2xx with a pizza JWT not known bad: `made`, the answer is stored;
//! - a 4xx: the factory refused the order for good: `failed`, stored;
//! - a 5xx, a bad JWT, a timeout or no answer: `failed`, replayed again after
//!   `replay_delay` doubling per failure (capped at `replay_max_delay`),
//!   and after `dead_letter_after` such failures a `dead_letter`;
//! - refused by the breaker: not sent; due again at once, nothing counted.
//!
//! The sweeper reads the store's figures into the gauges and `/status`
//! every second, drops expired orders every few seconds (`expired` for
//! those never made), and, while async orders are off, checks whether the
//! store takes writes again.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Limited};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tower::ServiceExt;

use super::Queue;
use super::record::{ANSWER_HEADERS, OrderRecord, OrderState, StoredAnswer, StoredHeader};
use super::store::{Claim, expiry};
use crate::error::kind_of;
use crate::proxy::body::ProxyBody;
use crate::proxy::buffered::BufferedStack;
use crate::resilience::breaker::CircuitState;
use crate::resilience::classify::{Outcome, classify_error, classify_response};
use crate::telemetry::metrics::ReplayResult;
use crate::times::{millis, now_ms};

/// Largest factory answer kept for `GET /orders/<id>`.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;
/// How often the replayer looks again when nothing is due or the circuit is open.
const IDLE_POLL: Duration = Duration::from_millis(250);
/// With nothing queued: a shared store (Redis) is looked at every 2 s for
/// orders other replicas queued; the embedded one only when woken (every
/// order queued here wakes the replayer), and once a minute for safety.
const EMPTY_POLL_SHARED: Duration = Duration::from_secs(2);
const EMPTY_POLL_OWN: Duration = Duration::from_secs(60);
/// How often the sweeper refreshes the figures, and drops expired orders.
const REFRESH_EVERY: Duration = Duration::from_secs(1);
/// Expired orders are dropped every `ttl / 10`, between 1 s and 1 min.
fn expire_every(queue: &Queue) -> u32 {
    let secs = (queue.config.ttl / 10).as_secs().clamp(1, 60);
    u32::try_from(secs).unwrap_or(60)
}

/// Starts the replayer and the sweeper; abort the handles to stop them.
pub fn spawn(queue: Arc<Queue>, service: impl BufferedStack) -> Vec<JoinHandle<()>> {
    vec![
        tokio::spawn(replayer(Arc::clone(&queue), service)),
        tokio::spawn(sweeper(queue)),
    ]
}

/// Waits for a new order or the next look: soon while orders are queued
/// (one may come due, the circuit may close), rarely while none is (a new
/// one here wakes the replayer at once; one queued by another replica is
/// seen within the longer wait).
async fn idle(queue: &Queue) {
    let wait = if queue.stats.lock().depth > 0 {
        IDLE_POLL
    } else if queue.embedded.is_some() {
        EMPTY_POLL_OWN
    } else {
        EMPTY_POLL_SHARED
    };
    let _ = tokio::time::timeout(wait, queue.wake.notified()).await;
}

async fn replayer(queue: Arc<Queue>, service: impl BufferedStack) {
    let Some(store) = queue.store.clone() else {
        return;
    };
    let c = &queue.config;
    let pace = Duration::from_secs_f64(1.0 / f64::from(c.replay_per_second.max(1)));
    let slots = Arc::new(Semaphore::new(c.replay_concurrency.max(1) as usize));
    loop {
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let state = queue.breaker.state();
        let in_flight = queue.counts.in_flight.load(Ordering::Relaxed);
        if state == CircuitState::Open || (state == CircuitState::HalfOpen && in_flight > 0) {
            drop(permit);
            idle(&queue).await;
            continue;
        }
        let claim = match store.claim(now_ms()).await {
            Ok(Some(claim)) => claim,
            Ok(None) => {
                drop(permit);
                idle(&queue).await;
                continue;
            }
            Err(e) => {
                queue.set_off(&e);
                drop(permit);
                tokio::time::sleep(REFRESH_EVERY).await;
                continue;
            }
        };
        queue.counts.in_flight.fetch_add(1, Ordering::Relaxed);
        let (queue2, svc) = (Arc::clone(&queue), service.clone());
        let half_open = state == CircuitState::HalfOpen;
        tokio::spawn(async move {
            replay_one(&queue2, svc, claim, half_open).await;
            queue2.counts.in_flight.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
        tokio::time::sleep(pace).await;
    }
}

/// How one replay ended.
enum Ended {
    /// 2xx: made.
    Made(StoredAnswer),
    /// 4xx: refused for good.
    Refused(StoredAnswer),
    /// Worth another replay later.
    Failed {
        error: String,
        answer: Option<StoredAnswer>,
    },
    /// The breaker refused it: not sent.
    NotSent,
}

async fn stored_answer(res: Response<ProxyBody>) -> Result<StoredAnswer, String> {
    let (parts, body) = res.into_parts();
    let body = Limited::new(body, MAX_ANSWER_BYTES)
        .collect()
        .await
        .map_err(|e| format!("the factory's answer could not be read: {e}"))?
        .to_bytes();
    Ok(StoredAnswer {
        status: parts.status.as_u16(),
        headers: ANSWER_HEADERS
            .iter()
            .filter_map(|name| {
                parts
                    .headers
                    .get(*name)
                    .map(|v| StoredHeader((*name).to_owned(), v.as_bytes().to_vec()))
            })
            .collect(),
        body: body.to_vec(),
    })
}

async fn send(service: impl BufferedStack, req: Request<Bytes>) -> Ended {
    match service.oneshot(req).await {
        Ok(res) => {
            let outcome = classify_response(&res);
            let status = res.status();
            match (outcome, stored_answer(res).await) {
                (_, Err(error)) => Ended::Failed {
                    error,
                    answer: None,
                },
                (Outcome::Success, Ok(a)) => Ended::Made(a),
                (Outcome::CallerError, Ok(a)) => Ended::Refused(a),
                (_, Ok(a)) => Ended::Failed {
                    error: if status.is_success() {
                        "the factory's pizza JWT does not verify".to_owned()
                    } else {
                        format!("the factory answered {}", status.as_u16())
                    },
                    answer: Some(a),
                },
            }
        }
        Err(e) if classify_error(e.as_ref()) == Outcome::Rejected => Ended::NotSent,
        Err(e) => Ended::Failed {
            error: format!("{}: {e}", kind_of(e.as_ref()).as_str()),
            answer: None,
        },
    }
}

/// The wait after `failures` failed replays.
fn backoff(queue: &Queue, failures: u32) -> Duration {
    let c = &queue.config;
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(20));
    c.replay_delay
        .saturating_mul(factor)
        .min(c.replay_max_delay)
}

/// The record after a replay that ended as `ended` (pure, for tests).
fn next_state(
    queue: &Queue,
    mut rec: OrderRecord,
    ended: Ended,
    counted: bool,
    now: u64,
) -> (OrderRecord, Option<ReplayResult>) {
    rec.updated_ms = now;
    let ttl = queue.config.ttl;
    let done = |rec: &mut OrderRecord, state, answer| {
        rec.state = state;
        rec.answer = answer;
        rec.request = None;
        rec.expires_ms = expiry(now, ttl);
    };
    let result = match ended {
        Ended::NotSent => {
            rec.next_ms = now;
            None
        }
        Ended::Made(a) => {
            rec.attempts += 1;
            done(&mut rec, OrderState::Made, Some(a));
            Some(ReplayResult::Made)
        }
        Ended::Refused(a) => {
            rec.attempts += 1;
            rec.last_error = Some(format!("the factory refused the order ({})", a.status));
            done(&mut rec, OrderState::Failed, Some(a));
            Some(ReplayResult::Failed)
        }
        Ended::Failed { error, answer } => {
            rec.attempts += 1;
            rec.last_error = Some(error);
            if counted {
                rec.failures += 1;
            }
            if rec.failures >= queue.config.dead_letter_after {
                done(&mut rec, OrderState::DeadLetter, answer);
                Some(ReplayResult::DeadLetter)
            } else {
                let wait = backoff(queue, rec.failures.max(1));
                rec.next_ms = now.saturating_add(millis(wait));
                Some(ReplayResult::Failed)
            }
        }
    };
    (rec, result)
}

async fn replay_one(queue: &Queue, service: impl BufferedStack, claim: Claim, half_open: bool) {
    let Some(store) = &queue.store else { return };
    let rec = claim.record.clone();
    let now = now_ms();
    if rec.expires_ms <= now {
        queue.expire(now).await;
        let _ = store.finish(claim, rec).await;
        return;
    }
    let ended = match rec.request.as_ref().and_then(|r| r.to_request()) {
        Some(req) => send(service, req).await,
        None => Ended::Failed {
            error: "the stored request is unreadable".to_owned(),
            answer: None,
        },
    };
    let id = rec.id;
    let (rec, result) = next_state(queue, rec, ended, !half_open, now_ms());
    let state = rec.state;
    if let Err(e) = store.finish(claim, rec).await {
        // Not stored: the order stays queued and is replayed again.
        tracing::warn!(order = %id, error = %e, "replay outcome not stored");
        queue.set_off(&e);
        return;
    }
    queue.last_replay_ms.store(now_ms(), Ordering::Relaxed);
    if let Some(result) = result {
        queue.replayed(result, 1);
        match result {
            ReplayResult::DeadLetter => {
                tracing::warn!(order = %id, "async order given up: now a dead letter")
            }
            _ => tracing::debug!(order = %id, state = state.as_str(), "async order replayed"),
        }
    }
    if state.is_final() {
        let mut s = queue.stats.lock();
        s.depth = s.depth.saturating_sub(1);
    }
}

impl Queue {
    /// Drops expired orders; counts the unmade ones.
    async fn expire(&self, now: u64) {
        let Some(store) = &self.store else { return };
        if let Ok(n) = store.expire(now).await
            && n > 0
        {
            tracing::info!(orders = n, "queued async orders expired unmade");
            self.replayed(ReplayResult::Expired, n);
        }
    }
}

async fn sweeper(queue: Arc<Queue>) {
    let Some(store) = queue.store.clone() else {
        return;
    };
    let mut tick = tokio::time::interval(REFRESH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n = 0u32;
    loop {
        tick.tick().await;
        n = n.wrapping_add(1);
        if !queue.is_accepting() {
            if store.check().await.is_ok() {
                queue.set_on();
            } else {
                continue;
            }
        }
        if n.is_multiple_of(expire_every(&queue)) {
            queue.expire(now_ms()).await;
        }
        // An idle queue is read every 10 s only (another replica may have
        // queued orders in a shared store).
        if queue.changed.swap(false, Ordering::Relaxed)
            || n.is_multiple_of(10)
            || queue.stats.lock().depth > 0
        {
            queue.refresh().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BreakerConfig, QueueConfig};
    use crate::queue::record::{AuthHash, OrderId, QueuedBecause};
    use crate::resilience::breaker::Breaker;
    use crate::telemetry::Metrics;

    fn queue(config: QueueConfig) -> Arc<Queue> {
        let metrics = Arc::new(Metrics::default());
        Queue::with_store(
            &config,
            None,
            None,
            None,
            Breaker::new(&BreakerConfig::default(), Arc::clone(&metrics)),
            metrics,
        )
    }

    fn record() -> OrderRecord {
        OrderRecord {
            id: OrderId(1),
            state: OrderState::Queued,
            because: QueuedBecause::CircuitOpen,
            auth: AuthHash([0; 32]),
            enqueued_ms: 0,
            updated_ms: 0,
            next_ms: 0,
            expires_ms: 1_000,
            attempts: 0,
            failures: 0,
            last_error: None,
            request: None,
            answer: None,
        }
    }

    fn failed() -> Ended {
        Ended::Failed {
            error: "unreachable".into(),
            answer: None,
        }
    }

    #[test]
    fn failures_back_off_then_become_a_dead_letter() {
        let q = queue(QueueConfig {
            dead_letter_after: 3,
            replay_delay: Duration::from_secs(5),
            replay_max_delay: Duration::from_secs(8),
            ..QueueConfig::default()
        });
        let (r, res) = next_state(&q, record(), failed(), true, 100);
        assert_eq!(res, Some(ReplayResult::Failed));
        assert_eq!(
            (r.state, r.attempts, r.failures, r.next_ms),
            (OrderState::Queued, 1, 1, 5_100)
        );
        let (r, _) = next_state(&q, r, failed(), true, 200);
        assert_eq!(r.next_ms, 8_200, "doubled, capped at replay_max_delay");
        // A half-open probe is an attempt, not a failure of the order.
        let (r, _) = next_state(&q, r, failed(), false, 300);
        assert_eq!(
            (r.state, r.attempts, r.failures),
            (OrderState::Queued, 3, 2)
        );
        let (r, res) = next_state(&q, r, failed(), true, 400);
        assert_eq!(res, Some(ReplayResult::DeadLetter));
        assert_eq!(r.state, OrderState::DeadLetter);
        assert_eq!(r.expires_ms, 400 + 24 * 3600 * 1000);
    }

    #[test]
    fn an_answer_is_final_and_drops_the_request() {
        let q = queue(QueueConfig::default());
        let answer = StoredAnswer {
            status: 200,
            headers: vec![],
            body: b"{\"jwt\":\"x\"}".to_vec(),
        };
        let (r, res) = next_state(&q, record(), Ended::Made(answer.clone()), true, 5);
        assert_eq!(res, Some(ReplayResult::Made));
        assert_eq!(r.state, OrderState::Made);
        assert_eq!(r.answer, Some(answer.clone()));
        assert!(r.request.is_none(), "no apiKey kept once made");
        let (r, res) = next_state(
            &q,
            record(),
            Ended::Refused(StoredAnswer {
                status: 400,
                ..answer
            }),
            true,
            5,
        );
        assert_eq!(
            (r.state, res),
            (OrderState::Failed, Some(ReplayResult::Failed))
        );
        let (r, res) = next_state(&q, record(), Ended::NotSent, true, 9);
        assert_eq!(
            (r.state, r.attempts, r.next_ms, res),
            (OrderState::Queued, 0, 9, None)
        );
    }
}
