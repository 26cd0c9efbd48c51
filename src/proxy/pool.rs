//! The keep-alive pool of connections to the one factory.
//!
//! Why not hyper-util's legacy `Client`: it serves any number of hosts, so
//! every request hashes its `(scheme, authority)` key with SipHash, takes
//! the pool mutex several times, and drives each connection from a task
//! of its own. This pool knows its single upstream: a LIFO stack of idle
//! HTTP/1.1 connections ([`H1Conn`], spoken inline by the request that
//! holds one, see [`crate::proxy::http1::client`]) behind one uncontended lock, plus at
//! most one shared h2 connection (hyper's) when the factory picks h2 by ALPN.
//!
//! - **Checkout**: the most recently used idle connection (warm in cache,
//!   least likely to have been closed by the factory's idle timer); one that
//!   expired, or on which anything arrived while idle (the factory closing
//!   it), is dropped on the way. None idle: a new connection
//!   ([`Dialer`]).
//! - **Return**: an HTTP/1.1 connection goes back when its answer body has
//!   been read to the end ([`UpstreamBody`]) and the answer allows reuse; an
//!   answer dropped half-read closes its connection, as HTTP/1.1 must.
//! - **Stale connections**: a request that could not be written whole on a
//!   reused connection (the factory had just closed it) is sent again on
//!   another one, at most twice; a request that did leave is never re-sent
//!   here (the retry layer decides that).
//! - **Bounds**: at most `pool_max_idle_per_host` idle connections (more are
//!   closed on return); idle ones are closed after `pool_idle_timeout`, or
//!   as soon as the factory closes them, by a sweeper task that runs only
//!   while something is idle.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::header::HOST;
use http::{HeaderValue, Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::boxed::BoxError;
use crate::proxy::Outgoing;
use crate::proxy::connect::{Dialed, Dialer};
use crate::proxy::headers::strip_hop_by_hop;
use crate::proxy::http1::client::{Exchange, H1Body, H1Conn, Target};
use crate::proxy::recycle;

type H2 = http2::SendRequest<Full<Bytes>>;

/// How often a request whose reused connection turned out closed is moved
/// to another connection before the failure is reported.
const STALE_RESENDS: usize = 2;

/// Why a request got no answer from the factory.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("{0}")]
    Connect(#[source] BoxError),
    #[error("{0}")]
    Send(#[source] BoxError),
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
    dialer: Dialer,
    /// `scheme://authority`, for h2's `:scheme` and `:authority`.
    origin: Uri,
    /// `Host` and base path for HTTP/1.1 requests.
    target: Target,
    opts: PoolOptions,
    state: Mutex<State>,
    /// Connections opened since start (for tests and `/status`).
    opened: AtomicU64,
}

#[derive(Default)]
struct State {
    /// Idle HTTP/1.1 connections, oldest first (checkout takes from the back).
    idle: VecDeque<Idle>,
    /// The shared h2 connection, when the factory chose h2.
    h2: Option<H2>,
    /// Whether a sweeper task is running (set and cleared under this lock).
    sweeping: bool,
}

struct Idle {
    conn: Box<H1Conn>,
    since: Instant,
}

/// A connection taken for one request.
enum Taken {
    /// With whether it carried a request before.
    H1(Box<H1Conn>, bool),
    H2(H2),
}

impl Pool {
    /// `base`: the path put before every request's (`""` for the root).
    pub fn new(
        dialer: Dialer,
        origin: Uri,
        host: HeaderValue,
        base: &str,
        opts: PoolOptions,
    ) -> Pool {
        Pool {
            shared: Arc::new(Shared {
                dialer,
                origin,
                target: Target {
                    host,
                    base: base.to_owned(),
                },
                opts,
                state: Mutex::new(State::default()),
                opened: AtomicU64::new(0),
            }),
        }
    }

    /// Idle HTTP/1.1 connections right now.
    pub fn idle_count(&self) -> usize {
        self.shared.state.lock().idle.len()
    }

    /// Connections opened since start.
    #[cfg(test)]
    pub fn opened(&self) -> u64 {
        self.shared.opened.load(Ordering::Relaxed)
    }

    /// Sends `req` (origin-form URI) to the factory and returns its answer,
    /// its hop-by-hop headers removed.
    pub fn send(&self, req: Outgoing) -> SendFuture {
        SendFuture {
            pool: self.clone(),
            req: Some(req),
            resends: 0,
            state: Sending::Start,
        }
    }

    /// One h2 exchange; the request comes back when it never left.
    async fn send_h2(self, mut tx: H2, req: Outgoing, resends: usize) -> H2Sent {
        // hyper's h2 takes the request whole: a copy when a retry holds it.
        let req = Arc::unwrap_or_clone(req);
        // A handle on the body for a resend (a reference count).
        let body = req.body().clone();
        match tx.try_send_request(self.absolute(req)).await {
            Ok(mut res) => {
                strip_hop_by_hop(res.headers_mut());
                H2Sent::Answer(res.map(UpstreamBody::h2))
            }
            Err(mut failed) => {
                self.forget_h2(&tx);
                match failed.take_message() {
                    Some(unsent) if resends < STALE_RESENDS => {
                        tracing::debug!(error = %failed.error(), "factory h2 connection closed before the request left; sending on another");
                        H2Sent::Unsent(Arc::new(origin_form(unsent).map(|_| body)))
                    }
                    _ => H2Sent::Failed(PoolError::Send(Box::new(failed.into_error()))),
                }
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
            if now.saturating_duration_since(idle.since) >= self.shared.opts.idle_timeout
                || !idle.conn.is_reusable()
            {
                continue;
            }
            return Some(Taken::H1(idle.conn, true));
        }
        None
    }

    /// Opens a new connection; HTTP/1.1 or h2 as ALPN decided.
    async fn connect(&self) -> Result<Taken, PoolError> {
        let dialed = self
            .shared
            .dialer
            .dial()
            .await
            .map_err(|e| PoolError::Connect(e.into()))?;
        self.shared.opened.fetch_add(1, Ordering::Relaxed);
        let io = match dialed {
            Dialed::Http1(io) => return Ok(Taken::H1(H1Conn::new(io), false)),
            Dialed::H2(io) => io,
        };
        let (tx, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(TokioIo::new(io))
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
    }

    /// The request with an absolute URI, as h2 needs for `:scheme` and
    /// `:authority` (and no `Host`).
    fn absolute(&self, req: Request<Bytes>) -> Request<Full<Bytes>> {
        let mut req = req.map(Full::new);
        let mut parts = self.shared.origin.clone().into_parts();
        let base = &self.shared.target.base;
        parts.path_and_query = match req.uri().path_and_query() {
            Some(pq) if base.is_empty() => Some(pq.clone()),
            pq => {
                let pq = pq.map_or("/", |pq| pq.as_str());
                http::uri::PathAndQuery::try_from(format!("{base}{pq}")).ok()
            }
        };
        // Scheme and authority come from a valid URI, the path from another.
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
        req.headers_mut().remove(HOST);
        // As before the h2 client took requests: the version is hyper's.
        *req.version_mut() = http::Version::HTTP_11;
        req
    }

    fn forget_h2(&self, tx: &H2) {
        let mut state = self.shared.state.lock();
        if state.h2.as_ref().is_some_and(|h2| h2.is_closed()) || tx.is_closed() {
            state.h2 = None;
        }
    }
}

/// How one h2 exchange ended.
enum H2Sent {
    Answer(Response<UpstreamBody>),
    /// The connection closed before the request left: it can go again.
    Unsent(Outgoing),
    Failed(PoolError),
}

type Boxed<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Where a [`SendFuture`] is.
enum Sending {
    /// About to take a pooled connection or open one.
    Start,
    /// Opening one (boxed: the connect and TLS handshake state is large,
    /// and inline it would size every order's future for it).
    Connecting(Boxed<Result<Taken, PoolError>>),
    /// On an HTTP/1.1 connection, inline (the usual case: no allocation).
    H1 {
        conn: Box<H1Conn>,
        reused: bool,
        exchange: Exchange,
    },
    /// On the shared h2 connection (hyper's future, boxed).
    H2(Boxed<H2Sent>),
    Done,
}

/// The answer to one request from [`Pool::send`]: a connection taken (or
/// opened), the request written, the answer head read. Written out as a
/// state machine so the forwarding layer holds it inline.
pub struct SendFuture {
    pool: Pool,
    /// `None` once handed to h2 or finished.
    req: Option<Outgoing>,
    resends: usize,
    state: Sending,
}

impl SendFuture {
    /// Starts the exchange on `taken`.
    fn on(&mut self, taken: Taken) {
        self.state = match taken {
            Taken::H1(conn, reused) => Sending::H1 {
                conn,
                reused,
                exchange: Exchange::default(),
            },
            Taken::H2(tx) => match self.req.take() {
                Some(req) => {
                    Sending::H2(Box::pin(self.pool.clone().send_h2(tx, req, self.resends)))
                }
                None => Sending::Done,
            },
        };
    }
}

impl Future for SendFuture {
    type Output = Result<Response<UpstreamBody>, PoolError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                Sending::Start => {
                    // The last resend goes on a new connection.
                    match this.pool.take(this.resends >= STALE_RESENDS) {
                        Some(taken) => this.on(taken),
                        None => {
                            let pool = this.pool.clone();
                            this.state =
                                Sending::Connecting(Box::pin(async move { pool.connect().await }));
                        }
                    }
                }
                Sending::Connecting(connecting) => match ready!(connecting.as_mut().poll(cx)) {
                    Ok(taken) => this.on(taken),
                    Err(e) => {
                        this.state = Sending::Done;
                        return Poll::Ready(Err(e));
                    }
                },
                Sending::H1 {
                    conn,
                    reused,
                    exchange,
                } => {
                    let Some(req) = this.req.as_ref() else {
                        this.state = Sending::Done;
                        continue;
                    };
                    let sent = ready!(conn.poll_send(cx, req, &this.pool.shared.target, exchange));
                    match sent {
                        Err(e) if e.unsent && *reused && this.resends < STALE_RESENDS => {
                            tracing::debug!(error = %e, "factory connection closed before the request left; sending on another");
                            this.resends += 1;
                            this.state = Sending::Start;
                        }
                        sent => {
                            let Sending::H1 { conn, .. } =
                                std::mem::replace(&mut this.state, Sending::Done)
                            else {
                                continue;
                            };
                            // Written: unless a retry keeps it, its header
                            // map serves the next request.
                            if let Some(Ok(req)) = this.req.take().map(Arc::try_unwrap) {
                                recycle::recycle(req.into_parts().0.headers);
                            }
                            let answer = sent.map_err(|e| PoolError::Send(Box::new(e)))?;
                            let res = answer
                                .with_body(conn)
                                .map_err(|e| PoolError::Send(Box::new(e)))?;
                            let home = Arc::downgrade(&this.pool.shared);
                            return Poll::Ready(Ok(res.map(|body| UpstreamBody::h1(body, home))));
                        }
                    }
                }
                Sending::H2(sending) => match ready!(sending.as_mut().poll(cx)) {
                    H2Sent::Answer(res) => {
                        this.state = Sending::Done;
                        return Poll::Ready(Ok(res));
                    }
                    H2Sent::Unsent(req) => {
                        this.req = Some(req);
                        this.resends += 1;
                        this.state = Sending::Start;
                    }
                    H2Sent::Failed(e) => {
                        this.state = Sending::Done;
                        return Poll::Ready(Err(e));
                    }
                },
                Sending::Done => {
                    return Poll::Ready(Err(PoolError::Send(
                        "the exchange was polled after it ended".into(),
                    )));
                }
            }
        }
    }
}

/// Back to origin form (a request handed back unsent by an h2 connection).
fn origin_form<B>(mut req: Request<B>) -> Request<B> {
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
    /// Puts an HTTP/1.1 connection whose answer was read to the end back.
    fn put(self: &Arc<Self>, conn: Box<H1Conn>) {
        if self.opts.max_idle == 0 {
            return;
        }
        let start_sweeper = {
            let mut state = self.state.lock();
            if state.idle.len() >= self.opts.max_idle {
                return; // dropped: the connection closes
            }
            state.idle.push_back(Idle {
                conn,
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

/// Closes idle connections older than the idle timeout or closed by the
/// factory; ends when nothing is idle (the next return starts a new
/// sweeper) or the pool is gone.
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
                .position(|i| now.saturating_duration_since(i.since) < p.opts.idle_timeout)
                .unwrap_or(state.idle.len());
            let mut expired: Vec<Idle> = state.idle.drain(..keep_from).collect();
            let mut i = 0;
            while i < state.idle.len() {
                if state.idle[i].conn.is_reusable() {
                    i += 1;
                } else if let Some(closed) = state.idle.remove(i) {
                    expired.push(closed);
                }
            }
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

/// A factory answer body; reading an HTTP/1.1 one to the end frees its
/// connection for the next request.
pub struct UpstreamBody {
    inner: Inner,
}

enum Inner {
    H1 { body: H1Body, home: Weak<Shared> },
    H2(Incoming),
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            Inner::H1 { body, .. } => f.debug_tuple("UpstreamBody").field(body).finish(),
            Inner::H2(body) => f.debug_tuple("UpstreamBody").field(body).finish(),
        }
    }
}

impl UpstreamBody {
    fn h1(body: H1Body, home: Weak<Shared>) -> Self {
        let mut b = UpstreamBody {
            inner: Inner::H1 { body, home },
        };
        b.release();
        b
    }

    fn h2(body: Incoming) -> Self {
        UpstreamBody {
            inner: Inner::H2(body),
        }
    }

    /// Hands a finished HTTP/1.1 connection back to its pool.
    fn release(&mut self) {
        if let Inner::H1 { body, home } = &mut self.inner
            && let Some(conn) = body.take_reusable()
            && let Some(pool) = home.upgrade()
        {
            pool.put(conn);
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = match &mut self.inner {
            Inner::H1 { body, .. } => body
                .poll_data(cx)
                .map(|d| d.map(|r| r.map(Frame::data).map_err(BoxError::from))),
            Inner::H2(body) => {
                return Pin::new(body)
                    .poll_frame(cx)
                    .map(|f| f.map(|r| r.map_err(BoxError::from)));
            }
        };
        if self.is_end_stream() {
            self.release();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::H1 { body, .. } => body.is_end_stream(),
            Inner::H2(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::H1 { body, .. } => match body.remaining() {
                Some(n) => SizeHint::with_exact(n),
                None => SizeHint::default(),
            },
            Inner::H2(body) => body.size_hint(),
        }
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
        let url = crate::config::UpstreamUrl::parse(&origin.to_string()).expect("url");
        let dialer = Dialer::new(&url, None, Duration::from_secs(2)).expect("dialer");
        let host =
            HeaderValue::from_str(origin.authority().expect("authority").as_str()).expect("host");
        Pool::new(
            dialer,
            origin.clone(),
            host,
            "",
            PoolOptions {
                max_idle,
                idle_timeout,
            },
        )
    }

    fn get() -> Outgoing {
        Arc::new(Request::get("/x").body(Bytes::new()).expect("request"))
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
