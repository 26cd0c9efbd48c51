//! What the stack below body buffering is, as one trait: the server's stack
//! wraps it, the synthetic probe and the async-order queue's replays enter
//! it (so their orders meet what a diner's order meets). A named trait,
//! because the bounds are long and the stack, the probe and the queue all
//! need the same ones.

use bytes::Bytes;
use http::{Request, Response};
use tower::Service;

use crate::boxed::BoxError;
use crate::proxy::body::ProxyBody;

/// A cloneable service from a request with its body in hand to the
/// factory's answer (or the stack's own), with a future that can be spawned.
pub trait BufferedStack:
    Service<
        Request<Bytes>,
        Response = Response<ProxyBody>,
        Error = BoxError,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<S> BufferedStack for S where
    S: Service<
            Request<Bytes>,
            Response = Response<ProxyBody>,
            Error = BoxError,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}
