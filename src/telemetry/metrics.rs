//! The sidecar's instruments: the documented metrics (docs/operations.md), and nothing else
//! records metrics.
//!
//! One source of truth feeds both exports: OpenTelemetry SDK instruments on
//! one `SdkMeterProvider` with two readers, a pull reader that the admin
//! `/metrics` renders as Prometheus text ([`super::prometheus`]), and, when
//! an endpoint is set, a periodic OTLP reader ([`super::otlp`]). The two can
//! therefore never disagree.
//!
//! Recording is on the hot path. The two per-request histograms are recorded
//! through *bound* instruments (the SDK's `experimental_metrics_bound_instruments`),
//! one per attribute set, kept in [`BoundCache`] under a packed integer key:
//! a record is then a bucket search and a few atomics, where an unbound one
//! hashes every attribute with SipHash and searches the SDK's map (measured
//! with callgrind: about 1 800 instructions a record, 150 bound).
//! Cardinality is bounded: routes are normalised to three values, methods to
//! the standard ones plus `_OTHER`, and no id or key ever becomes an attribute.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{Method, StatusCode};
use opentelemetry::metrics::{
    BoundHistogram, Counter, Gauge, Histogram, Meter, MeterProvider as _,
};
use opentelemetry::{Key, KeyValue};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{
    InstrumentKind, ManualReader, MeterProviderBuilder, Pipeline, SdkMeterProvider, Temporality,
};
use parking_lot::RwLock;

use crate::chaos::{ChaosType, ResolveResult};
use crate::resilience::breaker::CircuitState;
use crate::resilience::classify::FailureKind;
use crate::telemetry::outcome::RequestOutcome;
use crate::telemetry::process::ProcessInstruments;

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
    /// An answer that did not fail the try.
    Status(StatusCode),
    /// An answer that failed the try (5xx, badjwt): recorded with its
    /// status *and* `error.type`, as the HTTP semantic conventions ask for
    /// error statuses.
    FailedAnswer(StatusCode, FailureKind),
    /// No answer.
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
pub(crate) fn method_str(m: &Method) -> &'static str {
    METHODS[method_index(m)]
}

const METHODS: [&str; 10] = [
    "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "TRACE", "CONNECT", "_OTHER",
];

fn method_index(m: &Method) -> usize {
    match *m {
        Method::GET => 0,
        Method::POST => 1,
        Method::PUT => 2,
        Method::DELETE => 3,
        Method::HEAD => 4,
        Method::OPTIONS => 5,
        Method::PATCH => 6,
        Method::TRACE => 7,
        Method::CONNECT => 8,
        _ => 9,
    }
}

/// Hashes the packed `u64` keys of [`BoundCache`] (one multiply: the keys
/// are small integers we make, never outside data).
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// Bound histograms of one instrument, one per attribute set, made on first
/// use. The sets are few (bounded cardinality, see the module docs), so the
/// map stops growing after warm-up and readers never wait.
struct BoundCache {
    histogram: Histogram<f64>,
    bound: RwLock<HashMap<u64, BoundHistogram<f64>, BuildHasherDefault<KeyHasher>>>,
}

impl BoundCache {
    fn new(histogram: Histogram<f64>) -> Self {
        Self {
            histogram,
            bound: RwLock::new(HashMap::default()),
        }
    }

    /// Records `value` for the set `key` stands for; `attributes` builds the
    /// set the first time.
    fn record(&self, key: u64, value: f64, attributes: impl FnOnce() -> Vec<KeyValue>) {
        if let Some(b) = self.bound.read().get(&key) {
            b.record(value);
            return;
        }
        let bound = self.histogram.bind(&attributes());
        bound.record(value);
        self.bound.write().entry(key).or_insert(bound);
    }

    /// Makes the series for `key` exist at count 0 (cumulative readers
    /// export bound series that have not recorded yet).
    fn prebind(&self, key: u64, attributes: Vec<KeyValue>) {
        let mut bound = self.bound.write();
        bound
            .entry(key)
            .or_insert_with(|| self.histogram.bind(&attributes));
    }
}

