//! The two HTTP/1.1 server paths side by side: every request of one table
//! is sent, byte for byte, to a sidecar on its fast path and to a sidecar
//! that hands every connection to hyper (`ServeOptions::fast_path` off),
//! both in front of the same raw upstream. What the upstream saw (method,
//! target, version, headers, body) and what the client got (status line,
//! headers but `date`, framing, body, whether the connection stayed open)
//! must be the same. Where the paths may legitimately differ, the case
//! names the difference and says why; nothing else may differ.
//!
//! Requests the fast path does not take (chunked or conflicting framing,
//! `Expect`, malformed heads) are handed to hyper on that sidecar too:
//! for them the table checks that the hand-over loses nothing.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use support::raw::RawUpstream;
use support::sidecar;
use support::wire::{Answer, Framing, PROBE_PATH, Request, Wire};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// A part of an exchange that may differ between the two paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// The answer's status-line version.
    Version,
    /// A header of the answers.
    Header(&'static str),
    /// How the answer body was framed (the body itself must still match).
    Framing,
}

/// One row of the table.
struct Case {
    name: &'static str,
    /// What the client writes, in one write.
    send: Vec<u8>,
    /// The answers to read, `true` for one to a HEAD request.
    answers: &'static [bool],
    /// Where the paths may differ, and why.
    differs: &'static [(Part, &'static str)],
}

fn case(name: &'static str, send: impl AsRef<[u8]>, answers: &'static [bool]) -> Case {
    Case {
        name,
        send: send.as_ref().to_vec(),
        answers,
        differs: &[],
    }
}

impl Case {
    fn differs(mut self, differs: &'static [(Part, &'static str)]) -> Case {
        self.differs = differs;
        self
    }
}

const HTTP_1_0_VERSION: (Part, &str) = (
    Part::Version,
    "hyper answers an HTTP/1.0 client with an HTTP/1.0 status line; the fast path \
     with HTTP/1.1, the version RFC 9110 section 2.5 says a server sends",
);
const HTTP_1_0_CLOSE: (Part, &str) = (
    Part::Header("connection"),
    "to an HTTP/1.0 client that did not ask for keep-alive the fast path says \
     `connection: close`, hyper says nothing; both close, which the client expects",
);
const HTTP_1_0_STREAM: (Part, &str) = (
    Part::Header("connection"),
    "hyper writes `connection: keep-alive` on a close-delimited answer to an \
     HTTP/1.0 keep-alive client, then closes; the fast path says `close`",
);
const SMALL_STREAM: (Part, &str) = (
    Part::Framing,
    "an answer of unknown length that has fully arrived before the head leaves \
     goes out with its exact Content-Length on the fast path; hyper streams it chunked",
);

