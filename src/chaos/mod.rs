//! Chaos intelligence: the reason the sidecar exists. In every incident the
//! fix was one GET of the report link in the factory's answer, found hours
//! late, while that link (which carries the vendor's apiKey) went out to
//! every diner. This module finds the link, follows it by itself, verifies
//! pizza JWTs to catch `badjwt`, keeps a record of chaos episodes, and masks
//! links wherever they would leave the sidecar.
//!
//! # Layout
//! ```text
//! layer.rs     ChaosLayer/ChaosService: only POST /api/order; an abandoned try finishes in a task (background learning)
//! order.rs     one order answer: buffer, inspect, verify, classify, record, follow, mask
//! detect.rs    the pure decision: fail / badjwt / throttle / unknown / healthy
//! inspect.rs   the link(s) and the jwt in a JSON answer, zero-copy
//! link.rs      the support-link shape: lenient to find, strict to follow
//! mask.rs      mask_link, Masked (Display), redact (bodies)
//! jwt.rs       JWKS cache (single flight, rate-limited refresh), memory of recent valid tokens
//! jws.rs       RS256 check of one token: keys parsed once per fetch, header read in place
//! episodes/    the episode registry: cooldown, single flight, metrics, events;
//!              view.rs its /status part, saved.rs episodes kept across restarts
//! persist.rs   the optional episode store hook: episodes kept across restarts
//! resolve.rs   the report-link GET (path only) and what the answer means
//! settings.rs  the [chaos] settings an order reads, changeable by a reload
//! side.rs      side requests through the inner service (path only)
//! buffer.rs    read a body up to a limit, or hand it back untouched
//! handle.rs    Chaos: the shared handle (snapshot, resolve_now, subscribe)
//! admin.rs     Chaos as an admin part (/status section, POST /chaos/resolve)
//! tests.rs     the whole chaos layer over a scripted factory (unit tests)
//! testkit.rs   RSA keys and signed pizzas for tests and benches
//! ```

mod admin;
mod buffer;
pub mod detect;
pub mod episodes;
mod handle;
pub mod inspect;
mod jws;
pub mod jwt;
pub mod layer;
pub mod link;
pub mod mask;
mod order;
pub mod persist;
pub mod resolve;
pub mod settings;
pub mod side;
#[cfg(test)]
pub(crate) mod testkit;
#[cfg(test)]
mod tests;

pub use episodes::{EpisodeEvent, EventKind, How};
pub use handle::{Chaos, ChaosSnapshot, ManualResolve, ResolveNowError};
pub use inspect::{Inspection, inspect};
pub use layer::{ChaosLayer, ChaosService};
pub use link::ReportLink;
pub use mask::{Masked, mask_link, redact};
pub use resolve::FactoryAnswer;

/// What kind of chaos an answer shows, as `chaos.type` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChaosType {
    Fail,
    Throttle,
    BadJwt,
    Unknown,
}

impl ChaosType {
    pub const ALL: [ChaosType; 4] = [
        ChaosType::Fail,
        ChaosType::Throttle,
        ChaosType::BadJwt,
        ChaosType::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ChaosType::Fail => "fail",
            ChaosType::Throttle => "throttle",
            ChaosType::BadJwt => "badjwt",
            ChaosType::Unknown => "unknown",
        }
    }
}

/// What following a report link achieved, as `sidecar.chaos.resolutions` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResolveResult {
    /// The factory said the problem is resolved (or no chaos was running).
    Resolved,
    /// The factory refused (wrong or stale fix code).
    Unresolved,
    /// The factory could not be asked, or answered nonsense.
    Error,
}

impl ResolveResult {
    pub const ALL: [ResolveResult; 3] = [
        ResolveResult::Resolved,
        ResolveResult::Unresolved,
        ResolveResult::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ResolveResult::Resolved => "resolved",
            ResolveResult::Unresolved => "unresolved",
            ResolveResult::Error => "error",
        }
    }
}
