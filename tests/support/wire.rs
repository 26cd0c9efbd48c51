//! The one raw HTTP/1 client of the tests: bytes written exactly as a test
//! gives them (pipelined, malformed, smuggling-shaped), answers read back
//! with their own framing, and whether the connection stayed open. Raw
//! upstreams read requests with it too.
//!
//! It is an independent reader on purpose: it does not use the sidecar's
//! HTTP/1 code, so a framing mistake there shows up here as a wrong answer
//! instead of being read back the same wrong way. Every read is bounded
//! ([`READ_LIMIT`]): a hang fails the test instead of stalling it.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest wait for a byte before the test fails as hung.
pub const READ_LIMIT: Duration = Duration::from_secs(10);

/// A request the sidecar forwards and answers, sent to learn whether a
/// connection is still open (see [`Wire::still_open`]).
pub const PROBE: &[u8] = b"GET /__probe HTTP/1.1\r\nHost: probe\r\n\r\n";
/// The path of [`PROBE`], for filtering it out of what an upstream saw.
pub const PROBE_PATH: &str = "/__probe";

/// One answer as it came off the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The status line's HTTP version, `"HTTP/1.1"` or `"HTTP/1.0"`.
    pub version: String,
    pub status: u16,
    /// In wire order, names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// How the body was delimited.
    pub framing: Framing,
}

/// One request as it came off the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub target: String,
    pub version: String,
    /// In wire order, names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// The first value of `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        first(&self.headers, name)
    }
}

/// The first value of `name` among `headers`.
fn first<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// How an answer's body was delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body may follow (a HEAD answer, 1xx, 204, 304).
    None,
    Length,
    Chunked,
    /// Read until the server closed the connection.
    Close,
}

impl Answer {
    /// The first value of `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        first(&self.headers, name)
    }

    /// Every value of `name`, in wire order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A raw HTTP/1 connection: what is written, and a buffer of what was read
/// and not yet taken.
pub struct Wire<S = TcpStream> {
    pub stream: S,
    pub buf: Vec<u8>,
}

impl Wire<TcpStream> {
    pub async fn connect(addr: SocketAddr) -> Wire {
        Wire::new(TcpStream::connect(addr).await.expect("connect"))
    }

    /// Connects, writes `request`, and reads until the server closes:
    /// everything it sent, as text.
    pub async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        let mut w = Wire::connect(addr).await;
        w.send(request).await;
        String::from_utf8_lossy(&w.read_to_close().await).into_owned()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Wire<S> {
    pub fn new(stream: S) -> Self {
        Wire {
            stream,
            buf: Vec::new(),
        }
    }

    /// Writes `bytes` as they are.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
        self.stream.flush().await.expect("flush");
    }

