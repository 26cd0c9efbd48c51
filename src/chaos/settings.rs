//! The `[chaos]` settings as an order reads them, changeable while orders
//! run: a config reload stores new values and the next order sees them.
//!
//! Each is a relaxed atomic: on the order path a read is a plain load, no
//! lock and no reference count (an `ArcSwap<ChaosConfig>` would cost a few
//! atomic operations per read, and an order reads several). Values are
//! independent flags and limits, so an order that sees some old and some
//! new ones during the store is still consistent with one of the configs
//! for each decision it makes.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crate::config::ChaosConfig;
use crate::times::micros;

/// See the module docs.
#[derive(Debug)]
pub struct ChaosSettings {
    detect: AtomicBool,
    auto_resolve: AtomicBool,
    redact_in_responses: AtomicBool,
    verify_jwt: AtomicBool,
    slow_threshold_us: AtomicU64,
    inspect_max_bytes: AtomicUsize,
    /// Fixed at start: the side channel's timeout is derived from it.
    background_timeout: Duration,
}

impl ChaosSettings {
    pub fn new(config: &ChaosConfig) -> ChaosSettings {
        let s = ChaosSettings {
            detect: AtomicBool::new(false),
            auto_resolve: AtomicBool::new(false),
            redact_in_responses: AtomicBool::new(false),
            verify_jwt: AtomicBool::new(false),
            slow_threshold_us: AtomicU64::new(0),
            inspect_max_bytes: AtomicUsize::new(0),
            background_timeout: config.background_timeout,
        };
        s.store(config);
        s
    }

    /// Takes the live values of `config` (all but `background_timeout`).
    pub fn store(&self, config: &ChaosConfig) {
        let relaxed = Ordering::Relaxed;
        self.detect.store(config.detect, relaxed);
        self.auto_resolve.store(config.auto_resolve, relaxed);
        self.redact_in_responses
            .store(config.redact_in_responses, relaxed);
        self.verify_jwt.store(config.verify_jwt, relaxed);
        let us = micros(config.slow_threshold);
        self.slow_threshold_us.store(us, relaxed);
        self.inspect_max_bytes
            .store(config.inspect_max_bytes, relaxed);
    }

    pub fn detect(&self) -> bool {
        self.detect.load(Ordering::Relaxed)
    }
    pub fn auto_resolve(&self) -> bool {
        self.auto_resolve.load(Ordering::Relaxed)
    }
    pub fn redact_in_responses(&self) -> bool {
        self.redact_in_responses.load(Ordering::Relaxed)
    }
    pub fn verify_jwt(&self) -> bool {
        self.verify_jwt.load(Ordering::Relaxed)
    }
    pub fn slow_threshold(&self) -> Duration {
        Duration::from_micros(self.slow_threshold_us.load(Ordering::Relaxed))
    }
    pub fn inspect_max_bytes(&self) -> usize {
        self.inspect_max_bytes.load(Ordering::Relaxed)
    }
    pub fn background_timeout(&self) -> Duration {
        self.background_timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_values_are_read_back() {
        let s = ChaosSettings::new(&ChaosConfig::default());
        assert!(s.detect() && s.auto_resolve() && s.verify_jwt() && s.redact_in_responses());
        s.store(&ChaosConfig {
            detect: false,
            auto_resolve: false,
            redact_in_responses: false,
            verify_jwt: false,
            slow_threshold: Duration::from_millis(1500),
            inspect_max_bytes: 4096,
            background_timeout: Duration::from_secs(1),
            ..ChaosConfig::default()
        });
        assert!(!s.detect() && !s.auto_resolve() && !s.verify_jwt() && !s.redact_in_responses());
        assert_eq!(s.slow_threshold(), Duration::from_millis(1500));
        assert_eq!(s.inspect_max_bytes(), 4096);
        assert_eq!(
            s.background_timeout(),
            ChaosConfig::default().background_timeout,
            "fixed at start"
        );
    }
}
