//! The metric names the shipped Grafana files query, so a test can prove
//! that every panel and alert reads a series `/metrics` really exports
//! (a renamed metric would otherwise leave an empty panel and an alert that
//! never fires).
//!
//! The files live in `config/grafana/`: the dashboard (`expr` of each panel
//! target) and the alert rules (`expr` in each rule's data model). Both are
//! JSON, which Grafana provisioning reads as readily as YAML; this module
//! walks them, collects every `expr`, and pulls the metric names out of the
//! PromQL with a small scanner (string literals, label matchers, ranges,
//! grouping lists, functions, keywords and Grafana `$variables` skipped).

use std::collections::BTreeSet;

/// The dashboard, as shipped.
pub const DASHBOARD_JSON: &str =
    include_str!("../../config/grafana/dashboards/factory-sidecar.json");
/// The alert rules, as shipped.
pub const ALERTS_JSON: &str =
    include_str!("../../config/grafana/provisioning/alerting/factory-sidecar-alerts.json");

/// A Grafana file is not the JSON it should be.
#[derive(Debug, thiserror::Error)]
#[error("{what} is not valid JSON: {source}")]
pub struct GrafanaFileError {
    what: &'static str,
    #[source]
    source: serde_json::Error,
}

/// Every PromQL expression (`"expr"` value) in a Grafana JSON document.
pub fn expressions(json: &str, what: &'static str) -> Result<Vec<String>, GrafanaFileError> {
    strings_under(json, what, "expr")
}

/// Every string value under `key`, anywhere in a JSON document.
fn strings_under(
    json: &str,
    what: &'static str,
    key: &str,
) -> Result<Vec<String>, GrafanaFileError> {
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|source| GrafanaFileError { what, source })?;
    let mut out = Vec::new();
    collect(&v, key, &mut out);
    Ok(out)
}

fn collect(v: &serde_json::Value, key: &str, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match v {
                    serde_json::Value::String(s) if k == key => out.push(s.clone()),
                    _ => collect(v, key, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|i| collect(i, key, out)),
        _ => {}
    }
}

/// The metric of a template variable query `label_values(metric, label)`.
pub fn label_values_metric(query: &str) -> Option<String> {
    let args = query
        .trim()
        .strip_prefix("label_values(")?
        .strip_suffix(')')?;
    let (metric, label) = args.split_once(',')?;
    let metric = metric.trim();
    let selector_free = metric.split('{').next().unwrap_or(metric).trim();
    (!label.trim().is_empty() && !selector_free.is_empty()).then(|| selector_free.to_owned())
}

/// Every metric name the given dashboard and alert rules query: panel and
/// rule expressions plus `label_values(...)` variable queries.
pub fn metric_names_in(
    dashboard: &str,
    alerts: &str,
) -> Result<BTreeSet<String>, GrafanaFileError> {
    let mut names = BTreeSet::new();
    for (json, what) in [(dashboard, "the dashboard"), (alerts, "the alert rules")] {
        for e in expressions(json, what)? {
            names.extend(metric_names(&e));
        }
        for d in strings_under(json, what, "definition")? {
            names.extend(label_values_metric(&d));
        }
    }
    Ok(names)
}

/// Every metric name the shipped dashboard and alert rules query.
pub fn queried_metric_names() -> Result<BTreeSet<String>, GrafanaFileError> {
    metric_names_in(DASHBOARD_JSON, ALERTS_JSON)
}

/// The sample names of a Prometheus text exposition (what PromQL selects:
/// `x_bucket`, `x_count`, `x_sum`, `y_total`, `z`).
pub fn sample_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// PromQL words that are not metric names.
const KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "atan2",
    "inf",
    "nan",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];