    /// Reads more; `false` at the end of the stream (or a reset). Nothing
    /// for [`READ_LIMIT`] fails the test.
    pub async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout(READ_LIMIT, self.stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Ok(_) => false,
            Err(_) => panic!("nothing on the connection for {READ_LIMIT:?}"),
        }
    }

    /// Everything until the peer closes, the buffered bytes first.
    pub async fn read_to_close(&mut self) -> Vec<u8> {
        while self.fill().await {}
        std::mem::take(&mut self.buf)
    }

    /// Whether the peer has closed with nothing more to read (waits for
    /// the next byte or the end: use it where the close is expected).
    pub async fn closed(&mut self) -> bool {
        self.buf.is_empty() && !self.fill().await
    }

    /// Whether the connection still serves requests: [`PROBE`] is sent and
    /// must be answered. No timing involved: a closed connection answers
    /// with its end (or a reset), an open one with an answer.
    pub async fn still_open(&mut self) -> bool {
        if !self.buf.is_empty() {
            return true; // more was sent than the answers read
        }
        if self.stream.write_all(PROBE).await.is_err() {
            return false;
        }
        self.answer(false).await.is_some()
    }

    /// Bytes up to and including the first blank line; `None` when the
    /// stream ends first.
    async fn head_bytes(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(end) = head_end(&self.buf) {
                return Some(self.buf.drain(..end).collect());
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// A request head (for raw upstreams), as text; `""` when the stream
    /// ends first. Its body, if any, stays in the buffer.
    pub async fn request_head(&mut self) -> String {
        self.head_bytes()
            .await
            .map(|h| String::from_utf8_lossy(&h).into_owned())
            .unwrap_or_default()
    }

    /// Reads one request as a proxy writes it (a Content-Length body or
    /// none: the sidecar never sends chunked requests); `None` when the
    /// connection ends before a request head.
    pub async fn request(&mut self) -> Option<Request> {
        // A kept-alive connection may idle as long as its peer likes.
        if self.buf.is_empty() {
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk).await {
                Ok(n) if n > 0 => self.buf.extend_from_slice(&chunk[..n]),
                _ => return None,
            }
        }
        let head = self.head_bytes().await?;
        let text = String::from_utf8_lossy(&head);
        let mut lines = text.split("\r\n");
        let line = lines.next().unwrap_or_default();
        let mut parts = line.splitn(3, ' ');
        let (method, target, version) = (
            parts.next().unwrap_or_default().to_owned(),
            parts.next().unwrap_or_default().to_owned(),
            parts.next().unwrap_or_default().to_owned(),
        );
        let headers = header_lines(lines);
        let mut request = Request {
            method,
            target,
            version,
            headers,
            body: Vec::new(),
        };
        let n: usize = request
            .header("content-length")
            .map(|v| v.parse().expect("a Content-Length of digits"))
            .unwrap_or(0);
        while self.buf.len() < n {
            assert!(self.fill().await, "the request body was cut");
        }
        request.body = self.buf.drain(..n).collect();
        Some(request)
    }

    /// Reads one answer; `head_request`: it answers a HEAD, so no body
    /// follows. `None` when the connection ends before an answer head.
    pub async fn answer(&mut self, head_request: bool) -> Option<Answer> {
        let mut answer = self.answer_head(head_request).await?;
        match answer.framing {
            Framing::None => {}
            Framing::Length => {
                let n: usize = answer
                    .header("content-length")
                    .and_then(|v| v.trim().parse().ok())
                    .expect("a Content-Length of digits");
                while self.buf.len() < n {
                    assert!(self.fill().await, "the body was cut");
                }
                answer.body = self.buf.drain(..n).collect();
            }
            Framing::Chunked => answer.body = self.chunked().await,
            Framing::Close => answer.body = self.read_to_close().await,
        }
        Some(answer)
    }

    /// Reads an answer head only; its body (if any) stays to be read.
    pub async fn answer_head(&mut self, head_request: bool) -> Option<Answer> {
        let head = self.head_bytes().await?;
        let text = String::from_utf8_lossy(&head);
        let mut lines = text.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default().to_owned();
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not a status line: {status_line:?}"));
        let headers = header_lines(lines);
        let mut answer = Answer {
            version,
            status,
            headers,
            body: Vec::new(),
            framing: Framing::None,
        };
        answer.framing = if head_request || matches!(status, 100..=199 | 204 | 304) {
            Framing::None
        } else if answer
            .header("transfer-encoding")
            .is_some_and(|te| te.to_ascii_lowercase().ends_with("chunked"))
        {
            Framing::Chunked
        } else if answer.header("content-length").is_some() {
            Framing::Length
        } else {
            Framing::Close
        };
        Some(answer)
    }

    /// A chunked body, decoded (trailers skipped).
    async fn chunked(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let line = self.line().await;
            let size = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size, 16)
                .unwrap_or_else(|_| panic!("not a chunk size: {line:?}"));
            if size == 0 {
                while !self.line().await.is_empty() {}
                return body;
            }
            while self.buf.len() < size + 2 {
                assert!(self.fill().await, "a chunk was cut");
            }
            body.extend(self.buf.drain(..size));
            assert_eq!(self.buf.drain(..2).as_slice(), b"\r\n", "chunk end");
        }
    }

    /// One CRLF-ended line, without its CRLF.
    async fn line(&mut self) -> String {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..i + 2).take(i).collect();
                return String::from_utf8_lossy(&line).into_owned();
            }
            assert!(self.fill().await, "a line was cut");
        }
    }
}

/// Header lines as (lower-case name, trimmed value), in wire order.
fn header_lines<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<(String, String)> {
    lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (name, value) = l.split_once(':').unwrap_or((l, ""));
            (name.to_ascii_lowercase(), value.trim().to_owned())
        })
        .collect()
}

/// Where the first blank line ends.
fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Reads one request head from a raw upstream's connection, as text (`""`
/// when the stream ends first). Bytes after the head that arrived with it
/// are dropped: for scripts that answer whatever the request was.
pub async fn read_head(stream: &mut TcpStream) -> String {
    Wire::new(stream).request_head().await
}
