//! The access log: one line per request from the service, at info, in the
//! log's format (text or JSON), like nginx's `access_log` or Envoy's.
//!
//! Fields: `client` (the peer's address, the last `x-forwarded-for` entry,
//! which the listener appends), `method`, `path` (never the query string,
//! which may carry secrets; a report-link path, which carries the vendor's
//! apiKey, is cut to `/api/support/****`), `status`, `outcome`
//! (`sidecar.outcome`), `attempts` (tries the factory saw, from
//! `x-sidecar-attempts`; absent when nothing was forwarded), `duration_ms`
//! (to the answer's head, milliseconds with three decimals), `bytes` (the
//! answer body's length when known at its head; absent for a streamed
//! body), `trace_id` (with traces on) and `episode` (the open chaos
//! episode, if any). Target `factory_sidecar::access`: `[log] access_log =
//! false` turns it off, as does a directive such as
//! `info,factory_sidecar::access=off`.
//!
//! Whether a line is written is asked of `tracing` (level, directives,
//! reloads all apply), but the line is formatted here, in the same layout
//! as the log's own text and JSON lines, into a reused per-thread buffer,
//! and written to stderr in one `write`. Through `tracing-subscriber`'s
//! formatter the same line cost about 14 000 instructions (its timestamp,
//! its field visitors, its writer; measured with benches/instructions.sh),
//! half again what the whole rest of an order costs; here it is a small
//! fraction of that (benches/README.md). What a request keeps for its line
//! is two reference-counted handles (the URI and the client header), and
//! only when the line will be written.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderValue, Method, StatusCode, Uri};

use crate::config::LogFormat;
use crate::proxy::http1::common::push_decimal;
use crate::telemetry::outcome::RequestOutcome;

/// The `tracing` target of access lines.
pub const TARGET: &str = "factory_sidecar::access";

/// Where the access log learns the open chaos episode (the chaos handle).
pub trait OpenEpisode: Send + Sync {
    /// The newest open episode's id; must be cheap (read per request).
    fn open_episode(&self) -> Option<u64>;
}

/// The access log of one stack: on (`[log] access_log`), in `format`.
#[derive(Clone)]
pub struct AccessLog {
    episodes: Arc<dyn OpenEpisode>,
    format: LogFormat,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog")
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

impl AccessLog {
    /// Lines in `format`, naming the open chaos episode from `episodes`.
    pub fn new(episodes: Arc<dyn OpenEpisode>, format: LogFormat) -> AccessLog {
        AccessLog { episodes, format }
    }

