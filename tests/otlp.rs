//! OTLP export against a real receiver (`rotel-agent`, see
//! `tests/support/rotel.rs`): every metric of the SPEC's table arrives with
//! the right attributes and values, over http/protobuf and over gRPC; spans
//! arrive with the caller's trace continued and the try's context sent
//! upstream; shutdown flushes; an unreachable collector costs nothing.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use factory_sidecar::chaos::{ChaosType, ResolveResult};
use factory_sidecar::config::{OtlpProtocol, TelemetryConfig};
use factory_sidecar::error::{BoxError, RequestOutcome};
use factory_sidecar::proxy::body::ProxyBody;
use factory_sidecar::resilience::breaker::CircuitState;
use factory_sidecar::resilience::classify::FailureKind;
use factory_sidecar::telemetry::{ClientResult, Route, Telemetry};
use http::{Method, Request, Response, StatusCode};
use support::rotel::{DataPoint, Rotel};
use tower::{Layer as _, ServiceExt as _};

/// Long enough for a loaded 2-core CI machine; polling returns early.
const WAIT: Duration = Duration::from_secs(20);

fn config(rotel: &Rotel, protocol: OtlpProtocol, interval: Duration) -> TelemetryConfig {
    TelemetryConfig {
        otlp_endpoint: match protocol {
            OtlpProtocol::HttpProtobuf => rotel.http_endpoint(),
            OtlpProtocol::Grpc => rotel.grpc_endpoint(),
        },
        otlp_protocol: protocol,
        export_interval: interval,
        service_name: "factory-sidecar-test".to_owned(),
        traces: true,
    }
}

fn value(expected: f64) -> impl Fn(&DataPoint) -> bool {
    move |p| p.value == Some(expected)
}

