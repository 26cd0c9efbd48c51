//! Resilience end to end: the real stack in front of the simulator (or a
//! scripted upstream). A blip costs no order, a dead factory gets fast
//! readable 503s without being touched, one probe per `open_for`, retries
//! stay inside the budget, non-idempotent and 4xx requests are never
//! retried, and the overall deadline holds.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use factory_sidecar::config::Config;
use factory_sidecar::sim::{ChaosSpec, SimHandle};
use http::Method;
use serde_json::Value;
use support::client::{Answer, TestClient};
use support::sidecar::{self, ADMIN_TOKEN, Running};
use support::upstream::{FakeUpstream, answer};
use support::{eventually, sim};

const LIMIT: Duration = Duration::from_secs(20);

async fn order(client: &TestClient, sc: &Running, factory: &SimHandle) -> Answer {
    let auth = format!("Bearer {}", factory.api_key());
    client
        .request(
            Method::POST,
            &format!("{}/api/order", sc.url),
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            factory_sidecar::sim::SAMPLE_ORDER,
        )
        .await
}

async fn status(client: &TestClient, sc: &Running) -> Value {
    let res = client
        .get_with_token(&format!("{}/status", sc.admin), ADMIN_TOKEN)
        .await;
    assert_eq!(res.status, 200);
    res.json()
}

fn assert_circuit_open_answer(res: &Answer) {
    assert_eq!(res.status, 503, "{}", res.text());
    assert_eq!(res.header("x-sidecar-error"), Some("circuit-open"));
    let retry_after: u64 = res
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    let body = res.json();
    assert_eq!(body["retryAfterSeconds"], retry_after);
    assert!(
        body["message"]
            .as_str()
            .expect("message")
            .contains("pizza kitchen is closed"),
        "a message a diner can read"
    );
}

/// Retry and breaker on, chaos handling off: the factory's own behaviour.
fn no_chaos_handling(c: &mut Config) {
    c.chaos.detect = false;
    c.retry.initial_backoff = Duration::from_millis(5);
    c.retry.max_backoff = Duration::from_millis(20);
}

#[tokio::test]
async fn a_blip_of_two_failures_costs_no_order() {
    let factory = sim::start().await;
    let sc = sidecar::start(sidecar::config(&factory.url(), no_chaos_handling)).await;
    let client = TestClient::http1();
    factory.set_chaos(ChaosSpec::fail().count(2));
    let res = order(&client, &sc, &factory).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.header("x-sidecar-attempts"), Some("3"));
    assert!(factory.verify(res.json()["jwt"].as_str().expect("jwt")));
    assert_eq!(factory.stats().orders, 3, "two failed tries and the pizza");
    let budget = &status(&client, &sc).await["retryBudget"];
    assert!(budget.is_object(), "/status shows the retry budget");
}

#[tokio::test]
async fn a_dead_factory_gets_fast_503s_and_one_probe_per_open_for() {
    let factory = sim::start().await;
    let sc = sidecar::start(sidecar::config(&factory.url(), |c| {
        no_chaos_handling(c);
        c.circuit_breaker.consecutive_failures = 3;
        c.circuit_breaker.open_for = Duration::from_secs(3);
    }))
    .await;
    let client = TestClient::http1();
    assert_eq!(order(&client, &sc, &factory).await.status, 200);

    // The factory goes down: tries fail until the breaker opens.
    factory.set_chaos(ChaosSpec::down());
    let mut opened = false;
    for _ in 0..20 {
        let res = order(&client, &sc, &factory).await;
        if res.header("x-sidecar-error") == Some("circuit-open") {
            assert_circuit_open_answer(&res);
            opened = true;
            break;
        }
        assert!(res.status.is_server_error(), "a failed order while down");
    }
    assert!(opened, "the breaker opened");

    // While open: fast answers, and the factory is not touched at all.
    // (`open_for` is 3 s; these five answers take milliseconds.)
    let before = factory.stats();
    assert_eq!(status(&client, &sc).await["circuit"]["state"], "open");
    for _ in 0..5 {
        assert_circuit_open_answer(&order(&client, &sc, &factory).await);
    }
    let after = factory.stats();
    assert_eq!(
        after.requests, before.requests,
        "no request reached the factory"
    );
    assert_eq!(
        after.connections, before.connections,
        "no connection was opened"
    );

    // After open_for: half-open lets exactly one probe through at a time.
    eventually("the breaker to half-open", LIMIT, || {
        let (client, sc) = (client.clone(), &sc);
        async move { (status(&client, sc).await["circuit"]["state"] == "half_open").then_some(()) }
    })
    .await;
    let before = factory.stats().orders;
    let mut probes = tokio::task::JoinSet::new();
    for _ in 0..5 {
        let (client, url, key) = (client.clone(), sc.url.clone(), factory.api_key().to_owned());
        probes.spawn(async move {
            let auth = format!("Bearer {key}");
            client
                .request(
                    Method::POST,
                    &format!("{url}/api/order"),
                    &[
                        ("authorization", &auth),
                        ("content-type", "application/json"),
                    ],
                    factory_sidecar::sim::SAMPLE_ORDER,
                )
                .await
        });
    }
    let mut tried = Vec::new();
    while let Some(r) = probes.join_next().await {
        let r = r.expect("probe task");
        assert!(r.status.is_server_error(), "the factory is still down");
        tried.push(r.header("x-sidecar-attempts").unwrap_or("?").to_owned());
    }
    tried.sort();
    assert_eq!(
        tried,
        ["0", "0", "0", "0", "1"],
        "one probe, four refused at once"
    );
    assert_eq!(
        factory.stats().orders - before,
        1,
        "exactly one probe reached the factory"
    );

    // The factory returns: the next probe closes the circuit.
    factory.set_chaos(ChaosSpec::none());
    eventually("orders to succeed again", LIMIT, || {
        let (client, sc, factory) = (client.clone(), &sc, &factory);
        async move { (order(&client, sc, factory).await.status == 200).then_some(()) }
    })
    .await;
    let s = status(&client, &sc).await;
    assert_eq!(s["circuit"]["state"], "closed");
}

