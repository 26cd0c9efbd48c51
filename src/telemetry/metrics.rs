//! The sidecar's instruments: every metric of the SPEC's table, as
//! OpenTelemetry SDK instruments.
//!
//! These instruments are the one source of truth. They aggregate into a
//! single [`ManualReader`]; both exports read from it: the admin `/metrics`
//! renders a collection as Prometheus text ([`super::prometheus`]) and, when
//! an OTLP endpoint is configured, a tokio task exports a collection every
//! `export_interval` ([`super::otlp`]). One aggregation means a measurement
//! costs one map lookup, and both exports can never disagree.
//!
//! Recording is on the request path, so every method builds its attributes
//! as a stack array of `&'static str` / integer values: no allocation, one
//! read-locked hash lookup in the SDK per measurement. Attribute values are
//! bounded by construction (normalised routes, enums, known methods).

use std::fmt;
use std::sync::{Arc, Weak};
use std::time::Duration;

use http::{Method, StatusCode};
use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter, MeterProvider as _};
use opentelemetry::{InstrumentationScope, KeyValue, Value};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{
    InstrumentKind, ManualReader, Pipeline, SdkMeterProvider, Temporality,
};

use crate::chaos::{ChaosType, ResolveResult};
use crate::error::RequestOutcome;
use crate::resilience::breaker::CircuitState;
use crate::resilience::classify::FailureKind;

/// Metric names (OTel semantic conventions; SPEC.md's table).
pub mod names {
    pub const SERVER_DURATION: &str = "http.server.request.duration";
    pub const CLIENT_DURATION: &str = "http.client.request.duration";
    pub const RETRIES: &str = "sidecar.retries";
    pub const CIRCUIT_STATE: &str = "sidecar.circuit.state";
    pub const CIRCUIT_TRANSITIONS: &str = "sidecar.circuit.transitions";
    pub const CIRCUIT_REJECTIONS: &str = "sidecar.circuit.rejections";
    pub const CHAOS_DETECTED: &str = "sidecar.chaos.detected";
    pub const CHAOS_ACTIVE: &str = "sidecar.chaos.active";
    pub const CHAOS_RESOLUTIONS: &str = "sidecar.chaos.resolutions";

    /// Every name above, for tests and the dashboard check.
    pub const ALL: [&str; 9] = [
        SERVER_DURATION,
        CLIENT_DURATION,
        RETRIES,
        CIRCUIT_STATE,
        CIRCUIT_TRANSITIONS,
        CIRCUIT_REJECTIONS,
        CHAOS_DETECTED,
        CHAOS_ACTIVE,
        CHAOS_RESOLUTIONS,
    ];
}

/// Attribute keys.
pub mod attr {
    pub const HTTP_REQUEST_METHOD: &str = "http.request.method";
    pub const HTTP_ROUTE: &str = "http.route";
    pub const HTTP_RESPONSE_STATUS_CODE: &str = "http.response.status_code";
    pub const SIDECAR_OUTCOME: &str = "sidecar.outcome";
    pub const ERROR_TYPE: &str = "error.type";
    pub const SERVER_ADDRESS: &str = "server.address";
    pub const REASON: &str = "reason";
    pub const FROM: &str = "from";
    pub const TO: &str = "to";
    pub const CHAOS_TYPE: &str = "chaos.type";
    pub const RESULT: &str = "result";
}

/// `error.type` of a try the stack dropped before it ended (the overall
/// deadline passed, or the diner hung up).
pub const ERROR_TYPE_CANCELLED: &str = "cancelled";
/// `error.type` of a try that failed for a reason the classifier does not name.
pub const ERROR_TYPE_OTHER: &str = "_OTHER";

/// Histogram bucket boundaries in seconds: a proxy answers in well under a
/// millisecond when it fails fast, a healthy factory in tens of
/// milliseconds, chaos `throttle` after about 32 s; tries stop at
/// `attempt_timeout` (5 s) and requests at `request_timeout` (20 s).
pub const DURATION_BOUNDARIES: [f64; 19] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 30.0, 45.0, 60.0,
];

