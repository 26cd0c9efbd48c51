//! The queue's storage, behind one trait so the embedded file and Redis are
//! interchangeable (and tested by one suite, tests/queue_store.rs).
//!
//! Every method returns once its change is durable as far as the backend
//! goes: the embedded store commits (fsync) before it returns; Redis has
//! acknowledged the `MULTI`/`EXEC`. A claim is the right to replay one
//! order; it ends with [`Store::finish`], which stores the order's new state
//! and, for a final state, takes it off the queue in the same transaction:
//! once an answer is stored the order is never replayed again.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use super::record::{OrderId, OrderRecord};
use crate::telemetry::metrics::AsyncOffReason;

/// A store call in flight.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// What went wrong in the store; says which reason `/status` and
/// `sidecar.queue.async_off` give.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("no space left for the queue store: {0}")]
    Full(String),
    #[error("the queue store cannot be used (corrupt or unreadable file?): {0}")]
    Unavailable(String),
    #[error("queue store error: {0}")]
    Io(String),
    #[error("redis unreachable: {0}")]
    Redis(String),
}

impl StoreError {
    pub fn off_reason(&self) -> AsyncOffReason {
        match self {
            StoreError::Full(_) => AsyncOffReason::DiskFull,
            StoreError::Unavailable(_) => AsyncOffReason::StoreUnavailable,
            StoreError::Io(_) => AsyncOffReason::StoreError,
            StoreError::Redis(_) => AsyncOffReason::RedisUnreachable,
        }
    }
}

/// An order handed to one replayer.
#[derive(Debug, Clone)]
pub struct Claim {
    pub record: OrderRecord,
    /// Backend bookkeeping (the Redis stream entry); empty for the embedded store.
    pub token: String,
}

/// The queue at a glance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Orders queued (in flight included).
    pub depth: u64,
    /// When the oldest queued order was accepted (Unix ms).
    pub oldest_ms: Option<u64>,
    pub dead_letters: u64,
}

/// An order read back, with its place in the queue when queued.
#[derive(Debug, Clone)]
pub struct Lookup {
    pub record: OrderRecord,
    /// Orders ahead of it (0: next).
    pub position: Option<u64>,
}

/// See the module docs.
pub trait Store: Send + Sync + 'static {
    /// `embedded` or `redis`.
    fn backend(&self) -> &'static str;

    /// Stores a new queued order; returns once durable.
    fn enqueue(&self, record: OrderRecord) -> StoreFuture<'_, ()>;

    /// The oldest queued order due at `now_ms` that nobody is replaying.
    fn claim(&self, now_ms: u64) -> StoreFuture<'_, Option<Claim>>;

    /// Ends a claim with the order's new state: still `Queued` puts it back
    /// (due at `next_ms`), a final state takes it off the queue.
    fn finish(&self, claim: Claim, record: OrderRecord) -> StoreFuture<'_, ()>;

    fn get(&self, id: OrderId) -> StoreFuture<'_, Option<Lookup>>;

    fn stats(&self) -> StoreFuture<'_, QueueStats>;

    /// Dead letters, oldest first.
    fn dead_letters(&self) -> StoreFuture<'_, Vec<OrderRecord>>;

    /// Drops one dead letter; false when there is no such dead letter.
    fn drop_dead_letter(&self, id: OrderId) -> StoreFuture<'_, bool>;

    /// Deletes every order whose `expires_ms` has passed; returns how many
    /// of them were still queued (never made).
    fn expire(&self, now_ms: u64) -> StoreFuture<'_, u64>;

    /// A cheap round trip that proves the store takes writes again.
    fn check(&self) -> StoreFuture<'_, ()>;
}

/// How long a finished order is kept: `ttl` from now.
pub fn expiry(now_ms: u64, ttl: Duration) -> u64 {
    now_ms.saturating_add(crate::times::millis(ttl))
}
