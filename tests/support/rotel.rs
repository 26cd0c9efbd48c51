//! A real OTLP receiver for tests: `rotel-agent` (a Rust OpenTelemetry
//! collector shipped as the PyPI wheel `rotel`), started on free loopback
//! ports with the blackhole exporter and its debug log on, so every data
//! point it receives is printed on its stdout, which this helper reads.
//!
//! Install: `pip install --pre rotel`. The binary is found, in order, at
//! `$ROTEL_AGENT`, inside the installed `rotel` Python package, or on
//! `PATH`. A missing receiver fails the test (with these instructions):
//! a telemetry test that skips proves nothing.
//!
//! Reusable: [`Rotel::start`], then point any OTLP exporter at
//! [`Rotel::http_endpoint`] or [`Rotel::grpc_endpoint`] and wait with
//! [`Rotel::wait_for_point`] for a data point with a given metric name and
//! attributes (bounded polling, no fixed sleep).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const INSTALL: &str = "rotel-agent (the OTLP receiver these tests need) was not found. \
Install it with `pip install --pre rotel` (the binary lives inside the installed `rotel` \
Python package), or set ROTEL_AGENT=/path/to/rotel-agent";

/// Finds the `rotel-agent` binary, or explains how to install it.
pub fn agent_path() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("ROTEL_AGENT") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!(
                "ROTEL_AGENT={} is not a file. {INSTALL}",
                p.display()
            ))
        };
    }
    for python in ["python3", "python"] {
        let out = std::process::Command::new(python)
            .args([
                "-c",
                "import os, rotel; print(os.path.dirname(rotel.__file__))",
            ])
            .stderr(Stdio::null())
            .output();
        if let Ok(out) = out
            && out.status.success()
        {
            let dir = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            let p = Path::new(&dir).join("rotel-agent");
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let p = dir.join("rotel-agent");
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    Err(INSTALL.to_owned())
}

/// One data point as the receiver printed it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DataPoint {
    /// The metric's name (`http.server.request.duration`).
    pub metric: String,
    /// The point's attributes, as printed (`"POST"` -> `POST`, ints as digits).
    pub attributes: Vec<(String, String)>,
    /// `Value:` of a sum or gauge point.
    pub value: Option<f64>,
    /// `Count:` of a histogram point.
    pub count: Option<u64>,
    /// `Sum:` of a histogram point.
    pub sum: Option<f64>,
}

impl DataPoint {
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Exactly these attributes (order free).
    pub fn has_exactly(&self, want: &[(&str, &str)]) -> bool {
        self.attributes.len() == want.len() && want.iter().all(|(k, v)| self.attr(k) == Some(*v))
    }
}

/// A running receiver; killed on drop.
pub struct Rotel {
    child: Child,
    http_port: u16,
    grpc_port: u16,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    dir: PathBuf,
}

impl Drop for Rotel {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

/// Removes ANSI colour sequences (`ESC [ ... m`).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn pump<R>(reader: R, into: Arc<Mutex<Vec<String>>>)
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut lines = BufReader::new(reader).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            into.lock().push(strip_ansi(&line));
        }
    });
}

impl Rotel {
    /// Starts a receiver (metrics and traces debug logs) on free ports and
    /// waits until both listen. Panics with install instructions when the
    /// binary is missing.
    pub async fn start() -> Rotel {
        let agent = agent_path().unwrap_or_else(|e| panic!("{e}"));
        let mut last_error = String::new();
        // A port picked free can be taken before rotel binds it: try again.
        for _ in 0..3 {
            match Rotel::try_start(&agent).await {
                Ok(r) => return r,
                Err(e) => last_error = e,
            }
        }
        panic!("rotel-agent did not start: {last_error}");
    }

