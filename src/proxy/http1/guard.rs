//! Refuses HTTP/1 requests framed by both Content-Length and
//! Transfer-Encoding with a 400, as nginx and Envoy do.
//!
//! Why here: hyper disarms such a request before any service sees it (it
//! drops the Content-Length, reads the chunked body, closes the connection
//! afterwards: RFC 9112 section 6.3), so nothing can be smuggled, but the
//! request would still be forwarded and the conflict is invisible above the
//! connection. [`FramingGuard`] wraps the client connection and follows the
//! bytes hyper reads with httparse (hyper's own parser): request heads, then
//! bodies skipped by their declared length or chunk sizes. When a head
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

use crate::proxy::headers::last_coding_is_chunked;

/// hyper's default limit on the number of request headers.
const MAX_HEADERS: usize = 100;

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
    /// Skipping this many body bytes.
    Body(u64),
    /// Waiting for a chunk-size line.
    ChunkSize,
    /// Skipping a chunk's data and its CRLF.
    ChunkData(u64),
    /// Skipping trailer lines up to the empty one.
    Trailers,
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
            match self.state {
                State::Off => return data.len(),
                State::Body(n) | State::ChunkData(n) => {
                    let k = n.min(rest.len() as u64);
                    at += k as usize; // k <= rest.len()
                    self.state = match (self.state, n - k) {
                        (State::Body(_), 0) => State::Head,
                        (State::Body(_), left) => State::Body(left),
                        (_, 0) => State::ChunkSize,
                        (_, left) => State::ChunkData(left),
                    };
                }
                State::Head => match self.head(rest) {
                    Some(used) => at += used,
                    None => return at,
                },
                State::ChunkSize | State::Trailers => {
                    let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
                        return at;
                    };
                    let line = &rest[..=nl];
                    at += nl + 1;
                    self.state = if self.state == State::Trailers {
                        if line == b"\r\n" || line == b"\n" {
                            State::Head
                        } else {
                            State::Trailers
                        }
                    } else {
                        match httparse::parse_chunk_size(line) {
                            Ok(httparse::Status::Complete((_, 0))) => State::Trailers,
                            Ok(httparse::Status::Complete((_, size))) => {
                                State::ChunkData(size.saturating_add(2))
                            }
                            _ => State::Off,
                        }
                    };
                }
            }
        }
        at
    }

    /// Parses one request head at the start of `data`: its length once
    /// complete, `None` while it is not.
    fn head(&mut self, data: &[u8]) -> Option<usize> {
        if let Some((used, length)) = plain_head(data) {
            self.heads += 1;
            self.state = if length == 0 {
                State::Head
            } else {
                State::Body(length)
            };
            return Some(used);
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        let used = match req.parse(data) {
            Ok(httparse::Status::Complete(used)) => used,
            Ok(httparse::Status::Partial) => return None,
            // hyper refuses it too (400/431) and closes the connection.
            Err(_) => {
                self.off();
                return Some(data.len());
            }
        };
        self.heads += 1;
        let (mut length, mut chunked, mut te, mut upgrade) = (None, false, false, false);
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                length = Some(parse_length(h.value));
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                te = true;
                chunked = last_coding_is_chunked(h.value);
            } else if h.name.eq_ignore_ascii_case("upgrade") {
                upgrade = true;
            }
        }
        self.state = match (te, length) {
            (true, Some(_)) => {
                self.shared.conflict_at.store(self.heads, Ordering::Relaxed);
                State::Off
            }
            // After an upgrade or CONNECT the bytes are no longer HTTP/1.
            _ if upgrade || req.method == Some("CONNECT") => State::Off,
            (true, None) if chunked => State::ChunkSize,
            // Not chunked last: hyper answers 400.
            (true, None) => State::Off,
            (false, Some(Some(0))) | (false, None) => State::Head,
            (false, Some(Some(n))) => State::Body(n),
            (false, Some(None)) => State::Off,
        };
        if self.state == State::Off {
            self.pending = Vec::new();
        }
        Some(used)
    }
}

