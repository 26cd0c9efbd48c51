//! The synthetic probe (`[probe]`): a test order through the same
//! stack every `interval`, so chaos is detected and resolved even while no
//! diner is ordering, and operators see the factory's health at night.
//!
//! It creates REAL orders at the factory (with the configured vendor apiKey
//! and diner): off by default. An order counts as ok when the factory answers
//! 200 with a pizza JWT that is not known bad; results go to
//! `sidecar.probe.*`, the log (once per change between ok and failing) and
//! the `probe` section of `/status`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, header};
use parking_lot::Mutex;
use tokio::time::Instant;
use tower::ServiceExt;

use crate::admin::AdminPart;
use crate::config::ProbeConfig;
use crate::proxy::buffered::BufferedStack;
use crate::resilience::classify::{Outcome, classify};
use crate::telemetry::Metrics;
use crate::times::{millis, rfc3339};

/// What the probe has seen, for `/status`.
#[derive(Debug, Default)]
pub struct ProbeState {
    ok: AtomicU64,
    failed: AtomicU64,
    last: Mutex<Option<LastRun>>,
}

#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct LastRun {
    at: String,
    ok: bool,
    status: Option<u16>,
    duration_ms: u64,
    consecutive_failures: u64,
}

impl AdminPart for ProbeState {
    fn name(&self) -> &'static str {
        "probe"
    }

    fn status(&self) -> serde_json::Value {
        serde_json::json!({
            "ok": self.ok.load(Ordering::Relaxed),
            "failed": self.failed.load(Ordering::Relaxed),
            "last": *self.last.lock(),
        })
    }
}

/// The order body the probe sends, from `[probe]`.
fn order_body(config: &ProbeConfig) -> Bytes {
    let body = serde_json::json!({
        "diner": {"id": config.diner_id, "name": config.diner_name, "email": config.diner_email},
        "order": {
            "franchiseId": config.franchise_id,
            "storeId": config.store_id,
            "items": [{"menuId": config.menu_id, "description": config.description, "price": config.price}],
        },
    });
    Bytes::from(body.to_string())
}

/// Runs the probe until the task is aborted (on shutdown).
pub fn spawn(
    config: ProbeConfig,
    service: impl BufferedStack,
    metrics: Arc<Metrics>,
    state: Arc<ProbeState>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let body = order_body(&config);
        let auth = HeaderValue::from_str(&format!("Bearer {}", config.api_key.expose()));
        let Ok(auth) = auth else {
            tracing::error!("probe.api_key is not a valid header value; probe off");
            return;
        };
        let mut tick = tokio::time::interval(config.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut consecutive_failures = 0u64;
        loop {
            tick.tick().await;
            let mut req = Request::new(body.clone());
            *req.method_mut() = Method::POST;
            *req.uri_mut() = http::Uri::from_static("/api/order");
            req.headers_mut()
                .insert(header::AUTHORIZATION, auth.clone());
            req.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            let started = Instant::now();
            let result = service.clone().oneshot(req).await;
            let elapsed = started.elapsed();
            let status = result.as_ref().ok().map(|r| r.status().as_u16());
            let ok = classify(&result) == Outcome::Success && status == Some(200);
            metrics.probe(ok, elapsed);
            let was_failing = consecutive_failures > 0;
            if ok {
                state.ok.fetch_add(1, Ordering::Relaxed);
                consecutive_failures = 0;
                if was_failing {
                    tracing::info!("probe order succeeds again");
                }
            } else {
                state.failed.fetch_add(1, Ordering::Relaxed);
                consecutive_failures += 1;
                if !was_failing {
                    match &result {
                        Ok(res) => {
                            tracing::warn!(status = res.status().as_u16(), "probe order failed")
                        }
                        Err(e) => tracing::warn!(error = %e, "probe order failed"),
                    }
                }
            }
            *state.last.lock() = Some(LastRun {
                at: rfc3339(SystemTime::now()),
                ok,
                status,
                duration_ms: millis(elapsed),
                consecutive_failures,
            });
            // Drain the answer so the connection goes back to the pool.
            if let Ok(res) = result {
                let _ = http_body_util::BodyExt::collect(res.into_body()).await;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_order_body_is_the_factory_shape() {
        let c = ProbeConfig {
            diner_id: 7,
            menu_id: 3,
            ..ProbeConfig::default()
        };
        let v: serde_json::Value = serde_json::from_slice(&order_body(&c)).expect("json");
        assert_eq!(v["diner"]["id"], 7);
        assert_eq!(v["order"]["items"][0]["menuId"], 3);
        assert_eq!(v["order"]["items"].as_array().map(Vec::len), Some(1));
    }
}