/// Every request the table sends, and what may differ.
fn table() -> Vec<Case> {
    let many_headers: String = (0..101).map(|i| format!("X-H{i}: {i}\r\n")).collect();
    let big_header = "a".repeat(70 * 1024);
    vec![
        case("GET", "GET /plain HTTP/1.1\r\nHost: x\r\n\r\n", &[false]),
        case(
            "POST with a body",
            "POST /plain?q=1 HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
            &[false],
        ),
        case(
            "POST without a body",
            "POST /plain HTTP/1.1\r\nHost: x\r\n\r\n",
            &[false],
        ),
        case(
            "HEAD then GET, pipelined",
            "HEAD /plain HTTP/1.1\r\nHost: x\r\n\r\nGET /plain HTTP/1.1\r\nHost: x\r\n\r\n",
            &[true, false],
        ),
        case(
            "HEAD of a chunked answer",
            "HEAD /chunked HTTP/1.1\r\nHost: x\r\n\r\n",
            &[true],
        ),
        case(
            "204 with a Content-Length from the factory",
            "DELETE /no-content HTTP/1.1\r\nHost: x\r\n\r\n",
            &[false],
        ),
        case(
            "304 with a Content-Length from the factory",
            "GET /not-modified HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"v1\"\r\n\r\n",
            &[false],
        )
        .differs(&[(
            Part::Header("content-length"),
            "hyper drops a 304's Content-Length (it sees no body to send); the fast \
             path passes the factory's on, as RFC 9110 section 8.6 allows",
        )]),
        case(
            "empty 200",
            "GET /empty HTTP/1.1\r\nHost: x\r\n\r\n",
            &[false],
        ),
        case(
            "multi-valued headers both ways",
            "GET /multi HTTP/1.1\r\nHost: x\r\nX-Multi: 1\r\nx-multi: 2\r\nAccept: a/b, c/d\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n",
            &[false],
        ),
        case(
            "Connection-named and hop-by-hop headers both ways",
            "GET /hop HTTP/1.1\r\nHost: x\r\nConnection: X-Secret, keep-alive\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Authorization: Basic eA==\r\nX-Kept: 1\r\n\r\n",
            &[false],
        ),
        case(
            "x-forwarded-for from earlier hops",
            "GET /plain HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.7\r\nX-Forwarded-For: 198.51.100.1\r\n\r\n",
            &[false],
        ),
        case(
            "absolute-form target",
            "GET http://elsewhere.example:9/plain?x=1 HTTP/1.1\r\nHost: elsewhere.example\r\n\r\n",
            &[false],
        ),
        case(
            "an empty line before the request",
            "\r\nGET /plain HTTP/1.1\r\nHost: x\r\n\r\n",
            &[false],
        ),
        case(
            "Connection: close",
            "GET /plain HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            &[false],
        ),
        case(
            "keep-alive then close on a second Connection line",
            "GET /plain HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n",
            &[false],
        ),
        case(
            "HTTP/1.0 keep-alive",
            "GET /plain HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
            &[false],
        )
        .differs(&[HTTP_1_0_VERSION]),
        case(
            "HTTP/1.0 without keep-alive",
            "GET /plain HTTP/1.0\r\n\r\n",
            &[false],
        )
        .differs(&[HTTP_1_0_VERSION, HTTP_1_0_CLOSE]),
        case(
            "a streamed chunked answer",
            "GET /chunked HTTP/1.1\r\nHost: x\r\n\r\n",
            &[false],
        ),
        case(
            "a streamed close-delimited answer",
            "GET /until-close HTTP/1.1\r\nHost: x\r\n\r\n",
            &[false],
        ),
        case(
            "a streamed answer to an HTTP/1.0 keep-alive client",
            "GET /chunked HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
            &[false],
        )
        .differs(&[HTTP_1_0_VERSION, HTTP_1_0_STREAM]),
        case(
            "a small chunked answer",
            "GET /small-chunked HTTP/1.1\r\nHost: x\r\n\r\n",
            &[false],
        )
        .differs(&[SMALL_STREAM]),
        case(
            "a large answer with a length",
            "GET /large HTTP/1.1\r\nHost: x\r\n\r\n",
            &[false],
        ),
        case(
            "a chunked request body",
            "POST /plain HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
            &[false],
        ),
        case(
            "Expect: 100-continue",
            "POST /plain HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok",
            &[false, false],
        ),
        case(
            "a body over max_body_bytes",
            format!(
                "POST /plain HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n{}",
                "b".repeat(2000)
            ),
            &[false],
        ),
        case(
            "Upgrade asked for, not granted",
            "GET /plain HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            &[false],
        ),
        case(
            "an extension method and no Host",
            "PURGE /plain HTTP/1.1\r\n\r\n",
            &[false],
        ),
        case(
            "a chunked body with trailers",
            "POST /plain HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\nX-Trailer: 1\r\n\r\n",
            &[false],
        ),
        case(
            "Transfer-Encoding on HTTP/1.0",
            "POST /plain HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            &[false],
        ),
        case(
            "an obsolete folded header line",
            "GET /plain HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n",
            &[false],
        ),
        case(
            "Content-Length twice, the same",
            "POST /plain HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
            &[false],
        ),
        case(
            "Content-Length twice, differing",
            "POST /plain HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nokk",
            &[false],
        ),
        case(
            "Content-Length as a list",
            "POST /plain HTTP/1.1\r\nHost: x\r\nContent-Length: 2, 2\r\n\r\nok",
            &[false],
        ),
        case(
            "Content-Length with a sign",
            "POST /plain HTTP/1.1\r\nHost: x\r\nContent-Length: +2\r\n\r\nok",
            &[false],
        ),
        case(
            "Content-Length and Transfer-Encoding (smuggling)",
            "POST /plain HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
            &[false],
        ),
        case(
            "Transfer-Encoding and Content-Length (smuggling)",
            "POST /plain HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
            &[false],
        ),
        case(
            "Transfer-Encoding not ending in chunked",
            "POST /plain HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc",
            &[false],
        ),
        case(
            "a malformed chunk size",
            "POST /plain HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n\r\n",
            &[false],
        ),
        case(
            "a space in a header name",
            "GET /plain HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n",
            &[false],
        ),
        case(
            "a malformed request line",
            "GET /plain HTTP/9.9\r\nHost: x\r\n\r\n",
            &[false],
        ),
        case(
            "more than 100 headers",
            format!("GET /plain HTTP/1.1\r\nHost: x\r\n{many_headers}\r\n"),
            &[false],
        ),
        case(
            "a head over max_header_bytes",
            format!("GET /plain HTTP/1.1\r\nHost: x\r\nX-Big: {big_header}\r\n\r\n"),
            &[false],
        ),
    ]
}

