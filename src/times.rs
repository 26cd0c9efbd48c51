//! Moments and durations as the sidecar writes them down: Unix
//! milliseconds in its stores (queued orders, saved chaos episodes) and in
//! Grafana annotations, RFC 3339 with milliseconds in answers, `/status`
//! and logs, whole milli- or microseconds in figures. One home, so every
//! part writes a moment the same way, and none panics on a clock set
//! before 1970 or a duration too long for a `u64`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 before it).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, millis)
}

/// [`unix_ms`] of now.
pub fn now_ms() -> u64 {
    unix_ms(SystemTime::now())
}

/// The moment `ms` milliseconds after the Unix epoch.
pub fn from_unix_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// `2026-12-06T22:14:38.559Z`: UTC, to the millisecond.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// [`rfc3339`] of a moment in Unix milliseconds.
pub fn rfc3339_ms(ms: u64) -> String {
    rfc3339(from_unix_ms(ms))
}

/// Whole milliseconds (`u64::MAX` for a longer duration).
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Whole microseconds (`u64::MAX` for a longer duration).
pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Nanoseconds (`u64::MAX` for a longer duration).
pub fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moments_go_to_milliseconds_and_back() {
        let t = UNIX_EPOCH + Duration::from_millis(1_796_595_278_559);
        assert_eq!(unix_ms(t), 1_796_595_278_559);
        assert_eq!(from_unix_ms(unix_ms(t)), t);
        assert_eq!(rfc3339_ms(unix_ms(t)), "2026-12-06T22:14:38.559Z");
        assert_eq!(rfc3339(t), rfc3339_ms(1_796_595_278_559));
        assert_eq!(unix_ms(UNIX_EPOCH - Duration::from_secs(1)), 0);
    }

    #[test]
    fn long_durations_saturate() {
        assert_eq!(millis(Duration::from_micros(1_999)), 1);
        assert_eq!(micros(Duration::from_nanos(1_999)), 1);
        assert_eq!(millis(Duration::MAX), u64::MAX);
        assert_eq!(micros(Duration::MAX), u64::MAX);
        assert_eq!(nanos(Duration::from_micros(3)), 3_000);
        assert_eq!(nanos(Duration::MAX), u64::MAX);
    }
}
