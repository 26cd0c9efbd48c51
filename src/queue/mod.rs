//! Async orders: an order that cannot be made now is kept durably and
//! replayed when the factory is back (RFC 7240 `Prefer: respond-async`).
//!
//! Outages of the factory last minutes to hours. A service that sends
//! `Prefer: respond-async` with its order gets `202 Accepted` and a
//! `Location: /orders/<id>` instead of a failure when the circuit is open
//! or the order's time ran out, and polls that location for the factory's
//! answer. Requests without the preference are untouched.
//!
//! # Layout
//! ```text
//! prefer.rs    the Prefer header (several preferences, quoted strings, any case)
//! record.rs    what is kept per order: request, Authorization hash, state, answer
//! store.rs     the Store trait both backends implement (and one test suite checks)
//! embedded.rs  one redb file under queue.dir (default backend)
//! redis.rs     Redis Streams consumer group shared by replicas
//! layer.rs     AsyncOrderLayer: above the deadline; queues what fails, serves GET /orders/<id>
//! http.rs      the answers: 202 accepted, GET /orders/<id>
//! replay.rs    the replayer (paced, oldest first, through the stack) and the sweeper
//! admin.rs     /status section, dead letters (list, drop), readiness note
//! ```
//!
//! [`Queue`] is the shared handle: the store (or why there is none), the
//! accepting switch and its reason, and the counters `/status` shows.

pub mod admin;
pub mod embedded;
pub mod error;
pub mod http;
pub mod layer;
pub mod prefer;
pub mod record;
pub mod redis;
pub mod replay;
pub mod store;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::config::{QueueBackend, QueueConfig};
use crate::resilience::breaker::Breaker;
use crate::telemetry::metrics::{AsyncOffReason, Metrics, ReplayResult};
use crate::times::now_ms;

pub use layer::AsyncOrderLayer;
pub use record::{AuthHash, OrderId, OrderRecord, OrderState, QueuedBecause};
pub use store::{Claim, Lookup, QueueStats, Store, StoreError};

use record::StoredRequest;

/// Why async orders are off, as `/status` and `/readyz` say it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsyncOff {
    pub reason: AsyncOffReason,
    pub message: String,
}

/// Counters since start, for `/status`.
#[derive(Debug, Default)]
struct Counts {
    accepted: AtomicU64,
    made: AtomicU64,
    failed: AtomicU64,
    expired: AtomicU64,
    dead_letter: AtomicU64,
    in_flight: AtomicU64,
}

/// See the module docs.
pub struct Queue {
    config: QueueConfig,
    store: Option<Arc<dyn Store>>,
    /// The embedded store also keeps chaos episodes.
    embedded: Option<Arc<embedded::EmbeddedStore>>,
    breaker: Arc<Breaker>,
    metrics: Arc<Metrics>,
    accepting: AtomicBool,
    off: Mutex<Option<AsyncOff>>,
    /// Wakes the replayer: an order was queued, or the store is back.
    wake: Notify,
    counts: Counts,
    /// The store's figures as last read (for `/status`).
    stats: Mutex<QueueStats>,
    /// Something was stored since the figures were last read.
    changed: AtomicBool,
    last_replay_ms: AtomicU64,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("backend", &self.backend())
            .field("accepting", &self.is_accepting())
            .finish_non_exhaustive()
    }
}

impl Queue {
    /// Opens the configured store. A store that cannot be opened does not
    /// stop the sidecar: the queue starts off, and says why.
    pub async fn open(
        config: &QueueConfig,
        breaker: Arc<Breaker>,
        metrics: Arc<Metrics>,
    ) -> Arc<Queue> {
        let (store, embedded, off): (Option<Arc<dyn Store>>, _, _) = match config.backend {
            QueueBackend::Embedded => {
                let dir = config.dir.clone().unwrap_or_default();
                match embedded::EmbeddedStore::open_async(dir).await {
                    Ok(s) => {
                        let s = Arc::new(s);
                        (Some(Arc::clone(&s) as Arc<dyn Store>), Some(s), None)
                    }
                    Err(e) => (None, None, Some(e)),
                }
            }
            QueueBackend::Redis => match redis::RedisStore::new(config) {
                Ok(s) => (Some(Arc::new(s) as Arc<dyn Store>), None, None),
                Err(e) => (None, None, Some(e)),
            },
        };
        Self::with_store(config, store, embedded, off, breaker, metrics)
    }

    /// A queue over `store` (tests give their own).
    pub fn with_store(
        config: &QueueConfig,
        store: Option<Arc<dyn Store>>,
        embedded: Option<Arc<embedded::EmbeddedStore>>,
        off: Option<StoreError>,
        breaker: Arc<Breaker>,
        metrics: Arc<Metrics>,
    ) -> Arc<Queue> {
        let q = Arc::new(Queue {
            config: config.clone(),
            store,
            embedded,
            breaker,
            metrics,
            accepting: AtomicBool::new(true),
            off: Mutex::new(None),
            wake: Notify::new(),
            counts: Counts::default(),
            stats: Mutex::new(QueueStats::default()),
            changed: AtomicBool::new(true),
            last_replay_ms: AtomicU64::new(0),
        });
        match (&q.store, off) {
            (_, Some(e)) => q.set_off(&e),
            (None, None) => q.set_off(&StoreError::Unavailable("no store".into())),
            (Some(_), None) => q.metrics.queue_async_off(None),
        }
        q
    }