/// The instrumentation scope name of every instrument.
pub const SCOPE: &str = "factory-sidecar";

/// `http.route`, normalised so the attribute set stays small.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    Order,
    Verify,
    Other,
}

impl Route {
    pub fn of(path: &str) -> Route {
        match path {
            "/api/order" => Route::Order,
            "/api/order/verify" => Route::Verify,
            _ => Route::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Route::Order => "/api/order",
            Route::Verify => "/api/order/verify",
            Route::Other => "other",
        }
    }
}

/// How one try to the factory ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientResult {
    Status(StatusCode),
    Error(FailureKind),
}

/// `http.request.method` as the semantic conventions want it: the known
/// methods by name, anything else `_OTHER` (an attacker must not be able to
/// grow the attribute set by inventing methods).
pub fn method_attr(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "_OTHER",
    }
}

/// Metrics could not be collected (the provider was shut down).
#[derive(Debug, thiserror::Error)]
#[error("collecting metrics failed: {0}")]
pub struct CollectError(String);

/// Every instrument of the SPEC's metrics table.
pub struct Metrics {
    server_duration: Histogram<f64>,
    client_duration: Histogram<f64>,
    retries: Counter<u64>,
    circuit_state: Gauge<i64>,
    circuit_transitions: Counter<u64>,
    circuit_rejections: Counter<u64>,
    chaos_detected: Counter<u64>,
    chaos_active: Gauge<i64>,
    chaos_resolutions: Counter<u64>,
    /// `server.address`, built once (an `Arc<str>` inside: cloning it per
    /// try is a reference count, not a copy).
    server_address: KeyValue,
    reader: Arc<ManualReader>,
    resource: Resource,
    /// Kept alive only: dropping the provider disconnects the reader.
    _provider: SdkMeterProvider,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics")
            .field("server_address", &self.server_address.value.as_str())
            .finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new("")
    }
}

impl Metrics {
    /// Instruments for a factory at `server_address` (the `server.address`
    /// attribute), with a minimal resource and no OTLP export: for tests and
    /// for a sidecar without an endpoint (`/metrics` still works).
    pub fn new(server_address: impl Into<String>) -> Metrics {
        Metrics::with_resource(
            server_address,
            super::resource(&super::ResourceInfo::default()),
        )
    }

    /// Instruments whose collections carry `resource` (`service.name`, ...).
    pub fn with_resource(server_address: impl Into<String>, resource: Resource) -> Metrics {
        let reader = Arc::new(ManualReader::builder().build());
        let provider = SdkMeterProvider::builder()
            .with_reader(SharedReader(reader.clone()))
            .with_resource(resource.clone())
            .build();
        let scope = InstrumentationScope::builder(SCOPE)
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        let meter = provider.meter_with_scope(scope);
        let server_address: Arc<str> = Arc::from(server_address.into());
        let metrics = Metrics {
            server_duration: duration_histogram(
                &meter,
                names::SERVER_DURATION,
                "Duration of HTTP server requests: one per request from the pizza service.",
            ),
            client_duration: duration_histogram(
                &meter,
                names::CLIENT_DURATION,
                "Duration of HTTP client requests: one per try to the pizza factory.",
            ),
            retries: meter
                .u64_counter(names::RETRIES)
                .with_unit("{retry}")
                .with_description(
                    "Tries sent again after a failed one, by the failure that caused it.",
                )
                .build(),
            circuit_state: meter
                .i64_gauge(names::CIRCUIT_STATE)
                .with_unit("{state}")
                .with_description("Circuit breaker state: 0 closed, 1 half-open, 2 open.")
                .build(),
            circuit_transitions: meter
                .u64_counter(names::CIRCUIT_TRANSITIONS)
                .with_unit("{transition}")
                .with_description("Circuit breaker state changes.")
                .build(),
            circuit_rejections: meter
                .u64_counter(names::CIRCUIT_REJECTIONS)
                .with_unit("{request}")
                .with_description(
                    "Requests refused without asking the factory because the circuit was open.",
                )
                .build(),
            chaos_detected: meter
                .u64_counter(names::CHAOS_DETECTED)
                .with_unit("{episode}")
                .with_description("Chaos episodes detected in factory answers, by chaos type.")
                .build(),
            chaos_active: meter
                .i64_gauge(names::CHAOS_ACTIVE)
                .with_unit("{episode}")
                .with_description(
                    "1 while a chaos episode of this type is active and not resolved.",
                )
                .build(),
            chaos_resolutions: meter
                .u64_counter(names::CHAOS_RESOLUTIONS)
                .with_unit("{attempt}")
                .with_description("Attempts to end chaos by following its report link, by result.")
                .build(),
            server_address: KeyValue::new(attr::SERVER_ADDRESS, Value::from(server_address)),
            reader,
            resource,
            _provider: provider,
        };
        metrics.seed();
        metrics
    }

