//! The listener the pizza service talks to: HTTP/1.1 and h2c on one port.
//!
//! Each accepted connection takes a permit from a semaphore of
//! `server.max_connections`, so a flood of idle connections waits in the
//! kernel's accept queue instead of exhausting file descriptors. HTTP/1 heads
//! must arrive within `header_read_timeout` (slowloris), which hyper also
//! applies to a keep-alive connection waiting for its next request, so idle
//! connections are closed after it too. hyper-util's h1/h2 detection reads
//! the first bytes with no deadline at all, so a connection that sends
//! nothing (or half an h2 preface) is closed here if its first request has
//! not arrived within `header_read_timeout`. On shutdown the listener is closed
//! first, then every connection is asked to finish its in-flight requests
//! and close, for at most `shutdown_grace`.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};

use crate::config::ServerConfig;
use crate::proxy::body::ProxyBody;
use crate::proxy::framing::{ConflictingFraming, ConnFraming, FramingGuard};
use crate::proxy::headers::ClientAddr;

/// Connection-level settings taken from `[server]`.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub shutdown_grace: Duration,
}

impl From<&ServerConfig> for ServeOptions {
    fn from(c: &ServerConfig) -> Self {
        Self {
            max_connections: c.max_connections,
            header_read_timeout: c.header_read_timeout,
            max_header_bytes: c.max_header_bytes,
            shutdown_grace: c.shutdown_grace,
        }
    }
}

fn builder(opts: &ServeOptions) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_read_timeout)
        // hyper's read buffer bounds the request head; a larger head gets 431.
        .max_buf_size(opts.max_header_bytes.max(8192))
        // Without it hyper reads ahead while every request is in flight, to
        // notice a client that hangs up, and so reserves a fresh 8 KiB read
        // buffer per request (the old one is still shared with the request's
        // zero-copy headers). With it, a request already taken runs to its
        // answer, which the chaos layer then still inspects; `request_timeout`
        // bounds it.
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
    S: tower::Service<Request<Incoming>, Response = Response<ProxyBody>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let builder = builder(&opts);
    let graceful = GracefulShutdown::new();
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
        let first_request = Arc::new(FirstRequest::default());
        let (stream, framing) = FramingGuard::new(stream, opts.max_header_bytes.max(8192));
        let svc = TowerToHyperService::new(WithPeer {
            inner: service.clone(),
            peer: ClientAddr::new(peer),
            first_request: first_request.clone(),
            framing,
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), svc)
            .into_owned();
        let conn = graceful.watch(conn);
        let first_deadline = opts.header_read_timeout;
        tokio::spawn(async move {
            tokio::pin!(conn);
            let result = tokio::select! {
                r = &mut conn => Some(r),
                () = first_request.seen.notified() => Some(conn.await),
                () = tokio::time::sleep(first_deadline) => None,
            };
            match result {
                Some(Err(e)) => {
                    tracing::debug!(error = %e, %peer, "client connection ended with an error");
                }
                Some(Ok(())) => {}
                None => tracing::debug!(%peer, "no request within header_read_timeout; closed"),
            }
            drop(permit);
        });
    }

    drop(listener);
    let open = graceful.count();
    if open > 0 {
        tracing::info!(connections = open, grace = ?opts.shutdown_grace, "draining connections");
    }
    if tokio::time::timeout(opts.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace period over; closing the remaining connections");
    }
}

/// Signals a connection's first request (once; later calls cost one load).
#[derive(Default)]
struct FirstRequest {
    flag: AtomicBool,
    seen: Notify,
}

/// Tags each request with the connection's peer address, and marks the one
/// whose head had conflicting framing.
#[derive(Clone)]
struct WithPeer<S> {
    inner: S,
    peer: ClientAddr,
    first_request: Arc<FirstRequest>,
    framing: Arc<ConnFraming>,
}

impl<S> tower::Service<Request<Incoming>> for WithPeer<S>
where
    S: tower::Service<Request<Incoming>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Incoming>) -> S::Future {
        req.extensions_mut().insert(self.peer.clone());
        if self.framing.next_request_conflicts() {
            req.extensions_mut().insert(ConflictingFraming);
        }
        if !self.first_request.flag.load(Ordering::Relaxed)
            && !self.first_request.flag.swap(true, Ordering::Relaxed)
        {
            self.first_request.seen.notify_one();
        }
        self.inner.call(req)
    }
}
