//! The keep-alive pool of connections to the one factory.
//!
//! Why not hyper-util's legacy `Client`: it serves any number of hosts, so
//! every request hashes its `(scheme, authority)` key with SipHash, takes
//! the pool mutex several times, and spawns a task per HTTP/1 answer only to
//! put the connection back once it is ready again. Measured on the load
//! benchmark (one core, 32 connections), a proxy on this pool spends about
//! a third less user CPU per request than the same proxy on the legacy
//! client (benches/README.md). This pool knows its single upstream, so it
//! is a LIFO stack of idle HTTP/1 senders behind one uncontended lock, plus
//! at most one shared h2 connection when the factory picks h2 by ALPN.
//!
//! - **Checkout**: the most recently used idle connection (warm in cache,
//!   least likely to have been closed by the factory's idle timer); closed
//!   or expired ones are dropped on the way. None idle: a new connection
//!   (`upstream.connect_timeout` bounds the TCP connect; the TLS handshake
//!   is bounded by the caller's attempt timeout).
//! - **Return**: an HTTP/1 connection goes back when its answer body has
//!   been read to the end ([`UpstreamBody`]); an answer dropped half-read
//!   closes its connection, as hyper must for HTTP/1.
//! - **Stale connections**: a request that never left because its reused
//!   connection had just been closed by the factory is sent again on
//!   another connection (hyper hands the unsent request back), as
//!   hyper-util does; a request that did leave is never re-sent here (the
//!   retry layer decides that).
//! - **Bounds**: at most `pool_max_idle_per_host` idle connections (more are
//!   closed on return); idle ones are closed after `pool_idle_timeout` by a
//!   sweeper task that runs only while something is idle.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::HOST;
use http::{HeaderValue, Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use parking_lot::Mutex;
use tokio::time::Instant;
use tower::Service;

use crate::error::BoxError;

type ReqBody = Full<Bytes>;
type H1 = http1::SendRequest<ReqBody>;
type H2 = http2::SendRequest<ReqBody>;

/// How often a request whose reused connection turned out closed is moved
/// to another connection before the failure is reported.
const STALE_RESENDS: usize = 2;

/// Why a request got no answer from the factory.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("{0}")]
    Connect(#[source] BoxError),
    #[error("{0}")]
    Send(#[source] hyper::Error),
}

impl PoolError {
    pub fn is_connect(&self) -> bool {
        matches!(self, PoolError::Connect(_))
    }
}

/// Pool settings (from `[upstream]`).
#[derive(Debug, Clone, Copy)]
pub struct PoolOptions {
    pub max_idle: usize,
    pub idle_timeout: Duration,
}

/// See the module docs. Cheap to clone: all clones share one pool.
#[derive(Clone)]
pub struct Pool {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("upstream", &self.shared.origin)
            .field("idle", &self.idle_count())
            .finish_non_exhaustive()
    }
}

struct Shared {
    connector: HttpsConnector<HttpConnector>,
    /// `scheme://authority`, what the connector dials.
    origin: Uri,
    /// `Host` for HTTP/1 requests.
    host: HeaderValue,
    opts: PoolOptions,
    state: Mutex<State>,
    /// Connections opened since start (for tests and `/status`).
    opened: AtomicU64,
}

#[derive(Default)]
struct State {
    /// Idle HTTP/1 connections, oldest first (checkout takes from the back).
    idle: VecDeque<Idle>,
    /// The shared h2 connection, when the factory chose h2.
    h2: Option<H2>,
    /// Whether a sweeper task is running (set and cleared under this lock).
    sweeping: bool,
}

struct Idle {
    tx: H1,
    since: Instant,
}

/// A connection taken for one request.
enum Taken {
    H1(H1),
    H2(H2),
}

impl Pool {
    pub fn new(
        connector: HttpsConnector<HttpConnector>,
        origin: Uri,
        host: HeaderValue,
        opts: PoolOptions,
    ) -> Pool {
        Pool {
            shared: Arc::new(Shared {
                connector,
                origin,
                host,
                opts,
                state: Mutex::new(State::default()),
                opened: AtomicU64::new(0),
            }),
        }
    }

    /// Idle HTTP/1 connections right now.
    pub fn idle_count(&self) -> usize {
        self.shared.state.lock().idle.len()
    }

    /// Connections opened since start.
    pub fn opened(&self) -> u64 {
        self.shared.opened.load(Ordering::Relaxed)
    }

    /// Sends `req` (origin-form URI) to the factory and returns its answer.
    pub async fn send(
        &self,
        mut req: Request<ReqBody>,
    ) -> Result<Response<UpstreamBody>, PoolError> {
        let mut resends = 0;
        loop {
            // The last resend goes on a new connection.
            let taken = match self.take(resends >= STALE_RESENDS) {
                Some(t) => t,
                // Boxed: the connect and TLS handshake state is large, and
                // inline it would size every request's future for it.
                None => Box::pin(self.connect()).await?,
            };
            let mut failed = match taken {
                Taken::H1(mut tx) => {
                    // Replaces the service's Host in place (never forwarded).
                    req.headers_mut().insert(HOST, self.shared.host.clone());
                    match tx.try_send_request(req).await {
                        Ok(res) => {
                            let release = Release {
                                tx,
                                pool: Arc::downgrade(&self.shared),
                            };
                            return Ok(res.map(|body| UpstreamBody::new(body, Some(release))));
                        }
                        Err(e) => e,
                    }
                }
                Taken::H2(mut tx) => {
                    let res = tx.try_send_request(self.absolute(req)).await;
                    match res {
                        Ok(res) => return Ok(res.map(|body| UpstreamBody::new(body, None))),
                        Err(e) => {
                            self.forget_h2(&tx);
                            e
                        }
                    }
                }
            };
            match failed.take_message() {
                Some(unsent) if resends < STALE_RESENDS => {
                    tracing::debug!(error = %failed.error(), "factory connection closed before the request left; sending on another");
                    req = origin_form(unsent);
                    resends += 1;
                }
                _ => return Err(PoolError::Send(failed.into_error())),
            }
        }
    }

    /// A usable pooled connection, if there is one.
    fn take(&self, fresh_only: bool) -> Option<Taken> {
        if fresh_only {
            return None;
        }
        let now = Instant::now();
        let mut state = self.shared.state.lock();
        if let Some(h2) = &state.h2 {
            if !h2.is_closed() {
                return Some(Taken::H2(h2.clone()));
            }
            state.h2 = None;
        }
        while let Some(idle) = state.idle.pop_back() {
            if idle.tx.is_closed()
                || now.saturating_duration_since(idle.since) >= self.shared.opts.idle_timeout
            {
                continue;
            }
            return Some(Taken::H1(idle.tx));
        }
        None
    }

    /// Opens a new connection; HTTP/1 or h2 as ALPN decided.
    async fn connect(&self) -> Result<Taken, PoolError> {
        let mut connector = self.shared.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(PoolError::Connect)?;
        let io = connector
            .call(self.shared.origin.clone())
            .await
            .map_err(PoolError::Connect)?;
        self.shared.opened.fetch_add(1, Ordering::Relaxed);
        if io.connected().is_negotiated_h2() {
            let (tx, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await
                .map_err(|e| PoolError::Connect(e.into()))?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "factory h2 connection ended with an error");
                }
            });
            let mut state = self.shared.state.lock();
            match &state.h2 {
                // Another request won the race to open it: share that one.
                Some(h2) if !h2.is_closed() => Ok(Taken::H2(h2.clone())),
                _ => {
                    state.h2 = Some(tx.clone());
                    Ok(Taken::H2(tx))
                }
            }
        } else {
            let (tx, conn) = http1::Builder::new()
                .handshake(io)
                .await
                .map_err(|e| PoolError::Connect(e.into()))?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "factory connection ended with an error");
                }
            });
            Ok(Taken::H1(tx))
        }
    }

    /// The request with an absolute URI, as h2 needs for `:scheme` and
    /// `:authority` (and no `Host`).
    fn absolute(&self, mut req: Request<ReqBody>) -> Request<ReqBody> {
        let mut parts = self.shared.origin.clone().into_parts();
        parts.path_and_query = req.uri().path_and_query().cloned();
        // Scheme and authority come from a valid URI, the path from another.
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
        req.headers_mut().remove(HOST);
        req
    }

    fn forget_h2(&self, tx: &H2) {
        let mut state = self.shared.state.lock();
        if state.h2.as_ref().is_some_and(|h2| h2.is_closed()) || tx.is_closed() {
            state.h2 = None;
        }
    }
}

