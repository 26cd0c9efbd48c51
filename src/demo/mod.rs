//! `factory-sidecar demo`: zero set-up. Starts a simulated factory and the
//! sidecar on free loopback ports, orders pizzas through the sidecar at a
//! steady rate as the pizza service would, puts the factory through every
//! chaos type in turn, prints a line per second, and ends with a table.
//!
//! - [`driver`]: the orders and what each came to.
//! - [`view`]: the live line and the summary table.

pub mod driver;
pub mod view;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::app::Sidecar;
use crate::config::{Config, Secret, UpstreamUrl};
use crate::sim::{self, ChaosSpec, SimOptions};

/// `factory-sidecar demo` options.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// How long the whole run takes (the phases share it).
    #[arg(long, default_value = "42s", value_parser = crate::config::duration::parse)]
    pub duration: Duration,
    /// Orders per second.
    #[arg(long, default_value_t = 10)]
    pub rate: u32,
    /// Also export the sidecar's metrics to this OTLP collector (e.g. http://127.0.0.1:4318).
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
}

/// One stretch of the run: a name, what the factory does, its share of the time.
struct Phase {
    name: &'static str,
    chaos: ChaosSpec,
    weight: u32,
    what: &'static str,
}

fn phases() -> Vec<Phase> {
    vec![
        Phase {
            name: "healthy",
            chaos: ChaosSpec::none(),
            weight: 5,
            what: "the factory works",
        },
        Phase {
            name: "blip",
            chaos: ChaosSpec::fail().count(2),
            weight: 4,
            what: "two orders fail, then the factory recovers by itself",
        },
        Phase {
            name: "fail",
            chaos: ChaosSpec::fail(),
            weight: 6,
            what: "chaos `fail`: every order gets a 500 with a report link",
        },
        Phase {
            name: "badjwt",
            chaos: ChaosSpec::badjwt(),
            weight: 6,
            what: "chaos `badjwt`: 200s with pizza JWTs that do not verify",
        },
        Phase {
            name: "throttle",
            chaos: ChaosSpec::throttle().delay(THROTTLE),
            weight: 8,
            what: "chaos `throttle`: orders take 4 s (32 s in production); they wait, none is cut",
        },
        Phase {
            name: "down",
            chaos: ChaosSpec::down(),
            weight: 6,
            what: "the factory is down (no answers, no link): orders park, none fails",
        },
        Phase {
            name: "recovered",
            chaos: ChaosSpec::none(),
            weight: 7,
            what: "the factory is back: a probe finds it and the parked orders are delivered",
        },
    ]
}

/// The throttle phase's delay (the real factory's is 32 s).
const THROTTLE: Duration = Duration::from_secs(4);

const DEMO_TOKEN: &str = "demo-admin-token";

/// An order answered after this long waited (the demo's attempt timeout).
const WAITED: Duration = Duration::from_secs(1);

fn sidecar_config(upstream: &str, otlp: Option<&str>) -> Result<Config, String> {
    let url = UpstreamUrl::parse(upstream)?;
    let mut c = Config::for_upstream(url);
    let any_port = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    c.server.listen = any_port;
    c.admin.listen = any_port;
    c.admin.token = Secret::new(DEMO_TOKEN);
    // Demo-sized timings: production defaults are in config/sidecar.toml.
    // Orders keep their patience (60 s): a slow or absent factory makes them
    // wait, not fail.
    c.upstream.attempt_timeout = Duration::from_secs(1);
    c.upstream.request_timeout = Duration::from_secs(8);
    c.retry.initial_backoff = Duration::from_millis(50);
    c.retry.max_backoff = Duration::from_millis(400);
    c.circuit_breaker.window = Duration::from_secs(5);
    c.circuit_breaker.minimum_calls = 5;
    c.circuit_breaker.open_for = Duration::from_secs(2);
    c.chaos.slow_threshold = Duration::from_secs(1);
    c.chaos.resolve_cooldown = Duration::from_secs(2);
    if let Some(endpoint) = otlp {
        c.telemetry.otlp_endpoint = endpoint.to_owned();
        c.telemetry.export_interval = Duration::from_secs(2);
    }
    Ok(c)
}

