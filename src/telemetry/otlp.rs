//! OTLP export: the exporters (http/protobuf over the hyper client, or
//! gRPC over tonic) and the two tokio tasks that feed them.
//!
//! Metrics: every `export_interval` the task collects the one
//! [`Metrics`] reader (the same collection `/metrics` renders) and exports
//! it. Traces: spans end into a bounded channel ([`ChannelProcessor`]); the
//! task exports them in batches of up to 512, or every `export_interval`.
//!
//! Why own tasks instead of the SDK's `PeriodicReader` / `BatchSpanProcessor`:
//! the default ones run on their own thread and panic with "there is no
//! reactor running" with the hyper and tonic clients; the async-runtime
//! variants fix that but flush and shut down by *blocking* the calling thread
//! until a task on the runtime answers, which deadlocks a current-thread
//! runtime (every `#[tokio::test]`), and a second reader would aggregate
//! every measurement twice. Here nothing ever blocks: recording is in
//! memory, export happens on the task, `shutdown` is `async`.
//!
//! Failures are logged rate-limited (the first one, then at most one line a
//! minute with a count, then "recovered"); a request never waits for, or
//! fails because of, an export. Metrics are cumulative, so an export lost
//! to a collector outage is made good by the next one.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry::InstrumentationScope;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::trace::{SdkTracerProvider, Span, SpanData, SpanExporter, SpanProcessor};
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use super::metrics::{Metrics, SCOPE};
use super::trace::Tracing;
use crate::config::{OtlpProtocol, TelemetryConfig};

/// Telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("telemetry.otlp_endpoint {endpoint:?} is not a usable URL: {reason}")]
    Endpoint { endpoint: String, reason: String },
    #[error(
        "telemetry.otlp_endpoint {0:?}: gRPC over TLS is not built in; use otlp_protocol = \"http/protobuf\" for an https endpoint, or a plain-text collector"
    )]
    GrpcTls(String),
    #[error("cannot build the OTLP {signal} exporter: {source}")]
    Exporter {
        signal: &'static str,
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    #[error("cannot build the TLS client for OTLP: {0}")]
    Tls(#[source] rustls::Error),
    #[error("OTLP export needs a running tokio runtime")]
    NoRuntime,
}

/// Spans waiting for export beyond this are dropped (and counted).
const SPAN_QUEUE: usize = 4096;
/// Spans per export call.
const SPAN_BATCH: usize = 512;
/// At most one "still failing" line per this period per signal.
const FAILURE_LOG_EVERY: Duration = Duration::from_secs(60);

/// Where each signal goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    pub metrics: String,
    pub traces: String,
}

impl Endpoints {
    /// From `otlp_endpoint`: for http/protobuf a base URL gets the signal
    /// paths `/v1/metrics` and `/v1/traces` (a URL already ending in one of
    /// them, as `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` does, is taken as the
    /// base plus that path); for gRPC only scheme and authority count.
    pub fn resolve(endpoint: &str, protocol: OtlpProtocol) -> Result<Endpoints, TelemetryError> {
        let bad = |reason: &str| TelemetryError::Endpoint {
            endpoint: endpoint.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: http::Uri = endpoint
            .trim()
            .parse()
            .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
        let scheme = uri
            .scheme_str()
            .ok_or_else(|| bad("no scheme (http:// or https://)"))?;
        if scheme != "http" && scheme != "https" {
            return Err(bad("the scheme must be http or https"));
        }
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        match protocol {
            OtlpProtocol::Grpc => {
                if scheme == "https" {
                    return Err(TelemetryError::GrpcTls(endpoint.to_owned()));
                }
                let url = format!("{scheme}://{authority}");
                Ok(Endpoints {
                    metrics: url.clone(),
                    traces: url,
                })
            }
            OtlpProtocol::HttpProtobuf => {
                let path = uri.path().trim_end_matches('/');
                let base = path
                    .strip_suffix("/v1/metrics")
                    .or_else(|| path.strip_suffix("/v1/traces"))
                    .unwrap_or(path);
                let base = format!("{scheme}://{authority}{base}");
                Ok(Endpoints {
                    metrics: format!("{base}/v1/metrics"),
                    traces: format!("{base}/v1/traces"),
                })
            }
        }
    }
}

/// The running export tasks (none without an endpoint).
pub struct Exports {
    metrics: Mutex<Option<Task>>,
    traces: Mutex<Option<Task>>,
    /// Kept to end spans' processor on shutdown.
    tracer_provider: Option<SdkTracerProvider>,
    active: bool,
}

impl fmt::Debug for Exports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exports")
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

struct Task {
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

impl Exports {
    pub(crate) fn none() -> Exports {
        Exports {
            metrics: Mutex::new(None),
            traces: Mutex::new(None),
            tracer_provider: None,
            active: false,
        }
    }

