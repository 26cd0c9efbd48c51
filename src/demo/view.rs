//! What the demo prints: a line per second while it runs, and a summary
//! table per phase at the end. Pure formatting over results and `/status`.

use std::fmt::Write;
use std::time::Duration;

use super::driver::OrderResult;

/// The widest line the demo prints (a terminal's 100 columns).
pub const WIDTH: usize = 100;

/// Counts over a set of orders.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub orders: usize,
    pub ok: usize,
    pub failed: usize,
    pub saved_by_retry: usize,
    /// Answered after `waited` or more: the order waited for the factory.
    pub waited: usize,
    pub fast_503: usize,
    pub p50: Option<Duration>,
    pub p99: Option<Duration>,
    pub slowest: Option<Duration>,
}

impl Tally {
    pub fn of<'a>(results: impl IntoIterator<Item = &'a OrderResult>, waited: Duration) -> Tally {
        let mut t = Tally::default();
        let mut latencies = Vec::new();
        for r in results {
            t.orders += 1;
            if r.ok {
                t.ok += 1;
            } else {
                t.failed += 1;
            }
            t.saved_by_retry += usize::from(r.saved_by_retry());
            t.waited += usize::from(r.latency >= waited);
            t.fast_503 += usize::from(r.fast_circuit_open());
            latencies.push(r.latency);
        }
        latencies.sort_unstable();
        t.p50 = percentile(&latencies, 0.50);
        t.p99 = percentile(&latencies, 0.99);
        t.slowest = latencies.last().copied();
        t
    }
}

/// What the live line shows for the last second.
#[derive(Debug)]
pub struct Second<'a> {
    /// Orders sent in the last second.
    pub sent: usize,
    /// Orders under way now (sent, not answered).
    pub waiting: usize,
    /// The orders answered in the last second.
    pub last: &'a Tally,
}

fn percentile(sorted: &[Duration], q: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((sorted.len() as f64) * q).ceil() as usize;
    sorted
        .get(rank.saturating_sub(1).min(sorted.len() - 1))
        .copied()
}

/// A duration as a person reads it, `-` when there is none.
pub fn took(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".to_owned(), human)
}

/// `850µs`, `3.2ms`, `14ms`, `2.5s`, `1m05s`: the unit that keeps two or
/// three significant digits, so something real never reads `0.0ms`.
pub fn human(d: Duration) -> String {
    let us = d.as_micros();
    if us < 1_000 {
        format!("{us}µs")
    } else if us < 10_000 {
        format!("{:.1}ms", d.as_secs_f64() * 1e3)
    } else if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else if d < Duration::from_secs(60) {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
    }
}

/// `line` cut to [`WIDTH`] characters (the chaos column is the only one
/// that can grow).
pub fn fit(line: String) -> String {
    if line.chars().count() <= WIDTH {
        return line;
    }
    let mut cut: String = line.chars().take(WIDTH - 1).collect();
    cut.push('…');
    cut
}

/// The state the sidecar reports in `/status`, as far as the demo shows it.
#[derive(Debug, Default, Clone)]
pub struct SidecarView {
    pub circuit: String,
    pub chaos: String,
    /// Which episode `chaos` describes, and whether it is over: the live
    /// view prints `chaos` when this changes (not every second).
    pub chaos_key: String,
    /// Orders parked by the sidecar (waiting for the factory to come back).
    pub parked: Option<u64>,
}

impl SidecarView {
    /// Reads the parts of `/status` the live line shows; parts a build does
    /// not have yet show as `-`.
    pub fn from_status(status: &serde_json::Value) -> SidecarView {
        let circuit = status
            .pointer("/circuit/state")
            .and_then(|v| v.as_str())
            .unwrap_or("-")
            .to_owned();
        let newest = |key: &str| {
            status
                .pointer(&format!("/chaos/{key}"))
                .and_then(|v| v.as_array())
                .and_then(|eps| eps.first())
                .cloned()
        };
        let episode = newest("active").or_else(|| newest("recent"));
        let chaos = episode
            .as_ref()
            .map_or_else(|| "none seen".to_owned(), describe_episode);
        let chaos_key = episode.map_or_else(String::new, |ep| {
            let field = |k: &str| ep.get(k).map(ToString::to_string).unwrap_or_default();
            format!(
                "{} {} {}",
                field("type"),
                field("firstSeen"),
                field("resolvedAt")
            )
        });
        let parked = status.pointer("/orders/parked").and_then(|v| v.as_u64());
        SidecarView {
            circuit,
            chaos,
            chaos_key,
            parked,
        }
    }
}

/// One episode in a few words: `fail resolved (auto) in 14ms`.
pub fn describe_episode(ep: &serde_json::Value) -> String {
    let kind = ep.get("type").and_then(|v| v.as_str()).unwrap_or("?");
    let took = ep
        .get("durationSeconds")
        .and_then(|v| v.as_f64())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| human(Duration::from_secs_f64(s)))
        .unwrap_or_else(|| "?".to_owned());
    match ep.get("resolvedAt").filter(|v| !v.is_null()) {
        Some(_) => {
            let how = ep.get("how").and_then(|v| v.as_str()).unwrap_or("?");
            format!("{kind} resolved ({how}) in {took}")
        }
        None => format!("{kind} ACTIVE for {took}"),
    }
}

