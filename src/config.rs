//! Configuration: one TOML file, parsed once into validated, typed structs.
//!
//! Why field types validate themselves (`UpstreamUrl`, `Percent`, durations):
//! an error raised while deserializing carries the value's span, so an operator
//! gets `file:line:col: message` for free. Checks that relate two keys (say
//! `initial_backoff <= max_backoff`) run after parsing and look the key's span
//! up in the document again, so they point at a line too.
//!
//! Precedence: defaults < file < environment (`SIDECAR_*`, standard `OTEL_*`).
//! Unknown keys are errors everywhere (`deny_unknown_fields`).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

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
        }
    }
}

/// `[upstream]`: the pizza factory.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Required (in the file or `SIDECAR_UPSTREAM_URL`); `None` only before validation.
    #[serde(default)]
    url: Option<UpstreamUrl>,
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
    /// POST (and other non-idempotent) paths that are safe to retry.
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
    /// An order try cut by `attempt_timeout` may finish in the background this
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
    /// A level (`info`) or `tracing` filter directives (`info,factory_sidecar=debug`).
    #[serde(deserialize_with = "log_level")]
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

// ---------------------------------------------------------------------------
// Self-validating value types.

/// The factory's base URL: `http` or `https`, a host, no query or fragment.
#[derive(Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    /// Base path without a trailing slash ("" for the root).
    base_path: String,
}

impl UpstreamUrl {
    pub fn parse(s: &str) -> Result<Self, String> {
        let uri: http::Uri = s.parse().map_err(|e| format!("invalid URL {s:?}: {e}"))?;
        let scheme = match uri.scheme_str() {
            Some("http") => http::uri::Scheme::HTTP,
            Some("https") => http::uri::Scheme::HTTPS,
            Some(other) => return Err(format!("URL scheme must be http or https, not {other:?}")),
            None => return Err(format!("URL {s:?} needs a scheme (http:// or https://)")),
        };
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("URL {s:?} has no host"))?;
        if authority.host().is_empty() {
            return Err(format!("URL {s:?} has no host"));
        }
        if authority.as_str().contains('@') {
            return Err("URL must not carry credentials".to_owned());
        }
        if uri.query().is_some() || s.contains('#') {
            return Err("URL must not have a query or fragment".to_owned());
        }
        let base_path = uri.path().trim_end_matches('/').to_owned();
        Ok(Self {
            scheme,
            authority,
            base_path,
        })
    }

    pub fn scheme(&self) -> &http::uri::Scheme {
        &self.scheme
    }
    pub fn authority(&self) -> &http::uri::Authority {
        &self.authority
    }
    pub fn host(&self) -> &str {
        self.authority.host()
    }
    pub fn is_https(&self) -> bool {
        self.scheme == http::uri::Scheme::HTTPS
    }
    /// The port, the scheme's default when none is written.
    pub fn port(&self) -> u16 {
        self.authority
            .port_u16()
            .unwrap_or(if self.is_https() { 443 } else { 80 })
    }
    /// Path prefix put before every forwarded path ("" for the root).
    pub fn base_path(&self) -> &str {
        &self.base_path
    }

    /// The upstream URI for a request path-and-query (which starts with `/`).
    pub fn join(&self, path_and_query: &str) -> Result<http::Uri, http::Error> {
        let mut pq = String::with_capacity(self.base_path.len() + path_and_query.len());
        pq.push_str(&self.base_path);
        pq.push_str(path_and_query);
        http::Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(pq)
            .build()
    }
}

impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.authority, self.base_path)
    }
}

impl fmt::Debug for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl<'de> Deserialize<'de> for UpstreamUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        UpstreamUrl::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl Serialize for UpstreamUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A whole percentage, 0 to 100.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Percent(u8);

impl Percent {
    pub fn new(value: u8) -> Option<Self> {
        (value <= 100).then_some(Self(value))
    }
    pub fn get(self) -> u8 {
        self.0
    }
    pub fn fraction(self) -> f64 {
        f64::from(self.0) / 100.0
    }
}

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = i64::deserialize(d)?;
        u8::try_from(v)
            .ok()
            .and_then(Percent::new)
            .ok_or_else(|| serde::de::Error::custom(format!("{v} is not a percentage (0 to 100)")))
    }
}

/// A secret (token, apiKey). Debug and serialization never show it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "\"****\""
        })
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if self.0.is_empty() { "" } else { "****" })
    }
}

