//! The waiting room: every order that is waiting for the factory, oldest
//! first, and who may try again when.
//!
//! An order enters when it stops being a quick one: its try has run past
//! `upstream.attempt_timeout` (it *waits* on a slow try), or the breaker
//! refused it or all its tries failed (it *parks*: it holds a place and
//! sends nothing until told). Parked orders are bounded by
//! `orders.max_waiting`; one that finds the lot full is answered at once.
//!
//! What happens to them is decided here, under one lock, so a burst of
//! events releases each order once and in arrival order:
//! - **Recovery** ([`Lot::recovered`]): the factory is known to answer again
//!   as of time T. Every waiting order whose newest try left before T is
//!   *released*: it may send one fresh try, at a slot handed out oldest
//!   first, one every 1/`release_per_second`, so a lot of orders does not
//!   land on a factory that just came back all at once. A slow try is not
//!   cancelled by a release: whichever answers first wins. The evidence
//!   decides which older tries count as stuck ([`Evidence`]): after the
//!   breaker closed or a chaos episode was resolved, all of them (a
//!   throttled try is not sped up by the resolve); after a try sent at T was
//!   answered promptly, those unanswered for `attempt_timeout` (a younger
//!   try may well be answered promptly too). An order that enters the lot
//!   after a recovery its newest try predates is released as it enters.
//! - **Probe duty** ([`Ticket::refused`]): while the breaker is open, the
//!   oldest parked order is told to try when the breaker is due to
//!   half-open; the breaker's probe limit still decides whether that try
//!   goes out. Every other parked order sends nothing.
//! - **Drain** ([`Lot::drain`]): on shutdown every order learns by when it
//!   must be answered (parked ones: at once).
//!
//! Each order holds a [`Ticket`] (its place; dropping it leaves the lot) and
//! polls it for its next [`Go`]. The lock is a `parking_lot` mutex held for
//! a few field updates, never across an `.await`; an order on the happy
//! path never takes it (it reads [`Lot::waiting`], one atomic load, after a
//! prompt success).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;
use tokio::time::Instant;

use crate::live::LiveDuration;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::outcome::RequestOutcome;

/// How the lot learned that the factory answers again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evidence {
    /// A try sent at that moment was answered within `attempt_timeout`.
    Answered,
    /// The breaker closed, or a chaos episode was resolved, at that moment.
    Confirmed,
}

/// What a waiting order is told to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Go {
    /// Send one fresh try at this moment (released, or on probe duty).
    Try(Instant),
    /// The sidecar is shutting down: be answered by this moment; a parked
    /// order answers at once.
    Drain(Instant),
}

/// The lot holds `orders.max_waiting` parked orders already.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("{max} orders are already parked")]
pub struct LotFull {
    pub max: usize,
}

/// Arrival time, then a sequence number: iteration order is oldest first.
type Key = (Instant, u64);

struct Entry {
    /// Holds one of the `max_waiting` places.
    parked: bool,
    /// No try of its own in flight (refused, or its tries failed).
    idle: bool,
    newest_try: Option<Instant>,
    /// Released for this slot, and not yet sent: not released again.
    released: Option<Instant>,
    go: Option<Go>,
    waker: Option<Waker>,
}

