//! Shared helpers for the end-to-end tests: a scriptable fake upstream, an
//! HTTP client, and the sidecar started in-process on ephemeral ports.
#![allow(dead_code)]

pub mod client;
pub mod raw;
pub mod sidecar;
pub mod upstream;

use std::future::Future;
use std::time::Duration;

/// Polls `check` until it returns `Some`, or panics after `limit`.
/// The way to wait for something in a test: never a fixed sleep.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
