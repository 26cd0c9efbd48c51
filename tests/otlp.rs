//! OTLP end to end: the real sidecar in front of the simulator exports to a
//! real collector (rotel), over http/protobuf and over grpc, and the
//! collector receives the SPEC's metrics with the attributes and values the
//! traffic implies.

mod support;

use factory_sidecar::config::OtlpProtocol;
use factory_sidecar::sim::ChaosSpec;
use support::http::Http;
use support::rotel::Collector;
use support::{sidecar, sim};

async fn exports_the_spec_metrics(protocol: OtlpProtocol) {
    let collector = Collector::start().await;
    let factory = sim::start().await;
    let endpoint = match protocol {
        OtlpProtocol::HttpProtobuf => collector.http_endpoint.clone(),
        OtlpProtocol::Grpc => collector.grpc_endpoint.clone(),
    };
    let sc = sidecar::start(sidecar::config(&factory.url(), |c| {
        c.telemetry.otlp_endpoint = endpoint;
        c.telemetry.otlp_protocol = protocol;
        c.telemetry.export_interval = std::time::Duration::from_millis(200);
    }))
    .await;
    let http = Http::new();
    let order = |http: Http| {
        let url = format!("{}/api/order", sc.url);
        let key = factory.api_key().to_owned();
        async move {
            http.post_json(&url, Some(&key), factory_sidecar::sim::SAMPLE_ORDER)
                .await
                .expect("order answered")
        }
    };

    // Healthy orders.
    for _ in 0..3 {
        assert_eq!(order(http.clone()).await.status, 200);
    }
    // A fail episode: detected, and the report link followed once.
    factory.set_chaos(ChaosSpec::fail());
    let _ = order(http.clone()).await;
    assert_eq!(
        order(http.clone()).await.status,
        200,
        "chaos resolved by the sidecar"
    );

    let server = collector
        .wait_for(
            "http.server.request.duration",
            &[
                ("http.request.method", "POST"),
                ("http.route", "/api/order"),
                ("http.response.status_code", "200"),
                ("sidecar.outcome", "ok"),
            ],
            |p| p.count.unwrap_or(0) >= 4,
        )
        .await;
    assert_eq!(
        server.resource.get("service.name").map(String::as_str),
        Some("factory-sidecar")
    );
    assert_eq!(
        server.resource.get("service.version").map(String::as_str),
        Some(env!("CARGO_PKG_VERSION"))
    );
    assert!(server.resource.contains_key("host.name"));

    collector
        .wait_for(
            "http.client.request.duration",
            &[
                ("http.request.method", "POST"),
                ("http.response.status_code", "200"),
                ("server.address", "127.0.0.1"),
            ],
            |p| p.count.unwrap_or(0) >= 4,
        )
        .await;
    collector
        .wait_for(
            "http.client.request.duration",
            &[
                ("http.response.status_code", "500"),
                ("server.address", "127.0.0.1"),
            ],
            |p| p.count == Some(1),
        )
        .await;
    collector
        .wait_for("sidecar.chaos.detected", &[("chaos.type", "fail")], |p| {
            p.value == Some(1.0)
        })
        .await;
    collector
        .wait_for(
            "sidecar.chaos.resolutions",
            &[("result", "resolved")],
            |p| p.value == Some(1.0),
        )
        .await;
    collector
        .wait_for("sidecar.chaos.active", &[("chaos.type", "fail")], |p| {
            p.value == Some(0.0)
        })
        .await;
    collector
        .wait_for("sidecar.circuit.state", &[], |p| p.value == Some(0.0))
        .await;
    assert_eq!(factory.stats().support_requests, 1);

    // No apiKey in anything the collector received.
    let key = factory.api_key();
    for p in collector.points() {
        for v in p.attributes.values().chain(p.resource.values()) {
            assert!(!v.contains(key), "apiKey leaked into {p:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_over_http_protobuf() {
    exports_the_spec_metrics(OtlpProtocol::HttpProtobuf).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_over_grpc() {
    exports_the_spec_metrics(OtlpProtocol::Grpc).await;
}
