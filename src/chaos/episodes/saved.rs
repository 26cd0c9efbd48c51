//! Episodes as the optional episode store keeps them across restarts
//! ([`crate::chaos::persist`]): times in Unix milliseconds, links masked
//! only (a restored episode becomes followable again when the factory
//! shows its link again), open ones active again and closing as usual.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::time::Instant;

use super::{Episode, HISTORY, How, Registry, ResolveRecord};
use crate::chaos::ChaosType;
use crate::chaos::resolve::FactoryAnswer;
use crate::times::{from_unix_ms, millis, unix_ms};

/// An episode as saved by the episode store (times in Unix ms).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SavedEpisode {
    pub id: u64,
    pub chaos: ChaosType,
    pub first_seen: u64,
    pub last_seen: u64,
    pub attempts: u64,
    pub last_status: Option<u16>,
    /// Masked.
    pub link: Option<String>,
    pub resolved_at: Option<u64>,
    pub how: Option<How>,
    pub duration_ms: u64,
    pub resolves: Vec<SavedResolve>,
}

/// A resolve attempt as saved.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct SavedResolve {
    pub at: u64,
    pub how: How,
    pub answer: FactoryAnswer,
}

impl Registry {
    /// Every episode as kept across restarts: open ones first, then the
    /// closed ones oldest first. Masked links only: a restored episode
    /// becomes followable again when the factory shows its link again.
    pub fn export(&self) -> Vec<SavedEpisode> {
        let now = Instant::now();
        let inner = self.inner.lock();
        inner
            .open
            .iter()
            .chain(inner.closed.iter())
            .map(|e| SavedEpisode {
                id: e.id,
                chaos: e.chaos,
                first_seen: unix_ms(e.first_seen),
                last_seen: unix_ms(e.last_seen),
                attempts: e.attempts,
                last_status: e.last_status,
                link: e.shown.clone(),
                resolved_at: e.resolved_at.map(unix_ms),
                how: e.how,
                duration_ms: millis(e.ended.unwrap_or(now).duration_since(e.started)),
                resolves: e
                    .resolves
                    .iter()
                    .map(|r| SavedResolve {
                        at: unix_ms(r.at),
                        how: r.how,
                        answer: r.answer.clone(),
                    })
                    .collect(),
            })
            .collect()
    }

    /// Puts saved episodes back (at start, before any answer is seen).
    /// Open ones count as active again (`sidecar.chaos.active`) and close
    /// as usual, with a Grafana region from their first sighting.
    pub fn import(&self, saved: Vec<SavedEpisode>) {
        let now = Instant::now();
        let wall = SystemTime::now();
        let ago = |t: u64| {
            wall.duration_since(from_unix_ms(t))
                .unwrap_or(Duration::ZERO)
        };
        let at = |t: u64| now.checked_sub(ago(t)).unwrap_or(now);
        let mut inner = self.inner.lock();
        for s in saved {
            let first_seen = from_unix_ms(s.first_seen);
            let started = at(s.first_seen);
            let ep = Episode {
                id: s.id,
                chaos: s.chaos,
                first_seen,
                last_seen: from_unix_ms(s.last_seen),
                started,
                last_seen_at: at(s.last_seen),
                attempts: s.attempts,
                last_status: s.last_status,
                link: None,
                shown: s.link,
                resolved_at: s.resolved_at.map(from_unix_ms),
                ended: s
                    .resolved_at
                    .map(|_| started + Duration::from_millis(s.duration_ms)),
                how: s.how,
                resolves: s
                    .resolves
                    .into_iter()
                    .map(|r| ResolveRecord {
                        at: from_unix_ms(r.at),
                        how: r.how,
                        answer: r.answer,
                    })
                    .collect(),
                follow: None,
                last_follow: None,
            };
            inner.next_id = inner.next_id.max(ep.id);
            if ep.resolved_at.is_some() {
                if inner.closed.len() >= HISTORY {
                    inner.closed.pop_front();
                }
                inner.closed.push_back(ep);
            } else if !inner.open.iter().any(|o| o.chaos == ep.chaos) {
                self.metrics.chaos_active(ep.chaos, true);
                inner.open.push(ep);
            }
        }
        self.open.store(inner.open.len(), Ordering::Release);
    }
}
