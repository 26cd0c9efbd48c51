//! End-to-end tests of the factory simulator over loopback HTTP: every row
//! of docs/factory.md, every chaos type, the `/sim/*` control endpoints and the
//! `factory-sidecar sim` command.

mod support;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use factory_sidecar::sim::{self, ChaosKind, ChaosSpec, SimStats};
use http::{Method, StatusCode};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};

use support::http::{Http, Reply, eventually, request};
use support::sim::{FAST, fast_options, order, sample_order, start, start_with};

fn msg(reply: &Reply) -> String {
    reply.json()["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The JSON object's keys, sorted.
fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().expect("an object").keys().cloned().collect();
    k.sort();
    k
}

async fn stats(http: &Http, sim: &sim::SimHandle) -> SimStats {
    let reply = http
        .get(&format!("{}/sim/stats", sim.url()))
        .await
        .expect("stats are always answered");
    serde_json::from_slice(&reply.body).expect("stats JSON")
}

async fn set_chaos(http: &Http, sim: &sim::SimHandle, body: &str) -> Reply {
    http.put_json(&format!("{}/sim/chaos", sim.url()), body)
        .await
        .expect("control is always answered")
}

/// The path of a report link (`https://host/api/support/...` -> `/api/support/...`).
fn link_path(url: &str) -> String {
    let rest = url.split_once("://").expect("absolute link").1;
    rest[rest.find('/').expect("a path")..].to_owned()
}

/// What a verifier must accept: RS256 from the JWKS, and no `exp` claim
/// required (the real factory puts `iat`/`exp` in the header).
fn pizza_validation() -> Validation {
    let mut v = Validation::new(Algorithm::RS256);
    v.required_spec_claims.clear();
    v
}

#[tokio::test]
async fn order_without_chaos_gets_a_jwt_that_verifies_against_the_jwks() {
    let sim = start().await;
    let http = Http::new();

    let reply = sample_order(&http, &sim).await.expect("answer");
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        reply.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(reply.header("access-control-allow-origin"), Some("*"));
    let body = reply.json();
    assert_eq!(
        keys(&body),
        ["jwt"],
        "no chaos: no reportUrl, as the real factory"
    );
    let jwt = body["jwt"].as_str().expect("jwt string");

    // The JWKS, fetched over HTTP, verifies it with the jsonwebtoken crate.
    let jwks = http
        .get(&format!("{}/.well-known/jwks.json", sim.url()))
        .await
        .expect("jwks");
    assert_eq!(jwks.status, StatusCode::OK);
    assert_eq!(jwks.body, sim.jwks());
    let jwks_json = jwks.json();
    assert_eq!(keys(&jwks_json["keys"][0]), ["e", "kid", "kty", "n"]);
    let set: JwkSet = serde_json::from_slice(&jwks.body).expect("a JWK set");
    let header = jsonwebtoken::decode_header(jwt).expect("header");
    assert_eq!(header.alg, Algorithm::RS256);
    let kid = header.kid.expect("kid");
    assert_eq!(kid, sim.kid());
    let key = DecodingKey::from_jwk(set.find(&kid).expect("kid published")).expect("RSA key");
    let data = jsonwebtoken::decode::<Value>(jwt, &key, &pizza_validation()).expect("verifies");
    let sent: Value = serde_json::from_str(sim::SAMPLE_ORDER).expect("sample");
    assert_eq!(data.claims["diner"], sent["diner"]);
    assert_eq!(data.claims["order"], sent["order"]);
    assert_eq!(keys(&data.claims["vendor"]), ["id", "name"]);

    // The real header shape: iat/exp/iss beside alg/kid; the payload has no exp,
    // so jsonwebtoken's default validation (exp required) refuses it.
    let raw_header: Value = serde_json::from_slice(
        &B64.decode(jwt.split('.').next().expect("header part"))
            .expect("b64"),
    )
    .expect("header JSON");
    assert_eq!(keys(&raw_header), ["alg", "exp", "iat", "iss", "kid"]);
    assert_eq!(raw_header["iss"], sim::ISSUER);
    let lifetime =
        raw_header["exp"].as_u64().expect("exp") - raw_header["iat"].as_u64().expect("iat");
    assert_eq!(lifetime, sim::LIFETIME_SECS);
    let strict = jsonwebtoken::decode::<Value>(jwt, &key, &Validation::new(Algorithm::RS256));
    assert!(
        strict.is_err(),
        "a verifier that requires exp rejects every real pizza"
    );

    // And the factory's own verify endpoint agrees.
    let verify = http
        .post_json(
            &format!("{}/api/order/verify", sim.url()),
            None,
            &json!({ "jwt": jwt }).to_string(),
        )
        .await
        .expect("verify");
    assert_eq!(verify.status, StatusCode::OK);
    assert_eq!(verify.json()["message"], "valid");
    assert_eq!(verify.json()["payload"], data.claims);

    let s = stats(&http, &sim).await;
    assert_eq!(
        (s.orders, s.orders_ok, s.jwks_requests, s.requests),
        (1, 1, 1, 3)
    );
    assert_eq!(s.chaos, ChaosKind::None);
}

#[tokio::test]
async fn each_distinct_order_gets_its_own_pizza_and_repeats_stay_valid() {
    let sim = start().await;
    let http = Http::new();
    let other = sim::SAMPLE_ORDER.replace("\"id\":719", "\"id\":720");
    let verify = |jwt: String| {
        let http = http.clone();
        let url = format!("{}/api/order/verify", sim.url());
        async move {
            let r = http
                .post_json(&url, None, &json!({ "jwt": jwt }).to_string())
                .await
                .expect("verify");
            assert_eq!(r.status, StatusCode::OK, "{}", r.text());
            r.json()["payload"]["diner"]["id"]
                .as_i64()
                .expect("diner id")
        }
    };
    for _ in 0..3 {
        for (body, id) in [(sim::SAMPLE_ORDER, 719), (other.as_str(), 720)] {
            let r = order(&http, &sim, body).await.expect("answer");
            assert_eq!(r.status, StatusCode::OK);
            let jwt = r.json()["jwt"].as_str().expect("jwt").to_owned();
            assert_eq!(verify(jwt).await, id, "the cache never mixes bodies up");
        }
    }
    assert_eq!(stats(&http, &sim).await.orders_ok, 6);
}

#[tokio::test]
async fn a_token_pool_answers_each_order_with_the_next_of_n_valid_pizzas() {
    const POOL: usize = 4;
    let sim = start_with(fast_options().token_pool(POOL)).await;
    let http = Http::new();
    let mut jwts = Vec::new();
    for _ in 0..2 * POOL {
        let r = sample_order(&http, &sim).await.expect("answer");
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert_eq!(keys(&r.json()), ["jwt"], "the real factory's shape");
        jwts.push(r.json()["jwt"].as_str().expect("jwt").to_owned());
    }
    assert_eq!(jwts[..POOL], jwts[POOL..], "the pool, in turn");
    let distinct: std::collections::HashSet<&String> = jwts.iter().collect();
    assert_eq!(distinct.len(), POOL, "no two orders in a row share a token");
    for jwt in &jwts[..POOL] {
        assert!(sim.verify(jwt), "each pooled pizza verifies");
    }
    let other = sim::SAMPLE_ORDER.replace("\"id\":719", "\"id\":720");
    let r = order(&http, &sim, &other).await.expect("answer");
    let jwt = r.json()["jwt"].as_str().expect("jwt").to_owned();
    assert!(sim.verify(&jwt) && !distinct.contains(&jwt), "its own pool");
    assert!(
        sim::spawn(fast_options().token_pool(100_000))
            .await
            .is_err(),
        "a pool too large is refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_orders_on_the_cheap_path_all_get_valid_pizzas() {
    const CLIENTS: usize = 16;
    const EACH: usize = 25;
    let sim = start().await;
    let started = std::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CLIENTS {
        let http = Http::new();
        let url = format!("{}/api/order", sim.url());
        let key = sim.api_key().to_owned();
        tasks.spawn(async move {
            let mut jwts = Vec::with_capacity(EACH);
            for _ in 0..EACH {
                let r = http
                    .post_json(&url, Some(&key), sim::SAMPLE_ORDER)
                    .await
                    .expect("answer");
                assert_eq!(r.status, StatusCode::OK, "{}", r.text());
                jwts.push(r.json()["jwt"].as_str().expect("jwt").to_owned());
            }
            jwts
        });
    }
    let mut jwts = std::collections::HashSet::new();
    while let Some(done) = tasks.join_next().await {
        jwts.extend(done.expect("client task"));
    }
    let elapsed = started.elapsed();
    eprintln!(
        "{} orders in {elapsed:?} ({:.0}/s, debug build, for information only)",
        CLIENTS * EACH,
        (CLIENTS * EACH) as f64 / elapsed.as_secs_f64()
    );
    // One body: one distinct pizza per second of the run at most (the
    // signature cache), each of them valid.
    assert!(
        jwts.len() <= elapsed.as_secs() as usize + 2,
        "{} signatures",
        jwts.len()
    );
    let set: JwkSet = serde_json::from_slice(&sim.jwks()).expect("jwks");
    let key = DecodingKey::from_jwk(&set.keys[0]).expect("key");
    for jwt in &jwts {
        jsonwebtoken::decode::<Value>(jwt, &key, &pizza_validation()).expect("verifies");
    }
    let s = sim.stats();
    assert_eq!(
        (s.orders, s.orders_ok),
        ((CLIENTS * EACH) as u64, (CLIENTS * EACH) as u64)
    );
}

#[tokio::test]
async fn bad_or_missing_api_key_is_401() {
    let sim = start().await;
    let http = Http::new();
    let url = format!("{}/api/order", sim.url());
    for key in [None, Some("0123456789abcdef0123456789abcdef"), Some("")] {
        let r = http
            .post_json(&url, key, sim::SAMPLE_ORDER)
            .await
            .expect("answer");
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.json(), json!({ "message": "invalid authentication" }));
    }
    // The apiKey check comes before the body checks, as in the real route.
    let r = http.post_json(&url, None, "{}").await.expect("answer");
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // `bearer` is matched case-insensitively.
    let mut req = request(
        Method::POST,
        &url,
        None,
        Some("application/json"),
        sim::SAMPLE_ORDER,
    )
    .expect("request");
    req.headers_mut().insert(
        "authorization",
        format!("bEaReR {}", sim.api_key()).parse().expect("header"),
    );
    assert_eq!(http.send(req).await.expect("answer").status, StatusCode::OK);
    assert_eq!(
        stats(&http, &sim).await.orders,
        5,
        "every POST counts as an order received"
    );
}

#[tokio::test]
async fn missing_diner_or_order_is_400() {
    let sim = start().await;
    let http = Http::new();
    for body in [
        r#"{"order":{"items":[{"menuId":1}]}}"#,
        r#"{"diner":{"id":1}}"#,
        r#"{"diner":null,"order":{"items":[1]}}"#,
        "{}",
        "",
    ] {
        let r = order(&http, &sim, body).await.expect("answer");
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(
            r.json(),
            json!({ "message": "Missing required parameters" })
        );
    }
    // Like express.json(), a body that is not application/json is not read.
    let req = request(
        Method::POST,
        &format!("{}/api/order", sim.url()),
        Some(sim.api_key()),
        Some("text/plain"),
        sim::SAMPLE_ORDER,
    )
    .expect("request");
    let r = Http::new().send(req).await.expect("answer");
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn malformed_json_is_500_as_the_real_error_handler_answers() {
    let sim = start().await;
    let http = Http::new();
    for body in ["{\"diner\":", "\"just a string\"", "nope"] {
        let r = order(&http, &sim, body).await.expect("answer");
        assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
        assert_eq!(keys(&r.json()), ["message"]);
    }
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(200 * 1024));
    let r = order(&http, &sim, &big).await.expect("answer");
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(msg(&r), "request entity too large");
}

#[tokio::test]
async fn no_items_or_more_than_20_waits_then_the_oven_is_full() {
    let oven = Duration::from_millis(80);
    let sim = start_with(fast_options().oven_delay(oven)).await;
    let http = Http::new();
    let items = |n: usize| {
        let items: Vec<Value> = (0..n)
            .map(|i| json!({ "menuId": i, "description": "Veggie", "price": 0.0038 }))
            .collect();
        json!({ "diner": { "id": 1, "name": "d", "email": "d@jwt.com" },
                "order": { "franchiseId": 1, "storeId": 1, "items": items } })
        .to_string()
    };
    for n in [0, 21] {
        let started = tokio::time::Instant::now();
        let r = order(&http, &sim, &items(n)).await.expect("answer");
        assert!(
            started.elapsed() >= oven,
            "the oven-full answer waits first"
        );
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            r.json(),
            json!({ "message": "Unable to satisfy pizza order. The oven is full." }),
            "nothing else: no reportUrl"
        );
    }
    for n in [1, 20] {
        assert_eq!(
            order(&http, &sim, &items(n)).await.expect("answer").status,
            StatusCode::OK
        );
    }
}

