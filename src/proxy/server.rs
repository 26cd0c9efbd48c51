//! The listener the pizza service talks to: HTTP/1.1 and h2c on one port.
//!
//! Each accepted connection takes a permit from a semaphore of
//! `server.max_connections`, so a flood of idle connections waits in the
//! kernel's accept queue instead of exhausting file descriptors. A
//! connection starts on the HTTP/1.1 fast path ([`crate::proxy::http1::server`]);
//! whatever that path does not take (h2c, chunked or oversized bodies,
//! conflicting framing, bad heads) is handed, with the bytes already read,
//! to hyper-util's server, which serves the rest of the connection: h1 with
//! hyper's `header_read_timeout` (slowloris) behind the [`FramingGuard`],
//! or h2. A handed-over connection whose first request has not arrived
//! within `header_read_timeout` is closed here (hyper-util's h2 detection
//! has no deadline of its own). On shutdown the listener is closed first,
//! then every connection is asked to finish its in-flight request and
//! close, for at most `shutdown_grace`.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};

use crate::busy_poll;
use crate::config::ServerConfig;
use crate::proxy::anchor::Anchor;
use crate::proxy::body::ProxyBody;
use crate::proxy::collect::RequestBody;
use crate::proxy::headers::ClientAddr;
use crate::proxy::http1::common::request_head_limit;
use crate::proxy::http1::guard::{ConflictingFraming, ConnFraming, FramingGuard};
use crate::proxy::http1::server::{self as fast_path, ConnLimits, Drain, Served};

/// Connection-level settings taken from `[server]`.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_body_bytes: usize,
    pub shutdown_grace: Duration,
    /// Plain HTTP/1.1 requests on the sidecar's own fast path (always, but
    /// for tests): off, every connection goes to hyper from its first byte,
    /// so a test can send the same request down both paths and compare.
    pub fast_path: bool,
    /// `server.busy_poll` (see `crate::busy_poll`).
    pub busy_poll: Duration,
}

impl From<&ServerConfig> for ServeOptions {
    fn from(c: &ServerConfig) -> Self {
        Self {
            max_connections: c.max_connections,
            header_read_timeout: c.header_read_timeout,
            max_header_bytes: c.max_header_bytes,
            max_body_bytes: c.max_body_bytes,
            shutdown_grace: c.shutdown_grace,
            fast_path: true,
            busy_poll: c.busy_poll,
        }
    }
}

impl ServeOptions {
    /// The longest request head either path reads.
    fn head_limit(&self) -> usize {
        request_head_limit(self.max_header_bytes)
    }
}

fn builder(opts: &ServeOptions) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_read_timeout)
        // hyper's read buffer bounds the request head; a larger head gets 431.
        .max_buf_size(opts.head_limit())
        // Without it hyper reads ahead while every request is in flight, to
        // notice a client that hangs up, and so reserves a fresh 8 KiB read
        // buffer per request (the old one is still shared with the request's
        // zero-copy headers). With it, a request already taken runs to its
        // answer, which the chaos layer then still inspects; `request_timeout`
        // bounds it. (The fast path does the same.)
        .half_close(true)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .max_header_list_size(u32::try_from(opts.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10));
    b
}

