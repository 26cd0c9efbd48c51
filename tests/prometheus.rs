//! A real Prometheus scraping a sidecar in front of the simulator, as an
//! SRE runs it: every dashboard expression returns data, the first circuit
//! opening and the first episode of each chaos type are counted by
//! `increase()` (their series exist from start at 0), and the shipped
//! Prometheus rules, evaluated by that Prometheus, reach `firing` for what
//! the factory did, with an absolute runbook link.
//!
//! The factory goes through healthy, fail, badjwt, throttle (each resolved
//! by the sidecar itself), fail again with auto-resolve turned off by a
//! config reload (so the chaos alert fires; then resolved by
//! `POST /chaos/resolve`), and down (the circuit opens and stays open).
//! Chaos is set with the simulator's control API (`PUT /sim/chaos`).
//!
//! The rule file is the shipped one with two test-only changes: every
//! `for`/`keep_firing_for` shortened to seconds, and `${RUNBOOK_URL}` set.

mod support;

use std::time::Duration;

use factory_sidecar::app::Sidecar;
use factory_sidecar::config::{Config, ProcessEnv};
use http::Method;
use support::client::TestClient;
use support::grafana::{DASHBOARD_JSON, RULES_YML, expressions};
use support::prometheus::Prometheus;

const TOKEN: &str = "prometheus-test-token";
const RUNBOOK_URL: &str = "https://runbooks.example/factory-sidecar/runbook.md";
/// Long enough for a scrape and an evaluation or two on a busy machine.
const WAIT: Duration = Duration::from_secs(30);

/// The shipped rules with the test's short pending periods (a test copy:
/// the shipped file keeps its minutes) and the runbook base set, as a
/// deploy would with envsubst.
fn test_rules() -> String {
    let mut rules = RULES_YML.replace("${RUNBOOK_URL}", RUNBOOK_URL);
    for (from, to) in [
        ("for: 2m", "for: 2s"),
        ("for: 1m", "for: 2s"),
        ("for: 10m", "for: 2s"),
        ("keep_firing_for: 5m", "keep_firing_for: 5s"),
    ] {
        assert!(rules.contains(from), "the shipped rules have {from}");
        rules = rules.replace(from, to);
    }
    rules
}

/// The sidecar's config file: listeners on port 0, a breaker that opens on
/// the simulator's `down` (every other connection dropped: 50% failures
/// over at least 6 tries in 2 s, so the three failing tries of the
/// unresolved `fail` order do not trip it) and then stays open, throttle
/// found at the simulator's fast delay.
fn sidecar_toml(upstream: &str, auto_resolve: bool) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\
         [upstream]\nurl = \"{upstream}\"\nattempt_timeout = \"2s\"\nrequest_timeout = \"5s\"\n\
         [retry]\ninitial_backoff = \"5ms\"\nmax_backoff = \"20ms\"\n\
         [circuit_breaker]\nwindow = \"2s\"\nminimum_calls = 6\nfailure_rate_percent = 50\n\
         consecutive_failures = 50\nopen_for = \"60s\"\n\
         [chaos]\nauto_resolve = {auto_resolve}\nslow_threshold = \"20ms\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n\
         [log]\nlevel = \"warn\"\n"
    )
}

struct World {
    client: TestClient,
    sim: factory_sidecar::sim::SimHandle,
    sidecar: Sidecar,
    config: std::path::PathBuf,
    prometheus: Prometheus,
    instance: String,
}

impl World {
    async fn chaos(&self, kind: &str) {
        let res = self
            .client
            .request(
                Method::PUT,
                &format!("{}/sim/chaos", self.sim.url()),
                &[("content-type", "application/json")],
                &format!("{{\"type\": \"{kind}\"}}"),
            )
            .await;
        assert_eq!(res.status, 200, "PUT /sim/chaos {kind}: {}", res.text());
    }

    async fn order(&self) -> u16 {
        let proxy = format!("http://{}", self.sidecar.proxy_addr());
        let res = self.client.order(&proxy, self.sim.api_key()).await;
        res.status.as_u16()
    }

