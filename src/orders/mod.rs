//! Orders: the requests the sidecar exists for, and their patience.
//!
//! The pizza service waits for the factory as long as it takes (up to
//! Node's 300 s), so a slow factory costs it time, not orders. A proxy that
//! cuts a slow order short, or fails it at once while the factory is down,
//! turns that slow success into a lost order. So an *order* (`POST` to one
//! of `orders.paths`) gets one overall deadline, `orders.patience`, instead
//! of `upstream.request_timeout`, and within it:
//! - a slow try is waited for, not cut: at `attempt_timeout` the retry layer
//!   *hedges* (one more try in parallel, within the retry budget and
//!   `max_attempts`) and the first good answer wins;
//! - an order the breaker refuses, or whose tries all failed, *parks* in the
//!   [`Lot`] (at most `max_waiting`) instead of failing, and sends nothing
//!   until the factory is known to answer again;
//! - when it is (a prompt success, the breaker closing, a chaos episode
//!   resolved), every order waiting on older tries gets one fresh try, at a
//!   bounded pace, oldest first;
//! - only past its patience does an order get the sidecar's 503/504.
//!
//! `patience = "0s"` turns all of this off: orders fail fast like any other
//! route. The mechanism lives in the retry layer
//! ([`crate::resilience::retry`]); the deadline in
//! [`crate::resilience::deadline`]; this module holds the shared state and
//! the questions other parts ask about orders ([`Patience`]).
//!
//! - [`routes`]: which requests are orders.
//! - [`lot`]: the waiting room (tickets, release, probe duty, drain).
//! - this file: [`Patience`], the handle built once per sidecar, its hooks
//!   into the breaker and the chaos episodes, and its `/status` section.

pub mod lot;
pub mod routes;

use std::sync::{Arc, Weak};
use std::time::Duration;

use http::Request;
use serde::Serialize;
use tokio::time::Instant;

use crate::admin::AdminPart;
use crate::chaos::{Chaos, EventKind};
use crate::config::{BreakerConfig, OrdersConfig, UpstreamConfig};
use crate::live::LiveDuration;
use crate::resilience::breaker::Breaker;
use crate::telemetry::metrics::Metrics;

pub use lot::{Evidence, Go, Lot, LotFull, LotSettings, LotSnapshot, Ticket};
pub use routes::OrderRoutes;

/// What an order arriving now would meet (see [`Patience::admission`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Admission {
    /// The breaker lets tries through: the order goes to the factory.
    Admitted,
    /// The breaker refuses tries: the order would park until it closes.
    WouldPark,
    /// The breaker refuses tries and `max_waiting` orders are parked: the
    /// order would be answered 503 at once.
    Full,
    /// Orders have no patience (`patience = "0s"`): refused at once.
    FailFast,
}

/// Patience for orders: settings, the [`Lot`], and the hooks that tell it
/// when the factory answers again. Built once per sidecar; cheap to share.
pub struct Patience {
    /// Fixed at start (`orders.paths` needs a restart: the deadline layer
    /// and the retry layer's POST opt-in share them).
    routes: Arc<OrderRoutes>,
    /// The settings below change on a config reload ([`Patience::reconfigure`]).
    patience: LiveDuration,
    attempt_timeout: LiveDuration,
    recheck: LiveDuration,
    lot: Arc<Lot>,
    breaker: Arc<Breaker>,
}

impl std::fmt::Debug for Patience {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Patience")
            .field("patience", &self.patience())
            .field("lot", &self.lot)
            .finish_non_exhaustive()
    }
}

