//! Why reading an async order failed: small typed errors that
//! [`crate::error`] turns into answers (a leaf module, so the error module
//! does not depend on the queue's HTTP code).

use super::store::StoreError;

/// No such order for this caller (or it expired).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("no such order")]
pub struct OrderNotFound;

/// The store cannot be read now.
#[derive(Debug, thiserror::Error)]
#[error("async orders are unavailable: {0}")]
pub struct QueueUnavailable(pub StoreError);

/// The order was given up (dead letter) without a factory answer to show.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the order was given up after {attempts} replays: {last_error}")]
pub struct OrderGivenUp {
    pub attempts: u32,
    pub last_error: String,
}
