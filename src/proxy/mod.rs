//! The proxy: listener, request preparation, the tower stack, the pooled client.
//!
//! - `server` (listener, hand-over to hyper) and `http1` (HTTP/1.1 spoken
//!   by the sidecar itself: the fast path, the guard, the factory client,
//!   and the wire rules they share);
//! - `collect`, `headers`, `stack` (and `buffered`, the part below body
//!   buffering as one trait): the request on its way down;
//! - `client` (`Forward`), `pool`, `connect`: the way to the factory;
//!   `body` the answer bodies, `recycle` header maps kept for reuse;
//!   `anchor` a timer that keeps the orders' timers from waking the runtime.

use std::sync::Arc;

use bytes::Bytes;
use http::Request;

/// `AsyncWrite` for a wrapper that only changes how a connection is read
/// (`server::Prefixed`, `http1::guard::FramingGuard`): every write goes
/// straight to its `inner` stream.
macro_rules! write_through {
    ($wrapper:ident) => {
        impl<T: ::tokio::io::AsyncWrite + Unpin> ::tokio::io::AsyncWrite for $wrapper<T> {
            fn poll_write(
                mut self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
                buf: &[u8],
            ) -> ::std::task::Poll<::std::io::Result<usize>> {
                ::std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
            }

            fn poll_write_vectored(
                mut self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
                bufs: &[::std::io::IoSlice<'_>],
            ) -> ::std::task::Poll<::std::io::Result<usize>> {
                ::std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                self.inner.is_write_vectored()
            }

            fn poll_flush(
                mut self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
            ) -> ::std::task::Poll<::std::io::Result<()>> {
                ::std::pin::Pin::new(&mut self.inner).poll_flush(cx)
            }

            fn poll_shutdown(
                mut self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
            ) -> ::std::task::Poll<::std::io::Result<()>> {
                ::std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
            }
        }
    };
}
pub(crate) use write_through;

pub mod anchor;
pub mod body;
pub mod buffered;
pub mod client;
pub mod collect;
pub mod connect;
pub mod headers;
pub mod http1;
pub mod pool;
pub mod recycle;
pub mod server;
pub mod stack;

/// A request on its way to the factory, as the layers below retry pass it:
/// shared, so the retry layer keeps a handle to replay it instead of a copy
/// (cloning the header map of every order, in case it fails, was the
/// largest single cost of retries). Nothing below retry changes a request
/// but the trace context, which clones it when it must (traces on).
pub type Outgoing = Arc<Request<Bytes>>;
