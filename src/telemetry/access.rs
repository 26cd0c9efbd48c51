//! The access log: one line per request from the service, at info, in the
//! log's format (text or JSON), like nginx's `access_log` or Envoy's.
//!
//! Fields: `client` (the peer's address, the last `x-forwarded-for` entry,
//! which the listener appends), `method`, `path` (never the query string,
//! which may carry secrets; a report-link path, which carries the vendor's
//! apiKey, is cut to `/api/support/****`), `status`, `outcome`
//! (`sidecar.outcome`), `attempts` (tries the factory saw, from
//! `x-sidecar-attempts`; absent when nothing was forwarded), `duration_ms`
//! (to the answer's head, in fractional milliseconds), `bytes` (the answer
//! body's length when known at its head; absent for a streamed body),
//! `trace_id` (with traces on) and `episode` (the open chaos episode, if
//! any). The target is `factory_sidecar::access`: `[log] access_log = false`
//! turns it off, as does a directive such as `info,factory_sidecar::access=off`.
//!
//! Cost: the line is written by the log's formatter into its reused
//! thread-local buffer, one `write` to stderr; what is captured per request
//! is two reference-counted handles (the URI and the client header), only
//! when the line will be written.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Method, StatusCode, Uri};

use crate::telemetry::outcome::RequestOutcome;

/// The `tracing` target of access lines.
pub const TARGET: &str = "factory_sidecar::access";

/// Where the access log learns the open chaos episode (the chaos handle).
pub trait OpenEpisode: Send + Sync {
    /// The newest open episode's id; must be cheap (read per request).
    fn open_episode(&self) -> Option<u64>;
}

/// The access log of one stack: on or off (`[log] access_log`).
#[derive(Clone)]
pub struct AccessLog {
    episodes: Arc<dyn OpenEpisode>,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog").finish_non_exhaustive()
    }
}

impl AccessLog {
    /// Lines naming the open chaos episode from `episodes`.
    pub fn new(episodes: Arc<dyn OpenEpisode>) -> AccessLog {
        AccessLog { episodes }
    }

    /// What to keep of a request for its line, or `None` when no line will
    /// be written (off, or the log level hides it).
    pub fn start(&self, uri: &Uri, client: Option<&HeaderValue>) -> Option<Pending> {
        if !tracing::enabled!(target: TARGET, tracing::Level::INFO) {
            return None;
        }
        Some(Pending {
            uri: uri.clone(),
            client: client.cloned(),
            episodes: Arc::clone(&self.episodes),
        })
    }
}

/// A request whose line is written when its answer is known.
pub struct Pending {
    uri: Uri,
    client: Option<HeaderValue>,
    episodes: Arc<dyn OpenEpisode>,
}

/// The answer's side of a line.
pub struct Answered<'a> {
    pub method: &'a Method,
    pub status: StatusCode,
    pub outcome: RequestOutcome,
    pub attempts: Option<&'a HeaderValue>,
    pub elapsed: Duration,
    pub bytes: Option<u64>,
    pub trace_id: Option<opentelemetry::trace::TraceId>,
}

impl Pending {
    /// Writes the line.
    pub fn finish(self, a: &Answered<'_>) {
        let client = self.client.as_ref().map(last_forwarded);
        let path = loggable_path(self.uri.path());
        let attempts = a
            .attempts
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u32>().ok());
        let micros = u64::try_from(a.elapsed.as_micros()).unwrap_or(u64::MAX);
        let duration_ms = micros as f64 / 1000.0;
        let episode = self.episodes.open_episode();
        tracing::info!(
            target: TARGET,
            client = client.map(tracing::field::display),
            method = %a.method,
            path = %path,
            status = a.status.as_u16(),
            outcome = %a.outcome.as_str(),
            attempts,
            duration_ms,
            bytes = a.bytes,
            trace_id = a.trace_id.map(tracing::field::display),
            episode,
            "request"
        );
    }
}

/// The last `x-forwarded-for` entry: the peer the listener appended.
fn last_forwarded(v: &HeaderValue) -> &str {
    v.to_str()
        .ok()
        .and_then(|s| s.rsplit(',').next())
        .map_or("-", str::trim)
}

/// The path as logged: a report-link path carries the vendor's apiKey and
/// a fix code, so only its prefix is kept.
fn loggable_path(path: &str) -> &str {
    const SUPPORT: &str = "/api/support/";
    match memchr::memmem::find(path.as_bytes(), SUPPORT.as_bytes()) {
        Some(_) => "/api/support/****",
        None => path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_is_the_last_forwarded_entry() {
        let v = HeaderValue::from_static("203.0.113.7, 10.0.0.2,127.0.0.1");
        assert_eq!(last_forwarded(&v), "127.0.0.1");
        assert_eq!(last_forwarded(&HeaderValue::from_static("::1")), "::1");
    }

    #[test]
    fn report_link_paths_never_show_their_key() {
        assert_eq!(loggable_path("/api/order"), "/api/order");
        assert_eq!(
            loggable_path("/api/support/0123456789abcdef0123456789abcdef/report/fix1"),
            "/api/support/****"
        );
        assert_eq!(
            loggable_path("/x/api/support/k/report/c"),
            "/api/support/****"
        );
    }
}