/// Runs the demo to its end; exit 0 unless something could not start.
pub async fn main(args: DemoArgs) -> ExitCode {
    let sim = match sim::spawn(SimOptions::default()).await {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("demo: cannot start the simulated factory: {e}");
            return ExitCode::from(2);
        }
    };
    let config = match sidecar_config(&sim.url(), args.otlp_endpoint.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("demo: {e}");
            return ExitCode::from(1);
        }
    };
    let sidecar = match Sidecar::start(config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("demo: cannot start the sidecar: {e}");
            return ExitCode::from(2);
        }
    };
    let proxy = format!("http://{}", sidecar.proxy_addr());
    let admin = format!("http://{}", sidecar.admin_addr());
    println!("factory-sidecar demo");
    println!("  simulated factory  {}", sim.url());
    println!("  sidecar            {proxy}   (the pizza service's factory.url)");
    println!("  admin              {admin}");
    println!("                     (/status with `Authorization: Bearer {DEMO_TOKEN}`)");
    println!(
        "  metrics            {admin}/metrics{}",
        match &args.otlp_endpoint {
            Some(e) => format!(" and OTLP to {e}"),
            None => " (--otlp-endpoint URL: OTLP too)".to_owned(),
        }
    );
    println!(
        "  orders             {} per second, each checked against the factory's JWKS",
        args.rate
    );
    println!(
        "  each second        orders sent, delivered (a pizza that verifies), failed, waiting"
    );
    println!("                     (sent, not answered yet), parked (waiting for the factory)");
    println!();

    let phases = phases();
    let total_weight: u32 = phases.iter().map(|p| p.weight).sum();
    let gate = Arc::new(driver::PhaseGate::default());
    let results = Arc::new(driver::Results::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let driving = tokio::spawn(driver::drive(
        proxy.clone(),
        sim.clone(),
        args.rate,
        gate.clone(),
        results.clone(),
        stop_rx,
    ));

    let started = Instant::now();
    let status = StatusReader::new(&admin);
    let mut seen = 0usize;
    let mut chaos_shown = "-".to_owned();
    for (i, phase) in phases.iter().enumerate() {
        // Orders count in the phase they were sent in, even when they are
        // answered in a later one (a parked order is delivered after the
        // factory is back).
        sim.set_chaos(phase.chaos.clone());
        gate.enter(i);
        println!("--- {}: {}", phase.name, phase.what);
        let length = args.duration * phase.weight / total_weight.max(1);
        let phase_end = Instant::now() + length;
        let mut tick = tokio::time::interval_at(
            Instant::now() + Duration::from_secs(1),
            Duration::from_secs(1),
        );
        while Instant::now() < phase_end {
            tick.tick().await;
            let all = results.snapshot();
            let last = view::Tally::of(all.get(seen..).unwrap_or_default(), WAITED);
            seen = all.len();
            let sidecar_view = status.read().await;
            let line = view::Second {
                sent: gate.take_sent(),
                waiting: gate.in_flight(),
                last: &last,
            };
            println!(
                "{}",
                view::live_line(started.elapsed(), phase.name, &line, &sidecar_view)
            );
            if sidecar_view.chaos_key != chaos_shown {
                println!("{:>16}chaos: {}", "", sidecar_view.chaos);
                chaos_shown = sidecar_view.chaos_key;
            }
        }
    }
    let _ = stop_tx.send(true);
    let waiting = gate.in_flight();
    if waiting > 0 {
        println!("--- end: no more orders; waiting for the {waiting} still under way");
    }
    let _ = driving.await;

    let all = results.snapshot();
    let names: Vec<&str> = phases.iter().map(|p| p.name).collect();
    println!();
    println!(
        "summary (ok = 200 with a pizza JWT that verifies; waited = answered after {}s or more)",
        WAITED.as_secs()
    );
    print!("{}", view::summary(&names, &all, WAITED));
    let final_status = status.raw().await;
    let episodes: Vec<&serde_json::Value> = ["/chaos/active", "/chaos/recent"]
        .iter()
        .filter_map(|p| final_status.pointer(p).and_then(|v| v.as_array()))
        .flatten()
        .collect();
    if !episodes.is_empty() {
        println!();
        println!("chaos episodes, newest first (detected at, type, outcome)");
        for ep in episodes {
            let first_seen = ep.get("firstSeen").and_then(|v| v.as_str()).unwrap_or("?");
            println!(
                "{}",
                view::fit(format!("  {first_seen}  {}", view::describe_episode(ep)))
            );
        }
    }
    let stats = sim.stats();
    println!();
    println!(
        "the factory saw {} orders and {} report-link follows ({} resolved chaos)",
        stats.orders, stats.support_requests, stats.resolves
    );
    sidecar.shutdown();
    sidecar.stopped().await;
    ExitCode::SUCCESS
}

/// Reads `/status` from the admin listener.
struct StatusReader {
    client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Empty<bytes::Bytes>,
    >,
    url: String,
}

impl StatusReader {
    fn new(admin: &str) -> Self {
        Self {
            client: hyper_util::client::legacy::Client::builder(
                hyper_util::rt::TokioExecutor::new(),
            )
            .build_http(),
            url: format!("{admin}/status"),
        }
    }

    async fn raw(&self) -> serde_json::Value {
        use http_body_util::BodyExt;
        let Ok(req) = http::Request::get(&self.url)
            .header(http::header::AUTHORIZATION, format!("Bearer {DEMO_TOKEN}"))
            .body(http_body_util::Empty::new())
        else {
            return serde_json::Value::Null;
        };
        let fetch = async {
            let res = self.client.request(req).await.ok()?;
            let body = res.into_body().collect().await.ok()?.to_bytes();
            serde_json::from_slice(&body).ok()
        };
        tokio::time::timeout(Duration::from_secs(2), fetch)
            .await
            .ok()
            .flatten()
            .unwrap_or(serde_json::Value::Null)
    }

    async fn read(&self) -> view::SidecarView {
        view::SidecarView::from_status(&self.raw().await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_headers_fit_the_terminal() {
        for p in phases() {
            let line = format!("--- {}: {}", p.name, p.what);
            assert!(line.len() <= view::WIDTH, "{} columns: {line}", line.len());
            assert!(p.name.len() <= 9, "the live line's phase column");
        }
    }
}
