//! No apiKey in the sidecar's logs, `/status`, `/metrics` or answers while
//! it goes through chaos episodes. Alone in its test binary: a scoped
//! tracing subscriber only sees every log line reliably when no other test
//! hits the same call sites on another thread at the same time.

mod support;

use std::sync::Arc;
use std::time::Duration;

use factory_sidecar::sim::{ChaosSpec, SimHandle};
use parking_lot::Mutex;

use support::client::TestClient;
use support::sidecar::{self, ADMIN_TOKEN};
use support::sim;

fn assert_no_key(sim: &SimHandle, what: &str, text: &str) {
    support::assert_no_key(sim.api_key(), what, text);
}

/// Collects every log line of the sidecar (current-thread runtime, so the
/// thread-local subscriber sees all of its tasks).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn logs_status_and_answers_never_hold_the_api_key() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let sim = sim::start().await;
    let sc = sidecar::start(sidecar::config(&sim.url(), |c| {
        c.chaos.resolve_cooldown = Duration::ZERO;
    }))
    .await;
    let client = TestClient::http1();
    for kind in [ChaosSpec::fail(), ChaosSpec::badjwt(), ChaosSpec::fail()] {
        sim.set_chaos(kind);
        let r = client.order(&sc.url, sim.api_key()).await;
        assert_no_key(&sim, "the answer", &r.text());
    }
    assert!(sim.stats().support_requests >= 2);
    let s = client
        .get_with_token(&format!("{}/status", sc.admin), ADMIN_TOKEN)
        .await;
    assert_eq!(s.status, 200);
    assert!(s.text().contains("/report/****"), "{}", s.text());
    assert_no_key(&sim, "/status", &s.text());
    let metrics = client.metrics(&sc.admin).await;
    assert_no_key(&sim, "/metrics", &metrics);
    let text = String::from_utf8_lossy(&logs.0.lock()).into_owned();
    assert!(
        text.contains("chaos detected"),
        "the episodes were logged: {text}"
    );
    assert_no_key(&sim, "the logs", &text);
}