/// Back to origin form (a request handed back unsent by an h2 connection).
fn origin_form(mut req: Request<ReqBody>) -> Request<ReqBody> {
    if let Some(pq) = req.uri().path_and_query().cloned() {
        let mut parts = http::uri::Parts::default();
        parts.path_and_query = Some(pq);
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
    req
}

impl Shared {
    /// Puts an HTTP/1 connection whose answer was read to the end back.
    fn put(self: &Arc<Self>, tx: H1) {
        if tx.is_closed() || self.opts.max_idle == 0 {
            return;
        }
        let start_sweeper = {
            let mut state = self.state.lock();
            if state.idle.len() >= self.opts.max_idle {
                return; // dropped: the connection closes
            }
            state.idle.push_back(Idle {
                tx,
                since: Instant::now(),
            });
            !std::mem::replace(&mut state.sweeping, true)
        };
        if start_sweeper {
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    rt.spawn(sweep(Arc::downgrade(self)));
                }
                Err(_) => self.state.lock().sweeping = false,
            }
        }
    }
}

/// Closes idle connections older than the idle timeout; ends when nothing
/// is idle (the next return starts a new sweeper) or the pool is gone.
async fn sweep(pool: Weak<Shared>) {
    loop {
        let period = match pool.upgrade() {
            Some(p) => {
                (p.opts.idle_timeout / 2).clamp(Duration::from_millis(100), Duration::from_secs(30))
            }
            None => return,
        };
        tokio::time::sleep(period).await;
        let Some(p) = pool.upgrade() else { return };
        let now = Instant::now();
        let expired: Vec<Idle> = {
            let mut state = p.state.lock();
            let keep_from = state
                .idle
                .iter()
                .position(|i| {
                    !i.tx.is_closed()
                        && now.saturating_duration_since(i.since) < p.opts.idle_timeout
                })
                .unwrap_or(state.idle.len());
            let expired = state.idle.drain(..keep_from).collect();
            state.idle.retain(|i| !i.tx.is_closed());
            if state.idle.is_empty() {
                state.sweeping = false;
                drop(state);
                drop(expired);
                return;
            }
            expired
        };
        // Closed outside the lock.
        drop(expired);
    }
}

