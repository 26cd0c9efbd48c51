//! The breaker as a tower layer, with tokio's paused clock and a scripted
//! inner service.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response};
use tokio::sync::oneshot;
use tower::{Layer, Service};

use super::*;
use crate::config::{BreakerConfig, Percent};
use crate::proxy::Outgoing;
use crate::resilience::testing::{Script, Step, TestService, request, until};
use crate::telemetry::metrics::Metrics;

/// A breaker that trips at 50 % of 10 calls or 5 failures in a row.
pub(super) fn config() -> BreakerConfig {
    BreakerConfig {
        enabled: true,
        failure_rate_percent: Percent::new(50).expect("valid percent"),
        minimum_calls: 10,
        window: Duration::from_secs(10),
        consecutive_failures: 5,
        open_for: Duration::from_secs(5),
        half_open_probes: 1,
    }
}

fn stack(config: &BreakerConfig, script: &Script) -> (Arc<Breaker>, BreakerService<TestService>) {
    let breaker = Breaker::new(config, Arc::new(Metrics::default()));
    let svc = BreakerLayer::new(Arc::clone(&breaker)).layer(script.service());
    (breaker, svc)
}

async fn send<S>(svc: &S) -> Result<Response<ProxyBody>, BoxError>
where
    S: Service<Outgoing, Response = Response<ProxyBody>, Error = BoxError> + Clone,
{
    let req = Arc::new(request(Method::GET, "/api/order", ""));
    crate::resilience::testing::send(svc, req).await
}

fn is_open(result: &Result<Response<ProxyBody>, BoxError>) -> Option<Duration> {
    match result {
        Err(e) => e.downcast_ref::<CircuitOpen>().map(|c| c.retry_after),
        Ok(_) => None,
    }
}

#[tokio::test(start_paused = true)]
async fn opens_after_consecutive_failures_and_fails_fast() {
    let script = Script::new();
    script.push_n(5, 500);
    let (breaker, svc) = stack(&config(), &script);
    for _ in 0..4 {
        assert_eq!(send(&svc).await.expect("answer").status(), 500);
        assert_eq!(breaker.state(), CircuitState::Closed);
    }
    assert_eq!(send(&svc).await.expect("answer").status(), 500);
    assert_eq!(breaker.state(), CircuitState::Open);

    tokio::time::advance(Duration::from_secs(2)).await;
    let r = send(&svc).await;
    assert_eq!(is_open(&r), Some(Duration::from_secs(3)));
    assert_eq!(script.calls(), 5, "the factory was not asked while open");
}

#[tokio::test(start_paused = true)]
async fn opens_on_failure_rate_once_minimum_calls_are_in() {
    let script = Script::new();
    // Alternating fail/ok never makes 5 in a row; 50% over >= 10 calls does.
    for _ in 0..5 {
        script.push(Step::Refused).push(Step::Status(200));
    }
    let (breaker, svc) = stack(&config(), &script);
    for i in 0..9 {
        let _ = send(&svc).await;
        assert_eq!(breaker.state(), CircuitState::Closed, "after call {i}");
    }
    // Call 10 succeeds: 5/10 failures, but only failures trip.
    let _ = send(&svc).await;
    assert_eq!(breaker.state(), CircuitState::Closed);
    script.push(Step::Status(503));
    let _ = send(&svc).await; // 6/11 failures: trips
    assert_eq!(breaker.state(), CircuitState::Open);
    assert_eq!(breaker.snapshot().reason, Some(state::Reason::FailureRate));
}

