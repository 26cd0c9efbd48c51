//! Telemetry: metrics (OTLP and Prometheus from one set of instruments),
//! traces and logs.

pub mod metrics;

pub use metrics::{ClientResult, Metrics, Route};
