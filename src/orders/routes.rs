//! Which requests are pizza orders: `POST` to one of `orders.paths`.
//!
//! Kept apart from the rest of [`crate::orders`] (a leaf with no imports
//! from the crate) because the deadline layer asks it for every request,
//! and the deadline layer must not depend on the breaker or the chaos
//! handle that the waiting room knows about.
//!
//! The path is compared exactly, query ignored, with one allowance: a
//! trailing slash (`/api/order/`), since the factory (Express) routes it to
//! the same handler and the chaos layer treats it as an order too.

use http::{Method, Request};

/// The order routes, ready to match requests against.
#[derive(Debug, Clone, Default)]
pub struct OrderRoutes {
    paths: Box<[Box<str>]>,
}

impl OrderRoutes {
    pub fn new<S: AsRef<str>>(paths: &[S]) -> OrderRoutes {
        OrderRoutes {
            paths: paths
                .iter()
                .map(|p| p.as_ref().trim_end_matches('/').into())
                .collect(),
        }
    }

    /// Whether `req` places an order.
    pub fn matches<B>(&self, req: &Request<B>) -> bool {
        if req.method() != Method::POST {
            return false;
        }
        let path = req.uri().path();
        let path = path.strip_suffix('/').unwrap_or(path);
        self.paths.iter().any(|p| **p == *path)
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: Method, uri: &str) -> Request<()> {
        let mut r = Request::new(());
        *r.method_mut() = method;
        *r.uri_mut() = uri.parse().expect("uri");
        r
    }

    #[test]
    fn posts_to_listed_paths_are_orders() {
        let routes = OrderRoutes::new(&["/api/order"]);
        assert!(routes.matches(&req(Method::POST, "/api/order")));
        assert!(routes.matches(&req(Method::POST, "/api/order/")));
        assert!(routes.matches(&req(Method::POST, "/api/order?x=1")));
        assert!(!routes.matches(&req(Method::GET, "/api/order")));
        assert!(!routes.matches(&req(Method::POST, "/api/order/verify")));
        assert!(!routes.matches(&req(Method::POST, "/api/orders")));
        assert!(!OrderRoutes::new::<&str>(&[]).matches(&req(Method::POST, "/api/order")));
    }
}
