//! The retry layer with tokio's paused clock and a scripted factory, alone
//! and in the real order of the stack (deadline, retry, breaker, attempt
//! timeout).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Method, Request, Response};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceBuilder};

use super::*;
use crate::config::{BreakerConfig, Percent, RetryConfig, RetryOn};
use crate::error::{ErrorKind, kind_of};
use crate::resilience::breaker::{Breaker, BreakerLayer, CircuitOpen};
use crate::resilience::classify::{FailureKind, Outcome, classify_error};
use crate::resilience::deadline::{AttemptTimeoutLayer, DeadlineLayer};
use crate::resilience::testing::{Script, Step, TestService, request, send};
use crate::telemetry::metrics::Metrics;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn config() -> RetryConfig {
    RetryConfig {
        max_attempts: 3,
        initial_backoff: ms(100),
        max_backoff: Duration::from_secs(2),
        budget_percent: Percent::new(20).expect("valid percent"),
        budget_min_per_second: 10,
        budget_window: Duration::from_secs(10),
        ..RetryConfig::default()
    }
}

fn retry(config: &RetryConfig, script: &Script) -> (Arc<RetryBudget>, Retry<TestService>) {
    let budget = RetryBudget::new(config);
    let layer = RetryLayer::new(config, Arc::clone(&budget), Arc::new(Metrics::default()));
    (budget, layer.layer(script.service()))
}

fn attempts(res: &Response<crate::proxy::body::ProxyBody>) -> &str {
    res.headers()
        .get(X_SIDECAR_ATTEMPTS)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("missing")
}

