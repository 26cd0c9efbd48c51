//! Renders an OpenTelemetry collection as Prometheus text exposition
//! (format 0.0.4), for the admin `GET /metrics`.
//!
//! The names follow the OpenTelemetry-to-Prometheus compatibility rules, so a
//! dashboard reads the same series whether they were scraped here or
//! converted by a collector from OTLP: dots become underscores, the unit is
//! appended (`s` -> `_seconds`; annotations like `{retry}` are dropped),
//! monotonic sums get `_total`, histograms become `_bucket`/`_sum`/`_count`
//! with cumulative `le` buckets, non-monotonic sums and gauges are gauges,
//! and the resource becomes a `target_info` gauge. Series are sorted so two
//! scrapes of the same state are byte-identical.
//!
//! Why not the `prometheus-client` crate: it keeps its own registry and its
//! own aggregation, so every measurement would be recorded twice and the two
//! exports could drift apart; rendering the SDK's collection keeps one
//! source of truth and is a few hundred lines.

use std::fmt::Write as _;

use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::metrics::data::{
    AggregatedMetrics, Gauge, Histogram, Metric, MetricData, ResourceMetrics, Sum,
};

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How a metric is exposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// The Prometheus family name of an OpenTelemetry metric (without the
/// `_bucket`/`_sum`/`_count` sample suffixes of a histogram).
pub fn metric_name(name: &str, unit: &str, kind: Kind) -> String {
    let mut out = sanitize(name, true);
    if let Some(suffix) = unit_suffix(unit, kind)
        && !out.ends_with(&format!("_{suffix}"))
    {
        out.push('_');
        out.push_str(&suffix);
    }
    if kind == Kind::Counter && !out.ends_with("_total") {
        out.push_str("_total");
    }
    out
}

/// The Prometheus label name of an attribute key.
pub fn label_name(key: &str) -> String {
    sanitize(key, false)
}

/// Every character outside `[a-zA-Z0-9_]` (plus `:` in metric names)
/// becomes `_`, runs of `_` collapse, and a leading digit gets a `_` prefix.
fn sanitize(s: &str, metric: bool) -> String {
    let mut out = String::with_capacity(s.len() + 1);
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        out.push('_');
    }
    for c in s.chars() {
        let ok = c.is_ascii_alphanumeric() || c == '_' || (metric && c == ':');
        let c = if ok { c } else { '_' };
        if c == '_' && out.ends_with('_') {
            continue;
        }
        out.push(c);
    }
    out
}

/// The unit word appended to a name: UCUM units spelled out; `{...}`
/// annotations dropped; `1` is `ratio` on gauges only.
fn unit_suffix(unit: &str, kind: Kind) -> Option<String> {
    // Drop annotations: "{retry}" -> "", "By{packet}" -> "By".
    let mut base = String::new();
    let mut depth = 0usize;
    for c in unit.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            _ if depth == 0 => base.push(c),
            _ => {}
        }
    }
    let base = base.trim();
    if base.is_empty() {
        return None;
    }
    if base == "1" {
        return (kind == Kind::Gauge).then(|| "ratio".to_owned());
    }
    let (num, per) = match base.split_once('/') {
        Some((n, p)) => (n, Some(p)),
        None => (base, None),
    };
    let mut out = word(num);
    if let Some(p) = per {
        out = format!("{out}_per_{}", per_word(p));
    }
    let out = sanitize(&out, false);
    let out = out.trim_matches('_').to_owned();
    (!out.is_empty()).then_some(out)
}

fn word(u: &str) -> String {
    match u {
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "%" => "percent",
        other => other,
    }
    .to_owned()
}

fn per_word(u: &str) -> String {
    match u {
        "s" => "second",
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        "mo" => "month",
        "y" => "year",
        other => other,
    }
    .to_owned()
}

