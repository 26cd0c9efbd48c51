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
pub const DASHBOARD_JSON: &str = include_str!("../../config/grafana/dashboards/factory-sidecar.json");
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
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|source| GrafanaFileError { what, source })?;
    let mut out = Vec::new();
    collect_exprs(&v, &mut out);
    Ok(out)
}

fn collect_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|i| collect_exprs(i, out)),
        _ => {}
    }
}

/// Every metric name the shipped dashboard and alert rules query.
pub fn queried_metric_names() -> Result<BTreeSet<String>, GrafanaFileError> {
    let mut names = BTreeSet::new();
    for (json, what) in [(DASHBOARD_JSON, "the dashboard"), (ALERTS_JSON, "the alert rules")] {
        for e in expressions(json, what)? {
            names.extend(metric_names(&e));
        }
    }
    Ok(names)
}

/// PromQL words that are not metric names.
const KEYWORDS: &[&str] = &[
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
    "offset", "atan2", "inf", "nan", "sum", "min", "max", "avg", "group", "stddev", "stdvar",
    "count", "count_values", "bottomk", "topk", "quantile", "limitk", "limit_ratio",
];
/// Keywords followed by a parenthesised list of label names.
const LABEL_LISTS: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];

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
                let after_number = start > 0
                    && (chars[start - 1].is_ascii_digit() || chars[start - 1] == '.');
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
            names("histogram_quantile(0.95, sum by (le) (rate(http_server_request_duration_seconds_bucket{http_route=\"/api/order\"}[$__rate_interval])))"),
            ["http_server_request_duration_seconds_bucket"]
        );
        assert_eq!(
            names("100 * sum(rate(a_count{error_type=\"\"}[5m])) / clamp_min(sum(rate(a_count[5m])), 1e-9)"),
            ["a_count"]
        );
        assert_eq!(
            names("max_over_time(sidecar_circuit_state[1m]) == 2 and on() vector(1) > bool 0 or sidecar_chaos_active offset 5m"),
            ["sidecar_chaos_active", "sidecar_circuit_state"]
        );
        assert_eq!(names("sum without (instance, job) (x_total) unless ignoring(a) y"), ["x_total", "y"]);
        assert_eq!(names("label_replace(up, \"a\", \"$1\", \"b\", \"(.*)\")"), ["up"]);
        assert_eq!(names("${metric}_total + $x"), Vec::<String>::new());
    }

    #[test]
    fn expressions_are_found_anywhere_in_the_json() {
        let json = r#"{"panels":[{"targets":[{"expr":"a"},{"expr":"b"}]},{"panels":[{"targets":[{"expr":"c"}]}]}]}"#;
        assert_eq!(expressions(json, "t").expect("json"), ["a", "b", "c"]);
        assert!(expressions("{", "t").is_err());
    }
}
