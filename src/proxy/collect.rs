//! Takes the request body in whole, up to `server.max_body_bytes`.
//!
//! Why buffer: a retry must be able to send the same body again, and the
//! factory's order bodies are small. A body declared or found larger than the
//! limit is refused with 413 before anything is forwarded; a body that cannot
//! be read (broken chunking, reset) is a 400, and so is a request the
//! connection's [`FramingGuard`](crate::proxy::http1::guard) saw with both
//! Content-Length and Transfer-Encoding: its body is not read and nothing
//! is forwarded (hyper closes that connection after the answer).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http::Request;
use http_body::Body;
use hyper::body::Incoming;
use tower::{Layer, Service};

use crate::boxed::BoxError;
use crate::proxy::body::BodyError;
use crate::proxy::http1::guard::ConflictingFraming;

/// A request body as the server hands it over: already read whole by the
/// HTTP/1.1 fast path ([`crate::proxy::http1::server`]), or still arriving through
/// hyper (h2c, chunked bodies, and the other requests the fast path leaves
/// to hyper).
#[derive(Debug)]
pub enum RequestBody {
    Buffered(Bytes),
    Streaming(Incoming),
}

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

impl<S> Service<Request<RequestBody>> for CollectBody<S>
where
    S: Service<Request<Bytes>, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = CollectFuture<S>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<RequestBody>) -> Self::Future {
        if req.extensions().get::<ConflictingFraming>().is_some() {
            return CollectFuture::Failed {
                error: Some(BodyError::ConflictingFraming.into()),
            };
        }
        let (parts, body) = req.into_parts();
        let body = match body {
            RequestBody::Buffered(bytes) if bytes.len() > self.limit => {
                return CollectFuture::Failed {
                    error: Some(BodyError::TooLarge { limit: self.limit }.into()),
                };
            }
            RequestBody::Buffered(bytes) => {
                let fut = self.inner.call(Request::from_parts(parts, bytes));
                return CollectFuture::Calling { fut };
            }
            RequestBody::Streaming(body) => body,
        };
        if body.size_hint().lower() > self.limit as u64 {
            return CollectFuture::Failed {
                error: Some(BodyError::TooLarge { limit: self.limit }.into()),
            };
        }
        // The ready clone answers this call; the fresh clone waits for the next.
        let clone = self.inner.clone();
        CollectFuture::Reading {
            inner: Some(std::mem::replace(&mut self.inner, clone)),
            parts: Some(parts),
            body,
            read: Frames::default(),
            limit: self.limit,
        }
    }
}

/// The frames read so far: one frame is kept as it came (no copy), more
/// are joined.
#[derive(Debug, Default)]
struct Frames {
    first: Option<Bytes>,
    joined: Option<BytesMut>,
    len: usize,
}

impl Frames {
    fn push(&mut self, data: Bytes) {
        self.len = self.len.saturating_add(data.len());
        match (&mut self.first, &mut self.joined) {
            (None, None) => self.first = Some(data),
            (Some(first), None) => {
                let mut buf = BytesMut::with_capacity(self.len);
                buf.extend_from_slice(first);
                buf.extend_from_slice(&data);
                self.first = None;
                self.joined = Some(buf);
            }
            (_, Some(buf)) => buf.extend_from_slice(&data),
        }
    }

    fn take(&mut self) -> Bytes {
        match (self.first.take(), self.joined.take()) {
            (Some(first), _) => first,
            (None, Some(buf)) => buf.freeze(),
            (None, None) => Bytes::new(),
        }
    }
}

pin_project_lite::pin_project! {
    /// Reads the body (no allocation for a one-frame body), then calls the
    /// stack below with it.
    #[project = CollectProj]
    pub enum CollectFuture<S: Service<Request<Bytes>>> {
        Reading {
            inner: Option<S>,
            parts: Option<http::request::Parts>,
            body: Incoming,
            read: Frames,
            limit: usize,
        },
        Calling { #[pin] fut: S::Future },
        Failed { error: Option<BoxError> },
    }
}

impl<S> Future for CollectFuture<S>
where
    S: Service<Request<Bytes>, Error = BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let (mut inner, parts, bytes) = match self.as_mut().project() {
                CollectProj::Calling { fut } => return fut.poll(cx),
                CollectProj::Failed { error } => {
                    return Poll::Ready(Err(error
                        .take()
                        .unwrap_or_else(|| "request body future polled after it ended".into())));
                }
                CollectProj::Reading {
                    inner,
                    parts,
                    body,
                    read,
                    limit,
                } => {
                    match ready!(Pin::new(&mut *body).poll_frame(cx)) {
                        Some(Ok(frame)) => {
                            let Ok(data) = frame.into_data() else {
                                continue; // trailers
                            };
                            if read.len.saturating_add(data.len()) > *limit {
                                // Refused before the rest is read; nothing forwarded.
                                let e = BodyError::TooLarge { limit: *limit };
                                self.set(CollectFuture::Failed {
                                    error: Some(e.into()),
                                });
                            } else {
                                read.push(data);
                            }
                            continue;
                        }
                        Some(Err(e)) => {
                            let e = BodyError::Malformed(e);
                            self.set(CollectFuture::Failed {
                                error: Some(e.into()),
                            });
                            continue;
                        }
                        None => match (inner.take(), parts.take()) {
                            (Some(inner), Some(parts)) => (inner, parts, read.take()),
                            _ => {
                                let e = "request body future polled after it ended".into();
                                self.set(CollectFuture::Failed { error: Some(e) });
                                continue;
                            }
                        },
                    }
                }
            };
            let fut = inner.call(Request::from_parts(parts, bytes));
            self.set(CollectFuture::Calling { fut });
        }
    }
}
