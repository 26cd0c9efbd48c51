//! Settings that a config reload changes while requests read them.
//!
//! A relaxed atomic per value: on the request path a read is one plain
//! load, with no lock and no reference count. Values are independent
//! limits, so a request that sees some old and some new ones during a
//! reload is still consistent with one of the configs for each decision it
//! makes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::times::micros;

/// A [`Duration`] (to the microsecond, saturating near 584,000 years).
#[derive(Debug)]
pub struct LiveDuration(AtomicU64);

impl LiveDuration {
    pub fn new(d: Duration) -> LiveDuration {
        LiveDuration(AtomicU64::new(micros(d)))
    }

    pub fn get(&self) -> Duration {
        Duration::from_micros(self.0.load(Ordering::Relaxed))
    }

    pub fn set(&self, d: Duration) {
        self.0.store(micros(d), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_microseconds_and_saturates() {
        let d = LiveDuration::new(Duration::from_micros(1_500));
        assert_eq!(d.get(), Duration::from_micros(1_500));
        d.set(Duration::from_secs(45));
        assert_eq!(d.get(), Duration::from_secs(45));
        d.set(Duration::MAX);
        assert_eq!(d.get(), Duration::from_micros(u64::MAX));
    }
}
