//! Orders with patience end to end: the real sidecar (in-process, or the
//! binary for SIGTERM) in front of the factory simulator or a fake upstream,
//! over loopback, through each incident the sidecar must not lose an order
//! to: a throttled factory, one that hangs, one that is down and comes back
//! on the same port.
//!
//! What the factory saw is read from its own counters. No fixed sleeps and
//! no time bounds: every wait polls a condition, and an order that the
//! sidecar failed to deliver shows as a failed answer, or as a request that
//! outlived the test client's limit.

mod support;

use std::time::Duration;

use factory_sidecar::config::{Config, Percent};
use factory_sidecar::sim::{ChaosSpec, SAMPLE_ORDER, SimHandle};
use http::Method;
use serde_json::Value;
use tokio::task::JoinHandle;

use support::http::{Error, Http, Reply, request};
use support::sidecar::{self, ADMIN_TOKEN, Running};
use support::upstream::{FakeUpstream, answer};
use support::{eventually, sim};

const LIMIT: Duration = Duration::from_secs(20);

/// Short tries, quick backoff, a breaker that reopens its door quickly.
fn base(c: &mut Config) {
    c.upstream.attempt_timeout = Duration::from_millis(500);
    c.retry.initial_backoff = Duration::from_millis(10);
    c.retry.max_backoff = Duration::from_millis(50);
    c.retry.budget_min_per_second = 10;
    c.circuit_breaker.open_for = Duration::from_secs(1);
    c.chaos.slow_threshold = Duration::from_millis(300);
}

/// No retry budget at all: no hedge, no retry (each order's tries are
/// exactly its first and the fresh ones the lot grants).
fn no_budget(c: &mut Config) {
    c.retry.budget_percent = Percent::new(0).expect("percent");
    c.retry.budget_min_per_second = 0;
}

async fn start(upstream: &str, tweak: impl FnOnce(&mut Config)) -> Running {
    sidecar::start(sidecar::config(upstream, |c| {
        base(c);
        tweak(c);
    }))
    .await
}

/// `POST /api/order` to the sidecar at `proxy`, on a task of its own.
fn spawn_order(proxy: &str, key: &str) -> JoinHandle<Result<Reply, Error>> {
    let (http, url, key) = (Http::new(), format!("{proxy}/api/order"), key.to_owned());
    tokio::spawn(async move { http.post_json(&url, Some(&key), SAMPLE_ORDER).await })
}

async fn admin(admin_url: &str, method: Method, path: &str) -> Reply {
    let req = request(
        method,
        &format!("{admin_url}{path}"),
        Some(ADMIN_TOKEN),
        None,
        "",
    )
    .expect("request");
    Http::new().send(req).await.expect("admin answers")
}

async fn orders_status(admin_url: &str) -> Value {
    let reply = admin(admin_url, Method::GET, "/status").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["orders"].clone()
}

/// Waits until `/status` shows `key` (under `orders`) at `n`.
async fn until_orders(admin_url: &str, key: &str, n: u64) {
    eventually(&format!("orders.{key} == {n}"), LIMIT, || async {
        (orders_status(admin_url).await[key].as_u64() == Some(n)).then_some(())
    })
    .await;
}

/// A pizza the factory itself would verify.
fn assert_pizza(reply: &Reply, factory: &SimHandle) {
    assert_eq!(reply.status, 200, "{}", reply.text());
    let jwt = reply.json()["jwt"].as_str().map(str::to_owned);
    assert!(
        jwt.is_some_and(|j| factory.verify(&j)),
        "not a pizza: {}",
        reply.text()
    );
}

async fn delivered(pending: Vec<JoinHandle<Result<Reply, Error>>>) -> Vec<Reply> {
    let mut replies = Vec::new();
    for p in pending {
        replies.push(p.await.expect("task").expect("the sidecar answers"));
    }
    replies
}

/// A factory that never answers its first `n` requests and answers every
/// later one at once with a (made-up) pizza.
async fn hangs_first(n: usize) -> FakeUpstream {
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    FakeUpstream::start(move |_r| {
        let i = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move {
            if i < n {
                std::future::pending::<()>().await;
            }
            answer(200, "{\"jwt\":\"pizza\"}")
        }
    })
    .await
}

fn attempts(reply: &Reply) -> u64 {
    reply
        .header("x-sidecar-attempts")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no x-sidecar-attempts: {}", reply.text()))
}