async fn every_spec_metric_arrives(protocol: OtlpProtocol) {
    let rotel = Rotel::start().await;
    let telemetry = Telemetry::start(
        &config(&rotel, protocol, Duration::from_millis(200)),
        "factory.test",
    )
    .expect("telemetry starts");
    assert!(telemetry.exports_otlp());
    let m = telemetry.metrics();

    // Known traffic.
    for ms in [20, 40] {
        m.server_request(
            &Method::POST,
            Route::Order,
            StatusCode::OK,
            RequestOutcome::Ok,
            Duration::from_millis(ms),
        );
    }
    m.server_request(
        &Method::POST,
        Route::Order,
        StatusCode::INTERNAL_SERVER_ERROR,
        RequestOutcome::FactoryError,
        Duration::from_millis(5),
    );
    m.client_request(
        &Method::POST,
        ClientResult::Status(StatusCode::OK),
        Duration::from_millis(10),
    );
    m.client_request(
        &Method::POST,
        ClientResult::Status(StatusCode::INTERNAL_SERVER_ERROR),
        Duration::from_millis(3),
    );
    m.client_request(
        &Method::POST,
        ClientResult::Error(FailureKind::Connect),
        Duration::from_millis(1),
    );
    m.retry(FailureKind::Status5xx);
    m.retry(FailureKind::Status5xx);
    m.retry(FailureKind::Connect);
    m.circuit_state(CircuitState::Open);
    m.circuit_transition(CircuitState::Closed, CircuitState::Open);
    for _ in 0..3 {
        m.circuit_rejection();
    }
    m.chaos_detected(ChaosType::Fail);
    m.chaos_active(ChaosType::Fail, true);
    m.chaos_resolution(ResolveResult::Resolved);
    m.chaos_resolution(ResolveResult::Unresolved);

    // What the receiver must have got.
    let ok = [
        ("http.request.method", "POST"),
        ("http.route", "/api/order"),
        ("http.response.status_code", "200"),
        ("sidecar.outcome", "ok"),
    ];
    let p = rotel
        .wait_for_point("http.server.request.duration", &ok, WAIT, |p| {
            p.count == Some(2)
        })
        .await;
    let sum = p.sum.expect("histogram sum");
    assert!((sum - 0.06).abs() < 1e-9, "sum of 20 ms + 40 ms, got {sum}");
    let failed = [
        ("http.request.method", "POST"),
        ("http.route", "/api/order"),
        ("http.response.status_code", "500"),
        ("sidecar.outcome", "factory_error"),
    ];
    rotel
        .wait_for_point("http.server.request.duration", &failed, WAIT, |p| {
            p.count == Some(1)
        })
        .await;

    let addr = ("server.address", "factory.test");
    let method = ("http.request.method", "POST");
    for attrs in [
        vec![method, ("http.response.status_code", "200"), addr],
        vec![
            method,
            ("http.response.status_code", "500"),
            ("error.type", "5xx"),
            addr,
        ],
        vec![method, ("error.type", "connect"), addr],
    ] {
        rotel
            .wait_for_point("http.client.request.duration", &attrs, WAIT, |p| {
                p.count == Some(1)
            })
            .await;
    }

    rotel
        .wait_for_point("sidecar.retries", &[("reason", "5xx")], WAIT, value(2.0))
        .await;
    rotel
        .wait_for_point(
            "sidecar.retries",
            &[("reason", "connect")],
            WAIT,
            value(1.0),
        )
        .await;
    rotel
        .wait_for_point(
            "sidecar.retries",
            &[("reason", "timeout")],
            WAIT,
            value(0.0),
        )
        .await;
    rotel
        .wait_for_point("sidecar.circuit.state", &[], WAIT, value(2.0))
        .await;
    rotel
        .wait_for_point(
            "sidecar.circuit.transitions",
            &[("from", "closed"), ("to", "open")],
            WAIT,
            value(1.0),
        )
        .await;
    rotel
        .wait_for_point("sidecar.circuit.rejections", &[], WAIT, value(3.0))
        .await;
    rotel
        .wait_for_point(
            "sidecar.chaos.detected",
            &[("chaos.type", "fail")],
            WAIT,
            value(1.0),
        )
        .await;
    rotel
        .wait_for_point(
            "sidecar.chaos.detected",
            &[("chaos.type", "badjwt")],
            WAIT,
            value(0.0),
        )
        .await;
    rotel
        .wait_for_point(
            "sidecar.chaos.active",
            &[("chaos.type", "fail")],
            WAIT,
            value(1.0),
        )
        .await;
    rotel
        .wait_for_point(
            "sidecar.chaos.active",
            &[("chaos.type", "throttle")],
            WAIT,
            value(0.0),
        )
        .await;
    rotel
        .wait_for_point(
            "sidecar.chaos.resolutions",
            &[("result", "resolved")],
            WAIT,
            value(1.0),
        )
        .await;
    rotel
        .wait_for_point(
            "sidecar.chaos.resolutions",
            &[("result", "unresolved")],
            WAIT,
            value(1.0),
        )
        .await;

    // The resource names the service and host.
    let out = rotel.output();
    assert!(
        out.contains("service.name: Str(factory-sidecar-test)"),
        "{out}"
    );
    assert!(out.contains("service.version: Str("), "{out}");
    assert!(out.contains("host.name: Str("), "{out}");

    telemetry.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn every_spec_metric_arrives_over_http_protobuf() {
    every_spec_metric_arrives(OtlpProtocol::HttpProtobuf).await;
}

#[tokio::test]
async fn every_spec_metric_arrives_over_grpc() {
    every_spec_metric_arrives(OtlpProtocol::Grpc).await;
}

const CALLER_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CALLER_SPAN: &str = "b7ad6b7169203331";

async fn spans_continue_the_callers_trace(protocol: OtlpProtocol) {
    let rotel = Rotel::start().await;
    let telemetry = Telemetry::start(
        &config(&rotel, protocol, Duration::from_millis(200)),
        "factory.test",
    )
    .expect("telemetry starts");
    let sent = Arc::new(parking_lot::Mutex::new(Vec::<String>::new()));
    let seen = sent.clone();
    // server layer -> client layer -> a "factory" that records traceparent.
    let factory = tower::service_fn(move |req: Request<Bytes>| {
        if let Some(tp) = req
            .headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
        {
            seen.lock().push(tp.to_owned());
        }
        async { Ok::<_, BoxError>(Response::new(ProxyBody::full("{\"jwt\":\"x\"}"))) }
    });
    let stack = telemetry
        .server_layer()
        .layer(telemetry.client_layer().layer(factory));
    let req = Request::post("/api/order")
        .header("traceparent", format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01"))
        .body(Bytes::new())
        .expect("request");
    let res = stack.oneshot(req).await.expect("infallible");
    assert_eq!(res.status(), 200);

    let server = rotel
        .wait_for_span("SERVER POST /api/order", WAIT, |s| {
            s.kind == "SPAN_KIND_SERVER" && s.name == "POST /api/order"
        })
        .await;
    assert_eq!(server.trace_id, CALLER_TRACE);
    assert_eq!(server.parent_id, CALLER_SPAN);
    assert_eq!(server.attr("http.response.status_code"), Some("200"));
    assert_eq!(server.attr("sidecar.outcome"), Some("ok"));
    let client = rotel
        .wait_for_span("CLIENT POST", WAIT, |s| s.kind == "SPAN_KIND_CLIENT")
        .await;
    assert_eq!(client.trace_id, CALLER_TRACE);
    assert_eq!(client.parent_id, server.span_id);
    assert_eq!(client.attr("server.address"), Some("factory.test"));
    assert_eq!(client.attr("http.response.status_code"), Some("200"));
    // The factory saw the try's own context, not the caller's.
    assert_eq!(
        sent.lock().as_slice(),
        [format!("00-{CALLER_TRACE}-{}-01", client.span_id)]
    );
    telemetry.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn spans_continue_the_callers_trace_over_http_protobuf() {
    spans_continue_the_callers_trace(OtlpProtocol::HttpProtobuf).await;
}

#[tokio::test]
async fn spans_continue_the_callers_trace_over_grpc() {
    spans_continue_the_callers_trace(OtlpProtocol::Grpc).await;
}

#[tokio::test]
async fn shutdown_flushes_what_the_interval_has_not_sent_yet() {
    let rotel = Rotel::start().await;
    // An interval the test never reaches: only the final flush can deliver.
    let telemetry = Telemetry::start(
        &config(
            &rotel,
            OtlpProtocol::HttpProtobuf,
            Duration::from_secs(3600),
        ),
        "factory.test",
    )
    .expect("telemetry starts");
    telemetry.metrics().retry(FailureKind::BadJwt);
    telemetry.shutdown(Duration::from_secs(10)).await;
    rotel
        .wait_for_point("sidecar.retries", &[("reason", "badjwt")], WAIT, value(1.0))
        .await;
}

#[tokio::test]
async fn an_unreachable_collector_never_touches_recording_and_shutdown_is_bounded() {
    // Nothing listens on this port once the listener is dropped.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let config = TelemetryConfig {
        otlp_endpoint: format!("http://127.0.0.1:{port}"),
        export_interval: Duration::from_millis(50),
        ..TelemetryConfig::default()
    };
    let telemetry = Telemetry::start(&config, "factory.test").expect("starts without a collector");
    for _ in 0..1000 {
        telemetry.metrics().circuit_rejection();
    }
    // /metrics is unaffected by the failing export.
    let text = telemetry.prometheus_text();
    assert!(
        text.lines()
            .any(|l| l == "sidecar_circuit_rejections_total 1000"),
        "{text}"
    );
    // Bounded by its limit per export task; the outer timeout only turns a
    // hang into a failure.
    tokio::time::timeout(
        Duration::from_secs(60),
        telemetry.shutdown(Duration::from_secs(2)),
    )
    .await
    .expect("shutdown returns although the collector is unreachable");
}
