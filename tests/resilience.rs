//! Retry, retry budget, circuit breaker and deadlines end to end: the real
//! sidecar (in-process) in front of the factory simulator or a fake
//! upstream, over loopback.
//!
//! What the factory saw is read from the simulator's own counters (orders,
//! TCP connections), never inferred from the sidecar. No fixed sleeps and no
//! upper bounds on time: waits poll a condition, and the only time checks
//! are lower bounds that a slow machine cannot break (a Retry-After was
//! waited; probes cannot come faster than one per `open_for`). The one
//! assumption: `open_for` (3 s, 120 s) outlasts a handful of loopback
//! orders.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use factory_sidecar::config::Config;
use factory_sidecar::sim::{ChaosSpec, SimHandle};
use http::Method;
use serde_json::Value;
use tokio::time::Instant;

use support::http::{Http, Reply, request};
use support::sidecar::{self, ADMIN_TOKEN, Running};
use support::upstream::{FakeUpstream, answer};
use support::{eventually, sim};

const LIMIT: Duration = Duration::from_secs(20);

/// Short timeouts and backoff; no chaos resolving (each test decides when
/// the factory recovers), and a retry floor high enough for a few requests.
/// Orders fail fast (`patience = "0s"`): these tests pin the mechanics every
/// route but a patient order uses; orders with patience are tests/patience.rs.
fn base(c: &mut Config) {
    c.orders.patience = Duration::ZERO;
    c.upstream.attempt_timeout = Duration::from_secs(2);
    c.upstream.request_timeout = Duration::from_secs(5);
    c.retry.initial_backoff = Duration::from_millis(10);
    c.retry.max_backoff = Duration::from_millis(50);
    c.retry.budget_min_per_second = 10;
    c.chaos.auto_resolve = false;
}

async fn start(upstream: &str, tweak: impl FnOnce(&mut Config)) -> Running {
    sidecar::start(sidecar::config(upstream, |c| {
        base(c);
        tweak(c);
    }))
    .await
}

async fn order(http: &Http, sc: &Running, sim: &SimHandle) -> Reply {
    http.post_json(
        &format!("{}/api/order", sc.url),
        Some(sim.api_key()),
        factory_sidecar::sim::SAMPLE_ORDER,
    )
    .await
    .expect("the sidecar answers")
}

fn attempts(reply: &Reply) -> u64 {
    reply
        .header("x-sidecar-attempts")
        .unwrap_or_else(|| {
            panic!(
                "no x-sidecar-attempts on {}: {}",
                reply.status,
                reply.text()
            )
        })
        .parse()
        .expect("a number")
}

async fn admin(http: &Http, sc: &Running, method: Method, path: &str) -> Reply {
    let req = request(
        method,
        &format!("{}{path}", sc.admin),
        Some(ADMIN_TOKEN),
        None,
        "",
    )
    .expect("request");
    http.send(req).await.expect("admin answers")
}

async fn status(http: &Http, sc: &Running) -> Value {
    let reply = admin(http, sc, Method::GET, "/status").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()
}

/// The fail-fast answer, exactly as docs/operations.md describes it.
fn assert_circuit_open(reply: &Reply) {
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert_eq!(reply.header("x-sidecar-error"), Some("circuit-open"));
    let retry_after: u64 = reply
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("whole seconds");
    assert!(retry_after >= 1);
    let body = reply.json();
    assert_eq!(body["retryAfterSeconds"].as_u64(), Some(retry_after));
    let message = body["message"].as_str().expect("a message");
    assert!(message.contains("pizza kitchen is closed"), "{message}");
}

#[tokio::test]
async fn a_blip_of_two_failures_becomes_a_pizza_in_three_tries() {
    let sim = sim::start().await;
    let sc = start(&sim.url(), |_| {}).await;
    let http = Http::new();

    let plain = order(&http, &sc, &sim).await;
    assert_eq!((plain.status.as_u16(), attempts(&plain)), (200, 1));

    sim.set_chaos(ChaosSpec::fail().count(2));
    let reply = order(&http, &sc, &sim).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(attempts(&reply), 3);
    assert!(sim.verify(reply.json()["jwt"].as_str().expect("a jwt")));
    assert_eq!(sim.stats().orders, 1 + 3, "the factory saw every try");

    let s = status(&http, &sc).await;
    assert_eq!(s["circuit"]["state"], "closed");
    assert_eq!(s["retryBudget"]["retriesTotal"], 2);
}

