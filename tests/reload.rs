//! Config reload against the real binary, as an operator does it: edit the
//! file, `kill -HUP` (or `POST /config/reload`), and check what runs.
//! A valid change applies under load with no failed order and the state
//! kept; an invalid file, or a change that needs a restart, leaves the old
//! config running and says why; SIGHUP never ends the process.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use factory_sidecar::sim::ChaosSpec;
use http::Method;
use support::binary::Binary;
use support::client::TestClient;
use support::{eventually, metrics};

/// A config with both listeners on port 0, JSON logs at `level`, `token`
/// for the admin API, and `tail` (more sections) after it.
fn config(upstream: &str, token: &str, level: &str, tail: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\
         [upstream]\nurl = \"{upstream}\"\nattempt_timeout = \"2s\"\nrequest_timeout = \"5s\"\n\
         [retry]\ninitial_backoff = \"5ms\"\nmax_backoff = \"20ms\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{token}\"\n\
         [log]\nformat = \"json\"\nlevel = \"{level}\"\n{tail}"
    )
}

/// `method` on the admin `path` with `token`: status code and JSON body.
async fn admin(
    client: &TestClient,
    bin: &Binary,
    method: Method,
    path: &str,
    token: &str,
) -> (u16, serde_json::Value) {
    let res = client
        .with_token(method, &format!("{}{path}", bin.admin), token)
        .await;
    (res.status.as_u16(), res.json())
}

async fn status(client: &TestClient, bin: &Binary, token: &str) -> (u16, serde_json::Value) {
    admin(client, bin, Method::GET, "/status", token).await
}

async fn reload(client: &TestClient, bin: &Binary, token: &str) -> (u16, serde_json::Value) {
    admin(client, bin, Method::POST, "/config/reload", token).await
}

/// The value of the sample `name` (with its labels) in `/metrics`.
async fn metric(client: &TestClient, bin: &Binary, name: &str) -> Option<f64> {
    metrics::value(&client.metrics(&bin.admin).await, name)
}

