//! `factory-sidecar`: one binary, four commands (see `--help`).
//!
//! Exit codes: 0 ok, 1 bad config or input, 2 runtime failure.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use factory_sidecar::config::{self, Config, ProcessEnv};

#[derive(Parser)]
#[command(
    name = "factory-sidecar",
    version = factory_sidecar::version::LONG,
    about = "A fast, chaos-aware reverse proxy between the JWT Pizza service and the pizza factory"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the sidecar.
    Run(ConfigArg),
    /// Validate the config and print the effective config, secrets masked.
    Check(ConfigArg),
    /// Run a factory simulator faithful to the real pizza factory.
    Sim(factory_sidecar::sim::SimArgs),
    /// Zero set-up demo: a simulated factory, the sidecar, orders and chaos.
    Demo(factory_sidecar::demo::DemoArgs),
    /// Exit 0 if the admin `/healthz` answers 200 (for container HEALTHCHECKs).
    Healthcheck(HealthcheckArgs),
}

#[derive(clap::Args)]
struct HealthcheckArgs {
    /// The admin health URL.
    #[arg(long, default_value = "http://127.0.0.1:9901/healthz")]
    url: String,
}

#[derive(clap::Args)]
struct ConfigArg {
    /// Config file [default: $SIDECAR_CONFIG, then config/sidecar.toml]
    #[arg(long, short = 'c', value_name = "PATH")]
    config: Option<PathBuf>,
}

impl ConfigArg {
    fn path(&self) -> PathBuf {
        self.config
            .clone()
            .or_else(|| std::env::var_os("SIDECAR_CONFIG").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(config::DEFAULT_PATH))
    }

    fn load(&self) -> Result<Config, ExitCode> {
        Config::load(&self.path(), &ProcessEnv).map_err(|errors| {
            eprintln!("{errors}");
            ExitCode::from(1)
        })
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One worker (`TOKIO_WORKER_THREADS=1`, like nginx's `worker_processes 1`):
    // a current-thread runtime, which skips the work-stealing machinery and
    // serves ~14% more requests per CPU than a one-worker multi-thread one.
    let one_worker = std::env::var("TOKIO_WORKER_THREADS").is_ok_and(|v| v.trim() == "1");
    let mut builder = if one_worker {
        let mut b = tokio::runtime::Builder::new_current_thread();
        // Polls rather than sleeps for `server.busy_poll` after each request
        // and answer (busy_poll.rs); off until the proxy's config sets it.
        b.on_thread_park(factory_sidecar::busy_poll::before_park);
        b
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Check(arg) => match arg.load() {
            Ok(config) => {
                print!("{}", config.to_masked_toml());
                eprintln!("{}: ok", arg.path().display());
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Run(arg) => match arg.load() {
            Ok(config) => runtime.block_on(run(config, arg.path())),
            Err(code) => code,
        },
        Command::Sim(args) => runtime.block_on(factory_sidecar::sim::main(args)),
        Command::Demo(args) => runtime.block_on(factory_sidecar::demo::main(args)),
        Command::Healthcheck(args) => runtime.block_on(healthcheck(&args.url)),
    }
}

async fn run(config: Config, path: PathBuf) -> ExitCode {
    // The level was checked with the config; a bad RUST_LOG is a bad input.
    if let Err(e) = factory_sidecar::telemetry::logging::init(&config.log) {
        eprintln!("factory-sidecar: {e}");
        return ExitCode::from(1);
    }
    // SIGHUP reloads the config and never ends the process (from before
    // the sidecar is ready); SIGTERM/SIGINT drain.
    let mut hangups = hangups();
    let sidecar = match factory_sidecar::app::Sidecar::start_from(config, Some(path)).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            eprintln!("factory-sidecar: {e}");
            return ExitCode::from(2);
        }
    };
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(()) = hangups.recv() => {
                sidecar.reload("SIGHUP").await;
            }
        }
    }
    tracing::info!("shutdown requested; draining");
    sidecar.shutdown();
    sidecar.stopped().await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// One message per SIGHUP. Listening starts before the sidecar serves, so a
/// SIGHUP sent once it is ready never falls back to the default action
/// (ending the process).
fn hangups() -> tokio::sync::mpsc::Receiver<()> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    #[cfg(unix)]
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut s) => {
            tokio::spawn(async move {
                while s.recv().await.is_some() {
                    // A reload already waiting covers this one too.
                    let _ = tx.try_send(());
                }
            });
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; reload with POST /config/reload")
        }
    }
    #[cfg(not(unix))]
    drop(tx);
    rx
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

async fn healthcheck(url: &str) -> ExitCode {
    use http_body_util::Empty;
    let Ok(uri) = url.parse::<http::Uri>() else {
        eprintln!("invalid URL {url:?}");
        return ExitCode::from(1);
    };
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<bytes::Bytes>>();
    let req = tokio::time::timeout(std::time::Duration::from_secs(3), client.get(uri));
    match req.await {
        Ok(Ok(res)) if res.status().is_success() => ExitCode::SUCCESS,
        Ok(Ok(res)) => {
            eprintln!("unhealthy: {}", res.status());
            ExitCode::from(2)
        }
        Ok(Err(e)) => {
            eprintln!("unhealthy: {e}");
            ExitCode::from(2)
        }
        Err(_) => {
            eprintln!("unhealthy: no answer within 3s");
            ExitCode::from(2)
        }
    }
}
