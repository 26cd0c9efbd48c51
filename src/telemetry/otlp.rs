//! OTLP export of the metrics (and, with `telemetry.traces`, the spans).
//!
//! The periodic reader runs on tokio (the SDK's default reader thread has no
//! reactor for the hyper client and would panic), beside the pull reader
//! of `/metrics`, on the same instruments. http/protobuf goes through the
//! sidecar's own hyper + rustls client (one TLS stack); grpc through tonic.
//! Export failures are logged at most once a minute and never touch a
//! request: recording only updates in-memory aggregates.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry::KeyValue;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{SdkMeterProvider, Temporality};
use opentelemetry_sdk::runtime;
use opentelemetry_sdk::trace::SdkTracerProvider;

use crate::config::{OtlpProtocol, TelemetryConfig};
use crate::telemetry::metrics::Metrics;
use crate::tls::https_connector;

/// Telemetry could not be set up from the config.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot build the OTLP {signal} exporter for {endpoint}: {source}")]
    Exporter {
        signal: &'static str,
        endpoint: String,
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    #[error("cannot build the OTLP HTTP client: {0}")]
    Client(#[from] crate::tls::TlsError),
}

/// How long the final export on shutdown may take (one export's timeout
/// is at most 10 s).
pub const FLUSH_LIMIT: Duration = Duration::from_secs(12);

/// The metrics (always) and the tracer provider (when traces are exported).
pub struct Telemetry {
    metrics: Arc<Metrics>,
    /// The span exporter's provider (a reload may replace it).
    tracer_provider: parking_lot::Mutex<Option<SdkTracerProvider>>,
    /// The metric exporter the periodic reader calls (a reload may replace
    /// it); `None` without OTLP.
    exporter: Option<Arc<SwapExporter>>,
    /// What the exporters were built from.
    config: parking_lot::Mutex<TelemetryConfig>,
    /// OTLP readers run as tokio tasks (stopping them blocks: see `Drop`).
    exporting: bool,
    shut_down: AtomicBool,
}

impl Telemetry {
    /// Instruments with `/metrics` only: no OTLP.
    pub fn local(server_address: &str) -> Telemetry {
        Telemetry {
            metrics: Arc::new(Metrics::new(server_address)),
            tracer_provider: parking_lot::Mutex::new(None),
            exporter: None,
            config: parking_lot::Mutex::new(TelemetryConfig::default()),
            exporting: false,
            shut_down: AtomicBool::new(false),
        }
    }

    /// Instruments, plus OTLP export when `otlp_endpoint` is set. Must run
    /// inside the tokio runtime (the readers spawn on it).
    pub fn start(
        config: &TelemetryConfig,
        server_address: &str,
    ) -> Result<Telemetry, TelemetryError> {
        if config.otlp_endpoint.is_empty() {
            let local = Self::local(server_address);
            *local.config.lock() = config.clone();
            return Ok(local);
        }
        let resource = resource(config);
        let swap = Arc::new(SwapExporter(ArcSwap::from_pointee(metric_exporter(
            config,
        )?)));
        let exporter = LoggingExporter::new(SharedExporter(Arc::clone(&swap)));
        let reader = opentelemetry_sdk::metrics::periodic_reader_with_async_runtime::PeriodicReader::builder(
            exporter,
            runtime::Tokio,
        )
        .with_interval(config.export_interval)
        .with_timeout(config.export_interval.clamp(Duration::from_secs(1), Duration::from_secs(10)))
        .build();
        let builder = SdkMeterProvider::builder()
            .with_resource(resource.clone())
            .with_reader(reader);
        let metrics = Arc::new(Metrics::with_provider(server_address, builder));

        let tracer_provider = tracer_provider(config, resource)?;
        tracing::info!(
            endpoint = %config.otlp_endpoint,
            protocol = ?config.otlp_protocol,
            interval = ?config.export_interval,
            traces = tracer_provider.is_some(),
            "OTLP export on"
        );
        Ok(Telemetry {
            metrics,
            tracer_provider: parking_lot::Mutex::new(tracer_provider),
            exporter: Some(swap),
            config: parking_lot::Mutex::new(config.clone()),
            exporting: true,
            shut_down: AtomicBool::new(false),
        })
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The tracer for server and client spans, when traces are exported.
    pub fn tracer(&self) -> Option<opentelemetry_sdk::trace::SdkTracer> {
        use opentelemetry::trace::TracerProvider as _;
        self.tracer_provider
            .lock()
            .as_ref()
            .map(|p| p.tracer("factory-sidecar"))
    }

    /// What the telemetry layers trace with: disabled without an endpoint
    /// or with `telemetry.traces = false`.
    pub fn tracing(&self) -> crate::telemetry::Tracing {
        self.tracer().map_or_else(
            crate::telemetry::Tracing::disabled,
            crate::telemetry::Tracing::enabled,
        )
    }

    /// Checks a reloaded `[telemetry]` and builds what it needs (a metric
    /// exporter for a new endpoint or protocol, a tracer provider when
    /// traces are on); nothing changes until [`TelemetryChange::apply`].
    /// Turning OTLP on or off, `export_interval` and `service_name` need a
    /// restart (the periodic reader and the resource are made at start):
    /// `crate::reload` refuses those before asking here.
    pub fn prepare(&self, new: &TelemetryConfig) -> Result<TelemetryChange, TelemetryError> {
        let old = self.config.lock().clone();
        let moved =
            old.otlp_endpoint != new.otlp_endpoint || old.otlp_protocol != new.otlp_protocol;
        let exporter = match &self.exporter {
            Some(_) if moved => Some(metric_exporter(new)?),
            _ => None,
        };
        let traces = if self.exporter.is_some() && (moved || old.traces != new.traces) {
            Some(tracer_provider(new, resource(new))?)
        } else {
            None
        };
        Ok(TelemetryChange {
            config: new.clone(),
            exporter,
            traces,
        })
    }

    /// Final export and stop; called once on shutdown, bounded by
    /// [`FLUSH_LIMIT`].
    ///
    /// The SDK's tokio readers flush by *blocking* the calling thread until
    /// their task has exported; on a runtime worker that task can be stuck
    /// behind the blocked thread (the sidecar hung on SIGTERM), so the
    /// blocking part runs on tokio's blocking pool.
    pub async fn shutdown(&self) {
        self.shut_down.store(true, Ordering::Relaxed);
        let metrics = Arc::clone(&self.metrics);
        let tracer_provider = self.tracer_provider.lock().clone();
        let flush = tokio::task::spawn_blocking(move || {
            metrics.shutdown();
            if let Some(p) = tracer_provider {
                if let Err(e) = p.force_flush() {
                    tracing::warn!(error = %e, "final span export failed");
                }
                let _ = p.shutdown();
            }
        });
        if tokio::time::timeout(FLUSH_LIMIT, flush).await.is_err() {
            tracing::warn!(limit = ?FLUSH_LIMIT, "final telemetry export did not finish in time");
        }
    }
}

/// A checked telemetry change (see [`Telemetry::prepare`]).
pub struct TelemetryChange {
    config: TelemetryConfig,
    exporter: Option<opentelemetry_otlp::MetricExporter>,
    /// `Some(None)`: traces off; `Some(Some(p))`: traces to a new provider.
    traces: Option<Option<SdkTracerProvider>>,
}

impl TelemetryChange {
    /// Swaps the exporters in: the next export goes to the new endpoint
    /// (the cumulative metrics carry on, so nothing is lost or counted
    /// twice); the old span provider flushes and stops in the background.
    /// Returns what the rebuilt stack traces with.
    pub fn apply(self, telemetry: &Telemetry) -> crate::telemetry::Tracing {
        if let (Some(new), Some(swap)) = (self.exporter, &telemetry.exporter) {
            swap.0.store(Arc::new(new));
        }
        if let Some(provider) = self.traces {
            let old = std::mem::replace(&mut *telemetry.tracer_provider.lock(), provider);
            if let Some(old) = old {
                drop(tokio::task::spawn_blocking(move || {
                    let _ = old.force_flush();
                    let _ = old.shutdown();
                }));
            }
        }
        *telemetry.config.lock() = self.config;
        telemetry.tracing()
    }
}

/// The tracer provider `config` asks for: `None` unless traces are on.
fn tracer_provider(
    config: &TelemetryConfig,
    resource: Resource,
) -> Result<Option<SdkTracerProvider>, TelemetryError> {
    if !config.traces || config.otlp_endpoint.is_empty() {
        return Ok(None);
    }
    let exporter = span_exporter(config)?;
    let processor =
        opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
            exporter,
            runtime::Tokio,
        )
        .with_batch_config(span_batch_config(config.export_interval))
        .build();
    Ok(Some(
        SdkTracerProvider::builder()
            .with_resource(resource)
            .with_span_processor(processor)
            .build(),
    ))
}

/// The metric exporter the periodic reader calls, replaceable by a reload.
struct SwapExporter(ArcSwap<opentelemetry_otlp::MetricExporter>);

/// The reader owns its exporter: this hands it a shared [`SwapExporter`].
struct SharedExporter(Arc<SwapExporter>);

impl PushMetricExporter for SharedExporter {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let current = self.0.0.load_full();
        current.export(metrics).await
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.0.load().force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.0.load().shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        Temporality::Cumulative
    }
}