#[tokio::test(start_paused = true)]
async fn rate_needs_minimum_calls() {
    let script = Script::new();
    script
        .push(Step::Timeout)
        .push(Step::BadJwt)
        .push(Step::Status(502));
    let (breaker, svc) = stack(
        &BreakerConfig {
            minimum_calls: 4,
            ..config()
        },
        &script,
    );
    for _ in 0..3 {
        let _ = send(&svc).await;
    }
    // 3/3 failed, but fewer than minimum_calls (and fewer than 5 in a row).
    assert_eq!(breaker.state(), CircuitState::Closed);
    assert_eq!(breaker.snapshot().window.failures, 3);
    script.push(Step::Status(500));
    let _ = send(&svc).await;
    assert_eq!(breaker.state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn caller_errors_and_aborted_tries_are_not_failures() {
    let script = Script::new();
    script
        .push_n(20, 404)
        .push_n(4, 500)
        .push(Step::Status(429));
    for _ in 0..10 {
        script.push(Step::Aborted);
    }
    script.push_n(4, 500);
    let (breaker, svc) = stack(&config(), &script);
    for _ in 0..39 {
        let _ = send(&svc).await;
    }
    // 8 failures in 29 counted calls, never 5 in a row (the 429 broke the run).
    let snap = breaker.snapshot();
    assert_eq!(snap.state, CircuitState::Closed);
    assert_eq!(snap.window.calls, 29);
    assert_eq!(snap.window.failures, 8);
    assert_eq!(snap.consecutive_failures, 4);
}

/// Opens the breaker with five refused connections and lets `open_for` pass.
async fn open_then_wait<S>(script: &Script, svc: &S)
where
    S: Service<Outgoing, Response = Response<ProxyBody>, Error = BoxError> + Clone,
{
    for _ in 0..5 {
        script.push(Step::Refused);
    }
    for _ in 0..5 {
        let _ = send(svc).await;
    }
    assert!(is_open(&send(svc).await).is_some());
    tokio::time::advance(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn half_open_admits_one_probe_and_closes_on_its_success() {
    let script = Script::new();
    let (breaker, svc) = stack(&config(), &script);
    open_then_wait(&script, &svc).await;

    let (tx, rx) = oneshot::channel();
    script.push(Step::Wait(rx));
    let probe = tokio::spawn(tower::ServiceExt::oneshot(
        svc.clone(),
        Arc::new(request(Method::GET, "/api/order", "")),
    ));
    until(|| script.calls() == 6).await;
    assert_eq!(breaker.state(), CircuitState::HalfOpen);
    assert_eq!(breaker.snapshot().probes_in_flight, 1);

    // A second call while the probe is out is refused, without the factory.
    let second = send(&svc).await;
    assert_eq!(is_open(&second), Some(Duration::from_secs(1)));
    assert_eq!(script.calls(), 6);

    tx.send(()).expect("probe waiting");
    let answer = probe.await.expect("task").expect("answer");
    assert_eq!(answer.status(), 200);
    assert_eq!(breaker.state(), CircuitState::Closed);
    assert_eq!(send(&svc).await.expect("closed").status(), 200);
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_reopens_for_open_for() {
    let script = Script::new();
    let (breaker, svc) = stack(&config(), &script);
    open_then_wait(&script, &svc).await;
    script.push(Step::Status(500));
    assert_eq!(send(&svc).await.expect("probe").status(), 500);
    assert_eq!(breaker.state(), CircuitState::Open);
    assert_eq!(breaker.snapshot().reason, Some(state::Reason::ProbeFailed));
    assert_eq!(is_open(&send(&svc).await), Some(Duration::from_secs(5)));
    tokio::time::advance(Duration::from_millis(4_999)).await;
    assert!(is_open(&send(&svc).await).is_some());
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(send(&svc).await.expect("probe").status(), 200);
    assert_eq!(breaker.state(), CircuitState::Closed);
    assert_eq!(script.calls(), 7, "one probe per open_for");
}

#[tokio::test(start_paused = true)]
async fn a_dropped_probe_frees_its_slot() {
    let script = Script::new();
    let (breaker, svc) = stack(&config(), &script);
    open_then_wait(&script, &svc).await;
    let (_tx, rx) = oneshot::channel();
    script.push(Step::Wait(rx));
    {
        let mut probe_svc = svc.clone();
        std::future::poll_fn(|cx| probe_svc.poll_ready(cx))
            .await
            .expect("ready");
        let mut probe = Box::pin(probe_svc.call(Arc::new(Request::new(Bytes::new()))));
        assert!(futures_poll_once(probe.as_mut()).await.is_none());
        assert_eq!(breaker.snapshot().probes_in_flight, 1);
        assert!(is_open(&send(&svc).await).is_some());
        // Dropped here, as a deadline or a vanished client would.
    }
    assert_eq!(breaker.snapshot().probes_in_flight, 0);
    assert_eq!(breaker.state(), CircuitState::HalfOpen);
    assert_eq!(send(&svc).await.expect("next probe").status(), 200);
    assert_eq!(breaker.state(), CircuitState::Closed);
}

/// Polls a future once.
async fn futures_poll_once<F: std::future::Future + Unpin>(mut f: F) -> Option<F::Output> {
    std::future::poll_fn(|cx| {
        std::task::Poll::Ready(match std::pin::Pin::new(&mut f).poll(cx) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        })
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn overrides_through_the_layer() {
    let script = Script::new();
    let (breaker, svc) = stack(&config(), &script);
    breaker.force_open().expect("enabled");
    tokio::time::advance(Duration::from_secs(600)).await;
    assert!(is_open(&send(&svc).await).is_some());
    assert_eq!(script.calls(), 0);
    breaker.force_close().expect("enabled");
    assert_eq!(send(&svc).await.expect("closed").status(), 200);
    assert_eq!(script.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn disabled_breaker_passes_everything() {
    let script = Script::new();
    let (breaker, svc) = stack(
        &BreakerConfig {
            enabled: false,
            ..config()
        },
        &script,
    );
    script.push_n(20, 500);
    for _ in 0..20 {
        assert_eq!(send(&svc).await.expect("answer").status(), 500);
    }
    assert_eq!(breaker.state(), CircuitState::Closed);
    assert_eq!(script.calls(), 20);
}
