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
    pub fn has(&self, attrs: &[(&str, &str)]) -> bool {
        attrs
            .iter()
            .all(|(k, v)| self.attributes.get(*k).map(String::as_str) == Some(*v))
    }
}

pub struct Collector {
    pub http_endpoint: String,
    pub grpc_endpoint: String,
    points: Arc<Mutex<Vec<Point>>>,
    _child: Child,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
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
        let (http_port, grpc_port) = (free_port(), free_port());
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
                "--debug-log-verbosity",
                "detailed",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start rotel-agent");
        let stdout = child.stdout.take().expect("piped stdout");
        let points = Arc::new(Mutex::new(Vec::new()));
        tokio::spawn(parse(BufReader::new(stdout), points.clone()));
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
            points,
            _child: child,
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
                .points
                .lock()
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
        self.points.lock().clone()
    }
}

/// Parses rotel's detailed debug log into points.
async fn parse(mut lines: BufReader<tokio::process::ChildStdout>, points: Arc<Mutex<Vec<Point>>>) {
    #[derive(PartialEq)]
    enum Section {
        Other,
        Resource,
        Point,
    }
    let mut section = Section::Other;
    let mut resource = BTreeMap::new();
    let mut metric = String::new();
    let mut current: Option<Point> = None;
    let mut line = String::new();
    let flush = |current: &mut Option<Point>| {
        if let Some(p) = current.take() {
            points.lock().push(p);
        }
    };
    loop {
        line.clear();
        match lines.read_line(&mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let l = line.trim();
        if l.starts_with("ResourceMetrics #") {
            flush(&mut current);
            resource = BTreeMap::new();
            section = Section::Other;
        } else if l == "Resource attributes:" {
            section = Section::Resource;
        } else if l == "Data point attributes:" {
            section = Section::Point;
        } else if let Some(name) = l.strip_prefix("-> Name: ") {
            flush(&mut current);
            metric = name.to_owned();
            section = Section::Other;
        } else if l.starts_with("NumberDataPoints #") || l.starts_with("HistogramDataPoints #") {
            flush(&mut current);
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
                    Section::Other => {}
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
    flush(&mut current);
}

/// `Str(x)` / `Int(1)` / `Double(0.5)` / `Bool(true)` -> `x` / `1` / ...
fn strip_type(v: &str) -> String {
    match (v.find('('), v.ends_with(')')) {
        (Some(open), true) => v[open + 1..v.len() - 1].to_owned(),
        _ => v.to_owned(),
    }
}
