//! A real Prometheus for tests (Debian's `prometheus` package, as CI
//! installs it): a generated config scraping given targets every second and
//! evaluating given rules every second, on a free loopback port with its own
//! data directory, queried through its HTTP API.
//!
//! A missing `prometheus` binary fails the test with the install command:
//! CI installs it (`.ci/run`), so a skip would hide a broken set-up.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use http::Method;
use tokio::process::{Child, Command};

use super::client::TestClient;

/// How often the tests ask Prometheus (it scrapes and evaluates every 1 s).
const POLL: Duration = Duration::from_millis(250);

/// A running Prometheus; killed when dropped.
pub struct Prometheus {
    _child: Child,
    pub url: String,
    client: TestClient,
    _dir: PathBuf,
}

fn binary() -> String {
    for candidate in ["/usr/bin/prometheus", "/usr/local/bin/prometheus"] {
        if std::path::Path::new(candidate).exists() {
            return candidate.to_owned();
        }
    }
    panic!(
        "prometheus is not installed: apt-get update && apt-get install -y prometheus \
         (.ci/run does this; the system service is not needed)"
    );
}

/// `%`-encodes a form value (RFC 3986 unreserved characters stay).
pub fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b))
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (host:port, `/metrics`) as job
    /// `factory-sidecar`, with `rules` (a rule file's text) loaded.
    pub async fn start(targets: &[String], rules: &str) -> Prometheus {
        let bin = binary();
        let dir = super::temp_path("prometheus");
        std::fs::create_dir_all(&dir).expect("prometheus dir");
        let rules_path = dir.join("rules.yml");
        std::fs::write(&rules_path, rules).expect("write rules");
        let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - \"{}\"\n\
             scrape_configs:\n  - job_name: factory-sidecar\n    static_configs:\n      - targets: [{}]\n",
            rules_path.display(),
            targets.join(", ")
        );
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write prometheus.yml");
        // Prometheus cannot report a port 0 it chose: the test picks one.
        let port = super::free_port();
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start prometheus");
        let url = format!("http://127.0.0.1:{port}");
        let prometheus = Prometheus {
            _child: child,
            url,
            client: TestClient::http1(),
            _dir: dir,
        };
        let ready = format!("{}/-/ready", prometheus.url);
        super::eventually("Prometheus to be ready", Duration::from_secs(30), || {
            let ready = ready.clone();
            let http = super::http::Http::new();
            async move {
                let res = http.get(&ready).await.ok()?;
                (res.status == 200).then_some(())
            }
        })
        .await;
        prometheus
    }

    /// The result vector of an instant query (`data.result`), or the error.
    pub async fn query(&self, expr: &str) -> Result<Vec<serde_json::Value>, String> {
        let res = self
            .client
            .request(
                Method::POST,
                &format!("{}/api/v1/query", self.url),
                &[("content-type", "application/x-www-form-urlencoded")],
                &format!("query={}", form_encode(expr)),
            )
            .await;
        let body = res.json();
        if body["status"] != "success" {
            return Err(format!("{expr}: {body}"));
        }
        Ok(body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// The first sample value of `expr`, if it returns any.
    pub async fn value(&self, expr: &str) -> Option<f64> {
        let result = self.query(expr).await.ok()?;
        result.first()?.get("value")?.get(1)?.as_str()?.parse().ok()
    }

    /// The active alerts (`data.alerts`: labels, annotations, state).
    pub async fn alerts(&self) -> Vec<serde_json::Value> {
        let body = self
            .client
            .get(&format!("{}/api/v1/alerts", self.url))
            .await
            .json();
        body["data"]["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until an alert named `name` (with `labels`) is `firing`.
    pub async fn firing(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        limit: Duration,
    ) -> serde_json::Value {
        let found = super::wait_every(limit, POLL, || async {
            self.alerts().await.into_iter().find(|a| {
                a["labels"]["alertname"] == name
                    && a["state"] == "firing"
                    && labels.iter().all(|(k, v)| a["labels"][*k] == *v)
            })
        })
        .await;
        found.unwrap_or_else(|| panic!("alert {name} {labels:?} never fired within {limit:?}"))
    }

    /// Waits until `expr` returns at least one sample with a value for which
    /// `ok` holds; returns that value.
    pub async fn until(&self, expr: &str, limit: Duration, ok: impl Fn(f64) -> bool) -> f64 {
        let found = super::wait_every(limit, POLL, || async {
            self.value(expr).await.filter(|v| ok(*v))
        })
        .await;
        match found {
            Some(v) => v,
            None => panic!(
                "{expr} never met the condition within {limit:?} (last: {:?})",
                self.query(expr).await
            ),
        }
    }
}
