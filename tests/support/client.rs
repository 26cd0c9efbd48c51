//! The test client for exchanges that must work: [`super::http::Http`] with
//! every failure turned into a panic naming it, plus chunked uploads.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::http::Http;
pub use super::http::Reply as Answer;

#[derive(Clone)]
pub struct TestClient(Http);

impl TestClient {
    pub fn http1() -> Self {
        Self(Http::new())
    }

    pub fn h2c() -> Self {
        Self(Http::h2c())
    }

    pub async fn send(&self, req: Request<Full<Bytes>>) -> Answer {
        let what = format!("{} {}", req.method(), req.uri());
        self.0
            .send(req)
            .await
            .unwrap_or_else(|e| panic!("{what} failed: {e}"))
    }

    pub async fn get(&self, url: &str) -> Answer {
        self.request(Method::GET, url, &[], "").await
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
        let auth = format!("Bearer {token}");
        self.request(Method::GET, url, &[("authorization", &auth)], "")
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