/// The line printed each second (the chaos is printed apart, on change).
pub fn live_line(
    elapsed: Duration,
    phase: &str,
    second: &Second<'_>,
    view: &SidecarView,
) -> String {
    let parked = view
        .parked
        .map_or_else(|| "-".to_owned(), |n| n.to_string());
    format!(
        "{:>4}s  {:<9} sent {:>3}  delivered {:>3}  failed {:>3}  waiting {:>4}  parked {:>4}  circuit {}",
        elapsed.as_secs(),
        phase,
        second.sent,
        second.last.ok,
        second.last.failed,
        second.waiting,
        parked,
        view.circuit,
    )
}

/// The closing table: one row per phase (orders by the phase they were
/// sent in), then the total.
pub fn summary(phases: &[&str], results: &[OrderResult], waited: Duration) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<11}{:>7}{:>7}{:>8}{:>16}{:>8}{:>9}{:>9}",
        "phase", "orders", "ok", "failed", "saved-by-retry", "waited", "p50", "slowest"
    );
    let mut row = |name: &str, t: &Tally| {
        let _ = writeln!(
            out,
            "{:<11}{:>7}{:>7}{:>8}{:>16}{:>8}{:>9}{:>9}",
            name,
            t.orders,
            t.ok,
            t.failed,
            t.saved_by_retry,
            t.waited,
            took(t.p50),
            took(t.slowest)
        );
    };
    for (i, name) in phases.iter().enumerate() {
        row(
            name,
            &Tally::of(results.iter().filter(|r| r.phase == i), waited),
        );
    }
    row("total", &Tally::of(results, waited));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(phase: usize, ok: bool, attempts: u32, ms: u64) -> OrderResult {
        OrderResult {
            phase,
            status: Some(if ok {
                http::StatusCode::OK
            } else {
                http::StatusCode::SERVICE_UNAVAILABLE
            }),
            ok,
            latency: Duration::from_millis(ms),
            attempts,
            sidecar_error: (!ok).then(|| "circuit-open".to_owned()),
        }
    }

    #[test]
    fn tallies_count_outcomes_and_percentiles() {
        let rs: Vec<_> = (1..=100)
            .map(|i| result(0, i % 10 != 0, if i % 5 == 0 { 2 } else { 1 }, i))
            .collect();
        let t = Tally::of(&rs, Duration::from_millis(90));
        assert_eq!((t.orders, t.ok, t.failed), (100, 90, 10));
        assert_eq!(t.waited, 11, "90 ms to 100 ms");
        assert_eq!(t.slowest, Some(Duration::from_millis(100)));
        assert_eq!(
            t.saved_by_retry, 10,
            "attempts 2 and ok: multiples of 5 but not of 10"
        );
        assert_eq!(t.fast_503, 10);
        assert_eq!(t.p50, Some(Duration::from_millis(50)));
        assert_eq!(t.p99, Some(Duration::from_millis(99)));
    }

    #[test]
    fn summary_has_a_row_per_phase_and_a_total() {
        let rs = vec![result(0, true, 1, 3), result(1, false, 1, 1)];
        let s = summary(&["healthy", "down"], &rs, Duration::from_secs(1));
        assert_eq!(s.lines().count(), 4);
        assert!(s.lines().nth(3).is_some_and(|l| l.starts_with("total")));
        assert!(s.lines().all(|l| l.len() <= WIDTH));
    }

    #[test]
    fn the_newest_episode_is_described() {
        let status = serde_json::json!({"chaos": {"active": [], "recent": [
            {"type": "fail", "resolvedAt": "t", "how": "auto", "durationSeconds": 0.012},
            {"type": "badjwt", "resolvedAt": "t", "how": "auto", "durationSeconds": 1.0}
        ]}});
        assert_eq!(
            SidecarView::from_status(&status).chaos,
            "fail resolved (auto) in 12ms"
        );
        let status = serde_json::json!({"chaos": {"active": [{"type": "throttle", "durationSeconds": 2.5}], "recent": []}});
        assert_eq!(
            SidecarView::from_status(&status).chaos,
            "throttle ACTIVE for 2.5s"
        );
    }

    #[test]
    fn the_live_line_fits_the_terminal_at_its_widest() {
        let wide = Tally {
            ok: 999,
            failed: 999,
            ..Tally::default()
        };
        let second = Second {
            sent: 999,
            waiting: 9999,
            last: &wide,
        };
        let view = SidecarView {
            circuit: "half_open".to_owned(),
            parked: Some(9999),
            ..SidecarView::default()
        };
        let line = live_line(Duration::from_secs(9999), "recovered", &second, &view);
        assert!(line.len() <= WIDTH, "{} columns: {line}", line.len());
        let status = serde_json::json!({"orders": {"parked": 3}, "circuit": {"state": "open"}});
        assert_eq!(SidecarView::from_status(&status).parked, Some(3));
    }

    #[test]
    fn status_parts_missing_show_as_dashes() {
        let v = SidecarView::from_status(&serde_json::json!({"version": "x"}));
        assert_eq!(v.circuit, "-");
        assert_eq!(v.chaos, "none seen");
    }
}