    async fn try_start(agent: &Path) -> Result<Rotel, String> {
        let http_port = free_port();
        let grpc_port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "factory-sidecar-rotel-{}-{http_port}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("temp dir: {e}"))?;
        let mut child = Command::new(agent)
            .arg("start")
            .args(["--otlp-http-endpoint", &format!("127.0.0.1:{http_port}")])
            .args(["--otlp-grpc-endpoint", &format!("127.0.0.1:{grpc_port}")])
            .args(["--exporter", "blackhole"])
            .args(["--debug-log", "metrics", "--debug-log", "traces"])
            .args(["--debug-log-verbosity", "detailed"])
            .arg("--pid-file")
            .arg(dir.join("rotel.pid"))
            .arg("--log-file")
            .arg(dir.join("rotel.log"))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", agent.display()))?;
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        if let Some(out) = child.stdout.take() {
            pump(out, stdout.clone());
        }
        if let Some(err) = child.stderr.take() {
            pump(err, stderr.clone());
        }
        let mut rotel = Rotel {
            child,
            http_port,
            grpc_port,
            stdout,
            stderr,
            dir,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = rotel.child.try_wait() {
                return Err(format!(
                    "exited with {status}; output:\n{}",
                    rotel.output_with_stderr()
                ));
            }
            let http = tokio::net::TcpStream::connect(("127.0.0.1", http_port)).await;
            let grpc = tokio::net::TcpStream::connect(("127.0.0.1", grpc_port)).await;
            if http.is_ok() && grpc.is_ok() {
                return Ok(rotel);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "not listening after 15 s; output:\n{}",
                    rotel.output_with_stderr()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// For OTLP http/protobuf (`http://127.0.0.1:P`; exporters add `/v1/...`).
    pub fn http_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// For OTLP gRPC.
    pub fn grpc_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    /// Everything printed on stdout so far (colours removed).
    pub fn output(&self) -> String {
        self.stdout.lock().join("\n")
    }

    fn output_with_stderr(&self) -> String {
        format!(
            "{}\n--- stderr ---\n{}",
            self.output(),
            self.stderr.lock().join("\n")
        )
    }

    /// Every metric data point received so far.
    pub fn data_points(&self) -> Vec<DataPoint> {
        parse_points(&self.stdout.lock())
    }

    /// Waits (polling, bounded by `limit`) for a point of `metric` whose
    /// attributes are exactly `attrs` and that satisfies `check`; returns
    /// the latest such point. Panics with what was received when none came.
    pub async fn wait_for_point(
        &self,
        metric: &str,
        attrs: &[(&str, &str)],
        limit: Duration,
        check: impl Fn(&DataPoint) -> bool,
    ) -> DataPoint {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let found = self
                .data_points()
                .into_iter()
                .rev()
                .find(|p| p.metric == metric && p.has_exactly(attrs) && check(p));
            if let Some(p) = found {
                return p;
            }
            if tokio::time::Instant::now() >= deadline {
                let all: Vec<String> = self
                    .data_points()
                    .into_iter()
                    .filter(|p| p.metric == metric)
                    .map(|p| format!("{p:?}"))
                    .collect();
                // The latest export is enough to see what differs.
                let seen = &all[all.len().saturating_sub(12)..];
                panic!(
                    "no {metric} point with attributes {attrs:?} passing the check within {limit:?}; \
                     {metric} points received: {seen:#?}\nreceiver stdout (tail):\n{}",
                    tail(&self.output(), 80)
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<SpanRecord> {
        parse(&self.stdout.lock()).1
    }

    /// Waits (bounded) for a span satisfying `check`; panics with what was
    /// received when none came.
    pub async fn wait_for_span(
        &self,
        what: &str,
        limit: Duration,
        check: impl Fn(&SpanRecord) -> bool,
    ) -> SpanRecord {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(s) = self.spans().into_iter().find(|s| check(s)) {
                return s;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "no span {what} within {limit:?}; spans received: {:#?}",
                    self.spans()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until the receiver printed a line containing `needle`.
    pub async fn wait_for_output(&self, needle: &str, limit: Duration) -> String {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(l) = self.stdout.lock().iter().find(|l| l.contains(needle)) {
                return l.clone();
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "receiver printed no line with {needle:?} within {limit:?}; stdout (tail):\n{}",
                    tail(&self.output(), 80)
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// One span as the receiver printed it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpanRecord {
    pub trace_id: String,
    pub parent_id: String,
    pub span_id: String,
    pub name: String,
    /// `SPAN_KIND_SERVER`, `SPAN_KIND_CLIENT`, ...
    pub kind: String,
    /// `STATUS_CODE_UNSET`, `STATUS_CODE_ERROR`, ...
    pub status: String,
    pub attributes: Vec<(String, String)>,
}

impl SpanRecord {
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// `key: Str(value)` / `key: Int(200)` -> (key, value).
fn attribute(line: &str) -> Option<(String, String)> {
    let rest = line.trim().strip_prefix("-> ")?;
    let (key, typed) = rest.split_once(": ")?;
    let value = match typed.split_once('(') {
        Some((_, v)) => v.strip_suffix(')').unwrap_or(v),
        None => typed,
    };
    Some((key.to_owned(), value.to_owned()))
}

fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let rest = line.trim().strip_prefix(name)?;
    Some(rest.trim_start().strip_prefix(':')?.trim())
}

#[derive(PartialEq)]
enum Section {
    Other,
    Descriptor,
    Point,
    PointAttributes,
    Span,
    SpanAttributes,
}

/// Parses rotel's `--debug-log-verbosity detailed` output: metric data
/// points and spans, in the order received.
pub fn parse(lines: &[String]) -> (Vec<DataPoint>, Vec<SpanRecord>) {
    let mut points = Vec::new();
    let mut spans = Vec::new();
    let mut metric = String::new();
    let mut point: Option<DataPoint> = None;
    let mut span: Option<SpanRecord> = None;
    let mut section = Section::Other;
    for line in lines {
        let t = line.trim();
        let starts_block = t.starts_with("ResourceMetrics #")
            || t.starts_with("ResourceSpans #")
            || t.starts_with("ResourceLogs #")
            || t.starts_with("ScopeMetrics #")
            || t.starts_with("ScopeSpans #")
            || t.starts_with("Metric #")
            || t.starts_with("Span #")
            || t == "Descriptor:"
            || t.contains("DataPoints #");
        if starts_block {
            points.extend(point.take());
            spans.extend(span.take());
            section = Section::Other;
        }
        if t == "Descriptor:" {
            section = Section::Descriptor;
        } else if t.contains("DataPoints #") {
            point = Some(DataPoint {
                metric: metric.clone(),
                ..DataPoint::default()
            });
            section = Section::Point;
        } else if t.starts_with("Span #") {
            span = Some(SpanRecord::default());
            section = Section::Span;
        } else if t == "Data point attributes:" && point.is_some() {
            section = Section::PointAttributes;
        } else if t == "Attributes:" && span.is_some() {
            section = Section::SpanAttributes;
        } else if section == Section::Descriptor {
            if let Some(name) = t.strip_prefix("-> Name: ") {
                metric = name.to_owned();
            }
        } else if let Some(p) = point.as_mut() {
            if t.starts_with("-> ") && section == Section::PointAttributes {
                p.attributes.extend(attribute(t));
            } else if let Some(v) = field(t, "Value") {
                p.value = v.parse().ok();
            } else if let Some(v) = field(t, "Count") {
                p.count = v.parse().ok();
            } else if let Some(v) = field(t, "Sum") {
                p.sum = v.parse().ok();
            }
        } else if let Some(s) = span.as_mut() {
            if t.starts_with("-> ") && section == Section::SpanAttributes {
                s.attributes.extend(attribute(t));
            } else if let Some(v) = field(t, "Trace ID") {
                s.trace_id = v.to_owned();
            } else if let Some(v) = field(t, "Parent ID") {
                s.parent_id = v.to_owned();
            } else if let Some(v) = field(t, "ID") {
                s.span_id = v.to_owned();
            } else if let Some(v) = field(t, "Name") {
                s.name = v.to_owned();
            } else if let Some(v) = field(t, "Kind") {
                s.kind = v.to_owned();
            } else if let Some(v) = field(t, "Status code") {
                s.status = v.to_owned();
            }
        }
    }
    points.extend(point);
    spans.extend(span);
    (points, spans)
}

/// The metric data points in rotel's output.
pub fn parse_points(lines: &[String]) -> Vec<DataPoint> {
    parse(lines).0
}
