//! A real OTLP collector for tests: `rotel-agent` (a Rust OpenTelemetry
//! collector shipped in the `rotel` PyPI wheel) on free loopback ports, with
//! its detailed debug log of every received data point parsed back.
//!
//! A missing receiver fails the test with the install command: CI installs
//! it (`.ci/run`), so a skip would hide a broken set-up.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use factory_sidecar::config::OtlpProtocol;
use parking_lot::Mutex;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// One received data point (gauge/sum value or histogram count).
#[derive(Debug, Clone, Default)]
pub struct Point {
    pub metric: String,
    pub attributes: BTreeMap<String, String>,
    pub resource: BTreeMap<String, String>,
    /// Gauge and sum points.
    pub value: Option<f64>,
    /// Histogram points.
    pub count: Option<u64>,
}

impl Point {
    /// Whether the point carries every `(key, value)`; an empty value asks
    /// for the key to be absent (`("error.type", "")`: a try that succeeded).
    pub fn has(&self, attrs: &[(&str, &str)]) -> bool {
        attrs.iter().all(|(k, v)| match self.attributes.get(*k) {
            None => v.is_empty(),
            Some(found) => !v.is_empty() && found == v,
        })
    }
}

/// One received span.
#[derive(Debug, Clone, Default)]
pub struct SpanRecord {
    pub trace_id: String,
    pub parent_id: String,
    pub span_id: String,
    pub name: String,
    /// `SPAN_KIND_SERVER`, `SPAN_KIND_CLIENT`, ...
    pub kind: String,
    /// `STATUS_CODE_UNSET`, `STATUS_CODE_ERROR`, ...
    pub status: String,
    pub attributes: BTreeMap<String, String>,
}

impl SpanRecord {
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

#[derive(Default)]
struct Received {
    points: Vec<Point>,
    spans: Vec<SpanRecord>,
}

pub struct Collector {
    pub http_endpoint: String,
    pub grpc_endpoint: String,
    received: Arc<Mutex<Received>>,
    _child: Child,
}

/// Where pip put `rotel-agent`.
fn agent_path() -> std::path::PathBuf {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import rotel, os; print(os.path.dirname(rotel.__file__))",
        ])
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let dir = String::from_utf8_lossy(&o.stdout).trim().to_owned();
            let path = std::path::Path::new(&dir).join("rotel-agent");
            assert!(
                path.is_file(),
                "rotel is installed but {} is missing",
                path.display()
            );
            path
        }
        _ => panic!(
            "the OTLP test receiver is missing: install it with `pip install --pre 'rotel==0.0.1a15'` (bash .ci/run does)"
        ),
    }
}

