//! The access log of the real binary: one line per request at info, in the
//! configured format, with the fields an operator greps for, never the
//! query string or a report link's key; `[log] access_log = false` (here
//! by a reload) turns it off.

mod support;

use factory_sidecar::sim::ChaosSpec;
use support::binary::Binary;
use support::client::TestClient;

fn config(upstream: &str, format: &str, access_log: bool, tail: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[upstream]\nurl = \"{upstream}\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"t\"\n\
         [log]\nformat = \"{format}\"\naccess_log = {access_log}\n{tail}"
    )
}

fn access_lines(logs: &str) -> Vec<serde_json::Value> {
    logs.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "factory_sidecar::access")
        .collect()
}

#[tokio::test]
async fn one_json_line_per_request_with_its_fields_and_no_secrets() {
    let factory = support::sim::start().await;
    let tail = "[chaos]\nauto_resolve = false\n[retry]\nmax_attempts = 1\n";
    let bin = Binary::start(&config(&factory.url(), "json", true, tail)).await;
    let client = TestClient::http1();
    let url = format!("{}/api/order?apiKey=query-secret", bin.url);
    let order = || client.order_to(&url, factory.api_key(), &[]);
    assert_eq!(order().await.status, 200);
    let line = bin
        .wait_for_log(&["\"factory_sidecar::access\"", "\"status\":200"])
        .await;
    let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(v["level"], "INFO");
    assert_eq!(v["message"], "request");
    assert_eq!(v["client"], "127.0.0.1");
    assert_eq!(v["method"], "POST");
    assert_eq!(v["path"], "/api/order");
    assert_eq!(v["outcome"], "ok");
    assert_eq!(v["attempts"], 1);
    assert!(v["duration_ms"].as_f64().is_some_and(|d| d > 0.0), "{v}");
    assert!(v["bytes"].as_u64().is_some_and(|b| b > 0), "{v}");
    assert!(
        v.get("trace_id").is_none() && v.get("episode").is_none(),
        "{v}"
    );

    // Chaos left open (auto-resolve off): the next lines name its episode.
    factory.set_chaos(ChaosSpec::fail());
    let failed = order().await;
    assert_eq!(failed.status, 500);
    order().await;
    let line = bin
        .wait_for_log(&["\"factory_sidecar::access\"", "\"episode\":1"])
        .await;
    assert!(line.contains("\"outcome\":\"factory_error\""), "{line}");

    // A report-link path: its key and code never reach the log.
    let key = factory.api_key().to_owned();
    let support = format!("{}/api/support/{key}/report/abc123", bin.url);
    client.get(&support).await;
    bin.wait_for_log(&["\"path\":\"/api/support/****\""]).await;

    let logs = bin.logs();
    assert!(!logs.contains("query-secret"), "no query string in the log");
    assert!(!logs.contains(&key), "no apiKey in the log");
    assert_eq!(
        access_lines(&logs).len(),
        4,
        "one line per request:\n{logs}"
    );

    // Off by a reload: no more lines.
    bin.write_config(&config(&factory.url(), "json", false, tail));
    bin.signal("HUP");
    bin.wait_for_log(&["config reloaded", "log.access_log"])
        .await;
    client.get(&format!("{}/api/docs", bin.url)).await;
    client.get(&format!("{}/readyz", bin.admin)).await;
    assert_eq!(access_lines(&bin.logs()).len(), 4, "off after the reload");
    assert_eq!(bin.stop().await, Some(0));
}

#[tokio::test]
async fn text_lines_carry_the_same_fields() {
    let factory = support::sim::start().await;
    let bin = Binary::start(&config(&factory.url(), "text", true, "")).await;
    let client = TestClient::http1();
    assert_eq!(
        client.get(&format!("{}/api/docs", bin.url)).await.status,
        200
    );
    let line = bin
        .wait_for_log(&["factory_sidecar::access", "request"])
        .await;
    for field in [
        "client=127.0.0.1",
        "method=GET",
        "path=/api/docs",
        "status=200",
        "outcome=ok",
        "attempts=1",
        "duration_ms=",
    ] {
        assert!(line.contains(field), "{field} in {line}");
    }
    assert!(line.contains(" INFO "), "{line}");
    assert_eq!(bin.stop().await, Some(0));
}