    pub(crate) fn is_active(&self) -> bool {
        self.active
    }

    /// Starts the export tasks `config` asks for.
    pub(crate) fn start(
        config: &TelemetryConfig,
        metrics: Arc<Metrics>,
        resource: Resource,
    ) -> Result<(Exports, Tracing), TelemetryError> {
        if config.otlp_endpoint.trim().is_empty() {
            return Ok((Exports::none(), Tracing::disabled()));
        }
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| TelemetryError::NoRuntime)?;
        let endpoints = Endpoints::resolve(&config.otlp_endpoint, config.otlp_protocol)?;
        let timeout = export_timeout(config.export_interval);

        let metric_exporter = metric_exporter(&endpoints.metrics, config.otlp_protocol, timeout)?;
        let (stop, stop_rx) = watch::channel(false);
        let handle = runtime.spawn(run_metric_export(
            metrics,
            metric_exporter,
            config.export_interval,
            timeout,
            stop_rx,
        ));
        let metric_task = Task { stop, handle };

        let (trace_task, tracer_provider, tracing) = if config.traces {
            let mut exporter = span_exporter(&endpoints.traces, config.otlp_protocol, timeout)?;
            exporter.set_resource(&resource);
            let (tx, rx) = mpsc::channel(SPAN_QUEUE);
            let dropped = Arc::new(AtomicU64::new(0));
            let provider = SdkTracerProvider::builder()
                .with_resource(resource)
                .with_span_processor(ChannelProcessor {
                    tx,
                    dropped: dropped.clone(),
                })
                .build();
            let (stop, stop_rx) = watch::channel(false);
            let handle = runtime.spawn(run_span_export(
                rx,
                exporter,
                config.export_interval,
                timeout,
                dropped,
                stop_rx,
            ));
            let tracer = provider.tracer_with_scope(
                InstrumentationScope::builder(SCOPE)
                    .with_version(env!("CARGO_PKG_VERSION"))
                    .build(),
            );
            (
                Some(Task { stop, handle }),
                Some(provider),
                Tracing::enabled(tracer),
            )
        } else {
            (None, None, Tracing::disabled())
        };
        tracing::info!(
            metrics = %endpoints.metrics,
            traces = %if config.traces { endpoints.traces.as_str() } else { "off" },
            protocol = ?config.otlp_protocol,
            interval = ?config.export_interval,
            "OTLP export on"
        );
        Ok((
            Exports {
                metrics: Mutex::new(Some(metric_task)),
                traces: Mutex::new(trace_task),
                tracer_provider,
                active: true,
            },
            tracing,
        ))
    }

    /// Final flush of both signals, each bounded by `limit`, then the tasks end.
    pub(crate) async fn shutdown(&self, limit: Duration) {
        if let Some(p) = &self.tracer_provider {
            // Ends the processor (non-blocking); already shut down is fine.
            let _ = p.shutdown();
        }
        let tasks = [self.metrics.lock().take(), self.traces.lock().take()];
        for task in tasks.into_iter().flatten() {
            let _ = task.stop.send(true);
            let abort = task.handle.abort_handle();
            if tokio::time::timeout(limit, task.handle).await.is_err() {
                tracing::warn!(?limit, "OTLP final flush did not finish in time; abandoned");
                abort.abort();
            }
        }
    }
}

/// Each export gets at most this long: the interval, within 2..10 s.
fn export_timeout(interval: Duration) -> Duration {
    interval.clamp(Duration::from_secs(2), Duration::from_secs(10))
}

/// An HTTP client for OTLP that speaks http and https (rustls, webpki roots).
fn http_client(
    timeout: Duration,
) -> Result<opentelemetry_http::hyper::HyperClient<super::annotations::Connector>, TelemetryError> {
    let connector = super::annotations::connector().map_err(TelemetryError::Tls)?;
    Ok(opentelemetry_http::hyper::HyperClient::new(
        connector, timeout, None,
    ))
}

fn metric_exporter(
    endpoint: &str,
    protocol: OtlpProtocol,
    timeout: Duration,
) -> Result<opentelemetry_otlp::MetricExporter, TelemetryError> {
    let built = match protocol {
        OtlpProtocol::HttpProtobuf => opentelemetry_otlp::MetricExporter::builder()
            .with_http()
            .with_http_client(http_client(timeout)?)
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint)
            .with_timeout(timeout)
            .build(),
        OtlpProtocol::Grpc => opentelemetry_otlp::MetricExporter::builder()
            .with_tonic()
            .with_protocol(Protocol::Grpc)
            .with_endpoint(endpoint)
            .with_timeout(timeout)
            .build(),
    };
    built.map_err(|source| TelemetryError::Exporter {
        signal: "metrics",
        source,
    })
}

