//! The shipped Grafana dashboard and alert rules and the Prometheus rule
//! file, read as files: every metric they query is one `/metrics` renders
//! (a renamed metric would leave an empty panel and an alert that never
//! fires), the dashboard has the asked panels, the alerts are per instance
//! and do not flap. (Prometheus itself evaluates them in tests/prometheus.rs.)

mod support;

use std::collections::BTreeSet;

use support::grafana::*;
use support::metrics::sample_names;

const RUNBOOK: &str = include_str!("../docs/runbook.md");

/// GitHub's anchor for a heading: lower case, spaces to dashes, most
/// punctuation dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// Every `## ` heading of the runbook, as anchors.
fn runbook_anchors() -> BTreeSet<String> {
    RUNBOOK
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(anchor)
        .collect()
}

#[test]
fn the_prometheus_rules_are_per_instance_documented_and_linked() {
    let rules = rules(RULES_YML);
    let names: Vec<&str> = rules.iter().map(|r| r.alert.as_str()).collect();
    assert_eq!(
        names,
        [
            "PizzaFactorySuccessRateLow",
            "PizzaFactoryChaosUnresolved",
            "PizzaFactoryCircuitNotClosed",
            "FactorySidecarConfigReloadFailed",
            "PizzaOrdersParked",
            "FactorySidecarAsyncOrderQueued",
            "FactorySidecarAsyncOrdersOff"
        ]
    );
    let anchors = runbook_anchors();
    for r in &rules {
        assert!(
            r.expr.contains("by (job, instance"),
            "{}: per instance: {}",
            r.alert,
            r.expr
        );
        assert!(!r.r#for.is_empty(), "{}: a pending period", r.alert);
        assert!(r.summary.contains("{{ $labels.instance }}"), "{}", r.alert);
        assert!(!r.description.is_empty(), "{}", r.alert);
        let fragment = r
            .runbook_url
            .strip_prefix("${RUNBOOK_URL}#")
            .unwrap_or_else(|| panic!("{}: runbook_url {}", r.alert, r.runbook_url));
        assert!(
            anchors.contains(fragment),
            "{}: no runbook section #{fragment}",
            r.alert
        );
    }
    assert_eq!(rules[0].r#for, "2m");
    assert_eq!(rules[0].keep_firing_for.as_deref(), Some("5m"));
    // The Grafana rules link into the same runbook sections.
    for url in strings_under(ALERTS_JSON, "the alert rules", "runbook_url").expect("JSON") {
        let fragment = url.strip_prefix("${RUNBOOK_URL}#").expect("placeholder");
        assert!(anchors.contains(fragment), "no runbook section #{fragment}");
    }
}

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
    use factory_sidecar::chaos::{ChaosType, ResolveResult};
    use factory_sidecar::resilience::breaker::CircuitState;
    use factory_sidecar::resilience::classify::FailureKind;
    use factory_sidecar::telemetry::metrics::{ClientResult, Metrics, Route};
    use factory_sidecar::telemetry::outcome::RequestOutcome;
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
    let bad = metric_names_in(r#"{"expr":"rate(sidecar_retry_total[5m])"}"#, "{}").expect("json");
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
    // Per instance, and with every try failing (no successful series on
    // some instance) the rate reads 0%, not "no data" (which would keep the
    // alert OK through a total outage).
    let expr = success["data"][0]["model"]["expr"].as_str().expect("expr");
    assert!(expr.contains("sum by (instance)"), "{expr}");
    assert!(expr.contains(" * 0)"), "a total outage reads 0%: {expr}");
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
        let runbook = r["annotations"]["runbook_url"]
            .as_str()
            .expect("runbook_url");
        assert!(runbook.starts_with("${RUNBOOK_URL}#"), "{runbook}");
        let summary = r["annotations"]["summary"].as_str().expect("summary");
        assert!(summary.contains("$labels.instance"), "{summary}");
        assert!(
            r["data"][0]["model"]["expr"]
                .as_str()
                .is_some_and(|e| e.contains("by (instance")),
            "per instance: {r}"
        );
        assert_eq!(r["data"][0]["datasourceUid"], "prometheus");
    }
}

#[test]
fn expressions_are_found_anywhere_in_the_json() {
    let json = r#"{"panels":[{"targets":[{"expr":"a"},{"expr":"b"}]},{"panels":[{"targets":[{"expr":"c"}]}]}]}"#;
    assert_eq!(expressions(json, "t").expect("json"), ["a", "b", "c"]);
    assert!(expressions("{", "t").is_err());
}
