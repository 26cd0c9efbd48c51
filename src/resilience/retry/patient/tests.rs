//! Orders with patience through the real layers (deadline, retry, breaker)
//! over a scripted factory, on tokio's paused clock: every time asserted is
//! exact, and no test waits in real time.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tower::{Layer, ServiceBuilder};

use crate::boxed::BoxError;
use crate::chaos::Chaos;
use crate::config::{
    BreakerConfig, ChaosConfig, OrdersConfig, Percent, RetryConfig, UpstreamConfig, UpstreamUrl,
};
use crate::error::{ErrorKind, kind_of};
use crate::orders::Patience;
use crate::proxy::body::ProxyBody;
use crate::resilience::breaker::{Breaker, BreakerLayer};
use crate::resilience::deadline::DeadlineLayer;
use crate::resilience::retry::{RetryBudget, RetryLayer, X_SIDECAR_ATTEMPTS, attempts_of};
use crate::resilience::testing::{Script, Step, TestService, request, send, until};
use crate::telemetry::metrics::Metrics;

type Svc = tower::util::BoxCloneSyncService<Request<Bytes>, Response<ProxyBody>, BoxError>;

const PATIENCE: Duration = Duration::from_secs(60);
const ATTEMPT: Duration = Duration::from_secs(5);

fn s(n: u64) -> Duration {
    Duration::from_secs(n)
}

struct Rig {
    svc: Svc,
    script: Script,
    breaker: Arc<Breaker>,
    patience: Arc<Patience>,
    budget: Arc<RetryBudget>,
    metrics: Arc<Metrics>,
}

fn retry_config() -> RetryConfig {
    RetryConfig {
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(400),
        budget_min_per_second: 10,
        ..RetryConfig::default()
    }
}

fn no_budget() -> RetryConfig {
    RetryConfig {
        budget_percent: Percent::new(0).expect("percent"),
        budget_min_per_second: 0,
        ..retry_config()
    }
}

fn rig_with(retry: RetryConfig, breaker: BreakerConfig, orders: OrdersConfig) -> Rig {
    let script = Script::new();
    rig_over(retry, breaker, orders, script.service(), script)
}

/// The real layers over `factory` (`script` only records what the tests
/// push and call through it).
fn rig_over(
    retry: RetryConfig,
    breaker: BreakerConfig,
    orders: OrdersConfig,
    factory: TestService,
    script: Script,
) -> Rig {
    let metrics = Arc::new(Metrics::default());
    let mut upstream = UpstreamConfig::new(UpstreamUrl::parse("http://127.0.0.1:9").expect("url"));
    upstream.attempt_timeout = ATTEMPT;
    let breaker_handle = Breaker::new(&breaker, Arc::clone(&metrics));
    let chaos = Chaos::new(&ChaosConfig::default(), Arc::clone(&metrics));
    let patience = Patience::new(
        &orders,
        &upstream,
        &breaker,
        Arc::clone(&breaker_handle),
        &chaos,
        Arc::clone(&metrics),
    );
    let budget = RetryBudget::new(&retry);
    let svc = ServiceBuilder::new()
        .layer(DeadlineLayer::new(s(20)).orders(Arc::clone(patience.routes()), patience.patience()))
        .layer(
            RetryLayer::new(&retry, Arc::clone(&budget), Arc::clone(&metrics))
                .patience(Arc::clone(&patience)),
        )
        .layer(BreakerLayer::new(Arc::clone(&breaker_handle)))
        .service(factory);
    Rig {
        svc: Svc::new(svc),
        script,
        breaker: breaker_handle,
        patience,
        budget,
        metrics,
    }
}

/// A rig whose retry budget is empty: no hedge, no retry.
fn unbudgeted() -> Rig {
    rig_with(
        no_budget(),
        BreakerConfig::default(),
        OrdersConfig::default(),
    )
}

fn rig() -> Rig {
    rig_with(
        retry_config(),
        BreakerConfig::default(),
        OrdersConfig::default(),
    )
}

fn order() -> Request<Bytes> {
    request(Method::POST, "/api/order", "{}")
}

fn attempts(res: &Response<ProxyBody>) -> &str {
    res.headers()
        .get(X_SIDECAR_ATTEMPTS)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("missing")
}

/// Like [`until`], letting the paused clock advance 1 ms at a time (for
/// conditions behind a backoff timer).
async fn ticks_until(cond: impl Fn() -> bool) {
    for _ in 0..10_000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("condition not reached within 10 s of paused time");
}