impl Patience {
    /// The handle for `[orders]`, tied to the breaker (its closing releases
    /// parked orders) and to the chaos episodes (a resolved one releases
    /// orders waiting on throttled tries). Call inside a tokio runtime for
    /// the chaos hook (without one, only the breaker's close and prompt
    /// successes release waiting orders).
    pub fn new(
        orders: &OrdersConfig,
        upstream: &UpstreamConfig,
        breaker_config: &BreakerConfig,
        breaker: Arc<Breaker>,
        chaos: &Chaos,
        metrics: Arc<Metrics>,
    ) -> Arc<Patience> {
        let lot = Lot::new(lot_settings(orders, upstream), metrics);
        let weak = Arc::downgrade(&lot);
        breaker.on_close(move || {
            if let Some(lot) = weak.upgrade() {
                lot.recovered(Instant::now(), Evidence::Confirmed);
            }
        });
        follow_episodes(chaos, Arc::downgrade(&lot));
        Arc::new(Patience {
            routes: Arc::new(OrderRoutes::new(&orders.paths)),
            patience: LiveDuration::new(orders.patience),
            attempt_timeout: LiveDuration::new(upstream.attempt_timeout),
            recheck: LiveDuration::new(breaker_config.open_for),
            lot,
            breaker,
        })
    }

    /// Takes a reloaded config: `[orders]` (but `paths`),
    /// `upstream.attempt_timeout` and `circuit_breaker.open_for` apply to
    /// orders from now on; orders already waiting keep their deadline.
    pub fn reconfigure(
        &self,
        orders: &OrdersConfig,
        upstream: &UpstreamConfig,
        breaker_config: &BreakerConfig,
    ) {
        self.patience.set(orders.patience);
        self.attempt_timeout.set(upstream.attempt_timeout);
        self.recheck.set(breaker_config.open_for);
        self.lot.reconfigure(lot_settings(orders, upstream));
    }

    /// Whether orders wait at all (`patience` is not `0s` and there are
    /// order routes).
    pub fn enabled(&self) -> bool {
        !self.patience().is_zero() && !self.routes.is_empty()
    }

    /// Whether `req` is an order that gets patience.
    pub fn is_order<B>(&self, req: &Request<B>) -> bool {
        self.enabled() && self.routes.matches(req)
    }

    /// The order routes (shared with the deadline layer).
    pub fn routes(&self) -> &Arc<OrderRoutes> {
        &self.routes
    }

    /// `orders.patience` (zero: orders fail fast).
    pub fn patience(&self) -> Duration {
        self.patience.get()
    }

    /// The deadline of an order arriving at `now`: when it gets the
    /// sidecar's 503/504 at the latest. `None` when orders have no patience.
    pub fn deadline(&self, now: Instant) -> Option<Instant> {
        self.enabled()
            .then(|| crate::resilience::deadline::later(now, self.patience()))
    }

    /// What an order arriving now would meet, without sending anything or
    /// taking a half-open probe slot: for a caller deciding before it calls
    /// the stack (an async order queue, say).
    pub fn admission(&self) -> Admission {
        if self.breaker.would_admit() {
            Admission::Admitted
        } else if !self.enabled() {
            Admission::FailFast
        } else if self.lot.has_room() {
            Admission::WouldPark
        } else {
            Admission::Full
        }
    }

    /// The waiting room.
    pub fn lot(&self) -> &Arc<Lot> {
        &self.lot
    }

    /// When a try has run this long the order hedges and starts waiting.
    pub fn attempt_timeout(&self) -> Duration {
        self.attempt_timeout.get()
    }

    /// How often an order parked after failed tries (while the breaker
    /// stayed closed) tries again by itself, within the retry budget.
    pub fn recheck(&self) -> Duration {
        self.recheck.get()
    }

    /// Shutdown: parked orders are answered now, orders waiting on slow
    /// tries by `grace` less a margin (so they are answered before the
    /// server cuts connections at `grace`).
    pub fn drain(&self, grace: Duration) {
        let margin = (grace / 4).min(Duration::from_secs(1));
        self.lot
            .drain(Instant::now() + grace.saturating_sub(margin));
    }