/// What the upstream answers, by path: the status line and headers, and
/// the body in the pieces it is written in.
fn answer_for(path: &str) -> (&'static str, Vec<Vec<u8>>) {
    match path {
        "/multi" => (
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nset-cookie: a=1\r\nset-cookie: b=2\r\ncache-control: no-cache, no-store\r\ncontent-length: 2\r\n",
            vec![b"ok".to_vec()],
        ),
        "/hop" => (
            "HTTP/1.1 200 OK\r\nconnection: x-drop, keep-alive\r\nx-drop: 1\r\nkeep-alive: timeout=5\r\nx-keep: 1\r\ncontent-length: 2\r\n",
            vec![b"ok".to_vec()],
        ),
        "/no-content" => (
            "HTTP/1.1 204 No Content\r\nx-a: 1\r\ncontent-length: 0\r\n",
            vec![],
        ),
        "/not-modified" => (
            "HTTP/1.1 304 Not Modified\r\netag: \"v1\"\r\ncontent-length: 5\r\n",
            vec![],
        ),
        "/empty" => ("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n", vec![]),
        // Streamed, and longer than the fast path gathers before its head.
        "/chunked" => {
            let piece = vec![b'c'; 20_000];
            let mut pieces: Vec<Vec<u8>> = (0..5)
                .map(|_| [format!("{:x}\r\n", piece.len()).as_bytes(), &piece, b"\r\n"].concat())
                .collect();
            pieces.push(b"0\r\n\r\n".to_vec());
            (
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n",
                pieces,
            )
        }
        "/until-close" => (
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n",
            (0..5).map(|_| vec![b'u'; 20_000]).collect(),
        ),
        "/small-chunked" => (
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n",
            vec![b"5\r\nhello\r\n".to_vec(), b"0\r\n\r\n".to_vec()],
        ),
        "/large" => (
            "HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n",
            (0..5).map(|_| vec![b'l'; 20_000]).collect(),
        ),
        _ => (
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n",
            vec![b"hello".to_vec()],
        ),
    }
}

/// The upstream's side of one connection: records every request but the
/// probe, answers by path, closes after a close-delimited answer.
async fn upstream(stream: TcpStream, seen: Arc<Mutex<Vec<Request>>>) {
    let mut wire = Wire::new(stream);
    while let Some(req) = wire.request().await {
        let path = req.target.split('?').next().unwrap_or_default().to_owned();
        if path != PROBE_PATH {
            seen.lock().push(req.clone());
        }
        let (head, pieces) = answer_for(&path);
        if wire.stream.write_all(head.as_bytes()).await.is_err()
            || wire.stream.write_all(b"\r\n").await.is_err()
        {
            return;
        }
        if req.method != "HEAD" {
            for piece in pieces {
                if wire.stream.write_all(&piece).await.is_err()
                    || wire.stream.flush().await.is_err()
                {
                    return;
                }
                tokio::task::yield_now().await;
            }
        }
        if path == "/until-close" && req.method != "HEAD" {
            return;
        }
    }
}

