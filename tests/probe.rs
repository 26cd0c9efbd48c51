//! The synthetic probe: with no diner ordering at all, its test orders go
//! through the same stack, so a chaos episode is detected and resolved, and
//! `sidecar.probe.*` and `/status` report what it saw.

mod support;

use std::time::Duration;

use factory_sidecar::config::Secret;
use factory_sidecar::sim::ChaosSpec;
use support::client::TestClient;
use support::sidecar::{self, ADMIN_TOKEN};
use support::{eventually, sim};

const LIMIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn the_probe_finds_and_ends_chaos_while_nobody_orders() {
    let factory = sim::start().await;
    let sc = sidecar::start(sidecar::config(&factory.url(), |c| {
        c.probe.enabled = true;
        c.probe.interval = Duration::from_millis(100);
        c.probe.api_key = Secret::new(factory.api_key());
    }))
    .await;
    let client = TestClient::http1();

    eventually("probe orders to succeed", LIMIT, || {
        let factory = &factory;
        async move { (factory.stats().orders_ok >= 2).then_some(()) }
    })
    .await;

    factory.set_chaos(ChaosSpec::fail());
    eventually("the probe's episode to be resolved", LIMIT, || {
        let (client, admin) = (client.clone(), sc.admin.clone());
        async move {
            let s = client.status(&admin, ADMIN_TOKEN).await;
            let recent = s["chaos"]["recent"].as_array().cloned().unwrap_or_default();
            recent
                .iter()
                .any(|e| e["type"] == "fail" && e["how"] == "auto")
                .then_some(())
        }
    })
    .await;
    assert_eq!(factory.stats().support_requests, 1, "one resolve GET");

    let status = client.status(&sc.admin, ADMIN_TOKEN).await;
    assert!(status["probe"]["ok"].as_u64().expect("ok count") >= 2);
    assert!(
        !status.to_string().contains(factory.api_key()),
        "no apiKey in /status"
    );

    let metrics = client.metrics(&sc.admin).await;
    assert!(
        metrics.contains("sidecar_probe_requests_total{result=\"ok\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sidecar_probe_duration_seconds_count"),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_probe_is_off_by_default() {
    let factory = sim::start().await;
    let sc = sidecar::start(sidecar::config(&factory.url(), |_| {})).await;
    let status = TestClient::http1().status(&sc.admin, ADMIN_TOKEN).await;
    assert!(status.get("probe").is_none());
    assert_eq!(
        factory.stats().orders,
        0,
        "no order was placed by the sidecar itself"
    );
}
