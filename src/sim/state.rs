//! What every connection of one simulator shares: settings, the signing key,
//! the chaos record, and the request counters behind `/sim/stats`.
//!
//! The control endpoints and the in-process [`SimHandle`](super::SimHandle)
//! both go through [`Shared`], so they cannot disagree. Counters are relaxed
//! atomics; the chaos record sits behind one short `parking_lot` lock, with an
//! atomic flag in front so an order under no chaos (the load-run path) never
//! takes it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::chaos::{
    ChaosKind, ChaosSpec, ChaosState, ChaosStatus, DownAction, Ended, OrderChaos, ResolveOutcome,
    mask, new_fix_code,
};
use super::jwt::{OrderCache, Signer, Vendor};

/// Counters since start, as `GET /sim/stats` answers them.
///
/// Every count is of requests *received*, whatever was answered, except
/// `ordersOk` and `resolves`. Requests to `/sim/*` are never counted, so
/// polling the stats does not change them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SimStats {
    /// `POST /api/order` requests received, whatever their fate: bad key,
    /// bad body, chaos, or dropped while `down`. (Retries through a proxy
    /// count once each: this is what the factory *saw*.)
    pub orders: u64,
    /// Orders answered 200 with a JWT that verifies (throttled ones too).
    pub orders_ok: u64,
    /// Report-link GETs that ended a chaos episode (right key and code).
    pub resolves: u64,
    /// Every request received on the factory API (all paths but `/sim/*`).
    pub requests: u64,
    /// TCP connections accepted since start (`/sim/*` ones too): proves a
    /// proxy did or did not touch the factory.
    pub connections: u64,
    /// GETs of any `/api/support/...` path, right code or not.
    pub support_requests: u64,
    /// GETs of `/.well-known/jwks.json`.
    pub jwks_requests: u64,
    /// Requests whose connection was closed without an answer (`down`, and
    /// `hang` when it ends).
    pub dropped: u64,
    /// Requests held unanswered right now (`hang`).
    #[serde(default)]
    pub held: u64,
    /// The chaos running now.
    pub chaos: ChaosKind,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub orders: AtomicU64,
    pub orders_ok: AtomicU64,
    pub resolves: AtomicU64,
    pub requests: AtomicU64,
    pub connections: AtomicU64,
    pub support_requests: AtomicU64,
    pub jwks_requests: AtomicU64,
    pub dropped: AtomicU64,
    pub held: AtomicU64,
}

/// Adds one to a counter (relaxed: counts need no ordering with anything).
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Settings fixed at start.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub api_key: String,
    pub throttle_delay: Duration,
    pub oven_delay: Duration,
    /// Base of report links instead of `https://<Host>`, no trailing `/`.
    pub public_url: Option<String>,
    /// Distinct pizzas per order body, answered in turn (`--token-pool`);
    /// 0: the real factory's one token per body and second.
    pub token_pool: usize,
}

/// The one vendor of the simulator (the real factory has one per student).
pub(crate) const VENDOR: Vendor = Vendor {
    id: "sim-vendor",
    name: "Factory simulator vendor",
};

#[derive(Debug)]
pub(crate) struct Shared {
    pub settings: Settings,
    pub signer: Arc<Signer>,
    pub cache: OrderCache,
    pub counters: Counters,
    pub docs: Bytes,
    chaos_active: AtomicBool,
    chaos: Mutex<ChaosState>,
    /// The running `hang` episode's number (0: none), for held requests.
    hanging: watch::Sender<u64>,
}

impl Shared {
    pub(crate) fn new(settings: Settings, signer: Arc<Signer>, docs: Bytes) -> Self {
        Shared {
            settings,
            signer,
            cache: OrderCache::default(),
            counters: Counters::default(),
            docs,
            chaos_active: AtomicBool::new(false),
            chaos: Mutex::new(ChaosState::default()),
            hanging: watch::Sender::new(0),
        }
    }

    /// Runs `f` on the chaos record and keeps the fast-path flag in step.
    fn with_chaos<T>(&self, f: impl FnOnce(&mut ChaosState) -> T) -> T {
        let mut state = self.chaos.lock();
        let out = f(&mut state);
        self.chaos_active
            .store(state.is_active(), Ordering::Release);
        let hanging = state.hanging();
        self.hanging.send_if_modified(|h| {
            let changed = *h != hanging;
            *h = hanging;
            changed
        });
        out
    }

    /// Holds a request until `hang` episode `episode` is over.
    pub(crate) async fn hold(&self, episode: u64) {
        let mut rx = self.hanging.subscribe();
        self.counters.held.fetch_add(1, Ordering::Relaxed);
        // The sender lives as long as `self`: an error cannot happen here.
        let _ = rx.wait_for(|h| *h != episode).await;
        self.counters.held.fetch_sub(1, Ordering::Relaxed);
    }

    fn chaos_active(&self) -> bool {
        self.chaos_active.load(Ordering::Acquire)
    }

    /// Starts `spec` now with a fresh fix code (the control endpoint, the
    /// handle, `--chaos` and the vendor chaos route all come here).
    pub(crate) fn set_chaos(&self, spec: &ChaosSpec) -> ChaosStatus {
        let fix_code = new_fix_code();
        let status = self.with_chaos(|s| s.start(spec, &fix_code));
        if spec.kind == ChaosKind::None {
            tracing::info!("chaos: none");
        } else {
            tracing::info!(
                chaos = %spec.kind,
                episode = status.episode,
                count = ?spec.count,
                fix_code = %mask(&fix_code),
                "chaos started"
            );
        }
        status
    }

    pub(crate) fn chaos_status(&self) -> ChaosStatus {
        self.chaos.lock().status()
    }

    pub(crate) fn chaos_kind(&self) -> ChaosKind {
        if !self.chaos_active() {
            return ChaosKind::None;
        }
        self.chaos.lock().kind()
    }

    /// `down`'s decision for a factory request (see [`ChaosState::on_request`]).
    pub(crate) fn on_request(&self, is_order: bool) -> Option<DownAction> {
        if !self.chaos_active() {
            return None;
        }
        let (action, ended) = self.with_chaos(|s| s.on_request(is_order));
        log_end(ended);
        action
    }

    /// The chaos that hits an authenticated order, if any.
    pub(crate) fn on_order(&self) -> Option<OrderChaos> {
        if !self.chaos_active() {
            return None;
        }
        let (chaos, ended) = self.with_chaos(ChaosState::on_order);
        log_end(ended);
        chaos
    }

    pub(crate) fn resolve(&self, fix_code: &str) -> ResolveOutcome {
        let outcome = self.with_chaos(|s| s.resolve(fix_code));
        if outcome == ResolveOutcome::Resolved {
            bump(&self.counters.resolves);
            tracing::info!("chaos resolved through the report link");
        }
        outcome
    }

    pub(crate) fn stats(&self) -> SimStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SimStats {
            orders: get(&c.orders),
            orders_ok: get(&c.orders_ok),
            resolves: get(&c.resolves),
            requests: get(&c.requests),
            connections: get(&c.connections),
            support_requests: get(&c.support_requests),
            jwks_requests: get(&c.jwks_requests),
            dropped: get(&c.dropped),
            held: get(&c.held),
            chaos: self.chaos_kind(),
        }
    }
}

fn log_end(ended: Ended) {
    if let Ended::CountReached(kind) = ended {
        tracing::info!(chaos = %kind, "chaos blip over: its count of orders is used up");
    }
}
