//! A small HTTP client for tests (HTTP/1.1 or h2c prior knowledge).

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// An answer, body read whole.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Clone)]
pub struct TestClient {
    inner: Client<HttpConnector, Full<Bytes>>,
}

impl TestClient {
    pub fn http1() -> Self {
        Self {
            inner: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    pub fn h2c() -> Self {
        Self {
            inner: Client::builder(TokioExecutor::new())
                .http2_only(true)
                .build_http(),
        }
    }

    pub async fn send(&self, req: Request<Full<Bytes>>) -> Answer {
        let res = tokio::time::timeout(Duration::from_secs(30), self.inner.request(req))
            .await
            .expect("answer within 30s")
            .expect("request sent");
        let (parts, body) = res.into_parts();
        let body = body.collect().await.expect("body read").to_bytes();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    pub async fn get(&self, url: &str) -> Answer {
        self.send(Request::get(url).body(Full::default()).expect("request"))
            .await
    }

    pub async fn request(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Answer {
        let mut b = Request::builder().method(method).uri(url);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        self.send(
            b.body(Full::new(Bytes::from(body.to_owned())))
                .expect("request"),
        )
        .await
    }

    pub async fn get_with_token(&self, url: &str, token: &str) -> Answer {
        self.request(
            Method::GET,
            url,
            &[("authorization", &format!("Bearer {token}"))],
            "",
        )
        .await
    }
}

/// A request body sent as separate frames with no Content-Length, so the
/// client uses chunked transfer encoding.
pub struct ChunkedBody(std::collections::VecDeque<Bytes>);

impl ChunkedBody {
    pub fn new(chunks: impl IntoIterator<Item = Bytes>) -> Self {
        Self(chunks.into_iter().collect())
    }
}

impl http_body::Body for ChunkedBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.pop_front().map(|b| Ok(http_body::Frame::data(b))))
    }
}

/// Sends a chunked request, returning status and body.
pub async fn send_chunked(url: &str, chunks: Vec<Bytes>) -> (StatusCode, Bytes) {
    let client = Client::builder(TokioExecutor::new()).build_http::<ChunkedBody>();
    let req = Request::post(url)
        .body(ChunkedBody::new(chunks))
        .expect("request");
    let res = tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .expect("answer within 30s")
        .expect("request sent");
    let status = res.status();
    (
        status,
        res.into_body().collect().await.expect("body").to_bytes(),
    )
}