fn span_exporter(
    endpoint: &str,
    protocol: OtlpProtocol,
    timeout: Duration,
) -> Result<opentelemetry_otlp::SpanExporter, TelemetryError> {
    let built = match protocol {
        OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(http_client(timeout)?)
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint)
            .with_timeout(timeout)
            .build(),
        OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_protocol(Protocol::Grpc)
            .with_endpoint(endpoint)
            .with_timeout(timeout)
            .build(),
    };
    built.map_err(|source| TelemetryError::Exporter {
        signal: "traces",
        source,
    })
}

/// Rate-limited export failure log for one signal.
#[derive(Debug)]
pub(crate) struct FailureLog {
    signal: &'static str,
    failing_since: Option<Instant>,
    last_line: Option<Instant>,
    suppressed: u64,
}

impl FailureLog {
    pub(crate) fn new(signal: &'static str) -> FailureLog {
        FailureLog {
            signal,
            failing_since: None,
            last_line: None,
            suppressed: 0,
        }
    }

    /// Records one export result; returns whether a line was logged.
    pub(crate) fn record(&mut self, result: &Result<(), String>) -> bool {
        let now = Instant::now();
        match result {
            Ok(()) => {
                if let Some(since) = self.failing_since.take() {
                    tracing::info!(
                        signal = self.signal,
                        failed_for = ?now.saturating_duration_since(since),
                        "OTLP export recovered"
                    );
                    self.suppressed = 0;
                    self.last_line = None;
                    return true;
                }
                false
            }
            Err(e) => {
                if self.failing_since.is_none() {
                    self.failing_since = Some(now);
                }
                let due = self
                    .last_line
                    .is_none_or(|t| now.saturating_duration_since(t) >= FAILURE_LOG_EVERY);
                if due {
                    tracing::warn!(
                        signal = self.signal,
                        error = %e,
                        failures_not_logged = self.suppressed,
                        "OTLP export failed (next report in a minute at most; data is kept and sent with the next export)"
                    );
                    self.last_line = Some(now);
                    self.suppressed = 0;
                    true
                } else {
                    self.suppressed += 1;
                    false
                }
            }
        }
    }
}

async fn run_metric_export(
    metrics: Arc<Metrics>,
    exporter: opentelemetry_otlp::MetricExporter,
    interval: Duration,
    timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval_at(Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut log = FailureLog::new("metrics");
    let mut rm = ResourceMetrics::default();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        export_metrics_once(&metrics, &exporter, &mut rm, timeout, &mut log).await;
    }
    // The final flush: what was recorded since the last tick.
    export_metrics_once(&metrics, &exporter, &mut rm, timeout, &mut log).await;
    let _ = exporter.shutdown();
}

async fn export_metrics_once(
    metrics: &Metrics,
    exporter: &opentelemetry_otlp::MetricExporter,
    rm: &mut ResourceMetrics,
    timeout: Duration,
    log: &mut FailureLog,
) {
    let result = match metrics.collect_into(rm) {
        Err(e) => Err(e.to_string()),
        Ok(()) => match tokio::time::timeout(timeout, exporter.export(rm)).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer within {timeout:?}")),
        },
    };
    log.record(&result);
}

/// Ends spans into the export task's queue; never blocks, drops (and
/// counts) when the queue is full.
#[derive(Debug)]
struct ChannelProcessor {
    tx: mpsc::Sender<SpanData>,
    dropped: Arc<AtomicU64>,
}

impl SpanProcessor for ChannelProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.tx.try_send(span).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        // The task exports on its own schedule; `Telemetry::shutdown` flushes.
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

