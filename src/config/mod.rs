//! Configuration: one TOML file, parsed once into validated, typed structs.
//!
//! - [`schema`]: the sections and keys, with their defaults (what an operator
//!   writes);
//! - [`values`]: value types that validate themselves while the file is read
//!   (`UpstreamUrl`, `Percent`, durations, ...);
//! - [`load`]: reading the file, environment overrides, and the checks that
//!   relate two keys;
//! - `explain`: parser messages rewritten to name the key, the closest known
//!   key for a misspelt one, and the allowed values.
//!
//! Why field types validate themselves: an error raised while deserializing
//! carries the value's span, so an operator gets `file:line:col: message` for
//! free. Checks that relate two keys (say `initial_backoff <= max_backoff`) run
//! after parsing and look the key's span up in the document again, so they
//! point at a line too.
//!
//! Precedence: defaults < file < environment (`SIDECAR_*`, standard `OTEL_*`).
//! Unknown keys are errors everywhere (`deny_unknown_fields`).

mod explain;
pub mod load;
pub mod schema;
pub mod values;

pub use load::{ConfigError, ConfigErrors, Env, ProcessEnv};
pub use schema::*;
pub use values::{LOG_LEVELS, Percent, Secret, UpstreamUrl, check_log_level, duration};
