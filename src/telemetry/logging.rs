//! The process's log output: `tracing` events as text or JSON lines on
//! stderr, filtered by `[log] level`.
//!
//! `level` is a level (`info`) or `tracing` filter directives
//! (`info,factory_sidecar=debug`); `RUST_LOG`, when set, adds its directives
//! on top, so an operator can turn one module up without editing the file.
//! Per-request lines are at debug, state changes (circuit, chaos episodes)
//! at info/warn. Report links are masked by the code that logs them; this
//! module only formats.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::Directive;

use crate::config::{LogConfig, LogFormat};

/// Logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LogInitError {
    #[error("invalid log level {level:?}: {source}")]
    Level {
        level: String,
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    #[error("invalid RUST_LOG directive {directive:?}: {source}")]
    RustLog {
        directive: String,
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    #[error("a global log subscriber is already installed")]
    AlreadySet,
}

/// The filter: `level`, refined by `rust_log` directives.
pub fn filter(level: &str, rust_log: Option<&str>) -> Result<EnvFilter, LogInitError> {
    let mut filter = EnvFilter::builder()
        .parse(level)
        .map_err(|source| LogInitError::Level {
            level: level.to_owned(),
            source,
        })?;
    for d in rust_log
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
    {
        let directive: Directive = d.parse().map_err(|source| LogInitError::RustLog {
            directive: d.to_owned(),
            source,
        })?;
        filter = filter.add_directive(directive);
    }
    Ok(filter)
}

/// Installs the global subscriber. Fails, instead of panicking, when one is
/// already installed (tests, a second call).
pub fn init(config: &LogConfig) -> Result<(), LogInitError> {
    let rust_log = std::env::var("RUST_LOG").ok();
    let filter = filter(&config.level, rust_log.as_deref())?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match config.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
    result.map_err(|_| LogInitError::AlreadySet)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_log_refines_the_configured_level() {
        let f =
            filter("info", Some("factory_sidecar::telemetry=trace, hyper=warn")).expect("valid");
        let s = f.to_string();
        assert!(s.contains("factory_sidecar::telemetry=trace"), "{s}");
        assert!(s.contains("hyper=warn"), "{s}");
        assert!(s.contains("info"), "{s}");
        assert!(matches!(
            filter("info", Some("a=notalevel")),
            Err(LogInitError::RustLog { .. })
        ));
        assert!(matches!(
            filter("info,a=loud", None),
            Err(LogInitError::Level { .. })
        ));
    }

    #[test]
    fn a_second_init_is_an_error_not_a_panic() {
        // "off": whichever init wins, the rest of the test binary stays quiet.
        let config = LogConfig {
            level: "off".to_owned(),
            ..LogConfig::default()
        };
        // Another test may have installed one already: either way, the
        // second call must fail cleanly.
        let _ = init(&config);
        assert!(matches!(init(&config), Err(LogInitError::AlreadySet)));
    }
}