/// Every instrument of the documented metrics table.
pub struct Metrics {
    provider: SdkMeterProvider,
    pull: Arc<ManualReader>,
    server_address: KeyValue,
    server_duration: BoundCache,
    client_duration: BoundCache,
    retries: Counter<u64>,
    circuit_state: Gauge<i64>,
    circuit_transitions: Counter<u64>,
    circuit_rejections: Counter<u64>,
    chaos_detected: Counter<u64>,
    chaos_active: Gauge<i64>,
    chaos_resolutions: Counter<u64>,
    probe_requests: Counter<u64>,
    probe_duration: Histogram<f64>,
    // Operating the sidecar: config reloads, what build runs, the process.
    config_reloads: Counter<u64>,
    config_last_reload_success: Gauge<i64>,
    config_last_reload_time: Gauge<f64>,
    build_info: Gauge<i64>,
    _process: ProcessInstruments,
    queue: QueueInstruments,
    orders: OrderInstruments,
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
            server_duration: BoundCache::new(histogram(
                "http.server.request.duration",
                "Duration of requests from the pizza service, as answered by the sidecar.",
            )),
            client_duration: BoundCache::new(histogram(
                "http.client.request.duration",
                "Duration of each try to the pizza factory.",
            )),
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
            config_reloads: counter(
                "sidecar.config.reloads",
                "Config reloads (SIGHUP or POST /config/reload), by result.",
            ),
            config_last_reload_success: meter
                .i64_gauge("sidecar.config.last_reload_successful")
                .with_description("1 when the last config reload was applied (or none was asked), 0 when it was refused.")
                .build(),
            config_last_reload_time: meter
                .f64_gauge("sidecar.config.last_reload_success_timestamp")
                .with_unit("s")
                .with_description("When the running config was last applied (start or reload), seconds since the epoch.")
                .build(),
            build_info: meter
                .i64_gauge("factory_sidecar.build_info")
                .with_description("Always 1: the version, git commit, profile and features of this build.")
                .build(),
            _process: ProcessInstruments::register(meter, SystemTime::now()),
            queue: QueueInstruments::new(meter),
            orders: OrderInstruments::new(meter),
            provider,
            pull,
        };
        metrics.start_at_zero();
        metrics
    }

    /// Every series with a known label set exists from the start: gauges
    /// at their resting values, counters and the canonical request series
    /// at 0. A counter series that first appears at its first event hides
    /// that event from `increase()` and `rate()` (they need a sample before
    /// it), so the first circuit opening or chaos episode would read 0.
    fn start_at_zero(&self) {
        self.circuit_state.record(0, &[]);
        for chaos in ChaosType::ALL {
            let kv = [KeyValue::new(CHAOS_TYPE, chaos.as_str())];
            self.chaos_active.record(0, &kv);
            self.chaos_detected.add(0, &kv);
        }
        for result in ResolveResult::ALL {
            self.chaos_resolutions
                .add(0, &[KeyValue::new(RESULT, result.as_str())]);
        }
        for (from, to) in CircuitState::TRANSITIONS {
            self.circuit_transitions.add(
                0,
                &[
                    KeyValue::new(FROM, from.as_str()),
                    KeyValue::new(TO, to.as_str()),
                ],
            );
        }
        self.circuit_rejections.add(0, &[]);
        for kind in FailureKind::ALL {
            self.retries.add(0, &[KeyValue::new(REASON, kind.as_str())]);
        }
        for result in ReloadResult::ALL {
            self.config_reloads
                .add(0, &[KeyValue::new(RESULT, result.as_str())]);
        }
        self.config_last_reload_success.record(1, &[]);
        self.config_last_reload_time
            .record(epoch_seconds(SystemTime::now()), &[]);
        self.build_info.record(
            1,
            &[
                KeyValue::new("version", crate::version::VERSION),
                KeyValue::new("commit", crate::version::COMMIT),
                KeyValue::new("profile", crate::version::PROFILE),
                KeyValue::new("features", crate::version::FEATURES),
                KeyValue::new("rustc", crate::version::RUSTC),
            ],
        );
        // Orders as each outcome answers them (the status it usually has),
        // and tries by result: the series the dashboards divide by.
        let post = method_index(&Method::POST);
        for (outcome, status) in [
            (RequestOutcome::Ok, StatusCode::OK),
            (
                RequestOutcome::FactoryError,
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
            (RequestOutcome::CircuitOpen, StatusCode::SERVICE_UNAVAILABLE),
            (RequestOutcome::Timeout, StatusCode::GATEWAY_TIMEOUT),
            (RequestOutcome::Unreachable, StatusCode::BAD_GATEWAY),
            (RequestOutcome::Rejected, StatusCode::PAYLOAD_TOO_LARGE),
        ] {
            let (key, attrs) = server_series(post, Route::Order, status, outcome);
            self.server_duration.prebind(key, attrs);
        }
        for result in [
            ClientResult::Status(StatusCode::OK),
            ClientResult::FailedAnswer(StatusCode::INTERNAL_SERVER_ERROR, FailureKind::Status5xx),
            ClientResult::FailedAnswer(StatusCode::OK, FailureKind::BadJwt),
            ClientResult::Error(FailureKind::Connect),
            ClientResult::Error(FailureKind::Timeout),
        ] {
            let (key, attrs) = self.client_series(post, result);
            self.client_duration.prebind(key, attrs);
        }
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

    /// A handle on the provider (its readers stop when the last one drops).
    pub fn provider(&self) -> SdkMeterProvider {
        self.provider.clone()
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
        let method = method_index(method);
        let key = server_key(method, route, status, outcome);
        self.server_duration.record(key, elapsed.as_secs_f64(), || {
            server_series(method, route, status, outcome).1
        });
    }

    /// `http.client.request.duration`: one per try to the factory.
    pub fn client_request(&self, method: &Method, result: ClientResult, elapsed: Duration) {
        let index = method_index(method);
        let key = client_key(index, result);
        self.client_duration.record(key, elapsed.as_secs_f64(), || {
            self.client_series(index, result).1
        });
    }

    /// The key and attributes of a client series.
    fn client_series(&self, method: usize, result: ClientResult) -> (u64, Vec<KeyValue>) {
        let (status, kind) = result.parts();
        let mut set = vec![KeyValue::new(METHOD, METHODS[method])];
        set.extend(status.map(|s| KeyValue::new(STATUS, i64::from(s.as_u16()))));
        set.extend(kind.map(|k| KeyValue::new(ERROR_TYPE, k.as_str())));
        set.push(self.server_address.clone());
        (client_key(method, result), set)
    }

    /// The `server.address` attribute (the factory's host), for spans.
    pub fn server_address(&self) -> &KeyValue {
        &self.server_address
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

    /// `sidecar.config.reloads`, and the last-reload gauges (success, and
    /// the time of the last applied config) for alerting on a reload that
    /// left the file and the running config apart.
    pub fn config_reload(&self, result: ReloadResult, at: SystemTime) {
        self.config_reloads
            .add(1, &[KeyValue::new(RESULT, result.as_str())]);
        let applied = result == ReloadResult::Applied;
        self.config_last_reload_success
            .record(i64::from(applied), &[]);
        if applied {
            self.config_last_reload_time.record(epoch_seconds(at), &[]);
        }
    }

    /// `sidecar.probe.requests` and `sidecar.probe.duration`.
    pub fn probe(&self, ok: bool, elapsed: Duration) {
        let result = KeyValue::new(RESULT, if ok { "ok" } else { "failed" });
        self.probe_requests.add(1, std::slice::from_ref(&result));
        self.probe_duration
            .record(elapsed.as_secs_f64(), std::slice::from_ref(&result));
    }
}

/// The packed key of a server series (see [`BoundCache`]).
fn server_key(method: usize, route: Route, status: StatusCode, outcome: RequestOutcome) -> u64 {
    (method as u64)
        | (route as u64) << 8
        | u64::from(status.as_u16()) << 16
        | (outcome as u64) << 32
}

/// The key and attributes of a server series.
fn server_series(
    method: usize,
    route: Route,
    status: StatusCode,
    outcome: RequestOutcome,
) -> (u64, Vec<KeyValue>) {
    (
        server_key(method, route, status, outcome),
        vec![
            KeyValue::new(METHOD, METHODS[method]),
            KeyValue::new(ROUTE, route.as_str()),
            KeyValue::new(STATUS, i64::from(status.as_u16())),
            KeyValue::new(OUTCOME, outcome.as_str()),
        ],
    )
}

/// The packed key of a client series.
fn client_key(method: usize, result: ClientResult) -> u64 {
    let (status, kind) = result.parts();
    (method as u64)
        | status.map_or(0, |s| u64::from(s.as_u16())) << 16
        | kind.map_or(0, |k| k as u64 + 1) << 32
}

impl ClientResult {
    fn parts(self) -> (Option<StatusCode>, Option<FailureKind>) {
        match self {
            ClientResult::Status(s) => (Some(s), None),
            ClientResult::FailedAnswer(s, kind) => (Some(s), Some(kind)),
            ClientResult::Error(kind) => (None, Some(kind)),
        }
    }
}

/// How a config reload ended, as `sidecar.config.reloads` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReloadResult {
    /// The new config runs.
    Applied,
    /// The file (or the environment) has errors: the old config runs on.
    Invalid,
    /// A key changed that only a restart can apply: the old config runs on.
    NeedsRestart,
}

impl ReloadResult {
    pub const ALL: [ReloadResult; 3] = [
        ReloadResult::Applied,
        ReloadResult::Invalid,
        ReloadResult::NeedsRestart,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReloadResult::Applied => "applied",
            ReloadResult::Invalid => "invalid",
            ReloadResult::NeedsRestart => "needs_restart",
        }
    }
}

