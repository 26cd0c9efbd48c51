//! Chaos episodes: what happened, since when, how often, and how it ended.
//!
//! An episode opens on the first answer showing a kind of chaos (`fail`: a
//! 5xx with a link; `badjwt`: a 2xx whose jwt does not verify; `throttle`: a
//! slow 2xx with a link; `unknown`: failures without a link, an outage) and
//! closes when a report-link GET resolves it (`auto` or `manual`) or when
//! healthy answers come back by themselves (`ended`). At most one episode of
//! each kind is open; the last [`HISTORY`] closed ones are kept.
//!
//! The registry also decides when to follow a link, under its one lock, so
//! the decision is atomic: at most one follow per episode per
//! `resolve_cooldown`, and detections racing each other get one GET
//! (the others may wait for its outcome). Answers that still carry the link
//! of an episode just resolved (orders that were in flight meanwhile) are
//! counted on it instead of opening a new one.
//!
//! Every state change is one tracing line (warn on detect, info on the
//! end), one metric update and one [`EpisodeEvent`] on a broadcast channel
//! (for Grafana annotations). Links are kept raw only to follow them; they
//! are shown masked everywhere.
//!
//! Here: the registry and its decisions. Beside it: `view.rs` (the
//! `/status` part) and `saved.rs` (episodes kept across restarts).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use http::StatusCode;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

use crate::chaos::link::ReportLink;
use crate::chaos::mask::mask_link;
use crate::chaos::resolve::FactoryAnswer;
use crate::chaos::{ChaosType, ResolveResult};
use crate::live::LiveDuration;
use crate::telemetry::metrics::Metrics;
use crate::times::millis;

mod saved;
mod view;

pub use saved::{SavedEpisode, SavedResolve};
pub use view::{EpisodeView, EpisodesSnapshot, ResolveView};

/// Closed episodes kept for `/status`.
pub const HISTORY: usize = 50;
/// Resolve attempts kept per episode.
const RESOLVES_KEPT: usize = 10;
/// Buffered events per subscriber; a slower one misses the oldest.
const EVENT_BUFFER: usize = 64;

/// How an episode ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub enum How {
    /// The sidecar followed the link by itself.
    #[serde(rename = "auto")]
    Auto,
    /// An operator asked (`POST /chaos/resolve`).
    #[serde(rename = "manual")]
    Manual,
    /// Healthy answers came back without a resolve from us.
    #[serde(rename = "ended")]
    EndedByItself,
}

impl How {
    pub fn as_str(self) -> &'static str {
        match self {
            How::Auto => "auto",
            How::Manual => "manual",
            How::EndedByItself => "ended",
        }
    }
}

/// Whether an event opens or closes an episode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Started,
    Resolved,
}

/// An episode state change, for subscribers (Grafana annotations).
#[derive(Debug, Clone)]
pub struct EpisodeEvent {
    pub episode: u64,
    pub kind: EventKind,
    pub chaos: ChaosType,
    pub at: SystemTime,
    /// The link, masked.
    pub link: Option<String>,
    /// For `Resolved`: how, and how long the episode lasted.
    pub how: Option<How>,
    pub duration: Option<Duration>,
}

/// One report-link GET and what the factory said.
#[derive(Debug, Clone)]
struct ResolveRecord {
    at: SystemTime,
    how: How,
    answer: FactoryAnswer,
}

struct Episode {
    id: u64,
    chaos: ChaosType,
    first_seen: SystemTime,
    last_seen: SystemTime,
    started: Instant,
    last_seen_at: Instant,
    attempts: u64,
    last_status: Option<u16>,
    /// Followable link (raw, private).
    link: Option<ReportLink>,
    /// The link as found, masked (also for links too odd to follow).
    shown: Option<String>,
    resolved_at: Option<SystemTime>,
    ended: Option<Instant>,
    how: Option<How>,
    resolves: VecDeque<ResolveRecord>,
    /// The follow in flight: `false` until it is done.
    follow: Option<watch::Receiver<bool>>,
    last_follow: Option<Instant>,
}

impl Episode {
    /// Closed by following `link` (auto or manual) less than `cooldown` ago.
    fn resolved_recently(&self, link: &ReportLink, now: Instant, cooldown: Duration) -> bool {
        self.link.as_ref() == Some(link)
            && matches!(self.how, Some(How::Auto | How::Manual))
            && self.ended.is_some_and(|t| now.duration_since(t) < cooldown)
    }
}

