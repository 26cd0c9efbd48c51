//! Fault injection, bounded and on loopback: a factory that resets, stalls,
//! sends garbage or truncates; clients that dribble, smuggle, oversize, or
//! hold thousands of idle connections; SIGTERM under load. In every case the
//! sidecar answers clearly where it still can, never forwards what it must
//! not, and keeps serving.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use support::binary::Binary;
use support::client::TestClient;
use support::http::Http;
use support::raw::RawUpstream;
use support::upstream::{FakeUpstream, echo_answer};
use support::wire::{Wire, read_head};
use support::{eventually, sidecar};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const OK_ANSWER: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{\"ok\":true}";

/// The first connection misbehaves with `bad`; later ones answer properly.
async fn first_connection_misbehaves(bad: &'static [u8], then: After) -> RawUpstream {
    RawUpstream::start(move |mut s, n| async move {
        let _ = read_head(&mut s).await;
        if n > 0 {
            let _ = s.write_all(OK_ANSWER).await;
            let _ = s.flush().await;
            // Keep the connection until the peer closes it.
            let mut sink = [0u8; 64];
            while matches!(s.read(&mut sink).await, Ok(k) if k > 0) {}
            return;
        }
        let _ = s.write_all(bad).await;
        let _ = s.flush().await;
        match then {
            After::Reset => {
                // An abortive close: SO_LINGER 0 makes the kernel send RST.
                let _ = socket2_linger_zero(&s);
                drop(s);
            }
            After::Close => drop(s),
            After::Stall => {
                // Hold the connection open without sending anything more.
                let mut sink = [0u8; 64];
                while matches!(s.read(&mut sink).await, Ok(k) if k > 0) {}
            }
        }
    })
    .await
}

#[derive(Clone, Copy)]
enum After {
    Reset,
    Close,
    Stall,
}

/// Sends a GET and reads the whole body, reporting a broken body as `Err`.
async fn get_whole(url: &str) -> Result<(StatusCode, Bytes), String> {
    let res = Http::new().get(url).await.map_err(|e| e.to_string())?;
    Ok((res.status, res.body))
}

async fn still_serves(url: &str) {
    let (status, body) = get_whole(url)
        .await
        .expect("a healthy answer after the fault");
    assert_eq!(status, 200);
    assert_eq!(body, Bytes::from_static(b"{\"ok\":true}"));
}

/// The factory's first answer breaks (`bad`, then `then`): that answer
/// must fail as a whole (`why`), and the next one is healthy.
async fn only_the_broken_answer_fails(
    bad: &'static [u8],
    then: After,
    tweak: impl FnOnce(&mut factory_sidecar::config::Config),
    why: &str,
) {
    let up = first_connection_misbehaves(bad, then).await;
    let sc = sidecar::start(sidecar::config(&up.url(), |c| {
        sidecar::plain(c);
        tweak(c);
    }))
    .await;
    let first = get_whole(&format!("{}/api/docs", sc.url)).await;
    assert!(first.is_err(), "{why}: {first:?}");
    still_serves(&format!("{}/api/docs", sc.url)).await;
}

#[tokio::test]
async fn a_factory_reset_mid_body_breaks_only_that_answer() {
    only_the_broken_answer_fails(
        b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n0123456789",
        After::Reset,
        |_| {},
        "a truncated body must not look complete",
    )
    .await;
}

#[tokio::test]
async fn a_truncated_chunked_body_breaks_only_that_answer() {
    only_the_broken_answer_fails(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n",
        After::Close,
        |_| {},
        "a truncated chunked body must not look complete",
    )
    .await;
}

#[tokio::test]
async fn a_factory_stalling_after_headers_is_cut_by_the_read_timeout() {
    only_the_broken_answer_fails(
        b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n0123456789",
        After::Stall,
        |c| c.upstream.body_read_timeout = Duration::from_millis(300),
        "a stalled body must be cut, not completed",
    )
    .await;
}

#[tokio::test]
async fn garbage_from_the_factory_gets_502_json() {
    let up = first_connection_misbehaves(b"HELLO I AM NOT HTTP\r\n\r\n", After::Close).await;
    let sc = sidecar::start(sidecar::config(&up.url(), sidecar::plain)).await;
    let res = TestClient::http1()
        .get(&format!("{}/api/docs", sc.url))
        .await;
    assert_eq!(res.status, StatusCode::BAD_GATEWAY);
    assert_eq!(res.header("x-sidecar-error"), Some("unreachable"));
    assert!(res.json()["message"].is_string());
    still_serves(&format!("{}/api/docs", sc.url)).await;
}

#[tokio::test]
async fn a_factory_closing_idle_pooled_connections_costs_nothing() {
    // Every connection answers one request (keep-alive advertised) and closes.
    let up = RawUpstream::start(|mut s, _| async move {
        let _ = read_head(&mut s).await;
        let _ = s.write_all(OK_ANSWER).await;
        let _ = s.flush().await;
        drop(s);
    })
    .await;
    let sc = sidecar::start(sidecar::config(&up.url(), |_| {})).await;
    for i in 0..20 {
        let (status, _) = get_whole(&format!("{}/api/docs?i={i}", sc.url))
            .await
            .expect("every request answered");
        assert_eq!(status, 200, "request {i}");
    }
    assert!(
        up.connection_count() >= 20,
        "a fresh connection per request"
    );
}

#[tokio::test]
async fn slowloris_heads_are_cut_by_the_header_read_timeout() {
    let up = FakeUpstream::echo().await;
    let sc = sidecar::start(sidecar::config(&up.url(), |c| {
        c.server.header_read_timeout = Duration::from_millis(300);
    }))
    .await;
    let mut s = TcpStream::connect(sc.sidecar.proxy_addr())
        .await
        .expect("connect");
    s.write_all(b"GET /api/docs HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .expect("write");
    // Dribble a byte now and then; the server must give up on the head.
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 256];
        loop {
            if s.write_all(b"a").await.is_err() {
                return;
            }
            match tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => return,
                Ok(Ok(_)) => {} // an error status (408) may come before the close
                Err(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the dribbling connection was closed");
    assert_eq!(up.request_count(), 0, "nothing was forwarded");
    assert_eq!(
        TestClient::http1()
            .get(&format!("{}/api/docs", sc.url))
            .await
            .status,
        200
    );
}

/// A request framed by both Content-Length and Transfer-Encoding is refused
/// with a 400 JSON answer, nothing of it is forwarded, the connection is
/// closed after the answer (so nothing behind it is read as a request), and
/// the sidecar keeps serving.
#[tokio::test]
async fn conflicting_content_length_and_transfer_encoding_get_400_and_nothing_is_forwarded() {
    let up = FakeUpstream::echo().await;
    let sc = sidecar::start(sidecar::config(&up.url(), |_| {})).await;
    for conflicting in [
        &b"POST /api/order HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &b"POST /api/order HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"[..],
    ] {
        let text = Wire::exchange(sc.sidecar.proxy_addr(), conflicting).await;
        assert!(text.starts_with("HTTP/1.1 400"), "{text}");
        assert!(text.contains("x-sidecar-error: malformed-request"), "{text}");
        assert!(text.contains("\"message\""), "a JSON answer: {text}");
        assert!(text.contains("connection: close"), "{text}");
        assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "one answer only: {text}");
    }
    assert_eq!(up.request_count(), 0, "nothing was forwarded");

    // The same conflict behind a good request on a kept-alive connection:
    // the first is forwarded, the second refused.
    let text = Wire::exchange(
        sc.sidecar.proxy_addr(),
        b"POST /api/order HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\nPOST /api/order HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(text.matches("HTTP/1.1 400").count(), 1, "{text}");
    let seen = up.requests();
    assert_eq!(seen.len(), 1, "only the good request was forwarded");
    assert_eq!(seen[0].body, Bytes::from_static(b"ok"));
    assert_eq!(
        TestClient::http1()
            .get(&format!("{}/api/docs", sc.url))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn oversized_headers_get_431() {
    let up = FakeUpstream::echo().await;
    let sc = sidecar::start(sidecar::config(&up.url(), |c| {
        c.server.max_header_bytes = 16 * 1024
    }))
    .await;
    let big = "a".repeat(64 * 1024);
    let req = format!("GET /api/docs HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
    let text = Wire::exchange(sc.sidecar.proxy_addr(), req.as_bytes()).await;
    assert!(
        text.starts_with("HTTP/1.1 431"),
        "{}",
        &text[..text.len().min(200)]
    );
    assert_eq!(up.request_count(), 0);
    assert_eq!(
        TestClient::http1()
            .get(&format!("{}/api/docs", sc.url))
            .await
            .status,
        200
    );
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_connections_neither_exhaust_nor_leak() {
    const CONNECTIONS: usize = 10_000;
    let up = FakeUpstream::echo().await;
    let sc = sidecar::start(sidecar::config(&up.url(), |c| {
        c.server.max_connections = 1000;
        c.server.header_read_timeout = Duration::from_secs(1);
    }))
    .await;
    let addr = sc.sidecar.proxy_addr();
    let baseline = open_fds();

    // Open them all at once and hold them idle.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CONNECTIONS {
        tasks.spawn(async move {
            tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
                .await
                .ok()
                .and_then(Result::ok)
        });
    }
    let mut held = Vec::with_capacity(CONNECTIONS);
    while let Some(r) = tasks.join_next().await {
        if let Ok(Some(s)) = r {
            held.push(s);
        }
    }
    assert!(
        held.len() >= 1000,
        "at least max_connections were accepted ({})",
        held.len()
    );

    // While they sit idle, a real request is still answered once idle ones
    // are timed out and slots free up.
    let url = format!("{}/api/docs", sc.url);
    eventually(
        "a request to be served beside the idle flood",
        Duration::from_secs(60),
        || {
            let url = url.clone();
            async move {
                let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
                let req = Request::get(&url).body(Full::default()).ok()?;
                let res = tokio::time::timeout(Duration::from_secs(2), client.request(req))
                    .await
                    .ok()?
                    .ok()?;
                (res.status() == 200).then_some(())
            }
        },
    )
    .await;

    drop(held);
    eventually(
        "file descriptors to be released",
        Duration::from_secs(60),
        || async move { (open_fds() <= baseline + 50).then_some(()) },
    )
    .await;
    // And it still serves.
    assert_eq!(TestClient::http1().get(&url).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_steady_load_loses_no_in_flight_request() {
    let up = FakeUpstream::start(|r| async move {
        // A little work so requests are really in flight when SIGTERM lands.
        tokio::time::sleep(Duration::from_millis(5)).await;
        echo_answer(&r)
    })
    .await;
    // The serving line is at info; the rest of the log stays quiet under load.
    let bin = Binary::start(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_grace = \"15s\"\n[upstream]\nurl = \"{}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[log]\nlevel = \"warn,factory_sidecar::app=info\"\n",
        up.url()
    ))
    .await;
    bin.ready().await;

    // Eight clients, each sending numbered orders until the sidecar is gone.
    let url = format!("{}/api/order", bin.url);
    let mut clients = tokio::task::JoinSet::new();
    for c in 0..8 {
        let url = url.clone();
        clients.spawn(async move {
            let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
            let mut ok = Vec::new();
            for i in 0..2000 {
                let id = format!("{c}-{i}");
                let req = Request::builder()
                    .method(Method::POST)
                    .uri(&url)
                    .header("x-order-id", &id)
                    .body(Full::new(Bytes::from_static(b"{}")))
                    .expect("request");
                let Ok(Ok(res)) =
                    tokio::time::timeout(Duration::from_secs(20), client.request(req)).await
                else {
                    break;
                };
                let status = res.status();
                let complete = res.into_body().collect().await.is_ok();
                if status == 200 && complete {
                    ok.push(id);
                } else {
                    break;
                }
            }
            ok
        });
    }
    eventually("steady load", Duration::from_secs(30), || {
        let up = up.clone();
        async move { (up.request_count() >= 200).then_some(()) }
    })
    .await;
    bin.signal("TERM");

    let mut answered = HashSet::new();
    while let Some(r) = clients.join_next().await {
        answered.extend(r.expect("client task"));
    }
    assert_eq!(bin.exit().await.0, Some(0));
    let forwarded: Vec<String> = up
        .requests()
        .iter()
        .filter_map(|r| {
            r.headers
                .get("x-order-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .collect();
    let lost: Vec<&String> = forwarded
        .iter()
        .filter(|id| !answered.contains(*id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} forwarded orders got no answer: {:?}",
        lost.len(),
        forwarded.len(),
        &lost[..lost.len().min(10)]
    );
    assert!(answered.len() >= 200);
}

/// Sets SO_LINGER to zero so dropping the socket resets the connection.
fn socket2_linger_zero(s: &TcpStream) -> std::io::Result<()> {
    socket2::SockRef::from(s).set_linger(Some(Duration::ZERO))
}
