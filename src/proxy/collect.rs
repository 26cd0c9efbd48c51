//! Takes the request body in whole, up to `server.max_body_bytes`.
//!
//! Why buffer: a retry must be able to send the same body again, and the
//! factory's order bodies are small. A body declared or found larger than the
//! limit is refused with 413 before anything is forwarded; a body that cannot
//! be read (broken chunking, reset) is a 400, and so is a request the
//! connection's [`FramingGuard`](crate::proxy::framing) saw with both
//! Content-Length and Transfer-Encoding: its body is not read and nothing
//! is forwarded (hyper closes that connection after the answer).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Request;
use hyper::body::Incoming;
use tower::{Layer, Service};

use crate::error::BoxError;
use crate::proxy::body::{BodyError, buffer_request};
use crate::proxy::framing::ConflictingFraming;

/// Buffers request bodies, refusing those over `limit` bytes.
#[derive(Debug, Clone, Copy)]
pub struct CollectBodyLayer {
    limit: usize,
}

impl CollectBodyLayer {
    pub fn new(limit: usize) -> Self {
        Self { limit }
    }
}

impl<S> Layer<S> for CollectBodyLayer {
    type Service = CollectBody<S>;
    fn layer(&self, inner: S) -> Self::Service {
        CollectBody {
            inner,
            limit: self.limit,
        }
    }
}

/// See [`CollectBodyLayer`].
#[derive(Debug, Clone)]
pub struct CollectBody<S> {
    inner: S,
    limit: usize,
}

impl<S> Service<Request<Incoming>> for CollectBody<S>
where
    S: Service<Request<Bytes>, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        // The ready clone answers this call; the fresh clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let limit = self.limit;
        Box::pin(async move {
            if req.extensions().get::<ConflictingFraming>().is_some() {
                return Err(BodyError::ConflictingFraming.into());
            }
            let (parts, body) = req.into_parts();
            let bytes = buffer_request(body, limit).await?;
            inner.call(Request::from_parts(parts, bytes)).await
        })
    }
}
