//! The shipped Grafana files and Prometheus rules, as tests read them: the
//! expressions they query and the metric names in those, so a test can
//! prove that every panel and alert reads a series `/metrics` really
//! exports (a renamed metric would otherwise leave an empty panel and an
//! alert that never fires), and tests/prometheus.rs can hand them to a
//! real Prometheus.
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

/// The Prometheus rule file, as shipped.
pub const RULES_YML: &str = include_str!("../../config/prometheus/factory-sidecar-rules.yml");

/// One alerting rule of the Prometheus rule file, as written.
#[derive(Debug, Default, Clone)]
pub struct Rule {
    pub alert: String,
    pub expr: String,
    pub r#for: String,
    pub keep_firing_for: Option<String>,
    pub summary: String,
    pub description: String,
    pub runbook_url: String,
}

/// The alerting rules of a rule file like ours (one group, `expr` inline
/// or a `|` block, `description` a `>-` block): enough YAML for the tests
/// without a YAML parser; Prometheus parses the file for real.
pub fn rules(yaml: &str) -> Vec<Rule> {
    let mut out: Vec<Rule> = Vec::new();
    let lines: Vec<&str> = yaml.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        i += 1;
        if trimmed.starts_with('#') {
            continue;
        }
        if let Some(name) = trimmed.strip_prefix("- alert: ") {
            out.push(Rule {
                alert: name.trim().to_owned(),
                ..Rule::default()
            });
            continue;
        }
        let Some(rule) = out.last_mut() else { continue };
        let Some((key, value)) = trimmed.split_once(':') else {
            continue;
        };
        let mut value = value.trim().trim_matches('"').to_owned();
        if value == "|" || value == ">-" {
            let mut block = Vec::new();
            while i < lines.len() {
                let next = lines[i];
                let next_indent = next.len() - next.trim_start().len();
                if !next.trim().is_empty() && next_indent <= indent {
                    break;
                }
                block.push(next.trim());
                i += 1;
            }
            value = block.join(" ").trim().to_owned();
        }
        match key {
            "expr" => rule.expr = value,
            "for" => rule.r#for = value,
            "keep_firing_for" => rule.keep_firing_for = Some(value),
            "summary" => rule.summary = value,
            "description" => rule.description = value,
            "runbook_url" => rule.runbook_url = value,
            _ => {}
        }
    }
    out
}

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
pub fn strings_under(
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

/// Every metric name the shipped dashboard, Grafana alert rules and
/// Prometheus rules query.
pub fn queried_metric_names() -> Result<BTreeSet<String>, GrafanaFileError> {
    let mut names = metric_names_in(DASHBOARD_JSON, ALERTS_JSON)?;
    for r in rules(RULES_YML) {
        names.extend(metric_names(&r.expr));
    }
    Ok(names)
}

/// PromQL words that are not metric names (besides [`LABEL_LISTS`]).
const KEYWORDS: &[&str] = &[
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