/// Serves `service` on `listener` until `shutdown` resolves, then drains.
///
/// `service` is cloned per connection; it must answer every request itself
/// (its error type is `Infallible`).
pub async fn serve<S>(
    listener: TcpListener,
    service: S,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()>,
) where
    S: tower::Service<Request<RequestBody>, Response = Response<ProxyBody>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    // Keeps the timers each order arms from waking the runtime (see anchor.rs).
    let _anchor = Anchor::spawn();
    // Polls for the window after each request and answer, with one worker.
    busy_poll::set_window(opts.busy_poll);
    let _spinner = busy_poll::Spinner::spawn();
    let builder = Arc::new(builder(&opts));
    let graceful = GracefulShutdown::new();
    let drain = Arc::new(Drain::default());
    let limits = ConnLimits {
        header_read_timeout: opts.header_read_timeout,
        max_header_bytes: opts.head_limit(),
        max_body_bytes: opts.max_body_bytes,
    };
    let permits = Arc::new(Semaphore::new(opts.max_connections));
    let mut accept_errors = 0u32;
    tokio::pin!(shutdown);

    loop {
        let permit = tokio::select! {
            biased;
            () = &mut shutdown => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break, // the semaphore is never closed
            },
        };
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(conn) => { accept_errors = 0; conn }
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    accept_errors = accept_errors.saturating_add(1);
                    if accept_errors == 1 || accept_errors.is_power_of_two() {
                        tracing::warn!(error = %e, count = accept_errors, "accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let mut svc = service.clone();
        let peer = ClientAddr::new(peer);
        let drain = Arc::clone(&drain);
        let hyper = Handover {
            builder: Arc::clone(&builder),
            watcher: graceful.watcher(),
            head_limit: opts.head_limit(),
            first_deadline: opts.header_read_timeout,
        };
        let fast = opts.fast_path;
        tokio::spawn(async move {
            let served = if fast {
                fast_path::serve(stream, &mut svc, &peer, &limits, &drain).await
            } else {
                Served::Handover(stream, Bytes::new())
            };
            if let Served::Handover(stream, prefix) = served {
                hyper.serve(stream, prefix, svc, peer).await;
            }
            drop(permit);
        });
    }

    drop(listener);
    let open = opts
        .max_connections
        .saturating_sub(permits.available_permits());
    if open > 0 {
        tracing::info!(connections = open, grace = ?opts.shutdown_grace, "draining connections");
    }
    drain.start();
    let all = u32::try_from(opts.max_connections).unwrap_or(u32::MAX);
    let closed = async {
        graceful.shutdown().await;
        // Every connection task has ended once all permits are back.
        let _ = permits.acquire_many(all).await;
    };
    if tokio::time::timeout(opts.shutdown_grace, closed)
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace period over; closing the remaining connections");
    }
}

/// What serving a connection with hyper needs.
struct Handover {
    builder: Arc<auto::Builder<TokioExecutor>>,
    watcher: Watcher,
    head_limit: usize,
    first_deadline: Duration,
}

impl Handover {
    /// Serves the rest of a connection with hyper, `prefix` (already read
    /// from it) first.
    async fn serve<S>(self, stream: TcpStream, prefix: Bytes, service: S, peer: ClientAddr)
    where
        S: tower::Service<Request<RequestBody>, Response = Response<ProxyBody>, Error = Infallible>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
    {
        let addr = peer.addr;
        let first_request = Arc::new(FirstRequest::default());
        let (stream, framing) = FramingGuard::new(
            Prefixed {
                prefix,
                inner: stream,
            },
            self.head_limit,
        );
        let svc = TowerToHyperService::new(WithPeer {
            inner: service,
            peer,
            first_request: first_request.clone(),
            framing,
        });
        let conn = self
            .builder
            .serve_connection(TokioIo::new(stream), svc)
            .into_owned();
        let conn = self.watcher.watch(conn);
        tokio::pin!(conn);
        let result = tokio::select! {
            r = &mut conn => Some(r),
            () = first_request.seen.notified() => Some(conn.await),
            () = tokio::time::sleep(self.first_deadline) => None,
        };
        match result {
            Some(Err(e)) => {
                tracing::debug!(error = %e, peer = %addr, "client connection ended with an error");
            }
            Some(Ok(())) => {}
            None => tracing::debug!(peer = %addr, "no request within header_read_timeout; closed"),
        }
    }
}

/// A connection with bytes already read from it put back in front.
#[derive(Debug)]
struct Prefixed<T> {
    prefix: Bytes,
    inner: T,
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.prefix.has_remaining() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

crate::proxy::write_through!(Prefixed);

/// Signals a connection's first request (once; later calls cost one load).
#[derive(Default)]
struct FirstRequest {
    flag: AtomicBool,
    seen: Notify,
}

/// Adds the connection's peer to each request's `x-forwarded-for`, and marks
/// the request whose head had conflicting framing.
#[derive(Clone)]
struct WithPeer<S> {
    inner: S,
    peer: ClientAddr,
    first_request: Arc<FirstRequest>,
    framing: Arc<ConnFraming>,
}

impl<S> tower::Service<Request<Incoming>> for WithPeer<S>
where
    S: tower::Service<Request<RequestBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Incoming>) -> S::Future {
        self.peer.forward(req.headers_mut());
        if self.framing.next_request_conflicts() {
            req.extensions_mut().insert(ConflictingFraming);
        }
        if !self.first_request.flag.load(Ordering::Relaxed)
            && !self.first_request.flag.swap(true, Ordering::Relaxed)
        {
            self.first_request.seen.notify_one();
        }
        self.inner.call(req.map(RequestBody::Streaming))
    }
}
