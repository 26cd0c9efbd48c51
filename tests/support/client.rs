//! The test client for exchanges that must work: [`super::http::Http`] with
//! every failure turned into a panic naming it; the exchanges tests repeat
//! (orders as the pizza service sends them, admin calls with a token,
//! `/status`, `/metrics`); chunked uploads.

use std::time::Duration;

use bytes::Bytes;
use factory_sidecar::sim::SAMPLE_ORDER;
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
        self.with_token(Method::GET, url, token).await
    }

    /// `method url` with `authorization: Bearer <token>` and no body: an
    /// admin call, or the service reading what is its own.
    pub async fn with_token(&self, method: Method, url: &str, token: &str) -> Answer {
        let auth = format!("Bearer {token}");
        self.request(method, url, &[("authorization", &auth)], "")
            .await
    }

    /// The admin `/status` document at `admin` (which must answer 200).
    pub async fn status(&self, admin: &str, token: &str) -> serde_json::Value {
        let res = self.get_with_token(&format!("{admin}/status"), token).await;
        assert_eq!(res.status, 200, "/status: {}", res.text());
        res.json()
    }

    /// The admin `/metrics` text at `admin`.
    pub async fn metrics(&self, admin: &str) -> String {
        self.get(&format!("{admin}/metrics")).await.text()
    }

    /// An order as the pizza service sends it: `POST {proxy}/api/order`
    /// with the sample order and its apiKey `key`.
    pub async fn order(&self, proxy: &str, key: &str) -> Answer {
        self.order_to(&format!("{proxy}/api/order"), key, &[]).await
    }

    /// The sample order to `url`, with the apiKey `key` and `extra` headers.
    pub async fn order_to(&self, url: &str, key: &str, extra: &[(&str, &str)]) -> Answer {
        let auth = format!("Bearer {key}");
        let mut headers = vec![
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
        ];
        headers.extend_from_slice(extra);
        self.request(Method::POST, url, &headers, SAMPLE_ORDER)
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
