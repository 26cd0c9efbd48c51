//! The `sidecar.outcome` of a whole request: a label for metrics and logs.
//!
//! Only the vocabulary lives here; which answer means which outcome is
//! decided where answers are made ([`crate::error`], `RequestOutcome::of`),
//! so the metrics do not depend on the error module.

/// The `sidecar.outcome` metric attribute of a whole request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestOutcome {
    Ok,
    FactoryError,
    CircuitOpen,
    Timeout,
    Unreachable,
    Rejected,
}

impl RequestOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestOutcome::Ok => "ok",
            RequestOutcome::FactoryError => "factory_error",
            RequestOutcome::CircuitOpen => "circuit_open",
            RequestOutcome::Timeout => "timeout",
            RequestOutcome::Unreachable => "unreachable",
            RequestOutcome::Rejected => "rejected",
        }
    }
}
