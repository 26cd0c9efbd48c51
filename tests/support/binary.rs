//! The real `factory-sidecar run` binary, as an operator runs it: a config
//! file on disk (listeners on port 0), its addresses read from its own
//! "serving" log line, its stderr kept for assertions, signals sent with
//! `kill`.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use super::client::TestClient;

pub const BIN: &str = env!("CARGO_BIN_EXE_factory-sidecar");

/// A running `factory-sidecar run --config <file>`.
pub struct Binary {
    child: Child,
    pub config: PathBuf,
    /// `http://127.0.0.1:P` of the proxy and admin listeners.
    pub url: String,
    pub admin: String,
    stderr: Arc<Mutex<String>>,
    /// Copies stderr into `stderr`; ends when the process closes it.
    reader: JoinHandle<()>,
}

impl Binary {
    /// Writes `config` (whose listeners should be `127.0.0.1:0`) and starts
    /// the binary on it; returns once it serves.
    pub async fn start(config: &str) -> Binary {
        Binary::start_with_env(config, &[]).await
    }

    /// [`Binary::start`] with these environment variables set as well
    /// (`TOKIO_WORKER_THREADS=1`: one worker, as the benchmarks run it).
    pub async fn start_with_env(config: &str, env: &[(&str, &str)]) -> Binary {
        let path = super::temp_file("sidecar.toml", config);
        let mut child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(&path)
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn factory-sidecar run");
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().expect("stderr");
        let sink = Arc::clone(&stderr);
        let reader = tokio::spawn(async move {
            let mut lines = BufReader::new(pipe).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut s = sink.lock();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let serving = super::eventually(
            "the sidecar's serving line",
            Duration::from_secs(30),
            || {
                let text = stderr.lock().clone();
                async move {
                    text.lines()
                        .find(|l| l.contains("factory-sidecar serving"))
                        .map(str::to_owned)
                }
            },
        )
        .await;
        // JSON (`"proxy_addr":"..."`) or text (`proxy_addr=...`) logs.
        let json: Option<serde_json::Value> = serde_json::from_str(&serving).ok();
        let addr = |key: &str| {
            if let Some(v) = json.as_ref().and_then(|j| j[key].as_str()) {
                return format!("http://{v}");
            }
            let key = format!("{key}=");
            let at = serving
                .find(&key)
                .unwrap_or_else(|| panic!("no {key} in {serving}"));
            let rest = &serving[at + key.len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':'))
                .unwrap_or(rest.len());
            format!("http://{}", &rest[..end])
        };
        Binary {
            url: addr("proxy_addr"),
            admin: addr("admin_addr"),
            child,
            config: path,
            stderr,
            reader,
        }
    }

    /// Replaces the config file (a reload then reads it).
    pub fn write_config(&self, config: &str) {
        std::fs::write(&self.config, config).expect("rewrite config");
    }

    /// Sends `signal` (`HUP`, `TERM`, ...) with kill(1).
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("running").to_string();
        let ok = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(&pid)
            .status()
            .expect("run kill");
        assert!(ok.success(), "kill -{signal} {pid}");
    }

    /// Everything written to stderr so far.
    pub fn logs(&self) -> String {
        self.stderr.lock().clone()
    }

    /// Waits until the log has a line containing every one of `needles`.
    pub async fn wait_for_log(&self, needles: &[&str]) -> String {
        let what = format!("a log line with {needles:?}");
        super::eventually(&what, Duration::from_secs(20), || {
            let text = self.logs();
            let line = text
                .lines()
                .find(|l| needles.iter().all(|n| l.contains(n)))
                .map(str::to_owned);
            async move { line }
        })
        .await
    }

    /// `None` while running, else its exit status.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// SIGKILL, and waits until the process is gone.
    pub async fn kill9(mut self) {
        self.child.start_kill().expect("SIGKILL");
        tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("the process ends after SIGKILL")
            .expect("wait");
    }

    /// Waits until `/readyz` answers 200.
    pub async fn ready(&self) {
        let (client, url) = (TestClient::http1(), format!("{}/readyz", self.admin));
        super::eventually("the sidecar to be ready", Duration::from_secs(20), || {
            let (client, url) = (client.clone(), url.clone());
            async move { (client.get(&url).await.status == 200).then_some(()) }
        })
        .await;
    }

    /// SIGTERM, then waits for the exit code.
    pub async fn stop(self) -> Option<i32> {
        self.signal("TERM");
        self.exit().await.0
    }

    /// Waits for the process to end (after a signal) and for the last of
    /// its stderr: the exit code and everything it logged.
    pub async fn exit(mut self) -> (Option<i32>, String) {
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("exits after SIGTERM")
            .expect("wait");
        // The pipe closed with the process: the reader has the last line.
        tokio::time::timeout(Duration::from_secs(30), &mut self.reader)
            .await
            .expect("stderr read to its end")
            .expect("the stderr reader");
        (status.code(), self.logs())
    }
}
