//! The zero set-up demo (skeleton: lands with the foundation issue).

use std::process::ExitCode;

/// `factory-sidecar demo` options.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {}

/// Runs the demo to its end.
pub async fn main(_args: DemoArgs) -> ExitCode {
    eprintln!("demo: not implemented yet");
    ExitCode::from(2)
}
