//! What one order answer shows: a kind of chaos, health, or nothing to say.
//! A pure decision, apart from the I/O around it so every rule is tested
//! on its own.
//!
//! | answer                                      | finding            |
//! |---------------------------------------------|--------------------|
//! | 5xx with a report link                      | `fail`             |
//! | 5xx without one, or no answer at all        | `unknown` (outage) |
//! | 2xx whose jwt does not verify               | `badjwt`           |
//! | 2xx with a link, slower than slow_threshold | `throttle`         |
//! | 2xx without a link, jwt not invalid         | healthy            |
//! | fast 2xx with a link and a verified jwt     | healthy            |
//! | 503 "The oven is full." (see below)         | nothing            |
//! | anything else (4xx, fast unverified 2xx with a link) | nothing   |
//!
//! A healthy answer ends open episodes; a 2xx whose jwt could not be
//! checked (JWKS unavailable) still counts as healthy when it has no link,
//! because under badjwt chaos the factory always writes one. A fast 2xx
//! whose jwt verifies is healthy even with a link: the simulator (after the
//! factory's source) writes none then, but the factory's documented answers (docs/factory.md) show one on
//! every successful order, and an answer that is fast and verified is a
//! good pizza either way.
//!
//! The factory answers 503 "Unable to satisfy pizza order. The oven is
//! full." (after 32 s, no link) to an order with no or too many items: the
//! order's fault, not an outage, so it opens no episode.

use std::time::Duration;

use http::StatusCode;

use crate::chaos::ChaosType;
use crate::chaos::jwt::Verdict;

/// The jwt check of a 2xx answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtCheck {
    /// Verification off, not a 2xx, or no `jwt` string in the answer.
    NotChecked,
    Valid,
    Invalid,
    /// The JWKS could not be had: no verdict.
    Unknown,
}

impl From<&Verdict> for JwtCheck {
    fn from(v: &Verdict) -> Self {
        match v {
            Verdict::Valid => JwtCheck::Valid,
            Verdict::Invalid(_) => JwtCheck::Invalid,
            Verdict::Unknown(_) => JwtCheck::Unknown,
        }
    }
}

/// What an answer shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finding {
    Chaos(ChaosType),
    Healthy,
    Nothing,
}

/// Classifies an inspected order answer (see the module table).
pub fn classify(
    status: StatusCode,
    elapsed: Duration,
    has_link: bool,
    jwt: JwtCheck,
    slow_threshold: Duration,
) -> Finding {
    if status.is_server_error() {
        return Finding::Chaos(if has_link {
            ChaosType::Fail
        } else {
            ChaosType::Unknown
        });
    }
    if !status.is_success() {
        return Finding::Nothing;
    }
    if jwt == JwtCheck::Invalid {
        Finding::Chaos(ChaosType::BadJwt)
    } else if has_link && elapsed > slow_threshold {
        Finding::Chaos(ChaosType::Throttle)
    } else if !has_link || jwt == JwtCheck::Valid {
        Finding::Healthy
    } else {
        Finding::Nothing
    }
}

/// The factory's answer to an order with no or too many items: a 503 with
/// this message and no link.
const OVEN_FULL: &[u8] = b"The oven is full.";

/// Whether a factory answer is the oven-full refusal (see the module docs).
pub fn is_oven_full(status: StatusCode, has_link: bool, body: &[u8]) -> bool {
    status == StatusCode::SERVICE_UNAVAILABLE
        && !has_link
        && memchr::memmem::find(body, OVEN_FULL).is_some()
}

/// Classifies an answer that could not be inspected (not JSON, too large,
/// unreadable): only a 5xx says something (an outage: no link seen).
pub fn classify_uninspected(status: StatusCode) -> Finding {
    if status.is_server_error() {
        Finding::Chaos(ChaosType::Unknown)
    } else {
        Finding::Nothing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLOW: Duration = Duration::from_secs(5);
    const FAST: Duration = Duration::from_millis(20);

    fn f(status: u16, elapsed: Duration, link: bool, jwt: JwtCheck) -> Finding {
        classify(
            StatusCode::from_u16(status).expect("status"),
            elapsed,
            link,
            jwt,
            SLOW,
        )
    }

    #[test]
    fn every_row_of_the_table() {
        use JwtCheck::*;
        assert_eq!(
            f(500, FAST, true, NotChecked),
            Finding::Chaos(ChaosType::Fail)
        );
        assert_eq!(
            f(503, FAST, false, NotChecked),
            Finding::Chaos(ChaosType::Unknown)
        );
        assert_eq!(
            f(200, FAST, true, Invalid),
            Finding::Chaos(ChaosType::BadJwt)
        );
        assert_eq!(
            f(200, FAST, false, Invalid),
            Finding::Chaos(ChaosType::BadJwt)
        );
        assert_eq!(
            f(200, SLOW * 2, true, Invalid),
            Finding::Chaos(ChaosType::BadJwt)
        );
        assert_eq!(
            f(200, SLOW * 2, true, Valid),
            Finding::Chaos(ChaosType::Throttle)
        );
        assert_eq!(
            f(200, SLOW * 2, true, Unknown),
            Finding::Chaos(ChaosType::Throttle)
        );
        assert_eq!(
            f(200, SLOW, true, Valid),
            Finding::Healthy,
            "not slower than the threshold"
        );
        assert_eq!(
            f(200, FAST, true, Valid),
            Finding::Healthy,
            "fast and verified: a good pizza, link or not"
        );
        assert_eq!(f(200, FAST, true, Unknown), Finding::Nothing);
        assert_eq!(f(200, FAST, true, NotChecked), Finding::Nothing);
        assert_eq!(f(200, FAST, false, Valid), Finding::Healthy);
        assert_eq!(f(200, SLOW * 2, false, Valid), Finding::Healthy);
        assert_eq!(f(200, FAST, false, Unknown), Finding::Healthy);
        assert_eq!(f(200, FAST, false, NotChecked), Finding::Healthy);
        assert_eq!(f(400, FAST, false, NotChecked), Finding::Nothing);
        assert_eq!(f(401, FAST, true, NotChecked), Finding::Nothing);
        assert_eq!(f(302, FAST, false, NotChecked), Finding::Nothing);
        assert_eq!(
            classify_uninspected(StatusCode::BAD_GATEWAY),
            Finding::Chaos(ChaosType::Unknown)
        );
        assert_eq!(classify_uninspected(StatusCode::OK), Finding::Nothing);
    }

    #[test]
    fn the_oven_full_refusal_is_not_an_outage() {
        let oven = br#"{"message":"Unable to satisfy pizza order. The oven is full."}"#;
        assert!(is_oven_full(StatusCode::SERVICE_UNAVAILABLE, false, oven));
        assert!(!is_oven_full(StatusCode::SERVICE_UNAVAILABLE, true, oven));
        assert!(!is_oven_full(
            StatusCode::INTERNAL_SERVER_ERROR,
            false,
            oven
        ));
        assert!(!is_oven_full(
            StatusCode::SERVICE_UNAVAILABLE,
            false,
            br#"{"message":"down"}"#
        ));
    }
}