#[tokio::test]
async fn a_retry_after_is_waited_when_it_fits_and_ends_the_tries_when_not() {
    let sim = sim::start().await;
    let sc = start(&sim.url(), |_| {}).await;
    let http = Http::new();

    sim.set_chaos(ChaosSpec::fail().count(1).retry_after(1));
    let started = Instant::now();
    let reply = order(&http, &sc, &sim).await;
    assert_eq!((reply.status.as_u16(), attempts(&reply)), (200, 2));
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "the retry waited the factory's Retry-After, not the 50ms backoff"
    );

    // Thirty seconds do not fit in a 5 s request: the factory's answer,
    // at once, after one try.
    sim.set_chaos(ChaosSpec::fail().count(1).retry_after(30));
    let before = sim.stats().orders;
    let reply = order(&http, &sc, &sim).await;
    assert_eq!((reply.status.as_u16(), attempts(&reply)), (500, 1));
    assert_eq!(reply.header("retry-after"), Some("30"));
    assert_eq!(sim.stats().orders, before + 1);
}

#[tokio::test]
async fn when_every_try_fails_the_last_factory_answer_is_returned() {
    let sim = sim::start().await;
    let sc = start(&sim.url(), |_| {}).await;
    let http = Http::new();
    sim.set_chaos(ChaosSpec::fail().count(3));
    let reply = order(&http, &sc, &sim).await;
    assert_eq!((reply.status.as_u16(), attempts(&reply)), (500, 3));
    assert!(
        reply.header("x-sidecar-error").is_none(),
        "the factory's own answer"
    );
    let link = reply.json()["reportUrl"]
        .as_str()
        .expect("the report link")
        .to_owned();
    assert!(link.ends_with("/report/****"), "masked: {link}");
}

#[tokio::test]
async fn a_down_factory_opens_the_breaker_and_is_left_alone_while_open() {
    let sim = sim::start().await;
    let sc = start(&sim.url(), |c| {
        // Long enough that nothing in this test reaches half-open.
        c.circuit_breaker.open_for = Duration::from_secs(120);
    })
    .await;
    let http = Http::new();
    assert_eq!(order(&http, &sc, &sim).await.status, 200);

    sim.set_chaos(ChaosSpec::down());
    let mut tried = 0;
    let first_refusal = loop {
        let reply = order(&http, &sc, &sim).await;
        tried += attempts(&reply);
        if reply.header("x-sidecar-error") == Some("circuit-open") {
            break reply;
        }
        // Dropped connections are 502 unreachable, the load balancer's page
        // is its 502: a failure either way.
        assert_eq!(reply.status, 502, "{}", reply.text());
        assert!(tried <= 5, "five failures in a row must open the circuit");
    };
    assert_circuit_open(&first_refusal);
    assert_eq!(tried, 5, "every try counts, retries included");
    assert_eq!(
        sim.stats().orders,
        1 + tried,
        "x-sidecar-attempts is what the factory saw"
    );

    let s = status(&http, &sc).await;
    assert_eq!(s["circuit"]["state"], "open");
    assert_eq!(s["circuit"]["reason"], "consecutive_failures");
    assert_eq!(s["circuit"]["window"]["failures"], 5);
    assert_eq!(s["circuit"]["consecutiveFailures"], 5);
    assert!(s["circuit"]["since"]["unixMs"].as_u64() > Some(0));

    // While open: answered at once, and the factory sees nothing, not even
    // a TCP connection.
    let seen = sim.stats();
    for _ in 0..10 {
        let reply = order(&http, &sc, &sim).await;
        assert_circuit_open(&reply);
        assert_eq!(attempts(&reply), 0, "no try reached the factory");
        let get = http
            .get(&format!("{}/api/order", sc.url))
            .await
            .expect("answer");
        assert_eq!(get.header("x-sidecar-error"), Some("circuit-open"));
    }
    let after = sim.stats();
    assert_eq!(after.connections, seen.connections);
    assert_eq!(after.requests, seen.requests);
    let s = status(&http, &sc).await;
    assert!(s["circuit"]["rejectionsTotal"].as_u64() >= Some(20));
}