/// Human durations: `"250ms"`, `"5s"`, `"1m"`.
pub mod duration {
    use super::*;

    pub fn parse(s: &str) -> Result<Duration, String> {
        humantime::parse_duration(s.trim()).map_err(|e| {
            format!("invalid duration {s:?} ({e}); write e.g. \"250ms\", \"5s\", \"1m\"")
        })
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).map_err(serde::de::Error::custom)
    }

    pub fn serialize<S: Serializer>(v: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*v))
    }
}

/// An optional path where `""` means none.
mod optional_path {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
        let s = String::deserialize(d)?;
        Ok((!s.trim().is_empty()).then(|| PathBuf::from(s)))
    }

    pub fn serialize<S: Serializer>(v: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(p) => s.collect_str(&p.display()),
            None => s.serialize_str(""),
        }
    }
}

fn attempts<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = i64::deserialize(d)?;
    match u32::try_from(v) {
        Ok(n @ 1..=10) => Ok(n),
        _ => Err(serde::de::Error::custom(format!(
            "max_attempts must be between 1 and 10, not {v}"
        ))),
    }
}

fn paths<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let v = Vec::<String>::deserialize(d)?;
    if let Some(bad) = v.iter().find(|p| !p.starts_with('/')) {
        return Err(serde::de::Error::custom(format!(
            "path {bad:?} must start with '/'"
        )));
    }
    Ok(v)
}

fn log_level<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    tracing_subscriber::EnvFilter::builder()
        .parse(&s)
        .map_err(|e| serde::de::Error::custom(format!("invalid log level {s:?}: {e}")))?;
    Ok(s)
}

// ---------------------------------------------------------------------------
// Loading, environment overrides, cross-key validation.

/// One problem, located in the file when it can be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (or `env VAR` for an environment override).
    pub origin: String,
    /// 1-based line and column, when the problem has a place in the file.
    pub position: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, col)) => write!(f, "{}:{line}:{col}: {}", self.origin, self.message),
            None => write!(f, "{}: {}", self.origin, self.message),
        }
    }
}

/// Every problem found; the file is unusable if there is at least one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Reads the environment; injectable so tests do not touch the process env.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl<F: Fn(&str) -> Option<String>> Env for F {
    fn var(&self, name: &str) -> Option<String> {
        self(name)
    }
}

