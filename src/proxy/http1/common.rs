//! The HTTP/1.1 wire rules, each written once, for every side that speaks
//! it: the server's fast path ([`super::server`]), the client to the
//! factory ([`super::client`]) and the guard that follows what hyper reads
//! ([`super::guard`]).
//!
//! Why one module: each rule here used to live in two or three copies, and
//! a rule fixed in one copy stayed wrong in the others. What is here: the
//! limits, how a head is parsed and where its headers sit ([`Span`]), the
//! readers of the framing headers ([`FramingHeaders`]: Content-Length,
//! Transfer-Encoding, Connection, Upgrade, Expect), the keep-alive and
//! bodiless rules, the one [`Framing`] of a body, how a read buffer grows,
//! and the few writers of head lines. Which headers a proxy forwards is
//! policy, not wire, and stays in [`crate::proxy::headers`].

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::{HeaderName, HeaderValue, StatusCode, Version};
use tokio::io::AsyncRead;

use super::chunked::Chunk;

/// Most headers in a head, either direction (hyper's limit too: a request
/// with more is left to hyper, which refuses it).
pub const MAX_HEADERS: usize = 100;

/// Largest answer head the client takes from the factory.
pub const MAX_HEAD: usize = 64 * 1024;

/// The longest request head the server reads, either path: the configured
/// `server.max_header_bytes`, but never below hyper's smallest read buffer
/// (8 KiB), which hyper reads whatever its limit.
pub fn request_head_limit(max_header_bytes: usize) -> usize {
    max_header_bytes.max(8 * 1024)
}

/// Parses the request head at the start of `buf` as hyper does (httparse,
/// its default settings, at most [`MAX_HEADERS`] headers) and hands it with
/// its length to `read` while the parser's header array is alive;
/// `Ok(None)` while the head is incomplete.
pub fn parse_request<'b, T>(
    buf: &'b [u8],
    read: impl FnOnce(&httparse::Request<'_, 'b>, usize) -> T,
) -> Result<Option<T>, httparse::Error> {
    let (mut headers, mut req) = (header_room(), httparse::Request::new(&mut []));
    let parsed = parser().parse_request_with_uninit_headers(&mut req, buf, &mut headers)?;
    Ok(complete(parsed).map(|len| read(&req, len)))
}

/// hyper's parser settings, either direction: httparse's defaults (no
/// obsolete line folding, no spaces before the colon).
pub fn parser() -> httparse::ParserConfig {
    httparse::ParserConfig::default()
}

/// Room for [`MAX_HEADERS`] headers, not initialised up front: the parser
/// writes what it finds.
pub fn header_room<'b>() -> [MaybeUninit<httparse::Header<'b>>; MAX_HEADERS] {
    [const { MaybeUninit::uninit() }; MAX_HEADERS]
}

/// A complete head's length.
pub fn complete(status: httparse::Status<usize>) -> Option<usize> {
    match status {
        httparse::Status::Complete(len) => Some(len),
        httparse::Status::Partial => None,
    }
}

/// Where a header's name and value are in a head, so both can become
/// slices of the frozen head (no copy) once the parser's borrow ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    name: (usize, usize),
    value: (usize, usize),
}

impl Span {
    /// The span of `header`, parsed out of `head`.
    #[inline]
    pub fn of(head: &[u8], header: &httparse::Header<'_>) -> Span {
        Span {
            name: range(head, header.name.as_bytes()),
            value: range(head, header.value),
        }
    }

    /// The header as `http` types, the value a slice of `head`; `None`
    /// when the types refuse what httparse took.
    // Once per header of every head, both ways: inlined into each loop.
    #[inline(always)]
    pub fn header(&self, head: &Bytes) -> Option<(HeaderName, HeaderValue)> {
        let name = HeaderName::from_bytes(head.get(self.name.0..self.name.1)?).ok()?;
        let value = HeaderValue::from_maybe_shared(head.slice(self.value.0..self.value.1)).ok()?;
        Some((name, value))
    }
}

/// Start and end of `part`, a slice of `head`, within it.
#[inline]
pub fn range(head: &[u8], part: &[u8]) -> (usize, usize) {
    let start = (part.as_ptr() as usize).saturating_sub(head.as_ptr() as usize);
    (start, start + part.len())
}