impl Episode {
    fn follow_in_flight(&self) -> Option<watch::Receiver<bool>> {
        let rx = self.follow.as_ref()?;
        // Closed (ticket dropped) or done: nothing to wait for.
        (rx.has_changed().is_ok() && !*rx.borrow()).then(|| rx.clone())
    }
}

/// What the caller should do about a link after recording a sighting.
#[derive(Debug)]
pub enum FollowPlan {
    /// Nothing (no link, auto-resolve off, cooldown, or a straggler).
    None,
    /// Follow it now, then hand the ticket back with [`Registry::finish`].
    Go(FollowTicket),
    /// Another detection is following it: wait for that (optional).
    Wait(watch::Receiver<bool>),
}

/// The right to follow an episode's link once.
#[derive(Debug)]
pub struct FollowTicket {
    episode: u64,
    link: ReportLink,
    how: How,
    /// Tells waiters the follow is over (dropping it does too).
    done: watch::Sender<bool>,
}

impl FollowTicket {
    pub fn link(&self) -> &ReportLink {
        &self.link
    }
    pub fn episode(&self) -> u64 {
        self.episode
    }
    #[cfg(test)]
    pub fn how(&self) -> How {
        self.how
    }
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    open: Vec<Episode>,
    closed: VecDeque<Episode>,
}

/// See the module docs.
pub struct Registry {
    inner: Mutex<Inner>,
    /// Open episodes, readable without the lock (healthy answers check it).
    open: AtomicUsize,
    metrics: Arc<Metrics>,
    events: broadcast::Sender<EpisodeEvent>,
    /// `resolve_cooldown` (a reload may change it).
    cooldown: LiveDuration,
    /// The id of the newest open episode, 0 when none (for the access log,
    /// read on every request without the lock).
    newest_open: AtomicU64,
    /// Bumped after every change, for the optional episode store
    /// ([`super::persist`]); nobody listens when none is configured.
    changes: watch::Sender<u64>,
}

/// Bumps [`Registry::changes`] when dropped (after the lock is released).
struct Changed<'a>(&'a watch::Sender<u64>);

