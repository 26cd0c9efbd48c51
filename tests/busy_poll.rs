//! Busy polling in the real binary with one worker (`TOKIO_WORKER_THREADS=1`,
//! as the benchmarks and the container image run it): after an order the
//! runtime polls for `server.busy_poll` and counts that time in
//! `sidecar_busy_poll_idle_seconds_total`; `busy_poll = "0s"` never polls.
//! Whether polling is faster is for benches/load.sh, not a test.

mod support;

use std::time::Duration;

use support::binary::Binary;
use support::client::TestClient;

const ONE_WORKER: &[(&str, &str)] = &[("TOKIO_WORKER_THREADS", "1")];

fn config(upstream: &str, busy_poll: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nbusy_poll = \"{busy_poll}\"\n\
         [upstream]\nurl = \"{upstream}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n"
    )
}

/// `sidecar_busy_poll_idle_seconds_total` from the admin `/metrics`.
async fn idle_seconds(client: &TestClient, bin: &Binary) -> f64 {
    let text = client.metrics(&bin.admin).await;
    support::metrics::value(&text, "sidecar_busy_poll_idle_seconds_total")
        .unwrap_or_else(|| panic!("no busy-poll series in /metrics:\n{text}"))
}

#[tokio::test]
async fn one_worker_polls_after_orders_and_counts_it() {
    let factory = support::sim::start().await;
    let bin = Binary::start_with_env(&config(&factory.url(), "10ms"), ONE_WORKER).await;
    let client = TestClient::http1();
    assert_eq!(client.order(&bin.url, factory.api_key()).await.status, 200);
    // Each order and each scrape opens a window of 10 ms, mostly idle.
    let polled = support::wait_for(Duration::from_secs(30), || async {
        let orders = client.order(&bin.url, factory.api_key()).await;
        assert_eq!(orders.status, 200);
        (idle_seconds(&client, &bin).await > 0.0).then_some(())
    })
    .await;
    assert!(polled.is_some(), "no idle polling counted after orders");
    bin.stop().await;
}

#[tokio::test]
async fn busy_poll_off_never_polls() {
    let factory = support::sim::start().await;
    let bin = Binary::start_with_env(&config(&factory.url(), "0s"), ONE_WORKER).await;
    let client = TestClient::http1();
    for _ in 0..20 {
        assert_eq!(client.order(&bin.url, factory.api_key()).await.status, 200);
    }
    assert_eq!(idle_seconds(&client, &bin).await, 0.0);
    bin.stop().await;
}