fn epoch_seconds(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

// ---- async orders (`[queue]`): every instrument of the queue, in one block ----

/// How a replayed order ended, as `sidecar.queue.replayed` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplayResult {
    /// The factory made it; its answer is stored.
    Made,
    /// The replay did not make it (retried later, or the factory's final refusal stored).
    Failed,
    /// Dropped unreplayed: its `ttl` passed while it was queued.
    Expired,
    /// Given up after `dead_letter_after` failed replays.
    DeadLetter,
}

impl ReplayResult {
    pub const ALL: [ReplayResult; 4] = [
        ReplayResult::Made,
        ReplayResult::Failed,
        ReplayResult::Expired,
        ReplayResult::DeadLetter,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReplayResult::Made => "made",
            ReplayResult::Failed => "failed",
            ReplayResult::Expired => "expired",
            ReplayResult::DeadLetter => "dead_letter",
        }
    }
}

/// Why async orders are not accepted, as `sidecar.queue.async_off` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AsyncOffReason {
    /// The store could not be opened (corrupt file, wrong permissions, ...).
    StoreUnavailable,
    /// A write failed for lack of space.
    DiskFull,
    /// A write failed otherwise.
    StoreError,
    /// The Redis server cannot be reached.
    RedisUnreachable,
}

impl AsyncOffReason {
    pub const ALL: [AsyncOffReason; 4] = [
        AsyncOffReason::StoreUnavailable,
        AsyncOffReason::DiskFull,
        AsyncOffReason::StoreError,
        AsyncOffReason::RedisUnreachable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AsyncOffReason::StoreUnavailable => "store_unavailable",
            AsyncOffReason::DiskFull => "disk_full",
            AsyncOffReason::StoreError => "store_error",
            AsyncOffReason::RedisUnreachable => "redis_unreachable",
        }
    }
}

