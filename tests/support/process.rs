//! The real binary, `factory-sidecar run`, for tests that kill it (SIGKILL
//! or SIGTERM) and start it again.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use super::client::TestClient;

pub const BIN: &str = env!("CARGO_BIN_EXE_factory-sidecar");

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A fresh temporary directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "factory-sidecar-{name}-{}-{}",
        std::process::id(),
        free_port()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// A running `factory-sidecar run`.
pub struct Process {
    child: Child,
    pub proxy: String,
    pub admin: String,
}

impl Process {
    /// Writes `toml` plus both listeners on free ports to `dir/<name>.toml`,
    /// starts the binary on it and waits until `/readyz` answers 200.
    pub async fn start(dir: &Path, name: &str, toml: &str, token: &str) -> Process {
        let (proxy_port, admin_port) = (free_port(), free_port());
        let path = dir.join(format!("{name}.toml"));
        let full = format!(
            "{toml}\n[server]\nlisten = \"127.0.0.1:{proxy_port}\"\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\ntoken = \"{token}\"\n"
        );
        std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(full.as_bytes()))
            .expect("write config");
        let child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(&path)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn factory-sidecar run");
        let p = Process {
            child,
            proxy: format!("http://127.0.0.1:{proxy_port}"),
            admin: format!("http://127.0.0.1:{admin_port}"),
        };
        let client = TestClient::http1();
        let url = format!("{}/readyz", p.admin);
        super::eventually(
            "the sidecar to become ready",
            Duration::from_secs(30),
            || {
                let (client, url) = (client.clone(), url.clone());
                async move {
                    let up = tokio::net::TcpStream::connect(("127.0.0.1", admin_port))
                        .await
                        .is_ok();
                    (up && client.get(&url).await.status == 200).then_some(())
                }
            },
        )
        .await;
        p
    }

    /// SIGKILL, and wait until the process is gone.
    pub async fn kill9(mut self) {
        self.child.start_kill().expect("SIGKILL");
        let _ = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("the process ends after SIGKILL");
    }
}
