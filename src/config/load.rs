//! Loading: read the file, apply the environment, check keys against each
//! other; every problem is located as `file:line:col` where it has a place.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use super::schema::*;
use super::values::{Secret, UpstreamUrl};

/// The longest `server.busy_poll` taken: beyond it polling buys no latency
/// an order could notice and keeps the CPU busy between orders.
const MAX_BUSY_POLL: Duration = Duration::from_millis(10);

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
                message: super::explain::explain(src, e.message().trim(), e.span()),
            }])
        })?;
        // Unless the file says otherwise, the order routes are the POST
        // paths that may be retried (and hedged).
        if locate(src, "retry.retry_non_idempotent").is_none() {
            config.retry.retry_non_idempotent = config.orders.paths.clone();
        }
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
            orders: OrdersConfig::default(),
            circuit_breaker: BreakerConfig::default(),
            chaos: ChaosConfig::default(),
            admin: AdminConfig::default(),
            telemetry: TelemetryConfig::default(),
            grafana: GrafanaConfig::default(),
            probe: ProbeConfig::default(),
            queue: QueueConfig::default(),
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
        for (var, listen) in [
            ("SIDECAR_LISTEN", &mut self.server.listen),
            ("SIDECAR_ADMIN_LISTEN", &mut self.admin.listen),
        ] {
            if let Some(v) = env.var(var) {
                match v.parse() {
                    Ok(addr) => *listen = addr,
                    Err(e) => bad(var, format!("invalid socket address {v:?}: {e}")),
                }
            }
        }
        for (var, secret) in [
            ("SIDECAR_ADMIN_TOKEN", &mut self.admin.token),
            ("SIDECAR_GRAFANA_TOKEN", &mut self.grafana.token),
            ("SIDECAR_PROBE_API_KEY", &mut self.probe.api_key),
            ("SIDECAR_QUEUE_REDIS_URL", &mut self.queue.redis_url),
        ] {
            if let Some(v) = env.var(var) {
                *secret = Secret(v);
            }
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
        ensure(s.busy_poll <= MAX_BUSY_POLL, "server.busy_poll", &|| {
            "busy_poll must be at most 10ms (it keeps a CPU busy that long after every \
             request and answer); \"0s\" turns it off"
                .into()
        });

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

        let o = &self.orders;
        ensure(
            o.patience.is_zero()
                || (OrdersConfig::MIN_PATIENCE..=OrdersConfig::MAX_PATIENCE).contains(&o.patience),
            "orders.patience",
            &|| {
                format!(
                    "patience must be 0s (orders fail fast) or between {}s and {}s (the pizza service gives up at 300s)",
                    OrdersConfig::MIN_PATIENCE.as_secs(),
                    OrdersConfig::MAX_PATIENCE.as_secs()
                )
            },
        );
        ensure(
            o.patience.is_zero() || u.attempt_timeout < o.patience,
            "upstream.attempt_timeout",
            &|| "attempt_timeout must be shorter than orders.patience".into(),
        );
        ensure(
            (1..=100_000).contains(&o.release_per_second),
            "orders.release_per_second",
            &|| "release_per_second must be between 1 and 100000".into(),
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
        self.check_queue(&mut ensure);
        out
    }

    /// `[queue]`: each key alone, then against `[upstream]`.
    fn check_queue(&self, ensure: &mut Ensure<'_>) {
        let q = &self.queue;
        match q.backend {
            QueueBackend::Embedded => ensure(q.redis_url.is_empty(), "queue.redis_url", &|| {
                "redis_url needs backend = \"redis\"".into()
            }),
            QueueBackend::Redis => {
                ensure(!q.redis_url.is_empty(), "queue.redis_url", &|| {
                    "backend = \"redis\" needs redis_url (or SIDECAR_QUEUE_REDIS_URL)".into()
                });
                ensure(
                    q.redis_url.is_empty() || q.redis_url.expose().starts_with("redis://"),
                    "queue.redis_url",
                    &|| "redis_url must start with redis:// (TLS is not built in)".into(),
                );
                ensure(q.dir.is_none(), "queue.dir", &|| {
                    "dir is for backend = \"embedded\"; remove it or the redis backend".into()
                });
            }
        }
        ensure(!q.redis_prefix.is_empty(), "queue.redis_prefix", &|| {
            "redis_prefix must not be empty".into()
        });
        ensure(q.ttl >= Duration::from_secs(1), "queue.ttl", &|| {
            "ttl must be at least 1s".into()
        });
        ensure(
            (1..=1000).contains(&q.replay_per_second),
            "queue.replay_per_second",
            &|| "replay_per_second must be between 1 and 1000".into(),
        );
        ensure(
            (1..=64).contains(&q.replay_concurrency),
            "queue.replay_concurrency",
            &|| "replay_concurrency must be between 1 and 64".into(),
        );
        ensure(!q.replay_delay.is_zero(), "queue.replay_delay", &|| {
            "replay_delay must be greater than 0".into()
        });
        ensure(
            q.replay_max_delay >= q.replay_delay,
            "queue.replay_max_delay",
            &|| "replay_max_delay must not be less than replay_delay".into(),
        );
        ensure(
            (1..=100).contains(&q.dead_letter_after),
            "queue.dead_letter_after",
            &|| "dead_letter_after must be between 1 and 100".into(),
        );
        ensure(
            q.claim_idle > self.upstream.request_timeout,
            "queue.claim_idle",
            &|| {
                "claim_idle must exceed upstream.request_timeout (a replay still running must not be taken over)".into()
            },
        );
    }
}