#[tokio::test]
async fn a_valid_change_applies_under_load_with_no_failed_order_and_state_kept() {
    let factory = support::sim::start().await;
    let bin = Binary::start(&config(&factory.url(), "token-1", "info", "")).await;
    let client = TestClient::http1();

    // A chaos episode before the reloads: it must still be on record after.
    factory.set_chaos(ChaosSpec::fail());
    let res = client.order(&bin.url, factory.api_key()).await;
    assert_eq!(res.status, 200, "fail found, resolved and retried");

    // Orders on four keep-alive connections for the whole test.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        let (proxy, key) = (bin.url.clone(), factory.api_key().to_owned());
        load.push(tokio::spawn(async move {
            let client = TestClient::http1();
            while !stop.load(Ordering::Relaxed) {
                let res = client.order(&proxy, &key).await;
                let counter = if res.status == 200 { &ok } else { &failed };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let orders_go_on = |since: u64| {
        let ok = ok.clone();
        async move {
            eventually("orders after the reload", Duration::from_secs(20), || {
                let n = ok.load(Ordering::Relaxed);
                async move { (n >= since + 20).then_some(()) }
            })
            .await;
        }
    };
    orders_go_on(0).await;

    // 1: SIGHUP with a new admin token, timeouts, retry and breaker settings.
    let tail = "[circuit_breaker]\nopen_for = \"2s\"\nconsecutive_failures = 7\n";
    bin.write_config(
        &config(&factory.url(), "token-2", "info", tail)
            .replace("attempt_timeout = \"2s\"", "attempt_timeout = \"3s\""),
    );
    bin.signal("HUP");
    let (_, s) = eventually("the new token", Duration::from_secs(20), || async {
        let (code, body) = status(&client, &bin, "token-2").await;
        (code == 200).then_some((code, body))
    })
    .await;
    assert_eq!(s["config"]["lastReload"]["result"], "applied", "{s}");
    assert_eq!(s["config"]["lastReload"]["trigger"], "SIGHUP");
    let changed = s["config"]["lastReload"]["changed"].to_string();
    for key in [
        "admin.token",
        "upstream.attempt_timeout",
        "circuit_breaker.open_for",
        "circuit_breaker.consecutive_failures",
    ] {
        assert!(changed.contains(key), "{key} in {changed}");
    }
    assert_eq!(s["circuit"]["openAtConsecutiveFailures"], 7, "{s}");
    assert_eq!(
        status(&client, &bin, "token-1").await.0,
        401,
        "old token gone"
    );
    let episodes = s["chaos"]["recent"].as_array().map_or(0, Vec::len);
    assert_eq!(episodes, 1, "the chaos episode survived: {s}");
    orders_go_on(ok.load(Ordering::Relaxed)).await;

    // 2: POST /config/reload with the log level and chaos settings changed.
    let tail = format!("{tail}[chaos]\nresolve_cooldown = \"3s\"\n");
    bin.write_config(&config(
        &factory.url(),
        "token-2",
        "info,factory_sidecar=debug",
        &tail,
    ));
    let (code, answer) = reload(&client, &bin, "token-2").await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["result"], "applied");
    assert!(
        answer["changed"].to_string().contains("log.level"),
        "{answer}"
    );
    orders_go_on(ok.load(Ordering::Relaxed)).await;

    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.expect("load task");
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no order failed");
    assert!(ok.load(Ordering::Relaxed) >= 60);

    let (_, s) = status(&client, &bin, "token-2").await;
    let budget = &s["retryBudget"];
    assert!(
        budget["requestsTotal"].as_u64().unwrap_or(0) >= ok.load(Ordering::Relaxed),
        "the retry budget kept counting across reloads: {budget}"
    );
    assert_eq!(
        metric(
            &client,
            &bin,
            "sidecar_config_reloads_total{result=\"applied\"}"
        )
        .await,
        Some(2.0)
    );
    assert_eq!(
        metric(
            &client,
            &bin,
            "sidecar_chaos_detected_total{chaos_type=\"fail\"}"
        )
        .await,
        Some(1.0),
        "metrics kept"
    );
    bin.wait_for_log(&["\"config reloaded\"", "\"SIGHUP\""])
        .await;
    assert_eq!(bin.stop().await, Some(0));
}

#[tokio::test]
async fn an_invalid_file_keeps_the_old_config_and_says_where() {
    let factory = support::sim::start().await;
    let bin = Binary::start(&config(&factory.url(), "token-1", "info", "")).await;
    let client = TestClient::http1();

    let bad = config(&factory.url(), "token-2", "info", "").replace(
        "initial_backoff = \"5ms\"",
        "max_attempts = -1\ninitial_backoff = \"5ms\"",
    );
    bin.write_config(&bad);
    bin.signal("HUP");
    let line = bin
        .wait_for_log(&[
            "config reload refused",
            "max_attempts must be between 1 and 10",
        ])
        .await;
    let file = bin.config.display().to_string();
    assert!(
        line.contains(&format!("{file}:8:16:")),
        "file:line:col in {line}"
    );

    let (code, s) = status(&client, &bin, "token-1").await;
    assert_eq!(code, 200, "the old token still works: {s}");
    let last = &s["config"]["lastReload"];
    assert_eq!(last["result"], "invalid", "{s}");
    assert!(last["errors"][0].as_str().unwrap_or("").starts_with(&file));
    assert!(last["at"].is_string());
    assert_eq!(status(&client, &bin, "token-2").await.0, 401);

    // An unknown log level is invalid too (it used to silence the log).
    let verbose = config(&factory.url(), "token-1", "verbose", "");
    bin.write_config(&verbose);
    let (code, answer) = reload(&client, &bin, "token-1").await;
    assert_eq!(code, 422, "{answer}");
    assert!(
        answer["errors"][0]
            .as_str()
            .unwrap_or("")
            .contains("\"verbose\" is not a level"),
        "{answer}"
    );

    let res = client.order(&bin.url, factory.api_key()).await;
    assert_eq!(res.status, 200, "still serving on the old config");
    assert_eq!(
        metric(
            &client,
            &bin,
            "sidecar_config_reloads_total{result=\"invalid\"}"
        )
        .await,
        Some(2.0)
    );
    assert_eq!(
        metric(&client, &bin, "sidecar_config_last_reload_successful").await,
        Some(0.0)
    );
    assert_eq!(bin.stop().await, Some(0));
}

#[tokio::test]
async fn a_listen_change_is_reported_as_needing_a_restart_not_applied() {
    let factory = support::sim::start().await;
    let bin = Binary::start(&config(&factory.url(), "token-1", "info", "")).await;
    let client = TestClient::http1();

    let moved = config(&factory.url(), "token-2", "info", "").replacen(
        "listen = \"127.0.0.1:0\"",
        "listen = \"127.0.0.1:1\"",
        1,
    );
    bin.write_config(&moved);
    let (code, answer) = reload(&client, &bin, "token-1").await;
    assert_eq!(code, 409, "{answer}");
    assert_eq!(answer["result"], "needs_restart");
    assert_eq!(
        answer["needsRestart"][0]["key"], "server.listen",
        "{answer}"
    );
    assert!(answer["needsRestart"][0]["why"].is_string());
    // Nothing of that file applied: not even its new token.
    assert_eq!(status(&client, &bin, "token-1").await.0, 200);
    assert_eq!(status(&client, &bin, "token-2").await.0, 401);
    assert_eq!(
        client.get(&format!("{}/api/docs", bin.url)).await.status,
        200,
        "still on the old listener"
    );
    bin.wait_for_log(&["restart to apply", "server.listen"])
        .await;
    assert_eq!(
        metric(
            &client,
            &bin,
            "sidecar_config_reloads_total{result=\"needs_restart\"}"
        )
        .await,
        Some(1.0)
    );
    assert_eq!(bin.stop().await, Some(0));
}

#[tokio::test]
async fn sighup_never_ends_the_process() {
    let factory = support::sim::start().await;
    let mut bin = Binary::start(&config(&factory.url(), "token-1", "info", "")).await;
    let client = TestClient::http1();
    for _ in 0..5 {
        bin.signal("HUP");
    }
    bin.write_config("this is not toml = = =");
    bin.signal("HUP");
    bin.wait_for_log(&["config reload refused"]).await;
    assert!(bin.exited().is_none(), "still running after six SIGHUPs");
    assert_eq!(
        client.get(&format!("{}/healthz", bin.admin)).await.status,
        200
    );
    assert_eq!(
        client.get(&format!("{}/readyz", bin.admin)).await.status,
        200
    );
    assert_eq!(
        bin.stop().await,
        Some(0),
        "SIGTERM still drains and exits 0"
    );
}
