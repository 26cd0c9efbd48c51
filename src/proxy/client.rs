//! The pooled client to the factory, and `Forward`, the innermost service.
//!
//! One keep-alive [`Pool`] (bounded idle connections: an unbounded pool
//! would keep every connection of a burst forever), rustls over aws-lc-rs
//! with the webpki roots plus `upstream.ca_file`, and ALPN offering h2 and
//! http/1.1 so the factory picks. `Forward` takes an origin-form
//! request (`/api/order?x=1`) and sends it to `upstream.url`: every other
//! layer, and side requests such as a report-link GET, address the factory by
//! path only and can never be steered to another host.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::{HeaderValue, Response, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::boxed::BoxError;
use crate::config::{UpstreamConfig, UpstreamUrl};
use crate::proxy::Outgoing;
use crate::proxy::body::ProxyBody;
use crate::proxy::connect::Dialer;
use crate::proxy::pool::{Pool, PoolOptions, SendFuture};

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
    #[error("cannot read upstream.ca_file {path}: {source}")]
    CaFile {
        path: String,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("upstream.ca_file {path} holds no certificate")]
    EmptyCaFile { path: String },
    #[error("invalid certificate in upstream.ca_file {path}: {source}")]
    BadCertificate {
        path: String,
        #[source]
        source: rustls::Error,
    },
    #[error("TLS set-up failed: {0}")]
    Tls(#[source] rustls::Error),
    #[error("upstream.url cannot be used: {0}")]
    Upstream(String),
}

/// Sends origin-form requests to the factory. Cheap to clone (shares the pool).
#[derive(Clone)]
pub struct Forward {
    pool: Pool,
    upstream: Arc<UpstreamUrl>,
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
            upstream: Arc::new(url.clone()),
            body_read_timeout: config.body_read_timeout,
        })
    }

    pub fn upstream(&self) -> &UpstreamUrl {
        &self.upstream
    }

    /// The connection pool (idle and opened counts, for tests).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }
}

/// The one TLS stack: an http-or-https connector with rustls (aws-lc-rs),
/// the webpki roots plus the PEM roots in `ca_file`, ALPN h2 and http/1.1.
/// Shared by `Forward` and the telemetry clients (OTLP, Grafana).
pub fn https_connector(
    ca_file: Option<&std::path::Path>,
    connect_timeout: Duration,
) -> Result<HttpsConnector<HttpConnector>, ClientError> {
    let tls = tls_config(ca_file)?;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_keepalive(Some(Duration::from_secs(60)));
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http))
}

pub(crate) fn tls_config(
    ca_file: Option<&std::path::Path>,
) -> Result<rustls::ClientConfig, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let shown = path.display().to_string();
        let mut added = 0usize;
        for cert in CertificateDer::pem_file_iter(path).map_err(|source| ClientError::CaFile {
            path: shown.clone(),
            source,
        })? {
            let cert = cert.map_err(|source| ClientError::CaFile {
                path: shown.clone(),
                source,
            })?;
            roots
                .add(cert)
                .map_err(|source| ClientError::BadCertificate {
                    path: shown.clone(),
                    source,
                })?;
            added += 1;
        }
        if added == 0 {
            return Err(ClientError::EmptyCaFile { path: shown });
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(ClientError::Tls)?
        .with_root_certificates(roots)
        .with_no_client_auth())
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
