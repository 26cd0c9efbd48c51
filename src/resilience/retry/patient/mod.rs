//! An order's tries when it has patience ([`crate::orders`]).
//!
//! A slow try is waited for, not cut. When the newest try has run
//! `attempt_timeout`, one more is sent beside it (a *hedge*, within the
//! retry budget and `max_attempts`, as Envoy's `hedge_on_per_try_timeout`)
//! and the first good answer wins; the others are dropped (their
//! connections are closed, or finish in the background to learn a report
//! link, never returned half-read). A failed try is retried as the plain
//! retry loop would. An order the breaker refuses, or whose tries are spent,
//! *parks* in the [`Lot`](crate::orders::Lot) instead of failing; the lot
//! tells it when to send a fresh try (released after a recovery, or on probe
//! duty while the breaker is open), and a parked order whose tries failed
//! while the breaker stayed closed looks again every `open_for`, within the
//! budget. Only when patience is over does it answer 503 (parked on an open
//! circuit) or 504.
//!
//! ```text
//!  try ─── prompt answer ──────────────────────────────────────────▶ answer
//!   │ attempt_timeout: hedge; the order waits in the lot
//!   │ failed, tries left: backoff ──▶ next try
//!   │ refused, or tries spent ──▶ parked ── release / probe / recheck ──▶ fresh try
//!   └ patience over ──▶ 503 (parked on an open circuit) or 504
//! ```
//!
//! Cost on the happy path: one try inline and one timer, the hedge timer,
//! which takes the place of the attempt timeout's (patient tries get none,
//! see [`crate::resilience::deadline`]); no allocation, no lock, and a
//! future no larger than the plain retry loop's (every layer above moves
//! it, so its size is paid in copies per order). A prompt success reads
//! one atomic (are orders waiting?) and, only then, tells the lot the
//! factory answers. Everything else (backoff, the ticket, hedges, the
//! patience timer's schedule) lives in one box made the first time the
//! order leaves the happy path (its try is slow, fails or is refused); the
//! request's deadline is read from the deadline layer's task-local.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use http::Response;
use tokio::time::{Instant, Sleep, sleep_until};

use super::Shared;
use super::attempts::finish;
use super::backoff::Backoff;
use super::policy::{Stop, retry_after};
use crate::boxed::BoxError;
use crate::orders::{Evidence, Go, Patience, Ticket};
use crate::proxy::body::ProxyBody;
use crate::proxy::{Outgoing, recycle};
use crate::resilience::breaker::CircuitOpen;
use crate::resilience::classify::{Outcome, classify};
use crate::resilience::deadline::{Deadline, DeadlineExceeded, later};
use crate::telemetry::outcome::RequestOutcome;

type Answer = Result<Response<ProxyBody>, BoxError>;

/// How long a refused order is told to wait when the breaker gave no time,
/// or when the sidecar is shutting down.
const MIN_RETRY_AFTER: Duration = Duration::from_secs(1);

pin_project_lite::pin_project! {
    #[project = SlotProj]
    enum Slot<F> {
        Idle,
        Running { #[pin] fut: F },
    }
}

/// What the one timer is set for (besides the end of patience).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    /// The newest try has run `attempt_timeout`: hedge, and wait.
    Hedge,
    /// A failed try's backoff is over.
    Retry,
    /// The lot says: one fresh try (a release or probe duty).
    Fresh,
    /// Parked after failed tries: a fresh try if the budget allows.
    Recheck,
    Nothing,
}

/// Why an order is parked (no try of its own in flight).
#[derive(Debug, Clone, Copy)]
enum Parked {
    /// The breaker refuses tries until then.
    Refused { until: Instant },
    /// Its tries failed and no retry was left.
    Failed,
}

/// A try beside the inline one.
struct Extra<F> {
    fut: Pin<Box<F>>,
    sent: Instant,
    hedge: bool,
}

/// Everything past the happy path, boxed the first time the order leaves
/// it (its try ran `attempt_timeout`, failed, or was refused).
struct Slow<F> {
    extra: Vec<Extra<F>>,
    /// The order's place in the lot, once it waits.
    ticket: Option<Ticket>,
    parked: Option<Parked>,
    /// A moment before the request's deadline (or the drain's): answer then.
    give_up_at: Option<Instant>,
    draining: bool,
    arrived: Instant,
    /// When the newest try left.
    newest: Instant,
    due: Due,
    due_at: Instant,
    backoff: Option<Backoff>,
    hedges: u32,
    metrics: Arc<crate::telemetry::metrics::Metrics>,
}