struct QueueInstruments {
    depth: Gauge<i64>,
    oldest_age: Gauge<f64>,
    replayed: Counter<u64>,
    async_off: Gauge<i64>,
}

impl QueueInstruments {
    /// Every series exists from start, at 0.
    fn new(meter: &Meter) -> Self {
        let q = QueueInstruments {
            depth: meter
                .i64_gauge("sidecar.queue.depth")
                .with_description("Async orders queued, waiting to be replayed.")
                .build(),
            oldest_age: meter
                .f64_gauge("sidecar.queue.oldest_age")
                .with_unit("s")
                .with_description("Age of the oldest queued async order (0 when none).")
                .build(),
            replayed: meter
                .u64_counter("sidecar.queue.replayed")
                .with_description("Queued async orders replayed or dropped, by result.")
                .build(),
            async_off: meter
                .i64_gauge("sidecar.queue.async_off")
                .with_description("1 while async orders are not accepted, by reason.")
                .build(),
        };
        q.depth.record(0, &[]);
        q.oldest_age.record(0.0, &[]);
        for r in ReplayResult::ALL {
            q.replayed.add(0, &[KeyValue::new(RESULT, r.as_str())]);
        }
        for r in AsyncOffReason::ALL {
            q.async_off.record(0, &[KeyValue::new(REASON, r.as_str())]);
        }
        q
    }
}

