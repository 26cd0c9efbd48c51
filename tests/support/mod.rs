//! Shared helpers for the end-to-end tests: each test binary compiles the
//! ones it uses (`mod support;`), so unused ones are not warnings.
//!
//! - [`http`]: a bounded HTTP client (h1, h2c); [`client`]: its panicking
//!   convenience wrapper for tests that expect every exchange to work.
//! - [`wire`]: the one raw HTTP/1 client: bytes written as given, answers
//!   read with their framing, whether the connection stayed open.
//! - [`upstream`]: a scriptable fake upstream; [`raw`]: a raw-TCP one for faults.
//! - [`sim`]: the factory simulator in-process; [`sidecar`]: the sidecar in-process.
//! - [`rotel`]: a real OTLP receiver (`rotel-agent`) that prints what it gets.
//! - [`binary`]: the real `factory-sidecar run` on a config file, signals by `kill` (SIGKILL too).
//! - [`grafana`]: the shipped dashboard, Grafana alerts and Prometheus rules, read.
//! - [`prometheus`]: a real Prometheus scraping and evaluating rules.
//! - [`redis`]: a real redis-server.
#![allow(dead_code)]

pub mod binary;
pub mod client;
pub mod grafana;
pub mod http;
pub mod prometheus;
pub mod raw;
pub mod redis;
pub mod rotel;
pub mod sidecar;
pub mod sim;
pub mod upstream;
pub mod wire;

use std::future::Future;
use std::time::Duration;

/// Polls `check` every 10 ms until it returns `Some` or `limit` passes.
/// The way to wait for something in a test: never a fixed sleep.
pub async fn wait_for<T, F, Fut>(limit: Duration, check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    wait_every(limit, Duration::from_millis(10), check).await
}

/// [`wait_for`], polling every `every` (for checks that cost a request to
/// another process, such as a Prometheus query).
pub async fn wait_every<T, F, Fut>(limit: Duration, every: Duration, mut check: F) -> Option<T>
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
        tokio::time::sleep(every).await;
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

/// A free loopback port (bound, then released: for a server that must come
/// back on the same port, such as a factory killed and restarted).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A fresh, empty temporary directory for one test.
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = binary::temp_path(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}