/// The HTTP version of a parsed head: 1.1, or 1.0 for anything older.
#[inline]
pub fn version(minor: u8) -> Version {
    if minor == 1 {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    }
}

/// A Content-Length value of plain decimal digits (no sign, no list, at
/// most 19 digits, so no overflow); `None` for anything else.
#[inline]
pub fn plain_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0'))
    })
}

/// What the Content-Length headers of a head say, all of them read.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Length {
    #[default]
    Absent,
    /// One header of plain digits.
    Plain(u64),
    /// The same number more than once: a list (`5, 5`) or several headers
    /// (RFC 9110 section 8.6 lets a recipient take it).
    Repeated(u64),
    /// Not digits, or differing numbers.
    Invalid,
}

impl Length {
    /// The length, unless absent or invalid.
    pub fn value(self) -> Option<u64> {
        match self {
            Length::Plain(n) | Length::Repeated(n) => Some(n),
            Length::Absent | Length::Invalid => None,
        }
    }

    fn add(self, value: &[u8]) -> Length {
        let read = match plain_length(value.trim_ascii()) {
            Some(n) => Length::Plain(n),
            None => {
                let mut found = None;
                for part in value.split(|&b| b == b',') {
                    match (plain_length(part.trim_ascii()), found) {
                        (Some(n), None) => found = Some(n),
                        (Some(n), Some(f)) if n == f => {}
                        _ => return Length::Invalid,
                    }
                }
                found.map_or(Length::Invalid, Length::Repeated)
            }
        };
        match (self, read) {
            (Length::Absent, read) => read,
            (Length::Invalid, _) | (_, Length::Invalid) => Length::Invalid,
            (before, read) if before.value() == read.value() => {
                before.value().map_or(Length::Invalid, Length::Repeated)
            }
            _ => Length::Invalid,
        }
    }
}

/// The elements of a comma-separated header list, trimmed, empty ones
/// left out (RFC 9110 section 5.6.1).
pub fn list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// Whether the last transfer coding listed is `chunked`: the one that
/// frames the body (RFC 9112 section 6.3), as hyper reads it.
pub fn last_coding_is_chunked(value: &[u8]) -> bool {
    value
        .rsplit(|&b| b == b',')
        .next()
        .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// What the `Connection` header values of a message say, read one value at
/// a time ([`ConnectionTokens::add`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionTokens {
    pub close: bool,
    pub keep_alive: bool,
    /// A token other than `close` and `keep-alive`: a header to drop.
    pub names_others: bool,
}

impl ConnectionTokens {
    pub fn add(&mut self, value: &[u8]) {
        for token in list(value) {
            let is_close = token.eq_ignore_ascii_case(b"close");
            let is_keep_alive = token.eq_ignore_ascii_case(b"keep-alive");
            self.close |= is_close;
            self.keep_alive |= is_keep_alive;
            self.names_others |= !is_close && !is_keep_alive;
        }
    }
}

/// What the headers of one head say about framing and the connection,
/// read one header at a time ([`FramingHeaders::read`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FramingHeaders {
    pub length: Length,
    /// A Transfer-Encoding header came, and whether the last one ends in
    /// `chunked` (hyper reads each line so, the last one wins).
    pub transfer_encoding: Option<bool>,
    pub connection: ConnectionTokens,
    pub upgrade: bool,
    pub expect: bool,
}