/// The common head, read without a full parse: complete, CRLF lines only,
/// no folded line, at most one `Content-Length` of plain digits, and no
/// `Transfer-Encoding` or `Upgrade` header; not `CONNECT` and not the h2
/// preface. Its length and body length, or `None` to let httparse decide
/// (everything else, partial heads included). On the heads it accepts it
/// finds what httparse finds (a test checks), for a fraction of the cost.
fn plain_head(data: &[u8]) -> Option<(usize, u64)> {
    static END: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\r\n\r\n"));
    let end = END.find(data)? + 4;
    let head = &data[..end];
    // A method first (httparse also skips blank lines before one), and
    // neither the h2 preface nor CONNECT.
    if !head[0].is_ascii_uppercase() || head.starts_with(b"PRI ") || head.starts_with(b"CONNECT ") {
        return None;
    }
    let mut length = None;
    // Without the final CRLF every line, the request line first, ends in CRLF.
    let mut rest = &head[..end - 2];
    let mut request_line = true;
    while let Some(nl) = memchr::memchr(b'\n', rest) {
        // A bare LF: leave it to httparse.
        let line = rest[..nl].strip_suffix(b"\r")?;
        rest = &rest[nl + 1..];
        if std::mem::take(&mut request_line) {
            continue;
        }
        let first = *line.first()?;
        if first == b' ' || first == b'\t' {
            return None;
        }
        let named = |name: &[u8]| {
            line.len() > name.len()
                && line[..name.len()].eq_ignore_ascii_case(name)
                && line[name.len()] == b':'
        };
        match first | 0x20 {
            b'c' if named(b"content-length") => {
                let value = line[b"content-length:".len()..].trim_ascii();
                if length.is_some() || value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
                    return None;
                }
                length = Some(std::str::from_utf8(value).ok()?.parse::<u64>().ok()?);
            }
            b't' if named(b"transfer-encoding") => return None,
            b'u' if named(b"upgrade") => return None,
            _ => {}
        }
    }
    Some((end, length.unwrap_or(0)))
}

/// A Content-Length value as hyper reads it (`5` or `5, 5`), `None` when
/// hyper would refuse it.
fn parse_length(value: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(value).ok()?;
    let mut found = None;
    for part in text.split(',') {
        let n: u64 = part.trim().parse().ok()?;
        if found.is_some_and(|f| f != n) {
            return None;
        }
        found = Some(n);
    }
    found
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

    /// What the full parse finds for one head: (length, body length).
    fn parsed_head(data: &[u8]) -> Option<(usize, u64)> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        let Ok(httparse::Status::Complete(used)) = req.parse(data) else {
            return None;
        };
        let mut length = 0;
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                length = parse_length(h.value)?;
            }
        }
        Some((used, length))
    }

    #[test]
    fn the_plain_head_reading_agrees_with_httparse() {
        for head in GOOD.iter().chain([&BAD, &BAD_TE_FIRST]) {
            if let Some(quick) = plain_head(head) {
                assert_eq!(
                    Some(quick),
                    parsed_head(head),
                    "{}",
                    String::from_utf8_lossy(head)
                );
            }
        }
        assert_eq!(plain_head(GOOD[0]), Some((GOOD[0].len() - 5, 5)));
        assert_eq!(plain_head(GOOD[1]), Some((GOOD[1].len(), 0)));
        // Left to httparse: chunked, CL+TE, a list length, partial, bare LF, folds.
        for head in [GOOD[2], BAD, BAD_TE_FIRST, GOOD[3], &GOOD[0][..20]] {
            assert_eq!(plain_head(head), None);
        }
        assert_eq!(plain_head(b"GET / HTTP/1.1\nHost: x\n\n"), None);
        assert_eq!(plain_head(b"\r\n\r\nGET / HTTP/1.1\r\n\r\n"), None);
        assert_eq!(plain_head(b"GET / HTTP/1.1\r\n\nX: 1\r\n\r\n"), None);
        assert_eq!(plain_head(b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n"), None);
        assert_eq!(
            plain_head(b"GET / HTTP/1.1\r\nContent-Length: 1\r\ncontent-length: 1\r\n\r\n"),
            None
        );
    }

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

        /// On any head it takes, the plain reading finds what httparse finds.
        #[test]
        fn plain_heads_match_httparse(
            names in proptest::collection::vec(prop_oneof![
                Just("Host".to_owned()), Just("content-length".to_owned()), Just("Content-Length".to_owned()),
                Just("Transfer-Encoding".to_owned()), Just("X-Long-Name".to_owned()), "[A-Za-z-]{1,12}".prop_map(|s| s),
            ], 0..6),
            values in proptest::collection::vec("[ -~]{0,12}", 6),
            len in 0u64..100_000,
        ) {
            let mut head = String::from("POST /api/order HTTP/1.1\r\n");
            for (i, n) in names.iter().enumerate() {
                let v = if n.eq_ignore_ascii_case("content-length") { len.to_string() } else { values[i].clone() };
                head.push_str(&format!("{n}: {v}\r\n"));
            }
            head.push_str("\r\n");
            if let Some(quick) = plain_head(head.as_bytes()) {
                prop_assert_eq!(Some(quick), parsed_head(head.as_bytes()));
            }
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