impl Metrics {
    /// `sidecar.queue.depth` and `sidecar.queue.oldest_age`.
    pub fn queue_gauges(&self, depth: u64, oldest_age: Duration) {
        self.queue
            .depth
            .record(i64::try_from(depth).unwrap_or(i64::MAX), &[]);
        self.queue.oldest_age.record(oldest_age.as_secs_f64(), &[]);
    }

    /// `sidecar.queue.replayed`.
    pub fn queue_replayed(&self, result: ReplayResult) {
        self.queue
            .replayed
            .add(1, &[KeyValue::new(RESULT, result.as_str())]);
    }

    /// `sidecar.queue.async_off`: 1 for `off`'s reason, 0 for the others.
    pub fn queue_async_off(&self, off: Option<AsyncOffReason>) {
        for r in AsyncOffReason::ALL {
            self.queue.async_off.record(
                i64::from(off == Some(r)),
                &[KeyValue::new(REASON, r.as_str())],
            );
        }
    }
}

// ---- Orders with patience (`[orders]`): hedges, parked orders, waits. ----

/// Bucket boundaries in seconds for how long an order waited: from a slow
/// try just past `attempt_timeout` to the longest patience (280 s).
const WAIT_BUCKETS: [f64; 13] = [
    1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 90.0, 120.0, 180.0, 300.0,
];
const HEDGE_WON: &str = "won";
const HEDGE_LOST: &str = "lost";

/// `sidecar.hedges`, `sidecar.orders.parked`, `sidecar.orders.wait`.
struct OrderInstruments {
    hedges: Counter<u64>,
    parked: Gauge<i64>,
    wait: Histogram<f64>,
}

impl OrderInstruments {
    fn new(meter: &Meter) -> Self {
        let orders = OrderInstruments {
            hedges: meter
                .u64_counter("sidecar.hedges")
                .with_description(
                    "Hedged tries (one more try beside a slow one), by whether theirs was the answer.",
                )
                .build(),
            parked: meter
                .i64_gauge("sidecar.orders.parked")
                .with_description("Orders parked, waiting for the factory to answer again.")
                .build(),
            wait: meter
                .f64_histogram("sidecar.orders.wait")
                .with_unit("s")
                .with_description(
                    "How long orders that waited (parked or on a slow try) took, by outcome.",
                )
                .with_boundaries(WAIT_BUCKETS.to_vec())
                .build(),
        };
        for result in [HEDGE_WON, HEDGE_LOST] {
            orders.hedges.add(0, &[KeyValue::new(RESULT, result)]);
        }
        orders.parked.record(0, &[]);
        orders
    }
}

