//! The proxy: listener, request preparation, the tower stack, the pooled client.

use std::sync::Arc;

use bytes::Bytes;
use http::Request;

pub mod body;
pub mod client;
pub mod collect;
pub mod conn;
pub mod connect;
pub mod framing;
pub mod h1;
pub mod headers;
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