    /// What `/status` shows.
    pub fn snapshot(&self) -> PatienceSnapshot {
        PatienceSnapshot {
            enabled: self.enabled(),
            patience_seconds: self.patience().as_secs_f64(),
            admission: self.admission(),
            lot: self.lot.snapshot(),
        }
    }
}

/// A resolved chaos episode (auto or manual, or ended by healthy answers)
/// releases the orders waiting on tries sent before it: a throttled try is
/// not sped up by the resolve, a fresh one is fast.
fn follow_episodes(chaos: &Chaos, lot: Weak<Lot>) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        tracing::debug!("no runtime: resolved chaos will not release waiting orders");
        return;
    };
    let mut events = chaos.subscribe();
    rt.spawn(async move {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            let resolved = match events.recv().await {
                Ok(event) => event.kind == EventKind::Resolved,
                // Missed events: releasing once too often costs a try each.
                Err(RecvError::Lagged(_)) => true,
                Err(RecvError::Closed) => return,
            };
            if !resolved {
                continue;
            }
            match lot.upgrade() {
                Some(lot) => lot.recovered(Instant::now(), Evidence::Confirmed),
                None => return,
            }
        }
    });
}

/// The `orders` section of `/status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PatienceSnapshot {
    pub enabled: bool,
    pub patience_seconds: f64,
    /// What an order arriving now would meet.
    pub admission: Admission,
    #[serde(flatten)]
    pub lot: LotSnapshot,
}

impl AdminPart for Patience {
    fn name(&self) -> &'static str {
        "orders"
    }

    fn status(&self) -> serde_json::Value {
        serde_json::to_value(self.snapshot()).unwrap_or(serde_json::Value::Null)
    }
}

fn lot_settings(orders: &OrdersConfig, upstream: &UpstreamConfig) -> LotSettings {
    LotSettings {
        max_waiting: orders.max_waiting,
        release_per_second: orders.release_per_second,
        attempt_timeout: upstream.attempt_timeout,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ChaosConfig, UpstreamUrl};

    #[tokio::test]
    async fn a_reload_changes_patience_and_the_lot_but_not_the_routes() {
        let metrics = Arc::new(Metrics::default());
        let upstream = UpstreamConfig::new(UpstreamUrl::parse("http://127.0.0.1:9").expect("url"));
        let breaker_config = BreakerConfig::default();
        let breaker = Breaker::new(&breaker_config, Arc::clone(&metrics));
        let chaos = Chaos::new(&ChaosConfig::default(), Arc::clone(&metrics));
        let orders = OrdersConfig::default();
        let p = Patience::new(
            &orders,
            &upstream,
            &breaker_config,
            breaker,
            &chaos,
            metrics,
        );
        assert_eq!(p.patience(), Duration::from_secs(60));

        let mut upstream2 = upstream.clone();
        upstream2.attempt_timeout = Duration::from_secs(7);
        let mut breaker2 = breaker_config.clone();
        breaker2.open_for = Duration::from_secs(9);
        let orders2 = OrdersConfig {
            patience: Duration::from_secs(90),
            max_waiting: 3,
            release_per_second: 7,
            paths: vec!["/elsewhere".to_owned()],
        };
        p.reconfigure(&orders2, &upstream2, &breaker2);
        assert_eq!(p.patience(), Duration::from_secs(90));
        assert_eq!(p.attempt_timeout(), Duration::from_secs(7));
        assert_eq!(p.recheck(), Duration::from_secs(9));
        let lot = p.lot().snapshot();
        assert_eq!((lot.max_waiting, lot.release_per_second), (3, 7));
        let order = Request::post("/api/order").body(()).expect("request");
        assert!(p.is_order(&order), "the routes are fixed at start");

        p.reconfigure(
            &OrdersConfig {
                patience: Duration::ZERO,
                ..orders2
            },
            &upstream2,
            &breaker2,
        );
        assert!(!p.is_order(&order), "patience 0s: orders fail fast");
    }
}
