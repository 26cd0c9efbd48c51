//! Shared helpers for the end-to-end tests: each test binary compiles the
//! ones it uses (`mod support;`), so unused ones are not warnings.
//!
//! - [`http`]: a bounded HTTP client (h1, h2c); [`client`]: its panicking
//!   wrapper for tests that expect every exchange to work, with the ones
//!   tests repeat (an order, an admin call with a token, `/status`, `/metrics`).
//! - [`wire`]: the one raw HTTP/1 client: bytes written as given, answers
//!   read with their framing, whether the connection stayed open.
//! - [`upstream`]: a scriptable fake upstream; [`raw`]: a raw-TCP one for faults.
//! - [`sim`]: the factory simulator in-process; [`sidecar`]: the sidecar in-process.
//! - [`rotel`]: a real OTLP receiver (`rotel-agent`) that prints what it gets.
//! - [`binary`]: the real `factory-sidecar run` on a config file, signals by `kill` (SIGKILL too).
//! - [`metrics`]: `/metrics` text read back: a series' value, the sample names.
//! - [`grafana`]: the shipped dashboard, Grafana alerts and Prometheus rules, read.
//! - [`prometheus`]: a real Prometheus scraping and evaluating rules.
//! - [`redis`]: a real redis-server.
//!
//! Here: waiting for a condition ([`wait_for`], [`eventually`]), ports and
//! temporary files ([`free_port`], [`temp_path`], [`temp_dir`],
//! [`temp_file`]), and [`assert_no_key`].
#![allow(dead_code)]

pub mod binary;
pub mod client;
pub mod grafana;
pub mod http;
pub mod metrics;
pub mod prometheus;
pub mod raw;
pub mod redis;
pub mod rotel;
pub mod sidecar;
pub mod sim;
pub mod upstream;
pub mod wire;

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// A free loopback port (bound, then released). Only where a test needs
/// a known port: a server that must come back on the same port (a factory
/// killed and restarted), a program that cannot report a port 0 it chose
/// (Prometheus, rotel, redis-server), or an address where nothing listens.
/// Everything else listens on port 0 and reads its address back.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A fresh, unique path in this test binary's temporary directory.
pub fn temp_path(name: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!("factory-sidecar-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    dir.join(format!("{n}-{name}"))
}

/// A fresh, empty temporary directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let d = temp_path(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// A new temporary file holding `content` (a config file, a CA).
pub fn temp_file(name: &str, content: &str) -> PathBuf {
    let path = temp_path(name);
    std::fs::write(&path, content).expect("write temp file");
    path
}

/// Fails the test when `text` (an answer, a log, `/status`) holds the
/// factory's apiKey `key` in clear.
pub fn assert_no_key(key: &str, what: &str, text: &str) {
    assert!(
        !text.contains(key),
        "{what} holds the apiKey in clear: {text}"
    );
}