impl<F> Drop for Slow<F> {
    fn drop(&mut self) {
        if self.hedges > 0 {
            self.metrics.hedges(0, self.hedges);
        }
    }
}

/// What a patient order keeps between polls (the unpinned part): on the
/// happy path only this, the inline try and the hedge timer.
struct State<S: tower::Service<Outgoing>> {
    shared: Arc<Shared>,
    patience: Arc<Patience>,
    service: S,
    /// The request; every try is another handle on it.
    req: Option<Outgoing>,
    /// When the inline try left (the first: when the order arrived).
    sent: Instant,
    main_hedge: bool,
    /// Whether a try may be sent twice (`retry` rules for the path).
    may_repeat: bool,
    rearm: bool,
    /// Tries started since the order arrived or was last released.
    round: u32,
    /// Tries that reached the factory (`x-sidecar-attempts`).
    reached: u32,
    slow: Option<Box<Slow<S::Future>>>,
}

pin_project_lite::pin_project! {
    /// See the module docs; made by [`super::Retry`] for orders with patience.
    pub struct Patient<S>
    where
        S: tower::Service<Outgoing>,
    {
        #[pin]
        main: Slot<S::Future>,
        #[pin]
        timer: Sleep,
        state: State<S>,
    }
}

impl<S> std::fmt::Debug for Patient<S>
where
    S: tower::Service<Outgoing>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Patient")
            .field("round", &self.state.round)
            .field("reached", &self.state.reached)
            .field("waiting", &self.state.slow.is_some())
            .finish_non_exhaustive()
    }
}

impl<S> Patient<S>
where
    S: tower::Service<Outgoing>,
{
    /// The first try, `fut`, has just been sent. The request's deadline is
    /// read from the task-local when needed (the deadline layer polls this
    /// future inside its scope).
    pub(super) fn new(
        fut: S::Future,
        shared: Arc<Shared>,
        patience: Arc<Patience>,
        service: S,
        req: Outgoing,
        may_repeat: bool,
    ) -> Self {
        let now = Instant::now();
        let hedge_at = later(now, patience.attempt_timeout());
        Patient {
            main: Slot::Running { fut },
            timer: sleep_until(hedge_at),
            state: State {
                shared,
                patience,
                service,
                req: Some(req),
                sent: now,
                main_hedge: false,
                may_repeat,
                rearm: false,
                round: 1,
                reached: 1,
                slow: None,
            },
        }
    }
}