impl Rig {
    /// The next try is never answered (while the returned sender lives).
    fn dead_try(&self) -> oneshot::Sender<()> {
        let (never, rx) = oneshot::channel();
        self.script.push(Step::Wait(rx));
        never
    }

    /// Sends an order on a task of its own (orders wait concurrently).
    fn spawn_order(&self) -> tokio::task::JoinHandle<Result<Response<ProxyBody>, BoxError>> {
        let svc = self.svc.clone();
        tokio::spawn(async move { send(&svc, order()).await })
    }

    fn metric(&self, line: &str) -> bool {
        self.metrics.prometheus_text().lines().any(|l| l == line)
    }
}

#[tokio::test(start_paused = true)]
async fn a_slow_try_is_waited_for_and_hedged_each_attempt_timeout() {
    let rig = rig();
    for _ in 0..3 {
        rig.script.push(Step::Slow(s(32)));
    }
    let start = Instant::now();
    let res = send(&rig.svc, order()).await.expect("answer");
    assert_eq!(res.status(), 200);
    assert_eq!(Instant::now() - start, s(32), "the first try's answer");
    assert_eq!(attempts(&res), "3");
    let at: Vec<_> = rig.script.log().iter().map(|c| c.at - start).collect();
    assert_eq!(at, [s(0), s(5), s(10)], "hedges at each attempt timeout");
    assert!(rig.metric("sidecar_hedges_total{result=\"lost\"} 2"));
    assert!(rig.metric("sidecar_hedges_total{result=\"won\"} 0"));
    let circuit = rig.breaker.snapshot();
    assert_eq!(circuit.window.failures, 0, "slowness is no failure");
    assert_eq!(rig.patience.lot().waiting(), 0, "left the lot");
}

#[tokio::test(start_paused = true)]
async fn the_first_good_answer_wins() {
    let rig = rig();
    rig.script.push(Step::Slow(s(32))).push(Step::Status(200));
    let start = Instant::now();
    let res = send(&rig.svc, order()).await.expect("answer");
    assert_eq!((res.status().as_u16(), attempts(&res)), (200, "2"));
    assert_eq!(
        Instant::now() - start,
        ATTEMPT,
        "the hedge answered at once"
    );
    assert!(rig.metric("sidecar_hedges_total{result=\"won\"} 1"));
    assert!(rig.metric("sidecar_hedges_total{result=\"lost\"} 0"));
}

#[tokio::test(start_paused = true)]
async fn no_hedge_is_sent_beyond_the_retry_budget() {
    let rig = unbudgeted();
    rig.script.push(Step::Slow(s(32)));
    let res = send(&rig.svc, order()).await.expect("answer");
    assert_eq!((res.status().as_u16(), attempts(&res)), (200, "1"));
    assert_eq!(rig.script.calls(), 1);
    assert!(
        rig.budget.snapshot().refused_total >= 1,
        "the budget was asked"
    );
}

#[tokio::test(start_paused = true)]
async fn patience_over_answers_504_on_a_dead_try() {
    let rig = unbudgeted();
    let _never = rig.dead_try();
    let start = Instant::now();
    let err = send(&rig.svc, order()).await.expect_err("no answer");
    assert_eq!(kind_of(err.as_ref()), ErrorKind::Timeout);
    assert_eq!(attempts_of(err.as_ref()), Some(1));
    assert!(Instant::now() - start >= PATIENCE - Duration::from_millis(1));
    assert!(Instant::now() - start <= PATIENCE);
    assert!(rig.metric("sidecar_orders_wait_seconds_count{sidecar_outcome=\"timeout\"} 1"));
}

#[tokio::test(start_paused = true)]
async fn a_refused_order_parks_and_goes_when_the_circuit_closes() {
    let rig = rig();
    rig.breaker.force_open().expect("enabled");
    let pending = rig.spawn_order();
    until(|| rig.patience.lot().parked() == 1).await;
    tokio::time::advance(s(30)).await;
    assert_eq!(rig.script.calls(), 0, "a parked order sends nothing");
    rig.breaker.force_close().expect("enabled");
    let res = pending.await.expect("task").expect("answer");
    assert_eq!((res.status().as_u16(), attempts(&res)), (200, "1"));
    assert_eq!(rig.script.calls(), 1);
    assert_eq!(rig.patience.lot().parked(), 0);
    assert!(rig.metric("sidecar_orders_wait_seconds_count{sidecar_outcome=\"ok\"} 1"));
}