#[tokio::test]
async fn a_resolved_throttle_releases_the_orders_waiting_on_throttled_tries() {
    let factory = sim::start().await;
    let sc = start(&factory.url(), no_budget).await;
    let key = factory.api_key().to_owned();

    // Four orders caught by a throttle that would hold them for an hour.
    factory.set_chaos(ChaosSpec::throttle().delay(Duration::from_secs(3600)));
    let stuck: Vec<_> = (0..4).map(|_| spawn_order(&sc.url, &key)).collect();
    eventually("four throttled orders", LIMIT, || async {
        (factory.stats().orders == 4).then_some(())
    })
    .await;
    until_orders(&sc.admin, "waiting", 4).await;

    // A later order meets a 1 s throttle: its slow answer carries the report
    // link, the sidecar follows it, and the resolve releases the four.
    factory.set_chaos(ChaosSpec::throttle().delay(Duration::from_secs(1)));
    let first = Http::new()
        .post_json(&format!("{}/api/order", sc.url), Some(&key), SAMPLE_ORDER)
        .await
        .expect("answer");
    assert_pizza(&first, &factory);
    for reply in delivered(stuck).await {
        assert_pizza(&reply, &factory);
        assert_eq!(attempts(&reply), 2, "the throttled try and a fresh one");
    }
    assert_eq!(factory.stats().resolves, 1);
    let orders = orders_status(&sc.admin).await;
    assert!(orders["releasedTotal"].as_u64() >= Some(4), "{orders}");
    assert_eq!(orders["waiting"], 0);
    let status = admin(&sc.admin, Method::GET, "/status").await.json();
    assert_eq!(status["circuit"]["state"], "closed");
    assert_eq!(
        status["circuit"]["window"]["failures"], 0,
        "slow is not broken"
    );
}

#[tokio::test]
async fn a_prompt_answer_releases_orders_waiting_on_dead_tries() {
    // The first three orders reach a factory that never answers them; it
    // answers everything after at once.
    let up = hangs_first(3).await;
    let sc = start(&up.url(), |c| {
        no_budget(c);
        c.chaos.detect = false;
        c.chaos.verify_jwt = false;
        c.chaos.redact_in_responses = false;
    })
    .await;
    let stuck: Vec<_> = (0..3).map(|_| spawn_order(&sc.url, "key")).collect();
    until_orders(&sc.admin, "waiting", 3).await;
    assert_eq!(up.request_count(), 3);

    let http = Http::new();
    let prompt = http
        .post_json(&format!("{}/api/order", sc.url), Some("key"), SAMPLE_ORDER)
        .await
        .expect("answer");
    assert_eq!((prompt.status.as_u16(), attempts(&prompt)), (200, 1));
    for reply in delivered(stuck).await {
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(attempts(&reply), 2, "the dead try and a fresh one");
    }
    assert_eq!(up.request_count(), 3 + 1 + 3);
}

#[tokio::test]
async fn a_hanging_factory_that_comes_back_delivers_every_order() {
    let factory = sim::start().await;
    let sc = start(&factory.url(), |_| {}).await;
    let key = factory.api_key().to_owned();
    factory.set_chaos(ChaosSpec::hang());
    let pending: Vec<_> = (0..4).map(|_| spawn_order(&sc.url, &key)).collect();
    until_orders(&sc.admin, "waiting", 4).await;
    assert!(factory.stats().held >= 4, "held by the factory");
    // The factory comes back; the requests it held are dropped unanswered.
    factory.set_chaos(ChaosSpec::none());
    for reply in delivered(pending).await {
        assert_pizza(&reply, &factory);
    }
    assert_eq!(orders_status(&sc.admin).await["waiting"], 0);
}

#[tokio::test]
async fn a_factory_down_and_back_on_the_same_port_delivers_every_order() {
    let first = sim::start().await;
    let addr = first.addr();
    let url = first.url();
    let key = first.api_key().to_owned();
    let sc = start(&url, |c| c.circuit_breaker.consecutive_failures = 3).await;
    first.shutdown().await;

    // Connection refused: tries fail, the circuit opens, the orders park.
    let pending: Vec<_> = (0..4).map(|_| spawn_order(&sc.url, &key)).collect();
    until_orders(&sc.admin, "parked", 4).await;
    let status = admin(&sc.admin, Method::GET, "/status").await.json();
    assert_ne!(status["circuit"]["state"], "closed", "{status}");

    // Back on the same port: a probe finds it, the close releases the rest.
    let factory = sim::start_with(sim::fast_options().listen(addr)).await;
    for reply in delivered(pending).await {
        assert_pizza(&reply, &factory);
    }
    assert_eq!(orders_status(&sc.admin).await["parked"], 0);
    assert!(factory.stats().orders >= 4);
}

