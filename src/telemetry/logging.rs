//! The process's log output: `tracing` events as text or JSON lines on
//! stderr, filtered by `[log] level`.
//!
//! `level` is a level (`info`), optionally followed by `target=level`
//! directives (`info,factory_sidecar=debug`); `RUST_LOG`, when set, adds its
//! directives on top, so an operator can turn one module up without editing
//! the file. A config reload swaps the filter in place (tracing-subscriber's
//! `reload` layer); the format is fixed at start. The access log is one line
//! per request at info (target `factory_sidecar::access`), state changes
//! (circuit, chaos episodes) at info/warn. Report links are masked by the
//! code that logs them; this module only formats.

use std::io::IsTerminal as _;
use std::sync::OnceLock;

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

/// Replaces the installed subscriber's filter (a config reload).
type SetFilter = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;

/// The filter of the subscriber [`init`] installed, when it did.
static FILTER: OnceLock<SetFilter> = OnceLock::new();

/// Installs the global subscriber. Fails, instead of panicking, when one is
/// already installed (tests, a second call). Its filter can be changed
/// later with [`LevelChange::apply`] (the format cannot: a restart).
pub fn init(config: &LogConfig) -> Result<(), LogInitError> {
    let rust_log = std::env::var("RUST_LOG").ok();
    let filter = filter(&config.level, rust_log.as_deref())?;
    let builder = tracing_subscriber::fmt().with_writer(std::io::stderr);
    // The two formats are two subscriber types; each installs the same way.
    macro_rules! install {
        ($builder:expr) => {{
            let builder = $builder.with_env_filter(filter).with_filter_reloading();
            let handle = builder.reload_handle();
            builder.try_init().map_err(|_| LogInitError::AlreadySet)?;
            let _ = FILTER.set(Box::new(move |f| {
                handle.reload(f).map_err(|e| e.to_string())
            }));
        }};
    }
    match config.format {
        LogFormat::Json => install!(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false)
        ),
        LogFormat::Text => install!(builder.with_ansi(std::io::stderr().is_terminal())),
    }
    Ok(())
}

/// A checked new `[log] level` (with `RUST_LOG` on top, as at start),
/// applied by [`LevelChange::apply`] once a whole reload is known to apply.
pub struct LevelChange(EnvFilter);

impl LevelChange {
    pub fn new(level: &str) -> Result<LevelChange, LogInitError> {
        let rust_log = std::env::var("RUST_LOG").ok();
        filter(level, rust_log.as_deref()).map(LevelChange)
    }

    /// Swaps the filter of the running subscriber; nothing to do when none
    /// was installed by [`init`] (the sidecar in-process in tests or the demo).
    pub fn apply(self) {
        if let Some(set) = FILTER.get()
            && let Err(e) = set(self.0)
        {
            tracing::warn!(error = %e, "cannot change the log level");
        }
    }
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
