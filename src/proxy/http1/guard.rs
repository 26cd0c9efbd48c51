//! Refuses HTTP/1 requests framed by both Content-Length and
//! Transfer-Encoding with a 400, as nginx and Envoy do.
//!
//! Why here: hyper disarms such a request before any service sees it (it
//! drops the Content-Length, reads the chunked body, closes the connection
//! afterwards: RFC 9112 section 6.3), so nothing can be smuggled, but the
//! request would still be forwarded and the conflict is invisible above the
//! connection. [`FramingGuard`] wraps the client connection and follows the
//! bytes hyper reads with httparse (hyper's own parser) and the rules of
//! [`super::common`]: request heads, then bodies skipped by their declared
//! length or with the [`super::chunked`] stepper the client decodes with. When a head
//! carries both headers it records that request's number on the connection;
//! the server tags that request with [`ConflictingFraming`] and the body
//! layer answers 400 without forwarding anything. hyper closes the
//! connection after it, so one conflict per connection is all there is.
//!
//! The guard only watches: it never changes a byte. Anything it does not
//! follow (h2, an upgrade, a head hyper will refuse anyway) turns it off for
//! the rest of the connection, which costs nothing from then on.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

use super::chunked::Step;
use super::common::{self, Framing, FramingHeaders};

/// Request extension: this request's head had both Content-Length and
/// Transfer-Encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConflictingFraming;

/// What the guard learned about one connection, shared with its service.
#[derive(Debug, Default)]
pub struct ConnFraming {
    /// 1-based number of the first request with conflicting framing; 0: none.
    conflict_at: AtomicU64,
    /// Requests the service has been called with on this connection.
    served: AtomicU64,
}

impl ConnFraming {
    /// Called once per request, in order: whether this one was in conflict.
    pub fn next_request_conflicts(&self) -> bool {
        let n = self.served.fetch_add(1, Ordering::Relaxed) + 1;
        self.conflict_at.load(Ordering::Relaxed) == n
    }
}

/// Where the guard is in the request stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for (the rest of) a request head.
    Head,
    /// Skipping a request body: what of it is left.
    Body(Framing),
    /// Not following this connection any more.
    Off,
}

/// The client connection, watched; see the module docs.
#[derive(Debug)]
pub struct FramingGuard<T> {
    inner: T,
    state: State,
    /// A head or line split across reads (bounded by `limit`).
    pending: Vec<u8>,
    limit: usize,
    heads: u64,
    shared: Arc<ConnFraming>,
}

impl<T> FramingGuard<T> {
    /// Watches `inner`; heads longer than `max_head_bytes` are left to hyper.
    pub fn new(inner: T, max_head_bytes: usize) -> (Self, Arc<ConnFraming>) {
        let shared = Arc::new(ConnFraming::default());
        let guard = FramingGuard {
            inner,
            state: State::Head,
            pending: Vec::new(),
            limit: max_head_bytes,
            heads: 0,
            shared: Arc::clone(&shared),
        };
        (guard, shared)
    }

    /// Follows bytes just read.
    fn scan(&mut self, data: &[u8]) {
        if self.state == State::Off || data.is_empty() {
            return;
        }
        if self.pending.is_empty() {
            let used = self.advance(data);
            self.keep(&data[used..]);
        } else {
            let mut joined = std::mem::take(&mut self.pending);
            joined.extend_from_slice(data);
            let used = self.advance(&joined);
            self.keep(&joined[used..]);
        }
    }

    /// Keeps an unfinished head or line for the next read.
    fn keep(&mut self, rest: &[u8]) {
        if rest.is_empty() || self.state == State::Off {
            return;
        }
        if rest.len() > self.limit {
            // hyper answers 431 (or closes) for a head this long.
            self.off();
            return;
        }
        self.pending.extend_from_slice(rest);
    }

    fn off(&mut self) {
        self.state = State::Off;
        self.pending = Vec::new();
    }

    /// Consumes what it can of `data`; returns how much.
    fn advance(&mut self, data: &[u8]) -> usize {
        let mut at = 0;
        while at < data.len() {
            let rest = &data[at..];
            match &mut self.state {
                State::Off => return data.len(),
                State::Head => match self.head(rest) {
                    Some(used) => at += used,
                    None => return at,
                },
                State::Body(Framing::Length(n)) => {
                    let k = (*n).min(rest.len() as u64);
                    at += k as usize; // k <= rest.len()
                    *n -= k;
                    if *n == 0 {
                        self.state = State::Head;
                    }
                }
                State::Body(Framing::Chunked(chunk)) => match chunk.step(rest) {
                    Ok(Step::Framing(n)) => at += n,
                    Ok(Step::Data(n)) => {
                        at += n;
                        chunk.took(n);
                    }
                    Ok(Step::More) => return at,
                    Ok(Step::End(n)) => {
                        at += n;
                        self.state = State::Head;
                    }
                    // hyper refuses the body too, and closes the connection.
                    Err(_) => {
                        self.off();
                        return data.len();
                    }
                },
                // Requests are never delimited by the close.
                State::Body(Framing::None | Framing::Close) => self.state = State::Head,
            }
        }
        at
    }

