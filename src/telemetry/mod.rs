//! Telemetry: metrics (OTLP and Prometheus from one set of instruments),
//! traces and logs.
//!
//! - [`metrics`]: the SPEC's instruments; the only place metrics are recorded.
//! - [`layers`]: where the stack is measured (per request, per try).
//! - [`otlp`]: periodic OTLP export of the same instruments, and traces.
//! - [`prometheus`]: the admin `/metrics` text, rendered from the same data.

pub mod layers;
pub mod metrics;
pub mod otlp;
pub mod prometheus;

pub use metrics::{ClientResult, Metrics, Route};
pub use otlp::{Telemetry, TelemetryError};
