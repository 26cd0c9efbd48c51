//! End to end through the real stack: pass-through fidelity, limits,
//! malformed input, an unreachable factory, TLS with a private CA, and a
//! graceful drain.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::Full;
use support::client::{TestClient, send_chunked};
use support::sidecar::{self, plain};
use support::upstream::{FakeUpstream, answer, echo_answer};
use support::wire::Wire;
use support::{eventually, free_port};

fn header_values(echo: &serde_json::Value, name: &str) -> Vec<String> {
    echo["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .filter(|h| h[0] == name)
        .map(|h| h[1].as_str().expect("value").to_owned())
        .collect()
}

#[tokio::test]
async fn methods_paths_queries_and_bodies_pass_through() {
    let up = FakeUpstream::echo().await;
    let sc = sidecar::start(sidecar::config(&up.url(), plain)).await;
    let client = TestClient::http1();
    for method in [Method::GET, Method::POST, Method::PUT, Method::DELETE] {
        let body = if method == Method::GET {
            ""
        } else {
            "{\"diner\":{}}"
        };
        let url = format!("{}/api/franchise/7?name=pizza%20pocket&x=1&x=2", sc.url);
        let res = client
            .request(
                method.clone(),
                &url,
                &[("content-type", "application/json")],
                body,
            )
            .await;
        assert_eq!(res.status, StatusCode::OK, "{method}");
        let echo = res.json();
        assert_eq!(echo["method"], method.as_str());
        assert_eq!(echo["uri"], "/api/franchise/7?name=pizza%20pocket&x=1&x=2");
        assert_eq!(echo["bodyLength"], body.len());
    }
    let seen = up.requests();
    assert_eq!(seen.len(), 4);
    assert_eq!(seen[1].body, Bytes::from_static(b"{\"diner\":{}}"));
}

#[tokio::test]
async fn statuses_and_bodies_are_passed_on_unchanged() {
    let up = FakeUpstream::start(|r| async move {
        let status: u16 = r.uri.path().trim_start_matches('/').parse().unwrap_or(200);
        answer(status, &format!("{{\"message\":\"status {status}\"}}"))
    })
    .await;
    let sc = sidecar::start(sidecar::config(&up.url(), plain)).await;
    let client = TestClient::http1();
    for status in [200u16, 400, 401, 404, 500, 503] {
        let res = client
            .request(Method::POST, &format!("{}/{status}", sc.url), &[], "{}")
            .await;
        assert_eq!(res.status.as_u16(), status);
        assert_eq!(res.json()["message"], format!("status {status}"));
        assert_eq!(res.header("content-type"), Some("application/json"));
        assert_eq!(
            res.header("x-sidecar-error"),
            None,
            "factory answers are not sidecar errors"
        );
    }
}

#[tokio::test]
async fn headers_are_rewritten_as_a_reverse_proxy_does() {
    let up = FakeUpstream::start(|r| async move {
        let mut res = echo_answer(&r);
        let h = res.headers_mut();
        h.append("set-cookie", "a=1".parse().expect("value"));
        h.append("set-cookie", "b=2".parse().expect("value"));
        h.insert("connection", "x-upstream-hop".parse().expect("value"));
        h.insert("x-upstream-hop", "1".parse().expect("value"));
        res
    })
    .await;
    let sc = sidecar::start(sidecar::config(&up.url(), plain)).await;
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let res = TestClient::http1()
        .request(
            Method::POST,
            &format!("{}/api/order", sc.url),
            &[
                ("authorization", "Bearer vendor-key"),
                ("traceparent", traceparent),
                ("x-multi", "one"),
                ("x-multi", "two"),
                ("x-forwarded-for", "203.0.113.9"),
                ("connection", "keep-alive, x-client-hop"),
                ("x-client-hop", "secret"),
                ("proxy-authorization", "Basic Zm9v"),
            ],
            "{}",
        )
        .await;
    assert_eq!(res.status, 200);
    let cookies: Vec<_> = res.headers.get_all("set-cookie").iter().collect();
    assert_eq!(
        cookies,
        ["a=1", "b=2"],
        "multi-valued response headers kept in order"
    );
    assert!(
        !res.headers.contains_key("x-upstream-hop"),
        "hop-by-hop named by Connection dropped"
    );

    let echo = res.json();
    assert_eq!(
        header_values(&echo, "host"),
        [up.addr.to_string()],
        "Host is the upstream's"
    );
    assert_eq!(header_values(&echo, "authorization"), ["Bearer vendor-key"]);
    assert_eq!(header_values(&echo, "traceparent"), [traceparent]);
    assert_eq!(header_values(&echo, "x-multi"), ["one", "two"]);
    assert_eq!(
        header_values(&echo, "x-forwarded-for"),
        ["203.0.113.9, 127.0.0.1"]
    );
    assert_eq!(header_values(&echo, "x-forwarded-proto"), ["http"]);
    assert!(header_values(&echo, "x-client-hop").is_empty());
    assert!(header_values(&echo, "proxy-authorization").is_empty());
}

#[tokio::test]
async fn chunked_and_large_bodies_stream_both_ways() {
    const BIG: usize = 600 * 1024;
    let up = FakeUpstream::start(|r| async move {
        // Answer with a large body of a size derived from the request.
        let n = r.body.len() * 2;
        http::Response::new(Full::new(Bytes::from(vec![b'p'; n])))
    })
    .await;
    let sc = sidecar::start(sidecar::config(&up.url(), plain)).await;

    // A chunked request body: three frames, no Content-Length.
    let chunks = vec![
        Bytes::from(vec![b'a'; BIG / 3]),
        Bytes::from(vec![b'b'; BIG / 3]),
        Bytes::from(vec![b'c'; BIG / 3]),
    ];
    let (status, got) = send_chunked(&format!("{}/upload", sc.url), chunks).await;
    assert_eq!(status, 200);
    assert_eq!(got.len(), BIG / 3 * 3 * 2);
    let seen = up.requests();
    assert_eq!(
        seen[0].body.len(),
        BIG / 3 * 3,
        "whole chunked body forwarded"
    );
    assert!(seen[0].body.starts_with(b"aaa") && seen[0].body.ends_with(b"ccc"));
}

#[tokio::test]
async fn h2c_clients_are_served() {
    let up = FakeUpstream::echo().await;
    let sc = sidecar::start(sidecar::config(&up.url(), plain)).await;
    let res = TestClient::h2c()
        .request(
            Method::POST,
            &format!("{}/api/order?h2=1", sc.url),
            &[("x-h2", "yes")],
            "{\"a\":1}",
        )
        .await;
    assert_eq!(res.status, 200);
    let echo = res.json();
    assert_eq!(echo["uri"], "/api/order?h2=1");
    assert_eq!(
        echo["version"], "HTTP/1.1",
        "the plain-http factory is spoken to in HTTP/1.1"
    );
    assert_eq!(header_values(&echo, "x-h2"), ["yes"]);
    assert_eq!(header_values(&echo, "host"), [up.addr.to_string()]);
}

#[tokio::test]
async fn oversized_bodies_get_413_and_nothing_is_forwarded() {
    let up = FakeUpstream::echo().await;
    let sc = sidecar::start(sidecar::config(&up.url(), |c| {
        plain(c);
        c.server.max_body_bytes = 1024;
    }))
    .await;
    let client = TestClient::http1();
    // Declared too large (Content-Length) ...
    let res = client
        .request(
            Method::POST,
            &format!("{}/api/order", sc.url),
            &[],
            &"x".repeat(2048),
        )
        .await;
    assert_eq!(res.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(res.header("x-sidecar-error"), Some("body-too-large"));
    assert!(res.json()["message"].is_string());
    // ... and found too large while reading a chunked body.
    let chunks = vec![Bytes::from(vec![b'a'; 800]), Bytes::from(vec![b'b'; 800])];
    let (status, _) = send_chunked(&format!("{}/api/order", sc.url), chunks).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    // Exactly at the limit is fine.
    let res = client
        .request(
            Method::POST,
            &format!("{}/api/order", sc.url),
            &[],
            &"x".repeat(1024),
        )
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(
        up.request_count(),
        1,
        "only the request within the limit reached the factory"
    );
}

#[tokio::test]
async fn a_malformed_body_gets_400_json() {
    let up = FakeUpstream::echo().await;
    let sc = sidecar::start(sidecar::config(&up.url(), plain)).await;
    let text = Wire::exchange(
        sc.sidecar.proxy_addr(),
        b"POST /api/order HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz-not-hex\r\n\r\n",
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(
        text.contains("x-sidecar-error: malformed-request"),
        "{text}"
    );
    assert!(text.contains("{\"message\":"), "{text}");
    assert_eq!(up.request_count(), 0);
}

#[tokio::test]
async fn an_unreachable_factory_gets_502_json() {
    // A port that was just free: nothing listens there.
    let port = free_port();
    let sc = sidecar::start(sidecar::config(&format!("http://127.0.0.1:{port}"), plain)).await;
    let res = TestClient::http1()
        .request(Method::POST, &format!("{}/api/order", sc.url), &[], "{}")
        .await;
    assert_eq!(res.status, StatusCode::BAD_GATEWAY);
    assert_eq!(res.header("x-sidecar-error"), Some("unreachable"));
    assert_eq!(res.header("content-type"), Some("application/json"));
    assert!(
        res.json()["message"]
            .as_str()
            .expect("message")
            .contains("could not be reached")
    );
}

#[tokio::test]
async fn graceful_drain_finishes_in_flight_requests() {
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let up = FakeUpstream::start(move |r| {
        let mut rx = release_rx.clone();
        async move {
            if r.uri.path() == "/slow" {
                let _ = rx.wait_for(|go| *go).await;
            }
            answer(200, "{\"done\":true}")
        }
    })
    .await;
    let sc = sidecar::start(sidecar::config(&up.url(), plain)).await;
    let client = TestClient::http1();
    let admin = sc.admin.clone();
    assert_eq!(client.get(&format!("{admin}/readyz")).await.status, 200);

    let slow_url = format!("{}/slow", sc.url);
    let slow = tokio::spawn({
        let client = client.clone();
        async move { client.get(&slow_url).await }
    });
    eventually(
        "the slow request to reach the upstream",
        Duration::from_secs(10),
        || {
            let up = up.clone();
            async move { (up.request_count() == 1).then_some(()) }
        },
    )
    .await;

    let addr = sc.sidecar.proxy_addr();
    sc.sidecar.shutdown();
    // Readiness turns 503 while draining; new connections are refused.
    eventually("readyz to turn 503", Duration::from_secs(10), || {
        let (client, admin) = (client.clone(), admin.clone());
        async move { (client.get(&format!("{admin}/readyz")).await.status == 503).then_some(()) }
    })
    .await;
    eventually(
        "the listener to close",
        Duration::from_secs(10),
        || async move {
            tokio::net::TcpStream::connect(addr)
                .await
                .is_err()
                .then_some(())
        },
    )
    .await;

    release_tx.send(true).expect("release");
    let res = slow.await.expect("slow request task");
    assert_eq!(
        res.status, 200,
        "the in-flight request completed after shutdown began"
    );
    assert_eq!(res.json()["done"], true);
    tokio::time::timeout(Duration::from_secs(15), sc.sidecar.stopped())
        .await
        .expect("sidecar stops after draining");
}

#[tokio::test]
async fn admin_health_and_status_need_the_token() {
    let up = FakeUpstream::echo().await;
    let sc = sidecar::start(sidecar::config(&up.url(), plain)).await;
    let client = TestClient::http1();
    let res = client.get(&format!("{}/healthz", sc.admin)).await;
    assert_eq!((res.status.as_u16(), res.text()), (200, "ok\n".to_owned()));
    assert_eq!(
        client.get(&format!("{}/status", sc.admin)).await.status,
        401
    );
    assert_eq!(
        client
            .get_with_token(&format!("{}/status", sc.admin), "wrong")
            .await
            .status,
        401
    );
    let res = client
        .get_with_token(&format!("{}/status", sc.admin), sidecar::ADMIN_TOKEN)
        .await;
    assert_eq!(res.status, 200);
    let status = res.json();
    assert_eq!(status["upstream"], up.url());
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert!(!res.text().contains(sidecar::ADMIN_TOKEN));
}

#[tokio::test]
async fn admin_answers_405_with_allow_for_a_known_path_and_the_wrong_method() {
    let up = FakeUpstream::echo().await;
    let sc = sidecar::start(sidecar::config(&up.url(), plain)).await;
    let client = TestClient::http1();
    for (method, path, allow) in [
        (Method::POST, "/healthz", "GET, HEAD"),
        (Method::DELETE, "/metrics", "GET"),
        (Method::POST, "/status", "GET"),
        (Method::GET, "/circuit/open", "POST"),
        (Method::GET, "/chaos/resolve", "POST"),
        (Method::GET, "/config/reload", "POST"),
    ] {
        let res = client
            .request(method.clone(), &format!("{}{path}", sc.admin), &[], "")
            .await;
        assert_eq!(res.status, 405, "{method} {path}");
        assert_eq!(res.header("allow"), Some(allow), "{method} {path}");
        assert!(res.json()["message"].is_string());
    }
    let res = client.get(&format!("{}/nope", sc.admin)).await;
    assert_eq!(res.status, 404);
}

#[tokio::test]
async fn admin_refuses_status_when_no_token_is_configured() {
    let up = FakeUpstream::echo().await;
    let sc = sidecar::start(sidecar::config(&up.url(), |c| {
        c.admin.token = factory_sidecar::config::Secret::default();
    }))
    .await;
    let res = TestClient::http1()
        .get_with_token(&format!("{}/status", sc.admin), "")
        .await;
    assert_eq!(res.status, 403);
}
