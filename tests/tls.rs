//! TLS to the factory: a private CA given by `upstream.ca_file`, h2 chosen by
//! ALPN, and an unknown CA refused.

mod support;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Response};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use support::client::TestClient;
use support::{sidecar, temp_file};
use tokio::net::TcpListener;

struct TlsUpstream {
    url: String,
    ca_pem: String,
}

/// A TLS upstream on 127.0.0.1 ("localhost" in its certificate) that answers
/// with the HTTP version it was spoken to in.
async fn tls_upstream(alpn: &[&[u8]]) -> TlsUpstream {
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf_params = CertificateParams::new(vec!["localhost".to_owned()]).expect("leaf params");
    let leaf = leaf_params
        .signed_by(&leaf_key, &issuer)
        .expect("leaf cert");

    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .expect("server config");
    server.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        let body = format!(
                            "{{\"version\":\"{:?}\",\"path\":\"{}\"}}",
                            req.version(),
                            req.uri().path()
                        );
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    TlsUpstream {
        url: format!("https://localhost:{port}"),
        ca_pem: ca_cert.pem(),
    }
}

#[tokio::test]
async fn a_private_ca_from_ca_file_is_trusted_and_h2_is_negotiated() {
    let up = tls_upstream(&[b"h2", b"http/1.1"]).await;
    let ca = temp_file("ca.pem", &up.ca_pem);
    let sc = sidecar::start(sidecar::config(&up.url, |c| {
        c.upstream.ca_file = Some(ca);
        c.retry.max_attempts = 1;
    }))
    .await;
    let res = TestClient::http1()
        .request(Method::POST, &format!("{}/api/order", sc.url), &[], "{}")
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["version"], "HTTP/2.0", "h2 chosen by ALPN");
    assert_eq!(res.json()["path"], "/api/order");
}

#[tokio::test]
async fn http1_is_used_when_the_factory_offers_only_http1() {
    let up = tls_upstream(&[b"http/1.1"]).await;
    let ca = temp_file("ca.pem", &up.ca_pem);
    let sc = sidecar::start(sidecar::config(&up.url, |c| {
        c.upstream.ca_file = Some(ca);
        c.retry.max_attempts = 1;
    }))
    .await;
    let res = TestClient::h2c().get(&format!("{}/api/docs", sc.url)).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["version"], "HTTP/1.1");
}

#[tokio::test]
async fn an_unknown_ca_is_refused_with_502() {
    let up = tls_upstream(&[b"h2", b"http/1.1"]).await;
    let sc = sidecar::start(sidecar::config(&up.url, |c| c.retry.max_attempts = 1)).await;
    let res = TestClient::http1()
        .get(&format!("{}/api/docs", sc.url))
        .await;
    assert_eq!(res.status, 502);
    assert_eq!(res.header("x-sidecar-error"), Some("unreachable"));
}

#[tokio::test]
async fn a_ca_file_without_certificates_is_a_start_error() {
    let empty = temp_file("ca.pem", "not a certificate\n");
    let config = sidecar::config("https://localhost:1", |c| c.upstream.ca_file = Some(empty));
    let err = factory_sidecar::app::Sidecar::start(config)
        .await
        .err()
        .expect("start must fail");
    assert!(err.to_string().contains("holds no certificate"), "{err}");
}