/// Escapes a label value: backslash, double quote, line feed.
pub fn escape_label_value(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Escapes `# HELP` text: backslash and line feed.
fn escape_help(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn value_str(v: &Value) -> String {
    match v {
        Value::Bool(b) => b.to_string(),
        Value::I64(i) => i.to_string(),
        Value::F64(f) => fmt_f64(*f),
        other => other.as_str().into_owned(),
    }
}

fn fmt_f64(f: f64) -> String {
    if f.is_nan() {
        "NaN".to_owned()
    } else if f == f64::INFINITY {
        "+Inf".to_owned()
    } else if f == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        f.to_string()
    }
}

/// `{a="1",b="2"}` from attributes (sorted by label name), plus `extra`
/// (the histogram `le`) last; empty string when there are no labels.
fn labels<'a>(attrs: impl Iterator<Item = &'a KeyValue>, extra: Option<(&str, &str)>) -> String {
    let mut pairs: Vec<(String, String)> = attrs
        .map(|kv| (label_name(kv.key.as_str()), value_str(&kv.value)))
        .collect();
    pairs.sort();
    if pairs.is_empty() && extra.is_none() {
        return String::new();
    }
    let mut out = String::from("{");
    let mut first = true;
    let extra = extra.map(|(k, v)| (k.to_owned(), v.to_owned()));
    for (k, v) in pairs.iter().chain(extra.iter()) {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(k);
        out.push_str("=\"");
        escape_label_value(v, &mut out);
        out.push('"');
    }
    out.push('}');
    out
}