/// Returns an HTTP/1 connection to its pool once its answer is read.
struct Release {
    tx: H1,
    pool: Weak<Shared>,
}

impl Release {
    fn release(self) {
        if let Some(pool) = self.pool.upgrade() {
            pool.put(self.tx);
        }
    }
}

/// A factory answer body; reading it to the end frees its connection for
/// the next request.
pub struct UpstreamBody {
    body: Incoming,
    release: Option<Release>,
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamBody")
            .field("body", &self.body)
            .field("pooled", &self.release.is_some())
            .finish()
    }
}

impl UpstreamBody {
    fn new(body: Incoming, release: Option<Release>) -> Self {
        let mut b = UpstreamBody { body, release };
        if b.body.is_end_stream() {
            b.done();
        }
        b
    }

    fn done(&mut self) {
        if let Some(r) = self.release.take() {
            r.release();
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.done(),
            Poll::Ready(Some(Ok(_))) if this.body.is_end_stream() => this.done(),
            // A broken body leaves the connection unusable: dropped, closed.
            Poll::Ready(Some(Err(_))) => this.release = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::AtomicUsize;

    use http_body_util::BodyExt;
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A loopback HTTP/1 upstream that counts the connections it accepted;
    /// every answer waits until `together` requests are in (a barrier), so a
    /// test can hold that many connections open at once.
    async fn upstream(together: usize, body: &'static [u8]) -> (Uri, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let barrier = Arc::new(tokio::sync::Barrier::new(together));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let barrier = Arc::clone(&barrier);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |_req| {
                        let barrier = Arc::clone(&barrier);
                        async move {
                            barrier.wait().await;
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(body))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        (format!("http://{addr}/").parse().expect("uri"), accepted)
    }

    fn pool_for(origin: &Uri, max_idle: usize, idle_timeout: Duration) -> Pool {
        let connector =
            crate::proxy::client::https_connector(None, Duration::from_secs(2)).expect("connector");
        let host =
            HeaderValue::from_str(origin.authority().expect("authority").as_str()).expect("host");
        Pool::new(
            connector,
            origin.clone(),
            host,
            PoolOptions {
                max_idle,
                idle_timeout,
            },
        )
    }

    fn get() -> Request<ReqBody> {
        Request::get("/x")
            .body(Full::new(Bytes::new()))
            .expect("request")
    }

    async fn read_all(pool: &Pool) -> Bytes {
        let res = pool.send(get()).await.expect("answer");
        res.into_body().collect().await.expect("body").to_bytes()
    }

    /// Polls `cond` until it holds (at most 10 s): no fixed sleeps.
    async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(std::time::Instant::now() < deadline, "never: {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[test]
    fn a_request_in_flight_is_small() {
        let origin: Uri = "http://127.0.0.1:9/".parse().expect("uri");
        let pool = pool_for(&origin, 8, Duration::from_secs(90));
        let size = std::mem::size_of_val(&pool.send(get()));
        // Every in-flight request holds one: 256 connections, 256 of them.
        assert!(size <= 1024, "Pool::send future is {size} bytes");
    }

    #[tokio::test]
    async fn sequential_requests_share_one_connection() {
        let (origin, accepted) = upstream(1, b"pizza").await;
        let pool = pool_for(&origin, 8, Duration::from_secs(90));
        for _ in 0..5 {
            assert_eq!(read_all(&pool).await, Bytes::from_static(b"pizza"));
        }
        assert_eq!(pool.opened(), 1);
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(pool.idle_count(), 1);
    }

    #[tokio::test]
    async fn an_answer_dropped_half_read_closes_its_connection() {
        static BIG: [u8; 256 * 1024] = [b'x'; 256 * 1024];
        let (origin, _) = upstream(1, &BIG).await;
        let pool = pool_for(&origin, 8, Duration::from_secs(90));
        let res = pool.send(get()).await.expect("answer");
        let mut body = res.into_body();
        let first = body.frame().await.expect("a frame").expect("data");
        assert!(first.data_ref().is_some_and(|d| d.len() < BIG.len()));
        drop(body);
        assert_eq!(
            pool.idle_count(),
            0,
            "a half-read answer's connection is not reused"
        );
        assert_eq!(read_all(&pool).await.len(), BIG.len());
        assert_eq!(pool.opened(), 2);
    }

    #[tokio::test]
    async fn idle_connections_beyond_the_limit_are_closed() {
        let (origin, accepted) = upstream(5, b"ok").await;
        let pool = pool_for(&origin, 2, Duration::from_secs(90));
        let all = (0..5).map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { read_all(&pool).await })
        });
        for task in all.collect::<Vec<_>>() {
            assert_eq!(task.await.expect("task"), Bytes::from_static(b"ok"));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 5);
        assert_eq!(pool.idle_count(), 2);
    }