#[tokio::test]
async fn one_probe_per_open_for_then_recovery_when_the_factory_returns() {
    const OPEN_FOR: Duration = Duration::from_millis(300);
    let sim = sim::start().await;
    let sc = start(&sim.url(), |c| {
        c.circuit_breaker.open_for = OPEN_FOR;
        c.circuit_breaker.consecutive_failures = 2;
        c.retry.max_attempts = 2;
    })
    .await;
    let http = Http::new();

    sim.set_chaos(ChaosSpec::down());
    // No try of this test can have opened the circuit before this moment.
    let t0 = Instant::now();
    let mut sent_tries = 0;
    let mut probes = 0;
    let mut opened = false;
    let deadline = Instant::now() + LIMIT;
    while probes < 3 {
        assert!(Instant::now() < deadline, "three probes never came");
        let reply = order(&http, &sc, &sim).await;
        let n = attempts(&reply);
        sent_tries += n;
        if reply.header("x-sidecar-error") == Some("circuit-open") {
            assert_circuit_open(&reply);
            if opened {
                // Open: either refused outright, or this was the one probe
                // (it failed, the circuit reopened, its retry was refused).
                assert!(n <= 1, "at most the probe: {n}");
                probes += n;
            }
            opened = true;
        }
        // Pace the loop (not a synchronisation: the loop ends on a count).
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = t0.elapsed();
    assert_eq!(
        sim.stats().orders,
        sent_tries,
        "the factory saw exactly the tries the sidecar reported"
    );
    // Each probe needs a full open_for after the circuit (re)opened.
    assert!(
        OPEN_FOR * u32::try_from(probes).expect("small") <= elapsed,
        "{probes} probes in {elapsed:?}"
    );

    // The factory returns: the next probe succeeds and closes the circuit.
    sim.set_chaos(ChaosSpec::none());
    let recovered = eventually("a pizza after recovery", LIMIT, || async {
        let reply = order(&http, &sc, &sim).await;
        (reply.status == 200).then_some(reply)
    })
    .await;
    assert!(sim.verify(recovered.json()["jwt"].as_str().expect("jwt")));
    let s = status(&http, &sc).await;
    assert_eq!(s["circuit"]["state"], "closed");
    assert_eq!(s["circuit"]["reason"], "probe_succeeded");
    assert_eq!(order(&http, &sc, &sim).await.status, 200);
}

#[tokio::test]
async fn half_open_lets_one_probe_through_and_refuses_the_rest_at_once() {
    let sim = sim::start().await;
    let sc = start(&sim.url(), |c| {
        c.circuit_breaker.consecutive_failures = 2;
        // Long beside five concurrent loopback orders: no second probe.
        c.circuit_breaker.open_for = Duration::from_secs(3);
    })
    .await;
    let http = Http::new();
    sim.set_chaos(ChaosSpec::down());
    let first = order(&http, &sc, &sim).await;
    assert_circuit_open(&first);
    assert_eq!(attempts(&first), 2, "two failed tries opened it");

    eventually("the breaker to half-open", LIMIT, || async {
        (status(&http, &sc).await["circuit"]["state"] == "half_open").then_some(())
    })
    .await;
    let before = sim.stats().orders;
    let mut orders = tokio::task::JoinSet::new();
    for _ in 0..5 {
        let (http, url, key) = (http.clone(), sc.url.clone(), sim.api_key().to_owned());
        orders.spawn(async move {
            http.post_json(
                &format!("{url}/api/order"),
                Some(&key),
                factory_sidecar::sim::SAMPLE_ORDER,
            )
            .await
            .expect("the sidecar answers")
        });
    }
    let mut tried = Vec::new();
    while let Some(reply) = orders.join_next().await {
        let reply = reply.expect("order task");
        // The probe failed, reopened the circuit, and its retry was refused.
        assert_circuit_open(&reply);
        tried.push(attempts(&reply));
    }
    tried.sort_unstable();
    assert_eq!(tried, [0, 0, 0, 0, 1], "one probe, four refused at once");
    assert_eq!(
        sim.stats().orders - before,
        1,
        "one probe reached the factory"
    );
}

#[tokio::test]
async fn the_retry_budget_caps_the_load_on_a_failing_factory() {
    const REQUESTS: u64 = 50;
    let sim = sim::start().await;
    let sc = start(&sim.url(), |c| {
        // The breaker would shield the factory too; this test is the budget's.
        c.circuit_breaker.enabled = false;
        c.retry.budget_min_per_second = 0;
        c.retry.initial_backoff = Duration::from_millis(1);
        c.retry.max_backoff = Duration::from_millis(2);
    })
    .await;
    let http = Http::new();
    sim.set_chaos(ChaosSpec::fail());

    let mut tries = 0;
    for _ in 0..REQUESTS {
        let reply = order(&http, &sc, &sim).await;
        assert_eq!(reply.status, 500, "{}", reply.text());
        tries += attempts(&reply);
    }
    let orders = sim.stats().orders;
    assert_eq!(orders, tries);
    // Without a budget: 3 x 50 = 150. With 20%: at most 50 + 10.
    assert!(
        (REQUESTS..=REQUESTS + REQUESTS / 5).contains(&orders),
        "{orders} orders for {REQUESTS} requests"
    );
    let s = status(&http, &sc).await;
    let budget = &s["retryBudget"];
    assert_eq!(budget["percent"], 20);
    assert_eq!(budget["requestsTotal"], REQUESTS);
    assert_eq!(budget["retriesTotal"], orders - REQUESTS);
    // Each request stops at its first refusal; at most REQUESTS / 5 got a retry.
    assert!(budget["refusedTotal"].as_u64() >= Some(REQUESTS * 4 / 5));
    assert_eq!(s["circuit"]["enabled"], false);
}

#[tokio::test]
async fn only_safe_requests_are_retried_and_never_a_4xx() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let up = FakeUpstream::start(move |r| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            match r.uri.path() {
                "/teapot" => answer(418, r#"{"message":"short and stout"}"#),
                "/busy" => {
                    let mut res = answer(429, r#"{"message":"slow down"}"#);
                    res.headers_mut()
                        .insert("retry-after", http::HeaderValue::from_static("1"));
                    res
                }
                // Fails twice in three: a retried request gets through.
                _ if n % 3 < 2 => answer(503, r#"{"message":"busy"}"#),
                _ => answer(200, r#"{"ok":true}"#),
            }
        }
    })
    .await;
    let sc = start(&up.url(), |c| c.circuit_breaker.consecutive_failures = 100).await;
    let http = Http::new();

    // POST to a path not in retry_non_idempotent: one try, the 503 as is.
    let reply = http
        .post_json(&format!("{}/api/order/verify", sc.url), None, "{}")
        .await
        .expect("answer");
    assert_eq!((reply.status.as_u16(), attempts(&reply)), (503, 1));
    assert_eq!(up.request_count(), 1);

    // The listed POST path and an idempotent GET: retried to success.
    let reply = http
        .post_json(&format!("{}/api/order", sc.url), None, "{}")
        .await
        .expect("answer");
    assert_eq!((reply.status.as_u16(), attempts(&reply)), (200, 2));
    let reply = http
        .get(&format!("{}/anything", sc.url))
        .await
        .expect("answer");
    assert_eq!((reply.status.as_u16(), attempts(&reply)), (200, 3));
    assert_eq!(up.request_count(), 6);

    // 4xx: the caller's fault, never retried (not even a 429 with
    // Retry-After), and passed on as the factory sent it.
    for (path, want, message) in [
        ("/teapot", 418, "short and stout"),
        ("/busy", 429, "slow down"),
    ] {
        let reply = http
            .get(&format!("{}{path}", sc.url))
            .await
            .expect("answer");
        assert_eq!(
            (reply.status.as_u16(), attempts(&reply)),
            (want, 1),
            "{path}"
        );
        assert_eq!(reply.json()["message"], message);
    }
    assert_eq!(up.request_count(), 8);
    let bodies: Vec<_> = up.requests().iter().map(|r| r.body.clone()).collect();
    assert_eq!(bodies[1], "{}");
    assert_eq!(bodies[1], bodies[2], "the body replays from the buffer");
}

#[tokio::test]
async fn caller_errors_never_open_the_breaker() {
    let sim = sim::start().await;
    let sc = start(&sim.url(), |c| c.circuit_breaker.consecutive_failures = 2).await;
    let http = Http::new();
    for _ in 0..10 {
        let reply = http
            .post_json(
                &format!("{}/api/order", sc.url),
                Some("not-the-key"),
                factory_sidecar::sim::SAMPLE_ORDER,
            )
            .await
            .expect("answer");
        assert_eq!((reply.status.as_u16(), attempts(&reply)), (401, 1));
    }
    assert_eq!(sim.stats().orders, 10);
    let s = status(&http, &sc).await;
    assert_eq!(s["circuit"]["state"], "closed");
    assert_eq!(s["circuit"]["window"]["calls"], 10);
    assert_eq!(s["circuit"]["window"]["failures"], 0);
}

#[tokio::test]
async fn the_overall_deadline_holds_against_a_throttled_factory() {
    let sim = sim::start().await;
    let sc = start(&sim.url(), |c| {
        c.upstream.attempt_timeout = Duration::from_millis(400);
        c.upstream.request_timeout = Duration::from_secs(1);
        c.chaos.background_timeout = Duration::from_secs(1);
    })
    .await;
    let http = Http::new();
    sim.set_chaos(ChaosSpec::throttle().delay(Duration::from_secs(25)));

    let reply = order(&http, &sc, &sim).await;
    // A throttled pizza would be a (late) 200: the 504 is the deadline's.
    assert_eq!(reply.status, 504, "{}", reply.text());
    assert_eq!(reply.header("x-sidecar-error"), Some("timeout"));
    assert!(reply.json()["message"].as_str().is_some());
    let n = attempts(&reply);
    assert!((1..=3).contains(&n), "{n} tries");
    // A try cut early may still be on its way (the chaos layer lets it
    // finish in the background): wait for it, then compare.
    eventually("the factory to count every try", LIMIT, || async {
        (sim.stats().orders == n).then_some(())
    })
    .await;
}

#[tokio::test]
async fn operator_overrides_hold_and_show_in_status() {
    let sim = sim::start().await;
    let sc = start(&sim.url(), |_| {}).await;
    let http = Http::new();

    let refused = http
        .send(
            request(
                Method::POST,
                &format!("{}/circuit/open", sc.admin),
                None,
                None,
                "",
            )
            .expect("request"),
        )
        .await
        .expect("answer");
    assert_eq!(refused.status, 401, "overrides need the token");

    let opened = admin(&http, &sc, Method::POST, "/circuit/open").await;
    assert_eq!(opened.status, 200, "{}", opened.text());
    assert_eq!(opened.json()["forcedOpen"], true);

    let seen = sim.stats();
    let reply = order(&http, &sc, &sim).await;
    assert_circuit_open(&reply);
    assert_eq!(sim.stats().connections, seen.connections);

    let s = status(&http, &sc).await;
    let circuit = &s["circuit"];
    assert_eq!(circuit["state"], "open");
    assert_eq!(circuit["forcedOpen"], true);
    assert_eq!(circuit["reason"], "operator_open");
    assert_eq!(circuit["lastOverride"]["action"], "open");
    assert!(circuit["lastOverride"]["at"]["unixMs"].as_u64() > Some(0));
    let budget = &s["retryBudget"];
    for key in [
        "availableRetries",
        "refusedTotal",
        "requestsInWindow",
        "retriesInWindow",
    ] {
        assert!(budget[key].is_u64(), "retryBudget.{key}: {budget}");
    }

    let closed = admin(&http, &sc, Method::POST, "/circuit/close").await;
    assert_eq!(closed.status, 200, "{}", closed.text());
    assert_eq!(closed.json()["state"], "closed");
    let reply = order(&http, &sc, &sim).await;
    assert_eq!((reply.status.as_u16(), attempts(&reply)), (200, 1));
    let s = status(&http, &sc).await;
    assert_eq!(s["circuit"]["state"], "closed");
    assert_eq!(s["circuit"]["forcedOpen"], false);
    assert_eq!(s["circuit"]["lastOverride"]["action"], "close");
}

#[tokio::test]
async fn a_disabled_breaker_never_answers_for_the_factory() {
    let sim = sim::start().await;
    let sc = start(&sim.url(), |c| {
        c.circuit_breaker.enabled = false;
        c.retry.max_attempts = 1;
    })
    .await;
    let http = Http::new();
    sim.set_chaos(ChaosSpec::down());
    for _ in 0..10 {
        let reply = order(&http, &sc, &sim).await;
        assert_eq!((reply.status.as_u16(), attempts(&reply)), (502, 1));
    }
    assert_eq!(sim.stats().orders, 10);
    let s = status(&http, &sc).await;
    assert_eq!(s["circuit"]["enabled"], false);
    assert_eq!(s["circuit"]["state"], "closed");
    let refused = admin(&http, &sc, Method::POST, "/circuit/open").await;
    assert_eq!(refused.status, 409, "{}", refused.text());
}