    /// Gives every bounded series its starting value, so `/metrics` shows the
    /// circuit closed and zero counts from the first scrape: dashboards and
    /// alerts then see a series before the first incident, and `rate()`
    /// counts that incident's first increment.
    fn seed(&self) {
        self.circuit_state(CircuitState::Closed);
        self.circuit_rejections.add(0, &[]);
        for chaos in ChaosType::ALL {
            self.chaos_detected
                .add(0, &[KeyValue::new(attr::CHAOS_TYPE, chaos.as_str())]);
            self.chaos_active(chaos, false);
        }
        for result in [
            ResolveResult::Resolved,
            ResolveResult::Unresolved,
            ResolveResult::Error,
        ] {
            self.chaos_resolutions
                .add(0, &[KeyValue::new(attr::RESULT, result.as_str())]);
        }
        for reason in [
            FailureKind::Connect,
            FailureKind::Timeout,
            FailureKind::Status5xx,
            FailureKind::BadJwt,
        ] {
            self.retries
                .add(0, &[KeyValue::new(attr::REASON, reason.as_str())]);
        }
    }

    /// `http.server.request.duration`: one per request from the service.
    pub fn server_request(
        &self,
        method: &Method,
        route: Route,
        status: StatusCode,
        outcome: RequestOutcome,
        elapsed: Duration,
    ) {
        let attrs = [
            KeyValue::new(attr::HTTP_REQUEST_METHOD, method_attr(method)),
            KeyValue::new(attr::HTTP_ROUTE, route.as_str()),
            KeyValue::new(attr::HTTP_RESPONSE_STATUS_CODE, i64::from(status.as_u16())),
            KeyValue::new(attr::SIDECAR_OUTCOME, outcome.as_str()),
        ];
        self.server_duration.record(elapsed.as_secs_f64(), &attrs);
    }

    /// `http.client.request.duration`: one per try to the factory. A 5xx
    /// answer also gets `error.type="5xx"`, so "tries without `error.type`"
    /// is the factory's success count.
    pub fn client_request(&self, method: &Method, result: ClientResult, elapsed: Duration) {
        match result {
            ClientResult::Status(status) => {
                let error = status
                    .is_server_error()
                    .then_some(FailureKind::Status5xx.as_str());
                self.client_try(method, Some(status), error, elapsed);
            }
            ClientResult::Error(kind) => {
                self.client_try(method, None, Some(kind.as_str()), elapsed)
            }
        }
    }

    /// `http.client.request.duration` for a factory answer that the sidecar
    /// judged a failure anyway (a 2xx with an invalid pizza JWT: `badjwt`).
    pub fn client_answer_failed(
        &self,
        method: &Method,
        status: StatusCode,
        kind: FailureKind,
        elapsed: Duration,
    ) {
        self.client_try(method, Some(status), Some(kind.as_str()), elapsed);
    }

    /// `http.client.request.duration` for a try the stack dropped before it
    /// ended (`error.type="cancelled"`): the overall deadline passed or the
    /// diner went away.
    pub fn client_cancelled(&self, method: &Method, elapsed: Duration) {
        self.client_try(method, None, Some(ERROR_TYPE_CANCELLED), elapsed);
    }

