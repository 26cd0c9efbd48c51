//! The sections and keys of the config file, with their defaults.
//!
//! One struct per `[section]`; every field is a key. Value types that check
//! themselves live in [`super::values`]; checks across keys in
//! [`super::load`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::values::{
    Percent, Secret, UpstreamUrl, attempts, duration, log_level, optional_path, paths,
};

/// Where the config is read from when `--config` is not given.
pub const DEFAULT_PATH: &str = "config/sidecar.toml";

/// The whole, validated configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    pub upstream: UpstreamConfig,
    #[serde(default)]
    pub retry: RetryConfig,
    #[serde(default)]
    pub orders: OrdersConfig,
    #[serde(default)]
    pub circuit_breaker: BreakerConfig,
    #[serde(default)]
    pub chaos: ChaosConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    #[serde(default)]
    pub grafana: GrafanaConfig,
    #[serde(default)]
    pub probe: ProbeConfig,
    #[serde(default)]
    pub queue: QueueConfig,
    #[serde(default)]
    pub log: LogConfig,
}

/// `[server]`: the listener the pizza service talks to.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Larger request bodies get 413 and nothing is forwarded.
    pub max_body_bytes: usize,
    /// Request head size limit (request line plus headers); larger gets 431.
    pub max_header_bytes: usize,
    /// A client must send a whole request head within this (slowloris
    /// guard); also the keep-alive idle timeout and the longest pause
    /// inside a request body.
    #[serde(with = "duration")]
    pub header_read_timeout: Duration,
    /// Open client connections at most; further accepts wait until one closes.
    pub max_connections: usize,
    /// On SIGTERM/SIGINT: stop accepting, let in-flight requests finish this long.
    #[serde(with = "duration")]
    pub shutdown_grace: Duration,
    /// With one worker: after a request or an answer, keep polling for
    /// events this long before sleeping (`crate::busy_poll`); `0s` off.
    #[serde(with = "duration")]
    pub busy_poll: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            max_body_bytes: 1024 * 1024,
            max_header_bytes: 64 * 1024,
            header_read_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            shutdown_grace: Duration::from_secs(10),
            busy_poll: Duration::from_micros(50),
        }
    }
}

/// `[upstream]`: the pizza factory.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Required (in the file or `SIDECAR_UPSTREAM_URL`); `None` only before validation.
    #[serde(default)]
    pub(super) url: Option<UpstreamUrl>,
    #[serde(with = "duration", default = "UpstreamConfig::default_connect_timeout")]
    pub connect_timeout: Duration,
    /// One try.
    #[serde(with = "duration", default = "UpstreamConfig::default_attempt_timeout")]
    pub attempt_timeout: Duration,
    /// All tries together, backoff included.
    #[serde(with = "duration", default = "UpstreamConfig::default_request_timeout")]
    pub request_timeout: Duration,
    /// Longest pause between two reads of a factory answer's body.
    #[serde(
        with = "duration",
        default = "UpstreamConfig::default_body_read_timeout"
    )]
    pub body_read_timeout: Duration,
    /// Extra PEM roots, added to the webpki roots.
    #[serde(default, with = "optional_path")]
    pub ca_file: Option<PathBuf>,
    /// Idle pooled connections kept per upstream host.
    #[serde(default = "UpstreamConfig::default_pool_max_idle")]
    pub pool_max_idle_per_host: usize,
    /// Idle pooled connections are closed after this.
    #[serde(
        with = "duration",
        default = "UpstreamConfig::default_pool_idle_timeout"
    )]
    pub pool_idle_timeout: Duration,
}

impl UpstreamConfig {
    fn default_connect_timeout() -> Duration {
        Duration::from_secs(2)
    }
    fn default_attempt_timeout() -> Duration {
        Duration::from_secs(5)
    }
    fn default_request_timeout() -> Duration {
        Duration::from_secs(20)
    }
    fn default_body_read_timeout() -> Duration {
        Duration::from_secs(10)
    }
    fn default_pool_max_idle() -> usize {
        64
    }
    fn default_pool_idle_timeout() -> Duration {
        Duration::from_secs(90)
    }

