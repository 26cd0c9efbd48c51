//! Config reload: `SIGHUP`, or `POST /config/reload` on the admin listener.
//!
//! A reload reads the file again with the environment overrides, checks it
//! as `factory-sidecar check` would, and then either applies the whole new
//! config or none of it:
//! - invalid (a parse or check error, or a part that refuses it): the old
//!   config runs on; the errors (`file:line:col: message`) are logged,
//!   answered and kept for `/status`;
//! - a change only a restart can apply ([`diff::NEEDS_RESTART`]: listeners,
//!   the connection pool, windows, OTLP or annotations turned on or off,
//!   the export interval, the log format): reported with the keys and why,
//!   nothing applied (never half of a file);
//! - otherwise a fresh stack is built from the new config over the same
//!   long-lived parts and swapped in ([`swap`]): new requests use it,
//!   requests in flight finish on theirs, no connection is dropped; the
//!   parts take their new settings while keeping their state (breaker state
//!   and window, retry budget, chaos episodes, metrics, the pool); admin and
//!   Grafana tokens, the log level, the OTLP endpoint and protocol and
//!   traces on/off, and the probe follow.
//!
//! Every reload counts in `sidecar.config.reloads{result}` and sets the
//! last-reload gauges; `/status` shows the last one (`config.lastReload`).
//! One reload runs at a time.

pub mod diff;
pub mod swap;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use http::StatusCode;
use serde::Serialize;

use crate::admin::{ActionAnswer, ActionFuture, AdminPart};
use crate::config::{Config, ProcessEnv};
use crate::telemetry::Metrics;
pub use crate::telemetry::metrics::ReloadResult;
use crate::times::rfc3339;
pub use diff::RestartNeeded;
pub use swap::{Swap, SwapService};

/// What a reload did: the answer to `POST /config/reload` and
/// `/status` `config.lastReload`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReloadReport {
    pub result: ReloadResult,
    /// RFC 3339.
    pub at: String,
    /// `SIGHUP` or `POST /config/reload`.
    pub trigger: &'static str,
    pub file: Option<String>,
    /// Dotted keys whose values changed (applied when `result` is `applied`).
    pub changed: Vec<String>,
    pub needs_restart: Vec<RestartNeeded>,
    /// `file:line:col: message` when the file is invalid.
    pub errors: Vec<String>,
    pub message: String,
}

/// A checked change, applied only once the whole reload is known to apply.
pub type Commit = Box<dyn FnOnce() + Send>;

/// The running sidecar as a reload sees it (the wiring lives in `app`).
pub trait Apply: Send + Sync {
    /// Checks everything about `new` that can still fail (a token that is
    /// not a header value, a filter) and returns the change to make; nothing
    /// changes before the returned [`Commit`] runs.
    fn prepare(&self, new: &Arc<Config>) -> Result<Commit, String>;
}

/// See the module docs.
pub struct Reloader {
    file: Option<PathBuf>,
    live: Arc<ArcSwap<Config>>,
    apply: Box<dyn Apply>,
    metrics: Arc<Metrics>,
    last: parking_lot::Mutex<Option<ReloadReport>>,
    one_at_a_time: tokio::sync::Mutex<()>,
}

impl Reloader {
    /// Reloads from `file` (`None`: a sidecar started from a config built in
    /// code, which has nothing to read again).
    pub fn new(
        file: Option<PathBuf>,
        live: Arc<ArcSwap<Config>>,
        apply: Box<dyn Apply>,
        metrics: Arc<Metrics>,
    ) -> Reloader {
        Reloader {
            file,
            live,
            apply,
            metrics,
            last: parking_lot::Mutex::new(None),
            one_at_a_time: tokio::sync::Mutex::new(()),
        }
    }

    /// The config running now.
    pub fn current(&self) -> Arc<Config> {
        self.live.load_full()
    }

    /// The last reload's report, if any.
    pub fn last(&self) -> Option<ReloadReport> {
        self.last.lock().clone()
    }