impl FramingHeaders {
    /// Reads one header (`name` in any case); `false` when it is none of
    /// the headers read here.
    // Once per header of every head: inlined into each loop.
    #[inline(always)]
    pub fn read(&mut self, name: &[u8], value: &[u8]) -> bool {
        match name.len() {
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                self.length = self.length.add(value);
            }
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                self.transfer_encoding = Some(last_coding_is_chunked(value));
            }
            10 if name.eq_ignore_ascii_case(b"connection") => self.connection.add(value),
            7 if name.eq_ignore_ascii_case(b"upgrade") => self.upgrade = true,
            6 if name.eq_ignore_ascii_case(b"expect") => self.expect = true,
            _ => return false,
        }
        true
    }

    /// Both Content-Length and Transfer-Encoding: a request-smuggling
    /// shape. Transfer-Encoding wins (RFC 9112 section 6.3), and the
    /// connection must close after the message.
    pub fn conflicting(&self) -> bool {
        self.transfer_encoding.is_some() && self.length != Length::Absent
    }

    /// Whether the connection may carry another message after this one
    /// (RFC 9112 section 9.3): HTTP/1.1 unless `close`, HTTP/1.0 only with
    /// `keep-alive`, never after conflicting framing.
    #[inline]
    pub fn keeps_alive(&self, version: Version) -> bool {
        let by_version = if version == Version::HTTP_11 {
            true
        } else {
            self.connection.keep_alive
        };
        by_version && !self.connection.close && !self.conflicting()
    }

    /// How a request body is delimited (RFC 9112 section 6.3), as hyper
    /// reads it: chunked when Transfer-Encoding ends in `chunked` (a
    /// Content-Length beside it is ignored), else by Content-Length, else
    /// none. `None`: the request is refused (another last coding, a bad
    /// length).
    pub fn request_body(&self) -> Option<Framing> {
        match (self.transfer_encoding, self.length) {
            (Some(true), _) => Some(Framing::Chunked(Chunk::Size)),
            (Some(false), _) | (None, Length::Invalid) => None,
            (None, length) => Some(match length.value() {
                None | Some(0) => Framing::None,
                Some(n) => Framing::Length(n),
            }),
        }
    }

    /// How an answer body is delimited (RFC 9112 section 6.3): none when
    /// `bodiless`, chunked when Transfer-Encoding ends in `chunked`, until
    /// the close for any other coding or without a length. `None`: a
    /// malformed Content-Length, refused whatever else the head says.
    pub fn answer_body(&self, bodiless: bool) -> Option<Framing> {
        if self.length == Length::Invalid {
            return None;
        }
        Some(match (bodiless, self.transfer_encoding) {
            (true, _) => Framing::None,
            (false, Some(true)) => Framing::Chunked(Chunk::Size),
            (false, Some(false)) => Framing::Close,
            (false, None) => match self.length.value() {
                None => Framing::Close,
                Some(0) => Framing::None,
                Some(n) => Framing::Length(n),
            },
        })
    }
}

/// Whether an answer has no body whatever its headers say (RFC 9112
/// section 6.3): one to a HEAD request, 1xx, 204 and 304.
#[inline]
pub fn bodiless(head_request: bool, status: StatusCode) -> bool {
    head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
}

/// Whether a bodiless answer may still carry its Content-Length: a HEAD
/// answer's and a 304's describe the body a GET would get (RFC 9110
/// section 8.6); a 1xx or 204 must not carry one.
#[inline]
pub fn keeps_length_without_body(status: StatusCode) -> bool {
    !status.is_informational() && status != StatusCode::NO_CONTENT
}

/// How a message body is delimited on the wire and, while it is read or
/// written, how much of it is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body, or nothing of it left.
    None,
    /// This many bytes (still) to come.
    Length(u64),
    /// Chunked coding; where its reader is.
    Chunked(Chunk),
    /// Until the connection closes.
    Close,
}

/// How a connection's read buffer grows: by `chunk` bytes when less than
/// `min_spare` is free. Growing reclaims the same allocation when nothing
/// split off it is still alive.
#[derive(Debug, Clone, Copy)]
pub struct Growth {
    pub min_spare: usize,
    pub chunk: usize,
}

impl Growth {
    /// Reads from `io` into `buf`, grown first if it runs low; `Ok(0)` at
    /// the end of the stream.
    pub fn poll_fill<R: AsyncRead + ?Sized>(
        self,
        io: Pin<&mut R>,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        if buf.capacity() - buf.len() < self.min_spare {
            buf.reserve(self.chunk);
        }
        tokio_util::io::poll_read_buf(io, cx, buf)
    }
}

/// Appends `n` in decimal.
#[inline]
pub fn push_decimal(out: &mut Vec<u8>, n: u64) {
    push_digits(out, n, 10);
}

/// Appends `n` in lower-case hex (a chunk size).
#[inline]
pub fn push_hex(out: &mut Vec<u8>, n: u64) {
    push_digits(out, n, 16);
}