impl Collector {
    /// Starts the collector and waits until both ports accept connections.
    pub async fn start() -> Collector {
        let (http_port, grpc_port) = (super::free_port(), super::free_port());
        let mut child = Command::new(agent_path())
            .args([
                "start",
                "--otlp-http-endpoint",
                &format!("127.0.0.1:{http_port}"),
                "--otlp-grpc-endpoint",
                &format!("127.0.0.1:{grpc_port}"),
                "--exporter",
                "blackhole",
                "--debug-log",
                "metrics",
                "--debug-log",
                "traces",
                "--debug-log-verbosity",
                "detailed",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start rotel-agent");
        let stdout = child.stdout.take().expect("piped stdout");
        let received = Arc::new(Mutex::new(Received::default()));
        tokio::spawn(parse(BufReader::new(stdout), received.clone()));
        for port in [http_port, grpc_port] {
            super::eventually(
                "rotel-agent to listen",
                Duration::from_secs(20),
                || async move {
                    tokio::net::TcpStream::connect(("127.0.0.1", port))
                        .await
                        .ok()
                        .map(drop)
                },
            )
            .await;
        }
        Collector {
            http_endpoint: format!("http://127.0.0.1:{http_port}"),
            grpc_endpoint: format!("http://127.0.0.1:{grpc_port}"),
            received,
            _child: child,
        }
    }

    /// Where a sidecar exports to this collector over `protocol`.
    pub fn endpoint(&self, protocol: OtlpProtocol) -> String {
        match protocol {
            OtlpProtocol::HttpProtobuf => self.http_endpoint.clone(),
            OtlpProtocol::Grpc => self.grpc_endpoint.clone(),
        }
    }

    /// The newest received point of `metric` with `attrs`, once `accept`
    /// holds for it (cumulative data: the newest point carries the total).
    pub async fn wait_for(
        &self,
        metric: &str,
        attrs: &[(&str, &str)],
        accept: impl Fn(&Point) -> bool,
    ) -> Point {
        let what = format!("{metric} {attrs:?}");
        super::eventually(&what, Duration::from_secs(30), || {
            let found = self
                .received
                .lock()
                .points
                .iter()
                .rev()
                .find(|p| p.metric == metric && p.has(attrs))
                .filter(|p| accept(p))
                .cloned();
            async move { found }
        })
        .await
    }

    pub fn points(&self) -> Vec<Point> {
        self.received.lock().points.clone()
    }

    pub fn spans(&self) -> Vec<SpanRecord> {
        self.received.lock().spans.clone()
    }

    /// The first received span for which `accept` holds.
    pub async fn wait_for_span(
        &self,
        what: &str,
        accept: impl Fn(&SpanRecord) -> bool,
    ) -> SpanRecord {
        let waited = super::wait_for(Duration::from_secs(30), || {
            let found = self
                .received
                .lock()
                .spans
                .iter()
                .find(|s| accept(s))
                .cloned();
            async move { found }
        })
        .await;
        match waited {
            Some(s) => s,
            None => panic!(
                "no span {what} within 30s; spans received: {:#?}",
                self.spans()
            ),
        }
    }
}

/// Parses rotel's detailed debug log into points and spans.
async fn parse(mut lines: BufReader<tokio::process::ChildStdout>, received: Arc<Mutex<Received>>) {
    #[derive(PartialEq)]
    enum Section {
        Other,
        Resource,
        Point,
        Span,
        SpanAttributes,
    }
    let mut section = Section::Other;
    let mut resource = BTreeMap::new();
    let mut metric = String::new();
    let mut current: Option<Point> = None;
    let mut span: Option<SpanRecord> = None;
    let mut line = String::new();
    let flush = |current: &mut Option<Point>, span: &mut Option<SpanRecord>| {
        let mut r = received.lock();
        r.points.extend(current.take());
        r.spans.extend(span.take());
    };
    loop {
        line.clear();
        match lines.read_line(&mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let l = line.trim();
        if l.starts_with("ResourceMetrics #") || l.starts_with("ResourceSpans #") {
            flush(&mut current, &mut span);
            resource = BTreeMap::new();
            section = Section::Other;
        } else if l.starts_with("ScopeSpans #") || l.starts_with("ScopeMetrics #") {
            flush(&mut current, &mut span);
            section = Section::Other;
        } else if l.starts_with("Span #") {
            flush(&mut current, &mut span);
            span = Some(SpanRecord::default());
            section = Section::Span;
        } else if let Some(s) = span.as_mut() {
            // Inside a span until the next block.
            if l == "Attributes:" {
                section = Section::SpanAttributes;
            } else if let (Section::SpanAttributes, Some(kv)) = (&section, l.strip_prefix("-> ")) {
                if let Some((k, v)) = kv.split_once(": ") {
                    s.attributes.insert(k.to_owned(), strip_type(v));
                }
            } else if let Some(v) = field(l, "Trace ID") {
                s.trace_id = v.to_owned();
            } else if let Some(v) = field(l, "Parent ID") {
                s.parent_id = v.to_owned();
            } else if let Some(v) = field(l, "ID") {
                s.span_id = v.to_owned();
            } else if let Some(v) = field(l, "Name") {
                s.name = v.to_owned();
            } else if let Some(v) = field(l, "Kind") {
                s.kind = v.to_owned();
            } else if let Some(v) = field(l, "Status code") {
                s.status = v.to_owned();
            } else if !l.starts_with("-> ") {
                section = Section::Span;
            }
        } else if l == "Resource attributes:" {
            section = Section::Resource;
        } else if l == "Data point attributes:" {
            section = Section::Point;
        } else if let Some(name) = l.strip_prefix("-> Name: ") {
            flush(&mut current, &mut span);
            metric = name.to_owned();
            section = Section::Other;
        } else if l.starts_with("NumberDataPoints #") || l.starts_with("HistogramDataPoints #") {
            flush(&mut current, &mut span);
            current = Some(Point {
                metric: metric.clone(),
                resource: resource.clone(),
                ..Point::default()
            });
            section = Section::Other;
        } else if let Some(kv) = l.strip_prefix("-> ") {
            if let Some((k, v)) = kv.split_once(": ") {
                let v = strip_type(v);
                match section {
                    Section::Resource => {
                        resource.insert(k.to_owned(), v);
                    }
                    Section::Point => {
                        if let Some(p) = current.as_mut() {
                            p.attributes.insert(k.to_owned(), v);
                        }
                    }
                    _ => {}
                }
            }
        } else if let Some(v) = l.strip_prefix("Value: ") {
            section = Section::Other;
            if let Some(p) = current.as_mut() {
                p.value = v.parse().ok();
            }
        } else if let Some(v) = l.strip_prefix("Count: ") {
            section = Section::Other;
            if let Some(p) = current.as_mut() {
                p.count = v.parse().ok();
            }
        } else if l.starts_with("StartTimestamp") {
            section = Section::Other;
        }
    }
    flush(&mut current, &mut span);
}

/// `Name    : value` -> `value` (rotel aligns the colons of span fields).
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let rest = line.strip_prefix(name)?;
    Some(rest.trim_start().strip_prefix(':')?.trim())
}

/// `Str(x)` / `Int(1)` / `Double(0.5)` / `Bool(true)` -> `x` / `1` / ...
fn strip_type(v: &str) -> String {
    match (v.find('('), v.ends_with(')')) {
        (Some(open), true) => v[open + 1..v.len() - 1].to_owned(),
        _ => v.to_owned(),
    }
}