impl Metrics {
    /// `sidecar.hedges`: of one order's hedges, `won` gave its answer.
    pub fn hedges(&self, won: u32, lost: u32) {
        let h = &self.orders.hedges;
        if won > 0 {
            h.add(u64::from(won), &[KeyValue::new(RESULT, HEDGE_WON)]);
        }
        if lost > 0 {
            h.add(u64::from(lost), &[KeyValue::new(RESULT, HEDGE_LOST)]);
        }
    }

    /// `sidecar.orders.parked`: orders parked now.
    pub fn orders_parked(&self, parked: usize) {
        self.orders
            .parked
            .record(i64::try_from(parked).unwrap_or(i64::MAX), &[]);
    }

    /// `sidecar.orders.wait`: an order that waited was answered.
    pub fn order_wait(&self, outcome: RequestOutcome, waited: Duration) {
        self.orders.wait.record(
            waited.as_secs_f64(),
            &[KeyValue::new(OUTCOME, outcome.as_str())],
        );
    }
}

// ---- End of the orders block. ----

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

#[cfg(test)]
mod tests {
    use super::*;

    fn count_line(text: &str, labels: &str) -> Option<u64> {
        let prefix = format!("{labels} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn each_attribute_set_has_its_own_bound_series() {
        let m = Metrics::new("factory");
        let d = Duration::from_millis(1);
        let failed =
            ClientResult::FailedAnswer(StatusCode::INTERNAL_SERVER_ERROR, FailureKind::Status5xx);
        for _ in 0..3 {
            m.client_request(
                &Method::POST,
                ClientResult::Status(StatusCode::INTERNAL_SERVER_ERROR),
                d,
            );
        }
        m.client_request(&Method::POST, failed, d);
        m.client_request(&Method::POST, ClientResult::Error(FailureKind::Connect), d);
        m.client_request(&Method::GET, ClientResult::Error(FailureKind::Connect), d);
        m.server_request(
            &Method::POST,
            Route::Order,
            StatusCode::OK,
            RequestOutcome::Ok,
            d,
        );
        m.server_request(
            &Method::POST,
            Route::Order,
            StatusCode::OK,
            RequestOutcome::FactoryError,
            d,
        );
        m.server_request(
            &Method::POST,
            Route::Verify,
            StatusCode::OK,
            RequestOutcome::Ok,
            d,
        );
        let text = m.prometheus_text();
        let client = "http_client_request_duration_seconds_count";
        let server = "http_server_request_duration_seconds_count";
        for (series, want) in [
            (
                format!(
                    "{client}{{http_request_method=\"POST\",http_response_status_code=\"500\",server_address=\"factory\"}}"
                ),
                3,
            ),
            (
                format!(
                    "{client}{{error_type=\"5xx\",http_request_method=\"POST\",http_response_status_code=\"500\",server_address=\"factory\"}}"
                ),
                1,
            ),
            (
                format!(
                    "{client}{{error_type=\"connect\",http_request_method=\"POST\",server_address=\"factory\"}}"
                ),
                1,
            ),
            (
                format!(
                    "{client}{{error_type=\"connect\",http_request_method=\"GET\",server_address=\"factory\"}}"
                ),
                1,
            ),
            (
                format!(
                    "{server}{{http_request_method=\"POST\",http_response_status_code=\"200\",http_route=\"/api/order\",sidecar_outcome=\"ok\"}}"
                ),
                1,
            ),
            (
                format!(
                    "{server}{{http_request_method=\"POST\",http_response_status_code=\"200\",http_route=\"/api/order\",sidecar_outcome=\"factory_error\"}}"
                ),
                1,
            ),
            (
                format!(
                    "{server}{{http_request_method=\"POST\",http_response_status_code=\"200\",http_route=\"/api/order/verify\",sidecar_outcome=\"ok\"}}"
                ),
                1,
            ),
        ] {
            assert_eq!(
                count_line(&text, &series),
                Some(want),
                "{series} in:\n{text}"
            );
        }
    }
}
