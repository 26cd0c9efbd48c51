//! One client connection on the HTTP/1.1 fast path.
//!
//! Why not hyper's server for everything: the pizza service sends plain
//! HTTP/1.1 orders, and on that path hyper's server with the glue around it
//! (its dispatcher, hyper-util's protocol detection and graceful watcher,
//! the service adapters, a second parse of every head to catch conflicting
//! framing) cost about as many instructions as the whole proxy work of
//! nginx (benches/README.md). Here such a request is read with httparse
//! (hyper's own parser) into an `http::Request` whose head and body are
//! slices of one read buffer, goes through the same tower stack, and its
//! answer leaves in one write. One task, one read buffer and one write
//! buffer per connection, kept across requests.
//!
//! The fast path takes only what it fully understands: a complete HTTP/1.x
//! head with at most one Content-Length of plain digits, no
//! Transfer-Encoding, Expect or Upgrade, not CONNECT, a body within
//! `server.max_body_bytes`, valid for the `http` types. Anything else (h2c,
//! chunked or oversized bodies, conflicting framing, heads that are too
//! large or malformed) is handed to hyper with the bytes read so far
//! ([`Served::Handover`]), and hyper serves the rest of the connection as it
//! always did, with its own 400/413/431 answers. The wire rules it applies
//! are [`super::common`]'s; `tests/differential.rs` sends one table of
//! requests to it and to hyper and compares what each did.
//!
//! Limits: a request head must be complete within
//! `server.header_read_timeout` of the moment the server started waiting
//! for it (an idle keep-alive connection too, as with hyper), and a body may
//! pause at most that long between reads (nginx's `client_body_timeout`).
//! The timer is one `Sleep` per connection, re-armed only when it fires
//! before the current deadline, not once per request. Draining: an idle
//! connection closes at once; a request in flight is answered, with
//! `connection: close`.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, TRANSFER_ENCODING};
use http::{Method, Request, Response, Uri, Version};
use http_body::Body;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};
use tower::Service;

use super::chunked::Chunk;
use super::common::{
    self, Framing, FramingHeaders, Growth, Length, Span, push_decimal, push_header, push_hex,
};
use crate::proxy::body::ProxyBody;
use crate::proxy::collect::RequestBody;
use crate::proxy::headers::ClientAddr;
use crate::proxy::recycle;

/// The read buffer: 4 KiB to start with (an order's head and body), grown
/// by as much when less than 512 bytes are free.
const GROWTH: Growth = Growth {
    min_spare: 512,
    chunk: 4 * 1024,
};
/// Answer body bytes gathered before the head is written: an answer that
/// ends within this leaves in one write with its exact length.
const GATHER: usize = 64 * 1024;

/// Limits from `[server]`.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_body_bytes: usize,
}

/// Tells every fast-path connection that the server is draining.
#[derive(Debug, Default)]
pub struct Drain {
    draining: AtomicBool,
    notify: Notify,
}