    /// An order sent and not waited for (its answer may take the order's
    /// whole patience); answered at the latest when the sidecar stops.
    fn order_in_background(&self) {
        let req = http::Request::post(format!("http://{}/api/order", self.sidecar.proxy_addr()))
            .header("authorization", format!("Bearer {}", self.sim.api_key()))
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from_static(
                factory_sidecar::sim::SAMPLE_ORDER.as_bytes(),
            )))
            .expect("request");
        tokio::spawn(async move {
            // Its outcome is not this test's subject (a timeout is fine).
            let _ = support::http::Http::new().send(req).await;
        });
    }

    async fn admin_post(&self, path: &str) -> (u16, serde_json::Value) {
        let url = format!("http://{}{path}", self.sidecar.admin_addr());
        let res = self.client.with_token(Method::POST, &url, TOKEN).await;
        (res.status.as_u16(), res.json())
    }

    /// `series` (written with a label set) of this sidecar only.
    fn this(&self, series: &str) -> String {
        series.replacen('{', &format!("{{instance=\"{}\",", self.instance), 1)
    }

    /// Waits until Prometheus has scraped a value of `series` meeting `ok`.
    async fn scraped(&self, series: &str, ok: impl Fn(f64) -> bool) -> f64 {
        self.prometheus.until(&self.this(series), WAIT, ok).await
    }

    /// `increase()` over the whole run counts the first event of `series`.
    async fn counted_from_the_first(&self, series: &str) {
        let expr = format!("increase({}[10m])", self.this(series));
        let v = self.prometheus.until(&expr, WAIT, |v| v >= 0.5).await;
        assert!(v >= 0.5, "{expr} = {v}");
    }
}

