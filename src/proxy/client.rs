//! The pooled client to the factory, and `Forward`, the innermost service.
//!
//! One keep-alive [`Pool`] (bounded idle connections: an unbounded pool
//! would keep every connection of a burst forever) over the
//! [`Dialer`] (TCP, then TLS from [`crate::tls`] with ALPN offering h2 and
//! http/1.1 so the factory picks). `Forward` takes an origin-form
//! request (`/api/order?x=1`) and sends it to `upstream.url`: every other
//! layer, and side requests such as a report-link GET, address the factory by
//! path only and can never be steered to another host.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::{HeaderValue, Response, Uri};

use crate::boxed::BoxError;
use crate::config::UpstreamConfig;
use crate::proxy::Outgoing;
use crate::proxy::body::ProxyBody;
use crate::proxy::connect::Dialer;
use crate::proxy::pool::{Pool, PoolOptions, SendFuture};
use crate::tls::TlsError;

/// A try got no answer from the factory: refused, reset, closed, TLS failure.
#[derive(Debug, thiserror::Error)]
#[error("{context}: {source}")]
pub struct UpstreamError {
    context: &'static str,
    #[source]
    source: BoxError,
}

impl UpstreamError {
    pub fn new(context: &'static str, source: impl Into<BoxError>) -> Self {
        Self {
            context,
            source: source.into(),
        }
    }
}

/// The client could not be built from the config.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("upstream.url cannot be used: {0}")]
    Upstream(String),
}

/// Sends origin-form requests to the factory. Cheap to clone (shares the pool).
#[derive(Clone)]
pub struct Forward {
    pool: Pool,
    body_read_timeout: Duration,
}

impl Forward {
    pub fn new(config: &UpstreamConfig) -> Result<Forward, ClientError> {
        let url = config.url();
        let dialer = Dialer::new(url, config.ca_file.as_deref(), config.connect_timeout)?;
        let origin = Uri::builder()
            .scheme(url.scheme().clone())
            .authority(url.authority().clone())
            .path_and_query("/")
            .build()
            .map_err(|e| ClientError::Upstream(e.to_string()))?;
        let host = HeaderValue::from_str(url.authority().as_str())
            .map_err(|e| ClientError::Upstream(e.to_string()))?;
        let pool = Pool::new(
            dialer,
            origin,
            host,
            url.base_path(),
            PoolOptions {
                max_idle: config.pool_max_idle_per_host,
                idle_timeout: config.pool_idle_timeout,
            },
        );
        Ok(Forward {
            pool,
            body_read_timeout: config.body_read_timeout,
        })
    }
}

impl tower::Service<Outgoing> for Forward {
    type Response = Response<ProxyBody>;
    type Error = BoxError;
    type Future = ForwardFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // The pool has no back-pressure to report; connections are made per call.
        Poll::Ready(Ok(()))
    }

    /// The pool writes the request under `upstream.url` (path and query
    /// only) as HTTP/1.1 or h2, whichever the connection speaks: an h2c
    /// request from the service does not force h2 on an HTTP/1 factory.
    fn call(&mut self, req: Outgoing) -> ForwardFuture {
        ForwardFuture {
            send: self.pool.send(req),
            read_timeout: Some(self.body_read_timeout),
        }
    }
}

/// The answer (or failure) of one forwarded request: the pool's exchange,
/// held inline (the one future every order makes; boxed, it cost an
/// allocation above glibc's per-thread cache).
pub struct ForwardFuture {
    send: SendFuture,
    read_timeout: Option<Duration>,
}

impl Future for ForwardFuture {
    type Output = Result<Response<ProxyBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        Poll::Ready(match ready!(Pin::new(&mut this.send).poll(cx)) {
            // Hop-by-hop headers are gone already (the pool drops them).
            Ok(res) => Ok(res.map(|b| ProxyBody::stream(b, this.read_timeout))),
            Err(e) => {
                let context = if e.is_connect() {
                    "cannot connect to the factory"
                } else {
                    "the factory connection failed before an answer"
                };
                Err(Box::new(UpstreamError::new(context, e)) as BoxError)
            }
        })
    }
}