#[tokio::test]
async fn parked_orders_send_nothing_to_a_down_factory() {
    let factory = sim::start().await;
    let key = factory.api_key().to_owned();
    let sc = start(&factory.url(), |c| {
        c.circuit_breaker.consecutive_failures = 3;
        // No probe during the test: the operator decides when it is back.
        c.circuit_breaker.open_for = Duration::from_secs(120);
    })
    .await;
    factory.set_chaos(ChaosSpec::down());
    let mut pending: Vec<_> = (0..3).map(|_| spawn_order(&sc.url, &key)).collect();
    until_orders(&sc.admin, "parked", 3).await;
    let seen = factory.stats().orders;
    assert!(seen >= 3, "each order tried");

    pending.extend((0..3).map(|_| spawn_order(&sc.url, &key)));
    until_orders(&sc.admin, "parked", 6).await;
    assert_eq!(factory.stats().orders, seen, "parked orders sent nothing");

    factory.set_chaos(ChaosSpec::none());
    let closed = admin(&sc.admin, Method::POST, "/circuit/close").await;
    assert_eq!(closed.status, 200, "{}", closed.text());
    for reply in delivered(pending).await {
        assert_pizza(&reply, &factory);
    }
    assert_eq!(factory.stats().orders, seen + 6, "one fresh try each");
}

#[tokio::test]
async fn past_patience_an_order_gets_the_friendly_answer() {
    // Patience is set short here, bypassing the file's 45 s floor.
    let factory = sim::start().await;
    let sc = start(&factory.url(), |c| {
        c.orders.patience = Duration::from_secs(2);
    })
    .await;
    let opened = admin(&sc.admin, Method::POST, "/circuit/open").await;
    assert_eq!(opened.status, 200);
    let reply = spawn_order(&sc.url, factory.api_key())
        .await
        .expect("task")
        .expect("answer");
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert_eq!(reply.header("x-sidecar-error"), Some("circuit-open"));
    assert!(reply.header("retry-after").is_some());
    let body = reply.json();
    assert!(body["retryAfterSeconds"].as_u64() >= Some(1));
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("pizza kitchen is closed")),
        "{body}"
    );
    assert_eq!(factory.stats().orders, 0);

    // A factory that takes the order and never answers: 504.
    let up = FakeUpstream::start(|_r| async {
        std::future::pending::<()>().await;
        answer(200, "{}")
    })
    .await;
    let sc = start(&up.url(), |c| {
        c.orders.patience = Duration::from_secs(2);
    })
    .await;
    let reply = spawn_order(&sc.url, "key")
        .await
        .expect("task")
        .expect("answer");
    assert_eq!(reply.status, 504, "{}", reply.text());
    assert_eq!(reply.header("x-sidecar-error"), Some("timeout"));
    assert!(reply.json()["message"].is_string());
}

#[tokio::test]
async fn beyond_max_waiting_an_order_is_answered_503_at_once() {
    let factory = sim::start().await;
    let key = factory.api_key().to_owned();
    let sc = start(&factory.url(), |c| c.orders.max_waiting = 2).await;
    admin(&sc.admin, Method::POST, "/circuit/open").await;
    let pending: Vec<_> = (0..2).map(|_| spawn_order(&sc.url, &key)).collect();
    until_orders(&sc.admin, "parked", 2).await;

    let third = spawn_order(&sc.url, &key)
        .await
        .expect("task")
        .expect("answer");
    assert_eq!(third.status, 503, "{}", third.text());
    assert_eq!(third.header("x-sidecar-error"), Some("circuit-open"));
    let orders = orders_status(&sc.admin).await;
    assert_eq!(orders["parked"], 2, "the two still wait: {orders}");
    assert_eq!(orders["turnedAwayTotal"], 1);
    assert!(pending.iter().all(|p| !p.is_finished()));

    admin(&sc.admin, Method::POST, "/circuit/close").await;
    for reply in delivered(pending).await {
        assert_pizza(&reply, &factory);
    }
}

