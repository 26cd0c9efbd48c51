//! Accepting connections (HTTP/1.1 and h2c on one port, hyper-util's auto
//! builder), dispatching each request to the control or factory routes, and
//! the in-process [`SimHandle`] that tests and the demo hold.
//!
//! `down` and `hang` are decided here, before routing: the request's
//! connection is dropped by failing the hyper service (HTTP/1.1: the
//! connection closes with no answer; h2: that stream is reset), or a load
//! balancer's 502 is sent; under `hang` the request is held unanswered until
//! the episode ends, then dropped the same way.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use super::chaos::{ChaosKind, ChaosSpec, ChaosStatus, DownAction, mask};
use super::factory::{self, Answer, Route};
use super::jwt::{KeyError, MAX_TOKEN_POOL, Signer};
use super::state::{Settings, Shared, SimStats, bump};
use super::{DEFAULT_API_KEY, control};

/// How a simulator starts. `SimOptions::default()` is what tests want:
/// loopback on a free port, the default test apiKey, no chaos, 32 s delays
/// (set shorter ones), report links like the real factory's.
#[derive(Debug, Clone)]
pub struct SimOptions {
    pub listen: SocketAddr,
    pub api_key: String,
    /// Chaos from the start.
    pub chaos: ChaosSpec,
    pub throttle_delay: Duration,
    pub oven_delay: Duration,
    /// Base of report links (scheme, host, port, optional path), e.g. a
    /// decoy listener's `http://127.0.0.1:PORT`; `None`: `https://<Host>`.
    pub public_url: Option<String>,
    /// On shutdown, how long in-flight requests may take before being cut.
    pub shutdown_grace: Duration,
    /// Distinct pizzas per order body, signed once and answered in turn, so
    /// a load run pays a verifier's RSA check per order as the real factory
    /// makes it do (see [`jwt`](super::jwt)); 0: one token per body and
    /// second, as the real factory's deterministic signatures give.
    pub token_pool: usize,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            api_key: DEFAULT_API_KEY.to_owned(),
            chaos: ChaosSpec::none(),
            throttle_delay: super::DEFAULT_DELAY,
            oven_delay: super::DEFAULT_DELAY,
            public_url: None,
            shutdown_grace: Duration::from_secs(5),
            token_pool: 0,
        }
    }
}

impl SimOptions {
    #[must_use]
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }
    #[must_use]
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = key.into();
        self
    }
    #[must_use]
    pub fn chaos(mut self, spec: ChaosSpec) -> Self {
        self.chaos = spec;
        self
    }
    #[must_use]
    pub fn throttle_delay(mut self, delay: Duration) -> Self {
        self.throttle_delay = delay;
        self
    }
    #[must_use]
    pub fn oven_delay(mut self, delay: Duration) -> Self {
        self.oven_delay = delay;
        self
    }
    #[must_use]
    pub fn public_url(mut self, url: impl Into<String>) -> Self {
        self.public_url = Some(url.into());
        self
    }
    #[must_use]
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }
    #[must_use]
    pub fn token_pool(mut self, size: usize) -> Self {
        self.token_pool = size;
        self
    }

    fn validate(&self) -> Result<Settings, SimError> {
        let key_ok = !self.api_key.is_empty()
            && self
                .api_key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
        if !key_ok {
            return Err(SimError::InvalidOption(
                "api key: must be non-empty letters, digits or -._~ (it goes into report-link paths)"
                    .into(),
            ));
        }
        if self.token_pool > MAX_TOKEN_POOL {
            return Err(SimError::InvalidOption(format!(
                "token pool: at most {MAX_TOKEN_POOL} tokens per order body"
            )));
        }
        let public_url = match &self.public_url {
            None => None,
            Some(url) => Some(validate_public_url(url)?),
        };
        Ok(Settings {
            api_key: self.api_key.clone(),
            throttle_delay: self.throttle_delay,
            oven_delay: self.oven_delay,
            public_url,
            token_pool: self.token_pool,
        })
    }
}

