//! The admin `/metrics` after real traffic through the stack: the SPEC's
//! metric names with OTel attributes, in Prometheus text; and `/status`
//! request counts by status class.

mod support;

use http::Method;
use support::client::TestClient;
use support::sidecar;
use support::upstream::{FakeUpstream, answer};

#[tokio::test]
async fn metrics_and_status_counts_follow_the_traffic() {
    let up = FakeUpstream::start(|r| async move {
        match r.uri.path() {
            "/api/order" => answer(200, "{\"ok\":true}"),
            _ => answer(404, "{\"message\":\"unknown endpoint\"}"),
        }
    })
    .await;
    let sc = sidecar::start(sidecar::config(&up.url(), |c| {
        c.server.max_body_bytes = 16;
    }))
    .await;
    let client = TestClient::http1();
    for _ in 0..3 {
        let res = client
            .request(Method::POST, &format!("{}/api/order", sc.url), &[], "{}")
            .await;
        assert_eq!(res.status, 200);
    }
    assert_eq!(
        client.get(&format!("{}/api/nope", sc.url)).await.status,
        404
    );
    let res = client
        .request(
            Method::POST,
            &format!("{}/api/order", sc.url),
            &[],
            &"x".repeat(64),
        )
        .await;
    assert_eq!(res.status, 413);

    let text = client.get(&format!("{}/metrics", sc.admin)).await;
    assert_eq!(
        text.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = text.text();
    let host = up.addr.ip().to_string();
    for expected in [
        "http_server_request_duration_seconds_count{http_request_method=\"POST\",http_response_status_code=\"200\",http_route=\"/api/order\",sidecar_outcome=\"ok\"} 3".to_owned(),
        "http_server_request_duration_seconds_count{http_request_method=\"GET\",http_response_status_code=\"404\",http_route=\"other\",sidecar_outcome=\"ok\"} 1".to_owned(),
        "http_server_request_duration_seconds_count{http_request_method=\"POST\",http_response_status_code=\"413\",http_route=\"/api/order\",sidecar_outcome=\"rejected\"} 1".to_owned(),
        format!("http_client_request_duration_seconds_count{{http_request_method=\"POST\",http_response_status_code=\"200\",server_address=\"{host}\"}} 3"),
        "sidecar_circuit_state 0".to_owned(),
        "sidecar_chaos_active{chaos_type=\"fail\"} 0".to_owned(),
    ] {
        assert!(text.contains(&expected), "missing {expected:?} in:\n{text}");
    }

    let status = client
        .get_with_token(&format!("{}/status", sc.admin), sidecar::ADMIN_TOKEN)
        .await
        .json();
    assert_eq!(status["requests"]["2xx"], 3);
    assert_eq!(status["requests"]["4xx"], 2);
    assert_eq!(status["requests"]["total"], 5);
}
