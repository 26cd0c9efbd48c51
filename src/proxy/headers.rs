//! Header rewriting on the way to the factory, as a reverse proxy must:
//! hop-by-hop headers dropped (RFC 9110 section 7.6.1, plus any header the
//! `Connection` header names), `Host` left to the client to overwrite with
//! the upstream's, Content-Length checked against the buffered body, and
//! `x-forwarded-proto` set. `x-forwarded-for` is appended where the peer is
//! known, by the server as it takes the request in ([`ClientAddr::forward`]):
//! no per-request extension has to carry the address down the stack.
//! Everything else, W3C `traceparent` included, passes unchanged.

use std::net::SocketAddr;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Request;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use tower::{Layer, Service};

use crate::proxy::http1::common::{list, plain_length};

/// The peer address of a client connection, with its IP already written as
/// a header value: made once per connection, not formatted again for every
/// request's `x-forwarded-for`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAddr {
    pub addr: SocketAddr,
    ip: HeaderValue,
}

impl ClientAddr {
    pub fn new(addr: SocketAddr) -> Self {
        // `IpAddr`'s Display writes digits, hex, dots and colons only.
        let ip = HeaderValue::from_str(&addr.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        Self { addr, ip }
    }

    /// Appends this peer to the request's `x-forwarded-for`.
    pub fn forward(&self, headers: &mut HeaderMap) {
        append_forwarded_for(headers, self.ip.clone());
    }

    /// [`ClientAddr::forward`] for a request known to carry no
    /// `x-forwarded-for` yet (the first hop): no lookup.
    pub fn forward_first(&self, headers: &mut HeaderMap) {
        headers.append(X_FORWARDED_FOR, self.ip.clone());
    }
}

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// Headers that belong to one connection, never forwarded.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
];

/// Whether `name` belongs to one connection only (never forwarded).
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name)
}

/// Removes hop-by-hop headers, including those the `Connection` header lists.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Fast path: most messages carry none of them. One pass over the names
    // present (comparing standard names is an integer compare) costs less
    // than a hashed lookup per hop-by-hop name.
    let mut present = 0u16;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    // Names the Connection header lists. `keep-alive` and `close` (nearly
    // every client sends one) need no new name: `keep-alive` is in the list
    // below, `close` names no header.
    let mut named: Vec<HeaderName> = Vec::new();
    for value in headers.get_all(header::CONNECTION) {
        for token in list(value.as_bytes()) {
            if token.eq_ignore_ascii_case(b"keep-alive") || token.eq_ignore_ascii_case(b"close") {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(token) {
                named.push(name);
            }
        }
    }
    for name in &named {
        headers.remove(name);
    }
    // Only those present: each removal is a hashed lookup.
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
}

/// Prepares a buffered request for the factory.
pub fn prepare(req: &mut Request<Bytes>) {
    let headers = req.headers_mut();
    strip_hop_by_hop(headers);
    // `Host` is left in place: the client overwrites it with the
    // upstream's (no removal and re-insertion, which can grow the map).
    // The body is buffered, so its length is known: a Content-Length that
    // says so is kept (hyper would only write the same again), any other
    // is dropped and the client writes the true one.
    let len = req.body().len();
    let headers = req.headers_mut();
    if !content_length_is(headers, len) {
        headers.remove(header::CONTENT_LENGTH);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
}

/// Whether the message has exactly one Content-Length, and it says `len`.
fn content_length_is(headers: &HeaderMap, len: usize) -> bool {
    let mut values = headers.get_all(header::CONTENT_LENGTH).iter();
    let (Some(v), None) = (values.next(), values.next()) else {
        return false;
    };
    plain_length(v.as_bytes()) == Some(len as u64)
}

fn append_forwarded_for(headers: &mut HeaderMap, ip: HeaderValue) {
    let mut prior = headers.get_all(&X_FORWARDED_FOR).iter().peekable();
    if prior.peek().is_none() {
        // The common case: the first hop. No formatting, no copy.
        headers.insert(X_FORWARDED_FOR, ip);
        return;
    }
    let mut value = Vec::new();
    for v in prior {
        value.extend_from_slice(v.as_bytes());
        value.extend_from_slice(b", ");
    }
    value.extend_from_slice(ip.as_bytes());
    // Prior values were valid header values; so is their join.
    if let Ok(v) = HeaderValue::from_bytes(&value) {
        headers.insert(X_FORWARDED_FOR, v);
    }
}

/// Applies [`prepare`] to every request.
#[derive(Debug, Clone, Copy, Default)]
pub struct ForwardedHeadersLayer;

impl<S> Layer<S> for ForwardedHeadersLayer {
    type Service = ForwardedHeaders<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ForwardedHeaders { inner }
    }
}