impl Drain {
    /// Idle connections close now; busy ones after their answer.
    pub fn start(&self) {
        // Release: a connection that sees the flag sees everything before it.
        self.draining.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}

/// How a connection left the fast path.
#[derive(Debug)]
pub enum Served {
    /// Finished: closed by either side, timed out, or drained.
    Done,
    /// Not for the fast path from here on: hyper serves the rest of the
    /// connection, starting with these bytes already read from it.
    Handover(TcpStream, Bytes),
}

/// Per-connection buffers, kept across requests for their capacity.
struct Scratch {
    /// Bytes read and not yet consumed; requests are split off it without
    /// copying, and the allocation is reclaimed once they are dropped.
    buf: BytesMut,
    /// The answer being written.
    out: Vec<u8>,
    /// Answer body frames gathered before the head is written.
    frames: Vec<Bytes>,
    /// Header positions while a head is parsed.
    spans: Vec<Span>,
}

/// Serves `stream` until it closes or must be handed to hyper.
pub async fn serve<S>(
    mut stream: TcpStream,
    svc: &mut S,
    peer: &ClientAddr,
    limits: &ConnLimits,
    drain: &Drain,
) -> Served
where
    S: Service<Request<RequestBody>, Response = Response<ProxyBody>, Error = Infallible>,
{
    let mut scratch = Scratch {
        buf: BytesMut::new(),
        out: Vec::new(),
        frames: Vec::new(),
        spans: Vec::new(),
    };
    let drained = drain.notify.notified();
    tokio::pin!(drained);
    let mut waiter = Waiter {
        timer: None,
        drained,
        drain_seen: false,
        timeout: limits.header_read_timeout,
    };
    loop {
        // The head: parsed from what is buffered, read until complete.
        let mut since = None;
        let plain = loop {
            match scan(&scratch.buf, &mut scratch.spans, limits) {
                Scan::Plain(plain) => break plain,
                Scan::Other => return Served::Handover(stream, scratch.buf.freeze()),
                Scan::Partial if scratch.buf.len() > limits.max_header_bytes => {
                    // hyper answers 431.
                    return Served::Handover(stream, scratch.buf.freeze());
                }
                Scan::Partial => {}
            }
            let idle = scratch.buf.is_empty();
            let started = *since.get_or_insert_with(Instant::now);
            if !waiter
                .read(&mut stream, &mut scratch.buf, started, idle, drain)
                .await
            {
                return Served::Done;
            }
        };
        let head = scratch.buf.split_to(plain.len).freeze();
        let (parts, meta) = match build(&head, &plain, &scratch.spans, peer) {
            Some(built) => built,
            None => {
                // The http types refuse something httparse took: hyper
                // answers it (400), from the head on.
                let mut prefix = BytesMut::with_capacity(head.len() + scratch.buf.len());
                prefix.extend_from_slice(&head);
                prefix.extend_from_slice(&scratch.buf);
                return Served::Handover(stream, prefix.freeze());
            }
        };
        drop(head);

        // The body: read whole (it is within max_body_bytes).
        scratch
            .buf
            .reserve(plain.body_len.saturating_sub(scratch.buf.len()));
        let mut since = Instant::now();
        while scratch.buf.len() < plain.body_len {
            let before = scratch.buf.len();
            if !waiter
                .read(&mut stream, &mut scratch.buf, since, false, drain)
                .await
            {
                return Served::Done;
            }
            if scratch.buf.len() > before {
                since = Instant::now();
            }
        }
        let body = scratch.buf.split_to(plain.body_len).freeze();
        let req = Request::from_parts(parts, RequestBody::Buffered(body));

        let res = match std::future::poll_fn(|cx| svc.poll_ready(cx)).await {
            Ok(()) => svc.call(req).await,
            Err(never) => match never {},
        };
        let Ok(res) = res;
        let keep_alive = meta.keep_alive && !drain.is_draining();
        match respond(&mut stream, &mut scratch, res, &meta, keep_alive).await {
            Ok(true) => {}
            Ok(false) => {
                let _ = stream.shutdown().await;
                return Served::Done;
            }
            Err(_) => return Served::Done,
        }
    }
}

/// Waits for bytes from the client, bounded by the connection's timer and
/// cut short by draining when nothing is under way.
struct Waiter<'a, 'b> {
    /// One per connection, made at the first wait and re-armed only when
    /// it fires before the deadline of the current wait.
    timer: Option<Pin<Box<Sleep>>>,
    drained: Pin<&'a mut tokio::sync::futures::Notified<'b>>,
    drain_seen: bool,
    timeout: Duration,
}

impl Waiter<'_, '_> {
    /// Reads into `buf`; the wait ends `timeout` after `since`. `idle`: no
    /// request under way, so draining ends it. `true` when bytes came;
    /// `false` when the connection is done with: closed by the client,
    /// failed, timed out, or drained while idle.
    async fn read(
        &mut self,
        stream: &mut TcpStream,
        buf: &mut BytesMut,
        since: Instant,
        idle: bool,
        drain: &Drain,
    ) -> bool {
        if idle && drain.is_draining() {
            return false;
        }
        let deadline = crate::resilience::deadline::later(since, self.timeout);
        std::future::poll_fn(|cx| {
            match GROWTH.poll_fill(Pin::new(&mut *stream), cx, buf) {
                Poll::Ready(Ok(n)) => return Poll::Ready(n > 0),
                Poll::Ready(Err(_)) => return Poll::Ready(false),
                Poll::Pending => {}
            }
            if !self.drain_seen && self.drained.as_mut().poll(cx).is_ready() {
                self.drain_seen = true;
            }
            if idle && (self.drain_seen || drain.is_draining()) {
                return Poll::Ready(false);
            }
            let timer = self
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            if timer.deadline() > deadline {
                timer.as_mut().reset(deadline);
            }
            while timer.as_mut().poll(cx).is_ready() {
                if Instant::now() >= deadline {
                    return Poll::Ready(false);
                }
                timer.as_mut().reset(deadline);
            }
            Poll::Pending
        })
        .await
    }
}

/// What the scan of the buffered bytes found.
enum Scan {
    Partial,
    Plain(Plain),
    Other,
}

/// A request head the fast path takes.
struct Plain {
    len: usize,
    method: (usize, usize),
    target: (usize, usize),
    version: Version,
    body_len: usize,
    keep_alive: bool,
    /// An `x-forwarded-for` came with it (this is not the first proxy).
    forwarded: bool,
}

/// Reads the head at the start of `buf` (without consuming it): whether it
/// is complete, and whether it is one the fast path takes.
fn scan(buf: &[u8], spans: &mut Vec<Span>, limits: &ConnLimits) -> Scan {
    spans.clear();
    match common::parse_request(buf, |req, len| take(buf, req, len, spans, limits)) {
        Ok(Some(scan)) => scan,
        Ok(None) => Scan::Partial,
        Err(_) => Scan::Other,
    }
}

/// Whether the fast path takes `req`, a complete head of `len` bytes at the
/// start of `buf`; its header positions go to `spans`.
fn take(
    buf: &[u8],
    req: &httparse::Request<'_, '_>,
    len: usize,
    spans: &mut Vec<Span>,
    limits: &ConnLimits,
) -> Scan {
    // hyper answers 431 for a head over the limit.
    if len > limits.max_header_bytes {
        return Scan::Other;
    }
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Scan::Other;
    };
    if method == "CONNECT" {
        return Scan::Other;
    }
    let mut framing = FramingHeaders::default();
    let mut forwarded = false;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        if !framing.read(name, h.value) {
            forwarded |= name.len() == 15 && name.eq_ignore_ascii_case(b"x-forwarded-for");
        }
        spans.push(Span::of(buf, h));
    }
    // Bodies framed otherwise, interim answers and upgrades are hyper's.
    if framing.transfer_encoding.is_some() || framing.expect || framing.upgrade {
        return Scan::Other;
    }
    let body_len = match framing.length {
        Length::Absent => 0,
        Length::Plain(n) => match usize::try_from(n) {
            Ok(n) if n <= limits.max_body_bytes => n,
            // hyper answers 413.
            _ => return Scan::Other,
        },
        // A repeated or bad length: hyper decides (it takes some, refuses others).
        Length::Repeated(_) | Length::Invalid => return Scan::Other,
    };
    let version = common::version(minor);
    Scan::Plain(Plain {
        len,
        method: common::range(buf, method.as_bytes()),
        target: common::range(buf, target.as_bytes()),
        version,
        body_len,
        keep_alive: framing.keeps_alive(version),
        forwarded,
    })
}

