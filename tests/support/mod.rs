//! Shared helpers for the end-to-end tests: each test binary compiles the
//! ones it uses (`mod support;`), so unused ones are not warnings.
//!
//! - [`http`]: a bounded HTTP client (h1, h2c); [`client`]: its panicking
//!   convenience wrapper for tests that expect every exchange to work.
//! - [`upstream`]: a scriptable fake upstream; [`raw`]: a raw-TCP one for faults.
//! - [`sim`]: the factory simulator in-process; [`sidecar`]: the sidecar in-process.
//! - [`rotel`]: a real OTLP receiver (`rotel-agent`) that prints what it gets.
//! - [`process`]: the real binary, to kill and restart; [`redis`]: a real redis-server.
#![allow(dead_code)]

pub mod client;
pub mod http;
pub mod process;
pub mod raw;
pub mod redis;
pub mod rotel;
pub mod sidecar;
pub mod sim;
pub mod upstream;

use std::future::Future;
use std::time::Duration;

/// Polls `check` every 10 ms until it returns `Some` or `limit` passes.
/// The way to wait for something in a test: never a fixed sleep.
pub async fn wait_for<T, F, Fut>(limit: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// [`wait_for`], panicking with `what` when it never happens.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    match wait_for(limit, check).await {
        Some(v) => v,
        None => panic!("timed out after {limit:?} waiting for {what}"),
    }
}
