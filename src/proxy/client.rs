//! The pooled client to the factory, and `Forward`, the innermost service.
//!
//! One hyper-util client with keep-alive pooling (bounded idle connections:
//! the default would keep every connection of a burst forever), rustls over
//! aws-lc-rs with the webpki roots plus `upstream.ca_file`, and ALPN offering
//! h2 and http/1.1 so the factory picks. `Forward` takes an origin-form
//! request (`/api/order?x=1`) and sends it to `upstream.url`: every other
//! layer, and side requests such as a report-link GET, address the factory by
//! path only and can never be steered to another host.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Version};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::config::{UpstreamConfig, UpstreamUrl};
use crate::error::BoxError;
use crate::proxy::body::ProxyBody;
use crate::proxy::headers;

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
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Sends origin-form requests to the factory. Cheap to clone (shares the pool).
#[derive(Clone)]
pub struct Forward {
    client: HttpClient,
    upstream: Arc<UpstreamUrl>,
    body_read_timeout: Duration,
}

impl Forward {
    pub fn new(config: &UpstreamConfig) -> Result<Forward, ClientError> {
        let connector = https_connector(config.ca_file.as_deref(), config.connect_timeout)?;
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(config.pool_idle_timeout)
            .pool_max_idle_per_host(config.pool_max_idle_per_host)
            .build(connector);
        Ok(Forward {
            client,
            upstream: Arc::new(config.url().clone()),
            body_read_timeout: config.body_read_timeout,
        })
    }

    pub fn upstream(&self) -> &UpstreamUrl {
        &self.upstream
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

fn tls_config(ca_file: Option<&std::path::Path>) -> Result<rustls::ClientConfig, ClientError> {
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

impl tower::Service<Request<Bytes>> for Forward {
    type Response = Response<ProxyBody>;
    type Error = BoxError;
    type Future = ForwardFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // The pool has no back-pressure to report; connections are made per call.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Bytes>) -> ForwardFuture {
        let (mut parts, body) = req.into_parts();
        let pq = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        match self.upstream.join(pq) {
            Ok(uri) => parts.uri = uri,
            Err(e) => return ForwardFuture::failed(e.into()),
        }
        // The client picks HTTP/1.1 or h2 per connection (ALPN); an h2c
        // request from the service must not force h2 on an HTTP/1 factory.
        parts.version = Version::HTTP_11;
        let req = Request::from_parts(parts, Full::new(body));
        ForwardFuture::Sending {
            fut: self.client.request(req),
            read_timeout: self.body_read_timeout,
        }
    }
}

/// The answer (or failure) of one forwarded request.
pub enum ForwardFuture {
    Sending {
        fut: hyper_util::client::legacy::ResponseFuture,
        read_timeout: Duration,
    },
    Failed(Option<BoxError>),
}

impl ForwardFuture {
    fn failed(e: BoxError) -> Self {
        ForwardFuture::Failed(Some(e))
    }
}

impl Future for ForwardFuture {
    type Output = Result<Response<ProxyBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            ForwardFuture::Sending { fut, read_timeout } => match Pin::new(fut).poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Ok(res)) => {
                    let timeout = Some(*read_timeout);
                    let mut res = res.map(|b| ProxyBody::stream(b, timeout));
                    headers::strip_hop_by_hop(res.headers_mut());
                    Poll::Ready(Ok(res))
                }
                Poll::Ready(Err(e)) => {
                    let context = if e.is_connect() {
                        "cannot connect to the factory"
                    } else {
                        "the factory connection failed before an answer"
                    };
                    Poll::Ready(Err(Box::new(UpstreamError::new(context, e))))
                }
            },
            ForwardFuture::Failed(e) => Poll::Ready(Err(e
                .take()
                .unwrap_or_else(|| "forward future polled after completion".into()))),
        }
    }
}