    pub fn backend(&self) -> &'static str {
        self.store.as_ref().map_or(
            match self.config.backend {
                QueueBackend::Embedded => "embedded",
                QueueBackend::Redis => "redis",
            },
            |s| s.backend(),
        )
    }

    #[cfg(test)]
    pub fn store(&self) -> Option<&Arc<dyn Store>> {
        self.store.as_ref()
    }

    pub fn embedded(&self) -> Option<&Arc<embedded::EmbeddedStore>> {
        self.embedded.as_ref()
    }

    pub fn breaker(&self) -> &Arc<Breaker> {
        &self.breaker
    }

    /// Whether new async orders are taken (a relaxed load: the hot path asks).
    pub fn is_accepting(&self) -> bool {
        self.accepting.load(Ordering::Relaxed)
    }

    /// Why async orders are off, if they are.
    pub fn off(&self) -> Option<AsyncOff> {
        self.off.lock().clone()
    }

    /// Async orders off because of `e` (logged once per change).
    fn set_off(&self, e: &StoreError) {
        let off = AsyncOff {
            reason: e.off_reason(),
            message: e.to_string(),
        };
        let changed = {
            let mut cur = self.off.lock();
            let changed = cur.as_ref().map(|o| o.reason) != Some(off.reason);
            *cur = Some(off.clone());
            changed
        };
        self.accepting.store(false, Ordering::Relaxed);
        self.metrics.queue_async_off(Some(off.reason));
        if changed {
            tracing::error!(
                reason = off.reason.as_str(),
                error = %off.message,
                "async orders off: orders with Prefer: respond-async get the usual answers"
            );
        }
    }

    /// The store works again.
    fn set_on(&self) {
        if self.off.lock().take().is_some() {
            tracing::info!("async orders on again");
            self.metrics.queue_async_off(None);
            self.wake.notify_one();
        }
        self.accepting.store(true, Ordering::Relaxed);
    }

    /// A store call's error turns async orders off (a store that fails
    /// reads or writes should not take new orders).
    fn note<T>(&self, r: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(e) = &r {
            self.set_off(e);
        }
        r
    }

    /// Stores a new queued order; returns it once durable.
    pub async fn accept(
        &self,
        parts: &::http::request::Parts,
        body: &Bytes,
        because: QueuedBecause,
    ) -> Result<OrderRecord, StoreError> {
        let store = self
            .store
            .as_ref()
            .ok_or_else(|| StoreError::Unavailable("no store".into()))?;
        let id = OrderId::random()
            .ok_or_else(|| StoreError::Io("the system random source failed".into()))?;
        let now = now_ms();
        // Queued while the circuit was closed (its time ran out): the
        // factory may be slow rather than gone, so wait a little first.
        let delay = match because {
            QueuedBecause::CircuitOpen => 0,
            QueuedBecause::Timeout | QueuedBecause::Unreachable => {
                crate::times::millis(self.config.replay_delay)
            }
        };
        let rec = OrderRecord {
            id,
            state: OrderState::Queued,
            because,
            auth: AuthHash::of(&parts.headers),
            enqueued_ms: now,
            updated_ms: now,
            next_ms: now.saturating_add(delay),
            expires_ms: store::expiry(now, self.config.ttl),
            attempts: 0,
            failures: 0,
            last_error: None,
            request: Some(StoredRequest::of(parts, body)),
            answer: None,
        };
        self.note(store.enqueue(rec.clone()).await)?;
        self.counts.accepted.fetch_add(1, Ordering::Relaxed);
        self.changed.store(true, Ordering::Relaxed);
        {
            let mut s = self.stats.lock();
            s.depth += 1;
            s.oldest_ms.get_or_insert(now);
        }
        self.wake.notify_one();
        Ok(rec)
    }

    /// Reads an order for `GET /orders/<id>`.
    pub async fn lookup(&self, id: OrderId) -> Result<Option<Lookup>, StoreError> {
        let store = self
            .store
            .as_ref()
            .ok_or_else(|| StoreError::Unavailable("no store".into()))?;
        store.get(id).await
    }

    fn replayed(&self, result: ReplayResult, n: u64) {
        self.changed.store(true, Ordering::Relaxed);
        let c = match result {
            ReplayResult::Made => &self.counts.made,
            ReplayResult::Failed => &self.counts.failed,
            ReplayResult::Expired => &self.counts.expired,
            ReplayResult::DeadLetter => &self.counts.dead_letter,
        };
        c.fetch_add(n, Ordering::Relaxed);
        for _ in 0..n {
            self.metrics.queue_replayed(result);
        }
    }

    /// Reads the store's figures into the gauges and `/status`.
    async fn refresh(&self) {
        let Some(store) = &self.store else { return };
        if let Ok(stats) = self.note(store.stats().await) {
            let age = stats.oldest_ms.map_or(Duration::ZERO, |t| {
                Duration::from_millis(now_ms().saturating_sub(t))
            });
            self.metrics.queue_gauges(stats.depth, age);
            let before = std::mem::replace(&mut *self.stats.lock(), stats);
            // Orders found (at start, or queued by another replica): go.
            if before.depth == 0 && stats.depth > 0 {
                self.wake.notify_one();
            }
        }
    }
}
