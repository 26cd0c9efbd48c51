//! The simulator's own control endpoints (`/sim/*`), answered whatever the
//! chaos, `down` and `hang` included, and never counted in the stats:
//!
//! | endpoint | answer |
//! |---|---|
//! | `PUT /sim/chaos {"type", "count"?, "retryAfter"?, "delay"?}` | starts that chaos now, fresh fix code; 200 with the new status |
//! | `GET /sim/chaos` | `{"type", "remaining"?, "retryAfter"?, "delay"?, "episode"}` (never the fix code) |
//! | `GET /sim/stats` | [`SimStats`](super::SimStats) |
//!
//! No authentication: the simulator is a test tool meant for loopback.

use http::request::Parts;
use http::{Method, StatusCode, header};
use hyper::body::Incoming;

use super::chaos::ChaosSpec;
use super::factory::{self, Answer, Body, BodyLost, read_body};
use super::state::Shared;

pub(crate) async fn handle(
    shared: &Shared,
    parts: Parts,
    body: Incoming,
) -> Result<Answer, BodyLost> {
    let path = parts.uri.path();
    let path = path.strip_suffix('/').unwrap_or(path);
    Ok(match (path, &parts.method) {
        ("/sim/chaos", &Method::GET) => status_answer(shared.chaos_status()),
        ("/sim/chaos", &Method::PUT | &Method::POST) => match read_body(body).await? {
            Body::TooLarge => factory::message(StatusCode::PAYLOAD_TOO_LARGE, "body too large"),
            Body::Read(bytes) => match ChaosSpec::from_json(&bytes) {
                Ok(spec) => status_answer(shared.set_chaos(&spec)),
                Err(e) => factory::message(StatusCode::BAD_REQUEST, &e.to_string()),
            },
        },
        ("/sim/stats", &Method::GET) => match serde_json::to_vec(&shared.stats()) {
            Ok(body) => factory::json(StatusCode::OK, body),
            Err(e) => factory::message(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        },
        ("/sim/chaos", _) => not_allowed("GET, PUT"),
        ("/sim/stats", _) => not_allowed("GET"),
        _ => factory::unknown_endpoint(),
    })
}

fn status_answer(status: super::ChaosStatus) -> Answer {
    match serde_json::to_vec(&status) {
        Ok(body) => factory::json(StatusCode::OK, body),
        Err(e) => factory::message(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

fn not_allowed(allow: &'static str) -> Answer {
    let mut answer = factory::message(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    answer
        .headers_mut()
        .insert(header::ALLOW, http::HeaderValue::from_static(allow));
    answer
}
