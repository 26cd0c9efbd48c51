//! HTTP/1.1 to the factory, spoken by the request that holds the connection.
//!
//! Why not hyper's `client::conn::http1`: it drives every connection from a
//! task of its own and passes each request and its answer over channels, so
//! one order woke two tasks, crossed two channels, and each upstream
//! connection kept a task, a channel block and two 8 KiB buffers. Measured
//! (benches/README.md), that machinery was over a quarter of the
//! instructions an order cost and much of the memory per connection at 256
//! connections. Here the order's own future writes the request and reads
//! the answer on a connection it took from the
//! [`Pool`](crate::proxy::pool::Pool), and the answer body decodes straight
//! from the connection's buffer; the pool takes the connection back once the
//! body has been read to the end ([`H1Body::take_reusable`]). The head is
//! parsed by httparse, hyper's own parser. h2 (when the factory picks it by
//! ALPN) stays with hyper.
//!
//! What it speaks: one request at a time per connection; answer bodies
//! framed by Content-Length, by chunked coding, or by the end of the
//! connection (RFC 9112 section 6.3); 1xx interim answers are skipped. What
//! it refuses, with an error and the connection closed: a head over 64 KiB
//! or with over 100 headers, a malformed head or chunk size, differing
//! Content-Length values, and 101 (nothing is upgraded to the factory).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use tokio::io::AsyncWrite;
#[cfg(test)]
use tokio::net::TcpStream;

use super::chunked::{Chunk, ChunkError, Step as ChunkStep};
use super::common::{
    self, Framing, FramingHeaders, Growth, MAX_HEAD, Span, push_decimal, push_header,
};
use crate::proxy::connect::Io;
use crate::proxy::headers::{is_hop_by_hop, strip_hop_by_hop};
use crate::proxy::recycle;

/// The read buffer: grown by 8 KiB when less than 1 KiB is free (an
/// answer body streams through it).
const GROWTH: Growth = Growth {
    min_spare: 1024,
    chunk: 8 * 1024,
};
/// Request bodies up to this size are copied behind the head, so the
/// request leaves in one write.
const INLINE_BODY: usize = 16 * 1024;

