//! Chaos intelligence (skeleton: inspection, episodes, resolve and JWT
//! verification land with the chaos issue).

/// What kind of chaos an answer shows, as `chaos.type` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
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
    pub fn as_str(self) -> &'static str {
        match self {
            ResolveResult::Resolved => "resolved",
            ResolveResult::Unresolved => "unresolved",
            ResolveResult::Error => "error",
        }
    }
}