    /// `http.client.request.duration` with an `error.type` the failure kinds
    /// do not cover (`_OTHER`).
    pub fn client_other_error(&self, method: &Method, elapsed: Duration) {
        self.client_try(method, None, Some(ERROR_TYPE_OTHER), elapsed);
    }

    fn client_try(
        &self,
        method: &Method,
        status: Option<StatusCode>,
        error: Option<&'static str>,
        elapsed: Duration,
    ) {
        let method = KeyValue::new(attr::HTTP_REQUEST_METHOD, method_attr(method));
        let secs = elapsed.as_secs_f64();
        match (status, error) {
            (Some(s), Some(e)) => self.client_duration.record(
                secs,
                &[
                    method,
                    KeyValue::new(attr::HTTP_RESPONSE_STATUS_CODE, i64::from(s.as_u16())),
                    KeyValue::new(attr::ERROR_TYPE, e),
                    self.server_address.clone(),
                ],
            ),
            (Some(s), None) => self.client_duration.record(
                secs,
                &[
                    method,
                    KeyValue::new(attr::HTTP_RESPONSE_STATUS_CODE, i64::from(s.as_u16())),
                    self.server_address.clone(),
                ],
            ),
            (None, e) => self.client_duration.record(
                secs,
                &[
                    method,
                    KeyValue::new(attr::ERROR_TYPE, e.unwrap_or(ERROR_TYPE_OTHER)),
                    self.server_address.clone(),
                ],
            ),
        }
    }

    /// `sidecar.retries`.
    pub fn retry(&self, reason: FailureKind) {
        self.retries
            .add(1, &[KeyValue::new(attr::REASON, reason.as_str())]);
    }

    /// `sidecar.circuit.state`.
    pub fn circuit_state(&self, state: CircuitState) {
        self.circuit_state.record(state.gauge(), &[]);
    }

    /// `sidecar.circuit.transitions`.
    pub fn circuit_transition(&self, from: CircuitState, to: CircuitState) {
        self.circuit_transitions.add(
            1,
            &[
                KeyValue::new(attr::FROM, from.as_str()),
                KeyValue::new(attr::TO, to.as_str()),
            ],
        );
    }

    /// `sidecar.circuit.rejections`.
    pub fn circuit_rejection(&self) {
        self.circuit_rejections.add(1, &[]);
    }

    /// `sidecar.chaos.detected`.
    pub fn chaos_detected(&self, chaos: ChaosType) {
        self.chaos_detected
            .add(1, &[KeyValue::new(attr::CHAOS_TYPE, chaos.as_str())]);
    }

    /// `sidecar.chaos.active`.
    pub fn chaos_active(&self, chaos: ChaosType, active: bool) {
        self.chaos_active.record(
            i64::from(active),
            &[KeyValue::new(attr::CHAOS_TYPE, chaos.as_str())],
        );
    }

    /// `sidecar.chaos.resolutions`.
    pub fn chaos_resolution(&self, result: ResolveResult) {
        self.chaos_resolutions
            .add(1, &[KeyValue::new(attr::RESULT, result.as_str())]);
    }

    /// One cumulative collection of every instrument (what both exports send).
    pub fn collect(&self) -> Result<ResourceMetrics, CollectError> {
        let mut rm = ResourceMetrics::default();
        self.collect_into(&mut rm)?;
        Ok(rm)
    }

    /// [`Metrics::collect`] into a reused buffer.
    pub fn collect_into(&self, rm: &mut ResourceMetrics) -> Result<(), CollectError> {
        self.reader
            .collect(rm)
            .map_err(|e| CollectError(e.to_string()))
    }

    /// The Prometheus text exposition of every instrument (admin `/metrics`).
    pub fn prometheus_text(&self) -> String {
        match self.collect() {
            Ok(rm) => super::prometheus::render(&rm),
            Err(e) => {
                tracing::warn!(error = %e, "cannot render /metrics");
                String::new()
            }
        }
    }

    /// The `server.address` attribute (spans carry it too).
    pub fn server_address(&self) -> &KeyValue {
        &self.server_address
    }

