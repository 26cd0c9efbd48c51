//! The one TLS client set-up: rustls over aws-lc-rs, the webpki roots plus
//! any PEM roots an operator adds (`upstream.ca_file`).
//!
//! Why its own module: the factory client ([`crate::proxy::connect`]) and
//! the telemetry clients (OTLP export, Grafana annotations) all need the
//! same trust store, and the telemetry clients need nothing else of the
//! proxy. Here, both depend on it and neither on the other.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// A TLS client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
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
    Setup(#[source] rustls::Error),
    #[error("upstream.url cannot be used: not a TLS server name: {0}")]
    ServerName(String),
}

/// An http-or-https connector with [`client_config`], ALPN h2 and
/// http/1.1, for the hyper clients of telemetry (OTLP, Grafana).
pub fn https_connector(
    ca_file: Option<&Path>,
    connect_timeout: Duration,
) -> Result<HttpsConnector<HttpConnector>, TlsError> {
    let tls = client_config(ca_file)?;
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

/// The rustls client config: webpki roots plus the PEM roots in
/// `ca_file` (which must hold at least one), no client certificate.
pub fn client_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let shown = path.display().to_string();
        let mut added = 0usize;
        for cert in CertificateDer::pem_file_iter(path).map_err(|source| TlsError::CaFile {
            path: shown.clone(),
            source,
        })? {
            let cert = cert.map_err(|source| TlsError::CaFile {
                path: shown.clone(),
                source,
            })?;
            roots.add(cert).map_err(|source| TlsError::BadCertificate {
                path: shown.clone(),
                source,
            })?;
            added += 1;
        }
        if added == 0 {
            return Err(TlsError::EmptyCaFile { path: shown });
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Setup)?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
