//! End-to-end tests of the factory simulator's chaos over loopback HTTP:
//! every chaos type (fail, badjwt, throttle, blip, down, hang), its report
//! link and how it ends.

mod support;

use std::time::Duration;

use factory_sidecar::sim::{self, ChaosKind, ChaosSpec};
use http::{Method, StatusCode};
use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::JwkSet;
use serde_json::{Value, json};

use support::http::{Http, eventually, request};
use support::sim::{
    FAST, fast_options, keys, link_path, msg, order, pizza_validation, sample_order, set_chaos,
    start, start_with, stats, verify,
};

#[tokio::test]
async fn fail_chaos_is_resolved_by_the_report_link_with_the_right_code_only() {
    let sim = start().await;
    let http = Http::new();
    let status = set_chaos(&http, &sim, r#"{"type":"fail"}"#).await;
    assert_eq!(status.status, StatusCode::OK);
    assert_eq!(status.json()["type"], "fail");
    assert!(!status.text().contains(sim.api_key()));

    let r = sample_order(&http, &sim).await.expect("answer");
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    let body = r.json();
    assert_eq!(keys(&body), ["message", "reportUrl"]);
    assert_eq!(body["message"], "chaos monkey");
    assert!(r.header("retry-after").is_none());
    let link = body["reportUrl"].as_str().expect("link");
    // https + the Host header's host, port dropped, the apiKey in clear.
    let prefix = format!("https://127.0.0.1/api/support/{}/report/", sim.api_key());
    let code = link.strip_prefix(&prefix).expect("real link shape");
    assert_eq!(code.len(), 8);
    assert!(
        code.bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
    );
    assert!(
        !http
            .get(&format!("{}/sim/chaos", sim.url()))
            .await
            .expect("status")
            .text()
            .contains(code)
    );

    let support = |path: String| {
        let http = http.clone();
        let url = format!("{}{path}", sim.url());
        async move { http.get(&url).await.expect("support answer") }
    };
    let wrong = support(format!("/api/support/{}/report/wrong123", sim.api_key())).await;
    assert_eq!(wrong.status, StatusCode::BAD_REQUEST);
    assert_eq!(wrong.json(), json!({ "message": "Problem unresolved" }));
    let other_key = support(format!("/api/support/{}/report/{code}", "0".repeat(32))).await;
    assert_eq!(
        other_key.status,
        StatusCode::OK,
        "an unknown vendor has no chaos"
    );
    assert_eq!(
        other_key.json(),
        json!({ "message": "No chaos currently executing" })
    );
    assert_eq!(
        sample_order(&http, &sim).await.expect("answer").status,
        StatusCode::INTERNAL_SERVER_ERROR
    );

    let right = support(link_path(link)).await;
    assert_eq!(right.status, StatusCode::OK);
    assert_eq!(
        right.json(),
        json!({ "message": "Problem resolved. Pizza is back on the menu!" })
    );
    assert_eq!(
        sample_order(&http, &sim).await.expect("answer").status,
        StatusCode::OK
    );
    let again = support(link_path(link)).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(
        again.json(),
        json!({ "message": "No chaos currently executing" })
    );

    let s = stats(&http, &sim).await;
    assert_eq!(s.resolves, 1, "only the right code resolves");
    assert_eq!(
        s.support_requests, 4,
        "every support GET counts, right code or not"
    );
    assert_eq!((s.orders, s.orders_ok), (3, 1));
    assert_eq!(s.chaos, ChaosKind::None);
}

#[tokio::test]
async fn report_links_use_the_host_header_without_its_port() {
    let sim = start_with(fast_options().chaos(ChaosSpec::fail())).await;
    let mut req = request(
        Method::POST,
        &format!("{}/api/order", sim.url()),
        Some(sim.api_key()),
        Some("application/json"),
        sim::SAMPLE_ORDER,
    )
    .expect("request");
    req.headers_mut().insert(
        "host",
        "pizza-factory.cs329.click:8443".parse().expect("host"),
    );
    let r = Http::new().send(req).await.expect("answer");
    let link = r.json()["reportUrl"].as_str().expect("link").to_owned();
    assert!(
        link.starts_with(&format!(
            "https://pizza-factory.cs329.click/api/support/{}/report/",
            sim.api_key()
        )),
        "{link}"
    );
}

#[tokio::test]
async fn public_url_replaces_the_link_base() {
    let sim = start_with(
        fast_options()
            .chaos(ChaosSpec::badjwt())
            .public_url("http://127.0.0.1:9/decoy/"),
    )
    .await;
    let r = sample_order(&Http::new(), &sim).await.expect("answer");
    let link = r.json()["reportUrl"].as_str().expect("link").to_owned();
    let prefix = format!(
        "http://127.0.0.1:9/decoy/api/support/{}/report/",
        sim.api_key()
    );
    assert!(link.starts_with(&prefix), "{link}");
    assert!(
        sim::spawn(fast_options().public_url("ftp://x"))
            .await
            .is_err()
    );
    assert!(
        sim::spawn(fast_options().api_key("has space"))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn throttle_waits_then_answers_a_good_pizza_with_the_report_link() {
    // The simulator default is an hour: only the episode's own delay can
    // let this test finish.
    let sim = start_with(fast_options().throttle_delay(Duration::from_secs(3600))).await;
    let http = Http::new();
    let status = set_chaos(&http, &sim, r#"{"type":"throttle","delay":"100ms"}"#).await;
    assert_eq!(status.json()["delay"], "100ms");
    let started = tokio::time::Instant::now();
    let r = sample_order(&http, &sim).await.expect("answer");
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert_eq!(r.status, StatusCode::OK);
    let body = r.json();
    assert_eq!(keys(&body), ["jwt", "reportUrl"]);
    let verify = verify(&http, &sim, body["jwt"].as_str().expect("jwt")).await;
    assert_eq!(
        verify.status,
        StatusCode::OK,
        "a throttled pizza is a good pizza"
    );

    // Resolving ends the throttle: the next order is not delayed by an hour.
    let link = body["reportUrl"].as_str().expect("link");
    let resolved = http
        .get(&format!("{}{}", sim.url(), link_path(link)))
        .await
        .expect("resolve");
    assert_eq!(resolved.status, StatusCode::OK);
    let r = sample_order(&http, &sim).await.expect("answer");
    assert_eq!(keys(&r.json()), ["jwt"]);
    assert_eq!(stats(&http, &sim).await.orders_ok, 2);
}

#[tokio::test]
async fn throttle_uses_the_configured_delay_by_default() {
    let sim = start_with(fast_options().chaos(ChaosSpec::throttle())).await;
    let started = tokio::time::Instant::now();
    let r = sample_order(&Http::new(), &sim).await.expect("answer");
    assert!(started.elapsed() >= FAST);
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.json()["reportUrl"].is_string());
}

#[tokio::test]
async fn badjwt_answers_200_with_a_token_that_fails_verification() {
    let sim = start().await;
    let http = Http::new();
    sim.set_chaos(ChaosSpec::badjwt());
    let r = sample_order(&http, &sim).await.expect("answer");
    assert_eq!(r.status, StatusCode::OK);
    let body = r.json();
    assert_eq!(keys(&body), ["jwt", "reportUrl"]);
    let jwt = body["jwt"].as_str().expect("jwt");
    assert_eq!(jwt.split('.').count(), 3, "it looks like a JWT");
    let set: JwkSet = serde_json::from_slice(&sim.jwks()).expect("jwks");
    let key = DecodingKey::from_jwk(&set.keys[0]).expect("key");
    assert!(jsonwebtoken::decode::<Value>(jwt, &key, &pizza_validation()).is_err());
    let verify = verify(&http, &sim, jwt).await;
    assert_eq!(verify.status, StatusCode::FORBIDDEN);
    assert_eq!(
        stats(&http, &sim).await.orders_ok,
        0,
        "a bad pizza is not an ok order"
    );
}

#[tokio::test]
async fn chaos_comes_before_the_body_checks() {
    let sim = start_with(fast_options().chaos(ChaosSpec::fail())).await;
    let r = order(&Http::new(), &sim, "{}").await.expect("answer");
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(msg(&r), "chaos monkey");
}

#[tokio::test]
async fn a_blip_fails_the_next_n_orders_then_ends_by_itself() {
    let sim = start().await;
    let http = Http::new();
    let status = set_chaos(&http, &sim, r#"{"type":"fail","count":2}"#).await;
    assert_eq!(status.json()["remaining"], 2);
    // A request that is not an order does not use the blip up.
    assert_eq!(
        http.get(&format!("{}/api/docs", sim.url()))
            .await
            .expect("docs")
            .status,
        StatusCode::OK
    );
    let first = sample_order(&http, &sim).await.expect("answer");
    assert_eq!(first.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(sim.chaos().remaining, Some(1));
    let second = sample_order(&http, &sim).await.expect("answer");
    assert_eq!(second.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        first.json()["reportUrl"],
        second.json()["reportUrl"],
        "one episode, one fix code"
    );
    let after = http
        .get(&format!("{}/sim/chaos", sim.url()))
        .await
        .expect("status");
    assert_eq!(after.json(), json!({ "type": "none", "episode": 1 }));
    assert_eq!(
        sample_order(&http, &sim).await.expect("answer").status,
        StatusCode::OK
    );
    // A new episode gets a fresh fix code.
    sim.set_chaos(ChaosSpec::fail().count(1));
    let third = sample_order(&http, &sim).await.expect("answer");
    assert_ne!(third.json()["reportUrl"], first.json()["reportUrl"]);
    assert_eq!(sim.chaos().episode, 2);
}

#[tokio::test]
async fn retry_after_knob_adds_the_header_to_fail_answers() {
    let sim = start().await;
    let http = Http::new();
    set_chaos(&http, &sim, r#"{"type":"fail","count":1,"retryAfter":3}"#).await;
    let r = sample_order(&http, &sim).await.expect("answer");
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(r.header("retry-after"), Some("3"));
}

#[tokio::test]
async fn down_closes_every_other_connection_without_an_answer() {
    let sim = start().await;
    let fresh = Http::fresh_connections();
    let control = Http::new();
    set_chaos(&control, &sim, r#"{"type":"down"}"#).await;
    let before = stats(&control, &sim).await.connections;
    for round in 0..3 {
        let dropped = sample_order(&fresh, &sim).await;
        assert!(
            dropped.is_err(),
            "round {round}: no answer at all, got {dropped:?}"
        );
        let lb = sample_order(&fresh, &sim)
            .await
            .expect("the load balancer answers");
        assert_eq!(lb.status, StatusCode::BAD_GATEWAY);
        assert!(lb.text().contains("502 Bad Gateway"));
        assert!(!lb.text().contains("reportUrl"));
    }
    // Control is answered all along, and counts tell what happened.
    let s = stats(&control, &sim).await;
    assert_eq!((s.orders, s.orders_ok, s.dropped), (6, 0, 3));
    assert_eq!(s.chaos, ChaosKind::Down);
    assert!(s.connections >= before + 6, "one connection per order");
    set_chaos(&control, &sim, r#"{"type":"none"}"#).await;
    assert_eq!(
        sample_order(&fresh, &sim).await.expect("answer").status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn down_also_drops_pooled_connections_and_can_be_a_blip() {
    let sim = start().await;
    let http = Http::new();
    sim.set_chaos(ChaosSpec::down().count(2));
    assert!(sample_order(&http, &sim).await.is_err());
    assert_eq!(
        sample_order(&http, &sim).await.expect("answer").status,
        StatusCode::BAD_GATEWAY
    );
    assert_eq!(
        sim.chaos().kind,
        ChaosKind::None,
        "the blip ended by itself"
    );
    assert_eq!(
        sample_order(&http, &sim).await.expect("answer").status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn hang_holds_requests_unanswered_and_drops_them_when_it_ends() {
    let sim = start().await;
    let fresh = Http::fresh_connections();
    let control = Http::new();
    set_chaos(&control, &sim, r#"{"type":"hang"}"#).await;
    let held: Vec<_> = (0..3)
        .map(|_| {
            let (fresh, url, key) = (fresh.clone(), sim.url(), sim.api_key().to_owned());
            tokio::spawn(async move {
                fresh
                    .post_json(&format!("{url}/api/order"), Some(&key), sim::SAMPLE_ORDER)
                    .await
            })
        })
        .collect();
    // Read and held: counted, unanswered; control still answers.
    let all_held = eventually(Duration::from_secs(20), || async {
        stats(&control, &sim).await.held == 3
    })
    .await;
    assert!(all_held, "three orders held");
    let s = stats(&control, &sim).await;
    assert_eq!((s.orders, s.orders_ok, s.chaos), (3, 0, ChaosKind::Hang));
    assert!(held.iter().all(|h| !h.is_finished()));
    set_chaos(&control, &sim, r#"{"type":"none"}"#).await;
    for h in held {
        let r = h.await.expect("task");
        assert!(r.is_err(), "dropped without an answer, got {r:?}");
    }
    let s = stats(&control, &sim).await;
    assert_eq!((s.held, s.dropped), (0, 3));
    assert_eq!(
        sample_order(&fresh, &sim).await.expect("answer").status,
        StatusCode::OK
    );
}