    /// Reads the file again and applies it, or says why not (see the module
    /// docs); logs, counts and remembers the outcome.
    pub async fn reload(&self, trigger: &'static str) -> ReloadReport {
        let _one = self.one_at_a_time.lock().await;
        let at = SystemTime::now();
        let report = self.run(trigger, at);
        self.metrics.config_reload(report.result, at);
        log(&report);
        *self.last.lock() = Some(report.clone());
        report
    }

    fn run(&self, trigger: &'static str, at: SystemTime) -> ReloadReport {
        let mut report = ReloadReport {
            result: ReloadResult::Invalid,
            at: rfc3339(at),
            trigger,
            file: self.file.as_ref().map(|f| f.display().to_string()),
            changed: Vec::new(),
            needs_restart: Vec::new(),
            errors: Vec::new(),
            message: String::new(),
        };
        let Some(file) = &self.file else {
            report.message = "no config file to read again: this sidecar was started from a \
                              config built in code"
                .to_owned();
            return report;
        };
        let new = match Config::load(file, &ProcessEnv) {
            Ok(c) => Arc::new(c),
            Err(errors) => {
                report.errors = errors.0.iter().map(ToString::to_string).collect();
                report.message = "the file is invalid; the running config stays".to_owned();
                return report;
            }
        };
        let old = self.live.load_full();
        report.changed = diff::changed_keys(&old, &new);
        report.needs_restart = diff::needing_restart(&old, &new, &report.changed);
        if !report.needs_restart.is_empty() {
            report.result = ReloadResult::NeedsRestart;
            report.message = "changes only a restart can apply; nothing was applied, the \
                              running config stays"
                .to_owned();
            return report;
        }
        if report.changed.is_empty() {
            report.result = ReloadResult::Applied;
            report.message = "nothing changed".to_owned();
            return report;
        }
        match self.apply.prepare(&new) {
            Ok(commit) => {
                commit();
                self.live.store(new);
                report.result = ReloadResult::Applied;
                report.message = "applied; requests in flight finish on the old config".to_owned();
            }
            Err(e) => {
                report.errors = vec![format!("{}: {e}", file.display())];
                report.message =
                    "the new config cannot be applied; the running config stays".to_owned();
            }
        }
        report
    }
}

/// One line per reload: info when applied, warn otherwise.
fn log(r: &ReloadReport) {
    let file = r.file.as_deref().unwrap_or("-");
    let changed = r.changed.join(",");
    match r.result {
        ReloadResult::Applied => {
            tracing::info!(trigger = r.trigger, file, changed, "config reloaded");
        }
        ReloadResult::Invalid => {
            tracing::warn!(
                trigger = r.trigger,
                file,
                errors = %r.errors.join("; "),
                "config reload refused: {}",
                r.message
            );
        }
        ReloadResult::NeedsRestart => {
            let keys: Vec<String> = r
                .needs_restart
                .iter()
                .map(|n| format!("{} ({})", n.key, n.why))
                .collect();
            tracing::warn!(
                trigger = r.trigger,
                file,
                needs_restart = %keys.join("; "),
                "config reload refused: restart to apply"
            );
        }
    }
}

impl AdminPart for Reloader {
    fn name(&self) -> &'static str {
        "config"
    }

    fn status(&self) -> serde_json::Value {
        serde_json::json!({
            "file": self.file.as_ref().map(|f| f.display().to_string()),
            "lastReload": self.last(),
        })
    }

    fn actions(&self) -> &'static [&'static str] {
        &["/config/reload"]
    }

    fn action<'a>(&'a self, _path: &'a str) -> ActionFuture<'a> {
        Box::pin(async move {
            let report = self.reload("POST /config/reload").await;
            let status = match report.result {
                ReloadResult::Applied => StatusCode::OK,
                ReloadResult::NeedsRestart => StatusCode::CONFLICT,
                ReloadResult::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
            };
            ActionAnswer {
                status,
                body: serde_json::to_value(&report)
                    .unwrap_or_else(|e| serde_json::json!({"message": e.to_string()})),
            }
        })
    }
}
