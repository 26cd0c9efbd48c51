//! The episodes part of `/status`: each episode as an operator reads it
//! (RFC 3339 times, the link masked, whether it can still be followed, its
//! resolve attempts), open ones first, then the closed ones, newest first.

use serde::Serialize;
use tokio::time::Instant;

use super::{Episode, How, Registry};
use crate::chaos::ChaosType;
use crate::chaos::resolve::FactoryAnswer;
use crate::times::rfc3339;

/// One resolve attempt as `/status` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResolveView {
    pub at: String,
    pub how: How,
    #[serde(flatten)]
    pub answer: FactoryAnswer,
}

/// One episode as `/status` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EpisodeView {
    pub id: u64,
    #[serde(rename = "type")]
    pub chaos: ChaosType,
    pub first_seen: String,
    pub last_seen: String,
    pub attempts: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_status: Option<u16>,
    /// Masked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    pub followable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub how: Option<How>,
    /// So far, for an open episode.
    pub duration_seconds: f64,
    pub resolves: Vec<ResolveView>,
}

/// The episodes part of `/status`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EpisodesSnapshot {
    /// Open episodes.
    pub active: Vec<EpisodeView>,
    /// Closed ones, newest first.
    pub recent: Vec<EpisodeView>,
}

impl Registry {
    /// Open and recent episodes, links masked.
    pub fn snapshot(&self) -> EpisodesSnapshot {
        let now = Instant::now();
        let inner = self.inner.lock();
        let view = |e: &Episode| EpisodeView {
            id: e.id,
            chaos: e.chaos,
            first_seen: rfc3339(e.first_seen),
            last_seen: rfc3339(e.last_seen),
            attempts: e.attempts,
            last_status: e.last_status,
            link: e.shown.clone(),
            followable: e.link.is_some(),
            resolved_at: e.resolved_at.map(rfc3339),
            how: e.how,
            duration_seconds: e
                .ended
                .unwrap_or(now)
                .duration_since(e.started)
                .as_secs_f64(),
            resolves: e
                .resolves
                .iter()
                .map(|r| ResolveView {
                    at: rfc3339(r.at),
                    how: r.how,
                    answer: r.answer.clone(),
                })
                .collect(),
        };
        EpisodesSnapshot {
            active: inner.open.iter().map(view).collect(),
            recent: inner.closed.iter().rev().map(view).collect(),
        }
    }
}