#[tokio::test]
async fn retries_stay_within_the_budget_when_every_order_fails() {
    const ORDERS: u64 = 100;
    let factory = sim::start().await;
    factory.set_chaos(ChaosSpec::fail());
    let sc = sidecar::start(sidecar::config(&factory.url(), |c| {
        no_chaos_handling(c);
        c.circuit_breaker.enabled = false;
        c.retry.budget_min_per_second = 1;
        c.retry.budget_window = Duration::from_secs(10);
    }))
    .await;
    let client = TestClient::http1();
    for _ in 0..ORDERS {
        assert_eq!(order(&client, &sc, &factory).await.status, 500);
    }
    let seen = factory.stats().orders;
    // 20% of the offered load, plus the floor: 1 per second over a 10 s window.
    let ceiling = ORDERS + ORDERS / 5 + 10;
    assert!(seen > ORDERS, "some orders were retried ({seen})");
    assert!(
        seen <= ceiling,
        "the factory saw {seen} orders for {ORDERS} (ceiling {ceiling})"
    );
    let budget = &status(&client, &sc).await["retryBudget"];
    assert!(
        budget.to_string().contains("refused"),
        "/status counts refused retries: {budget}"
    );
}

#[tokio::test]
async fn non_idempotent_and_caller_errors_are_never_retried() {
    let hits = Arc::new(AtomicUsize::new(0));
    let up = FakeUpstream::start({
        let hits = hits.clone();
        move |r| {
            hits.fetch_add(1, Ordering::SeqCst);
            async move {
                match r.uri.path() {
                    "/api/franchise" => answer(500, "{\"message\":\"broken\"}"),
                    _ => answer(400, "{\"message\":\"bad order\"}"),
                }
            }
        }
    })
    .await;
    let sc = sidecar::start(sidecar::config(&up.url(), no_chaos_handling)).await;
    let client = TestClient::http1();

    let res = client
        .request(
            Method::POST,
            &format!("{}/api/franchise", sc.url),
            &[],
            "{}",
        )
        .await;
    assert_eq!(res.status, 500);
    assert_eq!(
        res.header("x-sidecar-attempts"),
        Some("1"),
        "POST to an unlisted path"
    );
    assert_eq!(hits.swap(0, Ordering::SeqCst), 1);

    let res = client.get(&format!("{}/api/franchise", sc.url)).await;
    assert_eq!(
        res.header("x-sidecar-attempts"),
        Some("3"),
        "GET is idempotent: retried"
    );
    assert_eq!(hits.swap(0, Ordering::SeqCst), 3);

    let res = client
        .request(Method::POST, &format!("{}/api/order", sc.url), &[], "{}")
        .await;
    assert_eq!(res.status, 400);
    assert_eq!(
        res.json()["message"],
        "bad order",
        "the factory's answer passed on"
    );
    assert_eq!(
        res.header("x-sidecar-attempts"),
        Some("1"),
        "4xx is the caller's fault"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_overall_deadline_holds_against_a_slow_factory() {
    let factory = sim::start().await;
    factory.set_chaos(ChaosSpec::throttle().delay(Duration::from_secs(30)));
    let sc = sidecar::start(sidecar::config(&factory.url(), |c| {
        no_chaos_handling(c);
        c.upstream.attempt_timeout = Duration::from_millis(300);
        c.upstream.request_timeout = Duration::from_millis(800);
    }))
    .await;
    let client = TestClient::http1();
    let res = order(&client, &sc, &factory).await;
    assert_eq!(res.status, 504, "{}", res.text());
    assert_eq!(res.header("x-sidecar-error"), Some("timeout"));
    let attempts: u32 = res
        .header("x-sidecar-attempts")
        .and_then(|v| v.parse().ok())
        .expect("x-sidecar-attempts on the sidecar's own answer");
    assert!((1..=3).contains(&attempts), "{attempts}");
    assert!(res.json()["message"].is_string());
}

#[tokio::test]
async fn operators_can_hold_the_circuit_open_and_close_it() {
    let factory = sim::start().await;
    let sc = sidecar::start(sidecar::config(&factory.url(), no_chaos_handling)).await;
    let client = TestClient::http1();
    let open_url = format!("{}/circuit/open", sc.admin);
    let refused = client.request(Method::POST, &open_url, &[], "").await;
    assert_eq!(refused.status, 401, "overrides need the token");

    let auth = format!("Bearer {ADMIN_TOKEN}");
    let res = client
        .request(Method::POST, &open_url, &[("authorization", &auth)], "")
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let before = factory.stats().requests;
    assert_circuit_open_answer(&order(&client, &sc, &factory).await);
    assert_eq!(
        factory.stats().requests,
        before,
        "held open: the factory is not asked"
    );
    let circuit = &status(&client, &sc).await["circuit"];
    assert_eq!(circuit["state"], "open");
    assert!(circuit.to_string().contains("forcedOpen"), "{circuit}");

    let res = client
        .request(
            Method::POST,
            &format!("{}/circuit/close", sc.admin),
            &[("authorization", &auth)],
            "",
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(order(&client, &sc, &factory).await.status, 200);
}