#[tokio::test]
async fn prometheus_sees_every_panel_counts_first_events_and_fires_the_shipped_alerts() {
    let sim = support::sim::start().await;
    let config_path = support::temp_file("sidecar.toml", &sidecar_toml(&sim.url(), true));
    let config = Config::load(&config_path, &ProcessEnv).expect("valid config");
    let sidecar = Sidecar::start_from(config, Some(config_path.clone()))
        .await
        .expect("sidecar starts");
    let instance = sidecar.admin_addr().to_string();
    let prometheus = Prometheus::start(std::slice::from_ref(&instance), &test_rules()).await;
    let w = World {
        client: TestClient::http1(),
        sim,
        sidecar,
        config: config_path,
        prometheus,
        instance,
    };

    // Healthy, and scraped before anything happens: every counter's zero
    // is in Prometheus, so the first event is an increase.
    assert_eq!(w.order().await, 200);
    w.scraped("sidecar_chaos_detected_total{chaos_type=\"fail\"}", |v| {
        v == 0.0
    })
    .await;
    w.scraped(
        "sidecar_circuit_transitions_total{from=\"closed\",to=\"open\"}",
        |v| v == 0.0,
    )
    .await;
    w.scraped("up{job=\"factory-sidecar\"}", |v| v == 1.0).await;
    assert!(
        w.prometheus
            .alerts()
            .await
            .iter()
            .all(|a| a["state"] != "firing"),
        "nothing fires while healthy: {:?}",
        w.prometheus.alerts().await
    );

    // fail, badjwt, throttle: found and resolved by the sidecar; every
    // order still a pizza.
    for kind in ["fail", "badjwt", "throttle"] {
        w.chaos(kind).await;
        assert_eq!(w.order().await, 200, "{kind}: resolved and retried");
        w.scraped(
            &format!("sidecar_chaos_detected_total{{chaos_type=\"{kind}\"}}"),
            |v| v >= 1.0,
        )
        .await;
        w.counted_from_the_first(&format!(
            "sidecar_chaos_detected_total{{chaos_type=\"{kind}\"}}"
        ))
        .await;
    }
    w.counted_from_the_first("sidecar_chaos_resolutions_total{result=\"resolved\"}")
        .await;
    w.chaos("none").await;

    // fail with auto-resolve off (a reload): the episode stays open, the
    // chaos alert fires; the operator follows the link.
    std::fs::write(&w.config, sidecar_toml(&w.sim.url(), false)).expect("rewrite config");
    let (code, answer) = w.admin_post("/config/reload").await;
    assert_eq!(code, 200, "{answer}");
    w.chaos("fail").await;
    // Not resolved: the order waits (its patience) for someone to end the
    // chaos, so it is not awaited here.
    w.order_in_background();
    let alert = w
        .prometheus
        .firing(
            "PizzaFactoryChaosUnresolved",
            &[("chaos_type", "fail")],
            WAIT,
        )
        .await;
    assert_eq!(alert["labels"]["instance"], w.instance.as_str());
    assert_eq!(alert["labels"]["severity"], "critical");
    assert_eq!(
        alert["annotations"]["runbook_url"],
        format!("{RUNBOOK_URL}#pizza-factory-chaos-active-and-not-resolved")
    );
    assert!(
        alert["annotations"]["summary"]
            .as_str()
            .is_some_and(|s| s.contains(&w.instance)),
        "{alert}"
    );
    let (code, answer) = w.admin_post("/chaos/resolve").await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["result"], "resolved");
    assert_eq!(w.order().await, 200);

    // down: every other connection dropped; the circuit opens and stays.
    // Orders are not awaited: with patience they wait (parked while the
    // circuit is open) for longer than a test request may take.
    w.chaos("down").await;
    support::eventually("the circuit to open", WAIT, || async {
        w.order_in_background();
        let state = format!("sidecar_circuit_state{{instance=\"{}\"}}", w.instance);
        (w.prometheus.value(&state).await == Some(2.0)).then_some(())
    })
    .await;
    w.order_in_background();
    w.scraped("sidecar_orders_parked{}", |v| v >= 1.0).await;
    let parked = w.prometheus.firing("PizzaOrdersParked", &[], WAIT).await;
    assert_eq!(parked["labels"]["instance"], w.instance.as_str());
    w.counted_from_the_first("sidecar_circuit_transitions_total{from=\"closed\",to=\"open\"}")
        .await;
    w.counted_from_the_first("sidecar_chaos_detected_total{chaos_type=\"unknown\"}")
        .await;
    let circuit = w
        .prometheus
        .firing("PizzaFactoryCircuitNotClosed", &[], WAIT)
        .await;
    assert_eq!(circuit["labels"]["instance"], w.instance.as_str());
    let success = w
        .prometheus
        .firing("PizzaFactorySuccessRateLow", &[], WAIT)
        .await;
    assert_eq!(success["labels"]["instance"], w.instance.as_str());
    assert!(
        success["annotations"]["runbook_url"]
            .as_str()
            .is_some_and(|u| u.starts_with("https://")),
        "an absolute runbook link: {success}"
    );

    // Every dashboard expression returns data, with Grafana's variables
    // as Grafana fills them for this sidecar. A rate needs two scrapes of
    // its series: one that first appeared with the last orders (the
    // waiting orders' histogram) gets until the next scrapes.
    let exprs = expressions(DASHBOARD_JSON, "the dashboard").expect("dashboard JSON");
    assert!(exprs.len() >= 20, "{} expressions", exprs.len());
    let queries: Vec<String> = exprs
        .iter()
        .map(|e| {
            e.replace("$__rate_interval", "1m")
                .replace("$instance", &regex_escape(&w.instance))
        })
        .collect();
    let every = Duration::from_millis(250);
    let all = support::wait_every(WAIT, every, || async {
        without_data(&w.prometheus, &queries)
            .await
            .is_empty()
            .then_some(())
    })
    .await;
    if all.is_none() {
        let empty = without_data(&w.prometheus, &queries).await;
        panic!("panels without data: {empty:#?}");
    }

    w.sidecar.shutdown();
    w.sidecar.stopped().await;
}

/// The queries that return no data (or fail), with the failure.
async fn without_data(prometheus: &Prometheus, queries: &[String]) -> Vec<String> {
    let mut empty = Vec::new();
    for q in queries {
        match prometheus.query(q).await {
            Ok(result) if !result.is_empty() => {}
            Ok(_) => empty.push(q.clone()),
            Err(e) => empty.push(e),
        }
    }
    empty
}

/// `instance=~"$instance"`: the value as a regular expression.
fn regex_escape(s: &str) -> String {
    s.replace('.', "\\\\.")
}
