//! The sidecar's instruments: the SPEC's metrics table, and nothing else
//! records metrics.
//!
//! One source of truth feeds both exports: OpenTelemetry SDK instruments on
//! one `SdkMeterProvider` with two readers, a pull reader that the admin
//! `/metrics` renders as Prometheus text ([`super::prometheus`]), and, when
//! an endpoint is set, a periodic OTLP reader ([`super::otlp`]). The two can
//! therefore never disagree.
//!
//! Recording is on the hot path, so attribute sets are built from
//! `&'static str` keys and values (no allocation); the SDK aggregates them.
//! Cardinality is bounded: routes are normalised to three values, methods to
//! the standard ones plus `_OTHER`, and no id or key ever becomes an attribute.

use std::sync::{Arc, Weak};
use std::time::Duration;

use http::{Method, StatusCode};
use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter, MeterProvider as _};
use opentelemetry::{Key, KeyValue};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{
    InstrumentKind, ManualReader, MeterProviderBuilder, Pipeline, SdkMeterProvider, Temporality,
};

use crate::chaos::{ChaosType, ResolveResult};
use crate::error::RequestOutcome;
use crate::resilience::breaker::CircuitState;
use crate::resilience::classify::FailureKind;

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

/// Bucket boundaries in seconds: sub-millisecond proxy overhead up to the
/// factory's 32-second throttle.
const DURATION_BUCKETS: [f64; 19] = [
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

const METHOD: Key = Key::from_static_str("http.request.method");
const ROUTE: Key = Key::from_static_str("http.route");
const STATUS: Key = Key::from_static_str("http.response.status_code");
const OUTCOME: Key = Key::from_static_str("sidecar.outcome");
const ERROR_TYPE: Key = Key::from_static_str("error.type");
const SERVER_ADDRESS: Key = Key::from_static_str("server.address");
const REASON: Key = Key::from_static_str("reason");
const FROM: Key = Key::from_static_str("from");
const TO: Key = Key::from_static_str("to");
const CHAOS_TYPE: Key = Key::from_static_str("chaos.type");
const RESULT: Key = Key::from_static_str("result");

/// The semantic-conventions name of a method: the standard ones, else `_OTHER`.
fn method_str(m: &Method) -> &'static str {
    match *m {
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

/// Every instrument of the SPEC's metrics table.
pub struct Metrics {
    provider: SdkMeterProvider,
    pull: Arc<ManualReader>,
    server_address: KeyValue,
    server_duration: Histogram<f64>,
    client_duration: Histogram<f64>,
    retries: Counter<u64>,
    circuit_state: Gauge<i64>,
    circuit_transitions: Counter<u64>,
    circuit_rejections: Counter<u64>,
    chaos_detected: Counter<u64>,
    chaos_active: Gauge<i64>,
    chaos_resolutions: Counter<u64>,
    probe_requests: Counter<u64>,
    probe_duration: Histogram<f64>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("server_address", &self.server_address.value)
            .finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new("factory")
    }
}

impl Metrics {
    /// Instruments for a factory at `server_address`, readable through
    /// `/metrics` only (no OTLP).
    pub fn new(server_address: impl Into<String>) -> Metrics {
        Self::with_provider(server_address, SdkMeterProvider::builder())
    }

    /// Instruments on a provider that may carry more readers (OTLP) and a
    /// resource; the Prometheus pull reader is added here.
    pub fn with_provider(
        server_address: impl Into<String>,
        builder: MeterProviderBuilder,
    ) -> Metrics {
        let pull = Arc::new(ManualReader::builder().build());
        let provider = builder.with_reader(SharedReader(pull.clone())).build();
        let meter = provider.meter("factory-sidecar");
        Self::instruments(provider, pull, server_address.into(), &meter)
    }

    fn instruments(
        provider: SdkMeterProvider,
        pull: Arc<ManualReader>,
        server_address: String,
        meter: &Meter,
    ) -> Metrics {
        let histogram = |name: &'static str, description: &'static str| {
            meter
                .f64_histogram(name)
                .with_unit("s")
                .with_description(description)
                .with_boundaries(DURATION_BUCKETS.to_vec())
                .build()
        };
        let counter = |name: &'static str, description: &'static str| {
            meter
                .u64_counter(name)
                .with_description(description)
                .build()
        };
        let metrics = Metrics {
            server_address: KeyValue::new(SERVER_ADDRESS, server_address),
            server_duration: histogram(
                "http.server.request.duration",
                "Duration of requests from the pizza service, as answered by the sidecar.",
            ),
            client_duration: histogram(
                "http.client.request.duration",
                "Duration of each try to the pizza factory.",
            ),
            retries: counter(
                "sidecar.retries",
                "Tries repeated after a failed try, by reason.",
            ),
            circuit_state: meter
                .i64_gauge("sidecar.circuit.state")
                .with_description("Circuit breaker state: 0 closed, 1 half-open, 2 open.")
                .build(),
            circuit_transitions: counter(
                "sidecar.circuit.transitions",
                "Circuit breaker state changes.",
            ),
            circuit_rejections: counter(
                "sidecar.circuit.rejections",
                "Requests answered at once because the circuit was open.",
            ),
            chaos_detected: counter(
                "sidecar.chaos.detected",
                "Chaos episodes detected, by type.",
            ),
            chaos_active: meter
                .i64_gauge("sidecar.chaos.active")
                .with_description("1 while a chaos episode of this type is open.")
                .build(),
            chaos_resolutions: counter(
                "sidecar.chaos.resolutions",
                "Report links followed, by what the factory answered.",
            ),
            probe_requests: counter(
                "sidecar.probe.requests",
                "Synthetic probe orders, by result.",
            ),
            probe_duration: histogram(
                "sidecar.probe.duration",
                "Duration of synthetic probe orders.",
            ),
            provider,
            pull,
        };
        // Gauges start at their resting values so dashboards show them at once.
        metrics.circuit_state.record(0, &[]);
        for chaos in ChaosType::ALL {
            metrics
                .chaos_active
                .record(0, &[KeyValue::new(CHAOS_TYPE, chaos.as_str())]);
        }
        metrics
    }

    /// Collects the current values (for the Prometheus text).
    pub fn collect(&self) -> Result<ResourceMetrics, opentelemetry_sdk::error::OTelSdkError> {
        let mut rm = ResourceMetrics::default();
        self.pull.collect(&mut rm)?;
        Ok(rm)
    }

    /// The current values as Prometheus text exposition.
    pub fn prometheus_text(&self) -> String {
        match self.collect() {
            Ok(rm) => super::prometheus::render(&rm),
            Err(e) => format!("# metrics unavailable: {e}\n"),
        }
    }

    /// Flushes (a final OTLP export) and stops the readers.
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.force_flush() {
            tracing::warn!(error = %e, "final metrics export failed");
        }
        let _ = self.provider.shutdown();
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
        self.server_duration.record(
            elapsed.as_secs_f64(),
            &[
                KeyValue::new(METHOD, method_str(method)),
                KeyValue::new(ROUTE, route.as_str()),
                KeyValue::new(STATUS, i64::from(status.as_u16())),
                KeyValue::new(OUTCOME, outcome.as_str()),
            ],
        );
    }

    /// `http.client.request.duration`: one per try to the factory.
    pub fn client_request(&self, method: &Method, result: ClientResult, elapsed: Duration) {
        let outcome = match result {
            ClientResult::Status(s) => KeyValue::new(STATUS, i64::from(s.as_u16())),
            ClientResult::Error(kind) => KeyValue::new(ERROR_TYPE, kind.as_str()),
        };
        self.client_duration.record(
            elapsed.as_secs_f64(),
            &[
                KeyValue::new(METHOD, method_str(method)),
                outcome,
                self.server_address.clone(),
            ],
        );
    }

    /// `sidecar.retries`.
    pub fn retry(&self, reason: FailureKind) {
        self.retries
            .add(1, &[KeyValue::new(REASON, reason.as_str())]);
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
                KeyValue::new(FROM, from.as_str()),
                KeyValue::new(TO, to.as_str()),
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
            .add(1, &[KeyValue::new(CHAOS_TYPE, chaos.as_str())]);
    }

    /// `sidecar.chaos.active`.
    pub fn chaos_active(&self, chaos: ChaosType, active: bool) {
        self.chaos_active.record(
            i64::from(active),
            &[KeyValue::new(CHAOS_TYPE, chaos.as_str())],
        );
    }

    /// `sidecar.chaos.resolutions`.
    pub fn chaos_resolution(&self, result: ResolveResult) {
        self.chaos_resolutions
            .add(1, &[KeyValue::new(RESULT, result.as_str())]);
    }

    /// `sidecar.probe.requests` and `sidecar.probe.duration`.
    pub fn probe(&self, ok: bool, elapsed: Duration) {
        let result = KeyValue::new(RESULT, if ok { "ok" } else { "failed" });
        self.probe_requests.add(1, std::slice::from_ref(&result));
        self.probe_duration
            .record(elapsed.as_secs_f64(), std::slice::from_ref(&result));
    }
}

/// Lets the provider own a reader the admin endpoint also holds.
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