fn push_digits(out: &mut Vec<u8>, mut n: u64, radix: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        // n % radix < 16.
        digits[at] = b"0123456789abcdef"[(n % radix) as usize];
        n /= radix;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Appends one header line.
// Once per header written: inlined into each loop.
#[inline(always)]
pub fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_read_strictly() {
        assert_eq!(plain_length(b"0"), Some(0));
        assert_eq!(
            plain_length(b"1234567890123456789"),
            Some(1_234_567_890_123_456_789)
        );
        for bad in [
            &b""[..],
            b"+4",
            b"-3",
            b"4 ",
            b"1,1",
            b"12345678901234567890",
        ] {
            assert_eq!(plain_length(bad), None, "{bad:?}");
        }
        let read = |values: &[&[u8]]| {
            let mut h = FramingHeaders::default();
            for v in values {
                h.read(b"Content-Length", v);
            }
            h.length
        };
        assert_eq!(read(&[]), Length::Absent);
        assert_eq!(read(&[b" 5 "]), Length::Plain(5));
        assert_eq!(read(&[b"5, 5"]), Length::Repeated(5));
        assert_eq!(read(&[b"5", b"5"]), Length::Repeated(5));
        for bad in [
            &[&b"5"[..], b"6"][..],
            &[b"5, 6"],
            &[b"+5"],
            &[b""],
            &[b"5,"],
        ] {
            assert_eq!(read(bad), Length::Invalid, "{bad:?}");
        }
    }

    #[test]
    fn framing_and_connection_headers_are_read_in_any_case() {
        let mut h = FramingHeaders::default();
        assert!(!h.read(b"Host", b"x"));
        assert!(h.read(b"TRANSFER-encoding", b"gzip, Chunked"));
        assert_eq!(h.transfer_encoding, Some(true));
        h.read(b"transfer-encoding", b"chunked, gzip");
        assert_eq!(h.transfer_encoding, Some(false), "the last line wins");
        assert!(!h.conflicting());
        h.read(b"content-length", b"3");
        assert!(h.conflicting() && !h.keeps_alive(Version::HTTP_11));

        let mut c = ConnectionTokens::default();
        c.add(b"Keep-Alive");
        assert!(c.keep_alive && !c.close && !c.names_others);
        c.add(b" close , x-trace,,");
        assert!(c.close && c.names_others);
        assert_eq!(list(b" a,, b ,").collect::<Vec<_>>(), [&b"a"[..], b"b"]);
    }

    #[test]
    fn keep_alive_follows_the_version_and_close_wins() {
        let with = |values: &[&[u8]], version| {
            let mut h = FramingHeaders::default();
            for v in values {
                h.read(b"connection", v);
            }
            h.keeps_alive(version)
        };
        assert!(with(&[], Version::HTTP_11));
        assert!(!with(&[], Version::HTTP_10));
        assert!(with(&[b"keep-alive"], Version::HTTP_10));
        assert!(!with(&[b"keep-alive", b"close"], Version::HTTP_10));
        assert!(!with(&[b"close"], Version::HTTP_11));
        assert!(!with(&[b"close", b"keep-alive"], Version::HTTP_11));
    }

    #[test]
    fn bodiless_answers() {
        assert!(bodiless(true, StatusCode::OK));
        for status in [100, 103, 204, 304] {
            let status = StatusCode::from_u16(status).expect("status");
            assert!(bodiless(false, status));
        }
        assert!(!bodiless(false, StatusCode::OK));
        assert!(keeps_length_without_body(StatusCode::NOT_MODIFIED));
        assert!(!keeps_length_without_body(StatusCode::NO_CONTENT));
    }

    #[test]
    fn spans_give_back_the_headers() {
        let head = Bytes::from_static(b"GET / HTTP/1.1\r\nX-A: 1\r\n\r\n");
        let mut headers = [httparse::EMPTY_HEADER; 4];
        let mut req = httparse::Request::new(&mut headers);
        assert!(req.parse(&head).is_ok_and(|s| s.is_complete()));
        let span = Span::of(&head, &req.headers[0]);
        let (name, value) = span.header(&head).expect("header");
        assert_eq!((name.as_str(), value.as_bytes()), ("x-a", &b"1"[..]));
    }

    #[test]
    fn digits() {
        for n in [0u64, 7, 10, 15, 16, 161, 255, 4096, u64::MAX] {
            let (mut dec, mut hex) = (Vec::new(), Vec::new());
            push_decimal(&mut dec, n);
            push_hex(&mut hex, n);
            assert_eq!(dec, n.to_string().into_bytes());
            assert_eq!(hex, format!("{n:x}").into_bytes());
        }
    }
}