/// Dropped without [`Telemetry::shutdown`] (the sidecar's task cancelled,
/// e.g. by a runtime shutting down), the providers' last references would
/// stop the SDK readers on this thread, and that blocks until the readers'
/// tokio tasks answer: on a runtime thread that is itself dropping those
/// tasks, it blocks for ever. A plain thread takes the last references and
/// stops them instead; it ends when the tasks answer or are dropped.
impl Drop for Telemetry {
    fn drop(&mut self) {
        if !self.exporting || self.shut_down.swap(true, Ordering::Relaxed) {
            return;
        }
        let meter_provider = self.metrics.provider();
        let tracer_provider = self.tracer_provider.lock().take();
        let stop = move || {
            let _ = meter_provider.shutdown();
            if let Some(p) = tracer_provider {
                let _ = p.shutdown();
            }
        };
        if let Err(e) = std::thread::Builder::new()
            .name("otlp-stop".into())
            .spawn(stop)
        {
            tracing::warn!(error = %e, "cannot start a thread to stop the OTLP readers");
        }
    }
}

/// Spans go out every `export_interval` (at most the SDK's 5 s), unless
/// `OTEL_BSP_SCHEDULE_DELAY` says otherwise; the other `OTEL_BSP_*`
/// variables apply as the SDK reads them.
fn span_batch_config(export_interval: Duration) -> opentelemetry_sdk::trace::BatchConfig {
    let builder = opentelemetry_sdk::trace::BatchConfigBuilder::default();
    if std::env::var_os("OTEL_BSP_SCHEDULE_DELAY").is_some() {
        builder.build()
    } else {
        builder
            .with_scheduled_delay(export_interval.min(Duration::from_secs(5)))
            .build()
    }
}