    /// Parses one request head at the start of `data`: its length once
    /// complete, `None` while it is not.
    fn head(&mut self, data: &[u8]) -> Option<usize> {
        let parsed = common::parse_request(data, |req, used| {
            let mut framing = FramingHeaders::default();
            for h in req.headers.iter() {
                framing.read(h.name.as_bytes(), h.value);
            }
            (used, framing, req.method == Some("CONNECT"))
        });
        let (used, framing, connect) = match parsed {
            Ok(Some(head)) => head,
            Ok(None) => return None,
            // hyper refuses it too (400/431) and closes the connection.
            Err(_) => {
                self.off();
                return Some(data.len());
            }
        };
        self.heads += 1;
        self.state = if framing.conflicting() {
            self.shared.conflict_at.store(self.heads, Ordering::Relaxed);
            State::Off
        } else if framing.upgrade || connect {
            // After an upgrade or CONNECT the bytes are no longer HTTP/1.
            State::Off
        } else {
            match framing.request_body() {
                Some(Framing::None) => State::Head,
                Some(body) => State::Body(body),
                // hyper answers 400 and closes the connection.
                None => State::Off,
            }
        };
        if self.state == State::Off {
            self.pending = Vec::new();
        }
        Some(used)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for FramingGuard<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let me = &mut *self;
            me.scan(&buf.filled()[before..]);
        }
        polled
    }
}

crate::proxy::write_through!(FramingGuard);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GOOD: &[&[u8]] = &[
        b"POST /api/order HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
        b"GET /api/docs HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /api/order HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n3\r\n\r\n\n\r\n0\r\nX-Trailer: 1\r\n\r\n",
        b"PUT /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\nabc",
        b"POST /b HTTP/1.1\r\nHost: x\r\ntransfer-encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        // A body that looks like a conflicting head must stay a body.
        b"POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 65\r\n\r\nGET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
    ];
    const BAD: &[u8] =
        b"POST /api/order HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    const BAD_TE_FIRST: &[u8] =
        b"POST /api/order HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\nHost: x\r\n\r\n0\r\n\r\n";

    /// Feeds `bytes` in reads of the given sizes.
    fn feed_raw(bytes: &[u8], cuts: &[usize]) -> (FramingGuard<()>, Arc<ConnFraming>) {
        let (mut g, shared) = FramingGuard::new((), 16 * 1024);
        let mut rest = bytes;
        for &c in cuts {
            let c = c.min(rest.len());
            g.scan(&rest[..c]);
            rest = &rest[c..];
        }
        g.scan(rest);
        (g, shared)
    }

    /// Feeds whole requests; returns the conflict number and the state.
    fn feed(bytes: &[u8], cuts: &[usize]) -> (u64, State) {
        let (g, shared) = feed_raw(bytes, cuts);
        if g.state == State::Head {
            assert!(g.pending.is_empty(), "every request consumed whole");
        }
        (shared.conflict_at.load(Ordering::Relaxed), g.state)
    }

    #[test]
    fn legitimate_requests_in_a_row_raise_nothing() {
        let all: Vec<u8> = GOOD.concat();
        assert_eq!(feed(&all, &[]), (0, State::Head));
        let mut one_by_one = vec![1; all.len()];
        one_by_one.push(0);
        assert_eq!(feed(&all, &one_by_one), (0, State::Head));
    }

    #[test]
    fn the_conflicting_request_is_numbered() {
        assert_eq!(feed(BAD, &[]).0, 1);
        assert_eq!(feed(BAD_TE_FIRST, &[]).0, 1);
        let stream = [GOOD[0], GOOD[2], BAD, GOOD[1]].concat();
        let (at, state) = feed(&stream, &[]);
        assert_eq!((at, state), (3, State::Off));
    }

    #[test]
    fn the_service_side_matches_the_number() {
        let (mut g, shared) = FramingGuard::new((), 1024);
        g.scan(&[GOOD[1], BAD].concat());
        assert!(!shared.next_request_conflicts());
        assert!(shared.next_request_conflicts());
    }

    #[test]
    fn what_it_cannot_follow_turns_it_off() {
        assert_eq!(
            feed(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", &[]),
            (0, State::Off)
        );
        assert_eq!(
            feed(
                b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n",
                &[]
            ),
            (0, State::Off)
        );
        for refused in [
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"[..],
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: +4\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n",
        ] {
            let shown = String::from_utf8_lossy(refused);
            assert_eq!(feed(refused, &[]), (0, State::Off), "{shown}");
        }
        let long = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(2048));
        let (mut g, _) = FramingGuard::new((), 1024);
        g.scan(long.as_bytes());
        assert_eq!(g.state, State::Off);
        assert!(g.pending.is_empty());
    }

    proptest! {
        /// However the stream is cut into reads, the guard finds the same thing.
        #[test]
        fn reads_can_be_cut_anywhere(cuts in proptest::collection::vec(1usize..40, 0..64), bad_at in 0usize..7) {
            let mut parts: Vec<&[u8]> = GOOD.to_vec();
            parts.insert(bad_at.min(parts.len()), BAD);
            let stream = parts.concat();
            let expected = (bad_at.min(GOOD.len()) + 1) as u64;
            prop_assert_eq!(feed(&stream, &cuts), (expected, State::Off));
            prop_assert_eq!(feed(&GOOD.concat(), &cuts), (0, State::Head));
        }

        /// Arbitrary bytes never panic.
        #[test]
        fn garbage_is_harmless(bytes in proptest::collection::vec(any::<u8>(), 0..512), cuts in proptest::collection::vec(1usize..64, 0..16)) {
            // Garbage may end in an unfinished head: only "no panic" is asserted.
            let (g, _) = feed_raw(&bytes, &cuts);
            prop_assert!(g.pending.len() <= 16 * 1024);
        }
    }
}