/// Records a problem with a key when a check fails (see [`Config::check`]).
type Ensure<'a> = dyn FnMut(bool, &'static str, &dyn Fn() -> String) + 'a;

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
        assert_eq!(c.server.busy_poll, Duration::from_micros(50));
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
    fn busy_poll_is_bounded_and_can_be_off() {
        let base = "[upstream]\nurl = \"http://a\"\n[server]\n";
        let c = parse(&format!("{base}busy_poll = \"0s\"\n")).expect("off");
        assert_eq!(c.server.busy_poll, Duration::ZERO);
        let c = parse(&format!("{base}busy_poll = \"200us\"\n")).expect("200us");
        assert_eq!(c.server.busy_poll, Duration::from_micros(200));
        let e = first_error(&format!("{base}busy_poll = \"11ms\"\n"));
        assert!(e.starts_with("sidecar.toml:4:1: "), "{e}");
        assert!(e.contains("busy_poll must be at most 10ms"), "{e}");
    }

    #[test]
    fn the_reference_file_is_valid() {
        let src = include_str!("../../config/sidecar.toml");
        parse(src).expect("config/sidecar.toml must stay valid");
    }

    #[test]
    fn unknown_key_is_located() {
        let e = first_error("[upstream]\nurl = \"http://a\"\n\n[retry]\nmax_atempts = 2\n");
        assert!(e.starts_with("sidecar.toml:5:1: "), "{e}");
        assert!(e.contains("max_atempts"), "{e}");
        assert!(e.contains("did you mean `max_attempts`?"), "{e}");
        assert!(e.contains("[retry]"), "{e}");

        let e = first_error("[upstream]\nurl = \"http://a\"\n[circuit_braker]\n");
        assert!(e.contains("did you mean `circuit_breaker`?"), "{e}");
    }

    #[test]
    fn wrong_types_name_the_key_and_the_range() {
        let e = first_error("[upstream]\nurl = \"http://a\"\n[retry]\nmax_attempts = -1\n");
        assert!(e.starts_with("sidecar.toml:4:16: "), "{e}");
        assert!(
            e.contains("max_attempts must be between 1 and 10, not -1"),
            "{e}"
        );

        let e = first_error("[upstream]\nurl = \"http://a\"\n[retry]\nmax_attempts = \"3\"\n");
        assert!(
            e.contains("retry.max_attempts must be a whole number"),
            "{e}"
        );
        assert!(e.contains("not the string \"3\""), "{e}");

        let e =
            first_error("[upstream]\nurl = \"http://a\"\n[circuit_breaker]\nminimum_calls = -5\n");
        assert!(
            e.ends_with(
                "circuit_breaker.minimum_calls must be a whole number from 0 to 4294967295, not -5"
            ),
            "{e}"
        );

        let e = first_error("[upstream]\nurl = \"http://a\"\nattempt_timeout = 5\n");
        assert!(
            e.contains("upstream.attempt_timeout must be a string in quotes, not 5"),
            "{e}"
        );
    }

    #[test]
    fn unknown_log_levels_are_errors_with_their_place() {
        let e = first_error("[upstream]\nurl = \"http://a\"\n[log]\nlevel = \"verbose\"\n");
        assert!(e.starts_with("sidecar.toml:4:9: "), "{e}");
        assert!(e.contains("\"verbose\" is not a level"), "{e}");
        let c = parse("[upstream]\nurl = \"http://a\"\n[log]\nlevel = \"warn,hyper=error\"\n")
            .expect("directives");
        assert!(c.log.access_log);
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
    fn orders_have_patience_by_default_and_it_is_bounded() {
        let c = parse("[upstream]\nurl = \"http://a\"\n").expect("valid");
        assert_eq!(c.orders.paths, ["/api/order"]);
        assert_eq!(c.orders.patience, Duration::from_secs(60));
        assert_eq!(c.orders.max_waiting, 1000);
        for ok in ["0s", "45s", "280s", "2m"] {
            let src = format!("[upstream]\nurl = \"http://a\"\n[orders]\npatience = \"{ok}\"\n");
            parse(&src).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in ["44s", "281s", "5m", "1ms"] {
            let src = format!("[upstream]\nurl = \"http://a\"\n[orders]\npatience = \"{bad}\"\n");
            let e = first_error(&src);
            assert!(
                e.starts_with("sidecar.toml:4:1: patience must be 0s"),
                "{bad}: {e}"
            );
        }
        let e = first_error(
            "[upstream]\nurl = \"http://a\"\nattempt_timeout = \"50s\"\nrequest_timeout = \"60s\"\n[orders]\npatience = \"45s\"\n",
        );
        assert!(
            e.contains("attempt_timeout must be shorter than orders.patience"),
            "{e}"
        );
        let e = first_error("[upstream]\nurl = \"http://a\"\n[orders]\npaths = [\"api/order\"]\n");
        assert!(e.starts_with("sidecar.toml:4:9: "), "{e}");
    }

    #[test]
    fn order_paths_are_the_retryable_posts_unless_retry_says_otherwise() {
        let c = parse(
            "[upstream]\nurl = \"http://a\"\n[orders]\npaths = [\"/api/order\", \"/api/pizza\"]\n",
        )
        .expect("valid");
        assert_eq!(c.retry.retry_non_idempotent, ["/api/order", "/api/pizza"]);
        let c = parse(
            "[upstream]\nurl = \"http://a\"\n[retry]\nretry_non_idempotent = []\n[orders]\npaths = [\"/api/pizza\"]\n",
        )
        .expect("valid");
        assert!(
            c.retry.retry_non_idempotent.is_empty(),
            "the file's choice stands"
        );
        // `check` prints both, and its output reads back the same.
        let again = parse(&c.to_masked_toml()).expect("round trip");
        assert!(again.retry.retry_non_idempotent.is_empty());
        assert_eq!(again.orders.paths, ["/api/pizza"]);
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
    fn the_queue_is_off_by_default_and_its_keys_are_checked() {
        let c = parse("[upstream]\nurl = \"http://a\"\n").expect("valid");
        assert!(!c.queue.is_enabled());
        assert_eq!(c.queue.ttl, Duration::from_secs(86_400));
        assert_eq!(c.queue.backend, QueueBackend::Embedded);
        let c = parse("[upstream]\nurl = \"http://a\"\n[queue]\ndir = \"/var/lib/sidecar\"\n")
            .expect("valid");
        assert!(c.queue.is_enabled());
        let c = parse(
            "[upstream]\nurl = \"http://a\"\n[queue]\nbackend = \"redis\"\nredis_url = \"redis://127.0.0.1:6379\"\n",
        )
        .expect("valid");
        assert!(c.queue.is_enabled());
        assert!(!c.to_masked_toml().contains("6379"), "redis_url is masked");

        for (src, want) in [
            ("backend = \"redis\"\n", "needs redis_url"),
            (
                "backend = \"redis\"\nredis_url = \"rediss://h\"\n",
                "must start with redis://",
            ),
            ("redis_url = \"redis://h\"\n", "redis_url needs backend"),
            (
                "backend = \"redis\"\nredis_url = \"redis://h\"\ndir = \"/x\"\n",
                "dir is for backend",
            ),
            ("backend = \"kafka\"\n", "unknown variant"),
            ("ttl = \"0s\"\n", "ttl must be at least 1s"),
            (
                "replay_per_second = 0\n",
                "replay_per_second must be between",
            ),
            (
                "replay_concurrency = 100\n",
                "replay_concurrency must be between",
            ),
            (
                "replay_delay = \"2s\"\nreplay_max_delay = \"1s\"\n",
                "replay_max_delay must not be less",
            ),
            (
                "dead_letter_after = 0\n",
                "dead_letter_after must be between",
            ),
            ("claim_idle = \"5s\"\n", "claim_idle must exceed"),
        ] {
            let e = first_error(&format!("[upstream]\nurl = \"http://a\"\n[queue]\n{src}"));
            assert!(e.contains(want), "{src}: {e}");
            assert!(e.starts_with("sidecar.toml:"), "{e}");
        }
        let env = |k: &str| (k == "SIDECAR_QUEUE_REDIS_URL").then(|| "redis://r:1".to_owned());
        let c = Config::parse(
            "[upstream]\nurl = \"http://a\"\n[queue]\nbackend = \"redis\"\n",
            "f",
            &env,
        )
        .expect("env gives the url");
        assert_eq!(c.queue.redis_url.expose(), "redis://r:1");
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
                "patience",
                "max_waiting",
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
                "[orders]",
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