fn resource(config: &TelemetryConfig) -> Resource {
    // The default detectors read OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME.
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    Resource::builder()
        .with_service_name(config.service_name.clone())
        .with_attributes([
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("host.name", host),
        ])
        .build()
}

/// The signal's URL: OTLP/HTTP posts to `<base>/v1/<signal>`; a URL that
/// already names the signal path is used as given.
/// The per-signal URL under `base`. A `base` already naming a signal path
/// (e.g. `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT=http://c:4318/v1/metrics`)
/// is cut back to its root first, so traces do not go to
/// `.../v1/metrics/v1/traces`.
fn signal_url(base: &str, signal: &str) -> String {
    let base = base.trim_end_matches('/');
    let root = ["/v1/metrics", "/v1/traces", "/v1/logs"]
        .iter()
        .find_map(|p| base.strip_suffix(p))
        .unwrap_or(base);
    format!("{root}/v1/{signal}")
}

fn metric_exporter(
    config: &TelemetryConfig,
) -> Result<opentelemetry_otlp::MetricExporter, TelemetryError> {
    let built = match config.otlp_protocol {
        OtlpProtocol::HttpProtobuf => opentelemetry_otlp::MetricExporter::builder()
            .with_http()
            .with_http_client(SidecarHttpClient::new()?)
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(signal_url(&config.otlp_endpoint, "metrics"))
            .with_temporality(Temporality::Cumulative)
            .build(),
        OtlpProtocol::Grpc => opentelemetry_otlp::MetricExporter::builder()
            .with_tonic()
            .with_endpoint(config.otlp_endpoint.clone())
            .with_temporality(Temporality::Cumulative)
            .build(),
    };
    built.map_err(|source| TelemetryError::Exporter {
        signal: "metrics",
        endpoint: config.otlp_endpoint.clone(),
        source,
    })
}

fn span_exporter(
    config: &TelemetryConfig,
) -> Result<opentelemetry_otlp::SpanExporter, TelemetryError> {
    let built = match config.otlp_protocol {
        OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(SidecarHttpClient::new()?)
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(signal_url(&config.otlp_endpoint, "traces"))
            .build(),
        OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(config.otlp_endpoint.clone())
            .build(),
    };
    built.map_err(|source| TelemetryError::Exporter {
        signal: "traces",
        endpoint: config.otlp_endpoint.clone(),
        source,
    })
}

/// Wraps the exporter so failures reach the log, at most once a minute
/// (a collector that is down must not flood the log or be silent).
struct LoggingExporter<E> {
    inner: E,
    last_logged: AtomicU64,
    suppressed: AtomicU64,
}