impl Entry {
    fn tell(&mut self, go: Go) {
        self.go = Some(go);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

#[derive(Default)]
struct Inner {
    entries: BTreeMap<Key, Entry>,
    next_id: u64,
    parked: usize,
    /// The next free release slot.
    next_slot: Option<Instant>,
    /// The parked order on probe duty, and when it was told to try.
    probe: Option<(Key, Instant)>,
    /// Set by [`Lot::drain`]: every order must be answered by then.
    drain: Option<Instant>,
    /// The latest recovery: an order entering with an older try is
    /// released at once.
    last_recovery: Option<Instant>,
}

impl Inner {
    /// Releases `entry` at the next free slot (at or after `now`).
    fn release(&mut self, key: Key, now: Instant, pace: Duration) -> bool {
        let slot = self.next_slot.map_or(now, |s| s.max(now));
        let Some(entry) = self.entries.get_mut(&key) else {
            return false;
        };
        entry.released = Some(slot);
        entry.tell(Go::Try(slot));
        self.next_slot = Some(slot + pace);
        if self.probe.is_some_and(|(k, _)| k == key) {
            self.probe = None;
        }
        true
    }

    /// Gives probe duty at `at` to the oldest parked order with nothing to
    /// do yet, if nobody has it.
    fn assign_probe(&mut self, at: Instant) {
        if self.probe.is_some() || self.drain.is_some() {
            return;
        }
        if let Some((key, entry)) = self
            .entries
            .iter_mut()
            .find(|(_, e)| e.parked && e.idle && e.go.is_none() && e.released.is_none())
        {
            entry.tell(Go::Try(at));
            self.probe = Some((*key, at));
        }
    }
}

/// Settings of a [`Lot`], from `[orders]` (and `upstream.attempt_timeout`).
#[derive(Debug, Clone, Copy)]
pub struct LotSettings {
    pub max_waiting: usize,
    pub release_per_second: u32,
    /// How long a try may go unanswered before a prompt answer to a newer
    /// one makes it presumed stuck.
    pub attempt_timeout: Duration,
}

/// See the module docs.
pub struct Lot {
    inner: Mutex<Inner>,
    waiting: AtomicUsize,
    /// The settings below change on a config reload ([`Lot::reconfigure`]).
    max_waiting: AtomicUsize,
    release_per_second: AtomicU32,
    attempt_timeout: LiveDuration,
    metrics: Arc<Metrics>,
    parked_total: AtomicU64,
    released_total: AtomicU64,
    turned_away_total: AtomicU64,
}

impl std::fmt::Debug for Lot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lot")
            .field("waiting", &self.waiting())
            .field("max_waiting", &self.max_waiting())
            .finish_non_exhaustive()
    }
}

impl Lot {
    pub fn new(settings: LotSettings, metrics: Arc<Metrics>) -> Arc<Lot> {
        metrics.orders_parked(0);
        Arc::new(Lot {
            inner: Mutex::new(Inner::default()),
            waiting: AtomicUsize::new(0),
            max_waiting: AtomicUsize::new(settings.max_waiting),
            release_per_second: AtomicU32::new(settings.release_per_second.max(1)),
            attempt_timeout: LiveDuration::new(settings.attempt_timeout),
            metrics,
            parked_total: AtomicU64::new(0),
            released_total: AtomicU64::new(0),
            turned_away_total: AtomicU64::new(0),
        })
    }

    /// Takes a reloaded `[orders]` (and `attempt_timeout`): orders already
    /// parked keep their places, even above a lowered `max_waiting`.
    pub fn reconfigure(&self, settings: LotSettings) {
        let relaxed = Ordering::Relaxed;
        self.max_waiting.store(settings.max_waiting, relaxed);
        self.release_per_second
            .store(settings.release_per_second.max(1), relaxed);
        self.attempt_timeout.set(settings.attempt_timeout);
    }

    fn max_waiting(&self) -> usize {
        self.max_waiting.load(Ordering::Relaxed)
    }

    /// Released orders are spaced this far apart (`release_per_second`).
    fn pace(&self) -> Duration {
        Duration::from_secs(1) / self.release_per_second.load(Ordering::Relaxed).max(1)
    }

    /// Orders in the lot now (waiting on slow tries or parked). One atomic
    /// load: what the happy path asks before it bothers the lock.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    /// Parked orders now (each holds one of `max_waiting` places).
    pub fn parked(&self) -> usize {
        self.inner.lock().parked
    }

    /// Whether another order could park now.
    pub fn has_room(&self) -> bool {
        self.parked() < self.max_waiting()
    }

    /// An order enters the lot (it waits on a slow try, or is about to
    /// park). `newest_try`: when its latest try left, if one did.
    pub fn register(self: &Arc<Self>, arrived: Instant, newest_try: Option<Instant>) -> Ticket {
        let mut inner = self.inner.lock();
        let key = (arrived, inner.next_id);
        inner.next_id += 1;
        let go = inner.drain.map(Go::Drain);
        inner.entries.insert(
            key,
            Entry {
                parked: false,
                idle: false,
                newest_try,
                released: None,
                go,
                waker: None,
            },
        );
        self.waiting.fetch_add(1, Ordering::AcqRel);
        // The factory came back while this try was on its way: it is stuck.
        if inner.drain.is_none()
            && inner
                .last_recovery
                .is_some_and(|r| newest_try.is_none_or(|t| t < r))
            && inner.release(key, Instant::now(), self.pace())
        {
            self.released_total.fetch_add(1, Ordering::Relaxed);
        }
        Ticket {
            lot: Arc::clone(self),
            key,
            recorded: false,
        }
    }

