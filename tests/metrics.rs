//! The admin `/metrics` after real traffic through the stack: the documented
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

/// Every metric the shipped Grafana dashboard and alert rules query is one
/// `/metrics` really exports after traffic that exercises it all (healthy
/// orders, a fail episode found, resolved and retried, an opened circuit
/// refusing an order that parks until it closes). A renamed metric would leave an empty panel and an
/// alert that never fires; this catches it.
#[tokio::test]
async fn metrics_hold_every_series_the_grafana_files_query() {
    use factory_sidecar::sim::{ChaosSpec, SAMPLE_ORDER};
    use support::grafana::queried_metric_names;
    use support::metrics::sample_names;

    let factory = support::sim::start().await;
    let sc = sidecar::start(sidecar::config(&factory.url(), |c| {
        c.retry.initial_backoff = std::time::Duration::from_millis(1);
    }))
    .await;
    let client = TestClient::http1();
    let order_url = format!("{}/api/order", sc.url);
    let auth = format!("Bearer {}", factory.api_key());
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    let order = || client.request(Method::POST, &order_url, &headers, SAMPLE_ORDER);
    assert_eq!(order().await.status, 200);
    factory.set_chaos(ChaosSpec::fail());
    assert_eq!(order().await.status, 200, "found, resolved and retried");
    let admin_auth = format!("Bearer {}", sidecar::ADMIN_TOKEN);
    let opened = client
        .request(
            Method::POST,
            &format!("{}/circuit/open", sc.admin),
            &[("authorization", admin_auth.as_str())],
            "",
        )
        .await;
    assert_eq!(opened.status, 200, "{}", opened.text());
    // Refused while open, the order parks until the circuit closes.
    let parked = {
        let client = client.clone();
        let (url, auth) = (order_url.clone(), auth.clone());
        tokio::spawn(async move {
            let headers = [
                ("authorization", auth.as_str()),
                ("content-type", "application/json"),
            ];
            client
                .request(Method::POST, &url, &headers, SAMPLE_ORDER)
                .await
        })
    };
    let status_url = format!("{}/status", sc.admin);
    support::eventually(
        "the order to park",
        std::time::Duration::from_secs(20),
        || {
            let client = client.clone();
            let url = status_url.clone();
            async move {
                let s = client
                    .get_with_token(&url, sidecar::ADMIN_TOKEN)
                    .await
                    .json();
                (s["orders"]["parked"] == 1).then_some(())
            }
        },
    )
    .await;
    let closed = client
        .request(
            Method::POST,
            &format!("{}/circuit/close", sc.admin),
            &[("authorization", admin_auth.as_str())],
            "",
        )
        .await;
    assert_eq!(closed.status, 200, "{}", closed.text());
    assert_eq!(parked.await.expect("task").status, 200, "released on close");

    let text = client.get(&format!("{}/metrics", sc.admin)).await.text();
    let exported = sample_names(&text);
    let queried = queried_metric_names().expect("the shipped Grafana files are JSON");
    assert!(queried.len() >= 8, "suspiciously few: {queried:?}");
    let missing: Vec<_> = queried.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "queried by Grafana but not in /metrics: {missing:?}\n{text}"
    );
}
