//! What a reload changes, and which of those changes only a restart can
//! apply.
//!
//! The comparison is generic: both configs are serialized and compared key
//! by key, so a section added to the config later is covered without work
//! here (its keys then count as live: the stack is rebuilt from the whole
//! new config). Secrets serialize masked, so they are compared by value
//! apart. A key that is set up once at start (a listener, the connection
//! pool, a window's slices) goes into [`NEEDS_RESTART`] with the reason an
//! operator is told; turning OTLP export or Grafana annotations on or off
//! also needs a restart (re-pointing them does not).

use serde_json::Value;

use crate::config::Config;

/// Keys (or whole sections) a running sidecar cannot take, and why.
pub const NEEDS_RESTART: &[(&str, &str)] = &[
    (
        "server",
        "the listener and its connection limits are set up when it starts",
    ),
    ("admin.listen", "a new admin listener"),
    (
        "orders.paths",
        "the order routes are shared by the deadline, retry and queue layers, set up at start",
    ),
    (
        "queue",
        "the order store is opened and its replayer started when the sidecar starts",
    ),
    (
        "upstream.url",
        "the factory's connection pool and TLS client are kept across reloads",
    ),
    ("upstream.ca_file", "the TLS client is kept across reloads"),
    (
        "upstream.connect_timeout",
        "the connection pool is kept across reloads",
    ),
    (
        "upstream.body_read_timeout",
        "the connection pool is kept across reloads",
    ),
    (
        "upstream.pool_max_idle_per_host",
        "the connection pool is kept across reloads",
    ),
    (
        "upstream.pool_idle_timeout",
        "the connection pool is kept across reloads",
    ),
    (
        "retry.budget_window",
        "the retry budget's counts are kept per slice of its window",
    ),
    (
        "circuit_breaker.window",
        "the breaker's counts are kept per slice of its window",
    ),
    (
        "chaos.background_timeout",
        "the side channel to the factory is set up with it",
    ),
    (
        "telemetry.export_interval",
        "the periodic OTLP reader is set up at start",
    ),
    (
        "telemetry.service_name",
        "the OTLP resource is set up at start",
    ),
    ("log.format", "the log writer is set up at start"),
    (
        "probe.enabled",
        "the probe's /status section is set up at start",
    ),
];

/// A change a reload cannot apply.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RestartNeeded {
    pub key: String,
    pub why: &'static str,
}

/// The dotted keys whose values differ, sorted.
pub fn changed_keys(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    match (serde_json::to_value(old), serde_json::to_value(new)) {
        (Ok(a), Ok(b)) => compare("", &a, &b, &mut out),
        // Not expected (every field serializes); report the whole config.
        _ => out.push("*".to_owned()),
    }
    for (key, a, b) in [
        (
            "admin.token",
            old.admin.token.expose(),
            new.admin.token.expose(),
        ),
        (
            "grafana.token",
            old.grafana.token.expose(),
            new.grafana.token.expose(),
        ),
        (
            "probe.api_key",
            old.probe.api_key.expose(),
            new.probe.api_key.expose(),
        ),
    ] {
        if a != b && !out.iter().any(|k| k == key) {
            out.push(key.to_owned());
        }
    }
    out.sort();
    out
}

fn compare(prefix: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                match (a.get(k), b.get(k)) {
                    (Some(x), Some(y)) => compare(&path, x, y, out),
                    _ => out.push(path),
                }
            }
        }
        (a, b) if a != b => out.push(prefix.to_owned()),
        _ => {}
    }
}

/// The changed keys a running sidecar cannot take.
pub fn needing_restart(old: &Config, new: &Config, changed: &[String]) -> Vec<RestartNeeded> {
    let mut out: Vec<RestartNeeded> = changed
        .iter()
        .filter_map(|key| {
            NEEDS_RESTART
                .iter()
                .find(|(k, _)| key == k || key.starts_with(&format!("{k}.")) || key == "*")
                .map(|(_, why)| RestartNeeded {
                    key: key.clone(),
                    why,
                })
        })
        .collect();
    // OTLP export can be re-pointed, not turned on or off.
    if old.telemetry.otlp_endpoint.is_empty() != new.telemetry.otlp_endpoint.is_empty() {
        out.push(RestartNeeded {
            key: "telemetry.otlp_endpoint".to_owned(),
            why: "OTLP export is turned on or off at start",
        });
    }
    // Annotations can be re-pointed, not turned on or off.
    if old.grafana.url.trim().is_empty() != new.grafana.url.trim().is_empty() {
        out.push(RestartNeeded {
            key: "grafana.url".to_owned(),
            why: "Grafana annotations are turned on or off at start",
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Secret, UpstreamUrl};
    use std::time::Duration;

    fn base() -> Config {
        Config::for_upstream(UpstreamUrl::parse("http://127.0.0.1:9").expect("url"))
    }

    #[test]
    fn changed_keys_are_dotted_and_secrets_compared_by_value() {
        let old = base();
        let mut new = base();
        assert!(changed_keys(&old, &new).is_empty());
        new.retry.max_attempts = 5;
        new.upstream.attempt_timeout = Duration::from_secs(1);
        new.admin.token = Secret::new("new-token");
        new.retry.on.pop();
        assert_eq!(
            changed_keys(&old, &new),
            [
                "admin.token",
                "retry.max_attempts",
                "retry.on",
                "upstream.attempt_timeout"
            ]
        );
    }

    #[test]
    fn listeners_and_the_pool_need_a_restart_timeouts_do_not() {
        let old = base();
        let mut new = base();
        new.upstream.attempt_timeout = Duration::from_secs(1);
        new.circuit_breaker.open_for = Duration::from_secs(1);
        let changed = changed_keys(&old, &new);
        assert!(needing_restart(&old, &new, &changed).is_empty());

        let mut new = Config::for_upstream(UpstreamUrl::parse("http://127.0.0.1:3").expect("url"));
        new.server.listen = "127.0.0.1:1".parse().expect("addr");
        new.admin.listen = "127.0.0.1:2".parse().expect("addr");
        new.grafana.url = "http://grafana:3000".to_owned();
        let changed = changed_keys(&old, &new);
        let keys: Vec<String> = needing_restart(&old, &new, &changed)
            .into_iter()
            .map(|r| r.key)
            .collect();
        assert_eq!(
            keys,
            [
                "admin.listen",
                "server.listen",
                "upstream.url",
                "grafana.url"
            ]
        );
    }
}