    /// A config for `url` with every other key at its default.
    pub fn new(url: UpstreamUrl) -> Self {
        Self {
            url: Some(url),
            connect_timeout: Self::default_connect_timeout(),
            attempt_timeout: Self::default_attempt_timeout(),
            request_timeout: Self::default_request_timeout(),
            body_read_timeout: Self::default_body_read_timeout(),
            ca_file: None,
            pool_max_idle_per_host: Self::default_pool_max_idle(),
            pool_idle_timeout: Self::default_pool_idle_timeout(),
        }
    }

    /// The factory's base URL. Validation guarantees it is set.
    pub fn url(&self) -> &UpstreamUrl {
        self.url.as_ref().unwrap_or(&PLACEHOLDER_URL)
    }
}

/// Only reachable if a `Config` was built without `validate`; never contacted
/// (port 9 is discard and 0.0.0.0 is not routable as a destination here).
static PLACEHOLDER_URL: std::sync::LazyLock<UpstreamUrl> = std::sync::LazyLock::new(|| {
    UpstreamUrl::parse("http://127.0.0.1:9")
        .unwrap_or_else(|_| unreachable!("literal URL is valid"))
});

/// What a try can fail with that makes it worth another try.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
pub enum RetryOn {
    #[serde(rename = "connect")]
    Connect,
    #[serde(rename = "timeout")]
    Timeout,
    #[serde(rename = "5xx")]
    Status5xx,
    #[serde(rename = "badjwt")]
    BadJwt,
}

/// `[retry]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Tries in all; 1 = no retry.
    #[serde(deserialize_with = "attempts")]
    pub max_attempts: u32,
    #[serde(with = "duration")]
    pub initial_backoff: Duration,
    #[serde(with = "duration")]
    pub max_backoff: Duration,
    /// Retries may add at most this share of recent traffic.
    pub budget_percent: Percent,
    /// Retries always allowed per second, whatever the traffic (so a quiet
    /// service still gets its blip retried).
    pub budget_min_per_second: u32,
    /// How far back "recent traffic" reaches for the budget.
    #[serde(with = "duration")]
    pub budget_window: Duration,
    /// POST (and other non-idempotent) paths that are safe to retry. Not
    /// set in the file: `orders.paths` (an order may be sent twice: the
    /// factory keeps no order state).
    #[serde(deserialize_with = "paths")]
    pub retry_non_idempotent: Vec<String>,
    pub on: Vec<RetryOn>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            budget_percent: Percent(20),
            budget_min_per_second: 1,
            budget_window: Duration::from_secs(10),
            retry_non_idempotent: vec!["/api/order".to_owned()],
            on: vec![
                RetryOn::Connect,
                RetryOn::Timeout,
                RetryOn::Status5xx,
                RetryOn::BadJwt,
            ],
        }
    }
}

/// `[orders]`: which requests are pizza orders, and how long one may wait.
///
/// The pizza service waits for the factory as long as it takes (Node's
/// limit is 300 s), so a slow or absent factory should cost an order time,
/// not the order: see [`crate::orders`].
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OrdersConfig {
    /// The order routes (`POST`); also the default of `retry.retry_non_idempotent`.
    #[serde(deserialize_with = "paths")]
    pub paths: Vec<String>,
    /// One order's whole deadline: slow tries are waited for (and hedged),
    /// refused or failed orders park. `0s`: orders fail fast like other
    /// routes; else between 45 s and 280 s (the service gives up at 300 s).
    #[serde(with = "duration")]
    pub patience: Duration,
    /// Orders parked at most; one more is answered 503 at once.
    pub max_waiting: usize,
    /// When the factory answers again, waiting orders get a fresh try each,
    /// oldest first, at most this many per second.
    pub release_per_second: u32,
}

