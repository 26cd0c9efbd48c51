//! Random incidents on tokio's paused clock: whatever order events come in,
//! an order the factory could still make within its patience is made.
//!
//! The factory follows a random plan of healthy stretches, outages (tries
//! refused, as a factory that is down), hangs (tries held until the hang
//! ends, then dropped within 200 ms, as the simulator drops its held
//! connections one by one while it answers new orders) and freezes (tries
//! held for good), while orders arrive at random moments through the real
//! deadline, retry and breaker layers with the default retry budget; after
//! some incidents a chaos episode is resolved a little later, as the chaos
//! layer reports one ended by healthy answers. Every incident is shorter
//! than a third of the patience and followed by enough healthy time to
//! recover (a breaker's `open_for`, a probe, the releases), so every order
//! must end 200.
//!
//! Without the kept release of `park()` (a hang's new orders are answered,
//! which releases the waiting ones, then their held tries fail with the
//! budget spent, and the order used to drop its release), 6 of these 200
//! plans lost 23 orders in all.

use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;
use tower::service_fn;

use super::*;
use crate::proxy::Outgoing;
use crate::proxy::client::UpstreamError;
use crate::resilience::testing::status;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Healthy,
    Down,
    Hang,
    /// Tries held for good (a factory that froze with connections open).
    Freeze,
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A factory that does what `phase` says: healthy answers 200 within 20 ms,
/// down refuses the connection, hang holds the try until the phase changes
/// and then drops it.
fn factory(phase: watch::Receiver<Phase>, seed: u64) -> TestService {
    let rng = Arc::new(Mutex::new(fastrand::Rng::with_seed(seed)));
    TestService::new(service_fn(move |_req: Outgoing| {
        let mut phase = phase.clone();
        let delay = ms(rng.lock().u64(0..20));
        let drop_after = ms(rng.lock().u64(0..200));
        async move {
            let now = *phase.borrow_and_update();
            match now {
                Phase::Healthy => {
                    tokio::time::sleep(delay).await;
                    Ok(status(200))
                }
                Phase::Down => {
                    Err(Box::new(UpstreamError::new("connect", "connection refused")) as BoxError)
                }
                Phase::Freeze => std::future::pending().await,
                Phase::Hang => {
                    let _ = phase.changed().await;
                    // Dropped one by one, while new orders are answered.
                    tokio::time::sleep(drop_after).await;
                    Err(Box::new(UpstreamError::new("read", "connection closed")) as BoxError)
                }
            }
        }
    }))
}

/// Healthy for a while, then three incidents of up to 20 s, each followed
/// by 15 to 20 s of health: enough for the breaker to close (`open_for`,
/// 5 s, and a probe) and to release some 130 orders at 20 a second.
fn plan(rng: &mut fastrand::Rng) -> Vec<(Phase, Duration)> {
    let mut plan = vec![(Phase::Healthy, ms(rng.u64(500..5_000)))];
    for _ in 0..3 {
        let incident = [Phase::Hang, Phase::Down, Phase::Freeze][rng.usize(0..3)];
        plan.push((incident, ms(rng.u64(500..20_000))));
        plan.push((Phase::Healthy, ms(rng.u64(15_000..20_000))));
    }
    plan
}

#[tokio::test(start_paused = true)]
async fn random_incidents_lose_no_order() {
    for seed in 0..200 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let (phase, rx) = watch::channel(Phase::Healthy);
        // Slow releases leave old tries time to end before a release slot.
        let orders = OrdersConfig {
            release_per_second: [20, 100][rng.usize(0..2)],
            ..OrdersConfig::default()
        };
        let rig = rig_over(
            RetryConfig::default(),
            BreakerConfig::default(),
            orders,
            factory(rx, seed),
            Script::new(),
        );
        let plan = plan(&mut rng);
        let start = Instant::now();
        let mut orders = Vec::new();
        for &(now, lasts) in &plan {
            let before = phase.send_replace(now);
            if before != Phase::Healthy && rng.bool() {
                let lot = Arc::clone(rig.patience.lot());
                let later = ms(rng.u64(0..3_000));
                tokio::spawn(async move {
                    tokio::time::sleep(later).await;
                    lot.recovered(Instant::now(), crate::orders::Evidence::Confirmed);
                });
            }
            let end = Instant::now() + lasts;
            while Instant::now() < end {
                orders.push((Instant::now() - start, rig.spawn_order()));
                let gap = ms(rng.u64(10..400)).min(end - Instant::now());
                tokio::time::sleep(gap).await;
            }
        }
        for (arrived, pending) in orders {
            let answer = pending.await.expect("task");
            let status = answer.as_ref().map(|res| res.status().as_u16());
            assert!(
                matches!(status, Ok(200)),
                "seed {seed}: the order that arrived at {arrived:?} ended {answer:?} \
                 after {:?}; plan {plan:?}",
                Instant::now() - start - arrived,
            );
        }
        assert_eq!(rig.patience.lot().waiting(), 0, "seed {seed}");
    }
}
