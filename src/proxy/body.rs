//! Body types on the request path.
//!
//! Requests are buffered whole (bounded by `server.max_body_bytes`) so a retry
//! can replay them; responses stream through untouched unless the chaos
//! inspector had to read one (then it is a `Full`, or a read prefix followed by
//! the rest of the stream). One enum instead of a boxed body keeps the hot
//! path free of an allocation per response.
//!
//! A streamed factory body that pauses longer than `upstream.body_read_timeout`
//! between two frames is cut (nginx's `proxy_read_timeout`): a factory that
//! stalls after its headers must not hold a connection of the service forever.
//! The timer is only created when a read actually has to wait.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::boxed::BoxError;
use crate::proxy::pool::UpstreamBody;

/// A request body could not be taken in.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("malformed request body: {0}")]
    Malformed(#[source] hyper::Error),
    #[error("the request has both Content-Length and Transfer-Encoding")]
    ConflictingFraming,
}

/// A factory body paused longer than the read timeout.
#[derive(Debug, thiserror::Error)]
#[error("the factory stopped sending the answer body for {0:?}")]
pub struct BodyReadTimeout(pub Duration);

/// A response body: bytes we hold, or the upstream's stream (possibly after
/// a prefix the inspector already read).
#[derive(Debug)]
pub enum ProxyBody {
    Full(Option<Bytes>),
    Stream {
        prefix: Option<Bytes>,
        rest: UpstreamBody,
        idle: IdleTimer,
    },
}

/// Cuts a stream that pauses too long between frames.
#[derive(Debug)]
pub struct IdleTimer {
    timeout: Option<Duration>,
    sleep: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl IdleTimer {
    pub fn new(timeout: Option<Duration>) -> Self {
        Self {
            timeout,
            sleep: None,
            armed: false,
        }
    }

    /// Called when a read is pending: starts (or keeps) the countdown and
    /// reports whether it ran out.
    fn expired(&mut self, cx: &mut Context<'_>) -> Option<Duration> {
        let timeout = self.timeout?;
        if !self.armed {
            let deadline = Instant::now() + timeout;
            match &mut self.sleep {
                Some(sleep) => sleep.as_mut().reset(deadline),
                None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
            self.armed = true;
        }
        let sleep = self.sleep.as_mut()?;
        sleep.as_mut().poll(cx).is_ready().then_some(timeout)
    }
}

impl ProxyBody {
    pub fn empty() -> Self {
        ProxyBody::Full(None)
    }

    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        ProxyBody::Full((!bytes.is_empty()).then_some(bytes))
    }

    /// A factory body streamed through, cut after `read_timeout` without data.
    pub fn stream(rest: UpstreamBody, read_timeout: Option<Duration>) -> Self {
        ProxyBody::Stream {
            prefix: None,
            rest,
            idle: IdleTimer::new(read_timeout),
        }
    }

    /// The same stream with `prefix` (already read from it) sent first.
    pub fn with_prefix(self, bytes: Bytes) -> Self {
        match self {
            ProxyBody::Stream {
                prefix: None,
                rest,
                idle,
            } => ProxyBody::Stream {
                prefix: Some(bytes),
                rest,
                idle,
            },
            ProxyBody::Stream {
                prefix: Some(p),
                rest,
                idle,
            } => {
                let mut joined = Vec::with_capacity(bytes.len() + p.len());
                joined.extend_from_slice(&bytes);
                joined.extend_from_slice(&p);
                ProxyBody::Stream {
                    prefix: Some(joined.into()),
                    rest,
                    idle,
                }
            }
            ProxyBody::Full(None) => ProxyBody::full(bytes),
            ProxyBody::Full(Some(b)) => {
                let mut joined = Vec::with_capacity(bytes.len() + b.len());
                joined.extend_from_slice(&bytes);
                joined.extend_from_slice(&b);
                ProxyBody::full(joined)
            }
        }
    }
}

impl Default for ProxyBody {
    fn default() -> Self {
        Self::empty()
    }
}

impl From<Bytes> for ProxyBody {
    fn from(b: Bytes) -> Self {
        Self::full(b)
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Full(data) => Poll::Ready(data.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Stream { prefix, rest, idle } => {
                if let Some(b) = prefix.take() {
                    return Poll::Ready(Some(Ok(Frame::data(b))));
                }
                match Pin::new(rest).poll_frame(cx) {
                    Poll::Ready(frame) => {
                        idle.armed = false;
                        Poll::Ready(frame)
                    }
                    Poll::Pending => match idle.expired(cx) {
                        Some(t) => Poll::Ready(Some(Err(Box::new(BodyReadTimeout(t))))),
                        None => Poll::Pending,
                    },
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full(data) => data.is_none(),
            ProxyBody::Stream { prefix, rest, .. } => prefix.is_none() && rest.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |b| b.len() as u64))
            }
            ProxyBody::Stream { prefix, rest, .. } => {
                let extra = prefix.as_ref().map_or(0, |b| b.len() as u64);
                let inner = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(inner.lower() + extra);
                if let Some(upper) = inner.upper() {
                    hint.set_upper(upper + extra);
                }
                hint
            }
        }
    }
}