impl OrdersConfig {
    /// The shortest patience allowed (besides `0s`): the factory's 32 s
    /// throttle plus a resolve and a retry.
    pub const MIN_PATIENCE: Duration = Duration::from_secs(45);
    /// The longest: the pizza service's own limit (300 s) must never fire first.
    pub const MAX_PATIENCE: Duration = Duration::from_secs(280);
}

impl Default for OrdersConfig {
    fn default() -> Self {
        Self {
            paths: vec!["/api/order".to_owned()],
            patience: Duration::from_secs(60),
            max_waiting: 1000,
            release_per_second: 100,
        }
    }
}

/// `[circuit_breaker]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Off: every try goes to the factory whatever its state (for comparison runs).
    pub enabled: bool,
    /// Open when the failure rate in the window reaches this.
    pub failure_rate_percent: Percent,
    /// ... over at least this many calls.
    pub minimum_calls: u32,
    /// Whole seconds (the rate is kept per second).
    #[serde(with = "duration")]
    pub window: Duration,
    /// Or after this many failures in a row.
    pub consecutive_failures: u32,
    #[serde(with = "duration")]
    pub open_for: Duration,
    /// Calls let through at once while half-open.
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            failure_rate_percent: Percent(50),
            minimum_calls: 10,
            window: Duration::from_secs(10),
            consecutive_failures: 5,
            open_for: Duration::from_secs(5),
            half_open_probes: 1,
        }
    }
}

/// `[chaos]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChaosConfig {
    /// Find report links in factory answers.
    pub detect: bool,
    /// Follow the link (path only, to the upstream host only).
    pub auto_resolve: bool,
    /// At most one follow per episode per cooldown.
    #[serde(with = "duration")]
    pub resolve_cooldown: Duration,
    /// Mask apiKey and fix code in links passed back to the service.
    pub redact_in_responses: bool,
    /// Check order JWTs against the factory's JWKS.
    pub verify_jwt: bool,
    /// A successful order slower than this, with a link, is throttle chaos.
    #[serde(with = "duration")]
    pub slow_threshold: Duration,
    /// Factory JSON answers larger than this are passed on uninspected.
    pub inspect_max_bytes: usize,
    /// An order try cut by `attempt_timeout` (or dropped: another try of a
    /// patient order answered first) may finish in the background this
    /// long, only to learn its report link.
    #[serde(with = "duration")]
    pub background_timeout: Duration,
}

impl Default for ChaosConfig {
    fn default() -> Self {
        Self {
            detect: true,
            auto_resolve: true,
            resolve_cooldown: Duration::from_secs(10),
            redact_in_responses: true,
            verify_jwt: true,
            slow_threshold: Duration::from_secs(5),
            inspect_max_bytes: 64 * 1024,
            background_timeout: Duration::from_secs(40),
        }
    }
}

/// `[admin]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// Bearer token for `/status` and writes; empty = those are refused.
    pub token: Secret,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9901)),
            token: Secret::default(),
        }
    }
}

/// OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum OtlpProtocol {
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    #[serde(rename = "grpc")]
    Grpc,
}

/// `[telemetry]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Empty = no OTLP export (metrics stay on `/metrics`).
    pub otlp_endpoint: String,
    pub otlp_protocol: OtlpProtocol,
    #[serde(with = "duration")]
    pub export_interval: Duration,
    pub service_name: String,
    /// Export a server span per request and a client span per try. Off by
    /// default: at full load the spans cost about a fifth of the throughput
    /// (benches/README.md); turn on while investigating.
    pub traces: bool,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: String::new(),
            otlp_protocol: OtlpProtocol::HttpProtobuf,
            export_interval: Duration::from_secs(10),
            service_name: "factory-sidecar".to_owned(),
            traces: false,
        }
    }
}