    /// The resource every collection carries.
    pub fn resource(&self) -> &Resource {
        &self.resource
    }
}

fn duration_histogram(meter: &Meter, name: &'static str, help: &'static str) -> Histogram<f64> {
    meter
        .f64_histogram(name)
        .with_unit("s")
        .with_description(help)
        .with_boundaries(DURATION_BOUNDARIES.to_vec())
        .build()
}

/// The provider owns its readers; this lets [`Metrics`] keep a handle on the
/// one it collects from.
#[derive(Debug)]
struct SharedReader(Arc<ManualReader>);

impl MetricReader for SharedReader {
    fn register_pipeline(&self, pipeline: Weak<Pipeline>) {
        self.0.register_pipeline(pipeline);
    }
    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(rm)
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};

    fn attrs_match(kvs: &mut dyn Iterator<Item = &KeyValue>, want: &[(&str, &str)]) -> bool {
        let got: Vec<(String, String)> = kvs
            .map(|kv| (kv.key.as_str().to_owned(), kv.value.as_str().into_owned()))
            .collect();
        got.len() == want.len()
            && want
                .iter()
                .all(|(k, v)| got.iter().any(|(gk, gv)| gk == k && gv == v))
    }

    /// (count, sum) of the histogram point with exactly these attributes.
    fn histogram(m: &Metrics, name: &str, want: &[(&str, &str)]) -> Option<(u64, f64)> {
        let rm = m.collect().expect("collect");
        for sm in rm.scope_metrics() {
            for metric in sm.metrics().filter(|x| x.name() == name) {
                if let AggregatedMetrics::F64(MetricData::Histogram(h)) = metric.data() {
                    for p in h.data_points() {
                        if attrs_match(&mut p.attributes(), want) {
                            return Some((p.count(), p.sum()));
                        }
                    }
                }
            }
        }
        None
    }

    fn sum_u64(m: &Metrics, name: &str, want: &[(&str, &str)]) -> Option<u64> {
        let rm = m.collect().expect("collect");
        for sm in rm.scope_metrics() {
            for metric in sm.metrics().filter(|x| x.name() == name) {
                if let AggregatedMetrics::U64(MetricData::Sum(s)) = metric.data() {
                    for p in s.data_points() {
                        if attrs_match(&mut p.attributes(), want) {
                            return Some(p.value());
                        }
                    }
                }
            }
        }
        None
    }

    fn gauge_i64(m: &Metrics, name: &str, want: &[(&str, &str)]) -> Option<i64> {
        let rm = m.collect().expect("collect");
        for sm in rm.scope_metrics() {
            for metric in sm.metrics().filter(|x| x.name() == name) {
                if let AggregatedMetrics::I64(MetricData::Gauge(g)) = metric.data() {
                    for p in g.data_points() {
                        if attrs_match(&mut p.attributes(), want) {
                            return Some(p.value());
                        }
                    }
                }
            }
        }
        None
    }

    #[test]
    fn server_request_records_semconv_attributes() {
        let m = Metrics::new("factory.test");
        m.server_request(
            &Method::POST,
            Route::of("/api/order"),
            StatusCode::OK,
            RequestOutcome::Ok,
            Duration::from_millis(250),
        );
        m.server_request(
            &Method::POST,
            Route::Order,
            StatusCode::OK,
            RequestOutcome::Ok,
            Duration::from_millis(750),
        );
        let want = [
            ("http.request.method", "POST"),
            ("http.route", "/api/order"),
            ("http.response.status_code", "200"),
            ("sidecar.outcome", "ok"),
        ];
        let (count, sum) = histogram(&m, names::SERVER_DURATION, &want).expect("point");
        assert_eq!(count, 2);
        assert!((sum - 1.0).abs() < 1e-9, "sum {sum}");
    }

    #[test]
    fn client_tries_carry_status_or_error_type_and_server_address() {
        let m = Metrics::new("factory.test");
        let get = Method::GET;
        m.client_request(
            &get,
            ClientResult::Status(StatusCode::OK),
            Duration::from_millis(1),
        );
        m.client_request(
            &get,
            ClientResult::Status(StatusCode::INTERNAL_SERVER_ERROR),
            Duration::from_millis(1),
        );
        m.client_request(
            &get,
            ClientResult::Error(FailureKind::Connect),
            Duration::ZERO,
        );
        m.client_answer_failed(&get, StatusCode::OK, FailureKind::BadJwt, Duration::ZERO);
        m.client_cancelled(&get, Duration::ZERO);
        let addr = ("server.address", "factory.test");
        let meth = ("http.request.method", "GET");
        let ok = [meth, ("http.response.status_code", "200"), addr];
        assert_eq!(
            histogram(&m, names::CLIENT_DURATION, &ok).map(|p| p.0),
            Some(1)
        );
        let five = [
            meth,
            ("http.response.status_code", "500"),
            ("error.type", "5xx"),
            addr,
        ];
        assert_eq!(
            histogram(&m, names::CLIENT_DURATION, &five).map(|p| p.0),
            Some(1)
        );
        let connect = [meth, ("error.type", "connect"), addr];
        assert_eq!(
            histogram(&m, names::CLIENT_DURATION, &connect).map(|p| p.0),
            Some(1)
        );
        let bad = [
            meth,
            ("http.response.status_code", "200"),
            ("error.type", "badjwt"),
            addr,
        ];
        assert_eq!(
            histogram(&m, names::CLIENT_DURATION, &bad).map(|p| p.0),
            Some(1)
        );
        let cancelled = [meth, ("error.type", "cancelled"), addr];
        assert_eq!(
            histogram(&m, names::CLIENT_DURATION, &cancelled).map(|p| p.0),
            Some(1)
        );
    }

    #[test]
    fn counters_and_gauges_start_seeded_and_count() {
        let m = Metrics::new("f");
        assert_eq!(gauge_i64(&m, names::CIRCUIT_STATE, &[]), Some(0));
        assert_eq!(sum_u64(&m, names::CIRCUIT_REJECTIONS, &[]), Some(0));
        assert_eq!(
            sum_u64(&m, names::CHAOS_DETECTED, &[("chaos.type", "badjwt")]),
            Some(0)
        );
        m.retry(FailureKind::Status5xx);
        m.retry(FailureKind::Status5xx);
        m.circuit_state(CircuitState::Open);
        m.circuit_transition(CircuitState::Closed, CircuitState::Open);
        m.circuit_rejection();
        m.chaos_detected(ChaosType::Fail);
        m.chaos_active(ChaosType::Fail, true);
        m.chaos_resolution(ResolveResult::Resolved);
        assert_eq!(sum_u64(&m, names::RETRIES, &[("reason", "5xx")]), Some(2));
        assert_eq!(gauge_i64(&m, names::CIRCUIT_STATE, &[]), Some(2));
        assert_eq!(
            sum_u64(
                &m,
                names::CIRCUIT_TRANSITIONS,
                &[("from", "closed"), ("to", "open")]
            ),
            Some(1)
        );
        assert_eq!(sum_u64(&m, names::CIRCUIT_REJECTIONS, &[]), Some(1));
        assert_eq!(
            sum_u64(&m, names::CHAOS_DETECTED, &[("chaos.type", "fail")]),
            Some(1)
        );
        assert_eq!(
            gauge_i64(&m, names::CHAOS_ACTIVE, &[("chaos.type", "fail")]),
            Some(1)
        );
        assert_eq!(
            gauge_i64(&m, names::CHAOS_ACTIVE, &[("chaos.type", "throttle")]),
            Some(0)
        );
        assert_eq!(
            sum_u64(&m, names::CHAOS_RESOLUTIONS, &[("result", "resolved")]),
            Some(1)
        );
    }

    #[test]
    fn unknown_methods_do_not_grow_the_attribute_set() {
        let m = Method::from_bytes(b"BREW").expect("extension method");
        assert_eq!(method_attr(&m), "_OTHER");
        assert_eq!(method_attr(&Method::PATCH), "PATCH");
    }
}
