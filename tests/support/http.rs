//! A tiny HTTP client for end-to-end tests: hyper-util's client over
//! loopback, answers buffered whole, every request bounded in time so a
//! broken server fails a test instead of hanging it.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// No single test request should take longer than this.
pub const REQUEST_LIMIT: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
}

/// A whole answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON (panics with the body text when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Default for Http {
    fn default() -> Self {
        Self::new()
    }
}

impl Http {
    /// HTTP/1.1 with pooled keep-alive connections.
    pub fn new() -> Self {
        Http {
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// HTTP/1.1, a new connection for every request (none kept idle).
    pub fn fresh_connections() -> Self {
        Http {
            client: Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(0)
                .build_http(),
        }
    }

    /// h2c: HTTP/2 with prior knowledge over plain TCP.
    pub fn h2c() -> Self {
        Http {
            client: Client::builder(TokioExecutor::new())
                .http2_only(true)
                .build_http(),
        }
    }

    pub async fn send(&self, req: Request<Full<Bytes>>) -> Result<Reply, Error> {
        let exchange = async {
            let answer = self.client.request(req).await?;
            let (parts, body) = answer.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok::<_, Error>(Reply {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(REQUEST_LIMIT, exchange)
            .await
            .map_err(|_| Error::from("test request took longer than REQUEST_LIMIT"))?
    }

    pub async fn get(&self, url: &str) -> Result<Reply, Error> {
        self.send(request(Method::GET, url, None, None, "")?).await
    }

    pub async fn put_json(&self, url: &str, body: &str) -> Result<Reply, Error> {
        self.send(request(
            Method::PUT,
            url,
            None,
            Some("application/json"),
            body,
        )?)
        .await
    }

    /// POST a JSON body with an optional `authorization: Bearer <key>`.
    pub async fn post_json(
        &self,
        url: &str,
        key: Option<&str>,
        body: &str,
    ) -> Result<Reply, Error> {
        self.send(request(
            Method::POST,
            url,
            key,
            Some("application/json"),
            body,
        )?)
        .await
    }
}

/// Builds a request; `key` becomes `authorization: Bearer <key>`.
pub fn request(
    method: Method,
    url: &str,
    key: Option<&str>,
    content_type: Option<&str>,
    body: &str,
) -> Result<Request<Full<Bytes>>, Error> {
    let mut req = Request::builder().method(method).uri(url);
    if let Some(key) = key {
        req = req.header(header::AUTHORIZATION, format!("Bearer {key}"));
    }
    if let Some(ct) = content_type {
        req = req.header(header::CONTENT_TYPE, HeaderValue::from_str(ct)?);
    }
    Ok(req.body(Full::new(Bytes::copy_from_slice(body.as_bytes())))?)
}

/// Polls `cond` until it holds or `limit` passes (no fixed sleeps as
/// synchronisation: the wait ends as soon as the condition is true).
pub async fn eventually<F, Fut>(limit: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    super::wait_for(limit, || {
        let fut = cond();
        async move { fut.await.then_some(()) }
    })
    .await
    .is_some()
}