impl<S> Future for Patient<S>
where
    S: tower::Service<Outgoing, Response = Response<ProxyBody>, Error = BoxError>,
{
    type Output = Answer;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Answer> {
        let mut this = self.project();
        let st = this.state;
        loop {
            if std::mem::take(&mut st.rearm) {
                let target = st.target();
                this.timer.as_mut().reset(target);
            }
            // The tries first: an answer beats a timer due at the same moment.
            if let SlotProj::Running { fut } = this.main.as_mut().project()
                && let Poll::Ready(result) = fut.poll(cx)
            {
                this.main.set(Slot::Idle);
                let (sent, hedge) = (st.sent, st.main_hedge);
                let others = st.slow.as_ref().is_some_and(|s| !s.extra.is_empty());
                if let Some(out) = st.on_result(result, sent, hedge, others) {
                    return Poll::Ready(out);
                }
                continue;
            }
            if let Some((result, sent, hedge)) = st.poll_extras(cx) {
                let others = matches!(*this.main, Slot::Running { .. })
                    || st.slow.as_ref().is_some_and(|s| !s.extra.is_empty());
                if let Some(out) = st.on_result(result, sent, hedge, others) {
                    return Poll::Ready(out);
                }
                continue;
            }
            match st.poll_lot(cx) {
                Some(Some(out)) => return Poll::Ready(out),
                Some(None) => continue,
                None => {}
            }
            if this.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            match st.on_timer(cx, this.main.as_mut()) {
                Poll::Ready(Some(out)) => return Poll::Ready(out),
                Poll::Ready(None) => st.rearm = true,
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// What to do after a failed try that may be retried.
enum AfterFailure {
    Retry(Duration),
    Park,
    Answer,
}

impl<S> State<S>
where
    S: tower::Service<Outgoing, Response = Response<ProxyBody>, Error = BoxError>,
{
    /// Leaves the happy path (once): the box, with the hedge timer's
    /// schedule (the only thing due until then).
    fn slow(&mut self) -> &mut Slow<S::Future> {
        let (sent, attempt) = (self.sent, self.patience.attempt_timeout());
        let metrics = &self.shared.metrics;
        self.slow.get_or_insert_with(|| {
            Box::new(Slow {
                extra: Vec::new(),
                ticket: None,
                parked: None,
                give_up_at: Deadline::current()
                    .map(|d| d.checked_sub(Duration::from_millis(1)).unwrap_or(d)),
                draining: false,
                arrived: sent,
                newest: sent,
                due: Due::Hedge,
                due_at: later(sent, attempt),
                backoff: None,
                hedges: 0,
                metrics: Arc::clone(metrics),
            })
        })
    }

    /// Enters the lot (once): the order waits.
    fn wait(&mut self) -> &mut Slow<S::Future> {
        let lot = Arc::clone(self.patience.lot());
        let slow = self.slow();
        if slow.ticket.is_none() {
            slow.ticket = Some(lot.register(slow.arrived, Some(slow.newest)));
        }
        self.rearm = true;
        // Just filled in: the reference is the box's.
        self.slow()
    }

    fn set_due(&mut self, due: Due, at: Instant) {
        let slow = self.slow();
        slow.due = due;
        slow.due_at = at;
        self.rearm = true;
    }

    /// When the timer must fire next (off the happy path).
    fn target(&self) -> Instant {
        let Some(slow) = self.slow.as_ref() else {
            return later(self.sent, self.patience.attempt_timeout());
        };
        let due = (slow.due != Due::Nothing).then_some(slow.due_at);
        match (due, slow.give_up_at) {
            (Some(a), Some(b)) => a.min(b),
            (Some(t), None) | (None, Some(t)) => t,
            (None, None) => later(Instant::now(), Duration::from_secs(86_400)),
        }
    }

    fn poll_extras(&mut self, cx: &mut Context<'_>) -> Option<(Answer, Instant, bool)> {
        let slow = self.slow.as_mut()?;
        for i in 0..slow.extra.len() {
            if let Poll::Ready(result) = slow.extra[i].fut.as_mut().poll(cx) {
                let done = slow.extra.swap_remove(i);
                return Some((result, done.sent, done.hedge));
            }
        }
        None
    }

    /// `Some(Some(answer))`: answer now; `Some(None)`: something changed;
    /// `None`: nothing from the lot.
    fn poll_lot(&mut self, cx: &mut Context<'_>) -> Option<Option<Answer>> {
        let slow = self.slow.as_mut()?;
        let go = match slow.ticket.as_ref()?.poll_go(cx) {
            Poll::Ready(go) => go,
            Poll::Pending => return None,
        };
        match go {
            Go::Try(at) => {
                // A try that never reached the factory may always be sent.
                if self.may_repeat || self.reached == 0 {
                    self.set_due(Due::Fresh, at);
                }
            }
            Go::Drain(by) => {
                slow.draining = true;
                if slow.parked.is_some() {
                    return Some(Some(self.drained()));
                }
                slow.give_up_at = Some(slow.give_up_at.map_or(by, |g| g.min(by)));
                self.rearm = true;
            }
        }
        Some(None)
    }

    fn on_result(
        &mut self,
        result: Answer,
        sent: Instant,
        hedge: bool,
        others: bool,
    ) -> Option<Answer> {
        let outcome = classify(&result);
        if outcome == Outcome::Rejected {
            self.reached = self.reached.saturating_sub(1);
        }
        if let Outcome::Success | Outcome::CallerError = outcome {
            // A prompt answer to a try sent at `sent`: orders waiting on
            // older tries may try again (one atomic load when none waits).
            let lot = self.patience.lot();
            if lot.waiting() > 0 && sent.elapsed() < self.patience.attempt_timeout() {
                lot.recovered(sent, Evidence::Answered);
            }
            return Some(self.finish(result, hedge));
        }
        let now = Instant::now();
        match outcome {
            Outcome::Rejected if others => None,
            Outcome::Rejected => {
                let wait = refusal(&result).unwrap_or(MIN_RETRY_AFTER);
                self.park(Parked::Refused { until: now + wait }, result)
            }
            Outcome::Failure(_) | Outcome::Excused(_)
                if self.may_repeat && self.shared.policy.retry_reason(outcome).is_some() =>
            {
                if others {
                    // Another try may still bring the pizza.
                    return None;
                }
                match self.after_failure(now, &result, outcome) {
                    AfterFailure::Retry(delay) => {
                        self.set_due(Due::Retry, now + delay);
                        None
                    }
                    AfterFailure::Park => self.park(Parked::Failed, result),
                    AfterFailure::Answer => Some(self.finish(result, false)),
                }
            }
            _ => Some(self.finish(result, false)),
        }
    }

    /// The plain retry loop's decision, except that running out of tries,
    /// budget or time parks the order instead of answering.
    fn after_failure(&mut self, now: Instant, result: &Answer, outcome: Outcome) -> AfterFailure {
        let shared = Arc::clone(&self.shared);
        let policy = &shared.policy;
        let Some(reason) = policy.retry_reason(outcome) else {
            return AfterFailure::Answer;
        };
        if self.round >= policy.max_attempts() {
            return AfterFailure::Park;
        }
        let factory_wait = result
            .as_ref()
            .ok()
            .and_then(|res| retry_after(res, SystemTime::now()));
        let drawn = self
            .slow()
            .backoff
            .get_or_insert_with(|| policy.backoff())
            .next_delay();
        match policy.schedule(now, Deadline::current(), drawn, factory_wait) {
            Ok(delay) if shared.budget.withdraw() => {
                shared.metrics.retry(reason);
                tracing::debug!(
                    tries = self.round,
                    reason = reason.as_str(),
                    ?delay,
                    "retrying an order"
                );
                AfterFailure::Retry(delay)
            }
            Ok(_) | Err(Stop::Deadline) => AfterFailure::Park,
            // The factory asked for more time than the order has.
            Err(Stop::RetryAfterTooLong) => AfterFailure::Answer,
        }
    }

    /// Parks the order (its failed or refused `result` is dropped, freeing
    /// any connection), or answers it at once when the lot is full.
    fn park(&mut self, why: Parked, result: Answer) -> Option<Answer> {
        let recheck = self.patience.recheck();
        let slow = self.wait();
        let room = slow.ticket.as_mut().is_none_or(|t| t.park().is_ok());
        if !room {
            tracing::debug!("order lot full: answering at once");
            return Some(self.finish(result, false));
        }
        slow.parked = Some(why);
        let draining = slow.draining;
        if let (Parked::Refused { until }, Some(ticket)) = (why, slow.ticket.as_ref())
            && !draining
        {
            ticket.refused(until);
        }
        // Released by the lot and not sent yet: that fresh try is the next
        // one. The lot will not release this order again until it is sent,
        // so dropping the plan here would leave it waiting out its patience.
        let released = slow.due == Due::Fresh;
        drop(result);
        if draining {
            return Some(self.drained());
        }
        if released {
            tracing::debug!("an older try ended before the release slot: the fresh try still goes");
            return None;
        }
        match why {
            Parked::Refused { until } => self.set_due(Due::Nothing, until),
            Parked::Failed => self.set_due(Due::Recheck, later(Instant::now(), recheck)),
        }
        None
    }

    /// The timer fired: patience is over, or something is due.
    fn on_timer(
        &mut self,
        cx: &mut Context<'_>,
        main: Pin<&mut Slot<S::Future>>,
    ) -> Poll<Option<Answer>> {
        let now = Instant::now();
        let slow = self.slow();
        if slow.give_up_at.is_some_and(|at| now >= at) {
            return Poll::Ready(Some(self.give_up(now)));
        }
        let due = slow.due;
        if due == Due::Nothing || now < slow.due_at {
            return Poll::Ready(None);
        }
        // Every due thing sends a try: the service must be ready for it.
        match self.service.poll_ready(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Some(self.finish(Err(e), false))),
            Poll::Pending => return Poll::Pending,
        }
        let attempt = self.patience.attempt_timeout();
        let max = self.shared.policy.max_attempts();
        match due {
            Due::Hedge => {
                self.wait();
                let may_hedge = self.may_repeat && self.round < max;
                if may_hedge && self.shared.budget.withdraw() {
                    self.send(main, now, true);
                    self.slow().hedges += 1;
                    tracing::debug!(tries = self.round, "slow order: hedged");
                }
                if may_hedge && self.round < max {
                    self.set_due(Due::Hedge, later(now, attempt));
                } else {
                    self.set_due(Due::Nothing, now);
                }
            }
            Due::Retry => {
                self.send(main, now, false);
                self.set_due(Due::Hedge, later(now, attempt));
            }
            Due::Recheck if !self.shared.budget.withdraw() => {
                self.set_due(Due::Recheck, later(now, self.patience.recheck()));
            }
            Due::Fresh | Due::Recheck => {
                // A new round: the tries before said nothing about now.
                self.round = 0;
                self.slow().backoff = None;
                self.send(main, now, false);
                self.set_due(Due::Hedge, later(now, attempt));
            }
            Due::Nothing => {}
        }
        Poll::Ready(None)
    }

    fn send(&mut self, main: Pin<&mut Slot<S::Future>>, now: Instant, hedge: bool) {
        let Some(req) = self.req.clone() else { return };
        let fut = self.service.call(req);
        self.round += 1;
        self.reached += 1;
        let slow = self.slow();
        slow.newest = now;
        slow.parked = None;
        if let Some(ticket) = &slow.ticket {
            ticket.sent(now);
        }
        if matches!(*main, Slot::Idle) {
            let mut main = main;
            main.set(Slot::Running { fut });
            self.sent = now;
            self.main_hedge = hedge;
        } else {
            slow.extra.push(Extra {
                fut: Box::pin(fut),
                sent: now,
                hedge,
            });
        }
    }

    /// Patience is over: 503 when parked on an open circuit, else 504.
    fn give_up(&mut self, now: Instant) -> Answer {
        let slow = self.slow();
        let err: BoxError = match slow.parked {
            Some(Parked::Refused { until }) => Box::new(CircuitOpen {
                retry_after: until.saturating_duration_since(now).max(MIN_RETRY_AFTER),
            }),
            _ => Box::new(DeadlineExceeded),
        };
        tracing::debug!(waited = ?now.saturating_duration_since(slow.arrived), "order patience over");
        self.finish(Err(err), false)
    }

    /// The sidecar is shutting down and this order has no try in flight.
    fn drained(&mut self) -> Answer {
        let err: BoxError = Box::new(CircuitOpen {
            retry_after: MIN_RETRY_AFTER,
        });
        self.finish(Err(err), false)
    }

    /// The answer, with `x-sidecar-attempts`; records the wait and the
    /// hedges of an order that waited.
    fn finish(&mut self, result: Answer, won_by_hedge: bool) -> Answer {
        if let Some(slow) = self.slow.as_mut() {
            let won = u32::from(won_by_hedge && slow.hedges > 0);
            if slow.hedges > 0 {
                slow.metrics.hedges(won, slow.hedges - won);
                slow.hedges = 0;
            }
            if let Some(ticket) = slow.ticket.as_mut() {
                let outcome = match &result {
                    Ok(res) => RequestOutcome::of(res),
                    Err(e) => RequestOutcome::of_error(e.as_ref()),
                };
                ticket.done(outcome);
            }
            // Losing tries go now (their connections with them).
            slow.extra.clear();
            slow.due = Due::Nothing;
        }
        if let Some(Ok(req)) = self.req.take().map(Arc::try_unwrap) {
            recycle::recycle(req.into_parts().0.headers);
        }
        finish(result, self.reached)
    }
}

/// The breaker's `Retry-After` in a refused try's error.
fn refusal(result: &Answer) -> Option<Duration> {
    let err = result.as_ref().err()?;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err.as_ref());
    while let Some(e) = cur {
        if let Some(open) = e.downcast_ref::<CircuitOpen>() {
            return Some(open.retry_after);
        }
        cur = e.source();
    }
    None
}

#[cfg(test)]
mod tests;