/// `[grafana]`: chaos episodes become annotations when `url` is set.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrafanaConfig {
    pub url: String,
    pub token: Secret,
}

/// `[probe]`: a synthetic order through the same stack. Creates real orders.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProbeConfig {
    pub enabled: bool,
    #[serde(with = "duration")]
    pub interval: Duration,
    /// The vendor apiKey the probe orders with (env `SIDECAR_PROBE_API_KEY`).
    pub api_key: Secret,
    pub diner_id: u64,
    pub diner_name: String,
    pub diner_email: String,
    pub franchise_id: u64,
    pub store_id: u64,
    pub menu_id: u64,
    pub description: String,
    pub price: f64,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            interval: Duration::from_secs(60),
            api_key: Secret::default(),
            diner_id: 0,
            diner_name: "factory-sidecar probe".to_owned(),
            diner_email: "probe@factory-sidecar.invalid".to_owned(),
            franchise_id: 0,
            store_id: 0,
            menu_id: 0,
            description: "probe".to_owned(),
            price: 0.0001,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A level (`info`), optionally followed by `target=level` directives
    /// (`info,factory_sidecar=debug`); unknown levels are errors.
    #[serde(deserialize_with = "log_level")]
    pub level: String,
    pub format: LogFormat,
    /// One line per request at info (target `factory_sidecar::access`).
    pub access_log: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: LogFormat::Text,
            access_log: true,
        }
    }
}

/// Where queued async orders are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueBackend {
    /// One redb file under `queue.dir`.
    Embedded,
    /// A Redis Streams consumer group shared by several sidecars.
    Redis,
}

/// `[queue]`: durable async orders (`Prefer: respond-async`). Off until
/// `dir` (embedded) or `redis_url` (redis) is set.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Embedded store directory (created 0700 if missing; the file 0600).
    #[serde(with = "optional_path")]
    pub dir: Option<PathBuf>,
    pub backend: QueueBackend,
    /// `redis://host:port[/db]` for `backend = "redis"` (never logged in clear).
    pub redis_url: Secret,
    /// Key prefix in Redis (several deployments can share one server).
    pub redis_prefix: String,
    /// How long an order is kept: a queued one from when it was accepted,
    /// a made one (its answer) from when it was made.
    #[serde(with = "duration")]
    pub ttl: Duration,
    /// Replays started per second at most (room left for live traffic).
    pub replay_per_second: u32,
    /// Replays in flight at most.
    pub replay_concurrency: u32,
    /// Wait before replaying an order queued while the circuit was closed
    /// (its patience ran out), and the first wait after a failed replay
    /// (doubling per failure up to `replay_max_delay`).
    #[serde(with = "duration")]
    pub replay_delay: Duration,
    #[serde(with = "duration")]
    pub replay_max_delay: Duration,
    /// Failed replays (not counting half-open probes) before an order is
    /// moved to the dead letters.
    pub dead_letter_after: u32,
    /// Redis: an order a replica claimed and did not finish within this is
    /// taken over by another (XAUTOCLAIM min-idle).
    #[serde(with = "duration")]
    pub claim_idle: Duration,
}

impl QueueConfig {
    /// Whether async orders are configured at all.
    pub fn is_enabled(&self) -> bool {
        match self.backend {
            QueueBackend::Embedded => self.dir.is_some(),
            QueueBackend::Redis => !self.redis_url.is_empty(),
        }
    }
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            dir: None,
            backend: QueueBackend::Embedded,
            redis_url: Secret::default(),
            redis_prefix: "factory-sidecar".to_owned(),
            ttl: Duration::from_secs(24 * 3600),
            replay_per_second: 5,
            replay_concurrency: 4,
            replay_delay: Duration::from_secs(5),
            replay_max_delay: Duration::from_secs(60),
            dead_letter_after: 5,
            claim_idle: Duration::from_secs(120),
        }
    }
}
