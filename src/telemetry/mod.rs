//! Telemetry: metrics (OTLP and Prometheus from one set of instruments),
//! traces, logs, Grafana annotations.
//!
//! | module          | what it does                                                    |
//! |-----------------|-----------------------------------------------------------------|
//! | [`metrics`]     | the SPEC's instruments (OTel SDK), the one source of truth       |
//! | [`prometheus`]  | a collection rendered as Prometheus text for `GET /metrics`     |
//! | [`otlp`]        | OTLP exporters (http/protobuf or gRPC) and their tokio tasks    |
//! | [`trace`]       | tracer handle, W3C `traceparent` extract/inject                 |
//! | [`server`]      | `ServerTelemetryLayer`: server span, request duration, counts   |
//! | [`client`]      | `ClientTelemetryLayer`: client span and duration per try        |
//! | [`logging`]     | the `tracing` subscriber (text or JSON)                         |
//! | [`annotations`] | chaos episodes posted to Grafana as annotations                 |
//! | [`grafana`]     | the metric names the shipped dashboard and alerts query         |
//!
//! [`Telemetry::start`] builds it all from `[telemetry]`; without an OTLP
//! endpoint nothing is exported, no task runs, and the layers cost a branch
//! beyond recording the metrics `/metrics` shows.

pub mod annotations;
pub mod client;
pub mod grafana;
pub mod logging;
pub mod metrics;
pub mod otlp;
pub mod prometheus;
pub mod server;
pub mod trace;

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry_sdk::Resource;

use crate::config::TelemetryConfig;

pub use client::{ClientTelemetry, ClientTelemetryLayer};
pub use metrics::{ClientResult, Metrics, Route};
pub use otlp::TelemetryError;
pub use server::{RequestCounts, ServerTelemetry, ServerTelemetryLayer};
pub use trace::Tracing;

/// What the OTLP resource says about this process.
#[derive(Debug, Clone)]
pub struct ResourceInfo {
    pub service_name: String,
}

impl Default for ResourceInfo {
    fn default() -> Self {
        ResourceInfo {
            service_name: TelemetryConfig::default().service_name,
        }
    }
}

/// The resource: `service.name` (config, itself overridden by
/// `OTEL_SERVICE_NAME`), `service.version`, `host.name`, plus
/// `OTEL_RESOURCE_ATTRIBUTES` (which may set `host.name` itself).
pub fn resource(info: &ResourceInfo) -> Resource {
    // `builder()` includes the environment detector (OTEL_RESOURCE_ATTRIBUTES)
    // and the SDK's telemetry.sdk.* attributes.
    let base = Resource::builder().build();
    let host_key = opentelemetry::Key::from_static_str("host.name");
    let mut extra = vec![KeyValue::new("service.version", env!("CARGO_PKG_VERSION"))];
    if base.get(&host_key).is_none() {
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        if !host.is_empty() {
            extra.push(KeyValue::new(host_key, host));
        }
    }
    Resource::builder()
        .with_service_name(info.service_name.clone())
        .with_attributes(extra)
        .build()
}

/// Owns the providers and export tasks; hands out the instruments, the
/// tracer and the tower layers.
#[derive(Debug)]
pub struct Telemetry {
    metrics: Arc<Metrics>,
    counts: Arc<RequestCounts>,
    tracing: Tracing,
    exports: otlp::Exports,
}

impl Telemetry {
    /// Starts telemetry from `[telemetry]`. With `otlp_endpoint` set this
    /// spawns the export tasks, so it must run inside a tokio runtime.
    /// `server_address` is the factory's host (`server.address`).
    pub fn start(
        config: &TelemetryConfig,
        server_address: impl Into<String>,
    ) -> Result<Telemetry, TelemetryError> {
        let resource = resource(&ResourceInfo {
            service_name: config.service_name.clone(),
        });
        let metrics = Arc::new(Metrics::with_resource(server_address, resource.clone()));
        let (exports, tracing) = otlp::Exports::start(config, metrics.clone(), resource)?;
        Ok(Telemetry {
            metrics,
            counts: Arc::new(RequestCounts::default()),
            tracing,
            exports,
        })
    }

    /// No OTLP, no traces: the instruments and `/metrics` only.
    pub fn disabled(server_address: impl Into<String>) -> Telemetry {
        Telemetry {
            metrics: Arc::new(Metrics::new(server_address)),
            counts: Arc::new(RequestCounts::default()),
            tracing: Tracing::disabled(),
            exports: otlp::Exports::none(),
        }
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    pub fn request_counts(&self) -> Arc<RequestCounts> {
        self.counts.clone()
    }

    pub fn tracing(&self) -> Tracing {
        self.tracing.clone()
    }

    /// The outermost layer (see `lib.rs`).
    pub fn server_layer(&self) -> ServerTelemetryLayer {
        ServerTelemetryLayer::new(
            self.metrics.clone(),
            self.counts.clone(),
            self.tracing.clone(),
        )
    }

    /// The per-try layer, below the breaker.
    pub fn client_layer(&self) -> ClientTelemetryLayer {
        ClientTelemetryLayer::new(self.metrics.clone(), self.tracing.clone())
    }

    /// The admin `/metrics` body ([`prometheus::CONTENT_TYPE`]).
    pub fn prometheus_text(&self) -> String {
        self.metrics.prometheus_text()
    }

    /// A renderer for `AdminState::metrics`.
    pub fn prometheus_renderer(&self) -> Box<dyn Fn() -> String + Send + Sync> {
        let metrics = self.metrics.clone();
        Box::new(move || metrics.prometheus_text())
    }

    /// Whether metrics go to an OTLP endpoint.
    pub fn exports_otlp(&self) -> bool {
        self.exports.is_active()
    }

    /// Flushes: one last metric export and the spans still queued, each
    /// bounded by `limit`; then stops the export tasks. Idempotent.
    pub async fn shutdown(&self, limit: Duration) {
        // The instruments stay readable: `/metrics` works until the process ends.
        self.exports.shutdown(limit).await;
    }
}