    /// The factory answers again as of `at`: releases every order whose
    /// newest try left before `at` and counts as stuck on this `evidence`,
    /// oldest first, at the release pace.
    pub fn recovered(&self, at: Instant, evidence: Evidence) {
        // A confirmed recovery is remembered even with nobody waiting: an
        // order whose try left before it enters the lot released.
        if evidence == Evidence::Answered && self.waiting() == 0 {
            return;
        }
        let now = Instant::now();
        let attempt_timeout = self.attempt_timeout.get();
        let mut inner = self.inner.lock();
        if inner.drain.is_some() {
            return;
        }
        inner.last_recovery = Some(inner.last_recovery.map_or(at, |r| r.max(at)));
        let stuck: Vec<Key> = inner
            .entries
            .iter()
            .filter(|(_, e)| {
                let older = e.newest_try.is_none_or(|t| t < at);
                let presumed_stuck = match evidence {
                    Evidence::Confirmed => true,
                    Evidence::Answered => {
                        e.idle
                            || e.newest_try
                                .is_none_or(|t| now.saturating_duration_since(t) >= attempt_timeout)
                    }
                };
                !matches!(e.go, Some(Go::Drain(_)))
                    && e.released.is_none()
                    && older
                    && presumed_stuck
            })
            .map(|(k, _)| *k)
            .collect();
        let mut released = 0u64;
        for key in stuck {
            released += u64::from(inner.release(key, now, self.pace()));
        }
        if released > 0 {
            self.released_total.fetch_add(released, Ordering::Relaxed);
            tracing::debug!(
                released,
                ?evidence,
                "factory answers again: waiting orders released"
            );
        }
    }

    /// Shutdown: every order must be answered by `answer_by`.
    pub fn drain(&self, answer_by: Instant) {
        let mut inner = self.inner.lock();
        inner.drain = Some(answer_by);
        inner.probe = None;
        for entry in inner.entries.values_mut() {
            entry.tell(Go::Drain(answer_by));
        }
    }

    /// What `/status` shows.
    pub fn snapshot(&self) -> LotSnapshot {
        let now = Instant::now();
        let inner = self.inner.lock();
        let age =
            |key: Option<&Key>| key.map(|(at, _)| now.saturating_duration_since(*at).as_secs_f64());
        LotSnapshot {
            waiting: inner.entries.len(),
            parked: inner.parked,
            max_waiting: self.max_waiting(),
            release_per_second: self.release_per_second.load(Ordering::Relaxed),
            oldest_wait_seconds: age(inner.entries.keys().next()),
            oldest_parked_seconds: age(inner
                .entries
                .iter()
                .find(|(_, e)| e.parked)
                .map(|(k, _)| k)),
            draining: inner.drain.is_some(),
            parked_total: self.parked_total.load(Ordering::Relaxed),
            released_total: self.released_total.load(Ordering::Relaxed),
            turned_away_total: self.turned_away_total.load(Ordering::Relaxed),
        }
    }
}

/// The lot as `/status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LotSnapshot {
    /// Orders waiting now: on slow tries, or parked.
    pub waiting: usize,
    /// Of those, parked (no try of their own in flight until released).
    pub parked: usize,
    pub max_waiting: usize,
    pub release_per_second: u32,
    /// How long the oldest waiting order has waited.
    pub oldest_wait_seconds: Option<f64>,
    pub oldest_parked_seconds: Option<f64>,
    pub draining: bool,
    /// Orders that parked since start.
    pub parked_total: u64,
    /// Fresh tries granted to waiting orders after a recovery.
    pub released_total: u64,
    /// Orders answered at once because `max_waiting` were parked.
    pub turned_away_total: u64,
}

/// One order's place in the [`Lot`]; dropping it leaves.
pub struct Ticket {
    lot: Arc<Lot>,
    key: Key,
    recorded: bool,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket").field("seq", &self.key.1).finish()
    }
}

impl Ticket {
    /// When the order arrived.
    pub fn arrived(&self) -> Instant {
        self.key.0
    }

    /// The order has no try in flight any more, and takes one of the
    /// `max_waiting` places (once; later calls keep it).
    pub fn park(&mut self) -> Result<(), LotFull> {
        let lot = &self.lot;
        let mut inner = lot.inner.lock();
        let parked = inner.parked;
        let Some(entry) = inner.entries.get_mut(&self.key) else {
            return Ok(());
        };
        entry.idle = true;
        if entry.parked {
            return Ok(());
        }
        let max_waiting = lot.max_waiting();
        if parked >= max_waiting {
            lot.turned_away_total.fetch_add(1, Ordering::Relaxed);
            return Err(LotFull { max: max_waiting });
        }
        entry.parked = true;
        inner.parked += 1;
        lot.parked_total.fetch_add(1, Ordering::Relaxed);
        lot.metrics.orders_parked(inner.parked);
        if inner.parked == 1 {
            tracing::warn!(
                max_waiting,
                "orders parking: the factory refuses or fails them; they wait for it"
            );
        }
        Ok(())
    }

