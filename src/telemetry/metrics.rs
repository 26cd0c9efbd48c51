//! The sidecar's instruments (skeleton: the API every layer records through;
//! the OpenTelemetry implementation lands with the observability issue).

use std::time::Duration;

use http::{Method, StatusCode};

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

/// Every instrument of the SPEC's metrics table.
#[derive(Debug, Default)]
pub struct Metrics {}

impl Metrics {
    /// Instruments for a factory at `server_address` (the `server.address` attribute).
    pub fn new(server_address: impl Into<String>) -> Metrics {
        let _ = server_address.into();
        Metrics {}
    }

    /// `http.server.request.duration`: one per request from the service.
    pub fn server_request(
        &self,
        _method: &Method,
        _route: Route,
        _status: StatusCode,
        _outcome: RequestOutcome,
        _elapsed: Duration,
    ) {
    }

    /// `http.client.request.duration`: one per try to the factory.
    pub fn client_request(&self, _method: &Method, _result: ClientResult, _elapsed: Duration) {}

    /// `sidecar.retries`.
    pub fn retry(&self, _reason: FailureKind) {}

    /// `sidecar.circuit.state`.
    pub fn circuit_state(&self, _state: CircuitState) {}

    /// `sidecar.circuit.transitions`.
    pub fn circuit_transition(&self, _from: CircuitState, _to: CircuitState) {}

    /// `sidecar.circuit.rejections`.
    pub fn circuit_rejection(&self) {}

    /// `sidecar.chaos.detected`.
    pub fn chaos_detected(&self, _chaos: ChaosType) {}

    /// `sidecar.chaos.active`.
    pub fn chaos_active(&self, _chaos: ChaosType, _active: bool) {}

    /// `sidecar.chaos.resolutions`.
    pub fn chaos_resolution(&self, _result: ResolveResult) {}
}
