//! OTLP end to end: the real sidecar in front of the simulator exports to a
//! real collector (rotel), over http/protobuf and over grpc, and the
//! collector receives the documented metrics with the attributes and values the
//! traffic implies.

mod support;

use std::time::Duration;

use factory_sidecar::config::{Config, OtlpProtocol};
use factory_sidecar::sim::ChaosSpec;
use support::client::TestClient;
use support::http::Http;
use support::rotel::Collector;
use support::{sidecar, sim};

/// Exports often enough for a test to wait on.
const EXPORT_INTERVAL: Duration = Duration::from_millis(200);

/// The sidecar exports to `collector` over `protocol`, every `interval`.
fn export_to(c: &mut Config, collector: &Collector, protocol: OtlpProtocol, interval: Duration) {
    c.telemetry.otlp_endpoint = collector.endpoint(protocol);
    c.telemetry.otlp_protocol = protocol;
    c.telemetry.export_interval = interval;
}

async fn exports_the_spec_metrics(protocol: OtlpProtocol) {
    let collector = Collector::start().await;
    let factory = sim::start().await;
    let sc = sidecar::start(sidecar::config(&factory.url(), |c| {
        export_to(c, &collector, protocol, EXPORT_INTERVAL);
    }))
    .await;
    let client = TestClient::http1();
    let order = || client.order(&sc.url, factory.api_key());

    // Before anything happened: the known series are exported at 0, so a
    // backend's increase() counts the first event.
    for (metric, attrs) in [
        ("sidecar.chaos.detected", &[("chaos.type", "throttle")][..]),
        ("sidecar.chaos.resolutions", &[("result", "unresolved")][..]),
        (
            "sidecar.circuit.transitions",
            &[("from", "closed"), ("to", "open")][..],
        ),
        ("sidecar.retries", &[("reason", "timeout")][..]),
        ("sidecar.config.reloads", &[("result", "invalid")][..]),
    ] {
        collector
            .wait_for(metric, attrs, |p| p.value == Some(0.0))
            .await;
    }
    collector
        .wait_for(
            "factory_sidecar.build_info",
            &[("version", env!("CARGO_PKG_VERSION"))],
            |p| p.value == Some(1.0),
        )
        .await;

    // Healthy orders.
    for _ in 0..3 {
        assert_eq!(order().await.status, 200);
    }
    // A fail episode: detected, and the report link followed once.
    factory.set_chaos(ChaosSpec::fail());
    let _ = order().await;
    assert_eq!(order().await.status, 200, "chaos resolved by the sidecar");

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
                // Not the badjwt series (also a 200), which exists at 0.
                ("error.type", ""),
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

/// With an export interval far beyond the test, only the final flush on
/// shutdown can deliver the data: the sidecar must stop (no hang) and the
/// collector must have the requests.
async fn shutdown_flushes(protocol: OtlpProtocol) {
    let collector = Collector::start().await;
    let factory = sim::start().await;
    let sc = sidecar::start(sidecar::config(&factory.url(), |c| {
        export_to(c, &collector, protocol, Duration::from_secs(3600));
    }))
    .await;
    let client = TestClient::http1();
    for _ in 0..2 {
        let res = client.order(&sc.url, factory.api_key()).await;
        assert_eq!(res.status, 200);
    }
    sc.sidecar.shutdown();
    tokio::time::timeout(Duration::from_secs(30), sc.sidecar.stopped())
        .await
        .expect("the sidecar stops, final export included, without hanging");
    collector
        .wait_for(
            "http.server.request.duration",
            &[("http.route", "/api/order"), ("sidecar.outcome", "ok")],
            |p| p.count == Some(2),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_flushes_over_http_protobuf() {
    shutdown_flushes(OtlpProtocol::HttpProtobuf).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_flushes_over_grpc() {
    shutdown_flushes(OtlpProtocol::Grpc).await;
}

const CALLER_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CALLER_SPAN: &str = "b7ad6b7169203331";

/// A request with the caller's `traceparent`, whose first try fails (500)
/// and whose retry succeeds: one server span continuing the caller's trace,
/// one client span per try under it, and each try carried *its own* span's
/// context to the factory.
async fn spans_follow_the_request(protocol: OtlpProtocol) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use support::upstream::{FakeUpstream, answer};

    let collector = Collector::start().await;
    let tries = std::sync::Arc::new(AtomicUsize::new(0));
    let up = {
        let tries = tries.clone();
        FakeUpstream::start(move |_r| {
            let n = tries.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    answer(500, "{\"message\":\"oops\"}")
                } else {
                    answer(200, "{\"jwt\":\"x\"}")
                }
            }
        })
        .await
    };
    let sc = sidecar::start(sidecar::config(&up.url(), |c| {
        export_to(c, &collector, protocol, EXPORT_INTERVAL);
        c.telemetry.traces = true;
        c.retry.initial_backoff = Duration::from_millis(1);
        c.chaos.verify_jwt = false;
    }))
    .await;
    let mut req = support::http::request(
        http::Method::POST,
        &format!("{}/api/order", sc.url),
        None,
        Some("application/json"),
        "{}",
    )
    .expect("request");
    req.headers_mut().insert(
        "traceparent",
        http::HeaderValue::from_str(&format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01"))
            .expect("header"),
    );
    let res = Http::new().send(req).await.expect("answered");
    assert_eq!(res.status, 200);

    let server = collector
        .wait_for_span("SERVER POST /api/order", |s| {
            s.kind.contains("SERVER") && s.name == "POST /api/order"
        })
        .await;
    assert_eq!(server.trace_id, CALLER_TRACE);
    assert_eq!(server.parent_id, CALLER_SPAN);
    assert_eq!(server.attr("http.response.status_code"), Some("200"));
    assert_eq!(server.attr("sidecar.outcome"), Some("ok"));
    assert_eq!(server.attr("http.route"), Some("/api/order"));

    let failed = collector
        .wait_for_span("CLIENT try answered 500", |s| {
            s.kind.contains("CLIENT") && s.attr("http.response.status_code") == Some("500")
        })
        .await;
    let ok = collector
        .wait_for_span("CLIENT try answered 200", |s| {
            s.kind.contains("CLIENT") && s.attr("http.response.status_code") == Some("200")
        })
        .await;
    for client in [&failed, &ok] {
        assert_eq!(client.trace_id, CALLER_TRACE);
        assert_eq!(client.parent_id, server.span_id);
        assert_eq!(client.attr("server.address"), Some("127.0.0.1"));
    }
    assert_eq!(failed.attr("error.type"), Some("5xx"));
    assert!(failed.status.contains("ERROR"), "{failed:?}");
    assert_ne!(failed.span_id, ok.span_id);

    // The factory saw each try's own context, not the caller's.
    let sent: Vec<String> = up
        .requests()
        .iter()
        .filter_map(|r| {
            r.headers
                .get("traceparent")?
                .to_str()
                .ok()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(
        sent,
        [
            format!("00-{CALLER_TRACE}-{}-01", failed.span_id),
            format!("00-{CALLER_TRACE}-{}-01", ok.span_id),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_follow_the_request_over_http_protobuf() {
    spans_follow_the_request(OtlpProtocol::HttpProtobuf).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_follow_the_request_over_grpc() {
    spans_follow_the_request(OtlpProtocol::Grpc).await;
}

/// A blip (the next two orders fail, no report link followed) is ridden out
/// by retries; a badjwt episode shows as a failed try with `error.type`
/// beside its 200 status.
async fn blips_and_bad_pizzas(protocol: OtlpProtocol) {
    let collector = Collector::start().await;
    let factory = sim::start().await;
    let sc = sidecar::start(sidecar::config(&factory.url(), |c| {
        export_to(c, &collector, protocol, EXPORT_INTERVAL);
        c.chaos.auto_resolve = false;
        c.retry.max_attempts = 3;
        c.retry.initial_backoff = Duration::from_millis(1);
    }))
    .await;
    let client = TestClient::http1();
    let order = || client.order(&sc.url, factory.api_key());

    factory.set_chaos(ChaosSpec::fail().count(2));
    assert_eq!(order().await.status, 200, "blip retried away");
    collector
        .wait_for("sidecar.retries", &[("reason", "5xx")], |p| {
            p.value == Some(2.0)
        })
        .await;
    collector
        .wait_for(
            "http.client.request.duration",
            &[("http.response.status_code", "500"), ("error.type", "5xx")],
            |p| p.count == Some(2),
        )
        .await;
    collector
        .wait_for(
            "http.server.request.duration",
            &[
                ("sidecar.outcome", "ok"),
                ("http.response.status_code", "200"),
            ],
            |p| p.count == Some(1),
        )
        .await;
    collector
        .wait_for("sidecar.chaos.detected", &[("chaos.type", "fail")], |p| {
            p.value.is_some_and(|v| v >= 1.0)
        })
        .await;

    factory.set_chaos(ChaosSpec::badjwt().count(1));
    assert_eq!(order().await.status, 200, "bad pizza retried");
    collector
        .wait_for(
            "http.client.request.duration",
            &[
                ("http.response.status_code", "200"),
                ("error.type", "badjwt"),
            ],
            |p| p.count == Some(1),
        )
        .await;
    collector
        .wait_for("sidecar.retries", &[("reason", "badjwt")], |p| {
            p.value == Some(1.0)
        })
        .await;
    collector
        .wait_for("sidecar.chaos.detected", &[("chaos.type", "badjwt")], |p| {
            p.value.is_some_and(|v| v >= 1.0)
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blips_and_bad_pizzas_over_http_protobuf() {
    blips_and_bad_pizzas(OtlpProtocol::HttpProtobuf).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blips_and_bad_pizzas_over_grpc() {
    blips_and_bad_pizzas(OtlpProtocol::Grpc).await;
}

/// A factory that only fails: the breaker opens, later orders are refused
/// at once (orders without patience), and the circuit metrics say so.
async fn circuit_metrics(protocol: OtlpProtocol) {
    use support::upstream::{FakeUpstream, answer};
    let collector = Collector::start().await;
    let up = FakeUpstream::start(|_r| async { answer(500, "{\"message\":\"down\"}") }).await;
    let sc = sidecar::start(sidecar::config(&up.url(), |c| {
        export_to(c, &collector, protocol, EXPORT_INTERVAL);
        c.retry.max_attempts = 1;
        // Orders fail fast here: this is about the circuit's own metrics.
        c.orders.patience = std::time::Duration::ZERO;
        c.circuit_breaker.consecutive_failures = 2;
        c.circuit_breaker.open_for = Duration::from_secs(600);
    }))
    .await;
    let http = Http::new();
    let url = format!("{}/api/order", sc.url);
    for _ in 0..2 {
        let res = http.post_json(&url, None, "{}").await.expect("answered");
        assert_eq!(res.status, 500, "the factory's own answer passes through");
    }
    let res = http.post_json(&url, None, "{}").await.expect("answered");
    assert_eq!(res.status, 503, "circuit open");
    assert_eq!(up.request_count(), 2, "the open circuit spared the factory");

    collector
        .wait_for("sidecar.circuit.state", &[], |p| p.value == Some(2.0))
        .await;
    collector
        .wait_for(
            "sidecar.circuit.transitions",
            &[("from", "closed"), ("to", "open")],
            |p| p.value == Some(1.0),
        )
        .await;
    collector
        .wait_for("sidecar.circuit.rejections", &[], |p| p.value == Some(1.0))
        .await;
    collector
        .wait_for(
            "http.server.request.duration",
            &[
                ("sidecar.outcome", "circuit_open"),
                ("http.response.status_code", "503"),
            ],
            |p| p.count == Some(1),
        )
        .await;
    collector
        .wait_for(
            "http.server.request.duration",
            &[
                ("sidecar.outcome", "factory_error"),
                ("http.response.status_code", "500"),
            ],
            |p| p.count == Some(2),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_metrics_over_http_protobuf() {
    circuit_metrics(OtlpProtocol::HttpProtobuf).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_metrics_over_grpc() {
    circuit_metrics(OtlpProtocol::Grpc).await;
}

/// A config reload moves the export to another collector and turns traces
/// on, without a restart: the new collector gets the metrics with their
/// counts carried on (cumulative, nothing lost or counted twice) and the
/// spans of the orders after the reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_moves_the_export_and_turns_traces_on() {
    use factory_sidecar::app::Sidecar;
    use factory_sidecar::config::ProcessEnv;
    use factory_sidecar::reload::ReloadResult;

    let (first, second) = (Collector::start().await, Collector::start().await);
    let factory = sim::start().await;
    let toml = |endpoint: &str, traces: bool| {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[upstream]\nurl = \"{}\"\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n\
             [telemetry]\notlp_endpoint = \"{endpoint}\"\nexport_interval = \"200ms\"\ntraces = {traces}\n",
            factory.url()
        )
    };
    let file = support::temp_file("otlp-reload.toml", &toml(&first.http_endpoint, false));
    let config = Config::load(&file, &ProcessEnv).expect("valid");
    let sc = Sidecar::start_from(config, Some(file.clone()))
        .await
        .expect("starts");
    let client = TestClient::http1();
    let proxy = format!("http://{}", sc.proxy_addr());
    let order = || client.order(&proxy, factory.api_key());
    for _ in 0..2 {
        assert_eq!(order().await.status, 200);
    }
    let ok = [("http.route", "/api/order"), ("sidecar.outcome", "ok")];
    first
        .wait_for("http.server.request.duration", &ok, |p| p.count == Some(2))
        .await;

    std::fs::write(&file, toml(&second.http_endpoint, true)).expect("rewrite");
    let report = sc.reload("test").await;
    assert_eq!(report.result, ReloadResult::Applied, "{report:?}");
    assert_eq!(order().await.status, 200);
    second
        .wait_for("http.server.request.duration", &ok, |p| p.count == Some(3))
        .await;
    let span = second
        .wait_for_span("the order's server span", |s| {
            s.kind == "SPAN_KIND_SERVER" && s.name == "POST /api/order"
        })
        .await;
    assert_eq!(span.attr("http.response.status_code"), Some("200"));
    sc.shutdown();
    sc.stopped().await;
}
