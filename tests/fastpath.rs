//! The HTTP/1.1 fast path on the wire, with the raw client of
//! `support::wire`: keep-alive and pipelining, HTTP/1.0, `Connection:
//! close`, HEAD, a hand-over to hyper in the middle of a connection, a request body that stops, a drain that
//! closes idle connections, and answers streamed in chunks.

mod support;

use std::time::Duration;

use bytes::Bytes;
use support::sidecar;
use support::upstream::{FakeUpstream, answer};
use support::wire::{Wire, read_head};
use tokio::io::AsyncWriteExt;

fn plain(c: &mut factory_sidecar::config::Config) {
    c.retry.max_attempts = 1;
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let up = FakeUpstream::echo().await;
    let sc = sidecar::start(sidecar::config(&up.url(), plain)).await;
    let mut c = Wire::connect(sc.sidecar.proxy_addr()).await;
    let mut requests = Vec::new();
    for i in 0..5 {
        requests.extend_from_slice(
            format!("POST /api/order?n={i} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{i}{i}")
                .as_bytes(),
        );
    }
    c.send(&requests).await;
    for i in 0..5 {
        let res = c.answer(false).await.expect("an answer");
        assert_eq!(res.status, 200);
        let echo: serde_json::Value = serde_json::from_slice(&res.body).expect("json");
        assert_eq!(echo["uri"], format!("/api/order?n={i}"));
        assert_eq!(res.header("x-sidecar-attempts"), Some("1"));
        assert!(
            res.header("connection").is_none(),
            "keep-alive is the default"
        );
    }
    let seen = up.requests();
    assert_eq!(seen.len(), 5);
    assert_eq!(seen[3].body, Bytes::from_static(b"33"));
}

