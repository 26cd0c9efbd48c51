//! Starting simulators for tests, and talking to them as the pizza service
//! does.

use std::time::Duration;

use factory_sidecar::sim::{self, SimHandle, SimOptions};

use super::http::{Error, Http, Reply};

/// Short delays, so throttle and oven-full tests take milliseconds.
pub const FAST: Duration = Duration::from_millis(50);

/// Options for a test simulator: loopback, free port, default test apiKey,
/// throttle and oven delays of [`FAST`].
pub fn fast_options() -> SimOptions {
    SimOptions::default()
        .throttle_delay(FAST)
        .oven_delay(FAST)
        .shutdown_grace(Duration::from_secs(1))
}

/// A running test simulator with [`fast_options`].
pub async fn start() -> SimHandle {
    start_with(fast_options()).await
}

pub async fn start_with(opts: SimOptions) -> SimHandle {
    sim::spawn(opts)
        .await
        .expect("the simulator starts on a free loopback port")
}

/// `POST /api/order` with `body` and the simulator's apiKey.
pub async fn order(http: &Http, sim: &SimHandle, body: &str) -> Result<Reply, Error> {
    http.post_json(
        &format!("{}/api/order", sim.url()),
        Some(sim.api_key()),
        body,
    )
    .await
}

/// `POST /api/order` with the sample order.
pub async fn sample_order(http: &Http, sim: &SimHandle) -> Result<Reply, Error> {
    order(http, sim, sim::SAMPLE_ORDER).await
}