async fn run_span_export(
    mut rx: mpsc::Receiver<SpanData>,
    exporter: opentelemetry_otlp::SpanExporter,
    interval: Duration,
    timeout: Duration,
    dropped: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval_at(Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut log = FailureLog::new("traces");
    let mut batch: Vec<SpanData> = Vec::with_capacity(SPAN_BATCH);
    let mut reported_drops = 0u64;
    loop {
        tokio::select! {
            span = rx.recv() => match span {
                Some(span) => {
                    batch.push(span);
                    if batch.len() < SPAN_BATCH {
                        continue;
                    }
                }
                None => break,
            },
            _ = ticker.tick() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        export_spans(&exporter, &mut batch, timeout, &mut log).await;
        let drops = dropped.load(Ordering::Relaxed);
        if drops > reported_drops {
            tracing::warn!(
                dropped = drops - reported_drops,
                "span export queue full; spans dropped"
            );
            reported_drops = drops;
        }
    }
    // Final flush: everything already ended.
    while let Ok(span) = rx.try_recv() {
        batch.push(span);
        if batch.len() >= SPAN_BATCH {
            export_spans(&exporter, &mut batch, timeout, &mut log).await;
        }
    }
    export_spans(&exporter, &mut batch, timeout, &mut log).await;
    let _ = exporter.shutdown();
}

async fn export_spans(
    exporter: &opentelemetry_otlp::SpanExporter,
    batch: &mut Vec<SpanData>,
    timeout: Duration,
    log: &mut FailureLog,
) {
    if batch.is_empty() {
        return;
    }
    let spans = std::mem::replace(batch, Vec::with_capacity(SPAN_BATCH));
    let result = match tokio::time::timeout(timeout, exporter.export(spans)).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    };
    log.record(&result);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_endpoints_get_signal_paths() {
        let e =
            Endpoints::resolve("http://127.0.0.1:4318", OtlpProtocol::HttpProtobuf).expect("valid");
        assert_eq!(e.metrics, "http://127.0.0.1:4318/v1/metrics");
        assert_eq!(e.traces, "http://127.0.0.1:4318/v1/traces");
        let e = Endpoints::resolve("https://otel.example/otlp/", OtlpProtocol::HttpProtobuf)
            .expect("valid");
        assert_eq!(e.metrics, "https://otel.example/otlp/v1/metrics");
        let e = Endpoints::resolve("http://c:4318/v1/metrics", OtlpProtocol::HttpProtobuf)
            .expect("valid");
        assert_eq!(e.metrics, "http://c:4318/v1/metrics");
        assert_eq!(e.traces, "http://c:4318/v1/traces");
    }

    #[test]
    fn grpc_endpoints_keep_scheme_and_authority() {
        let e = Endpoints::resolve("http://127.0.0.1:4317/", OtlpProtocol::Grpc).expect("valid");
        assert_eq!(e.metrics, "http://127.0.0.1:4317");
        assert!(matches!(
            Endpoints::resolve("https://c:4317", OtlpProtocol::Grpc),
            Err(TelemetryError::GrpcTls(_))
        ));
        assert!(Endpoints::resolve("c:4317", OtlpProtocol::Grpc).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn export_failures_are_logged_at_most_once_a_minute() {
        let mut log = FailureLog::new("metrics");
        let fail = Err("refused".to_owned());
        assert!(log.record(&fail), "first failure is logged");
        for _ in 0..5 {
            tokio::time::advance(Duration::from_secs(10)).await;
            assert!(!log.record(&fail), "repeats within a minute are counted");
        }
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(log.record(&fail), "a minute later, one more line");
        assert!(log.record(&Ok(())), "recovery is logged");
        assert!(!log.record(&Ok(())), "success is quiet");
        assert!(log.record(&fail), "a new outage is logged at once");
    }

    #[tokio::test]
    async fn without_an_endpoint_nothing_starts() {
        let metrics = Arc::new(Metrics::new("f"));
        let (exports, tracing) = Exports::start(
            &TelemetryConfig::default(),
            metrics,
            Resource::builder_empty().build(),
        )
        .expect("no endpoint is fine");
        assert!(!exports.is_active());
        assert!(!tracing.is_enabled());
        exports.shutdown(Duration::from_millis(10)).await;
    }

    #[test]
    fn an_endpoint_needs_a_runtime() {
        let config = TelemetryConfig {
            otlp_endpoint: "http://127.0.0.1:4318".into(),
            ..TelemetryConfig::default()
        };
        let metrics = Arc::new(Metrics::new("f"));
        assert!(matches!(
            Exports::start(&config, metrics, Resource::builder_empty().build()),
            Err(TelemetryError::NoRuntime)
        ));
    }
}
