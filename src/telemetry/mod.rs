//! Telemetry: metrics (OTLP and Prometheus from one set of instruments),
//! traces and logs.
//!
//! - [`metrics`]: the instruments of the operator contract (docs/operations.md); the only place metrics are recorded.
//! - [`layers`]: where the stack is measured (per request, per try).
//! - [`access`]: the access log, one line per request at info.
//! - [`otlp`]: periodic OTLP export of the same instruments, and traces.
//! - [`prometheus`]: the admin `/metrics` text, rendered from the same data.
//! - [`trace`]: the tracer handle and W3C `traceparent` extract/inject.
//! - [`logging`]: the `tracing` subscriber (text or JSON).
//! - [`process`]: `process_*` metrics of the standard Prometheus collector.
//! - [`annotations`]: chaos episodes posted to Grafana as annotations.

pub mod access;
pub mod annotations;
pub mod layers;
pub mod logging;
pub mod metrics;
pub mod otlp;
pub mod outcome;
pub mod process;
pub mod prometheus;
pub mod trace;

pub use metrics::{ClientResult, Metrics, Route};
pub use otlp::{Telemetry, TelemetryError};
pub use trace::Tracing;