impl Drop for Changed<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.wrapping_add(1));
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("open", &self.open.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Registry {
    pub fn new(metrics: Arc<Metrics>, cooldown: Duration) -> Registry {
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        Registry {
            inner: Mutex::new(Inner::default()),
            open: AtomicUsize::new(0),
            metrics,
            events,
            cooldown: LiveDuration::new(cooldown),
            newest_open: AtomicU64::new(0),
            changes: watch::channel(0).0,
        }
    }

    /// A reload's new `resolve_cooldown`.
    pub fn set_cooldown(&self, cooldown: Duration) {
        self.cooldown.set(cooldown);
    }

    fn cooldown(&self) -> Duration {
        self.cooldown.get()
    }

    /// The newest open episode's id, if any (no lock: one load).
    pub fn newest_open(&self) -> Option<u64> {
        match self.newest_open.load(Ordering::Relaxed) {
            0 => None,
            id => Some(id),
        }
    }

    /// Publishes the open episodes' count and newest id for lock-free readers.
    fn publish_open(&self, inner: &Inner) {
        self.open.store(inner.open.len(), Ordering::Release);
        let newest = inner.open.iter().map(|e| e.id).max().unwrap_or(0);
        self.newest_open.store(newest, Ordering::Relaxed);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<EpisodeEvent> {
        self.events.subscribe()
    }

    /// Records an answer showing `chaos`, with the link text it carried (if
    /// any). `auto`: whether the caller may follow the link by itself.
    pub fn record(
        &self,
        chaos: ChaosType,
        link_text: Option<&str>,
        status: Option<StatusCode>,
        auto: bool,
    ) -> FollowPlan {
        let now = Instant::now();
        let wall = SystemTime::now();
        let link = link_text.and_then(ReportLink::parse);
        let status = status.map(|s| s.as_u16());
        let _changed = Changed(&self.changes);
        let mut inner = self.inner.lock();

        // An order that was in flight while we resolved this very link.
        if let Some(l) = &link
            && let Some(ep) = inner
                .closed
                .iter_mut()
                .rev()
                .find(|e| e.resolved_recently(l, now, self.cooldown()))
        {
            ep.attempts += 1;
            ep.last_seen = wall;
            ep.last_status = status.or(ep.last_status);
            tracing::debug!(episode = ep.id, "answer from before the resolve");
            return FollowPlan::None;
        }

        // The factory runs one chaos at a time: a link means the others ended.
        if link_text.is_some() {
            let others: Vec<usize> = (0..inner.open.len())
                .rev()
                .filter(|&i| {
                    let e = &inner.open[i];
                    e.chaos != chaos && (e.link.is_none() || e.link != link)
                })
                .collect();
            for i in others {
                let ep = inner.open.remove(i);
                self.close(&mut inner, ep, How::EndedByItself, now, wall);
            }
        }

        let idx = match inner.open.iter().position(|e| e.chaos == chaos) {
            Some(i) => {
                let ep = &mut inner.open[i];
                ep.attempts += 1;
                ep.last_seen = wall;
                ep.last_seen_at = now;
                ep.last_status = status.or(ep.last_status);
                if link.is_some() && ep.link != link {
                    // A new fix code: worth following at once.
                    ep.link = link;
                    ep.shown = link_text.map(mask_link);
                    ep.last_follow = None;
                } else if ep.shown.is_none() {
                    ep.shown = link_text.map(mask_link);
                }
                i
            }
            None => {
                inner.next_id += 1;
                let ep = Episode {
                    id: inner.next_id,
                    chaos,
                    first_seen: wall,
                    last_seen: wall,
                    started: now,
                    last_seen_at: now,
                    attempts: 1,
                    last_status: status,
                    link,
                    shown: link_text.map(mask_link),
                    resolved_at: None,
                    ended: None,
                    how: None,
                    resolves: VecDeque::new(),
                    follow: None,
                    last_follow: None,
                };
                tracing::warn!(
                    episode = ep.id,
                    chaos.r#type = chaos.as_str(),
                    link = ep.shown.as_deref().unwrap_or("none"),
                    status = status.unwrap_or(0),
                    "chaos detected"
                );
                self.metrics.chaos_detected(chaos);
                self.metrics.chaos_active(chaos, true);
                let _ = self.events.send(EpisodeEvent {
                    episode: ep.id,
                    kind: EventKind::Started,
                    chaos,
                    at: wall,
                    link: ep.shown.clone(),
                    how: None,
                    duration: None,
                });
                inner.open.push(ep);
                self.publish_open(&inner);
                inner.open.len() - 1
            }
        };

        if !auto {
            return FollowPlan::None;
        }
        let ep = &mut inner.open[idx];
        let Some(link) = ep.link.clone() else {
            return FollowPlan::None;
        };
        if let Some(rx) = ep.follow_in_flight() {
            return FollowPlan::Wait(rx);
        }
        if ep
            .last_follow
            .is_some_and(|t| now.duration_since(t) < self.cooldown())
        {
            return FollowPlan::None;
        }
        FollowPlan::Go(Self::ticket(ep, link, How::Auto, now))
    }

    /// Whether `link_text` was followed and the factory confirmed the chaos
    /// resolved, within the cooldown: an answer carrying it describes chaos
    /// that is already over.
    pub fn is_resolved(&self, link_text: &str) -> bool {
        let Some(link) = ReportLink::parse(link_text) else {
            return false;
        };
        let now = Instant::now();
        self.inner
            .lock()
            .closed
            .iter()
            .rev()
            .any(|e| e.resolved_recently(&link, now, self.cooldown()))
    }

    fn ticket(ep: &mut Episode, link: ReportLink, how: How, now: Instant) -> FollowTicket {
        let (done, rx) = watch::channel(false);
        ep.follow = Some(rx);
        ep.last_follow = Some(now);
        FollowTicket {
            episode: ep.id,
            link,
            how,
            done,
        }
    }

    /// A ticket for the latest followable link, cooldown or not (an
    /// operator asked): the most recently seen open episode's, else the
    /// most recent closed one's.
    pub fn claim_manual(&self) -> Option<FollowTicket> {
        let now = Instant::now();
        let mut inner = self.inner.lock();
        if let Some(ep) = inner
            .open
            .iter_mut()
            .filter(|e| e.link.is_some())
            .max_by_key(|e| e.last_seen_at)
        {
            let link = ep.link.clone()?;
            return Some(Self::ticket(ep, link, How::Manual, now));
        }
        let ep = inner.closed.iter_mut().rev().find(|e| e.link.is_some())?;
        let link = ep.link.clone()?;
        let (done, _) = watch::channel(false);
        Some(FollowTicket {
            episode: ep.id,
            link,
            how: How::Manual,
            done,
        })
    }

    /// Records what a follow achieved; a resolved episode closes.
    pub fn finish(&self, ticket: FollowTicket, answer: &FactoryAnswer) {
        let now = Instant::now();
        let wall = SystemTime::now();
        let _changed = Changed(&self.changes);
        self.metrics.chaos_resolution(answer.result);
        {
            let mut inner = self.inner.lock();
            let record = ResolveRecord {
                at: wall,
                how: ticket.how,
                answer: answer.clone(),
            };
            if let Some(i) = inner.open.iter().position(|e| e.id == ticket.episode) {
                let ep = &mut inner.open[i];
                push_bounded(&mut ep.resolves, record);
                if answer.result == ResolveResult::Resolved {
                    let ep = inner.open.remove(i);
                    self.close(&mut inner, ep, ticket.how, now, wall);
                } else {
                    tracing::warn!(
                        episode = ticket.episode,
                        result = answer.result.as_str(),
                        status = answer.status.unwrap_or(0),
                        message = answer.message.as_deref().unwrap_or(""),
                        link = %ticket.link,
                        "report link followed; chaos not resolved"
                    );
                }
            } else if let Some(ep) = inner.closed.iter_mut().find(|e| e.id == ticket.episode) {
                push_bounded(&mut ep.resolves, record);
                tracing::info!(
                    episode = ticket.episode,
                    result = answer.result.as_str(),
                    "report link of a closed episode followed"
                );
            }
        }
        let _ = ticket.done.send(true);
    }

    /// A healthy answer: every open episode ended by itself, except one
    /// whose link is being followed: a healthy answer can overtake the very
    /// GET that made the factory healthy, and then the follow's answer says
    /// how the episode ended (else it would read "ended", and the answers
    /// caught by it would not count as resolved chaos).
    pub fn healthy(&self) {
        if self.open.load(Ordering::Acquire) == 0 {
            return;
        }
        let now = Instant::now();
        let wall = SystemTime::now();
        let _changed = Changed(&self.changes);
        let mut inner = self.inner.lock();
        let open = std::mem::take(&mut inner.open);
        let mut kept = Vec::new();
        for ep in open {
            if ep.follow_in_flight().is_some() {
                kept.push(ep);
            } else {
                self.close(&mut inner, ep, How::EndedByItself, now, wall);
            }
        }
        inner.open = kept;
        self.publish_open(&inner);
    }

    fn close(&self, inner: &mut Inner, mut ep: Episode, how: How, now: Instant, wall: SystemTime) {
        ep.how = Some(how);
        ep.resolved_at = Some(wall);
        ep.ended = Some(now);
        let lasted = now.duration_since(ep.started);
        tracing::info!(
            episode = ep.id,
            chaos.r#type = ep.chaos.as_str(),
            how = how.as_str(),
            attempts = ep.attempts,
            duration_ms = millis(lasted),
            link = ep.shown.as_deref().unwrap_or("none"),
            "chaos episode over"
        );
        self.metrics.chaos_active(ep.chaos, false);
        let _ = self.events.send(EpisodeEvent {
            episode: ep.id,
            kind: EventKind::Resolved,
            chaos: ep.chaos,
            at: wall,
            link: ep.shown.clone(),
            how: Some(how),
            duration: Some(lasted),
        });
        if inner.closed.len() >= HISTORY {
            inner.closed.pop_front();
        }
        inner.closed.push_back(ep);
        self.publish_open(inner);
    }

    /// Open episodes right now.
    #[cfg(test)]
    pub fn open_count(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Changes to watch (a new value after each).
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

fn push_bounded(v: &mut VecDeque<ResolveRecord>, r: ResolveRecord) {
    if v.len() >= RESOLVES_KEPT {
        v.pop_front();
    }
    v.push_back(r);
}

#[cfg(test)]
mod tests {
    use super::*;

    const L1: &str = "https://h/api/support/feedfacecafebeef0123456789abc0de/report/code0001";
    const L2: &str = "https://h/api/support/feedfacecafebeef0123456789abc0de/report/code0002";

    fn registry(cooldown: Duration) -> Registry {
        Registry::new(Arc::new(Metrics::default()), cooldown)
    }

    fn answer(result: ResolveResult) -> FactoryAnswer {
        FactoryAnswer {
            result,
            status: Some(200),
            message: None,
        }
    }

    fn go(plan: FollowPlan) -> FollowTicket {
        match plan {
            FollowPlan::Go(t) => t,
            other => panic!("expected a ticket, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn first_detection_gets_the_ticket_the_others_wait_or_skip() {
        let r = registry(Duration::from_secs(10));
        let mut events = r.subscribe();
        let t = go(r.record(
            ChaosType::Fail,
            Some(L1),
            Some(StatusCode::INTERNAL_SERVER_ERROR),
            true,
        ));
        assert_eq!(
            t.link().path(),
            "/api/support/feedfacecafebeef0123456789abc0de/report/code0001"
        );
        let mut wait = match r.record(ChaosType::Fail, Some(L1), None, true) {
            FollowPlan::Wait(rx) => rx,
            other => panic!("a follow is in flight: {other:?}"),
        };
        assert_eq!(r.open_count(), 1);
        let e = events.try_recv().expect("started");
        assert_eq!((e.kind, e.chaos), (EventKind::Started, ChaosType::Fail));
        assert_eq!(
            e.link.as_deref(),
            Some("https://h/api/support/****c0de/report/****")
        );

        // Unresolved: stays open; no new follow inside the cooldown.
        r.finish(t, &answer(ResolveResult::Unresolved));
        assert!(wait.wait_for(|d| *d).await.is_ok());
        assert!(matches!(
            r.record(ChaosType::Fail, Some(L1), None, true),
            FollowPlan::None
        ));
        tokio::time::advance(Duration::from_secs(11)).await;
        let t = go(r.record(ChaosType::Fail, Some(L1), None, true));
        r.finish(t, &answer(ResolveResult::Resolved));
        assert_eq!(r.open_count(), 0);
        let e = events.try_recv().expect("resolved");
        assert_eq!((e.kind, e.how), (EventKind::Resolved, Some(How::Auto)));

        let s = r.snapshot();
        assert!(s.active.is_empty());
        let ep = &s.recent[0];
        assert_eq!(
            (ep.attempts, ep.how, ep.resolves.len()),
            (4, Some(How::Auto), 2)
        );
        let json = serde_json::to_string(&s).expect("json");
        assert!(
            !json.contains("feedfacecafebeef0123456789abc0de") && !json.contains("code0001"),
            "{json}"
        );
        assert!(json.contains(r#""type":"fail""#), "{json}");
    }

    #[tokio::test(start_paused = true)]
    async fn stragglers_of_a_resolved_link_do_not_reopen() {
        let r = registry(Duration::from_secs(10));
        let t = go(r.record(ChaosType::Fail, Some(L1), None, true));
        r.finish(t, &answer(ResolveResult::Resolved));
        assert!(matches!(
            r.record(ChaosType::Fail, Some(L1), None, true),
            FollowPlan::None
        ));
        assert_eq!(r.open_count(), 0);
        assert_eq!(r.snapshot().recent[0].attempts, 2);
        // A new fix code is a new episode.
        let t = go(r.record(ChaosType::Fail, Some(L2), None, true));
        assert_eq!(r.open_count(), 1);
        drop(t);
        // After the cooldown the old link opens a new episode again.
        let r = registry(Duration::from_secs(10));
        let t = go(r.record(ChaosType::Fail, Some(L1), None, true));
        r.finish(t, &answer(ResolveResult::Resolved));
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(matches!(
            r.record(ChaosType::Fail, Some(L1), None, true),
            FollowPlan::Go(_)
        ));
    }

    #[tokio::test]
    async fn auto_off_never_hands_out_a_ticket_but_manual_does() {
        let r = registry(Duration::from_secs(10));
        for _ in 0..3 {
            assert!(matches!(
                r.record(ChaosType::Fail, Some(L1), None, false),
                FollowPlan::None
            ));
        }
        let t = r.claim_manual().expect("latest link");
        assert_eq!(t.how(), How::Manual);
        r.finish(t, &answer(ResolveResult::Resolved));
        let s = r.snapshot();
        assert_eq!(s.recent[0].how, Some(How::Manual));
        assert_eq!(s.recent[0].attempts, 3);
        // After the episode closed, manual still finds its link.
        assert!(r.claim_manual().is_some());
    }

    #[tokio::test]
    async fn healthy_answers_end_everything_open_and_a_dropped_ticket_frees_the_flight() {
        let r = registry(Duration::ZERO);
        assert!(matches!(
            r.record(
                ChaosType::Unknown,
                None,
                Some(StatusCode::BAD_GATEWAY),
                true
            ),
            FollowPlan::None
        ));
        let t = go(r.record(ChaosType::Throttle, Some(L1), None, true));
        drop(t);
        // Not waiting on a dead flight: a new ticket (cooldown zero).
        assert!(matches!(
            r.record(ChaosType::Throttle, Some(L1), None, true),
            FollowPlan::Go(_)
        ));
        // The linked throttle sighting ended the outage.
        assert_eq!(r.open_count(), 1);
        r.healthy();
        assert_eq!(r.open_count(), 0);
        let s = r.snapshot();
        assert!(s.recent.iter().all(|e| e.how == Some(How::EndedByItself)));
        assert_eq!(s.recent.len(), 2);
        r.healthy();
    }

    #[tokio::test]
    async fn odd_links_are_shown_masked_but_never_followable() {
        let r = registry(Duration::ZERO);
        let odd = "https://h/api/support/feedfacecafebeef0123456789abc0de/report/x?y=1";
        assert!(matches!(
            r.record(ChaosType::Fail, Some(odd), None, true),
            FollowPlan::None
        ));
        let s = r.snapshot();
        assert!(!s.active[0].followable);
        assert_eq!(
            s.active[0].link.as_deref(),
            Some("https://h/api/support/****c0de/report/****")
        );
        assert!(r.claim_manual().is_none());
    }

    #[tokio::test]
    async fn a_healthy_answer_overtaking_the_resolve_get_leaves_the_episode_to_it() {
        let r = registry(Duration::from_secs(10));
        let t = go(r.record(ChaosType::Fail, Some(L1), None, true));
        // The GET made the factory healthy; an order's answer came back first.
        r.healthy();
        assert_eq!(r.open_count(), 1, "the follow decides");
        r.finish(t, &answer(ResolveResult::Resolved));
        assert_eq!(r.open_count(), 0);
        assert_eq!(r.snapshot().recent[0].how, Some(How::Auto));
        assert!(r.is_resolved(L1));
        // Without a follow in flight, healthy answers end it.
        let t = go(r.record(ChaosType::Fail, Some(L2), None, true));
        r.finish(t, &answer(ResolveResult::Error));
        r.healthy();
        assert_eq!(r.open_count(), 0);
        assert_eq!(r.snapshot().recent[0].how, Some(How::EndedByItself));
        assert!(!r.is_resolved(L2));
    }

    #[test]
    fn history_is_bounded() {
        let r = registry(Duration::ZERO);
        for _ in 0..HISTORY + 5 {
            let _ = r.record(ChaosType::Unknown, None, None, true);
            r.healthy();
        }
        assert_eq!(r.snapshot().recent.len(), HISTORY);
    }

    #[tokio::test(start_paused = true)]
    async fn episodes_export_and_import_whole() {
        let r = registry(Duration::from_secs(10));
        let changes = r.changes();
        let t = go(r.record(
            ChaosType::Fail,
            Some(L1),
            Some(StatusCode::INTERNAL_SERVER_ERROR),
            true,
        ));
        assert!(
            changes.has_changed().expect("open"),
            "a change is announced"
        );
        r.finish(t, &answer(ResolveResult::Resolved));
        let _ = r.record(ChaosType::Unknown, None, None, true);
        let saved = r.export();
        assert_eq!(saved.len(), 2);
        let json = serde_json::to_string(&saved).expect("json");
        assert!(
            !json.contains("feedfacecafebeef0123456789abc0de"),
            "masked only: {json}"
        );

        let back = registry(Duration::from_secs(10));
        back.import(serde_json::from_str(&json).expect("parse"));
        let snap = back.snapshot();
        assert_eq!(snap.active.len(), 1);
        assert_eq!(snap.active[0].chaos, ChaosType::Unknown);
        assert_eq!(snap.recent.len(), 1);
        assert_eq!(snap.recent[0].how, Some(How::Auto));
        assert!(!snap.recent[0].followable);
        // New episodes continue the numbering.
        let _ = back.record(ChaosType::Throttle, Some(L2), Some(StatusCode::OK), false);
        let ids: Vec<u64> = back.snapshot().active.iter().map(|e| e.id).collect();
        assert!(ids.contains(&3), "{ids:?}");
    }
}
