//! A real `redis-server` (Debian package `redis-server`) on a free loopback
//! port, started and stopped by the test that needs it; nothing persisted
//! unless asked.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

/// A running redis-server, killed when dropped.
pub struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    /// Starts one with `--save "" --appendonly no` and waits until it answers PING.
    pub async fn start() -> RedisServer {
        Self::start_on(super::free_port()).await
    }

    /// [`RedisServer::start`] on a given port (to bring one back).
    pub async fn start_on(port: u16) -> RedisServer {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server runs (apt-get install redis-server)");
        let server = RedisServer { child, port };
        super::eventually(
            "redis-server to answer PING",
            Duration::from_secs(20),
            || {
                let port = server.port;
                async move { ping(port).await.then_some(()) }
            },
        )
        .await;
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Whether a redis server answers PING on `port` (inline protocol).
async fn ping(port: u16) -> bool {
    let Ok(Ok(mut s)) = tokio::time::timeout(
        Duration::from_secs(1),
        tokio::net::TcpStream::connect(("127.0.0.1", port)),
    )
    .await
    else {
        return false;
    };
    if s.write_all(b"PING\r\n").await.is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(
        tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await,
        Ok(Ok(n)) if buf[..n].starts_with(b"+PONG")
    )
}
