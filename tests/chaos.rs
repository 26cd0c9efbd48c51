//! Chaos intelligence end to end: the real sidecar in front of the factory
//! simulator. Each chaos type is detected, resolved with exactly one GET
//! of the link's path to the upstream, shown in `/status` with the link
//! masked; no apiKey leaves the sidecar (answers, `/status`; logs in
//! `chaos_logs.rs`).
//!
//! With the whole stack on, every order placed during a `fail` or `badjwt`
//! episode is a pizza whose JWT the factory verifies: the failed try is
//! retried after the single resolve GET.

mod support;

use std::time::Duration;

use factory_sidecar::config::Config;
use factory_sidecar::sim::{ChaosKind, ChaosSpec, SimHandle};
use serde_json::Value;

use support::client::{Answer, TestClient};
use support::sidecar::{self, ADMIN_TOKEN, Running};
use support::sim;
use support::upstream::{FakeUpstream, answer};

const LIMIT: Duration = Duration::from_secs(20);

fn chaos_config(tweak: impl FnOnce(&mut Config)) -> impl FnOnce(&mut Config) {
    move |c: &mut Config| {
        c.chaos.resolve_cooldown = Duration::from_secs(30);
        tweak(c);
    }
}

async fn start(sim: &SimHandle, tweak: impl FnOnce(&mut Config)) -> Running {
    sidecar::start(sidecar::config(&sim.url(), chaos_config(tweak))).await
}

async fn order(client: &TestClient, sc: &Running, sim: &SimHandle) -> Answer {
    client.order(&sc.url, sim.api_key()).await
}

async fn status(client: &TestClient, sc: &Running) -> Value {
    client.status(&sc.admin, ADMIN_TOKEN).await
}

/// Whether `jwt` is a pizza the factory signed.
fn verifies(sim: &SimHandle, jwt: &str) -> bool {
    sim.verify(jwt)
}

fn assert_no_key(sim: &SimHandle, what: &str, text: &str) {
    support::assert_no_key(sim.api_key(), what, text);
}

/// A reply during an episode with the whole stack on: a good pizza whose
/// JWT the factory verifies, with no apiKey anywhere in it.
fn assert_pizza(sim: &SimHandle, reply: &Answer) {
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_no_key(sim, "the answer", &reply.text());
    let jwt = reply.json()["jwt"]
        .as_str()
        .map(str::to_owned)
        .expect("a jwt");
    assert!(
        verifies(sim, &jwt),
        "the pizza JWT verifies against the factory's keys"
    );
}

/// The factory's failed answer passed on (no retry): its link masked and
/// Content-Length right.
fn assert_masked_failure(sim: &SimHandle, reply: &Answer) {
    assert_eq!(reply.status, 500, "{}", reply.text());
    assert_no_key(sim, "the answer", &reply.text());
    let v = reply.json();
    let link = v["reportUrl"].as_str().expect("the link, masked");
    assert!(link.ends_with("/report/****"), "{link}");
    assert_eq!(
        reply.header("content-length"),
        Some(reply.body.len().to_string().as_str())
    );
}

async fn resolved_episode(client: &TestClient, sc: &Running, kind: &str) -> Value {
    let found = support::wait_for(LIMIT, || async {
        let s = status(client, sc).await;
        let recent = s["chaos"]["recent"].as_array().cloned().unwrap_or_default();
        recent.into_iter().find(|e| e["type"] == kind)
    })
    .await;
    found.unwrap_or_else(|| panic!("no resolved {kind} episode in /status"))
}

#[tokio::test]
async fn fail_is_resolved_with_one_get_and_the_next_order_is_a_good_pizza() {
    let sim = sim::start().await;
    sim.set_chaos(ChaosSpec::fail());
    let sc = start(&sim, |_| {}).await;
    let client = TestClient::http1();

    let first = order(&client, &sc, &sim).await;
    assert_pizza(&sim, &first);
    assert_eq!(
        first.header("x-sidecar-attempts"),
        Some("2"),
        "one failed try, then the pizza"
    );
    let ep = resolved_episode(&client, &sc, "fail").await;
    assert_eq!(ep["how"], "auto");
    assert!(
        ep["link"]
            .as_str()
            .expect("masked link")
            .ends_with("/report/****")
    );
    assert_eq!(ep["resolves"][0]["result"], "resolved");

    let next = order(&client, &sc, &sim).await;
    assert_eq!(next.status, 200, "{}", next.text());
    assert!(verifies(&sim, next.json()["jwt"].as_str().expect("jwt")));
    let stats = sim.stats();
    assert_eq!(stats.support_requests, 1, "exactly one resolve GET");
    assert_eq!(stats.resolves, 1);
    assert_no_key(&sim, "/status", &status(&client, &sc).await.to_string());
}