impl Config {
    /// Reads, parses, applies the environment and validates.
    pub fn load(path: &Path, env: &dyn Env) -> Result<Config, ConfigErrors> {
        let origin = path.display().to_string();
        let src = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                origin: origin.clone(),
                position: None,
                message: format!("cannot read config: {e}"),
            }])
        })?;
        Self::parse(&src, &origin, env)
    }

    /// Parses `src` (named `origin` in errors), applies the environment and validates.
    pub fn parse(src: &str, origin: &str, env: &dyn Env) -> Result<Config, ConfigErrors> {
        let mut config: Config = toml::from_str(src).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                origin: origin.to_owned(),
                position: e.span().map(|s| line_col(src, s.start)),
                message: e.message().trim().to_owned(),
            }])
        })?;
        let mut errors = Vec::new();
        config.apply_env(env, &mut errors);
        for (key, message) in config.check() {
            errors.push(ConfigError {
                origin: origin.to_owned(),
                position: locate(src, key),
                message,
            });
        }
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// A config for tests and the demo: `url` upstream, every other key default.
    pub fn for_upstream(url: UpstreamUrl) -> Config {
        Config {
            server: ServerConfig::default(),
            upstream: UpstreamConfig::new(url),
            retry: RetryConfig::default(),
            circuit_breaker: BreakerConfig::default(),
            chaos: ChaosConfig::default(),
            admin: AdminConfig::default(),
            telemetry: TelemetryConfig::default(),
            grafana: GrafanaConfig::default(),
            probe: ProbeConfig::default(),
            log: LogConfig::default(),
        }
    }

    /// The effective config as TOML, secrets masked (for `check`).
    pub fn to_masked_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }

    fn apply_env(&mut self, env: &dyn Env, errors: &mut Vec<ConfigError>) {
        let mut bad = |var: &str, message: String| {
            errors.push(ConfigError {
                origin: format!("env {var}"),
                position: None,
                message,
            })
        };
        if let Some(v) = env.var("SIDECAR_UPSTREAM_URL") {
            match UpstreamUrl::parse(&v) {
                Ok(url) => self.upstream.url = Some(url),
                Err(e) => bad("SIDECAR_UPSTREAM_URL", e),
            }
        }
        if let Some(v) = env.var("SIDECAR_LISTEN") {
            match v.parse() {
                Ok(addr) => self.server.listen = addr,
                Err(e) => bad(
                    "SIDECAR_LISTEN",
                    format!("invalid socket address {v:?}: {e}"),
                ),
            }
        }
        if let Some(v) = env.var("SIDECAR_ADMIN_LISTEN") {
            match v.parse() {
                Ok(addr) => self.admin.listen = addr,
                Err(e) => bad(
                    "SIDECAR_ADMIN_LISTEN",
                    format!("invalid socket address {v:?}: {e}"),
                ),
            }
        }
        if let Some(v) = env.var("SIDECAR_ADMIN_TOKEN") {
            self.admin.token = Secret(v);
        }
        if let Some(v) = env.var("SIDECAR_GRAFANA_TOKEN") {
            self.grafana.token = Secret(v);
        }
        if let Some(v) = env.var("SIDECAR_PROBE_API_KEY") {
            self.probe.api_key = Secret(v);
        }
        // Standard OpenTelemetry variables win over the file.
        if let Some(v) = env
            .var("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
            .or_else(|| env.var("OTEL_EXPORTER_OTLP_ENDPOINT"))
        {
            self.telemetry.otlp_endpoint = v;
        }
        if let Some(v) = env
            .var("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL")
            .or_else(|| env.var("OTEL_EXPORTER_OTLP_PROTOCOL"))
        {
            match v.as_str() {
                "grpc" => self.telemetry.otlp_protocol = OtlpProtocol::Grpc,
                "http/protobuf" => self.telemetry.otlp_protocol = OtlpProtocol::HttpProtobuf,
                _ => bad(
                    "OTEL_EXPORTER_OTLP_PROTOCOL",
                    format!("unsupported protocol {v:?} (grpc or http/protobuf)"),
                ),
            }
        }
        if let Some(v) = env.var("OTEL_SERVICE_NAME") {
            self.telemetry.service_name = v;
        }
        if let Some(v) = env.var("OTEL_METRIC_EXPORT_INTERVAL") {
            match v.parse::<u64>() {
                Ok(ms) if ms > 0 => self.telemetry.export_interval = Duration::from_millis(ms),
                _ => bad(
                    "OTEL_METRIC_EXPORT_INTERVAL",
                    format!("{v:?} is not a positive number of milliseconds"),
                ),
            }
        }
    }

    /// Checks that relate keys to each other or need the whole picture.
    /// Returns (dotted key, message) pairs; the key is used to find the line.
    fn check(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let mut ensure = |ok: bool, key: &'static str, msg: &dyn Fn() -> String| {
            if !ok {
                out.push((key, msg()));
            }
        };
        let s = &self.server;
        ensure(s.max_body_bytes > 0, "server.max_body_bytes", &|| {
            "max_body_bytes must be greater than 0".into()
        });
        ensure(
            (1024..=1024 * 1024).contains(&s.max_header_bytes),
            "server.max_header_bytes",
            &|| "max_header_bytes must be between 1024 and 1048576".into(),
        );
        ensure(s.max_connections > 0, "server.max_connections", &|| {
            "max_connections must be greater than 0".into()
        });
        ensure(
            !s.header_read_timeout.is_zero(),
            "server.header_read_timeout",
            &|| "header_read_timeout must be greater than 0".into(),
        );

        let u = &self.upstream;
        ensure(u.url.is_some(), "upstream", &|| {
            "upstream.url is required (or set SIDECAR_UPSTREAM_URL)".into()
        });
        for (key, d) in [
            ("upstream.connect_timeout", u.connect_timeout),
            ("upstream.attempt_timeout", u.attempt_timeout),
            ("upstream.request_timeout", u.request_timeout),
            ("upstream.body_read_timeout", u.body_read_timeout),
        ] {
            ensure(!d.is_zero(), key, &|| {
                format!("{key} must be greater than 0")
            });
        }
        ensure(
            u.attempt_timeout <= u.request_timeout,
            "upstream.attempt_timeout",
            &|| "attempt_timeout must not exceed request_timeout".into(),
        );
        if let Some(ca) = &u.ca_file {
            ensure(ca.is_file(), "upstream.ca_file", &|| {
                format!("ca_file {} does not exist or is not a file", ca.display())
            });
        }

        let r = &self.retry;
        ensure(
            !r.initial_backoff.is_zero(),
            "retry.initial_backoff",
            &|| "initial_backoff must be greater than 0".into(),
        );
        ensure(
            r.initial_backoff <= r.max_backoff,
            "retry.max_backoff",
            &|| "max_backoff must not be less than initial_backoff".into(),
        );
        ensure(
            r.budget_window >= Duration::from_secs(1),
            "retry.budget_window",
            &|| "budget_window must be at least 1s".into(),
        );

        let b = &self.circuit_breaker;
        ensure(
            b.failure_rate_percent.get() > 0,
            "circuit_breaker.failure_rate_percent",
            &|| "failure_rate_percent must be between 1 and 100".into(),
        );
        ensure(
            b.minimum_calls > 0,
            "circuit_breaker.minimum_calls",
            &|| "minimum_calls must be greater than 0".into(),
        );
        ensure(
            b.window >= Duration::from_secs(1) && b.window.subsec_nanos() == 0,
            "circuit_breaker.window",
            &|| "window must be a whole number of seconds, at least 1s".into(),
        );
        ensure(
            b.consecutive_failures > 0,
            "circuit_breaker.consecutive_failures",
            &|| "consecutive_failures must be greater than 0".into(),
        );
        ensure(!b.open_for.is_zero(), "circuit_breaker.open_for", &|| {
            "open_for must be greater than 0".into()
        });
        ensure(
            b.half_open_probes > 0,
            "circuit_breaker.half_open_probes",
            &|| "half_open_probes must be greater than 0".into(),
        );

        let c = &self.chaos;
        ensure(
            (1024..=16 * 1024 * 1024).contains(&c.inspect_max_bytes),
            "chaos.inspect_max_bytes",
            &|| "inspect_max_bytes must be between 1024 and 16777216".into(),
        );
        ensure(!c.slow_threshold.is_zero(), "chaos.slow_threshold", &|| {
            "slow_threshold must be greater than 0".into()
        });

        let t = &self.telemetry;
        if !t.otlp_endpoint.is_empty() {
            ensure(
                UpstreamUrl::parse(&t.otlp_endpoint).is_ok(),
                "telemetry.otlp_endpoint",
                &|| {
                    format!(
                        "otlp_endpoint {:?} must be an http:// or https:// URL",
                        t.otlp_endpoint
                    )
                },
            );
        }
        ensure(
            !t.export_interval.is_zero(),
            "telemetry.export_interval",
            &|| "export_interval must be greater than 0".into(),
        );
        ensure(
            !t.service_name.is_empty(),
            "telemetry.service_name",
            &|| "service_name must not be empty".into(),
        );

        let g = &self.grafana;
        if !g.url.is_empty() {
            ensure(UpstreamUrl::parse(&g.url).is_ok(), "grafana.url", &|| {
                format!("grafana url {:?} must be an http:// or https:// URL", g.url)
            });
            ensure(!g.token.is_empty(), "grafana.token", &|| {
                "grafana.url needs a token (or SIDECAR_GRAFANA_TOKEN)".into()
            });
        }

        let p = &self.probe;
        if p.enabled {
            ensure(!p.interval.is_zero(), "probe.interval", &|| {
                "interval must be greater than 0".into()
            });
            ensure(!p.api_key.is_empty(), "probe.api_key", &|| {
                "an enabled probe needs api_key (or SIDECAR_PROBE_API_KEY)".into()
            });
        }
        out
    }
}