    /// What to keep of a request for its line, or `None` when no line will
    /// be written (off, or the log level or a directive hides it).
    pub fn start(&self, uri: &Uri, client: Option<&HeaderValue>) -> Option<Pending> {
        if !tracing::enabled!(target: TARGET, tracing::Level::INFO) {
            return None;
        }
        Some(Pending {
            uri: uri.clone(),
            client: client.cloned(),
            episodes: Arc::clone(&self.episodes),
            format: self.format,
        })
    }
}

/// A request whose line is written when its answer is known.
pub struct Pending {
    uri: Uri,
    client: Option<HeaderValue>,
    episodes: Arc<dyn OpenEpisode>,
    format: LogFormat,
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

/// One line's values, borrowed.
struct Line<'a> {
    client: Option<&'a str>,
    method: &'a str,
    path: &'a str,
    status: u16,
    outcome: &'a str,
    attempts: Option<u32>,
    micros: u64,
    bytes: Option<u64>,
    trace_id: Option<opentelemetry::trace::TraceId>,
    episode: Option<u64>,
}

thread_local! {
    /// The line being written, and the formatted second it starts with.
    static BUFFER: RefCell<Buffer> = RefCell::new(Buffer::default());
}

#[derive(Default)]
struct Buffer {
    line: Vec<u8>,
    /// `YYYY-MM-DDTHH:MM:SS` of `second` (formatted once a second).
    stamp: String,
    second: u64,
}

impl Pending {
    /// Writes the line (one `write` to stderr).
    pub fn finish(self, a: &Answered<'_>) {
        let line = Line {
            client: self.client.as_ref().map(last_forwarded),
            method: a.method.as_str(),
            path: loggable_path(self.uri.path()),
            status: a.status.as_u16(),
            outcome: a.outcome.as_str(),
            attempts: a
                .attempts
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u32>().ok()),
            micros: crate::times::micros(a.elapsed),
            bytes: a.bytes,
            trace_id: a.trace_id,
            episode: self.episodes.open_episode(),
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        BUFFER.with(|b| {
            let Ok(mut b) = b.try_borrow_mut() else {
                return;
            };
            let b = &mut *b;
            b.line.clear();
            if b.second != now.as_secs() || b.stamp.is_empty() {
                b.second = now.as_secs();
                b.stamp.clear();
                civil_stamp(&mut b.stamp, b.second);
            }
            match self.format {
                LogFormat::Text => text(&mut b.line, &b.stamp, now.subsec_micros(), &line),
                LogFormat::Json => json(&mut b.line, &b.stamp, now.subsec_micros(), &line),
            }
            // One write: lines from other threads never interleave inside it.
            let _ = std::io::stderr().write_all(&b.line);
        });
    }
}

/// `2026-12-06T22:14:38.559435Z  INFO factory_sidecar::access: request client=... \n`,
/// as the log's text formatter writes its lines (without colours).
fn text(out: &mut Vec<u8>, stamp: &str, micros: u32, l: &Line<'_>) {
    timestamp(out, stamp, micros);
    push(out, "  INFO ");
    push(out, TARGET);
    push(out, ": request");
    if let Some(c) = l.client {
        push(out, " client=");
        push(out, c);
    }
    push(out, " method=");
    push(out, l.method);
    push(out, " path=");
    push(out, l.path);
    push(out, " status=");
    push_decimal(out, u64::from(l.status));
    push(out, " outcome=");
    push(out, l.outcome);
    if let Some(n) = l.attempts {
        push(out, " attempts=");
        push_decimal(out, u64::from(n));
    }
    push(out, " duration_ms=");
    millis(out, l.micros);
    if let Some(n) = l.bytes {
        push(out, " bytes=");
        push_decimal(out, n);
    }
    if let Some(t) = l.trace_id {
        let _ = write!(out, " trace_id={t}");
    }
    if let Some(e) = l.episode {
        push(out, " episode=");
        push_decimal(out, e);
    }
    out.push(b'\n');
}

/// One flat JSON object, as the log's JSON formatter writes its lines.
fn json(out: &mut Vec<u8>, stamp: &str, micros: u32, l: &Line<'_>) {
    push(out, "{\"timestamp\":\"");
    timestamp(out, stamp, micros);
    push(out, "\",\"level\":\"INFO\",\"message\":\"request\"");
    if let Some(c) = l.client {
        json_field(out, "client", c);
    }
    json_field(out, "method", l.method);
    json_field(out, "path", l.path);
    push(out, ",\"status\":");
    push_decimal(out, u64::from(l.status));
    json_field(out, "outcome", l.outcome);
    if let Some(n) = l.attempts {
        push(out, ",\"attempts\":");
        push_decimal(out, u64::from(n));
    }
    push(out, ",\"duration_ms\":");
    millis(out, l.micros);
    if let Some(n) = l.bytes {
        push(out, ",\"bytes\":");
        push_decimal(out, n);
    }
    if let Some(t) = l.trace_id {
        let _ = write!(out, ",\"trace_id\":\"{t}\"");
    }
    if let Some(e) = l.episode {
        push(out, ",\"episode\":");
        push_decimal(out, e);
    }
    push(out, ",\"target\":\"");
    push(out, TARGET);
    push(out, "\"}\n");
}

fn push(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
}

/// `<stamp>.<micros, 6 digits>Z`.
fn timestamp(out: &mut Vec<u8>, stamp: &str, micros: u32) {
    push(out, stamp);
    out.push(b'.');
    padded(out, u64::from(micros), 6);
    out.push(b'Z');
}

/// `n` in decimal, zero-padded to `width` digits (`n` has at most `width`).
fn padded(out: &mut Vec<u8>, n: u64, width: u32) {
    let mut unit = 10u64.pow(width.saturating_sub(1));
    while unit > 0 {
        out.push(b'0' + (n / unit % 10) as u8);
        unit /= 10;
    }
}

/// `,"key":"value"` with the value escaped for JSON (bytes of multi-byte
/// UTF-8 characters, all 0x80 and above, pass as they are).
fn json_field(out: &mut Vec<u8>, key: &str, value: &str) {
    push(out, ",\"");
    push(out, key);
    push(out, "\":\"");
    for &b in value.as_bytes() {
        match b {
            b'"' => push(out, "\\\""),
            b'\\' => push(out, "\\\\"),
            b if b < 0x20 => {
                let _ = write!(out, "\\u{b:04x}");
            }
            b => out.push(b),
        }
    }
    out.push(b'"');
}

/// Microseconds as milliseconds with three decimals: `5.798`, `0.041`.
fn millis(out: &mut Vec<u8>, micros: u64) {
    push_decimal(out, micros / 1000);
    out.push(b'.');
    padded(out, micros % 1000, 3);
}

/// `YYYY-MM-DDTHH:MM:SS` (UTC) of `secs` after the epoch (Howard Hinnant's
/// civil-from-days).
fn civil_stamp(out: &mut String, secs: u64) {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
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

    #[test]
    fn numbers_are_written_without_fmt() {
        let mut s = Vec::new();
        for n in [0, 7, 10, 1730, u64::MAX] {
            s.clear();
            push_decimal(&mut s, n);
            assert_eq!(s, n.to_string().as_bytes());
        }
        s.clear();
        millis(&mut s, 41);
        assert_eq!(s, b"0.041");
        s.clear();
        millis(&mut s, 12_345_678);
        assert_eq!(s, b"12345.678");
        s.clear();
        padded(&mut s, 1, 6);
        assert_eq!(s, b"000001");
    }

    #[test]
    fn timestamps_are_utc_civil_time() {
        let mut s = String::new();
        civil_stamp(&mut s, 0);
        assert_eq!(s, "1970-01-01T00:00:00");
        s.clear();
        // 2026-12-06T22:14:38Z
        civil_stamp(&mut s, 1_796_595_278);
        assert_eq!(s, "2026-12-06T22:14:38");
        s.clear();
        civil_stamp(&mut s, 951_782_400); // a leap day
        assert_eq!(s, "2000-02-29T00:00:00");
    }

    fn sample(episode: Option<u64>) -> Line<'static> {
        Line {
            client: Some("127.0.0.1"),
            method: "POST",
            path: "/api/\"order\"",
            status: 200,
            outcome: "ok",
            attempts: Some(2),
            micros: 5_798,
            bytes: Some(1730),
            trace_id: None,
            episode,
        }
    }

    #[test]
    fn text_and_json_lines_look_like_the_rest_of_the_log() {
        let mut out = Vec::new();
        text(&mut out, "2026-12-06T22:14:38", 559_435, &sample(Some(4)));
        let out = String::from_utf8(out).expect("utf8");
        assert_eq!(
            out,
            "2026-12-06T22:14:38.559435Z  INFO factory_sidecar::access: request client=127.0.0.1 \
             method=POST path=/api/\"order\" status=200 outcome=ok attempts=2 duration_ms=5.798 \
             bytes=1730 episode=4\n"
        );
        let mut out = Vec::new();
        json(&mut out, "2026-12-06T22:14:38", 1, &sample(None));
        let out = String::from_utf8(out).expect("utf8");
        let v: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
        assert_eq!(v["timestamp"], "2026-12-06T22:14:38.000001Z");
        assert_eq!(v["path"], "/api/\"order\"");
        assert_eq!(v["duration_ms"], 5.798);
        assert_eq!(v["attempts"], 2);
        assert_eq!(v["target"], TARGET);
        assert!(v.get("episode").is_none());
        assert!(out.ends_with("}\n"));
    }
}