#[tokio::test]
async fn concurrent_orders_in_an_episode_send_one_resolve_get() {
    let sim = sim::start().await;
    sim.set_chaos(ChaosSpec::fail());
    let sc = start(&sim, |_| {}).await;
    let client = TestClient::http1();
    let replies = futures_join(
        (0..8)
            .map(|_| {
                let (client, url, key) = (client.clone(), sc.url.clone(), sim.api_key().to_owned());
                tokio::spawn(async move { client.order(&url, &key).await })
            })
            .collect(),
    )
    .await;
    for r in &replies {
        assert_pizza(&sim, r);
    }
    resolved_episode(&client, &sc, "fail").await;
    assert_eq!(sim.stats().support_requests, 1);
}

async fn futures_join(tasks: Vec<tokio::task::JoinHandle<Answer>>) -> Vec<Answer> {
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("task"));
    }
    out
}

#[tokio::test]
async fn badjwt_is_caught_by_the_jwks_and_resolved() {
    let sim = sim::start().await;
    sim.set_chaos(ChaosSpec::badjwt());
    let sc = start(&sim, |_| {}).await;
    let client = TestClient::http1();

    let first = order(&client, &sc, &sim).await;
    assert_pizza(&sim, &first);
    assert_eq!(
        first.header("x-sidecar-attempts"),
        Some("2"),
        "the bad pizza was retried"
    );
    let ep = resolved_episode(&client, &sc, "badjwt").await;
    assert_eq!(ep["how"], "auto");
    let next = order(&client, &sc, &sim).await;
    assert!(verifies(&sim, next.json()["jwt"].as_str().expect("jwt")));
    let stats = sim.stats();
    assert_eq!(stats.support_requests, 1);
    assert!(stats.jwks_requests >= 1);
    assert_eq!(
        status(&client, &sc).await["chaos"]["jwks"]["state"],
        "available"
    );
}

/// As with the real factory, every order carries another JWT (the
/// simulator's token pool, larger than the sidecar's memory of recent
/// tokens): each is checked, passes at the first try, and counts as no
/// chaos; `badjwt` among fresh tokens is still caught and resolved.
#[tokio::test]
async fn fresh_tokens_all_pass_at_the_first_try_and_badjwt_is_still_caught() {
    const POOL: usize = 40;
    let sim = sim::start_with(sim::fast_options().token_pool(POOL)).await;
    let sc = start(&sim, |_| {}).await;
    let client = TestClient::http1();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..POOL {
        let reply = order(&client, &sc, &sim).await;
        assert_pizza(&sim, &reply);
        assert_eq!(reply.header("x-sidecar-attempts"), Some("1"));
        seen.insert(reply.json()["jwt"].as_str().expect("jwt").to_owned());
    }
    assert_eq!(seen.len(), POOL, "every order carried another token");
    let s = status(&client, &sc).await;
    assert_eq!(
        s["chaos"]["recent"].as_array().map(Vec::len),
        Some(0),
        "{s}"
    );
    assert_eq!(sim.stats().jwks_requests, 1, "the keys were fetched once");

    sim.set_chaos(ChaosSpec::badjwt());
    let caught = order(&client, &sc, &sim).await;
    assert_pizza(&sim, &caught);
    assert_eq!(caught.header("x-sidecar-attempts"), Some("2"));
    assert_eq!(
        resolved_episode(&client, &sc, "badjwt").await["how"],
        "auto"
    );
}

#[tokio::test]
async fn throttle_is_resolved_after_the_first_slow_answer() {
    let sim = sim::start_with(sim::fast_options().throttle_delay(Duration::from_secs(2))).await;
    sim.set_chaos(ChaosSpec::throttle());
    let sc = start(&sim, |c| {
        c.chaos.slow_threshold = Duration::from_secs(1);
        c.upstream.attempt_timeout = Duration::from_secs(10);
        c.upstream.request_timeout = Duration::from_secs(20);
    })
    .await;
    let client = TestClient::http1();
    let slow = order(&client, &sc, &sim).await;
    assert_eq!(slow.status, 200, "the slow pizza is still a pizza");
    assert!(verifies(&sim, slow.json()["jwt"].as_str().expect("jwt")));
    assert_no_key(&sim, "the answer", &slow.text());
    resolved_episode(&client, &sc, "throttle").await;
    assert_eq!(sim.chaos().kind, ChaosKind::None);
    let next = order(&client, &sc, &sim).await;
    assert_eq!(next.status, 200);
    assert_eq!(sim.stats().support_requests, 1);
}