/// See [`ForwardedHeadersLayer`].
#[derive(Debug, Clone)]
pub struct ForwardedHeaders<S> {
    inner: S,
}

impl<S: Service<Request<Bytes>>> Service<Request<Bytes>> for ForwardedHeaders<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Bytes>) -> S::Future {
        prepare(&mut req);
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> Request<Bytes> {
        let mut b = Request::builder().uri("/api/order");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let mut req = b.body(Bytes::new()).expect("request");
        ClientAddr::new("10.1.2.3:5555".parse().expect("addr")).forward(req.headers_mut());
        req
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_dropped() {
        let mut req = request(&[
            ("connection", "keep-alive, x-secret-hop"),
            ("keep-alive", "timeout=5"),
            ("x-secret-hop", "1"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic abc"),
            ("authorization", "Bearer vendor"),
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
            ("host", "127.0.0.1:8081"),
        ]);
        prepare(&mut req);
        let h = req.headers();
        for gone in [
            "connection",
            "keep-alive",
            "x-secret-hop",
            "te",
            "upgrade",
            "proxy-authorization",
        ] {
            assert!(!h.contains_key(gone), "{gone} should be dropped");
        }
        assert_eq!(h["authorization"], "Bearer vendor");
        assert_eq!(
            h["traceparent"],
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        );
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-for"], "10.1.2.3");
    }

    #[test]
    fn content_length_is_kept_only_when_it_matches_the_body() {
        let with = |cl: &[&str], body: &'static str| {
            let mut b = Request::builder().uri("/api/order");
            for v in cl {
                b = b.header("content-length", *v);
            }
            let mut req = b
                .body(Bytes::from_static(body.as_bytes()))
                .expect("request");
            prepare(&mut req);
            req.headers()
                .get_all("content-length")
                .iter()
                .map(|v| v.to_str().expect("ascii").to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(with(&["5"], "hello"), ["5"]);
        assert!(
            with(&["4"], "hello").is_empty(),
            "a wrong length is dropped"
        );
        assert!(with(&["5", "5"], "hello").is_empty());
        assert!(with(&["+5"], "hello").is_empty());
        assert!(with(&[], "hello").is_empty());
    }

    #[test]
    fn connection_tokens_keep_alive_and_close_name_no_header() {
        let mut req = request(&[
            ("connection", "Keep-Alive, close"),
            ("keep-alive", "timeout=5"),
            ("close", "a header really named close survives"),
            ("x-other", "1"),
        ]);
        prepare(&mut req);
        let h = req.headers();
        assert!(!h.contains_key("connection") && !h.contains_key("keep-alive"));
        assert_eq!(h["x-other"], "1");
        assert!(h.contains_key("close"));
    }

    #[test]
    fn forwarded_for_is_appended_to_prior_hops() {
        let mut req = request(&[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-for", "198.51.100.1"),
        ]);
        prepare(&mut req);
        assert_eq!(
            req.headers()["x-forwarded-for"],
            "203.0.113.7, 198.51.100.1, 10.1.2.3"
        );
        assert_eq!(req.headers().get_all("x-forwarded-for").iter().count(), 1);
    }
}