    #[tokio::test]
    async fn idle_connections_are_closed_after_the_idle_timeout() {
        let (origin, _) = upstream(1, b"ok").await;
        let pool = pool_for(&origin, 8, Duration::from_millis(100));
        read_all(&pool).await;
        assert_eq!(pool.idle_count(), 1);
        eventually("the idle connection is swept", || pool.idle_count() == 0).await;
        // The next request simply opens a new one.
        read_all(&pool).await;
        assert_eq!(pool.opened(), 2);
    }

    /// An upstream that answers one request per connection and then closes
    /// it without saying so (as a factory's idle timer does).
    async fn closing_upstream() -> Uri {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        format!("http://{addr}/").parse().expect("uri")
    }

    #[tokio::test]
    async fn a_connection_the_factory_closed_is_replaced_without_losing_the_request() {
        let origin = closing_upstream().await;
        let pool = pool_for(&origin, 8, Duration::from_secs(90));
        for _ in 0..10 {
            assert_eq!(read_all(&pool).await, Bytes::from_static(b"ok"));
        }
        assert_eq!(pool.opened(), 10);
    }

    #[tokio::test]
    async fn connect_failures_are_connect_errors() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let origin: Uri = format!("http://{}/", listener.local_addr().expect("addr"))
            .parse()
            .expect("uri");
        drop(listener);
        let pool = pool_for(&origin, 8, Duration::from_secs(90));
        let err = pool.send(get()).await.expect_err("nothing listens");
        assert!(err.is_connect(), "{err}");
    }
}