/// A number that Prometheus parses.
trait Num: Copy {
    fn text(self) -> String;
}
impl Num for u64 {
    fn text(self) -> String {
        self.to_string()
    }
}
impl Num for i64 {
    fn text(self) -> String {
        self.to_string()
    }
}
impl Num for f64 {
    fn text(self) -> String {
        fmt_f64(self)
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: Kind) {
    if !help.is_empty() {
        let _ = write!(out, "# HELP {name} ");
        escape_help(help, out);
        out.push('\n');
    }
    let _ = writeln!(out, "# TYPE {name} {}", kind.as_str());
}

fn gauge<T: Num>(out: &mut String, m: &Metric, g: &Gauge<T>) {
    let name = metric_name(m.name(), m.unit(), Kind::Gauge);
    header(out, &name, m.description(), Kind::Gauge);
    let mut lines: Vec<String> = g
        .data_points()
        .map(|p| {
            format!(
                "{name}{} {}",
                labels(p.attributes(), None),
                p.value().text()
            )
        })
        .collect();
    lines.sort();
    for l in lines {
        out.push_str(&l);
        out.push('\n');
    }
}

fn sum<T: Num>(out: &mut String, m: &Metric, s: &Sum<T>) {
    let kind = if s.is_monotonic() {
        Kind::Counter
    } else {
        Kind::Gauge
    };
    let name = metric_name(m.name(), m.unit(), kind);
    header(out, &name, m.description(), kind);
    let mut lines: Vec<String> = s
        .data_points()
        .map(|p| {
            format!(
                "{name}{} {}",
                labels(p.attributes(), None),
                p.value().text()
            )
        })
        .collect();
    lines.sort();
    for l in lines {
        out.push_str(&l);
        out.push('\n');
    }
}

fn histogram<T: Num>(out: &mut String, m: &Metric, h: &Histogram<T>) {
    let name = metric_name(m.name(), m.unit(), Kind::Histogram);
    header(out, &name, m.description(), Kind::Histogram);
    let mut points: Vec<(String, String)> = h
        .data_points()
        .map(|p| {
            let mut block = String::new();
            let mut cumulative = 0u64;
            let counts: Vec<u64> = p.bucket_counts().collect();
            for (i, bound) in p.bounds().enumerate() {
                cumulative += counts.get(i).copied().unwrap_or(0);
                let le = fmt_f64(bound);
                let _ = writeln!(
                    block,
                    "{name}_bucket{} {cumulative}",
                    labels(p.attributes(), Some(("le", &le)))
                );
            }
            let plain = labels(p.attributes(), None);
            let _ = writeln!(
                block,
                "{name}_bucket{} {}",
                labels(p.attributes(), Some(("le", "+Inf"))),
                p.count()
            );
            let _ = writeln!(block, "{name}_sum{plain} {}", p.sum().text());
            let _ = writeln!(block, "{name}_count{plain} {}", p.count());
            (plain, block)
        })
        .collect();
    points.sort();
    for (_, block) in points {
        out.push_str(&block);
    }
}

/// The whole exposition: `target_info` first, then every metric.
pub fn render(rm: &ResourceMetrics) -> String {
    let mut out = String::with_capacity(8 * 1024);
    let resource = rm.resource();
    if !resource.is_empty() {
        header(&mut out, "target_info", "Target metadata", Kind::Gauge);
        let kvs: Vec<KeyValue> = resource
            .iter()
            .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
            .collect();
        let _ = writeln!(out, "target_info{} 1", labels(kvs.iter(), None));
    }
    for sm in rm.scope_metrics() {
        for m in sm.metrics() {
            match m.data() {
                AggregatedMetrics::F64(d) => data(&mut out, m, d),
                AggregatedMetrics::U64(d) => data(&mut out, m, d),
                AggregatedMetrics::I64(d) => data(&mut out, m, d),
            }
        }
    }
    out
}

fn data<T: Num>(out: &mut String, m: &Metric, d: &MetricData<T>) {
    match d {
        MetricData::Gauge(g) => gauge(out, m, g),
        MetricData::Sum(s) => sum(out, m, s),
        MetricData::Histogram(h) => histogram(out, m, h),
        // Not produced by our instruments (no exponential-histogram view).
        MetricData::ExponentialHistogram(_) => {}
    }
}

/// The sample names (`http_server_request_duration_seconds_bucket`, ...)
/// present in an exposition: what a PromQL query can select.
pub fn sample_names(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::{ChaosType, ResolveResult};
    use crate::error::RequestOutcome;
    use crate::resilience::breaker::CircuitState;
    use crate::resilience::classify::FailureKind;
    use crate::telemetry::metrics::{ClientResult, Metrics, Route};
    use http::{Method, StatusCode};
    use std::time::Duration;

    #[test]
    fn names_follow_the_otel_to_prometheus_rules() {
        assert_eq!(
            metric_name("http.server.request.duration", "s", Kind::Histogram),
            "http_server_request_duration_seconds"
        );
        assert_eq!(
            metric_name("sidecar.retries", "{retry}", Kind::Counter),
            "sidecar_retries_total"
        );
        assert_eq!(
            metric_name("sidecar.circuit.state", "{state}", Kind::Gauge),
            "sidecar_circuit_state"
        );
        assert_eq!(
            metric_name("cpu.utilization", "1", Kind::Gauge),
            "cpu_utilization_ratio"
        );
        assert_eq!(metric_name("x.count", "1", Kind::Counter), "x_count_total");
        assert_eq!(
            metric_name("rx", "By/s", Kind::Gauge),
            "rx_bytes_per_second"
        );
        assert_eq!(
            metric_name("already_seconds", "s", Kind::Gauge),
            "already_seconds"
        );
        assert_eq!(metric_name("jobs_total", "", Kind::Counter), "jobs_total");
        assert_eq!(
            label_name("http.response.status_code"),
            "http_response_status_code"
        );
        assert_eq!(label_name("2xx"), "_2xx");
    }

    #[test]
    fn label_values_are_escaped() {
        let mut s = String::new();
        escape_label_value("a\\b\"c\nd", &mut s);
        assert_eq!(s, "a\\\\b\\\"c\\nd");
        let kvs = [KeyValue::new("weird.key", "x\"y")];
        assert_eq!(labels(kvs.iter(), None), "{weird_key=\"x\\\"y\"}");
    }

    fn all_recorded() -> Metrics {
        let m = Metrics::new("factory.test:443");
        m.server_request(
            &Method::POST,
            Route::Order,
            StatusCode::OK,
            RequestOutcome::Ok,
            Duration::from_millis(3),
        );
        m.server_request(
            &Method::POST,
            Route::Order,
            StatusCode::OK,
            RequestOutcome::Ok,
            Duration::from_millis(30),
        );
        m.client_request(
            &Method::POST,
            ClientResult::Status(StatusCode::INTERNAL_SERVER_ERROR),
            Duration::from_millis(2),
        );
        m.retry(FailureKind::Status5xx);
        m.circuit_state(CircuitState::HalfOpen);
        m.circuit_transition(CircuitState::Open, CircuitState::HalfOpen);
        m.circuit_rejection();
        m.chaos_detected(ChaosType::Fail);
        m.chaos_active(ChaosType::Fail, true);
        m.chaos_resolution(ResolveResult::Resolved);
        m
    }

    #[test]
    fn renders_every_family_with_help_type_and_values() {
        let text = all_recorded().prometheus_text();
        for line in [
            "# TYPE http_server_request_duration_seconds histogram",
            "# TYPE http_client_request_duration_seconds histogram",
            "# TYPE sidecar_retries_total counter",
            "# TYPE sidecar_circuit_state gauge",
            "# TYPE sidecar_circuit_transitions_total counter",
            "# TYPE sidecar_circuit_rejections_total counter",
            "# TYPE sidecar_chaos_detected_total counter",
            "# TYPE sidecar_chaos_active gauge",
            "# TYPE sidecar_chaos_resolutions_total counter",
            "# TYPE target_info gauge",
            "sidecar_circuit_state 1",
            "sidecar_circuit_rejections_total 1",
            "sidecar_retries_total{reason=\"5xx\"} 1",
            "sidecar_retries_total{reason=\"connect\"} 0",
            "sidecar_chaos_active{chaos_type=\"fail\"} 1",
            "sidecar_chaos_active{chaos_type=\"badjwt\"} 0",
            "sidecar_chaos_detected_total{chaos_type=\"fail\"} 1",
            "sidecar_chaos_resolutions_total{result=\"resolved\"} 1",
            "sidecar_circuit_transitions_total{from=\"open\",to=\"half_open\"} 1",
            "http_server_request_duration_seconds_bucket{http_request_method=\"POST\",http_response_status_code=\"200\",http_route=\"/api/order\",sidecar_outcome=\"ok\",le=\"0.0025\"} 0",
            "http_server_request_duration_seconds_bucket{http_request_method=\"POST\",http_response_status_code=\"200\",http_route=\"/api/order\",sidecar_outcome=\"ok\",le=\"0.005\"} 1",
            "http_server_request_duration_seconds_bucket{http_request_method=\"POST\",http_response_status_code=\"200\",http_route=\"/api/order\",sidecar_outcome=\"ok\",le=\"0.05\"} 2",
            "http_server_request_duration_seconds_bucket{http_request_method=\"POST\",http_response_status_code=\"200\",http_route=\"/api/order\",sidecar_outcome=\"ok\",le=\"+Inf\"} 2",
            "http_server_request_duration_seconds_count{http_request_method=\"POST\",http_response_status_code=\"200\",http_route=\"/api/order\",sidecar_outcome=\"ok\"} 2",
            "http_server_request_duration_seconds_sum{http_request_method=\"POST\",http_response_status_code=\"200\",http_route=\"/api/order\",sidecar_outcome=\"ok\"} 0.033",
            "http_client_request_duration_seconds_count{error_type=\"5xx\",http_request_method=\"POST\",http_response_status_code=\"500\",server_address=\"factory.test:443\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing line {line:?} in:\n{text}"
            );
        }
        assert!(text.contains("# HELP sidecar_circuit_state Circuit breaker state"));
        assert!(text.contains("service_name=\"factory-sidecar\""), "{text}");
        // Every non-comment line is `name[{labels}] value`.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let value = l.rsplit(' ').next().expect("value");
            assert!(
                value.parse::<f64>().is_ok() || value == "+Inf" || value == "NaN",
                "bad value in {l:?}"
            );
        }
    }

    #[test]
    fn rendering_is_deterministic() {
        let m = all_recorded();
        assert_eq!(m.prometheus_text(), m.prometheus_text());
    }

    #[test]
    fn sample_names_lists_what_promql_can_select() {
        let names = sample_names(&all_recorded().prometheus_text());
        for n in [
            "http_server_request_duration_seconds_bucket",
            "http_server_request_duration_seconds_count",
            "http_server_request_duration_seconds_sum",
            "sidecar_retries_total",
            "target_info",
        ] {
            assert!(names.contains(n), "{n} not in {names:?}");
        }
    }
}
