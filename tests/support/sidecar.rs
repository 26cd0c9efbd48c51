//! The real sidecar, started in-process on ephemeral loopback ports.

use factory_sidecar::app::Sidecar;
use factory_sidecar::config::{Config, Secret, UpstreamUrl};
use factory_sidecar::proxy::server::ServeOptions;

pub const ADMIN_TOKEN: &str = "test-admin-token";

/// A config for `upstream` with both listeners on 127.0.0.1:0, short
/// timeouts, and the admin token set; `tweak` adjusts the rest.
pub fn config(upstream: &str, tweak: impl FnOnce(&mut Config)) -> Config {
    let url = UpstreamUrl::parse(upstream).expect("upstream url");
    let mut c = Config::for_upstream(url);
    c.server.listen = "127.0.0.1:0".parse().expect("addr");
    c.admin.listen = "127.0.0.1:0".parse().expect("addr");
    c.admin.token = Secret::new(ADMIN_TOKEN);
    c.server.shutdown_grace = std::time::Duration::from_secs(10);
    tweak(&mut c);
    c
}

/// No retries and a breaker that never trips: for tests about what passes
/// through (fidelity, limits, faults), not about resilience.
pub fn plain(c: &mut Config) {
    c.retry.max_attempts = 1;
    c.circuit_breaker.consecutive_failures = 1000;
    c.circuit_breaker.minimum_calls = 1000;
}

/// A started sidecar and the URLs tests talk to.
pub struct Running {
    pub sidecar: Sidecar,
    pub url: String,
    pub admin: String,
}

impl Running {
    /// Shuts the sidecar down and waits until it has stopped.
    pub async fn stop(self) {
        self.sidecar.shutdown();
        self.sidecar.stopped().await;
    }
}

pub async fn start(config: Config) -> Running {
    start_with(config, |_| {}).await
}

/// [`start`] with the listener's options adjusted (e.g. the HTTP/1.1 fast
/// path off).
pub async fn start_with(config: Config, tweak: impl FnOnce(&mut ServeOptions)) -> Running {
    let sidecar = Sidecar::start_with(config, tweak)
        .await
        .expect("sidecar starts");
    let url = format!("http://{}", sidecar.proxy_addr());
    let admin = format!("http://{}", sidecar.admin_addr());
    Running {
        sidecar,
        url,
        admin,
    }
}
