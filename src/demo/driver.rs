//! Drives orders through the sidecar the way the pizza service does, at a
//! steady rate, and keeps what each one came to.
//!
//! An order counts as ok only when the answer is a 200 whose pizza JWT the
//! factory itself would verify: a badjwt answer passed through is a failure
//! the diner would only find out about later.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::sim::{self, SimHandle};

/// What one order came to.
#[derive(Debug, Clone)]
pub struct OrderResult {
    pub phase: usize,
    pub status: Option<StatusCode>,
    /// 200 with a JWT that verifies.
    pub ok: bool,
    pub latency: Duration,
    /// `x-sidecar-attempts` (1 when absent).
    pub attempts: u32,
    /// `x-sidecar-error`, when the sidecar answered itself.
    pub sidecar_error: Option<String>,
}

impl OrderResult {
    pub fn saved_by_retry(&self) -> bool {
        self.ok && self.attempts > 1
    }

    pub fn fast_circuit_open(&self) -> bool {
        self.sidecar_error.as_deref() == Some("circuit-open")
    }
}

/// Every result so far, shared between the driver and the view.
#[derive(Default)]
pub struct Results(Mutex<Vec<OrderResult>>);

impl Results {
    pub fn push(&self, r: OrderResult) {
        self.0.lock().push(r);
    }

    pub fn snapshot(&self) -> Vec<OrderResult> {
        self.0.lock().clone()
    }
}

/// Which phase new orders belong to, and the counts the live line shows:
/// orders sent since the last look, and orders under way (sent, not yet
/// answered: waiting for the factory, as the pizza service would).
#[derive(Default)]
pub struct PhaseGate {
    phase: AtomicUsize,
    in_flight: AtomicUsize,
    sent: AtomicUsize,
}

impl PhaseGate {
    /// New orders belong to `phase`.
    pub fn enter(&self, phase: usize) {
        self.phase.store(phase, Ordering::SeqCst);
    }

    /// Orders sent and not answered yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Orders sent since the last call.
    pub fn take_sent(&self) -> usize {
        self.sent.swap(0, Ordering::SeqCst)
    }
}

/// How long the demo waits for one order: the pizza service's own limit.
const ORDER_LIMIT: Duration = Duration::from_secs(300);

/// Sends orders to `sidecar_url` at `rate` per second until `stop` resolves;
/// each order is its own task so a slow one never holds the rate back.
pub async fn drive(
    sidecar_url: String,
    sim: Arc<SimHandle>,
    rate: u32,
    gate: Arc<PhaseGate>,
    results: Arc<Results>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let period = Duration::from_secs(1) / rate.max(1);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let url = format!("{sidecar_url}/api/order");
    let mut in_flight = tokio::task::JoinSet::new();
    loop {
        if *stop.borrow() {
            break;
        }
        tick.tick().await;
        gate.in_flight.fetch_add(1, Ordering::SeqCst);
        gate.sent.fetch_add(1, Ordering::SeqCst);
        let phase_now = gate.phase.load(Ordering::SeqCst);
        let (client, url, sim, results, gate) = (
            client.clone(),
            url.clone(),
            sim.clone(),
            results.clone(),
            gate.clone(),
        );
        in_flight.spawn(async move {
            results.push(order(&client, &url, &sim, phase_now).await);
            gate.in_flight.fetch_sub(1, Ordering::SeqCst);
        });
        while in_flight.try_join_next().is_some() {}
    }
    // Let the last orders finish (bounded: the sidecar answers every order
    // within its patience).
    let _ = tokio::time::timeout(ORDER_LIMIT, async {
        while in_flight.join_next().await.is_some() {}
    })
    .await;
}

async fn order(
    client: &Client<HttpConnector, Full<Bytes>>,
    url: &str,
    sim: &SimHandle,
    phase: usize,
) -> OrderResult {
    let started = Instant::now();
    let mut result = OrderResult {
        phase,
        status: None,
        ok: false,
        latency: Duration::ZERO,
        attempts: 1,
        sidecar_error: None,
    };
    let req = Request::post(url)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, format!("Bearer {}", sim.api_key()))
        .body(Full::new(Bytes::from_static(sim::SAMPLE_ORDER.as_bytes())));
    let Ok(req) = req else { return result };
    let answer = tokio::time::timeout(ORDER_LIMIT, client.request(req)).await;
    let Ok(Ok(res)) = answer else {
        result.latency = started.elapsed();
        return result;
    };
    let status = res.status();
    let header_str = |name: &str| {
        res.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    result.attempts = header_str("x-sidecar-attempts")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    result.sidecar_error = header_str("x-sidecar-error");
    let body = res.into_body().collect().await.map(|b| b.to_bytes());
    result.latency = started.elapsed();
    result.status = Some(status);
    if let (StatusCode::OK, Ok(body)) = (status, body) {
        let jwt = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("jwt").and_then(|j| j.as_str()).map(str::to_owned));
        result.ok = jwt.is_some_and(|jwt| sim.verify(&jwt));
    }
    result
}