/// Keywords followed by a parenthesised list of label names.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The metric names a PromQL expression selects.
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let mut skip_list = false;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => {
                // A string literal: skip to its unescaped end.
                i += 1;
                while i < chars.len() && chars[i] != c {
                    if chars[i] == '\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            '{' => i = skip_to(&chars, i, '{', '}'),
            '[' => i = skip_to(&chars, i, '[', ']'),
            '(' if skip_list => {
                skip_list = false;
                i = skip_to(&chars, i, '(', ')');
            }
            '$' => {
                // A Grafana variable: `$name` or `${name}`.
                i += 1;
                if i < chars.len() && chars[i] == '{' {
                    i = skip_to(&chars, i, '{', '}');
                }
                // The variable's name, or the rest of a name it is part of.
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                // A number's exponent or suffix (`1e3`, `5m`) is not a name.
                let after_number =
                    start > 0 && (chars[start - 1].is_ascii_digit() || chars[start - 1] == '.');
                let mut j = i;
                while j < chars.len() && chars[j].is_whitespace() {
                    j += 1;
                }
                let is_call = j < chars.len() && chars[j] == '(';
                let lower = word.to_ascii_lowercase();
                if LABEL_LISTS.contains(&lower.as_str()) {
                    skip_list = true;
                } else if !after_number && !is_call && !KEYWORDS.contains(&lower.as_str()) {
                    names.insert(word);
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// The index after the bracket that closes the one at `open_at`.
fn skip_to(chars: &[char], open_at: usize, open: char, close: char) -> usize {
    let mut depth = 0usize;
    let mut i = open_at;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i += 1;
            while i < chars.len() && chars[i] != c {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
        } else if c == open {
            depth += 1;
        } else if c == close {
            depth = depth.saturating_sub(1);
            if depth == 0 {
                return i + 1;
            }
        }
        i += 1;
    }
    chars.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(e: &str) -> Vec<String> {
        metric_names(e).into_iter().collect()
    }

    #[test]
    fn the_scanner_finds_metric_names_only() {
        assert_eq!(
            names(
                "histogram_quantile(0.95, sum by (le) (rate(http_server_request_duration_seconds_bucket{http_route=\"/api/order\"}[$__rate_interval])))"
            ),
            ["http_server_request_duration_seconds_bucket"]
        );
        assert_eq!(
            names(
                "100 * sum(rate(a_count{error_type=\"\"}[5m])) / clamp_min(sum(rate(a_count[5m])), 1e-9)"
            ),
            ["a_count"]
        );
        assert_eq!(
            names(
                "max_over_time(sidecar_circuit_state[1m]) == 2 and on() vector(1) > bool 0 or sidecar_chaos_active offset 5m"
            ),
            ["sidecar_chaos_active", "sidecar_circuit_state"]
        );
        assert_eq!(
            names("sum without (instance, job) (x_total) unless ignoring(a) y"),
            ["x_total", "y"]
        );
        assert_eq!(
            names("label_replace(up, \"a\", \"$1\", \"b\", \"(.*)\")"),
            ["up"]
        );
        assert_eq!(names("${metric}_total + $x"), Vec::<String>::new());
    }

    #[test]
    fn label_values_queries_name_their_metric() {
        assert_eq!(
            label_values_metric("label_values(sidecar_circuit_state, instance)").as_deref(),
            Some("sidecar_circuit_state")
        );
        assert_eq!(
            label_values_metric("label_values(up{job=\"x\"}, instance)").as_deref(),
            Some("up")
        );
        assert_eq!(label_values_metric("label_values(instance)"), None);
        assert_eq!(label_values_metric("query_result(up)"), None);
    }

    /// Every instrument recorded once, rendered as `/metrics` renders it.
    fn rendered_names() -> BTreeSet<String> {
        use crate::chaos::{ChaosType, ResolveResult};
        use crate::resilience::breaker::CircuitState;
        use crate::resilience::classify::FailureKind;
        use crate::telemetry::metrics::{ClientResult, Metrics, Route};
        use crate::telemetry::outcome::RequestOutcome;
        use http::{Method, StatusCode};
        use std::time::Duration;
        let m = Metrics::new("factory.test");
        m.server_request(
            &Method::POST,
            Route::Order,
            StatusCode::OK,
            RequestOutcome::Ok,
            Duration::from_millis(1),
        );
        m.client_request(
            &Method::POST,
            ClientResult::Status(StatusCode::OK),
            Duration::from_millis(1),
        );
        m.retry(FailureKind::Status5xx);
        m.circuit_state(CircuitState::Open);
        m.circuit_transition(CircuitState::Closed, CircuitState::Open);
        m.circuit_rejection();
        m.chaos_detected(ChaosType::Fail);
        m.chaos_active(ChaosType::Fail, true);
        m.chaos_resolution(ResolveResult::Resolved);
        m.order_wait(RequestOutcome::Ok, Duration::from_secs(3));
        sample_names(&m.prometheus_text())
    }

    #[test]
    fn every_metric_the_grafana_files_query_is_one_metrics_renders() {
        let queried = queried_metric_names().expect("the shipped files are JSON");
        assert!(queried.len() >= 8, "suspiciously few names: {queried:?}");
        let rendered = rendered_names();
        let missing: Vec<&String> = queried.iter().filter(|n| !rendered.contains(*n)).collect();
        assert!(
            missing.is_empty(),
            "queried but never rendered: {missing:?}\nrendered: {rendered:?}"
        );
        // And the check can fail: a misspelt name is caught.
        let bad =
            metric_names_in(r#"{"expr":"rate(sidecar_retry_total[5m])"}"#, "{}").expect("json");
        assert!(bad.iter().any(|n| !rendered.contains(n)));
    }

    fn json(s: &str) -> serde_json::Value {
        serde_json::from_str(s).expect("valid JSON")
    }

    #[test]
    fn the_dashboard_is_provisioning_ready_with_the_asked_panels() {
        let d = json(DASHBOARD_JSON);
        assert_eq!(d["uid"], "factory-sidecar");
        assert!(
            d.get("id").is_none_or(serde_json::Value::is_null),
            "no fixed id: provisioning assigns one"
        );
        let vars = d["templating"]["list"].as_array().expect("variables");
        assert!(
            vars.iter().any(|v| v["type"] == "datasource"
                && v["query"] == "prometheus"
                && v["name"] == "datasource"),
            "the data source is a variable"
        );
        let panels = d["panels"].as_array().expect("panels");
        for p in panels.iter().filter(|p| p["type"] != "row") {
            assert_eq!(
                p["datasource"]["uid"], "${datasource}",
                "panel {}",
                p["title"]
            );
            for t in p["targets"].as_array().expect("targets") {
                assert_eq!(
                    t["datasource"]["uid"], "${datasource}",
                    "target of {}",
                    p["title"]
                );
            }
        }
        let titles: Vec<String> = panels
            .iter()
            .map(|p| p["title"].as_str().unwrap_or_default().to_lowercase())
            .collect();
        for wanted in [
            "factory success rate",
            "requests by outcome",
            "latency",
            "retries per second",
            "retry budget",
            "circuit state",
            "rejections",
            "chaos episodes detected",
            "chaos active",
            "chaos resolutions",
            "orders waiting",
            "order wait",
            "hedges",
        ] {
            assert!(
                titles.iter().any(|t| t.contains(wanted)),
                "no panel for {wanted:?}: {titles:?}"
            );
        }
        let latency: Vec<String> = expressions(DASHBOARD_JSON, "dashboard")
            .expect("json")
            .into_iter()
            .filter(|e| e.contains("_request_duration_seconds_bucket"))
            .collect();
        let latency = latency.join("\n");
        for q in [
            "histogram_quantile(0.5,",
            "histogram_quantile(0.95,",
            "histogram_quantile(0.99,",
        ] {
            assert_eq!(latency.matches(q).count(), 2, "{q} for client and server");
        }
        let annotations = d["annotations"]["list"].as_array().expect("annotations");
        assert!(
            annotations
                .iter()
                .any(|a| a["target"]["tags"] == serde_json::json!(["chaos"]))
        );
    }

    #[test]
    fn the_alerts_do_not_flap_and_cover_the_asked_conditions() {
        let a = json(ALERTS_JSON);
        assert_eq!(a["apiVersion"], 1);
        let rules = a["groups"][0]["rules"].as_array().expect("rules");
        let rule = |uid: &str| {
            rules
                .iter()
                .find(|r| r["uid"] == uid)
                .unwrap_or_else(|| panic!("no rule {uid}"))
                .clone()
        };
        let threshold = |r: &serde_json::Value| {
            let c = r["data"]
                .as_array()
                .expect("data")
                .iter()
                .find(|d| d["model"]["type"] == "threshold")
                .expect("a threshold")
                .clone();
            c["model"]["conditions"][0]["evaluator"].clone()
        };
        let success = rule("factory-success-rate-low");
        assert_eq!(success["for"], "2m", "a pending period of 2 minutes");
        assert_ne!(
            success["keepFiringFor"], "0s",
            "keeps firing through a wobble"
        );
        assert!(success["keepFiringFor"].is_string());
        assert_eq!(
            threshold(&success),
            serde_json::json!({"type": "lt", "params": [90]})
        );
        // With every try failing there is no successful series at all: the
        // rate must read 0%, not "no data" (which would keep the alert OK
        // through a total outage).
        assert!(
            success["data"][0]["model"]["expr"]
                .as_str()
                .expect("expr")
                .contains("or vector(0)"),
            "a total outage reads 0%"
        );
        let chaos = rule("factory-chaos-unresolved");
        assert_eq!(chaos["for"], "1m");
        assert!(
            chaos["data"][0]["model"]["expr"]
                .as_str()
                .expect("expr")
                .contains("sidecar_chaos_active")
        );
        let circuit = rule("circuit-open-long");
        assert_eq!(circuit["for"], "1m");
        assert!(
            circuit["data"][0]["model"]["expr"]
                .as_str()
                .expect("expr")
                .contains("sidecar_circuit_state")
        );
        for r in rules {
            assert_eq!(r["condition"], "C");
            assert!(r["annotations"]["runbook_url"].is_string());
            assert_eq!(r["data"][0]["datasourceUid"], "prometheus");
        }
    }

    #[test]
    fn expressions_are_found_anywhere_in_the_json() {
        let json = r#"{"panels":[{"targets":[{"expr":"a"},{"expr":"b"}]},{"panels":[{"targets":[{"expr":"c"}]}]}]}"#;
        assert_eq!(expressions(json, "t").expect("json"), ["a", "b", "c"]);
        assert!(expressions("{", "t").is_err());
    }
}