#[tokio::test(start_paused = true)]
async fn the_oldest_parked_order_probes_when_the_breaker_half_opens() {
    let rig = rig_with(
        retry_config(),
        BreakerConfig {
            consecutive_failures: 2,
            ..BreakerConfig::default()
        },
        OrdersConfig::default(),
    );
    rig.script.push(Step::Refused).push(Step::Refused);
    let start = Instant::now();
    let first = rig.spawn_order();
    // Its retry waits a backoff: let the paused clock move, in small steps.
    ticks_until(|| rig.patience.lot().parked() == 1).await;
    let second = rig.spawn_order();
    until(|| rig.patience.lot().parked() == 2).await;
    assert_eq!(rig.script.calls(), 2, "two failures opened the circuit");
    // At open_for the oldest probes (200: the script is empty); the close
    // releases the other.
    for pending in [first, second] {
        let res = pending.await.expect("task").expect("answer");
        assert_eq!(res.status(), 200);
    }
    let log = rig.script.log();
    assert_eq!(log.len(), 4);
    assert!(
        log[2].at - start >= s(5),
        "nothing before the breaker half-opened"
    );
}

#[tokio::test(start_paused = true)]
async fn an_order_whose_tries_all_failed_parks_and_looks_again() {
    let rig = rig();
    rig.script
        .push(Step::Refused)
        .push(Step::Refused)
        .push(Step::Refused);
    let start = Instant::now();
    let res = send(&rig.svc, order()).await.expect("answer");
    assert_eq!((res.status().as_u16(), attempts(&res)), (200, "4"));
    let log = rig.script.log();
    assert_eq!(log.len(), 4);
    assert!(log[3].at - log[2].at >= s(5), "looked again after open_for");
    assert!(Instant::now() - start < PATIENCE);
}

#[tokio::test(start_paused = true)]
async fn a_final_answer_is_not_waited_on() {
    let rig = rig();
    rig.script.push(Step::Status(401));
    let start = Instant::now();
    let res = send(&rig.svc, order()).await.expect("answer");
    assert_eq!((res.status().as_u16(), attempts(&res)), (401, "1"));
    assert_eq!(Instant::now(), start);
}

#[tokio::test(start_paused = true)]
async fn past_patience_a_parked_order_gets_the_circuit_open_answer() {
    let rig = rig();
    rig.breaker.force_open().expect("enabled");
    let start = Instant::now();
    let err = send(&rig.svc, order()).await.expect_err("still open");
    assert_eq!(kind_of(err.as_ref()), ErrorKind::CircuitOpen);
    assert_eq!(attempts_of(err.as_ref()), Some(0));
    assert!(Instant::now() - start >= PATIENCE - Duration::from_millis(1));
    assert_eq!(rig.script.calls(), 0);
    assert!(rig.metric("sidecar_orders_wait_seconds_count{sidecar_outcome=\"circuit_open\"} 1"));
}

#[tokio::test(start_paused = true)]
async fn beyond_max_waiting_an_order_is_answered_at_once() {
    let rig = rig_with(
        retry_config(),
        BreakerConfig::default(),
        OrdersConfig {
            max_waiting: 1,
            ..OrdersConfig::default()
        },
    );
    rig.breaker.force_open().expect("enabled");
    let _parked = rig.spawn_order();
    until(|| rig.patience.lot().parked() == 1).await;
    let start = Instant::now();
    let err = send(&rig.svc, order()).await.expect_err("lot full");
    assert_eq!(kind_of(err.as_ref()), ErrorKind::CircuitOpen);
    assert_eq!(Instant::now(), start, "at once");
    assert_eq!(rig.patience.lot().snapshot().turned_away_total, 1);
}