/// What the answer needs to know about its request.
struct Meta {
    head_only: bool,
    version: Version,
    keep_alive: bool,
}

/// The request head as `http` types, its parts slices of `head`, with the
/// peer added to `x-forwarded-for`; `None` when the types refuse something.
fn build(
    head: &Bytes,
    plain: &Plain,
    spans: &[Span],
    peer: &ClientAddr,
) -> Option<(http::request::Parts, Meta)> {
    let method = Method::from_bytes(&head[plain.method.0..plain.method.1]).ok()?;
    let uri = Uri::from_maybe_shared(head.slice(plain.target.0..plain.target.1)).ok()?;
    // Room for x-forwarded-for and x-forwarded-proto, so the map does not grow.
    let mut headers = recycle::header_map(spans.len() + 2);
    for span in spans {
        let (name, value) = span.header(head)?;
        headers.append(name, value);
    }
    if plain.forwarded {
        peer.forward(&mut headers);
    } else {
        peer.forward_first(&mut headers);
    }
    let meta = Meta {
        head_only: method == Method::HEAD,
        version: plain.version,
        keep_alive: plain.keep_alive,
    };
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = plain.version;
    parts.headers = headers;
    Some((parts, meta))
}

/// Writes the answer; `Ok(true)` when the connection stays open.
async fn respond(
    stream: &mut TcpStream,
    scratch: &mut Scratch,
    res: Response<ProxyBody>,
    meta: &Meta,
    keep_alive: bool,
) -> io::Result<bool> {
    let (parts, mut body) = res.into_parts();
    let bodiless = common::bodiless(meta.head_only, parts.status);

    // What of the body is there now.
    scratch.frames.clear();
    let (mut gathered, mut ended) = (0usize, bodiless);
    if !bodiless {
        let frames = &mut scratch.frames;
        let polled =
            std::future::poll_fn(|cx| Poll::Ready(gather(&mut body, cx, frames, &mut gathered)))
                .await;
        ended = polled.map_err(io::Error::other)?;
    }
    let framing = if bodiless {
        Framing::None
    } else if ended {
        Framing::Length(gathered as u64)
    } else if let Some(rest) = body.size_hint().exact() {
        Framing::Length(gathered as u64 + rest)
    } else if meta.version == Version::HTTP_11 {
        Framing::Chunked(Chunk::Size)
    } else {
        Framing::Close
    };
    let keep_alive = keep_alive && framing != Framing::Close;

    let out = &mut scratch.out;
    out.clear();
    encode_head(out, &parts, &body, framing, meta, keep_alive);
    // What is left of the body to write, as it is written.
    let mut framing = framing;
    for frame in scratch.frames.drain(..) {
        push_data(out, &frame, &mut framing)?;
    }
    if !ended {
        // Streams on: the factory's body as it comes.
        loop {
            stream.write_all(out).await?;
            out.clear();
            let next = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
            match next {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        push_data(out, &data, &mut framing)?;
                    }
                }
                // The head is out: the only honest end is an abrupt one.
                Some(Err(e)) => return Err(io::Error::other(e)),
                None => break,
            }
        }
        match framing {
            Framing::Chunked(_) => out.extend_from_slice(b"0\r\n\r\n"),
            Framing::Length(left) if left != 0 => {
                return Err(io::Error::other(
                    "the answer body ended short of its length",
                ));
            }
            _ => {}
        }
    }
    if !out.is_empty() {
        stream.write_all(out).await?;
    }
    recycle::recycle(parts.headers);
    Ok(keep_alive)
}