/// Why an exchange with the factory failed.
#[derive(Debug, thiserror::Error)]
pub enum H1Error {
    #[error("the factory's answer head is malformed: {0}")]
    Parse(#[from] httparse::Error),
    #[error("the factory's answer is malformed: {0}")]
    Malformed(&'static str),
    #[error("the factory's chunked answer body is malformed: {0}")]
    Chunked(#[from] ChunkError),
    #[error("the factory's answer head is larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("the factory answered 101 Switching Protocols; nothing is upgraded")]
    Upgrade,
    #[error("the factory closed the connection before answering")]
    ClosedBeforeAnswer,
    #[error("the factory closed the connection in the middle of its answer")]
    Incomplete,
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// A failed [`H1Conn::send`]: whether the request may have reached the
/// factory decides whether it can go again on another connection.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct SendError {
    /// The request was not written whole: the factory cannot have taken it.
    pub unsent: bool,
    #[source]
    pub error: H1Error,
}

impl SendError {
    fn unsent(e: io::Error) -> Self {
        SendError {
            unsent: true,
            error: H1Error::Io(e),
        }
    }

    fn sent(error: impl Into<H1Error>) -> Self {
        SendError {
            unsent: false,
            error: error.into(),
        }
    }
}

/// One HTTP/1.1 connection to the factory, idle or carrying one request.
#[derive(Debug)]
pub struct H1Conn {
    io: Io,
    /// Bytes read and not yet consumed. Answer heads and bodies are split
    /// off it without copying; once they are dropped, the same allocation
    /// serves the next answer.
    buf: BytesMut,
    /// The request being written (kept for its capacity).
    out: Vec<u8>,
    /// Header positions while a head is parsed (kept for its capacity).
    spans: Vec<Span>,
}

impl H1Conn {
    /// Boxed for its whole life: it moves between the pool, the order that
    /// holds it and the answer body as a pointer, not as a hundred bytes
    /// through every layer.
    pub fn new(io: Io) -> Box<Self> {
        Box::new(H1Conn {
            io,
            buf: BytesMut::new(),
            out: Vec::new(),
            spans: Vec::new(),
        })
    }

    /// Whether an idle connection can carry another request: nothing has
    /// arrived on it since its last answer. Anything that did is the
    /// factory closing it, or bytes no request asked for; either way it is
    /// not used again. Costs a system call only when the socket has
    /// signalled something since it was last read empty.
    pub fn is_reusable(&self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        matches!(self.io.tcp().try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Sends `req` (origin form; `host` is the factory's) and reads the
    /// answer head; [`Answer::with_body`] then reads the body on from this
    /// connection.
    #[cfg(test)]
    pub async fn send(
        &mut self,
        req: &Request<Bytes>,
        target: &Target,
    ) -> Result<Answer, SendError> {
        let mut exchange = Exchange::default();
        std::future::poll_fn(|cx| self.poll_send(cx, req, target, &mut exchange)).await
    }

    /// [`H1Conn::send`] as a poll function, its progress in `exchange`
    /// (start with `Exchange::default()`; the same `req` every time): the
    /// pool's future holds it inline, no boxed future per order.
    pub fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        req: &Request<Bytes>,
        target: &Target,
        exchange: &mut Exchange,
    ) -> Poll<Result<Answer, SendError>> {
        loop {
            match exchange.step {
                Step::Encode => {
                    self.out.clear();
                    encode_request(&mut self.out, req, target);
                    let body = req.body();
                    exchange.inline = body.len() <= INLINE_BODY;
                    if exchange.inline {
                        self.out.extend_from_slice(body);
                    }
                    exchange.written = 0;
                    exchange.step = Step::Head;
                }
                Step::Head | Step::Body => {
                    let bytes: &[u8] = if exchange.step == Step::Head {
                        &self.out
                    } else {
                        req.body()
                    };
                    while exchange.written < bytes.len() {
                        let polled =
                            Pin::new(&mut self.io).poll_write(cx, &bytes[exchange.written..]);
                        match ready!(polled) {
                            Ok(0) => {
                                return Poll::Ready(Err(SendError::unsent(
                                    io::ErrorKind::WriteZero.into(),
                                )));
                            }
                            Ok(n) => exchange.written += n,
                            Err(e) => return Poll::Ready(Err(SendError::unsent(e))),
                        }
                    }
                    exchange.written = 0;
                    exchange.step = match exchange.step {
                        Step::Head if !exchange.inline => Step::Body,
                        _ => Step::Flush,
                    };
                }
                Step::Flush => {
                    if let Err(e) = ready!(Pin::new(&mut self.io).poll_flush(cx)) {
                        return Poll::Ready(Err(SendError::unsent(e)));
                    }
                    exchange.step = Step::Answer;
                }
                Step::Answer => {
                    let head_only = req.method() == Method::HEAD;
                    match parse_head(&mut self.buf, &mut self.spans, head_only) {
                        Err(e) => return Poll::Ready(Err(SendError::sent(e))),
                        Ok(Some(Head::Final(head, framing, keep_alive))) => {
                            return Poll::Ready(Ok(Answer {
                                head,
                                framing,
                                keep_alive,
                            }));
                        }
                        Ok(Some(Head::Interim)) => continue,
                        Ok(None) if self.buf.len() >= MAX_HEAD => {
                            return Poll::Ready(Err(SendError::sent(H1Error::HeadTooLarge)));
                        }
                        Ok(None) => {}
                    }
                    match ready!(self.poll_fill(cx)) {
                        Ok(0) => {
                            return Poll::Ready(Err(SendError::sent(if exchange.read_any {
                                H1Error::Incomplete
                            } else {
                                H1Error::ClosedBeforeAnswer
                            })));
                        }
                        Ok(_) => exchange.read_any = true,
                        Err(e) => return Poll::Ready(Err(SendError::sent(e))),
                    }
                }
            }
        }
    }

    /// Reads more into the buffer; `Ok(0)` at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        GROWTH.poll_fill(Pin::new(&mut self.io), cx, &mut self.buf)
    }
}

/// How far one request/answer exchange on a connection has come.
#[derive(Debug, Default)]
pub struct Exchange {
    step: Step,
    /// Bytes of the current piece (head, then body) written so far.
    written: usize,
    /// The body went out behind the head, in the same write.
    inline: bool,
    /// Any byte of the answer has arrived.
    read_any: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Step {
    #[default]
    Encode,
    Head,
    Body,
    Flush,
    Answer,
}

/// An answer head read by [`H1Conn::send`].
#[derive(Debug)]
pub struct Answer {
    head: Response<()>,
    framing: Framing,
    keep_alive: bool,
}

impl Answer {
    /// The answer, its body read on from `conn` (the connection it came on).
    pub fn with_body(self, conn: Box<H1Conn>) -> Result<Response<H1Body>, H1Error> {
        let mut body = H1Body {
            conn: Some(conn),
            framing: self.framing,
            keep_alive: self.keep_alive,
        };
        body.settle()?;
        Ok(self.head.map(|()| body))
    }
}

/// Where requests go: the factory's `Host`, and the base path of
/// `upstream.url` put before every request's path.
#[derive(Debug, Clone)]
pub struct Target {
    pub host: HeaderValue,
    /// "" for the root, else "/base" (no trailing slash).
    pub base: String,
}

/// Writes the request head: origin-form target under the base path (an
/// absolute-form request loses its scheme and authority, so it cannot send
/// the sidecar to another host), the factory's `Host` first, the request's
/// own headers but `Host` and the framing ones, and a Content-Length for
/// the buffered body.
fn encode_request(out: &mut Vec<u8>, req: &Request<Bytes>, target: &Target) {
    out.extend_from_slice(req.method().as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.base.as_bytes());
    let path = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(target.host.as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut had_length = false;
    for (name, value) in req.headers() {
        if name == CONTENT_LENGTH {
            had_length = true;
            continue;
        }
        if name == HOST || name == TRANSFER_ENCODING {
            continue;
        }
        push_header(out, name.as_str().as_bytes(), value.as_bytes());
    }
    let len = req.body().len();
    // As hyper does: a length for a body, for a method that expects one,
    // and wherever the sender gave one (then the true one).
    if len > 0 || had_length || matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH)
    {
        out.extend_from_slice(b"content-length: ");
        push_decimal(out, len as u64);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// A parsed answer head.
enum Head {
    /// A 1xx answer (not 101): skipped, the final one follows.
    Interim,
    /// The answer, how its body is framed, and whether the connection can
    /// carry another request after it.
    Final(Response<()>, Framing, bool),
}

/// Parses the answer head at the start of `buf`, consuming it once
/// complete; `None` while it is not.
fn parse_head(
    buf: &mut BytesMut,
    spans: &mut Vec<Span>,
    head_only: bool,
) -> Result<Option<Head>, H1Error> {
    spans.clear();
    let (len, code, version) = {
        let (mut headers, mut res) = (common::header_room(), httparse::Response::new(&mut []));
        let parsed =
            common::parser().parse_response_with_uninit_headers(&mut res, buf, &mut headers)?;
        let Some(len) = common::complete(parsed) else {
            return Ok(None);
        };
        spans.extend(res.headers.iter().map(|h| Span::of(buf, h)));
        let version = common::version(res.version.unwrap_or(0));
        (len, res.code.unwrap_or(0), version)
    };
    let head = buf.split_to(len).freeze();
    if code == 101 {
        return Err(H1Error::Upgrade);
    }
    if (100..200).contains(&code) {
        return Ok(Some(Head::Interim));
    }
    let status = StatusCode::from_u16(code).map_err(|_| H1Error::Malformed("status code"))?;

    // Room for x-sidecar-attempts, so the map does not grow.
    let mut headers = recycle::header_map(spans.len() + 1);
    let mut framing = FramingHeaders::default();
    for span in spans.iter() {
        let (name, value) = span.header(&head).ok_or(H1Error::Malformed("header"))?;
        framing.read(name.as_str().as_bytes(), value.as_bytes());
        // Hop-by-hop headers are read here and not kept: they belong to
        // this connection, never to the answer passed on.
        if !is_hop_by_hop(&name) || framing.connection.names_others {
            headers.append(name, value);
        }
    }
    if framing.connection.names_others {
        // The Connection header names more headers to drop (rare).
        strip_hop_by_hop(&mut headers);
    }
    let body = framing
        .answer_body(common::bodiless(head_only, status))
        .ok_or(H1Error::Malformed("Content-Length"))?;
    if framing.conflicting() {
        // Transfer-Encoding wins (RFC 9112 section 6.3); the length would
        // describe something else downstream.
        headers.remove(CONTENT_LENGTH);
    }
    let reusable = framing.keeps_alive(version) && body != Framing::Close;
    let mut res = Response::new(());
    *res.status_mut() = status;
    *res.version_mut() = version;
    *res.headers_mut() = headers;
    Ok(Some(Head::Final(res, body, reusable)))
}

/// An answer body read from its connection. Frames are slices of the
/// connection's buffer (no copy).
#[derive(Debug)]
pub struct H1Body {
    /// `None` once the body ended or failed (then the connection is closed
    /// or handed back through [`H1Body::take_reusable`]).
    conn: Option<Box<H1Conn>>,
    framing: Framing,
    keep_alive: bool,
}

impl H1Body {
    /// Once the body has been read to the end: its connection, when it can
    /// carry another request. Otherwise the connection is dropped (closed)
    /// here, so a finished answer never holds a socket.
    pub fn take_reusable(&mut self) -> Option<Box<H1Conn>> {
        if self.framing != Framing::None {
            return None;
        }
        let conn = self.conn.take()?;
        (self.keep_alive && conn.buf.is_empty()).then_some(conn)
    }

    pub fn is_end_stream(&self) -> bool {
        self.framing == Framing::None
    }

    /// Bytes still to come, when known.
    pub fn remaining(&self) -> Option<u64> {
        match self.framing {
            Framing::Length(n) => Some(n),
            Framing::None => Some(0),
            _ => None,
        }
    }

    /// The next piece of the body; `None` at its end.
    pub fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, H1Error>>> {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match self.framing {
                Framing::None => return Poll::Ready(None),
                Framing::Length(n) if !conn.buf.is_empty() => {
                    let take = n.min(conn.buf.len() as u64);
                    // take <= buf.len(), a usize.
                    let data = conn.buf.split_to(take as usize).freeze();
                    self.framing = match n - take {
                        0 => Framing::None,
                        left => Framing::Length(left),
                    };
                    return Poll::Ready(Some(Ok(data)));
                }
                Framing::Close if !conn.buf.is_empty() => {
                    return Poll::Ready(Some(Ok(conn.buf.split().freeze())));
                }
                Framing::Chunked(ref mut chunk @ Chunk::Data(_)) if !conn.buf.is_empty() => {
                    // Within a chunk's data, with bytes buffered: data is next.
                    let Ok(ChunkStep::Data(take)) = chunk.step(&conn.buf) else {
                        return Poll::Ready(Some(Err(self.fail(H1Error::Malformed("chunk data")))));
                    };
                    let data = conn.buf.split_to(take).freeze();
                    chunk.took(take);
                    if let Err(e) = self.settle() {
                        return Poll::Ready(Some(Err(e)));
                    }
                    return Poll::Ready(Some(Ok(data)));
                }
                _ => {}
            }
            // Nothing to hand out: read more.
            match ready!(conn.poll_fill(cx)) {
                Ok(0) if self.framing == Framing::Close => {
                    self.framing = Framing::None;
                    self.conn = None;
                    return Poll::Ready(None);
                }
                Ok(0) => return Poll::Ready(Some(Err(self.fail(H1Error::Incomplete)))),
                Ok(_) => {
                    if let Err(e) = self.settle() {
                        return Poll::Ready(Some(Err(e)));
                    }
                }
                Err(e) => return Poll::Ready(Some(Err(self.fail(e.into())))),
            }
        }
    }

    /// Ends the body with an error; the connection is closed.
    fn fail(&mut self, e: H1Error) -> H1Error {
        self.conn = None;
        self.framing = Framing::None;
        self.keep_alive = false;
        e
    }

    /// Consumes chunked framing (sizes, CRLFs, trailers) as far as the
    /// buffered bytes go, without taking data: the end of a chunked body is
    /// seen as soon as it is buffered, so the connection is freed at once.
    fn settle(&mut self) -> Result<(), H1Error> {
        let (Framing::Chunked(chunk), Some(conn)) = (&mut self.framing, self.conn.as_mut()) else {
            return Ok(());
        };
        loop {
            match chunk.step(&conn.buf) {
                Ok(ChunkStep::Framing(n)) => conn.buf.advance(n),
                Ok(ChunkStep::Data(_) | ChunkStep::More) => return Ok(()),
                Ok(ChunkStep::End(n)) => {
                    conn.buf.advance(n);
                    self.framing = Framing::None;
                    return Ok(());
                }
                Err(e) => return Err(self.fail(e.into())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(host: &'static str, base: &str) -> Target {
        Target {
            host: HeaderValue::from_static(host),
            base: base.to_owned(),
        }
    }

    fn head(bytes: &[u8], head_only: bool) -> Result<Option<Head>, H1Error> {
        let mut buf = BytesMut::from(bytes);
        parse_head(&mut buf, &mut Vec::new(), head_only)
    }

    fn final_head(bytes: &[u8]) -> (Response<()>, Framing, bool) {
        match head(bytes, false) {
            Ok(Some(Head::Final(res, framing, reusable))) => (res, framing, reusable),
            Ok(Some(Head::Interim)) => panic!("interim"),
            Ok(None) => panic!("partial"),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let (res, f, reuse) =
            final_head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\nx-a: 2\r\n\r\n");
        assert_eq!(res.status(), 200);
        assert_eq!(f, Framing::Length(5));
        assert!(reuse);
        assert_eq!(res.headers().get_all("x-a").iter().count(), 2);

        let (res, f, reuse) = final_head(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
        );
        assert_eq!(f, Framing::Chunked(Chunk::Size));
        assert!(!reuse, "TE and CL together: not reused");
        assert!(
            res.headers().get(CONTENT_LENGTH).is_none(),
            "the length is dropped"
        );

        let (res, _, _) = final_head(
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nX-Kept: 1\r\n\r\n",
        );
        assert!(
            !res.headers().contains_key("connection") && !res.headers().contains_key("keep-alive"),
            "hop-by-hop headers are not kept"
        );
        let (res, _, _) =
            final_head(b"HTTP/1.1 200 OK\r\nX-Hop: 1\r\nConnection: x-hop\r\nX-Kept: 1\r\n\r\n");
        assert!(!res.headers().contains_key("x-hop"), "named by Connection");
        assert_eq!(res.headers()["x-kept"], "1");

        let (_, f, reuse) = final_head(b"HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!((f, reuse), (Framing::Close, false));
        let (_, f, reuse) = final_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n");
        assert_eq!((f, reuse), (Framing::Close, false));
        let (_, f, _) = final_head(b"HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n");
        assert_eq!(f, Framing::None);
        let (_, f, reuse) =
            final_head(b"HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\nConnection: close\r\n\r\n");
        assert_eq!((f, reuse), (Framing::Length(3), false));
        let (_, _, reuse) = final_head(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n");
        assert!(!reuse, "HTTP/1.0 without keep-alive closes");
        let (_, _, reuse) =
            final_head(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\n");
        assert!(reuse);
        match head(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n", true) {
            Ok(Some(Head::Final(res, Framing::None, true))) => {
                assert_eq!(
                    res.headers()[CONTENT_LENGTH],
                    "7",
                    "a HEAD answer keeps its length"
                );
            }
            _ => panic!("HEAD answer has no body"),
        }
    }

    #[test]
    fn bad_heads_are_refused() {
        for bad in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: -3\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"SMTP ready\r\n\r\n",
        ] {
            assert!(
                head(bad, false).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(matches!(
            head(b"HTTP/1.1 200 OK\r\nContent-", false),
            Ok(None)
        ));
        assert!(matches!(
            head(b"HTTP/1.1 100 Continue\r\n\r\n", false),
            Ok(Some(Head::Interim))
        ));
    }

    #[test]
    fn requests_are_encoded_with_the_factorys_host_and_a_true_length() {
        let req = Request::post("/api/order?x=1")
            .header("host", "sidecar:8081")
            .header("content-length", "99")
            .header("authorization", "Bearer k")
            .body(Bytes::from_static(b"{}"))
            .expect("request");
        let mut out = Vec::new();
        encode_request(&mut out, &req, &target("factory:443", ""));
        assert_eq!(
            out,
            b"POST /api/order?x=1 HTTP/1.1\r\nhost: factory:443\r\nauthorization: Bearer k\r\ncontent-length: 2\r\n\r\n"
        );
        let get = Request::get("/").body(Bytes::new()).expect("request");
        out.clear();
        encode_request(&mut out, &get, &target("f", ""));
        assert_eq!(out, b"GET / HTTP/1.1\r\nhost: f\r\n\r\n");
        let absolute = Request::get("http://elsewhere:9/x?y=1")
            .body(Bytes::new())
            .expect("request");
        out.clear();
        encode_request(&mut out, &absolute, &target("f", "/base"));
        assert_eq!(out, b"GET /base/x?y=1 HTTP/1.1\r\nhost: f\r\n\r\n");
    }

    /// A loopback factory that reads one request head and answers with
    /// `parts`, each written (and flushed) on its own; `then_close` closes
    /// the connection afterwards.
    async fn answering(parts: Vec<&'static [u8]>, then_close: bool) -> Box<H1Conn> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                match s.read(&mut byte).await {
                    Ok(1) => head.push(byte[0]),
                    _ => return,
                }
            }
            for part in parts {
                if s.write_all(part).await.is_err() || s.flush().await.is_err() {
                    return;
                }
                tokio::task::yield_now().await;
            }
            if then_close {
                drop(s);
            } else {
                let mut sink = [0u8; 64];
                while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
            }
        });
        let tcp = TcpStream::connect(addr).await.expect("connect");
        H1Conn::new(Io::Plain(tcp))
    }

    async fn send(
        mut conn: Box<H1Conn>,
        req: &Request<Bytes>,
    ) -> Result<Response<H1Body>, H1Error> {
        let answer = conn
            .send(req, &target("f", ""))
            .await
            .map_err(|e| e.error)?;
        answer.with_body(conn)
    }

    async fn exchange(
        conn: Box<H1Conn>,
    ) -> (Response<()>, Result<Vec<u8>, H1Error>, Option<Box<H1Conn>>) {
        let req = Request::get("/x").body(Bytes::new()).expect("request");
        let res = send(conn, &req).await.expect("an answer head");
        let (parts, mut body) = res.into_parts();
        let mut data = Vec::new();
        let read = loop {
            match std::future::poll_fn(|cx| body.poll_data(cx)).await {
                Some(Ok(chunk)) => data.extend_from_slice(&chunk),
                Some(Err(e)) => break Err(e),
                None => break Ok(data),
            }
        };
        (Response::from_parts(parts, ()), read, body.take_reusable())
    }

    #[tokio::test]
    async fn chunked_answers_are_decoded_across_reads_and_free_the_connection() {
        let conn = answering(
            vec![
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhel",
                b"lo\r\n",
                b"6\r\n world\r\n0\r\nX-Trailer: 1\r\n",
                b"\r\n",
            ],
            false,
        )
        .await;
        let (res, body, reusable) = exchange(conn).await;
        assert_eq!(res.status(), 200);
        assert_eq!(body.expect("body"), b"hello world");
        assert!(
            reusable.is_some(),
            "a finished chunked answer frees its connection"
        );
    }

    #[tokio::test]
    async fn an_answer_without_length_runs_to_the_close() {
        let conn = answering(
            vec![b"HTTP/1.1 200 OK\r\n\r\npart one, ", b"part two"],
            true,
        )
        .await;
        let (_, body, reusable) = exchange(conn).await;
        assert_eq!(body.expect("body"), b"part one, part two");
        assert!(
            reusable.is_none(),
            "a close-delimited answer ends its connection"
        );
    }

    #[tokio::test]
    async fn cut_answers_are_errors() {
        let conn = answering(
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"],
            true,
        )
        .await;
        let (_, body, reusable) = exchange(conn).await;
        assert!(matches!(body, Err(H1Error::Incomplete)), "{body:?}");
        assert!(reusable.is_none());

        let conn = answering(
            vec![b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab"],
            true,
        )
        .await;
        let (_, body, _) = exchange(conn).await;
        assert!(matches!(body, Err(H1Error::Incomplete)), "{body:?}");

        // A bad chunk size is refused with the head (when it came along)
        // or while the body is read.
        let conn = answering(
            vec![b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"],
            true,
        )
        .await;
        let req = Request::get("/x").body(Bytes::new()).expect("request");
        match send(conn, &req).await {
            Err(e) => assert!(matches!(e, H1Error::Chunked(_)), "{e}"),
            Ok(res) => {
                let mut body = res.into_body();
                let first = std::future::poll_fn(|cx| body.poll_data(cx)).await;
                assert!(matches!(first, Some(Err(H1Error::Chunked(_)))), "{first:?}");
            }
        }

        let mut conn = answering(vec![b"HTTP/1.1 200 OK\r\nContent-"], true).await;
        let err = conn
            .send(&req, &target("f", ""))
            .await
            .expect_err("cut head");
        assert!(
            matches!(err.error, H1Error::Incomplete) && !err.unsent,
            "{err}"
        );

        let mut conn = answering(vec![], true).await;
        let err = conn
            .send(&req, &target("f", ""))
            .await
            .expect_err("no answer");
        assert!(matches!(err.error, H1Error::ClosedBeforeAnswer), "{err}");
    }

    #[tokio::test]
    async fn a_connection_the_factory_closed_while_idle_is_not_reused() {
        let conn = answering(
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"],
            true,
        )
        .await;
        let (_, body, reusable) = exchange(conn).await;
        assert_eq!(body.expect("body"), b"ok");
        let conn = reusable.expect("reusable right after the answer");
        // The factory's close arrives; the check sees it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while conn.is_reusable() {
            assert!(
                std::time::Instant::now() < deadline,
                "the close was never seen"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    #[test]
    fn decimal_digits() {
        for n in [0u64, 7, 10, 161, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes());
        }
    }
}