#[tokio::test]
async fn with_auto_resolve_off_no_support_path_is_requested_until_asked() {
    let sim = sim::start().await;
    sim.set_chaos(ChaosSpec::fail());
    // No retry and no breaker: this is about what the chaos layer does alone.
    let sc = start(&sim, |c| {
        c.chaos.auto_resolve = false;
        c.retry.max_attempts = 1;
        c.circuit_breaker.enabled = false;
    })
    .await;
    let client = TestClient::http1();
    for _ in 0..3 {
        let r = order(&client, &sc, &sim).await;
        assert_masked_failure(&sim, &r);
    }
    assert_eq!(sim.stats().support_requests, 0);
    let s = status(&client, &sc).await;
    assert_eq!(s["chaos"]["active"][0]["type"], "fail");
    assert!(s["chaos"]["active"][0]["attempts"].as_u64() >= Some(3));

    let done = client
        .with_token(
            http::Method::POST,
            &format!("{}/chaos/resolve", sc.admin),
            ADMIN_TOKEN,
        )
        .await;
    assert_eq!(done.status, 200, "{}", done.text());
    assert_eq!(done.json()["result"], "resolved");
    assert_no_key(&sim, "the resolve answer", &done.text());
    assert_eq!(sim.stats().support_requests, 1);
    assert_eq!(order(&client, &sc, &sim).await.status, 200);
}

#[tokio::test]
async fn a_link_naming_another_host_is_never_contacted() {
    let elsewhere = FakeUpstream::start(|_| async { answer(200, "{}") }).await;
    let sim = sim::start_with(sim::fast_options().public_url(elsewhere.url())).await;
    sim.set_chaos(ChaosSpec::fail());
    let sc = start(&sim, |_| {}).await;
    let client = TestClient::http1();
    assert_pizza(&sim, &order(&client, &sc, &sim).await);
    resolved_episode(&client, &sc, "fail").await;
    assert_eq!(
        sim.stats().support_requests,
        1,
        "the resolve went to the upstream"
    );
    assert_eq!(
        elsewhere.connection_count(),
        0,
        "the link's host got nothing"
    );
}

/// With `[grafana] url`, an episode becomes two annotations (its start, then
/// a region over the whole episode once resolved), posted with the token to
/// a loopback "Grafana" that records them; neither holds the apiKey.
#[tokio::test]
async fn an_episode_becomes_grafana_annotations() {
    let grafana = FakeUpstream::start(|_| async { answer(200, r#"{"id":1}"#) }).await;
    let sim = sim::start().await;
    sim.set_chaos(ChaosSpec::fail());
    let grafana_url = grafana.url();
    let sc = start(&sim, move |c| {
        c.grafana.url = grafana_url;
        c.grafana.token = factory_sidecar::config::Secret::new("grafana-test-token");
    })
    .await;
    let client = TestClient::http1();

    assert_pizza(&sim, &order(&client, &sc, &sim).await);
    resolved_episode(&client, &sc, "fail").await;
    let posted = support::eventually("two annotations", LIMIT, || async {
        let seen = grafana.requests();
        (seen.len() >= 2).then_some(seen)
    })
    .await;
    assert_eq!(posted.len(), 2, "{posted:?}");
    for r in &posted {
        assert_eq!(r.method, http::Method::POST);
        assert_eq!(r.uri.path(), "/api/annotations");
        assert_eq!(
            r.headers.get("authorization").map(|v| v.as_bytes()),
            Some(&b"Bearer grafana-test-token"[..])
        );
        assert_no_key(&sim, "an annotation", &String::from_utf8_lossy(&r.body));
    }
    let started: Value = serde_json::from_slice(&posted[0].body).expect("json");
    let resolved: Value = serde_json::from_slice(&posted[1].body).expect("json");
    assert_eq!(started["tags"], serde_json::json!(["chaos", "fail"]));
    assert_eq!(
        resolved["tags"],
        serde_json::json!(["chaos", "fail", "resolved"])
    );
    assert_eq!(resolved["time"], started["time"], "a region from the start");
    assert!(resolved["timeEnd"].as_u64() >= started["time"].as_u64());
    let s = status(&client, &sc).await;
    assert_eq!(s["annotations"]["sent"], 2, "{s}");
    assert!(!s.to_string().contains("grafana-test-token"));
}
