//! A pizza factory simulator faithful to the real JWT Pizza Factory
//! (docs/factory.md), for the sidecar's tests, its demo and its load runs:
//! `factory-sidecar sim`, or in process with [`spawn`].
//!
//! # Layout
//! ```text
//! server.rs   accept (HTTP/1.1 + h2c), `down` and `hang`, dispatch; SimOptions, SimHandle
//! control.rs  /sim/chaos, /sim/stats: switch chaos, read counters
//! factory.rs  the factory API, answer for answer (order, verify, jwks, support, docs, 404)
//! chaos.rs    the chaos record: type, fix code, blips, resolve (pure state machine)
//! jwt.rs      RS256 signing, JWKS, verify, and the per-body signature cache
//! state.rs    what all connections share; the stats counters
//! ```
//!
//! # Fidelity
//! Same endpoints, statuses, messages and JSON shapes as the real factory,
//! including its quirks: successful orders carry `reportUrl` only under
//! throttle; `iat`/`exp` sit in the JWT *header* (the payload has no `exp`);
//! malformed JSON gets 500; a report link with an unknown apiKey answers
//! "No chaos currently executing". Report links are
//! `https://<Host header without port>/api/support/<apiKey>/report/<fixCode>`
//! unless `--public-url` gives another base. Added for tests: blips
//! (`count`), `Retry-After` on `fail`, per-episode throttle delay, `down`
//! (every other request's connection closed without an answer, the others a
//! load balancer's 502, no report link) and `hang` (every request read and
//! held unanswered while it lasts, its connection closed when it ends).
//!
//! # Speed
//! An order without chaos costs a body read, a constant-time key check and a
//! cache lookup: signatures are cached per distinct body for the current
//! second (see [`jwt`](self::jwt) for why that is exact, not an
//! approximation).
//!
//! # Fresh tokens
//! So a load run answers every order of one body with one token, which a
//! verifier that remembers recent tokens checks for free. `--token-pool N`
//! ([`SimOptions::token_pool`]) answers them with N distinct tokens in turn,
//! signed once per body: every order then costs a verifier one RSA check, as
//! with the real factory, and the simulator still signs nothing per order.
//! The first orders of a body wait for that one signing (N RSA signatures,
//! about 75 ms for 256), however many come at once.

mod chaos;
mod control;
mod factory;
mod jwt;
mod server;
mod state;

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

pub use chaos::{ChaosKind, ChaosSpec, ChaosStatus, InvalidChaosSpec, UnknownChaosKind, mask};
pub use jwt::{ISSUER, KeyError, LIFETIME_SECS};
pub use server::{SimError, SimHandle, SimOptions, spawn, spawn_on};
pub use state::SimStats;

/// The apiKey the simulator accepts unless told otherwise: 32 hex digits
/// like a real vendor key. A published test value, never a secret.
pub const DEFAULT_API_KEY: &str = "feedfacecafebeef0123456789abcdef";

/// The real factory's throttle and oven-full delay.
pub const DEFAULT_DELAY: Duration = Duration::from_secs(32);

/// Where `factory-sidecar sim` listens by default.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:3001";

/// A realistic order body, as the pizza service sends it (tests, demo and
/// load runs can share it). Send it with `content-type: application/json`:
/// like the real factory, the simulator ignores bodies of other types.
pub const SAMPLE_ORDER: &str = r#"{"diner":{"id":719,"name":"j","email":"j@jwt.com"},"order":{"items":[{"menuId":1,"description":"Veggie","price":0.0038}],"storeId":"5","franchiseId":4,"id":278}}"#;

/// `factory-sidecar sim` options.
#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// Address to listen on (port 0: any free port; the bound address is
    /// printed on stdout as `sim listening on http://ADDR`)
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// Chaos from the start
    #[arg(long, value_enum, default_value_t = ChaosKind::None)]
    pub chaos: ChaosKind,

    /// How long throttled orders wait
    #[arg(long, value_name = "DUR", default_value = "32s", value_parser = humantime::parse_duration)]
    pub throttle_delay: Duration,

    /// How long orders with no or over 20 items wait before "the oven is full"
    #[arg(long, value_name = "DUR", default_value = "32s", value_parser = humantime::parse_duration)]
    pub oven_delay: Duration,

    /// The vendor apiKey orders must carry [default: the published test key
    /// feedfacecafebeef0123456789abcdef]
    #[arg(long, value_name = "KEY", env = "SIM_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Base of report links (e.g. http://127.0.0.1:9000) instead of
    /// https://<Host header host>, as the real factory writes them
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,

    /// On SIGINT/SIGTERM, how long in-flight requests may finish
    #[arg(long, value_name = "DUR", default_value = "5s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,

    /// Answer the orders of each distinct body with N distinct pizza JWTs in
    /// turn, signed once when the body is first seen (at most 4096), so every
    /// order costs a verifier one RSA check, as the real factory's fresh
    /// tokens do; 0: one token per body and second (load runs then send one
    /// token again and again)
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub token_pool: usize,
}

impl SimArgs {
    fn options(&self) -> SimOptions {
        SimOptions {
            listen: self.listen,
            api_key: self
                .api_key
                .clone()
                .unwrap_or_else(|| DEFAULT_API_KEY.to_owned()),
            chaos: ChaosSpec::new(self.chaos),
            throttle_delay: self.throttle_delay,
            oven_delay: self.oven_delay,
            public_url: self.public_url.clone(),
            shutdown_grace: self.shutdown_grace,
            token_pool: self.token_pool,
        }
    }
}

/// Runs the simulator until SIGINT/SIGTERM. Exit codes: 0 after a clean
/// stop, 1 bad options, 2 cannot listen or start.
pub async fn main(args: SimArgs) -> ExitCode {
    init_logging();
    let handle = match spawn(args.options()).await {
        Ok(handle) => handle,
        Err(e @ SimError::InvalidOption(_)) => {
            eprintln!("sim: {e}");
            return ExitCode::from(1);
        }
        Err(e) => {
            eprintln!("sim: {e}");
            return ExitCode::from(2);
        }
    };
    // The one line scripts parse; flushed so a pipe reader sees it now.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "sim listening on {}", handle.url());
    let _ = out.flush();
    drop(out);
    tracing::info!("sim: {}", server::describe(&handle));

    match wait_for_signal().await {
        Ok(signal) => tracing::info!("sim: {signal}, shutting down"),
        Err(e) => {
            eprintln!("sim: cannot wait for signals: {e}");
            handle.shutdown().await;
            return ExitCode::from(2);
        }
    }
    handle.shutdown().await;
    ExitCode::SUCCESS
}

fn init_logging() {
    use std::io::IsTerminal as _;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Another subscriber may already be installed (the demo): keep it.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

async fn wait_for_signal() -> std::io::Result<&'static str> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.map(|()| "SIGINT"),
            _ = term.recv() => Ok("SIGTERM"),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.map(|()| "Ctrl-C")
    }
}