/// Takes the frames ready now (up to [`GATHER`] bytes); `Ok(true)` when
/// the body has ended.
fn gather(
    body: &mut ProxyBody,
    cx: &mut Context<'_>,
    frames: &mut Vec<Bytes>,
    gathered: &mut usize,
) -> Result<bool, crate::boxed::BoxError> {
    while *gathered < GATHER {
        if body.is_end_stream() {
            return Ok(true);
        }
        match Pin::new(&mut *body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    *gathered += data.len();
                    frames.push(data);
                }
            }
            Poll::Ready(Some(Err(e))) => return Err(e),
            Poll::Ready(None) => return Ok(true),
            Poll::Pending => return Ok(false),
        }
    }
    Ok(body.is_end_stream())
}

/// Appends body bytes in the answer's framing; `framing` keeps what is
/// left of a length.
fn push_data(out: &mut Vec<u8>, data: &[u8], framing: &mut Framing) -> io::Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    match framing {
        Framing::None => {}
        Framing::Length(left) => {
            let n = data.len() as u64;
            if n > *left {
                return Err(io::Error::other(
                    "the answer body is longer than its length",
                ));
            }
            *left -= n;
            out.extend_from_slice(data);
        }
        Framing::Chunked(_) => {
            push_hex(out, data.len() as u64);
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
        }
        Framing::Close => out.extend_from_slice(data),
    }
    Ok(())
}