fn order() -> Request<Bytes> {
    request(Method::POST, "/api/order", r#"{"diner":{"id":1}}"#)
}

#[tokio::test(start_paused = true)]
async fn a_blip_of_two_failures_becomes_a_success_in_three_tries() {
    let script = Script::new();
    script.push(Step::Status(500)).push(Step::Refused);
    let (_, svc) = retry(&config(), &script);
    let res = send(&svc, order()).await.expect("answer");
    assert_eq!(res.status(), 200);
    assert_eq!(attempts(&res), "3");

    let log = script.log();
    assert_eq!(log.len(), 3);
    for call in &log {
        assert_eq!(call.method, Method::POST);
        assert_eq!(call.path, "/api/order");
        assert_eq!(call.body, r#"{"diner":{"id":1}}"#, "body replayed");
    }
    // Full jitter: the first retry waits at most 100ms, the second 200ms.
    assert!(log[1].at - log[0].at <= ms(100));
    assert!(log[2].at - log[1].at <= ms(200));
}

#[tokio::test(start_paused = true)]
async fn a_plain_success_says_one_attempt() {
    let script = Script::new();
    let (_, svc) = retry(&config(), &script);
    let res = send(&svc, request(Method::GET, "/api/order", ""))
        .await
        .expect("answer");
    assert_eq!(attempts(&res), "1");
}

#[tokio::test(start_paused = true)]
async fn post_to_an_unlisted_path_is_never_retried() {
    let script = Script::new();
    script.push(Step::Status(500)).push(Step::Status(500));
    let (_, svc) = retry(&config(), &script);
    let res = send(&svc, request(Method::POST, "/api/order/verify", "{}"))
        .await
        .expect("answer");
    assert_eq!(res.status(), 500);
    assert_eq!(attempts(&res), "1");
    assert_eq!(script.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn caller_errors_are_never_retried() {
    let script = Script::new();
    script
        .push(Step::Status(404))
        .push(Step::RetryAfter(429, "1".into()));
    let (_, svc) = retry(&config(), &script);
    for want in [404, 429] {
        let res = send(&svc, order()).await.expect("answer");
        assert_eq!(res.status(), want);
        assert_eq!(attempts(&res), "1");
    }
    assert_eq!(script.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn only_failures_listed_in_retry_on_are_retried() {
    let script = Script::new();
    script.push(Step::Status(500)).push(Step::Refused);
    let cfg = RetryConfig {
        on: vec![RetryOn::Connect],
        ..config()
    };
    let (_, svc) = retry(&cfg, &script);
    let res = send(&svc, order()).await.expect("answer");
    assert_eq!((res.status().as_u16(), attempts(&res)), (500, "1"));
    // A refused connection is listed: retried.
    let res = send(&svc, order()).await.expect("answer");
    assert_eq!((res.status().as_u16(), attempts(&res)), (200, "2"));
}

#[tokio::test(start_paused = true)]
async fn after_every_try_failed_the_last_factory_answer_is_returned() {
    let script = Script::new();
    script
        .push(Step::Status(502))
        .push(Step::Status(500))
        .push(Step::BadJwt);
    let (_, svc) = retry(&config(), &script);
    let res = send(&svc, order()).await.expect("answer");
    assert_eq!(res.status(), 200);
    assert!(
        res.extensions()
            .get::<crate::resilience::classify::BadJwt>()
            .is_some()
    );
    assert_eq!(attempts(&res), "3");
    assert_eq!(script.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn errors_leave_with_their_try_count_and_keep_their_kind() {
    let script = Script::new();
    script
        .push(Step::Refused)
        .push(Step::Timeout)
        .push(Step::Refused);
    let (_, svc) = retry(&config(), &script);
    let err = send(&svc, order()).await.expect_err("unreachable");
    assert_eq!(attempts_of(err.as_ref()), Some(3));
    assert_eq!(
        classify_error(err.as_ref()),
        Outcome::Failure(FailureKind::Connect)
    );
    assert_eq!(kind_of(err.as_ref()), ErrorKind::Unreachable);
}

#[tokio::test(start_paused = true)]
async fn backoff_stays_within_the_capped_exponential() {
    let cfg = RetryConfig {
        max_attempts: 6,
        initial_backoff: ms(100),
        max_backoff: ms(300),
        budget_min_per_second: 100,
        ..config()
    };
    for _ in 0..20 {
        let script = Script::new();
        script.push_n(6, 503);
        let (_, svc) = retry(&cfg, &script);
        let res = send(&svc, order()).await.expect("answer");
        assert_eq!(attempts(&res), "6");
        let log = script.log();
        let caps = [100, 200, 300, 300, 300].map(ms);
        for (pair, cap) in log.windows(2).zip(caps) {
            let gap = pair[1].at - pair[0].at;
            assert!(gap <= cap + ms(1), "gap {gap:?} over cap {cap:?}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn retry_after_in_seconds_is_honoured() {
    let script = Script::new();
    script.push(Step::RetryAfter(503, "3".into()));
    let (_, svc) = retry(&config(), &script);
    let svc = DeadlineLayer::new(Duration::from_secs(20)).layer(svc);
    let res = send(&svc, order()).await.expect("answer");
    assert_eq!((res.status().as_u16(), attempts(&res)), (200, "2"));
    let log = script.log();
    assert_eq!(log[1].at - log[0].at, Duration::from_secs(3));
}

#[tokio::test(start_paused = true)]
async fn retry_after_as_a_date_is_honoured() {
    let script = Script::new();
    let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(4));
    script.push(Step::RetryAfter(503, date));
    let (_, svc) = retry(&config(), &script);
    let svc = DeadlineLayer::new(Duration::from_secs(20)).layer(svc);
    let res = send(&svc, order()).await.expect("answer");
    assert_eq!(res.status(), 200);
    let log = script.log();
    // Whole seconds on the wire: between 3 and 4 seconds.
    let gap = log[1].at - log[0].at;
    assert!(
        gap > Duration::from_secs(3) && gap <= Duration::from_secs(4),
        "{gap:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_past_the_deadline_ends_the_tries() {
    let script = Script::new();
    script.push(Step::RetryAfter(503, "10".into()));
    let (_, svc) = retry(&config(), &script);
    let svc = DeadlineLayer::new(Duration::from_secs(5)).layer(svc);
    let start = Instant::now();
    let res = send(&svc, order()).await.expect("answer");
    assert_eq!((res.status().as_u16(), attempts(&res)), (503, "1"));
    assert_eq!(Instant::now(), start, "answered at once");
    assert_eq!(script.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn no_try_starts_that_cannot_get_min_try_time_before_the_deadline() {
    let script = Script::new();
    for _ in 0..10 {
        script.push(Step::Slow(Duration::from_secs(32)));
    }
    let cfg = RetryConfig {
        max_attempts: 10,
        initial_backoff: ms(1),
        max_backoff: ms(10),
        budget_min_per_second: 100,
        ..config()
    };
    let budget = RetryBudget::new(&cfg);
    let svc = ServiceBuilder::new()
        .layer(DeadlineLayer::new(Duration::from_secs(1)))
        .layer(RetryLayer::new(&cfg, budget, Arc::new(Metrics::default())))
        .layer(AttemptTimeoutLayer::new(ms(400)))
        .service(script.service());
    let start = Instant::now();
    let err = send(&svc, order()).await.expect_err("too slow");
    // Tries at 0, ~0.4s and ~0.8s; the third is cut by the deadline at 1s
    // (a counted timeout); a fourth would have had under 100ms: not started.
    assert_eq!(kind_of(err.as_ref()), ErrorKind::Timeout);
    assert_eq!(attempts_of(err.as_ref()), Some(3));
    assert_eq!(Instant::now() - start, Duration::from_secs(1));
    let log = script.log();
    assert_eq!(log.len(), 3);
    assert!(log.iter().all(|c| c.at - start <= ms(900)));
}

#[tokio::test(start_paused = true)]
async fn a_circuit_open_rejection_is_never_retried() {
    let script = Script::new();
    let metrics = Arc::new(Metrics::default());
    let breaker = Breaker::new(
        &BreakerConfig {
            consecutive_failures: 2,
            ..BreakerConfig::default()
        },
        Arc::clone(&metrics),
    );
    let cfg = config();
    let svc = ServiceBuilder::new()
        .layer(RetryLayer::new(&cfg, RetryBudget::new(&cfg), metrics))
        .layer(BreakerLayer::new(Arc::clone(&breaker)))
        .service(script.service());

    // Two failures open the circuit; the third try is refused, not retried.
    script.push_n(2, 500);
    let err = send(&svc, order()).await.expect_err("circuit opened");
    assert!(attempts_of(err.as_ref()) == Some(2));
    assert_eq!(kind_of(err.as_ref()), ErrorKind::CircuitOpen);
    assert_eq!(script.calls(), 2);

    // While open: one refused try, zero reached the factory.
    let err = send(&svc, order()).await.expect_err("open");
    assert_eq!(attempts_of(err.as_ref()), Some(0));
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err.as_ref());
    let mut found = false;
    while let Some(e) = cur {
        found |= e.is::<CircuitOpen>();
        cur = e.source();
    }
    assert!(
        found,
        "CircuitOpen is in the chain for error.rs's Retry-After"
    );
    assert_eq!(script.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_budget_caps_retries_under_total_failure() {
    let script = Script::new();
    script.push_n(1_000, 500);
    let cfg = RetryConfig {
        initial_backoff: ms(1),
        max_backoff: ms(1),
        budget_min_per_second: 0,
        ..config()
    };
    let (budget, svc) = retry(&cfg, &script);
    for _ in 0..100 {
        let res = send(&svc, order()).await.expect("answer");
        assert_eq!(res.status(), 500);
    }
    // Without a budget: 300 tries. With 20%: the 100 requests plus 20.
    assert_eq!(script.calls(), 120);
    let snap = budget.snapshot();
    assert_eq!(snap.requests_in_window, 100);
    assert_eq!(snap.retries_in_window, 20);
    assert!(snap.refused_total >= 80, "{snap:?}");
}

#[tokio::test(start_paused = true)]
async fn the_whole_stack_runs_on_a_spawned_task() {
    let script = Script::new();
    script.push(Step::Status(500));
    let metrics = Arc::new(Metrics::default());
    let cfg = config();
    let breaker = Breaker::new(&BreakerConfig::default(), Arc::clone(&metrics));
    let svc = ServiceBuilder::new()
        .layer(DeadlineLayer::new(Duration::from_secs(20)))
        .layer(RetryLayer::new(&cfg, RetryBudget::new(&cfg), metrics).min_try_time(ms(50)))
        .layer(BreakerLayer::new(breaker))
        .layer(AttemptTimeoutLayer::new(Duration::from_secs(5)))
        .service(script.service());
    let mut svc = svc;
    std::future::poll_fn(|cx| svc.poll_ready(cx))
        .await
        .expect("ready");
    let fut = svc.call(order());
    let res = tokio::spawn(fut).await.expect("task").expect("answer");
    assert_eq!((res.status().as_u16(), attempts(&res)), (200, "2"));
}