#[tokio::test]
async fn verify_rejects_anything_it_did_not_sign() {
    let sim = start().await;
    let http = Http::new();
    let url = format!("{}/api/order/verify", sim.url());
    let good = sample_order(&http, &sim).await.expect("order").json()["jwt"]
        .as_str()
        .expect("jwt")
        .to_owned();
    let mut tampered: Vec<String> = good.split('.').map(str::to_owned).collect();
    tampered[1] = B64.encode(br#"{"vendor":{"id":"me"},"diner":{},"order":{}}"#);
    for body in [
        json!({ "jwt": tampered.join(".") }).to_string(),
        json!({ "jwt": "not.a.jwt" }).to_string(),
        json!({ "jwt": 42 }).to_string(),
        "{}".to_owned(),
    ] {
        let r = http.post_json(&url, None, &body).await.expect("answer");
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(r.json(), json!({ "message": "invalid" }));
    }
}

#[tokio::test]
async fn docs_and_unknown_endpoints() {
    let sim = start().await;
    let http = Http::new();
    let docs = http
        .get(&format!("{}/api/docs", sim.url()))
        .await
        .expect("docs");
    assert_eq!(docs.status, StatusCode::OK);
    assert_eq!(docs.json()["message"], "welcome to JWT Pizza Factory");
    let paths: Vec<&str> = docs.json()["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .filter_map(|e| e["path"].as_str())
        .map(|p| match p {
            "/api/order" => "order",
            "/api/order/verify" => "verify",
            "/.well-known/jwks.json" => "jwks",
            _ if p.starts_with("/api/support/") => "support",
            _ => "other",
        })
        .collect();
    assert_eq!(paths, ["order", "verify", "jwks", "support"]);
    for path in ["/", "/nope", "/api/order", "/api/support", "/sim/nope"] {
        let r = http
            .get(&format!("{}{path}", sim.url()))
            .await
            .expect("answer");
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(r.json(), json!({ "message": "unknown endpoint" }));
    }
}

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
    let verify = http
        .post_json(
            &format!("{}/api/order/verify", sim.url()),
            None,
            &json!({ "jwt": body["jwt"] }).to_string(),
        )
        .await
        .expect("verify");
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
    let verify = http
        .post_json(
            &format!("{}/api/order/verify", sim.url()),
            None,
            &json!({ "jwt": jwt }).to_string(),
        )
        .await
        .expect("verify");
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

#[tokio::test]
async fn connections_counts_tcp_connections_and_requests_skip_control() {
    let sim = start().await;
    let pooled = Http::new();
    let fresh = Http::fresh_connections();
    for _ in 0..3 {
        sample_order(&fresh, &sim).await.expect("answer");
    }
    assert_eq!(sim.stats().connections, 3);
    for _ in 0..5 {
        stats(&pooled, &sim).await;
    }
    let s = sim.stats();
    assert_eq!(
        s.connections, 4,
        "keep-alive: one connection for all the stats GETs"
    );
    assert_eq!(s.requests, 3, "/sim/* requests are not counted");
    let body = pooled
        .get(&format!("{}/sim/stats", sim.url()))
        .await
        .expect("stats")
        .json();
    assert_eq!(
        keys(&body),
        [
            "chaos",
            "connections",
            "dropped",
            "held",
            "jwksRequests",
            "orders",
            "ordersOk",
            "requests",
            "resolves",
            "supportRequests"
        ]
    );
}

#[tokio::test]
async fn control_endpoints_and_the_handle_share_one_state() {
    let sim = start().await;
    let http = Http::new();
    let url = format!("{}/sim/chaos", sim.url());
    assert_eq!(
        http.get(&url).await.expect("status").json(),
        json!({ "type": "none", "episode": 0 })
    );
    sim.set_chaos(ChaosSpec::throttle().delay(Duration::from_secs(2)).count(4));
    assert_eq!(
        http.get(&url).await.expect("status").json(),
        json!({ "type": "throttle", "remaining": 4, "delay": "2s", "episode": 1 })
    );
    set_chaos(&http, &sim, r#"{"type":"badjwt"}"#).await;
    assert_eq!(sim.chaos().kind, ChaosKind::BadJwt);
    assert_eq!(sim.stats().chaos, ChaosKind::BadJwt);

    for bad in [
        r#"{"type":"explode"}"#,
        r#"{"type":"fail","count":0}"#,
        "{",
        r#"{"type":"fail","extra":1}"#,
    ] {
        let r = set_chaos(&http, &sim, bad).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(keys(&r.json()), ["message"]);
    }
    assert_eq!(
        sim.chaos().kind,
        ChaosKind::BadJwt,
        "a refused change changes nothing"
    );
    let delete = http
        .send(request(Method::DELETE, &url, None, None, "").expect("request"))
        .await
        .expect("answer");
    assert_eq!(delete.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn a_leaked_api_key_can_start_chaos_through_the_vendor_route() {
    let sim = start().await;
    let http = Http::new();
    let url = |t: &str| format!("{}/api/vendor/chaos/{t}", sim.url());
    let put = |t: &str, key: Option<&str>| {
        let mut req = request(Method::PUT, &url(t), key, None, "").expect("request");
        *req.method_mut() = Method::PUT;
        http.send(req)
    };
    let r = put("fail", None).await.expect("answer");
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = put("down", Some(sim.api_key())).await.expect("answer");
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(msg(&r), "Invalid chaos type");
    let r = put("fail", Some(sim.api_key())).await.expect("answer");
    assert_eq!(r.json(), json!({ "message": "Chaos initiated" }));
    assert_eq!(sim.chaos().kind, ChaosKind::Fail);
}

#[tokio::test]
async fn h2c_clients_are_served_too() {
    let sim = start_with(fast_options().chaos(ChaosSpec::fail().count(1))).await;
    let http = Http::h2c();
    let r = sample_order(&http, &sim).await.expect("answer");
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    let link = r.json()["reportUrl"].as_str().expect("link").to_owned();
    assert!(
        link.starts_with("https://127.0.0.1/api/support/"),
        "host from :authority: {link}"
    );
    let r = sample_order(&http, &sim).await.expect("answer");
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(sim.stats().connections, 1, "one h2 connection carries both");
}

#[tokio::test]
async fn shutdown_stops_listening() {
    let sim = start().await;
    let addr = sim.addr();
    sim.shutdown().await;
    let refused = eventually(Duration::from_secs(5), || async move {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;
    assert!(refused, "nothing listens after shutdown");
}

#[test]
fn sim_help_lists_the_spec_flags() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_factory-sidecar"))
        .args(["sim", "--help"])
        .output()
        .expect("run the binary");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--chaos",
        "--throttle-delay",
        "--api-key",
        "--public-url",
        "--oven-delay",
        "--token-pool",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_factory-sidecar"))
        .args([
            "sim",
            "--listen",
            "127.0.0.1:0",
            "--api-key",
            "no spaces allowed",
        ])
        .output()
        .expect("run the binary");
    assert_eq!(bad.status.code(), Some(1), "bad options exit 1");
}

/// Kills the child simulator (by its own id) if a test fails midway.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[tokio::test]
async fn sim_command_prints_its_address_serves_and_exits_cleanly_on_sigterm() {
    use std::io::{BufRead as _, BufReader, Read as _};
    let key = "a11ce0000000000000000000000b0b42";
    let mut child = ChildGuard(
        std::process::Command::new(env!("CARGO_BIN_EXE_factory-sidecar"))
            .args([
                "sim",
                "--listen",
                "127.0.0.1:0",
                "--chaos",
                "fail",
                "--api-key",
                key,
            ])
            .env("RUST_LOG", "debug")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start the simulator"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    let mut stderr = child.0.stderr.take().expect("stderr");
    // Blocking read off the runtime; it returns as soon as the line is out
    // (or at EOF if the process dies, which the assertion below reports).
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    })
    .await
    .expect("reader thread")
    .expect("read stdout");
    let url = line
        .trim()
        .strip_prefix("sim listening on ")
        .unwrap_or_else(|| panic!("the parseable line, got {line:?}"))
        .to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    let http = Http::new();
    let r = http
        .post_json(&format!("{url}/api/order"), Some(key), sim::SAMPLE_ORDER)
        .await
        .expect("answer");
    assert_eq!(
        r.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "--chaos fail from the start"
    );
    let link = r.json()["reportUrl"].as_str().expect("link").to_owned();
    let resolved = http
        .get(&format!("{url}{}", link_path(&link)))
        .await
        .expect("resolve");
    assert_eq!(resolved.status, StatusCode::OK);

    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .expect("send SIGTERM");
    assert!(killed.success());
    let (status, logs) = tokio::task::spawn_blocking(move || {
        let mut logs = String::new();
        // stderr reaches EOF when the process exits.
        let _ = stderr.read_to_string(&mut logs);
        (child.0.wait(), logs)
    })
    .await
    .expect("waiter thread");
    let status = status.expect("wait");
    assert!(status.success(), "{status:?}\n{logs}");
    assert!(logs.contains("chaos started"), "{logs}");
    assert!(logs.contains("****0b42"), "the key shows masked: {logs}");
    assert!(
        !logs.contains(key),
        "the apiKey never appears in clear: {logs}"
    );
    let code = link.rsplit('/').next().expect("code");
    assert!(!logs.contains(code), "nor the fix code: {logs}");
}
