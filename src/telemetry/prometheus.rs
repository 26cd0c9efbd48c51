//! Prometheus text exposition (format 0.0.4) of collected OpenTelemetry data,
//! following the OTel-to-Prometheus compatibility rules: dots become
//! underscores, unit `s` becomes a `_seconds` suffix, monotonic sums are
//! counters with `_total`, histograms expand to cumulative `_bucket{le}`,
//! `_sum` and `_count`. Written here, over the SDK's own data, so there is
//! one set of instruments (see [`super::metrics`]).

use std::fmt::Write;

use opentelemetry::KeyValue;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, Metric, MetricData, ResourceMetrics};

/// Renders every metric in `rm`.
pub fn render(rm: &ResourceMetrics) -> String {
    let mut out = String::with_capacity(8 * 1024);
    for scope in rm.scope_metrics() {
        for metric in scope.metrics() {
            match metric.data() {
                AggregatedMetrics::F64(data) => render_metric(&mut out, metric, data),
                AggregatedMetrics::U64(data) => render_metric(&mut out, metric, data),
                AggregatedMetrics::I64(data) => render_metric(&mut out, metric, data),
            }
        }
    }
    out
}

/// A value Prometheus can print.
trait Sample: Copy {
    fn write(self, out: &mut String);
}

impl Sample for f64 {
    fn write(self, out: &mut String) {
        write_f64(out, self);
    }
}
impl Sample for u64 {
    fn write(self, out: &mut String) {
        let _ = write!(out, "{self}");
    }
}
impl Sample for i64 {
    fn write(self, out: &mut String) {
        let _ = write!(out, "{self}");
    }
}

