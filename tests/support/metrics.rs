//! `/metrics` (Prometheus text) as tests read it: the value of one series,
//! and the sample names it holds.

use std::collections::BTreeSet;
use std::time::Duration;

use super::client::TestClient;

/// The value of `series` (a name with its labels, as `/metrics` writes
/// them: `x_total{result="ok"}`) in exposition `text`.
pub fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

/// Waits until `/metrics` at `admin` shows `series` at `expected`.
pub async fn reaches(
    client: &TestClient,
    admin: &str,
    series: &str,
    expected: f64,
    limit: Duration,
) {
    super::eventually(series, limit, || {
        let (client, admin) = (client.clone(), admin.to_owned());
        async move {
            let text = client.metrics(&admin).await;
            (value(&text, series) == Some(expected)).then_some(())
        }
    })
    .await;
}

/// The sample names of a Prometheus text exposition (what PromQL selects:
/// `x_bucket`, `x_count`, `x_sum`, `y_total`, `z`).
pub fn sample_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}