impl<E> LoggingExporter<E> {
    fn new(inner: E) -> Self {
        Self {
            inner,
            last_logged: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    fn report(&self, e: &opentelemetry_sdk::error::OTelSdkError) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = self.last_logged.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 60
            && self
                .last_logged
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
            tracing::warn!(error = %e, suppressed, "OTLP metrics export failed");
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl<E: PushMetricExporter> PushMetricExporter for LoggingExporter<E> {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let result = self.inner.export(metrics).await;
        if let Err(e) = &result {
            self.report(e);
        }
        result
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}

/// OTLP/HTTP through the sidecar's hyper + rustls client.
#[derive(Debug, Clone)]
struct SidecarHttpClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl SidecarHttpClient {
    fn new() -> Result<Self, crate::tls::TlsError> {
        let connector = https_connector(None, Duration::from_secs(5))?;
        Ok(Self {
            client: Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(2)
                .build(connector),
        })
    }
}

/// Collector answers are tiny; anything bigger is refused.
const MAX_COLLECTOR_ANSWER: usize = 1024 * 1024;

impl opentelemetry_http::HttpClient for SidecarHttpClient {
    fn send_bytes<'a, 'b>(
        &'a self,
        request: http::Request<Bytes>,
    ) -> Pin<
        Box<
            dyn Future<Output = Result<http::Response<Bytes>, opentelemetry_http::HttpError>>
                + Send
                + 'b,
        >,
    >
    where
        'a: 'b,
    {
        Box::pin(async move {
            let req = request.map(Full::new);
            let res = tokio::time::timeout(Duration::from_secs(10), self.client.request(req))
                .await
                .map_err(|_| "OTLP request timed out")??;
            let (parts, body) = res.into_parts();
            let body = Limited::new(body, MAX_COLLECTOR_ANSWER)
                .collect()
                .await?
                .to_bytes();
            Ok(http::Response::from_parts(parts, body))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{Telemetry, signal_url};
    use crate::config::{OtlpProtocol, TelemetryConfig};
    use std::time::Duration;

    /// A runtime shut down while a task still owns the telemetry (a test
    /// ending without `stopped()`, or a cancelled sidecar task) must not
    /// hang: the SDK's readers stop by blocking until their own task
    /// answers, and that task is dropped by the very thread that would be
    /// blocked (CI hung for 90 minutes on this). Run for both protocols and
    /// both orders of the owner and the SDK tasks.
    #[test]
    fn a_runtime_dropped_under_it_never_hangs() {
        for protocol in [OtlpProtocol::HttpProtobuf, OtlpProtocol::Grpc] {
            for owner_first in [false, true] {
                let (done, finished) = std::sync::mpsc::channel();
                std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("runtime");
                    rt.block_on(async move {
                        let config = TelemetryConfig {
                            // Nothing listens on port 1: exports fail fast.
                            otlp_endpoint: "http://127.0.0.1:1".into(),
                            otlp_protocol: protocol,
                            export_interval: Duration::from_secs(3600),
                            traces: true,
                            ..TelemetryConfig::default()
                        };
                        let (tx, rx) = tokio::sync::oneshot::channel::<Telemetry>();
                        if owner_first {
                            tokio::spawn(async move {
                                let _owned = rx.await;
                                std::future::pending::<()>().await
                            });
                        }
                        let t = Telemetry::start(&config, "factory").expect("telemetry");
                        if owner_first {
                            let _ = tx.send(t);
                        } else {
                            tokio::spawn(async move {
                                let _owned = t;
                                std::future::pending::<()>().await
                            });
                        }
                        tokio::task::yield_now().await;
                    });
                    drop(rt);
                    let _ = done.send(());
                });
                assert!(
                    finished.recv_timeout(Duration::from_secs(60)).is_ok(),
                    "runtime drop hung ({protocol:?}, owner first: {owner_first})"
                );
            }
        }
    }

    #[test]
    fn signal_urls() {
        assert_eq!(
            signal_url("http://c:4318", "metrics"),
            "http://c:4318/v1/metrics"
        );
        assert_eq!(
            signal_url("http://c:4318/", "traces"),
            "http://c:4318/v1/traces"
        );
        assert_eq!(
            signal_url("http://c:4318/v1/metrics", "metrics"),
            "http://c:4318/v1/metrics"
        );
        assert_eq!(
            signal_url("http://c:4318/v1/metrics/", "traces"),
            "http://c:4318/v1/traces"
        );
    }
}
