//! Assembles the tower stack, top to bottom as `lib.rs` draws it.

use std::convert::Infallible;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use tower::{Service, ServiceBuilder};

use crate::chaos::Chaos;
use crate::config::Config;
use crate::error::RescueLayer;
use crate::proxy::body::ProxyBody;
use crate::proxy::client::Forward;
use crate::proxy::collect::CollectBodyLayer;
use crate::proxy::headers::ForwardedHeadersLayer;

/// The whole request path as one service, cloned per connection.
pub fn build(
    config: &Config,
    forward: Forward,
    chaos: &Arc<Chaos>,
) -> impl Service<
    Request<Incoming>,
    Response = Response<ProxyBody>,
    Error = Infallible,
    Future: Send + 'static,
> + Clone
+ Send
+ 'static {
    ServiceBuilder::new()
        .layer(RescueLayer)
        .layer(CollectBodyLayer::new(config.server.max_body_bytes))
        .layer(ForwardedHeadersLayer)
        .layer(chaos.layer())
        .service(forward)
}