/// An answer with what may differ taken out.
#[derive(Debug, PartialEq, Eq)]
struct SeenAnswer {
    version: Option<String>,
    status: u16,
    /// Per name, the values in order (`date` left out: it is the time).
    headers: BTreeMap<String, Vec<String>>,
    framing: Option<Framing>,
    body: String,
}

/// A body short enough to print: itself, or its length, start and a hash.
fn digest(body: &[u8]) -> String {
    if body.len() <= 200 {
        return String::from_utf8_lossy(body).into_owned();
    }
    let hash = body.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let start = String::from_utf8_lossy(&body[..20]);
    format!("{} bytes {start:?}... fnv {hash:x}", body.len())
}

/// A request as the upstream saw it.
#[derive(Debug, PartialEq, Eq)]
struct SeenRequest {
    line: String,
    headers: BTreeMap<String, Vec<String>>,
    body: String,
}

/// Everything one path did with a case.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    upstream: Vec<SeenRequest>,
    answers: Vec<SeenAnswer>,
    open: bool,
}

fn by_name(headers: &[(String, String)]) -> BTreeMap<String, Vec<String>> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in headers {
        map.entry(name.clone()).or_default().push(value.clone());
    }
    map
}

fn seen_answer(answer: Answer, differs: &[(Part, &str)]) -> SeenAnswer {
    let may_differ = |part: Part| differs.iter().any(|(p, _)| *p == part);
    let mut headers = by_name(&answer.headers);
    headers.remove("date");
    for (part, _) in differs {
        if let Part::Header(name) = part {
            headers.remove(*name);
        }
    }
    let mut framing = Some(answer.framing);
    if may_differ(Part::Framing) {
        headers.remove("content-length");
        headers.remove("transfer-encoding");
        framing = None;
    }
    SeenAnswer {
        version: (!may_differ(Part::Version)).then_some(answer.version),
        status: answer.status,
        headers,
        framing,
        body: digest(&answer.body),
    }
}

/// Sends `case` to the sidecar at `addr` on a new connection.
async fn observe(addr: SocketAddr, seen: &Mutex<Vec<Request>>, case: &Case) -> Seen {
    seen.lock().clear();
    let mut wire = Wire::connect(addr).await;
    wire.send(&case.send).await;
    let mut answers = Vec::new();
    for &head_request in case.answers {
        let answer = wire
            .answer(head_request)
            .await
            .unwrap_or_else(|| panic!("{}: no answer", case.name));
        answers.push(seen_answer(answer, case.differs));
    }
    let open = wire.still_open().await;
    let upstream = seen
        .lock()
        .drain(..)
        .map(|r| SeenRequest {
            line: format!("{} {} {}", r.method, r.target, r.version),
            headers: by_name(&r.headers),
            body: digest(&r.body),
        })
        .collect();
    Seen {
        upstream,
        answers,
        open,
    }
}

#[tokio::test]
async fn the_fast_path_and_hyper_agree_on_every_request() {
    let seen: Arc<Mutex<Vec<Request>>> = Arc::default();
    let log = Arc::clone(&seen);
    let up = RawUpstream::start(move |stream, _| upstream(stream, Arc::clone(&log))).await;
    let config = || {
        sidecar::config(&up.url(), |c| {
            c.retry.max_attempts = 1;
            c.server.max_header_bytes = 16 * 1024;
            c.server.max_body_bytes = 1024;
        })
    };
    let fast = sidecar::start(config()).await;
    let hyper = sidecar::start_with(config(), |o| o.fast_path = false).await;

    let mut differences = Vec::new();
    for case in table() {
        let on_fast = observe(fast.sidecar.proxy_addr(), &seen, &case).await;
        let on_hyper = observe(hyper.sidecar.proxy_addr(), &seen, &case).await;
        if on_fast != on_hyper {
            differences.push(format!(
                "{}:\n  fast path: {on_fast:?}\n  hyper:     {on_hyper:?}",
                case.name
            ));
        }
    }
    assert!(
        differences.is_empty(),
        "the paths differ:\n{}",
        differences.join("\n")
    );
}