#[tokio::test]
async fn http_1_0_keeps_alive_only_when_asked_and_close_closes() {
    let up = FakeUpstream::echo().await;
    let sc = sidecar::start(sidecar::config(&up.url(), plain)).await;

    let mut c = Wire::connect(sc.sidecar.proxy_addr()).await;
    for _ in 0..2 {
        c.send(b"GET /api/docs HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .await;
        let res = c.answer(false).await.expect("an answer");
        assert_eq!(res.status, 200);
        assert_eq!(res.header("connection"), Some("keep-alive"));
    }

    let mut c = Wire::connect(sc.sidecar.proxy_addr()).await;
    c.send(b"GET /api/docs HTTP/1.0\r\n\r\n").await;
    let res = c.answer(false).await.expect("an answer");
    assert_eq!(res.header("connection"), Some("close"));
    assert!(c.closed().await, "HTTP/1.0 without keep-alive is closed");

    let mut c = Wire::connect(sc.sidecar.proxy_addr()).await;
    c.send(b"GET /api/docs HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    let res = c.answer(false).await.expect("an answer");
    assert_eq!(res.status, 200);
    assert_eq!(res.header("connection"), Some("close"));
    assert!(c.closed().await);
    assert!(
        up.requests()
            .iter()
            .all(|r| !r.headers.contains_key("connection")),
        "Connection is hop-by-hop: never forwarded"
    );
}

#[tokio::test]
async fn head_answers_keep_their_length_and_carry_no_body() {
    let up = FakeUpstream::start(|_| async {
        let mut res = answer(200, "{\"pizza\":\"veggie\"}");
        res.headers_mut()
            .insert("content-length", http::HeaderValue::from_static("18"));
        res
    })
    .await;
    let sc = sidecar::start(sidecar::config(&up.url(), plain)).await;
    let mut c = Wire::connect(sc.sidecar.proxy_addr()).await;
    c.send(b"HEAD /api/order/menu HTTP/1.1\r\nHost: x\r\n\r\nGET /api/order/menu HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let head = c.answer(true).await.expect("the HEAD answer");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("18"));
    // The next answer follows at once: the HEAD answer had no body.
    let get = c.answer(false).await.expect("the GET answer");
    assert_eq!(get.body, b"{\"pizza\":\"veggie\"}");
}

#[tokio::test]
async fn a_request_the_fast_path_leaves_is_served_by_hyper_on_the_same_connection() {
    let up = FakeUpstream::echo().await;
    let sc = sidecar::start(sidecar::config(&up.url(), plain)).await;
    let mut c = Wire::connect(sc.sidecar.proxy_addr()).await;
    c.send(b"POST /api/order HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nokPOST /api/order HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /api/docs HTTP/1.1\r\nHost: x\r\n\r\n").await;
    for _ in 0..3 {
        assert_eq!(c.answer(false).await.expect("an answer").status, 200);
    }
    let bodies: Vec<Bytes> = up.requests().into_iter().map(|r| r.body).collect();
    assert_eq!(
        bodies,
        [
            Bytes::from_static(b"ok"),
            Bytes::from_static(b"abc"),
            Bytes::new()
        ]
    );
}

#[tokio::test]
async fn a_body_that_stops_is_cut_and_nothing_is_forwarded() {
    let up = FakeUpstream::echo().await;
    let sc = sidecar::start(sidecar::config(&up.url(), |c| {
        plain(c);
        c.server.header_read_timeout = Duration::from_millis(300);
    }))
    .await;
    let mut c = Wire::connect(sc.sidecar.proxy_addr()).await;
    c.send(b"POST /api/order HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        .await;
    assert!(c.closed().await, "the connection is closed");
    assert_eq!(up.request_count(), 0);

    // A body that comes in pieces, each within the limit, is taken whole.
    let mut c = Wire::connect(sc.sidecar.proxy_addr()).await;
    c.send(b"POST /api/order HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nab")
        .await;
    for piece in [&b"cd"[..], b"ef"] {
        tokio::task::yield_now().await;
        c.send(piece).await;
    }
    assert_eq!(c.answer(false).await.expect("an answer").status, 200);
    assert_eq!(up.requests()[0].body, Bytes::from_static(b"abcdef"));
}

#[tokio::test]
async fn draining_closes_idle_connections_at_once() {
    let up = FakeUpstream::echo().await;
    // Only the drain can close the idle connection before the read gives up.
    let sc = sidecar::start(sidecar::config(&up.url(), |c| {
        plain(c);
        c.server.header_read_timeout = Duration::from_secs(60);
        c.server.shutdown_grace = Duration::from_secs(60);
    }))
    .await;
    let mut idle = Wire::connect(sc.sidecar.proxy_addr()).await;
    idle.send(b"GET /api/docs HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    assert_eq!(idle.answer(false).await.expect("an answer").status, 200);
    sc.sidecar.shutdown();
    assert!(idle.closed().await);
    sc.sidecar.stopped().await;
}

#[tokio::test]
async fn streamed_answers_of_unknown_length_go_out_chunked() {
    // A raw factory answering in chunks, with pauses between them.
    let up = support::raw::RawUpstream::start(|mut s, _| async move {
        // Every request on the connection gets the same chunked answer.
        while !read_head(&mut s).await.is_empty() {
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n")
                .await;
            for part in ["first ", "second ", "third"] {
                let _ = s
                    .write_all(format!("{:x}\r\n{part}\r\n", part.len()).as_bytes())
                    .await;
                let _ = s.flush().await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let _ = s.write_all(b"0\r\n\r\n").await;
        }
    })
    .await;
    let sc = sidecar::start(sidecar::config(&up.url(), plain)).await;
    let mut c = Wire::connect(sc.sidecar.proxy_addr()).await;
    c.send(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let res = c.answer(false).await.expect("an answer");
    assert_eq!(res.header("transfer-encoding"), Some("chunked"));
    assert_eq!(res.body, b"first second third");

    // The same to an HTTP/1.0 client: no chunking, delimited by the close.
    let mut c = Wire::connect(sc.sidecar.proxy_addr()).await;
    c.send(b"GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .await;
    let res = c.answer(true).await.expect("an answer head");
    assert_eq!(res.header("connection"), Some("close"));
    assert!(res.header("transfer-encoding").is_none());
    while c.fill().await {}
    assert_eq!(c.buf, b"first second third");
}

#[tokio::test]
async fn the_sidecars_own_answers_carry_a_date() {
    // Nothing listens: the sidecar answers 502 itself.
    let port = support::free_port();
    let sc = sidecar::start(sidecar::config(&format!("http://127.0.0.1:{port}"), plain)).await;
    let mut c = Wire::connect(sc.sidecar.proxy_addr()).await;
    c.send(b"POST /api/order HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        .await;
    let res = c.answer(false).await.expect("an answer");
    assert_eq!(res.status, 502);
    assert!(res.header("date").is_some_and(|d| d.ends_with(" GMT")));
    assert_eq!(res.header("content-type"), Some("application/json"));
}