fn write_f64(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v == f64::INFINITY {
        out.push_str("+Inf");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else {
        let _ = write!(out, "{v}");
    }
}

/// The Prometheus name for an OTel metric (without type suffixes).
pub fn base_name(name: &str, unit: &str) -> String {
    let mut n = sanitize(name);
    let suffix = match unit {
        "s" => Some("seconds"),
        "ms" => Some("milliseconds"),
        "By" => Some("bytes"),
        _ => None,
    };
    if let Some(suffix) = suffix
        && !n.ends_with(suffix)
    {
        n.push('_');
        n.push_str(suffix);
    }
    n
}

fn sanitize(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    s
}

fn render_metric<T: Sample>(out: &mut String, metric: &Metric, data: &MetricData<T>) {
    let base = base_name(metric.name(), metric.unit());
    match data {
        MetricData::Gauge(g) => {
            header(out, &base, metric.description(), "gauge");
            for dp in g.data_points() {
                line(out, &base, dp.attributes(), None, dp.value());
            }
        }
        MetricData::Sum(s) => {
            let (name, kind) = if s.is_monotonic() {
                (format!("{base}_total"), "counter")
            } else {
                (base.clone(), "gauge")
            };
            header(out, &name, metric.description(), kind);
            for dp in s.data_points() {
                line(out, &name, dp.attributes(), None, dp.value());
            }
        }
        MetricData::Histogram(h) => {
            header(out, &base, metric.description(), "histogram");
            let bucket = format!("{base}_bucket");
            for dp in h.data_points() {
                let mut cumulative = 0u64;
                let mut counts = dp.bucket_counts();
                for bound in dp.bounds() {
                    cumulative += counts.next().unwrap_or(0);
                    let mut le = String::new();
                    write_f64(&mut le, bound);
                    line(out, &bucket, dp.attributes(), Some(&le), cumulative);
                }
                cumulative += counts.sum::<u64>();
                line(out, &bucket, dp.attributes(), Some("+Inf"), cumulative);
                line(out, &format!("{base}_sum"), dp.attributes(), None, dp.sum());
                line(
                    out,
                    &format!("{base}_count"),
                    dp.attributes(),
                    None,
                    dp.count(),
                );
            }
        }
        // Not used by the sidecar's instruments.
        MetricData::ExponentialHistogram(_) => {}
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn line<'a, T: Sample>(
    out: &mut String,
    name: &str,
    attrs: impl Iterator<Item = &'a KeyValue>,
    le: Option<&str>,
    value: T,
) {
    out.push_str(name);
    let mut first = true;
    let mut open = |out: &mut String| {
        out.push(if first { '{' } else { ',' });
        first = false;
    };
    // Sorted by name: stable output whatever order attributes were recorded in.
    let mut attrs: Vec<&KeyValue> = attrs.collect();
    attrs.sort_by(|a, b| a.key.as_str().cmp(b.key.as_str()));
    for kv in attrs {
        open(out);
        out.push_str(&sanitize(kv.key.as_str()));
        out.push_str("=\"");
        escape_label(out, &kv.value.as_str());
        out.push('"');
    }
    if let Some(le) = le {
        open(out);
        let _ = write!(out, "le=\"{le}\"");
    }
    if !first {
        out.push('}');
    }
    out.push(' ');
    value.write(out);
    out.push('\n');
}

fn escape_label(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::ChaosType;
    use crate::resilience::breaker::CircuitState;
    use crate::resilience::classify::FailureKind;
    use crate::telemetry::metrics::{ClientResult, Metrics, Route};
    use crate::telemetry::outcome::RequestOutcome;
    use http::{Method, StatusCode};
    use std::time::Duration;

    #[test]
    fn names_follow_the_otel_to_prometheus_rules() {
        assert_eq!(
            base_name("http.server.request.duration", "s"),
            "http_server_request_duration_seconds"
        );
        assert_eq!(base_name("sidecar.retries", ""), "sidecar_retries");
        assert_eq!(base_name("x.duration_seconds", "s"), "x_duration_seconds");
        assert_eq!(base_name("9lives", ""), "_9lives");
    }

    #[test]
    fn every_spec_metric_is_rendered_with_its_attributes() {
        let m = Metrics::new("pizza-factory.cs329.click");
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
        m.client_request(
            &Method::POST,
            ClientResult::Error(FailureKind::Timeout),
            Duration::from_secs(5),
        );
        m.retry(FailureKind::Status5xx);
        m.circuit_state(CircuitState::Open);
        m.circuit_transition(CircuitState::Closed, CircuitState::Open);
        m.circuit_rejection();
        m.chaos_detected(ChaosType::Fail);
        m.chaos_active(ChaosType::Fail, true);
        m.chaos_resolution(crate::chaos::ResolveResult::Resolved);
        let text = m.prometheus_text();

        for expected in [
            "# TYPE http_server_request_duration_seconds histogram",
            "http_server_request_duration_seconds_count{http_request_method=\"POST\",http_response_status_code=\"200\",http_route=\"/api/order\",sidecar_outcome=\"ok\"} 2",
            "http_server_request_duration_seconds_bucket{http_request_method=\"POST\",http_response_status_code=\"200\",http_route=\"/api/order\",sidecar_outcome=\"ok\",le=\"0.005\"} 1",
            "http_server_request_duration_seconds_bucket{http_request_method=\"POST\",http_response_status_code=\"200\",http_route=\"/api/order\",sidecar_outcome=\"ok\",le=\"+Inf\"} 2",
            "http_client_request_duration_seconds_count{http_request_method=\"POST\",http_response_status_code=\"500\",server_address=\"pizza-factory.cs329.click\"} 1",
            "http_client_request_duration_seconds_count{error_type=\"timeout\",http_request_method=\"POST\",server_address=\"pizza-factory.cs329.click\"} 1",
            "# TYPE sidecar_retries_total counter",
            "sidecar_retries_total{reason=\"5xx\"} 1",
            "# TYPE sidecar_circuit_state gauge",
            "sidecar_circuit_state 2",
            "sidecar_circuit_transitions_total{from=\"closed\",to=\"open\"} 1",
            "sidecar_circuit_rejections_total 1",
            "sidecar_chaos_detected_total{chaos_type=\"fail\"} 1",
            "sidecar_chaos_active{chaos_type=\"fail\"} 1",
            "sidecar_chaos_active{chaos_type=\"badjwt\"} 0",
            "sidecar_chaos_resolutions_total{result=\"resolved\"} 1",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
        // Every line is a comment or `name{labels} value`.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let value = l.rsplit(' ').next().expect("value");
            assert!(
                value.parse::<f64>().is_ok() || value == "+Inf",
                "bad sample line {l:?}"
            );
        }
    }

    #[test]
    fn label_values_are_escaped() {
        let mut out = String::new();
        escape_label(&mut out, "a\"b\\c\nd");
        assert_eq!(out, "a\\\"b\\\\c\\nd");
    }
}