fn validate_public_url(url: &str) -> Result<String, SimError> {
    let bad = |why: &str| SimError::InvalidOption(format!("public url {url:?}: {why}"));
    let uri: http::Uri = url.parse().map_err(|e| bad(&format!("{e}")))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(bad("the scheme must be http or https")),
    }
    if uri.authority().is_none() {
        return Err(bad("a host is needed"));
    }
    if uri.query().is_some() {
        return Err(bad("no query allowed"));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// Why a simulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("{0}")]
    InvalidOption(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// Starts a simulator on `opts.listen` (port 0: a free port) and returns at
/// once; it runs on the current tokio runtime until [`SimHandle::shutdown`]
/// or until the handle is dropped.
pub async fn spawn(opts: SimOptions) -> Result<SimHandle, SimError> {
    let listener = TcpListener::bind(opts.listen)
        .await
        .map_err(|source| SimError::Bind {
            addr: opts.listen,
            source,
        })?;
    spawn_on(listener, opts).await
}

/// Like [`spawn`] on a listener the caller bound (`opts.listen` unused).
pub async fn spawn_on(listener: TcpListener, opts: SimOptions) -> Result<SimHandle, SimError> {
    let settings = opts.validate()?;
    let addr = listener.local_addr().map_err(|source| SimError::Bind {
        addr: opts.listen,
        source,
    })?;
    // Key generation is CPU work of up to ~0.1 s: keep it off the runtime.
    let signer = tokio::task::spawn_blocking(Signer::generate)
        .await
        .map_err(|_| KeyError::GENERATION)??;
    let shared = Arc::new(Shared::new(
        settings,
        Arc::new(signer),
        factory::docs_json(),
    ));
    if opts.chaos.kind != ChaosKind::None {
        shared.set_chaos(&opts.chaos);
    }
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(accept_loop(
        listener,
        Arc::clone(&shared),
        stopped,
        opts.shutdown_grace,
    ));
    Ok(SimHandle {
        addr,
        shared,
        stop,
        task: Some(task),
    })
}

/// A running simulator. Dropping it stops it (without waiting).
#[derive(Debug)]
pub struct SimHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl SimHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, no trailing slash: the upstream URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The apiKey orders must carry (`authorization: Bearer <key>`).
    pub fn api_key(&self) -> &str {
        &self.shared.settings.api_key
    }

    /// The counters `GET /sim/stats` shows.
    pub fn stats(&self) -> SimStats {
        self.shared.stats()
    }

    /// Starts `spec` now with a fresh fix code, as `PUT /sim/chaos` does.
    pub fn set_chaos(&self, spec: ChaosSpec) -> ChaosStatus {
        self.shared.set_chaos(&spec)
    }

    /// The running chaos, as `GET /sim/chaos` shows it.
    pub fn chaos(&self) -> ChaosStatus {
        self.shared.chaos_status()
    }

    /// The body of `/.well-known/jwks.json`.
    pub fn jwks(&self) -> Bytes {
        self.shared.signer.jwks_json().clone()
    }

    /// Whether `jwt` is a pizza this simulator signed (what `/api/order/verify` says).
    pub fn verify(&self, jwt: &str) -> bool {
        self.shared.signer.verify(jwt).is_some()
    }

    /// The key id that signs this simulator's pizzas.
    pub fn kid(&self) -> &str {
        self.shared.signer.kid()
    }

    /// Stops accepting, lets in-flight requests finish within the grace
    /// period, then cuts what is left.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stopped: watch::Receiver<bool>,
    grace: Duration,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Slow-loris guard. hyper also runs this timer while a keep-alive
    // connection sits idle, so idle connections close after 30 s, as real
    // servers do (Node's default is 5 s): a client pool must cope with that.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            changed = stopped.changed() => {
                if changed.is_err() || *stopped.borrow() {
                    break;
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    bump(&shared.counters.connections);
                    let _ = stream.set_nodelay(true);
                    let shared = Arc::clone(&shared);
                    let service = hyper::service::service_fn(move |req| {
                        let shared = Arc::clone(&shared);
                        async move { dispatch(&shared, req).await }
                    });
                    let conn = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .into_owned();
                    let conn = graceful.watch(conn);
                    connections.spawn(async move {
                        if let Err(e) = conn.await {
                            tracing::debug!(error = %e, "sim connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off a little
                    // instead of spinning.
                    tracing::warn!(error = %e, "sim: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(grace) => {
            tracing::warn!(grace = ?grace, "sim: in-flight requests cut at shutdown");
        }
    }
    connections.shutdown().await;
}

/// Why a request got no answer: its connection is closed on purpose.
#[derive(Debug, thiserror::Error)]
enum NoAnswer {
    #[error("dropped: the simulated factory is down")]
    Down,
    #[error("dropped: the simulated factory hung")]
    Hung,
    #[error(transparent)]
    BodyLost(#[from] factory::BodyLost),
}

async fn dispatch(shared: &Shared, req: Request<Incoming>) -> Result<Answer, NoAnswer> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path();
    if path == "/sim" || path.starts_with("/sim/") {
        return Ok(control::handle(shared, parts, body).await?);
    }

    let counters = &shared.counters;
    bump(&counters.requests);
    let route = Route::of(&parts.method, path);
    match route {
        Route::Order => bump(&counters.orders),
        Route::Jwks => bump(&counters.jwks_requests),
        _ => {}
    }
    if parts.method == http::Method::GET && path.starts_with("/api/support/") {
        bump(&counters.support_requests);
    }

    match shared.on_request(route == Route::Order) {
        None => {}
        Some(DownAction::Drop) => {
            bump(&counters.dropped);
            return Err(NoAnswer::Down);
        }
        Some(DownAction::BadGateway) => return Ok(factory::bad_gateway()),
        Some(DownAction::Hang(episode)) => {
            shared.hold(episode).await;
            bump(&counters.dropped);
            return Err(NoAnswer::Hung);
        }
    }

    let origin = parts.headers.get(header::ORIGIN).cloned();
    let mut answer = factory::handle(shared, route, parts, body).await?;
    factory::add_cors(&mut answer, origin);
    Ok(answer)
}

/// One line for the logs at start: never the apiKey in clear.
pub(crate) fn describe(handle: &SimHandle) -> String {
    format!(
        "api key {}, chaos {}",
        mask(handle.api_key()),
        handle.chaos().kind
    )
}