/// 1-based line and column (in characters) of byte offset `at` in `src`.
fn line_col(src: &str, at: usize) -> (usize, usize) {
    let at = at.min(src.len());
    let before = src.get(..at).unwrap_or(src);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, col)
}

/// Finds where a dotted key (`retry.max_backoff`, or a section) is written,
/// falling back to its section, so a cross-key error still points at a line.
fn locate(src: &str, dotted: &str) -> Option<(usize, usize)> {
    let doc = toml::de::DeTable::parse(src).ok()?;
    let mut table = doc.get_ref();
    let mut found = None;
    for part in dotted.split('.') {
        let (key, value) = table.get_key_value(part)?;
        found = Some(key.span().start);
        match value.get_ref().as_table() {
            Some(t) => table = t,
            None => break,
        }
    }
    found.map(|at| line_col(src, at))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn parse(src: &str) -> Result<Config, ConfigErrors> {
        Config::parse(src, "sidecar.toml", &no_env)
    }

    fn first_error(src: &str) -> String {
        match parse(src) {
            Ok(_) => panic!("config should have been rejected:\n{src}"),
            Err(e) => e.0[0].to_string(),
        }
    }

    #[test]
    fn minimal_config_gets_spec_defaults() {
        let c = parse("[upstream]\nurl = \"https://pizza-factory.cs329.click\"\n").expect("valid");
        assert_eq!(c.upstream.url().host(), "pizza-factory.cs329.click");
        assert_eq!(c.upstream.url().port(), 443);
        assert_eq!(c.server.listen, "127.0.0.1:8081".parse().expect("addr"));
        assert_eq!(c.server.max_body_bytes, 1_048_576);
        assert_eq!(c.upstream.request_timeout, Duration::from_secs(20));
        assert_eq!(c.retry.max_attempts, 3);
        assert_eq!(c.retry.on.len(), 4);
        assert_eq!(c.circuit_breaker.open_for, Duration::from_secs(5));
        assert!(c.chaos.redact_in_responses);
        assert_eq!(c.admin.listen.port(), 9901);
        assert_eq!(c.telemetry.otlp_protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(c.log.format, LogFormat::Text);
    }

    #[test]
    fn the_reference_file_is_valid() {
        let src = include_str!("../config/sidecar.toml");
        parse(src).expect("config/sidecar.toml must stay valid");
    }

    #[test]
    fn unknown_key_is_located() {
        let e = first_error("[upstream]\nurl = \"http://a\"\n\n[retry]\nmax_atempts = 2\n");
        assert!(e.starts_with("sidecar.toml:5:1: "), "{e}");
        assert!(e.contains("max_atempts"), "{e}");
    }

    #[test]
    fn bad_values_are_located() {
        let e = first_error("[upstream]\nurl = \"ftp://a\"\n");
        assert!(e.starts_with("sidecar.toml:2:7: "), "{e}");
        assert!(e.contains("http or https"), "{e}");

        let e = first_error("[upstream]\nurl = \"http://a\"\nattempt_timeout = \"5 parsecs\"\n");
        assert!(e.starts_with("sidecar.toml:3:19: "), "{e}");

        let e = first_error("[upstream]\nurl = \"http://a\"\n[server]\nlisten = \"localhost\"\n");
        assert!(e.starts_with("sidecar.toml:4:10: "), "{e}");

        let e = first_error("[upstream]\nurl = \"http://a\"\n[retry]\nbudget_percent = 120\n");
        assert!(e.contains("4:18") && e.contains("percentage"), "{e}");

        let e = first_error("[upstream]\nurl = \"http://a\"\n[retry]\non = [\"5xx\", \"4xx\"]\n");
        assert!(e.contains("4:"), "{e}");
    }

    #[test]
    fn cross_key_errors_point_at_the_key() {
        let e = first_error(
            "[upstream]\nurl = \"http://a\"\n[retry]\ninitial_backoff = \"3s\"\nmax_backoff = \"2s\"\n",
        );
        assert_eq!(
            e,
            "sidecar.toml:5:1: max_backoff must not be less than initial_backoff"
        );
    }

    #[test]
    fn missing_upstream_url_is_an_error_unless_env_gives_it() {
        let e = first_error("[upstream]\nconnect_timeout = \"1s\"\n");
        assert!(e.contains("upstream.url is required"), "{e}");
        let env =
            |k: &str| (k == "SIDECAR_UPSTREAM_URL").then(|| "http://127.0.0.1:3000".to_owned());
        let c = Config::parse("[upstream]\n", "f", &env).expect("env supplies the url");
        assert_eq!(c.upstream.url().port(), 3000);
    }

    #[test]
    fn env_overrides_win_and_bad_env_is_reported() {
        let env = |k: &str| match k {
            "SIDECAR_LISTEN" => Some("127.0.0.1:1234".to_owned()),
            "SIDECAR_ADMIN_TOKEN" => Some("s3cret".to_owned()),
            "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://127.0.0.1:4318".to_owned()),
            "OTEL_EXPORTER_OTLP_PROTOCOL" => Some("grpc".to_owned()),
            _ => None,
        };
        let c = Config::parse("[upstream]\nurl = \"http://a\"\n", "f", &env).expect("valid");
        assert_eq!(c.server.listen.port(), 1234);
        assert_eq!(c.admin.token.expose(), "s3cret");
        assert_eq!(c.telemetry.otlp_endpoint, "http://127.0.0.1:4318");
        assert_eq!(c.telemetry.otlp_protocol, OtlpProtocol::Grpc);

        let env = |k: &str| (k == "SIDECAR_LISTEN").then(|| "nope".to_owned());
        let e = Config::parse("[upstream]\nurl = \"http://a\"\n", "f", &env).expect_err("bad env");
        assert!(e.to_string().starts_with("env SIDECAR_LISTEN: "), "{e}");
    }

    #[test]
    fn masked_output_hides_secrets() {
        let env = |k: &str| (k == "SIDECAR_ADMIN_TOKEN").then(|| "hunter2hunter2".to_owned());
        let c = Config::parse("[upstream]\nurl = \"http://a\"\n", "f", &env).expect("valid");
        let out = c.to_masked_toml();
        assert!(!out.contains("hunter2"), "{out}");
        assert!(out.contains("token = \"****\""), "{out}");
        // And the output parses back as a valid config.
        let again = Config::parse(&out, "out", &no_env).expect("round trip");
        assert_eq!(again.retry.max_backoff, c.retry.max_backoff);
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn upstream_url_join_keeps_base_path() {
        let u = UpstreamUrl::parse("https://f.example:8443/base/").expect("url");
        assert_eq!(u.base_path(), "/base");
        let uri = u.join("/api/order?x=1").expect("join");
        assert_eq!(uri.to_string(), "https://f.example:8443/base/api/order?x=1");
        assert!(UpstreamUrl::parse("http://user:pw@host").is_err());
        assert!(UpstreamUrl::parse("http://host/?q=1").is_err());
        assert!(UpstreamUrl::parse("host:80").is_err());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Keys of every section, with values of every TOML type: the
        /// config parser must answer each file with a config or with errors
        /// that name a position, never panic.
        fn line() -> impl Strategy<Value = String> {
            let key = prop::sample::select(vec![
                "url",
                "listen",
                "max_body_bytes",
                "shutdown_grace",
                "max_attempts",
                "initial_backoff",
                "max_backoff",
                "failure_rate_percent",
                "window",
                "open_for",
                "auto_resolve",
                "slow_threshold",
                "token",
                "level",
                "otlp_endpoint",
                "export_interval",
                "interval",
                "enabled",
                "bogus",
            ]);
            let value = prop_oneof![
                any::<i64>().prop_map(|n| n.to_string()),
                "[a-z0-9:/.]{0,24}".prop_map(|s| format!("{s:?}")),
                prop::sample::select(vec![
                    "true",
                    "\"250ms\"",
                    "\"1m\"",
                    "\"http://127.0.0.1:1\"",
                    "[1, 2]",
                    "{ a = 1 }",
                    "1.5",
                    "\"\""
                ])
                .prop_map(str::to_owned),
                "[^\n]{0,12}",
            ];
            let section = prop::sample::select(vec![
                "[server]",
                "[upstream]",
                "[retry]",
                "[circuit_breaker]",
                "[chaos]",
                "[admin]",
                "[log]",
                "[telemetry]",
                "[grafana]",
                "[probe]",
                "[nope]",
            ]);
            prop_oneof![
                (key, value).prop_map(|(k, v)| format!("{k} = {v}")),
                section.prop_map(str::to_owned),
            ]
        }

        proptest! {
            #[test]
            fn any_file_gets_a_config_or_positioned_errors(lines in prop::collection::vec(line(), 0..16)) {
                let src = format!("[upstream]\nurl = \"http://127.0.0.1:9\"\n{}\n", lines.join("\n"));
                match parse(&src) {
                    Ok(c) => prop_assert!(c.upstream.url().port() > 0),
                    Err(errors) => {
                        prop_assert!(!errors.0.is_empty());
                        for e in &errors.0 {
                            prop_assert!(!e.message.is_empty());
                            let text = e.to_string();
                            prop_assert!(text.starts_with("sidecar.toml"), "{}", text);
                        }
                    }
                }
            }

            #[test]
            fn arbitrary_text_never_panics(src in "\\PC{0,200}") {
                let _ = parse(&src);
            }
        }
    }
}