#[tokio::test]
async fn no_hedge_is_sent_beyond_the_retry_budget() {
    let factory = sim::start().await;
    let key = factory.api_key().to_owned();
    let sc = start(&factory.url(), |c| {
        c.upstream.attempt_timeout = Duration::from_millis(200);
        // Retries and hedges: the floor alone, 1/s over 10 s.
        c.retry.budget_percent = Percent::new(0).expect("percent");
        c.retry.budget_min_per_second = 1;
        c.retry.budget_window = Duration::from_secs(10);
        c.chaos.auto_resolve = false;
    })
    .await;
    factory.set_chaos(ChaosSpec::throttle().delay(Duration::from_secs(2)));
    let pending: Vec<_> = (0..8).map(|_| spawn_order(&sc.url, &key)).collect();
    for reply in delivered(pending).await {
        assert_pizza(&reply, &factory);
    }
    let text = Http::new()
        .get(&format!("{}/metrics", sc.admin))
        .await
        .expect("metrics")
        .text();
    let count = |series: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
    };
    let hedges = count("sidecar_hedges_total{result=\"won\"}")
        + count("sidecar_hedges_total{result=\"lost\"}");
    assert!(hedges <= 10, "{hedges} hedges with a budget of 10");
    assert!(hedges > 0, "slow orders hedged");
    // A dropped hedge still reaches the factory (it finishes alone).
    eventually("every hedge at the factory", LIMIT, || async {
        (factory.stats().orders == 8 + hedges).then_some(())
    })
    .await;
    let budget = admin(&sc.admin, Method::GET, "/status").await.json()["retryBudget"].clone();
    assert!(budget["refusedTotal"].as_u64() >= Some(1), "{budget}");
}

#[tokio::test]
async fn a_hedge_wins_and_the_dropped_try_leaves_no_connection_behind() {
    // The first request is never answered; every later one at once.
    let up = hangs_first(1).await;
    // Without inspection a dropped try is dropped outright (no background
    // read for a report link).
    let sc = start(&up.url(), |c| {
        c.chaos.detect = false;
        c.chaos.verify_jwt = false;
        c.chaos.redact_in_responses = false;
    })
    .await;
    let http = Http::new();
    let url = format!("{}/api/order", sc.url);
    let hedged = http
        .post_json(&url, Some("key"), SAMPLE_ORDER)
        .await
        .expect("answer");
    assert_eq!((hedged.status.as_u16(), attempts(&hedged)), (200, 2));
    // Later orders go on a clean connection: the dropped try's, with its
    // request unanswered, was closed rather than pooled.
    for _ in 0..3 {
        let next = http
            .post_json(&url, Some("key"), SAMPLE_ORDER)
            .await
            .expect("answer");
        assert_eq!((next.status.as_u16(), attempts(&next)), (200, 1));
    }
    assert_eq!(up.request_count(), 5);
    assert_eq!(
        up.connection_count(),
        2,
        "the hedge's connection was reused"
    );
    let metrics = Http::new()
        .get(&format!("{}/metrics", sc.admin))
        .await
        .expect("metrics")
        .text();
    assert!(
        metrics.contains("sidecar_hedges_total{result=\"won\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn sigterm_answers_parked_orders_with_503() {
    use std::process::Stdio;

    let factory = sim::start().await;
    let key = factory.api_key().to_owned();
    let ports = [free_port(), free_port()];
    let dir = std::env::temp_dir().join(format!("factory-sidecar-patience-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("run.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:{}\"\nshutdown_grace = \"10s\"\n[upstream]\nurl = \"{}\"\n[admin]\nlisten = \"127.0.0.1:{}\"\ntoken = \"{ADMIN_TOKEN}\"\n",
            ports[0],
            factory.url(),
            ports[1]
        ),
    )
    .expect("write config");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_factory-sidecar"))
        .args(["run", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn run");
    let (proxy, admin_url) = (
        format!("http://127.0.0.1:{}", ports[0]),
        format!("http://127.0.0.1:{}", ports[1]),
    );
    eventually("the sidecar to serve", LIMIT, || async {
        let ok = tokio::net::TcpStream::connect(("127.0.0.1", ports[1]))
            .await
            .is_ok();
        (ok && admin(&admin_url, Method::POST, "/circuit/open")
            .await
            .status
            == 200)
            .then_some(())
    })
    .await;
    let pending: Vec<_> = (0..3).map(|_| spawn_order(&proxy, &key)).collect();
    until_orders(&admin_url, "parked", 3).await;

    let pid = child.id().expect("pid").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    for reply in delivered(pending).await {
        assert_eq!(reply.status, 503, "{}", reply.text());
        assert_eq!(reply.header("x-sidecar-error"), Some("circuit-open"));
    }
    let status = tokio::time::timeout(LIMIT, child.wait())
        .await
        .expect("the sidecar stops")
        .expect("exit status");
    assert!(status.success(), "{status}");
    assert_eq!(factory.stats().orders, 0, "nothing reached the factory");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