    /// The order sent a try at `at` (a probe duty is done with it).
    pub fn sent(&self, at: Instant) {
        let mut inner = self.lot.inner.lock();
        if let Some(entry) = inner.entries.get_mut(&self.key) {
            entry.newest_try = Some(at);
            entry.idle = false;
            entry.released = None;
        }
        if inner.probe.is_some_and(|(k, _)| k == self.key) {
            inner.probe = None;
        }
    }

    /// The breaker refuses tries until `until`: the oldest parked order
    /// (perhaps this one) is told to try then, unless one already is.
    pub fn refused(&self, until: Instant) {
        self.lot.inner.lock().assign_probe(until);
    }

    /// The next thing to do, when there is one (wakes the task when the
    /// lot decides).
    pub fn poll_go(&self, cx: &mut Context<'_>) -> Poll<Go> {
        let mut inner = self.lot.inner.lock();
        let Some(entry) = inner.entries.get_mut(&self.key) else {
            return Poll::Pending;
        };
        match entry.go.take() {
            Some(go) => Poll::Ready(go),
            None => {
                match &mut entry.waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    slot => *slot = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
    }

    /// The order is answered: records how long it waited and how it ended.
    pub fn done(&mut self, outcome: RequestOutcome) {
        if !self.recorded {
            self.recorded = true;
            self.lot.metrics.order_wait(outcome, self.key.0.elapsed());
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        // Dropped unanswered: the request's deadline (or the client) ended it.
        self.done(RequestOutcome::Timeout);
        let lot = &self.lot;
        let mut inner = lot.inner.lock();
        let Some(entry) = inner.entries.remove(&self.key) else {
            return;
        };
        lot.waiting.fetch_sub(1, Ordering::AcqRel);
        if entry.parked {
            inner.parked -= 1;
            lot.metrics.orders_parked(inner.parked);
            if inner.parked == 0 {
                tracing::info!(
                    released = lot.released_total.load(Ordering::Relaxed),
                    turned_away = lot.turned_away_total.load(Ordering::Relaxed),
                    "parked orders all answered"
                );
            }
        }
        if let Some((key, at)) = inner.probe
            && key == self.key
        {
            inner.probe = None;
            inner.assign_probe(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use super::*;

    fn lot(max_waiting: usize, release_per_second: u32) -> Arc<Lot> {
        Lot::new(
            LotSettings {
                max_waiting,
                release_per_second,
                attempt_timeout: Duration::from_secs(5),
            },
            Arc::new(Metrics::default()),
        )
    }

    fn go(t: &Ticket) -> Option<Go> {
        match t.poll_go(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(go) => Some(go),
            Poll::Pending => None,
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[tokio::test(start_paused = true)]
    async fn a_recovery_releases_older_tries_oldest_first_at_the_pace() {
        let lot = lot(10, 100);
        let t0 = Instant::now();
        // Registered out of arrival order; released in arrival order.
        let b = lot.register(t0 + ms(2), Some(t0 + ms(2)));
        let a = lot.register(t0 + ms(1), Some(t0 + ms(1)));
        let fresh = lot.register(t0, Some(t0 + ms(50)));
        assert_eq!(lot.waiting(), 3);
        tokio::time::advance(ms(100)).await;
        let now = Instant::now();
        lot.recovered(t0 + ms(10), Evidence::Confirmed);
        assert_eq!(go(&a), Some(Go::Try(now)));
        assert_eq!(go(&b), Some(Go::Try(now + ms(10))));
        assert_eq!(go(&fresh), None, "its newest try left after the recovery");
        assert_eq!(go(&a), None, "told once");
        // Not yet sent: a second event does not release them again.
        lot.recovered(t0 + ms(20), Evidence::Confirmed);
        assert_eq!(go(&b), None);
        // They send their fresh tries; a later event releases only the
        // order whose newest try is older than it, at the next slot.
        a.sent(now);
        b.sent(now + ms(10));
        lot.recovered(t0 + ms(60), Evidence::Confirmed);
        assert_eq!(go(&a), None, "its fresh try is newer than the event");
        assert_eq!(go(&b), None);
        assert_eq!(go(&fresh), Some(Go::Try(now + ms(20))));
        assert_eq!(lot.snapshot().released_total, 3);
        drop((a, b, fresh));
        assert_eq!(lot.waiting(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_prompt_answer_releases_only_tries_unanswered_for_attempt_timeout() {
        let lot = lot(10, 100);
        let t0 = Instant::now();
        let dead = lot.register(t0, Some(t0));
        tokio::time::advance(Duration::from_secs(4)).await;
        let young = lot.register(t0, Some(Instant::now()));
        let mut parked = lot.register(t0, Some(Instant::now()));
        parked.park().expect("room");
        tokio::time::advance(Duration::from_secs(1)).await;
        lot.recovered(Instant::now(), Evidence::Answered);
        assert!(go(&dead).is_some(), "unanswered for 5 s: stuck");
        assert_eq!(go(&young), None, "1 s old: may still be answered");
        assert!(go(&parked).is_some(), "no try in flight");
    }

    #[tokio::test(start_paused = true)]
    async fn an_order_entering_after_a_recovery_its_try_predates_is_released() {
        let lot = lot(10, 100);
        let t0 = Instant::now();
        let other = lot.register(t0, Some(t0));
        tokio::time::advance(Duration::from_secs(2)).await;
        lot.recovered(Instant::now(), Evidence::Confirmed);
        assert!(go(&other).is_some());
        // Sent before the recovery, entering (slow) after it.
        let late = lot.register(t0 + ms(500), Some(t0 + ms(500)));
        assert!(go(&late).is_some());
        let newer = lot.register(Instant::now(), Some(Instant::now()));
        assert_eq!(go(&newer), None);
    }

    #[tokio::test(start_paused = true)]
    async fn parking_is_bounded_by_max_waiting() {
        let lot = lot(2, 100);
        let now = Instant::now();
        let mut tickets: Vec<_> = (0..3).map(|_| lot.register(now, None)).collect();
        assert!(tickets[0].park().is_ok());
        assert!(tickets[0].park().is_ok(), "a place is taken once");
        assert!(tickets[1].park().is_ok());
        assert!(tickets[2].park().is_err());
        assert!(!lot.has_room());
        let s = lot.snapshot();
        assert_eq!((s.waiting, s.parked, s.turned_away_total), (3, 2, 1));
        tickets.remove(0);
        assert!(tickets[1].park().is_ok(), "a place freed is taken again");
        assert!(
            lot.metrics
                .prometheus_text()
                .contains("sidecar_orders_parked 2")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_oldest_parked_order_probes_and_passes_the_duty_on() {
        let lot = lot(10, 100);
        let t0 = Instant::now();
        let mut old = lot.register(t0, None);
        let mut young = lot.register(t0 + ms(1), None);
        let slow = lot.register(t0 - ms(1), Some(t0));
        old.park().expect("room");
        young.park().expect("room");
        let until = t0 + Duration::from_secs(5);
        young.refused(until);
        assert_eq!(
            go(&old),
            Some(Go::Try(until)),
            "the oldest parked one probes"
        );
        assert_eq!(go(&young), None);
        assert_eq!(go(&slow), None, "not parked: no probe duty");
        young.refused(until);
        assert_eq!(go(&young), None, "one probe at a time");
        // The prober gives up before trying: the next oldest takes over.
        drop(old);
        assert_eq!(go(&young), Some(Go::Try(until)));
        // Its probe is refused in turn: it parks again and gets the duty afresh.
        young.sent(until);
        young.park().expect("its place");
        young.refused(until + Duration::from_secs(5));
        assert_eq!(go(&young), Some(Go::Try(until + Duration::from_secs(5))));
    }

    #[tokio::test(start_paused = true)]
    async fn draining_tells_everyone_and_stops_releases() {
        let lot = lot(10, 100);
        let now = Instant::now();
        let mut parked = lot.register(now, None);
        parked.park().expect("room");
        let slow = lot.register(now, Some(now));
        let by = now + Duration::from_secs(9);
        lot.drain(by);
        assert_eq!(go(&parked), Some(Go::Drain(by)));
        assert_eq!(go(&slow), Some(Go::Drain(by)));
        lot.recovered(now + Duration::from_secs(1), Evidence::Confirmed);
        parked.refused(now + Duration::from_secs(1));
        assert_eq!(go(&slow), None, "no release while draining");
        let late = lot.register(now, None);
        assert_eq!(go(&late), Some(Go::Drain(by)));
        assert!(lot.snapshot().draining);
    }
}