/// The answer head: status line, the answer's headers but the framing
/// ones (written here from what is known of the body), a `date` when the
/// answer has none (hyper's habit), and `connection` when it matters.
fn encode_head(
    out: &mut Vec<u8>,
    parts: &http::response::Parts,
    body: &ProxyBody,
    framing: Framing,
    meta: &Meta,
    keep_alive: bool,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(parts.status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    // A HEAD answer and a 304 keep the factory's Content-Length (it
    // describes the body a GET would get); a 204 or 1xx must not carry one.
    let keeps_length = framing == Framing::None && common::keeps_length_without_body(parts.status);
    for (name, value) in &parts.headers {
        let framing_header = (name == CONTENT_LENGTH && !keeps_length)
            || name == TRANSFER_ENCODING
            || name == CONNECTION;
        if framing_header || name.as_str() == "keep-alive" {
            continue;
        }
        push_header(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if !parts.headers.contains_key(DATE) {
        out.extend_from_slice(b"date: ");
        date::push_now(out);
        out.extend_from_slice(b"\r\n");
    }
    let length = match framing {
        Framing::Length(n) => Some(n),
        Framing::Chunked(_) => {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
            None
        }
        // The sidecar's own answer to a HEAD: the length its GET would have.
        Framing::None if meta.head_only && !parts.headers.contains_key(CONTENT_LENGTH) => {
            body.size_hint().exact().filter(|&n| n > 0)
        }
        Framing::None | Framing::Close => None,
    };
    if let Some(n) = length {
        out.extend_from_slice(b"content-length: ");
        push_decimal(out, n);
        out.extend_from_slice(b"\r\n");
    }
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    } else if meta.version == Version::HTTP_10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The `date` header value, formatted once per second per thread.
mod date {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};

    thread_local! {
        static CACHED: RefCell<(u64, Vec<u8>)> = const { RefCell::new((0, Vec::new())) };
    }

    pub(super) fn push_now(out: &mut Vec<u8>) {
        let now = SystemTime::now();
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        CACHED.with_borrow_mut(|(at, text)| {
            if *at != secs || text.is_empty() {
                *at = secs;
                *text = httpdate::fmt_http_date(now).into_bytes();
            }
            out.extend_from_slice(text);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const LIMITS: ConnLimits = ConnLimits {
        header_read_timeout: Duration::from_secs(10),
        max_header_bytes: 64 * 1024,
        max_body_bytes: 1024,
    };

    fn scan_of(head: &[u8]) -> Scan {
        scan(head, &mut Vec::new(), &LIMITS)
    }

    #[test]
    fn plain_heads_are_taken_and_the_rest_handed_to_hyper() {
        let Scan::Plain(p) =
            scan_of(b"POST /api/order HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        else {
            panic!("a plain order is taken");
        };
        assert_eq!(
            (p.body_len, p.keep_alive, p.version),
            (5, true, Version::HTTP_11)
        );
        let Scan::Plain(p) = scan_of(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n") else {
            panic!("HTTP/1.0 keep-alive is taken");
        };
        assert!(p.keep_alive && p.version == Version::HTTP_10);
        let Scan::Plain(p) = scan_of(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n") else {
            panic!("close is taken");
        };
        assert!(!p.keep_alive);
        assert!(matches!(
            scan_of(b"GET / HTTP/1.1\r\nHost: x\r\n"),
            Scan::Partial
        ));
        for other in [
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: +4\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 2000\r\n\r\n",
            b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
            b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
            b"CONNECT x:443 HTTP/1.1\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
        ] {
            assert!(
                matches!(scan_of(other), Scan::Other),
                "{}",
                String::from_utf8_lossy(other)
            );
        }
    }

    #[test]
    fn heads_become_http_types_without_copies() {
        let bytes = Bytes::from_static(
            b"POST /api/order?x=1 HTTP/1.1\r\nHost: sidecar\r\nX-A: 1\r\nx-a: 2\r\nContent-Length: 0\r\n\r\n",
        );
        let mut spans = Vec::new();
        let Scan::Plain(plain) = scan(&bytes, &mut spans, &LIMITS) else {
            panic!("plain");
        };
        let peer = ClientAddr::new("10.0.0.7:1234".parse().expect("addr"));
        let (parts, meta) = build(&bytes.slice(..plain.len), &plain, &spans, &peer).expect("built");
        assert_eq!(parts.method, Method::POST);
        assert_eq!(parts.headers["x-forwarded-for"], "10.0.0.7");
        assert_eq!(parts.uri, "/api/order?x=1");
        assert_eq!(parts.headers.get_all("x-a").iter().count(), 2);
        assert!(!meta.head_only && meta.keep_alive);
    }

    fn head_of(
        res: Response<ProxyBody>,
        framing: Framing,
        head_only: bool,
        keep_alive: bool,
    ) -> String {
        let (parts, body) = res.into_parts();
        let meta = Meta {
            head_only,
            version: Version::HTTP_11,
            keep_alive,
        };
        let mut out = Vec::new();
        encode_head(&mut out, &parts, &body, framing, &meta, keep_alive);
        String::from_utf8(out).expect("ascii")
    }

    #[test]
    fn answer_heads_carry_the_framing_written_here() {
        let mut res = Response::new(ProxyBody::full("hello"));
        res.headers_mut()
            .insert("content-length", HeaderValue::from_static("99"));
        res.headers_mut()
            .insert("transfer-encoding", HeaderValue::from_static("chunked"));
        res.headers_mut().insert(
            "date",
            HeaderValue::from_static("Sat, 05 Dec 2026 10:00:00 GMT"),
        );
        res.headers_mut()
            .insert("x-sidecar-attempts", HeaderValue::from_static("1"));
        let head = head_of(res, Framing::Length(5), false, true);
        assert_eq!(
            head,
            "HTTP/1.1 200 OK\r\ndate: Sat, 05 Dec 2026 10:00:00 GMT\r\nx-sidecar-attempts: 1\r\ncontent-length: 5\r\n\r\n"
        );
        let res = Response::new(ProxyBody::empty());
        let head = head_of(res, Framing::Chunked(Chunk::Size), false, false);
        assert!(
            head.contains("\r\ndate: ")
                && head.ends_with("transfer-encoding: chunked\r\nconnection: close\r\n\r\n"),
            "{head}"
        );

        // Bodiless answers: a HEAD answer's and a 304's length describe
        // the body a GET would get and stay; a 204 carries none.
        for (status, head_only, kept) in
            [(200, true, true), (304, false, true), (204, false, false)]
        {
            let mut res = Response::new(ProxyBody::empty());
            *res.status_mut() = http::StatusCode::from_u16(status).expect("status");
            res.headers_mut()
                .insert("content-length", HeaderValue::from_static("7"));
            let head = head_of(res, Framing::None, head_only, true);
            assert_eq!(head.contains("content-length: 7\r\n"), kept, "{head}");
        }
    }
}
