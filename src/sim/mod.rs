//! The factory simulator (skeleton: lands with the foundation issue).

use std::process::ExitCode;

/// `factory-sidecar sim` options.
#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {}

/// Runs the simulator until SIGINT/SIGTERM.
pub async fn main(_args: SimArgs) -> ExitCode {
    eprintln!("sim: not implemented yet");
    ExitCode::from(2)
}
