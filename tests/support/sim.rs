//! Starting simulators for tests, and talking to them as the pizza service
//! does.

use std::time::Duration;

use factory_sidecar::sim::{self, SimHandle, SimOptions, SimStats};
use jsonwebtoken::{Algorithm, Validation};
use serde_json::Value;

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

/// The `message` of a JSON error answer.
pub fn msg(reply: &Reply) -> String {
    reply.json()["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The JSON object's keys, sorted.
pub fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().expect("an object").keys().cloned().collect();
    k.sort();
    k
}

/// The simulator's `/sim/stats`.
pub async fn stats(http: &Http, sim: &SimHandle) -> SimStats {
    let reply = http
        .get(&format!("{}/sim/stats", sim.url()))
        .await
        .expect("stats are always answered");
    serde_json::from_slice(&reply.body).expect("stats JSON")
}

/// Sets chaos through `PUT /sim/chaos`.
pub async fn set_chaos(http: &Http, sim: &SimHandle, body: &str) -> Reply {
    http.put_json(&format!("{}/sim/chaos", sim.url()), body)
        .await
        .expect("control is always answered")
}

/// The path of a report link (`https://host/api/support/...` -> `/api/support/...`).
pub fn link_path(url: &str) -> String {
    let rest = url.split_once("://").expect("absolute link").1;
    rest[rest.find('/').expect("a path")..].to_owned()
}

/// What a verifier must accept: RS256 from the JWKS, and no `exp` claim
/// required (the real factory puts `iat`/`exp` in the header).
pub fn pizza_validation() -> Validation {
    let mut v = Validation::new(Algorithm::RS256);
    v.required_spec_claims.clear();
    v
}

/// The factory's own `POST /api/order/verify` of `jwt`.
pub async fn verify(http: &Http, sim: &SimHandle, jwt: &str) -> Reply {
    http.post_json(
        &format!("{}/api/order/verify", sim.url()),
        None,
        &serde_json::json!({ "jwt": jwt }).to_string(),
    )
    .await
    .expect("verify is always answered")
}
