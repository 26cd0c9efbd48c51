//! What this binary is: version, git commit, build profile, features and
//! compiler, as `build.rs` found them. Shown by `--version`, `/status` and
//! the `factory_sidecar_build_info` metric, so an operator can tell which
//! build answers.

/// The crate version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git commit it was built from ("unknown" outside a git checkout).
pub const COMMIT: &str = env!("SIDECAR_GIT_COMMIT");
/// `release` or `debug`.
pub const PROFILE: &str = env!("SIDECAR_BUILD_PROFILE");
/// Enabled Cargo features, comma-separated ("none" when none).
pub const FEATURES: &str = env!("SIDECAR_BUILD_FEATURES");
/// The compiler's version.
pub const RUSTC: &str = env!("SIDECAR_BUILD_RUSTC");

/// The `--version` text: `0.1.0 (commit 1a2b3c4d5e6f, release build)`.
pub const LONG: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("SIDECAR_GIT_COMMIT"),
    ", ",
    env!("SIDECAR_BUILD_PROFILE"),
    " build)"
);