#[tokio::test(start_paused = true)]
async fn a_prompt_success_releases_orders_waiting_on_dead_tries() {
    let rig = unbudgeted();
    let _never = rig.dead_try();
    let stuck = rig.spawn_order();
    until(|| rig.script.calls() == 1).await;
    // Past attempt_timeout it waits in the lot (no budget: no hedge).
    tokio::time::advance(ATTEMPT).await;
    until(|| rig.patience.lot().waiting() == 1).await;
    // The factory answers a new order at once: the stuck one tries afresh.
    let res = send(&rig.svc, order()).await.expect("answer");
    assert_eq!(res.status(), 200);
    let res = stuck.await.expect("task").expect("answer");
    assert_eq!((res.status().as_u16(), attempts(&res)), (200, "2"));
    assert_eq!(rig.script.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_try_sent_before_a_resolve_is_replaced_when_it_turns_slow() {
    let rig = unbudgeted();
    let _never = rig.dead_try();
    let start = Instant::now();
    let stuck = rig.spawn_order();
    until(|| rig.script.calls() == 1).await;
    // A chaos episode is resolved while the try is young (nobody waits yet).
    tokio::time::advance(s(2)).await;
    rig.patience
        .lot()
        .recovered(Instant::now(), crate::orders::Evidence::Confirmed);
    let res = stuck.await.expect("task").expect("answer");
    assert_eq!((res.status().as_u16(), attempts(&res)), (200, "2"));
    assert_eq!(
        Instant::now() - start,
        ATTEMPT,
        "replaced as it turned slow"
    );
}

#[tokio::test(start_paused = true)]
async fn draining_answers_parked_orders_at_once() {
    let rig = rig();
    rig.breaker.force_open().expect("enabled");
    let pending = rig.spawn_order();
    until(|| rig.patience.lot().parked() == 1).await;
    let start = Instant::now();
    rig.patience.drain(s(10));
    let err = pending.await.expect("task").expect_err("drained");
    assert_eq!(kind_of(err.as_ref()), ErrorKind::CircuitOpen);
    assert_eq!(Instant::now(), start);
    // An order arriving now is not parked either.
    let err = send(&rig.svc, order()).await.expect_err("drained");
    assert_eq!(kind_of(err.as_ref()), ErrorKind::CircuitOpen);
}

#[tokio::test(start_paused = true)]
async fn other_routes_and_zero_patience_fail_fast() {
    let rig = rig();
    rig.breaker.force_open().expect("enabled");
    let err = send(&rig.svc, request(Method::GET, "/api/docs", ""))
        .await
        .expect_err("open");
    assert_eq!(kind_of(err.as_ref()), ErrorKind::CircuitOpen);
    let rig = rig_with(
        retry_config(),
        BreakerConfig::default(),
        OrdersConfig {
            patience: Duration::ZERO,
            ..OrdersConfig::default()
        },
    );
    rig.breaker.force_open().expect("enabled");
    let start = Instant::now();
    let err = send(&rig.svc, order()).await.expect_err("open");
    assert_eq!(kind_of(err.as_ref()), ErrorKind::CircuitOpen);
    assert_eq!(Instant::now(), start);
}

#[tokio::test(start_paused = true)]
async fn without_a_deadline_layer_orders_are_plain() {
    // The retry layer with patience, but no deadline layer marked the order.
    let rig = rig();
    let cfg = retry_config();
    let script = Script::new();
    let svc = RetryLayer::new(&cfg, RetryBudget::new(&cfg), Arc::clone(&rig.metrics))
        .patience(Arc::clone(&rig.patience))
        .layer(script.service());
    script.push(Step::Refused);
    let res = send(&svc, order()).await.expect("answer");
    assert_eq!(attempts(&res), "2");
}

#[tokio::test(start_paused = true)]
async fn a_release_survives_its_old_try_failing_after_it() {
    // One release a second: the second stuck order's fresh try is due 1 s
    // after the first's. Its old try fails in between, with no budget to
    // retry: it parks, and the release it was given still sends its try.
    let rig = rig_with(
        no_budget(),
        BreakerConfig::default(),
        OrdersConfig {
            release_per_second: 1,
            ..OrdersConfig::default()
        },
    );
    let _never = rig.dead_try();
    let failing = rig.dead_try();
    let first = rig.spawn_order();
    let second = rig.spawn_order();
    until(|| rig.script.calls() == 2).await;
    tokio::time::advance(ATTEMPT).await;
    until(|| rig.patience.lot().waiting() == 2).await;
    let res = send(&rig.svc, order()).await.expect("answer");
    assert_eq!(res.status(), 200, "a prompt answer: both are released");
    until(|| rig.script.calls() == 4).await;
    drop(failing);
    until(|| rig.patience.lot().parked() == 1).await;
    let start = Instant::now();
    for pending in [first, second] {
        let res = pending.await.expect("task").expect("answer");
        assert_eq!((res.status().as_u16(), attempts(&res)), (200, "2"));
    }
    assert!(
        Instant::now() - start <= s(1),
        "the fresh try went at its slot, not at patience's end"
    );
}

mod incidents;
