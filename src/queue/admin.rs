//! The queue as an admin part: its `/status` section, the dead letters
//! (`GET /queue/dead-letters`, `DELETE /queue/dead-letters/<id>`, token
//! required) and the `/readyz` note while async orders are off (the proxy
//! stays ready: orders still flow, only without the async promise).

use std::sync::atomic::Ordering;
use std::time::Duration;

use http::{Method, StatusCode};

use super::Queue;
use super::record::{OrderId, OrderRecord};
use crate::admin::{ActionAnswer, ActionFuture, AdminPart};
use crate::times::{now_ms, rfc3339_ms};

/// The dead-letter endpoints' path.
pub const DEAD_LETTERS: &str = "/queue/dead-letters";

/// A dead letter as the admin API shows it: no headers, no body (they
/// carry the vendor apiKey and the diner's data).
fn dead_letter_view(r: &OrderRecord) -> serde_json::Value {
    serde_json::json!({
        "id": r.id,
        "reason": r.because,
        "enqueuedAt": rfc3339_ms(r.enqueued_ms),
        "givenUpAt": rfc3339_ms(r.updated_ms),
        "expiresAt": rfc3339_ms(r.expires_ms),
        "attempts": r.attempts,
        "lastError": r.last_error,
        "lastStatus": r.answer.as_ref().map(|a| a.status),
    })
}

fn answer(status: StatusCode, body: serde_json::Value) -> ActionAnswer {
    ActionAnswer { status, body }
}

impl Queue {
    async fn list_dead_letters(&self) -> ActionAnswer {
        let Some(store) = &self.store else {
            return answer(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"message": "the queue store is unavailable"}),
            );
        };
        match store.dead_letters().await {
            Ok(list) => answer(
                StatusCode::OK,
                serde_json::json!({
                    "deadLetters": list.iter().map(dead_letter_view).collect::<Vec<_>>(),
                }),
            ),
            Err(e) => answer(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"message": e.to_string()}),
            ),
        }
    }

    async fn drop_dead_letter(&self, id: &str) -> ActionAnswer {
        let not_found = || {
            answer(
                StatusCode::NOT_FOUND,
                serde_json::json!({"message": "no such dead letter"}),
            )
        };
        let Some(id) = OrderId::parse(id) else {
            return not_found();
        };
        let Some(store) = &self.store else {
            return answer(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"message": "the queue store is unavailable"}),
            );
        };
        match store.drop_dead_letter(id).await {
            Ok(true) => {
                tracing::info!(order = %id, "dead letter dropped by an operator");
                answer(StatusCode::OK, serde_json::json!({"dropped": id}))
            }
            Ok(false) => not_found(),
            Err(e) => answer(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"message": e.to_string()}),
            ),
        }
    }
}

impl AdminPart for Queue {
    fn name(&self) -> &'static str {
        "queue"
    }

    fn status(&self) -> serde_json::Value {
        let stats = *self.stats.lock();
        let off = self.off();
        let c = &self.counts;
        let last = self.last_replay_ms.load(Ordering::Relaxed);
        serde_json::json!({
            "backend": self.backend(),
            "accepting": self.is_accepting(),
            "offReason": off.as_ref().map(|o| o.reason),
            "offMessage": off.map(|o| o.message),
            "depth": stats.depth,
            "oldestAgeSeconds": stats.oldest_ms.map_or(0.0, |t| {
                Duration::from_millis(now_ms().saturating_sub(t)).as_secs_f64()
            }),
            "deadLetters": stats.dead_letters,
            "inFlight": c.in_flight.load(Ordering::Relaxed),
            "accepted": c.accepted.load(Ordering::Relaxed),
            "replayed": {
                "made": c.made.load(Ordering::Relaxed),
                "failed": c.failed.load(Ordering::Relaxed),
                "expired": c.expired.load(Ordering::Relaxed),
                "deadLetter": c.dead_letter.load(Ordering::Relaxed),
            },
            "lastReplayAt": (last > 0).then(|| rfc3339_ms(last)),
            "ttlSeconds": self.config.ttl.as_secs(),
            "replayPerSecond": self.config.replay_per_second,
            "deadLetterAfter": self.config.dead_letter_after,
        })
    }

    fn methods(&self, path: &str) -> Option<&'static str> {
        if path == DEAD_LETTERS {
            return Some("GET");
        }
        let id = path.strip_prefix(DEAD_LETTERS)?.strip_prefix('/')?;
        (!id.is_empty()).then_some("DELETE")
    }

    fn route<'a>(&'a self, method: &'a Method, path: &'a str) -> Option<ActionFuture<'a>> {
        if *method == Method::GET && path == DEAD_LETTERS {
            return Some(Box::pin(self.list_dead_letters()));
        }
        let id = path.strip_prefix(DEAD_LETTERS)?.strip_prefix('/')?;
        (*method == Method::DELETE).then(|| Box::pin(self.drop_dead_letter(id)) as ActionFuture<'a>)
    }

    fn readiness_note(&self) -> Option<String> {
        self.off()
            .map(|o| format!("async orders off ({}): {}", o.reason.as_str(), o.message))
    }
}
